"""Routes of the management API. Thin: authenticate, authorise, call the domain, render."""

from __future__ import annotations

from functools import wraps

from flask import Blueprint, current_app, g, jsonify, request

from scopes.catalog import AREAS, ProfileChangeRefused, advisor_scopes

from ..domain import audit
from ..domain.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from ..domain.text import check_text
from ..request_guard import MAX_QUERY_INT, parse_int
from ..storage.db import utcnow
from ..domain.upstream_sessions import session_has_ended
from ..upstream.oidc import ACCESS_TOKEN, SubjectTokenError, UpstreamUnavailable
from .openapi import openapi_document

bp = Blueprint("api", __name__, url_prefix="/api")

_STATUS = {InvalidInput: (400, "invalid_request"), Forbidden: (403, "forbidden"),
           NotFound: (404, "not_found"), Conflict: (409, "conflict")}


def _services():
    return current_app.extensions["idp_bridge"]


def _error(status: int, error: str, description: str, headers=None):
    response = jsonify(error=error, error_description=description)
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


@bp.errorhandler(DomainError)
def domain_error(exc: DomainError):
    status, code = _STATUS.get(type(exc), (400, "invalid_request"))
    return _error(status, code, exc.description)


def authenticated(view):
    """Validate the bearer token (an upstream access token) and put the identity on ``g``."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _error(401, "invalid_token", "an upstream access token is required",
                          {"WWW-Authenticate": 'Bearer realm="idp-bridge"'})
        try:
            g.identity = _services().validator.validate(token.strip(), ACCESS_TOKEN)
        except SubjectTokenError as exc:
            return _error(401, "invalid_token", str(exc),
                          {"WWW-Authenticate": 'Bearer realm="idp-bridge", error="invalid_token"'})
        except UpstreamUnavailable as exc:
            return _error(503, "temporarily_unavailable", str(exc))
        # A token of an upstream session that was logged out (back-channel logout) speaks
        # for nobody any more, though its signature stays valid until it expires.
        with _services().db.read() as session:
            ended = session_has_ended(session, g.identity)
        if ended:
            return _error(401, "invalid_token", "the upstream session of this token has ended",
                          {"WWW-Authenticate": 'Bearer realm="idp-bridge", error="invalid_token"'})
        return view(*args, **kwargs)

    return wrapper


def require_tenant_admin(tenant_id: str) -> None:
    if not _services().roles.check_tenant_admin(g.identity, tenant_id):
        raise Forbidden("only an admin of this tenant may do this")


def require_advisor() -> None:
    if not _services().roles.check_advisor(g.identity):
        raise Forbidden("only advisors may do this")


def require_support_admin() -> None:
    if not _services().roles.check_support_admin(g.identity):
        raise Forbidden("only support admins may do this")


def _json_body() -> dict:
    if not request.data:
        return {}
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    return body


def _iso(value):
    return value.isoformat().replace("+00:00", "Z") if value else None


def membership_json(m) -> dict:
    return {
        "id": m.id, "tenant": m.tenant_id, "advisor": m.advisor_subject,
        "advisor_name": m.advisor_name, "kind": m.kind, "since": _iso(m.created_at),
        "reason": m.reason, "expires_at": _iso(m.expires_at),
        "last_token_issued_at": _iso(m.last_token_at), "created_by": m.created_by,
        "group": m.group_id,
    }


def group_json(group) -> dict:
    return {"id": group.id, "tenant": group.tenant_id, "name": group.name,
            "permissions": list(group.permissions), "created_at": _iso(group.created_at),
            "updated_at": _iso(group.updated_at)}


def invitation_json(invitation) -> dict:
    return {"id": invitation.id, "tenant": invitation.tenant_id, "group": invitation.group_id,
            "invitee_subject": invitation.invitee_subject,
            "invitee_email": invitation.invitee_email, "created_by": invitation.created_by,
            "created_at": _iso(invitation.created_at), "expires_at": _iso(invitation.expires_at)}


# --- documents ---
@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_document(_services().settings.issuer))


@bp.get("/advisor-profile")
def advisor_profile():
    return jsonify(
        scopes=list(advisor_scopes()),
        areas=[{"area": a.key, "name_de": a.name_de, "name_en": a.name_en, "group": a.group,
                "scopes": [s for s in a.scopes if s in advisor_scopes()],
                "read_excludes": list(a.read_excludes)} for a in AREAS],
        mutable=False,
    )


@bp.route("/advisor-profile", methods=["PUT", "PATCH", "POST", "DELETE"])
def advisor_profile_change():
    return _error(403, "profile_immutable", ProfileChangeRefused.message)


# --- tenant admin ---
@bp.get("/tenants/<tenant_id>")
@authenticated
def tenant_show(tenant_id):
    require_tenant_admin(tenant_id)
    s = _services()
    with s.db.read() as session:
        tenant = s.memberships.tenant(session, tenant_id)
        return jsonify(tenant_json(tenant, s))


def tenant_json(tenant, s) -> dict:
    return {"id": tenant.id, "name": tenant.name,
            "temporary_max_age_days": tenant.temporary_max_age_days
            or s.settings.temporary_max_age_days,
            "temporary_max_age_days_limit": s.settings.temporary_max_age_days}


@bp.patch("/tenants/<tenant_id>")
@authenticated
def tenant_update(tenant_id):
    require_tenant_admin(tenant_id)
    s = _services()
    body = _json_body()
    unknown = set(body) - {"temporary_max_age_days"}
    if unknown:
        if unknown & {"scopes", "advisor_profile", "advisor_scopes", "profile"}:
            return _error(403, "profile_immutable", ProfileChangeRefused.message)
        raise InvalidInput("unknown fields; allowed: temporary_max_age_days")
    with s.db.transaction() as session:
        tenant = s.memberships.tenant(session, tenant_id)
        count = s.memberships.set_temporary_max_age(
            session, tenant, body.get("temporary_max_age_days"), utcnow())
        body = tenant_json(tenant, s)
        body["memberships_expired"] = count
    return jsonify(body)


@bp.get("/tenants/<tenant_id>/access-code")
@authenticated
def access_code(tenant_id):
    require_tenant_admin(tenant_id)
    s = _services()
    with s.db.transaction() as session:
        s.memberships.tenant(session, tenant_id)
        current = s.codes.current(session, tenant_id, utcnow())
    response = jsonify(code=current.display, tenant=tenant_id, expires_at=_iso(current.expires_at))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/tenants/<tenant_id>/memberships")
@authenticated
def tenant_memberships(tenant_id):
    require_tenant_admin(tenant_id)
    s = _services()
    with s.db.read() as session:
        s.memberships.tenant(session, tenant_id)
        items = [membership_json(m)
                 for m in s.memberships.list_for_tenant(session, tenant_id, utcnow())]
    return jsonify(memberships=items)


@bp.delete("/tenants/<tenant_id>/memberships/<membership_id>")
@authenticated
def tenant_remove_member(tenant_id, membership_id):
    require_tenant_admin(tenant_id)
    s = _services()
    with s.db.transaction() as session:
        membership = s.memberships.get_for_tenant(session, tenant_id, membership_id)
        s.memberships.end(session, membership, by=g.identity.subject,
                          actor_role="tenant_admin", reason="removed_by_tenant", now=utcnow())
    return "", 204


@bp.get("/tenants/<tenant_id>/audit-events")
@authenticated
def audit_events(tenant_id):
    require_tenant_admin(tenant_id)
    s = _services()
    limit = parse_int(request.args.get("limit", "50"), 1, 500)
    if limit is None:
        raise InvalidInput("limit must be an integer from 1 to 500")
    before = request.args.get("before")
    if before is not None:
        before = parse_int(before, 1, MAX_QUERY_INT)
        if before is None:
            raise InvalidInput(f"before must be an event id from 1 to {MAX_QUERY_INT}")
    event = request.args.get("event")
    if event is not None and event not in audit.EVENTS:
        raise InvalidInput(f"unknown event; known: {', '.join(audit.EVENTS)}")
    with s.db.read() as session:
        s.memberships.tenant(session, tenant_id)
        rows = audit.query_events(session, tenant_id, before_id=before, limit=limit, event=event)
    items = [{"id": r.id, "at": _iso(r.at), "event": r.event, "actor": r.actor,
              "actor_role": r.actor_role, "membership_id": r.membership_id,
              "client_id": r.client_id, "detail": r.detail or {}} for r in rows]
    next_before = items[-1]["id"] if len(items) == limit else None
    return jsonify(events=items, next_before=next_before)


# --- advisors ---
@bp.get("/me/memberships")
@authenticated
def my_memberships():
    require_advisor()
    s = _services()
    with s.db.read() as session:
        items = [membership_json(m)
                 for m in s.memberships.list_for_advisor(session, g.identity.subject, utcnow())]
    return jsonify(memberships=items)


@bp.delete("/me/memberships/<tenant_id>")
@authenticated
def leave(tenant_id):
    require_advisor()
    s = _services()
    with s.db.transaction() as session:
        membership = s.memberships.active(session, tenant_id, g.identity.subject)
        if membership is None:
            raise NotFound("you are not a member of this tenant")
        s.memberships.end(session, membership, by=g.identity.subject, actor_role="advisor",
                          reason="left", now=utcnow())
    return "", 204


# --- support admins ---
@bp.get("/tenants/<tenant_id>/permanent-advisors")
@authenticated
def permanent_list(tenant_id):
    require_support_admin()
    s = _services()
    with s.db.read() as session:
        s.memberships.tenant(session, tenant_id)
        items = [membership_json(m)
                 for m in s.memberships.list_for_tenant(session, tenant_id, utcnow())
                 if m.kind == "permanent"]
    return jsonify(memberships=items)


@bp.put("/tenants/<tenant_id>/permanent-advisors/<path:advisor_subject>")
@authenticated
def permanent_assign(tenant_id, advisor_subject):
    require_support_admin()
    s = _services()
    body = _json_body()
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or not 0 < len(name) <= 255):
        raise InvalidInput("name must be a string of 1 to 255 characters")
    name = check_text(name, field="name", max_length=255)  # shown to the tenant
    if not 0 < len(advisor_subject) <= 255 or not advisor_subject.isprintable():
        raise InvalidInput("advisor subject must be 1 to 255 printable characters")
    with s.db.transaction() as session:
        tenant = s.memberships.tenant(session, tenant_id)
        membership, created = s.memberships.assign_permanent(
            session, tenant, subject=advisor_subject, name=name, by=g.identity.subject,
            now=utcnow())
        body = membership_json(membership)
    return jsonify(body), 201 if created else 200


@bp.delete("/tenants/<tenant_id>/permanent-advisors/<path:advisor_subject>")
@authenticated
def permanent_remove(tenant_id, advisor_subject):
    require_support_admin()
    s = _services()
    with s.db.transaction() as session:
        s.memberships.tenant(session, tenant_id)
        membership = s.memberships.active(session, tenant_id, advisor_subject)
        if membership is None or membership.kind != "permanent":
            raise NotFound("this advisor is not a permanent advisor of the tenant")
        s.memberships.end(session, membership, by=g.identity.subject,
                          actor_role="support_admin", reason="removed_by_support", now=utcnow())
    return "", 204


# --- user groups and guest invitations (tenant admins; advisors accept) ---
@bp.get("/tenants/<tenant_id>/groups")
@authenticated
def groups_list(tenant_id):
    require_tenant_admin(tenant_id)
    s = _services()
    with s.db.read() as session:
        s.memberships.tenant(session, tenant_id)
        return jsonify(groups=[group_json(g_) for g_ in s.guests.groups(session, tenant_id)])


@bp.post("/tenants/<tenant_id>/groups")
@authenticated
def groups_create(tenant_id):
    require_tenant_admin(tenant_id)
    s = _services()
    body = _json_body()
    _only(body, {"name", "permissions"})
    with s.db.transaction() as session:
        s.memberships.tenant(session, tenant_id)
        group = s.guests.create_group(session, tenant_id, body.get("name"),
                                      body.get("permissions"), by=g.identity.subject,
                                      now=utcnow())
        result = group_json(group)
    return jsonify(result), 201


@bp.patch("/tenants/<tenant_id>/groups/<group_id>")
@authenticated
def groups_update(tenant_id, group_id):
    require_tenant_admin(tenant_id)
    s = _services()
    body = _json_body()
    _only(body, {"name", "permissions"})
    with s.db.transaction() as session:
        group, narrowed = s.guests.update_group(
            session, tenant_id, group_id, name=body.get("name"),
            permissions=body.get("permissions"), by=g.identity.subject, now=utcnow())
        result = {**group_json(group), "token_families_narrowed": narrowed}
    return jsonify(result)


@bp.delete("/tenants/<tenant_id>/groups/<group_id>")
@authenticated
def groups_delete(tenant_id, group_id):
    require_tenant_admin(tenant_id)
    s = _services()
    with s.db.transaction() as session:
        s.guests.delete_group(session, tenant_id, group_id, by=g.identity.subject, now=utcnow())
    return "", 204


@bp.get("/tenants/<tenant_id>/invitations")
@authenticated
def invitations_list(tenant_id):
    require_tenant_admin(tenant_id)
    s = _services()
    with s.db.read() as session:
        s.memberships.tenant(session, tenant_id)
        items = [invitation_json(i) for i in s.guests.invitations(session, tenant_id, utcnow())]
    return jsonify(invitations=items)


@bp.post("/tenants/<tenant_id>/invitations")
@authenticated
def invitations_create(tenant_id):
    require_tenant_admin(tenant_id)
    s = _services()
    body = _json_body()
    _only(body, {"group", "subject", "email"})
    for field in ("group", "subject", "email"):
        if body.get(field) is not None and not isinstance(body[field], str):
            raise InvalidInput(f"{field} must be a string")
    with s.db.transaction() as session:
        tenant = s.memberships.tenant(session, tenant_id)
        invitation = s.guests.invite(session, tenant, group_id=body.get("group"),
                                     subject=body.get("subject"), email=body.get("email"),
                                     by=g.identity.subject, now=utcnow())
        result = invitation_json(invitation)
    return jsonify(result), 201


@bp.delete("/tenants/<tenant_id>/invitations/<invitation_id>")
@authenticated
def invitations_withdraw(tenant_id, invitation_id):
    require_tenant_admin(tenant_id)
    s = _services()
    with s.db.transaction() as session:
        s.guests.withdraw(session, tenant_id, invitation_id, by=g.identity.subject, now=utcnow())
    return "", 204


@bp.get("/me/invitations")
@authenticated
def my_invitations():
    require_advisor()
    s = _services()
    with s.db.read() as session:
        items = [invitation_json(i) for i in s.guests.my_invitations(session, g.identity, utcnow())]
    return jsonify(invitations=items)


@bp.post("/me/invitations/<invitation_id>/accept")
@authenticated
def accept_invitation(invitation_id):
    require_advisor()
    s = _services()
    with s.db.transaction() as session:
        membership = s.guests.accept(session, invitation_id, g.identity, now=utcnow())
        result = membership_json(membership)
    return jsonify(result), 201


def _only(body: dict, allowed: set) -> None:
    unknown = set(body) - allowed
    if unknown & {"scopes", "advisor_profile", "advisor_scopes", "profile"}:
        raise Forbidden(ProfileChangeRefused.message)
    if unknown:  # named from what is allowed: the description never repeats the input
        raise InvalidInput(f"unknown fields; allowed: {', '.join(sorted(allowed))}")
