"""Routes of a tenant's admins: the tenant and its settings, the access code, the
advisors, the audit events (:class:`~idp_bridge.services.tenant_admin.TenantAdmin`), access
requests and four eyes (:mod:`idp_bridge.services.access_requests`,
:mod:`idp_bridge.services.approvals`)."""

from __future__ import annotations

from flask import g, jsonify, request

from scopes.catalog import ProfileChangeRefused

from ..domain.errors import InvalidInput
from ..request_guard import MAX_QUERY_INT, parse_int
from .common import (PROFILE_FIELDS, access_request_json, approval_json, authenticated, bp,
                     error, iso, json_body, membership_json, only, proposal_json, tenant_json,
                     use_cases)


def _admin():
    return use_cases().tenant_admin


@bp.get("/tenants/<tenant_id>")
@authenticated
def tenant_show(tenant_id):
    return jsonify(tenant_json(_admin().tenant(g.identity, tenant_id)))


SETTINGS_FIELDS = ("temporary_max_age_days", "access_modes", "four_eyes", "permanent_mode")


@bp.patch("/tenants/<tenant_id>")
@authenticated
def tenant_update(tenant_id):
    """Change settings in one go. What four eyes holds back (lengthening the maximum age,
    turning four eyes off, where the tenant asks for four eyes) is answered 202 with the
    pending approvals; the rest applies at once (200)."""
    use_cases().authorize.tenant_admin(g.identity, tenant_id)
    body = json_body()
    unknown = set(body) - set(SETTINGS_FIELDS)
    if unknown:
        if unknown & PROFILE_FIELDS:
            return error(403, "profile_immutable", ProfileChangeRefused.message,
                         code="profile_immutable")
        raise InvalidInput(f"unknown fields; allowed: {', '.join(SETTINGS_FIELDS)}",
                           code="unknown_fields")
    if not body:
        raise InvalidInput(f"nothing to change; fields: {', '.join(SETTINGS_FIELDS)}",
                           code="unknown_fields")
    change = _admin().update_settings(g.identity, tenant_id, body)
    return jsonify({**tenant_json(change.tenant), "memberships_expired": change.memberships_ended,
                    "pending_approvals": [approval_json(a) for a in change.pending]}), \
        202 if change.pending else 200


# --- access requests and four eyes ---
def _requests():
    return use_cases().access_requests


@bp.get("/tenants/<tenant_id>/access-requests")
@authenticated
def access_request_list(tenant_id):
    return jsonify(access_requests=[access_request_json(r) for r in
                                    _requests().open_requests(g.identity, tenant_id)])


@bp.post("/tenants/<tenant_id>/access-requests/<request_id>/approve")
@authenticated
def access_request_approve(tenant_id, request_id):
    """Approve (``duration_hours`` may shorten what was asked for, ``note`` optional): 200
    with the new membership, or under four eyes 202 with the first approval."""
    use_cases().authorize.tenant_admin(g.identity, tenant_id)
    body = json_body()
    only(body, {"duration_hours", "note"})
    decision = _requests().approve(g.identity, tenant_id, request_id,
                                   duration_hours=body.get("duration_hours"),
                                   note=body.get("note"))
    answer = {"access_request": access_request_json(decision.request),
              "membership": membership_json(decision.membership) if decision.membership else None,
              "pending_approval": approval_json(decision.approval)
              if decision.approval and not decision.applied else None}
    return jsonify(answer), 200 if decision.applied else 202


@bp.post("/tenants/<tenant_id>/access-requests/<request_id>/deny")
@authenticated
def access_request_deny(tenant_id, request_id):
    use_cases().authorize.tenant_admin(g.identity, tenant_id)
    body = json_body()
    only(body, {"note"})
    return jsonify(access_request_json(_requests().deny(g.identity, tenant_id, request_id,
                                                        note=body.get("note"))))


# --- permanent advisors with the tenant's consent ---
@bp.get("/tenants/<tenant_id>/permanent-proposals")
@authenticated
def permanent_proposal_list(tenant_id):
    """Pending proposals of permanent advisors (the tenant's admins and support)."""
    return jsonify(proposals=[proposal_json(p) for p in
                              use_cases().permanent.proposals(g.identity, tenant_id)])


@bp.post("/tenants/<tenant_id>/permanent-proposals/<proposal_id>/accept")
@authenticated
def permanent_proposal_accept(tenant_id, proposal_id):
    """Accept: 200 with the permanent membership, or under four eyes 202 with the first
    acceptance awaiting a second admin."""
    use_cases().authorize.tenant_admin(g.identity, tenant_id)
    only(json_body(), set())
    done = use_cases().permanent.accept(g.identity, tenant_id, proposal_id)
    answer = {"proposal": proposal_json(done.proposal),
              "membership": membership_json(done.membership) if done.membership else None,
              "pending_approval": approval_json(done.approval) if done.approval else None}
    return jsonify(answer), 200 if done.applied else 202


