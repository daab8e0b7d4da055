"""Routes of a tenant's admins: the tenant and its settings, the access code, the
advisors, the audit events (:class:`~idp_bridge.services.tenant_admin.TenantAdmin`)."""

from __future__ import annotations

from flask import g, jsonify, request

from scopes.catalog import ProfileChangeRefused

from ..domain.errors import InvalidInput
from ..request_guard import MAX_QUERY_INT, parse_int
from .common import (PROFILE_FIELDS, authenticated, bp, error, iso, json_body,
                     membership_json, tenant_json, use_cases)


def _admin():
    return use_cases().tenant_admin


@bp.get("/tenants/<tenant_id>")
@authenticated
def tenant_show(tenant_id):
    return jsonify(tenant_json(_admin().tenant(g.identity, tenant_id)))


@bp.patch("/tenants/<tenant_id>")
@authenticated
def tenant_update(tenant_id):
    use_cases().authorize.tenant_admin(g.identity, tenant_id)
    body = json_body()
    unknown = set(body) - {"temporary_max_age_days"}
    if unknown:
        if unknown & PROFILE_FIELDS:
            return error(403, "profile_immutable", ProfileChangeRefused.message,
                         code="profile_immutable")
        raise InvalidInput("unknown fields; allowed: temporary_max_age_days",
                           code="unknown_fields")
    tenant, ended = _admin().set_max_age(g.identity, tenant_id, body.get("temporary_max_age_days"))
    return jsonify({**tenant_json(tenant), "memberships_expired": ended})


@bp.get("/tenants/<tenant_id>/access-code")
@authenticated
def access_code(tenant_id):
    current = _admin().access_code(g.identity, tenant_id)
    response = jsonify(code=current.display, tenant=tenant_id, expires_at=iso(current.expires_at))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/tenants/<tenant_id>/memberships")
@authenticated
def tenant_memberships(tenant_id):
    return jsonify(memberships=[membership_json(m)
                                for m in _admin().memberships_of(g.identity, tenant_id)])


@bp.delete("/tenants/<tenant_id>/memberships/<membership_id>")
@authenticated
def tenant_remove_member(tenant_id, membership_id):
    _admin().remove(g.identity, tenant_id, membership_id)
    return "", 204


@bp.get("/tenants/<tenant_id>/audit-events")
@authenticated
def audit_events(tenant_id):
    use_cases().authorize.tenant_admin(g.identity, tenant_id)
    limit = parse_int(request.args.get("limit", "50"), 1, 500)
    if limit is None:
        raise InvalidInput("limit must be an integer from 1 to 500", code="limit_out_of_range")
    before = request.args.get("before")
    if before is not None:
        before = parse_int(before, 1, MAX_QUERY_INT)
        if before is None:
            raise InvalidInput(f"before must be an event id from 1 to {MAX_QUERY_INT}",
                               code="before_out_of_range")
    rows = _admin().audit_events(g.identity, tenant_id, before_id=before, limit=limit,
                                 event=request.args.get("event"))
    items = [{"id": r.id, "at": iso(r.at), "event": r.event, "actor": r.actor,
              "actor_role": r.actor_role, "membership_id": r.membership_id,
              "client_id": r.client_id, "detail": r.detail} for r in rows]
    next_before = items[-1]["id"] if len(items) == limit else None
    return jsonify(events=items, next_before=next_before)
