"""Routes of support admins: permanent advisors of a tenant
(:class:`~idp_bridge.services.support.Support`)."""

from __future__ import annotations

from flask import g, jsonify

from .common import authenticated, bp, json_body, membership_json, use_cases


def _support():
    return use_cases().support


@bp.get("/tenants/<tenant_id>/permanent-advisors")
@authenticated
def permanent_list(tenant_id):
    return jsonify(memberships=[membership_json(m)
                                for m in _support().permanent_advisors(g.identity, tenant_id)])


@bp.put("/tenants/<tenant_id>/permanent-advisors/<path:advisor_subject>")
@authenticated
def permanent_assign(tenant_id, advisor_subject):
    use_cases().authorize.support_admin(g.identity)
    name = json_body().get("name")
    membership, created = _support().assign(g.identity, tenant_id, advisor_subject, name)
    return jsonify(membership_json(membership)), 201 if created else 200


@bp.delete("/tenants/<tenant_id>/permanent-advisors/<path:advisor_subject>")
@authenticated
def permanent_remove(tenant_id, advisor_subject):
    _support().remove(g.identity, tenant_id, advisor_subject)
    return "", 204