@bp.post("/tenants/<tenant_id>/permanent-proposals/<proposal_id>/decline")
@authenticated
def permanent_proposal_decline(tenant_id, proposal_id):
    use_cases().authorize.tenant_admin(g.identity, tenant_id)
    body = json_body()
    only(body, {"note"})
    return jsonify(proposal_json(use_cases().permanent.decline(
        g.identity, tenant_id, proposal_id, note=body.get("note"))))


@bp.get("/tenants/<tenant_id>/permanent-confirmations")
@authenticated
def permanent_confirmations(tenant_id):
    """The tenant's permanent advisors with ``confirmed_at``, ``reconfirm_due_at`` and
    ``lapses_at``."""
    return jsonify(memberships=[membership_json(m) for m in
                                use_cases().permanent.confirmations(g.identity, tenant_id)])


@bp.post("/tenants/<tenant_id>/memberships/<membership_id>/reconfirm")
@authenticated
def permanent_reconfirm(tenant_id, membership_id):
    use_cases().authorize.tenant_admin(g.identity, tenant_id)
    only(json_body(), set())
    return jsonify(membership_json(use_cases().permanent.reconfirm(g.identity, tenant_id,
                                                                   membership_id)))


@bp.get("/tenants/<tenant_id>/approvals")
@authenticated
def approval_list(tenant_id):
    return jsonify(approvals=[approval_json(a) for a in
                              use_cases().approvals.pending(g.identity, tenant_id)])


@bp.post("/tenants/<tenant_id>/approvals/<approval_id>/approve")
@authenticated
def approval_confirm(tenant_id, approval_id):
    """The second admin's approval: the decision takes effect with the first's terms."""
    use_cases().authorize.tenant_admin(g.identity, tenant_id)
    only(json_body(), set())
    done = use_cases().approvals.confirm(g.identity, tenant_id, approval_id)
    return jsonify(approval=approval_json(done.approval), tenant=tenant_json(done.tenant))


@bp.post("/tenants/<tenant_id>/approvals/<approval_id>/reject")
@authenticated
def approval_reject(tenant_id, approval_id):
    use_cases().authorize.tenant_admin(g.identity, tenant_id)
    body = json_body()
    only(body, {"note"})
    return jsonify(approval_json(use_cases().approvals.reject(g.identity, tenant_id, approval_id,
                                                             note=body.get("note"))))


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
    limit, before = _page_args(default_limit=50, what="an event id")
    rows = _admin().audit_events(g.identity, tenant_id, before_id=before, limit=limit,
                                 event=request.args.get("event"))
    items = [{"id": r.id, "at": iso(r.at), "event": r.event, "actor": r.actor,
              "actor_role": r.actor_role, "membership_id": r.membership_id,
              "client_id": r.client_id, "detail": r.detail} for r in rows]
    next_before = items[-1]["id"] if len(items) == limit else None
    return jsonify(events=items, next_before=next_before)


# --- revocation receipts ---
def receipt_json(r) -> dict:
    return {"stream_id": r.stream_id, "client_id": r.client_id, "client_name": r.client_name,
            "delivery": r.delivery, "description": r.description, "status": r.status,
            "confirmed": r.confirmed, "acknowledged_at": iso(r.acknowledged_at),
            "latency_ms": r.latency_ms, "reason": r.reason, "last_seen_at": iso(r.last_seen_at)}


def revocation_json(r) -> dict:
    return {"id": r.id, "kind": r.kind, ("grant_id" if r.kind == "grant" else "sid"): r.value,
            "reason": r.reason, "revoked_at": iso(r.revoked_at),
            "membership_id": r.membership_id, "advisor": r.advisor_subject,
            "due": r.due, "confirmed": r.confirmed, "within_ms": r.within_ms,
            "receipts": [receipt_json(x) for x in r.receipts]}


@bp.get("/tenants/<tenant_id>/memberships/<membership_id>")
@authenticated
def tenant_membership(tenant_id, membership_id):
    """A membership of the tenant, also an ended one, with its revocation receipts."""
    detail = _admin().membership_detail(g.identity, tenant_id, membership_id)
    return jsonify({**membership_json(detail.membership),
                    "ended_at": iso(detail.ended_at), "ended_by": detail.ended_by,
                    "end_reason": detail.end_reason,
                    "revocation_receipts": [revocation_json(r) for r in detail.revocations]})


@bp.get("/tenants/<tenant_id>/revocations")
@authenticated
def tenant_revocations(tenant_id):
    use_cases().authorize.tenant_admin(g.identity, tenant_id)
    limit = parse_int(request.args.get("limit", "20"), 1, 100)
    if limit is None:
        raise InvalidInput("limit must be an integer from 1 to 100", code="limit_out_of_range")
    return jsonify(revocations=[revocation_json(r)
                                for r in _admin().revocations(g.identity, tenant_id, limit)])


