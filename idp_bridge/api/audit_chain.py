"""The tenant's audit hash chain for its admins (issue 15 item 4; docs/audit-chain.md):
``GET /api/tenants/{t}/audit/chain`` a page at a time, the export's JSON shape, with the
bridge's signed checkpoints (:class:`~idp_bridge.services.audit_chain.AuditChains`)."""

from __future__ import annotations

from flask import g, jsonify, request

from ..domain.errors import InvalidInput
from ..request_guard import MAX_QUERY_INT, parse_int
from ..services.audit_chain import DEFAULT_PAGE, MAX_PAGE
from .common import authenticated, bp, settings, use_cases


@bp.get("/tenants/<tenant_id>/audit/chain")
@authenticated
def audit_chain(tenant_id):
    """Events with ``seq`` above ``after`` (default 0: from the start), ``limit`` of them
    (1 to 5000, default 1000), oldest first; ``next_after`` is the next page's ``after``
    (null on the last page). Tenant admins only."""
    use_cases().authorize.tenant_admin(g.identity, tenant_id)
    limit = parse_int(request.args.get("limit", str(DEFAULT_PAGE)), 1, MAX_PAGE)
    if limit is None:
        raise InvalidInput(f"limit must be an integer from 1 to {MAX_PAGE}",
                           code="limit_out_of_range")
    after = parse_int(request.args.get("after", "0"), 0, MAX_QUERY_INT)
    if after is None:
        raise InvalidInput(f"after must be a position from 0 to {MAX_QUERY_INT}",
                           code="after_out_of_range")
    chains = use_cases().audit_chains
    page = chains.page(g.identity, tenant_id, after=after, limit=limit)
    issuer = settings().issuer
    response = jsonify(page.document(issuer=issuer, jwks_uri=f"{issuer}/audit/jwks",
                                     exported_at=chains.now_text()))
    response.headers["Cache-Control"] = "no-store"
    return response
