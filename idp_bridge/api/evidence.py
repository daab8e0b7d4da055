"""The evidence pack of a membership (issue 15 item 5; docs/evidence-pack.md):
``GET /api/tenants/{t}/memberships/{id}/evidence`` answers the signed pack, a compact JWS
(``application/evidence-pack+jwt``) signed with a key of ``/audit/jwks``; with
``Accept: application/json`` the same as ``{"jws": …, "pack": {…}}``. The tenant's admins,
support admins, and the advisor of the membership (its own only); each download is audited
(:class:`~idp_bridge.services.evidence.EvidencePacks`)."""

from __future__ import annotations

from flask import Response, g, jsonify, request

from ..services.evidence import MEDIA_TYPE
from .common import authenticated, bp, use_cases


@bp.get("/tenants/<tenant_id>/memberships/<membership_id>/evidence")
@authenticated
def membership_evidence(tenant_id, membership_id):
    pack = use_cases().evidence.download(g.identity, tenant_id, membership_id, form="jws")
    accept = request.accept_mimetypes
    if accept.quality("application/json") > accept.quality(MEDIA_TYPE):
        response = jsonify(jws=pack.jws, pack=pack.claims)
    else:
        response = Response(pack.jws + "\n", mimetype=MEDIA_TYPE)
        response.headers["Content-Disposition"] = (
            f'attachment; filename="evidence-{pack.membership_id}.jwt"')
    response.headers["Cache-Control"] = "no-store"
    return response
