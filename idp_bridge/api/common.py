"""What every route of the management API shares: the blueprint, the caller's
authentication, the one mapping of refusals to JSON problems, and the JSON renderings."""

from __future__ import annotations

from functools import wraps

from flask import Blueprint, current_app, g, jsonify, request

from scopes.catalog import ProfileChangeRefused

from .. import surfaces
from ..domain.errors import DomainError, Forbidden, InvalidInput
from ..upstream.oidc import SubjectTokenError, UpstreamUnavailable

bp = Blueprint("api", __name__, url_prefix="/api")

#: The API's ``error`` for each kind of refusal (the status is :data:`surfaces.STATUS`'s);
#: ``error_code`` adds the stable machine code. (Not ``code``: that is the access code in
#: ``GET /api/tenants/<t>/access-code``, and a refusal must never look like one.)
ERRORS = {"invalid": "invalid_request", "not_found": "not_found", "forbidden": "forbidden",
          "conflict": "conflict", "refused": "invalid_request", "scope": "forbidden",
          "target": "invalid_request", "unavailable": "temporarily_unavailable"}
#: Fields that would change the fixed advisor profile: refused as such, whatever else.
PROFILE_FIELDS = frozenset({"scopes", "advisor_profile", "advisor_scopes", "profile"})


def use_cases():
    return current_app.extensions["idp_bridge"].use_cases


def settings():
    return current_app.extensions["idp_bridge"].settings


def error(status: int, error: str, description: str, headers=None, code: str | None = None):
    body = {"error": error, "error_description": description}
    if code is not None:
        body["error_code"] = code
    response = jsonify(body)
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def problem(exc: DomainError):
    """The JSON answer to a refusal: status from its kind, ``error``, ``error_code``, and
    the English description (which never repeats request input)."""
    response = error(surfaces.STATUS.get(exc.kind, 400), ERRORS.get(exc.kind, "invalid_request"),
                     exc.description, code=exc.code)
    if exc.kind == "unavailable":
        response.headers["Retry-After"] = "5"
    return response


@bp.errorhandler(DomainError)
def domain_error(exc: DomainError):
    return problem(exc)


def authenticated(view):
    """Validate the bearer token (an upstream access token) and put the caller on ``g``."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return error(401, "invalid_token", "an upstream access token is required",
                         {"WWW-Authenticate": 'Bearer realm="idp-bridge"'})
        try:
            g.identity = use_cases().callers.from_bearer_token(token.strip())
        except SubjectTokenError as exc:
            return error(401, "invalid_token", str(exc),
                         {"WWW-Authenticate": 'Bearer realm="idp-bridge", error="invalid_token"'})
        except UpstreamUnavailable as exc:
            return error(503, "temporarily_unavailable", str(exc))
        return view(*args, **kwargs)

    return wrapper


def json_body() -> dict:
    if not request.data:
        return {}
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object", code="body_not_object")
    return body


def only(body: dict, allowed: set) -> None:
    """Refuse fields other than ``allowed``: those that would change the advisor profile
    with 403, others with 400 (named from what is allowed: never repeating the input)."""
    unknown = set(body) - allowed
    if unknown & PROFILE_FIELDS:
        raise Forbidden(ProfileChangeRefused.message, code="profile_immutable")
    if unknown:
        raise InvalidInput(f"unknown fields; allowed: {', '.join(sorted(allowed))}",
                           code="unknown_fields")


def iso(value):
    return value.isoformat().replace("+00:00", "Z") if value else None


def membership_json(m) -> dict:
    return {
        "id": m.id, "tenant": m.tenant_id, "advisor": m.advisor_subject,
        "advisor_name": m.advisor_name, "kind": m.kind, "since": iso(m.created_at),
        "reason": m.reason, "expires_at": iso(m.expires_at),
        "last_token_issued_at": iso(m.last_token_at), "created_by": m.created_by,
        "group": m.group_id,
        **({"confirmed_at": iso(m.confirmed_at), "reconfirm_due_at": iso(m.reconfirm_due_at),
            "lapses_at": iso(m.lapses_at)} if m.kind == "permanent" else {}),
    }


def proposal_json(p) -> dict:
    """Support's proposal of a permanent advisor and its answer."""
    return {"id": p.id, "tenant": p.tenant_id, "tenant_name": p.tenant_name,
            "advisor": p.advisor_subject, "advisor_name": p.advisor_name, "reason": p.reason,
            "status": p.status, "proposed_by": p.proposed_by,
            "proposed_by_name": p.proposed_by_name, "proposed_at": iso(p.proposed_at),
            "decided_at": iso(p.decided_at), "decided_by": p.decided_by,
            "decided_by_name": p.decided_by_name, "accepted_by": list(p.accepted_by),
            "note": p.note, "membership_id": p.membership_id, "expires_at": iso(p.expires_at),
            "first_approval": approval_json(p.first_approval) if p.first_approval else None}


def person_json(person) -> dict:
    """A person of the directory: the subject to use, and what identifies them to a reader."""
    return {"subject": person.subject, "name": person.name, "username": person.username,
            "email": person.email}


def group_json(group) -> dict:
    return {"id": group.id, "tenant": group.tenant_id, "name": group.name,
            "permissions": list(group.permissions), "created_at": iso(group.created_at),
            "updated_at": iso(group.updated_at)}


def invitation_json(invitation) -> dict:
    return {"id": invitation.id, "tenant": invitation.tenant_id, "group": invitation.group_id,
            "invitee_subject": invitation.invitee_subject,
            "invitee_name": invitation.invitee_name,
            "invitee_email": invitation.invitee_email, "created_by": invitation.created_by,
            "created_at": iso(invitation.created_at), "expires_at": iso(invitation.expires_at)}


def tenant_json(tenant) -> dict:
    return {"id": tenant.id, "name": tenant.name,
            "temporary_max_age_days": tenant.temporary_max_age_days,
            "temporary_max_age_days_limit": tenant.temporary_max_age_days_limit,
            "access_modes": tenant.access_modes, "four_eyes": tenant.four_eyes,
            "permanent_mode": tenant.permanent_mode}


def approval_json(a) -> dict:
    """A four-eyes approval: what it is about, who approved first and when it lapses."""
    return {"id": a.id, "tenant": a.tenant_id, "action": a.action, "target": a.target,
            "terms": a.terms, "status": a.status, "first_approver": a.requested_by,
            "first_approver_name": a.requested_by_name, "first_approved_at": iso(a.requested_at),
            "expires_at": iso(a.expires_at), "decided_by": a.decided_by,
            "decided_by_name": a.decided_by_name, "decided_at": iso(a.decided_at),
            "note": a.note}


def access_request_json(r) -> dict:
    return {"id": r.id, "tenant": r.tenant_id, "tenant_name": r.tenant_name,
            "advisor": r.advisor_subject, "advisor_name": r.advisor_name, "reason": r.reason,
            "duration_hours": r.duration_hours, "status": r.status,
            "created_at": iso(r.created_at), "expires_at": iso(r.expires_at),
            "decided_at": iso(r.decided_at), "decided_by": r.decided_by,
            "decided_by_name": r.name_of(r.decided_by) if r.decided_by != "system" else None,
            "approved_by": list(r.approved_by),
            "approved_by_names": [r.name_of(s) for s in r.approved_by],
            "approved_hours": r.approved_hours, "note": r.decision_note,
            "membership_id": r.membership_id, "access_expires_at": iso(r.access_expires_at),
            "first_approval": approval_json(r.first_approval) if r.first_approval else None}
