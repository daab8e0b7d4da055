"""Routes of an advisor about its own access: its memberships, leaving a tenant, its
invitations and accepting one (:class:`~idp_bridge.services.advisors.Advisors`), its access
requests (:class:`~idp_bridge.services.access_requests.AccessRequestsService`)."""

from __future__ import annotations

from flask import g, jsonify

from .common import (access_request_json, authenticated, bp, invitation_json, json_body,
                     membership_json, only, use_cases)


def _advisors():
    return use_cases().advisors


@bp.get("/me/memberships")
@authenticated
def my_memberships():
    return jsonify(memberships=[membership_json(m)
                                for m in _advisors().my_memberships(g.identity)])


@bp.delete("/me/memberships/<tenant_id>")
@authenticated
def leave(tenant_id):
    _advisors().leave(g.identity, tenant_id)
    return "", 204


@bp.get("/me/invitations")
@authenticated
def my_invitations():
    return jsonify(invitations=[invitation_json(i)
                                for i in _advisors().my_invitations(g.identity)])


@bp.post("/me/invitations/<invitation_id>/accept")
@authenticated
def accept_invitation(invitation_id):
    return jsonify(membership_json(_advisors().accept(g.identity, invitation_id))), 201


# --- access requests ---
@bp.get("/me/access-requests")
@authenticated
def my_access_requests():
    return jsonify(access_requests=[access_request_json(r) for r in
                                    use_cases().access_requests.my_requests(g.identity)])


@bp.post("/me/access-requests")
@authenticated
def my_access_request_create():
    """Ask a tenant for temporary access: ``tenant``, ``reason`` (required) and
    ``duration_hours`` (1 to the tenant's maximum age of temporary access)."""
    use_cases().authorize.advisor(g.identity)
    body = json_body()
    only(body, {"tenant", "reason", "duration_hours"})
    # A missing or malformed tenant is an unknown tenant (404 unknown_tenant).
    request = use_cases().access_requests.request_access(
        g.identity, body.get("tenant"), reason=body.get("reason"), duration_hours=body.get("duration_hours"))
    return jsonify(access_request_json(request)), 201


@bp.delete("/me/access-requests/<request_id>")
@authenticated
def my_access_request_withdraw(request_id):
    return jsonify(access_request_json(use_cases().access_requests.withdraw(g.identity,
                                                                             request_id)))
