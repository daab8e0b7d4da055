"""Routes of an advisor about its own access: its memberships, leaving a tenant, its
invitations and accepting one (:class:`~idp_bridge.services.advisors.Advisors`)."""

from __future__ import annotations

from flask import g, jsonify

from .common import authenticated, bp, invitation_json, membership_json, use_cases


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