# --- what advisors did at the resource servers (access records) ---
def _access_query(**more):
    """The access log's filters from the query: ``advisor`` (name, username, e-mail or
    subject), ``membership``, ``area`` and ``action`` of the catalog, ``since`` and
    ``until`` as days (YYYY-MM-DD, in the bridge's zone, both included) or RFC 3339 times."""
    from datetime import date, datetime, timezone

    from scopes.catalog import ACTIONS, CATALOG

    from ..domain.memberships import plausible_id
    from ..services.access_records import AccessQuery

    args = request.args
    advisor = (args.get("advisor") or "").strip() or None
    if advisor is not None and (len(advisor) > 100 or not advisor.isprintable()):
        raise InvalidInput("advisor must be at most 100 printable characters",
                           code="advisor_filter_invalid")
    area = args.get("area") or None
    if area is not None and area not in CATALOG:
        raise InvalidInput("area must be a functional area of the catalog", code="unknown_area")
    action = args.get("action") or None
    if action is not None and action not in ACTIONS:
        raise InvalidInput("action must be read or write", code="unknown_action")
    membership = args.get("membership") or None
    if membership is not None and not plausible_id(membership):
        raise InvalidInput("membership must be a membership id", code="unknown_membership_filter")
    found = {}
    for key in ("since", "until"):
        value = args.get(key) or None
        found[key] = found[key + "_at"] = None
        if value is None:
            continue
        try:
            if len(value) == 10:
                day = date.fromisoformat(value)
                if not date(1970, 1, 1) <= day <= date(9999, 12, 30):
                    raise ValueError(value)
                found[key] = day
            elif 20 <= len(value) <= 35:
                at = datetime.fromisoformat(value.replace("Z", "+00:00"))
                if at.tzinfo is None:
                    raise ValueError(value)
                found[key + "_at"] = at.astimezone(timezone.utc)
            else:
                raise ValueError(value)
        except ValueError:
            raise InvalidInput(f"{key} must be a date (YYYY-MM-DD) or an RFC 3339 time with "
                               "a zone", code="time_filter_invalid") from None
    return AccessQuery(advisor=advisor, membership_id=membership, area=area, action=action,
                       since=found["since"], until=found["until"], start=found["since_at"],
                       end=found["until_at"], **more)


@bp.get("/tenants/<tenant_id>/access")
@authenticated
def tenant_access(tenant_id):
    """The access log's groups: per advisor (membership), area and action, how many
    requests, the first and last, their statuses; the newest group first."""
    use_cases().authorize.tenant_admin(g.identity, tenant_id)
    groups = use_cases().access_records.access_summary(g.identity, tenant_id, _access_query())
    return jsonify(groups=[{
        "advisor": x.subject, "advisor_name": x.advisor_name, "membership_id": x.membership_id,
        "area": x.area, "action": x.action, "count": x.count, "first_at": iso(x.first_at),
        "last_at": iso(x.last_at), "statuses": {str(k): v for k, v in x.statuses.items()}}
        for x in groups])


@bp.get("/tenants/<tenant_id>/access/requests")
@authenticated
def tenant_access_requests(tenant_id):
    """Single access records, newest first, ``limit`` (1–500) a page, ``before`` from the
    previous page's ``next_before``."""
    use_cases().authorize.tenant_admin(g.identity, tenant_id)
    limit, before = _page_args(default_limit=100, what="a record id")
    page = use_cases().access_records.access_requests(g.identity, tenant_id, _access_query(),
                                                      before_id=before, limit=limit)
    return jsonify(requests=[{
        "id": r.id, "at": iso(r.at), "advisor": r.subject, "advisor_name": r.advisor_name,
        "membership_id": r.membership_id, "grant_id": r.grant_id, "sid": r.sid,
        "area": r.area, "action": r.action, "method": r.method, "route": r.route,
        "status": r.status, "resource_server": r.client_id, "received_at": iso(r.received_at)}
        for r in page.requests], next_before=page.next_before_id)


def _page_args(*, default_limit: int, what: str) -> tuple[int, int | None]:
    """``limit`` (1–500) and ``before`` (an id from 1 to MAX_QUERY_INT) of a paged list."""
    limit = parse_int(request.args.get("limit", str(default_limit)), 1, 500)
    if limit is None:
        raise InvalidInput("limit must be an integer from 1 to 500", code="limit_out_of_range")
    before = request.args.get("before")
    if before is not None:
        before = parse_int(before, 1, MAX_QUERY_INT)
        if before is None:
            raise InvalidInput(f"before must be {what} from 1 to {MAX_QUERY_INT}",
                               code="before_out_of_range")
    return limit, before
