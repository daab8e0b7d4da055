"""Routes of support admins: permanent advisors of a tenant
(:class:`~idp_bridge.services.support.Support`)."""

from __future__ import annotations

from flask import g, jsonify, request

from ..domain.errors import InvalidInput
from .common import (authenticated, bp, json_body, membership_json, only, person_json,
                     proposal_json, use_cases)


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
    """The subject must be an enabled advisor of the directory; the name shown comes from
    the directory (a ``name`` in the body is refused: it would be text a client typed)."""
    use_cases().authorize.support_admin(g.identity)
    body = json_body()
    if "name" in body:
        raise InvalidInput("name is not accepted: the directory names the advisor",
                           code="name_from_directory")
    only(body, set())
    membership, created = _support().assign(g.identity, tenant_id, advisor_subject)
    return jsonify(membership_json(membership)), 201 if created else 200


@bp.delete("/tenants/<tenant_id>/permanent-advisors/<path:advisor_subject>")
@authenticated
def permanent_remove(tenant_id, advisor_subject):
    _support().remove(g.identity, tenant_id, advisor_subject)
    return "", 204


# --- proposals of permanent advisors (the tenant accepts them) ---
@bp.post("/tenants/<tenant_id>/permanent-proposals")
@authenticated
def permanent_propose(tenant_id):
    """Support proposes ``advisor`` (a subject the directory resolves to an enabled advisor)
    with an optional ``reason``; nothing is live until a tenant admin accepts."""
    use_cases().authorize.support_admin(g.identity)
    body = json_body()
    only(body, {"advisor", "reason"})
    proposal = use_cases().permanent.propose(g.identity, tenant_id, body.get("advisor"),
                                             reason=body.get("reason"))
    return jsonify(proposal_json(proposal)), 201


@bp.delete("/tenants/<tenant_id>/permanent-proposals/<proposal_id>")
@authenticated
def permanent_withdraw(tenant_id, proposal_id):
    return jsonify(proposal_json(use_cases().permanent.withdraw(g.identity, tenant_id,
                                                                proposal_id)))


@bp.get("/permanent-proposals")
@authenticated
def permanent_proposals_everywhere():
    """Support: every pending proposal (``tenant`` filters)."""
    return jsonify(proposals=[proposal_json(p) for p in use_cases().permanent.pending_everywhere(
        g.identity, request.args.get("tenant"))])


@bp.get("/directory/advisors")
@authenticated
def directory_advisors():
    """Support admins: advisors of the directory matching ``q`` (name, username, e-mail)."""
    found = use_cases().directory.advisors_for_support(g.identity, request.args.get("q"),
                                                       limit=_limit())
    return jsonify(source=found.source, people=[person_json(p) for p in found.people])


@bp.get("/tenants/<tenant_id>/directory/advisors")
@authenticated
def tenant_directory_advisors(tenant_id):
    """A tenant's admins: advisors matching ``q``, to invite one as a guest."""
    found = use_cases().directory.advisors_for_tenant(g.identity, tenant_id,
                                                      request.args.get("q"), limit=_limit())
    return jsonify(source=found.source, people=[person_json(p) for p in found.people])


def _limit() -> int:
    raw = request.args.get("limit")
    if raw is None:
        return 10
    if not raw.isdigit() or len(raw) > 3:
        raise InvalidInput("limit must be 1 to 20", code="limit_out_of_range")
    return int(raw)
