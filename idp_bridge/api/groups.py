"""Routes of a tenant's admins about user groups and guest invitations
(:class:`~idp_bridge.services.groups.Groups`)."""

from __future__ import annotations

from flask import g, jsonify

from ..domain.errors import InvalidInput
from .common import (authenticated, bp, group_json, invitation_json, json_body, only,
                     use_cases)


def _groups():
    return use_cases().groups


def _body(tenant_id: str, allowed: set) -> dict:
    # Rights first: a caller outside them learns nothing from the body's refusal.
    use_cases().authorize.tenant_admin(g.identity, tenant_id)
    body = json_body()
    only(body, allowed)
    return body


@bp.get("/tenants/<tenant_id>/groups")
@authenticated
def groups_list(tenant_id):
    return jsonify(groups=[group_json(x) for x in _groups().list(g.identity, tenant_id)])


@bp.post("/tenants/<tenant_id>/groups")
@authenticated
def groups_create(tenant_id):
    body = _body(tenant_id, {"name", "permissions"})
    group = _groups().create(g.identity, tenant_id, body.get("name"), body.get("permissions"))
    return jsonify(group_json(group)), 201


@bp.patch("/tenants/<tenant_id>/groups/<group_id>")
@authenticated
def groups_update(tenant_id, group_id):
    body = _body(tenant_id, {"name", "permissions"})
    group, narrowed = _groups().update(g.identity, tenant_id, group_id, name=body.get("name"),
                                       permissions=body.get("permissions"))
    return jsonify({**group_json(group), "token_families_narrowed": narrowed})


@bp.delete("/tenants/<tenant_id>/groups/<group_id>")
@authenticated
def groups_delete(tenant_id, group_id):
    _groups().delete(g.identity, tenant_id, group_id)
    return "", 204


@bp.get("/tenants/<tenant_id>/invitations")
@authenticated
def invitations_list(tenant_id):
    return jsonify(invitations=[invitation_json(i)
                                for i in _groups().invitations(g.identity, tenant_id)])


@bp.post("/tenants/<tenant_id>/invitations")
@authenticated
def invitations_create(tenant_id):
    body = _body(tenant_id, {"group", "subject", "email"})
    for field in ("group", "subject", "email"):
        if body.get(field) is not None and not isinstance(body[field], str):
            raise InvalidInput(f"{field} must be a string", code="field_not_string")
    invitation = _groups().invite(g.identity, tenant_id, group_id=body.get("group"),
                                  subject=body.get("subject"), email=body.get("email"))
    return jsonify(invitation_json(invitation)), 201


@bp.delete("/tenants/<tenant_id>/invitations/<invitation_id>")
@authenticated
def invitations_withdraw(tenant_id, invitation_id):
    _groups().withdraw(g.identity, tenant_id, invitation_id)
    return "", 204
