"""Pages of a tenant's admins: the help page (Hilfeseite) with the access code and the
advisors, the user list (Benutzer-Liste), removal with a confirmation step, the access log
with CSV, and the tenant's settings. Rights as in the API: admins of this tenant only."""

from __future__ import annotations

import hashlib
from datetime import timezone

from flask import (Response, flash, g, jsonify, redirect, render_template, request,
                   url_for)
from flask_babel import format_datetime, format_time, ngettext
from flask_babel import gettext as _
from markupsafe import Markup

from .. import surfaces
from ..domain.errors import DomainError, Forbidden
from ..domain.memberships import plausible_id
from ..notifications import MAX_RECIPIENTS
from ..request_guard import parse_int
from ..services.access_records import AccessQuery
from ..services.access_requests import APPROVE
from ..services.permanent_consent import ACCEPT
from ..services.tenant_admin import LogQuery
from ..storage.db import utcnow
from . import access_log, receipts
from . import access_requests as requests_view
from .auth import current_identity
from .errors import deny, explain, page_blueprint
from .i18n import current_language
from .pages import services, tenant_admin_required, use_cases
from .rights import rights_summary, rights_table

bp = page_blueprint("tenant", __name__, url_prefix="/tenants/<tenant_id>")
RETURN_PAGES = {"help": "tenant.help", "users": "tenant.users", "groups": "groups.home"}


def _admin():
    return use_cases().tenant_admin


def _records():
    return use_cases().access_records


def _live_state(tenant_id: str) -> dict:
    """What the help page shows and refreshes: the code and the advisors."""
    state = _admin().help_state(g.identity, tenant_id)
    members, code = state.members, state.code
    group_names = {m.group_id: m.group_name for m in members if m.group_id}
    # "Last activity": the latest request a resource server reported, else the last token.
    recorded = _records().last_activity(g.identity, tenant_id)
    last_activity = {m.id: recorded.get(m.id) or m.last_token_at for m in members}
    active = _records().active_now(g.identity, tenant_id, state.now)
    open_requests = use_cases().access_requests.open_requests(g.identity, tenant_id)
    # Pending approvals of settings; those of requests are shown with their request.
    approvals = [a for a in use_cases().approvals.pending(g.identity, tenant_id)
                 if a.action not in (APPROVE, ACCEPT)]
    # Permanent advisors: support's pending proposals, the re-confirmation dates.
    proposals = use_cases().permanent.proposals(g.identity, tenant_id)
    confirmation = {m.id: m for m in use_cases().permanent.confirmations(g.identity, tenant_id)}
    fingerprint = hashlib.sha256("|".join(
        [code.code] + [f"{m.id}/{m.kind}/{last_activity[m.id]}/{m.expires_at}/"
                       f"{m.group_name or ''}" for m in members]
        + [f"{a.membership_id}/{a.live}/{','.join(a.areas)}/{a.count}/{a.last_at}"
           for a in active]
        + [f"request/{r.id}/{r.first_approval.id if r.first_approval else ''}"
           for r in open_requests]
        + [f"approval/{a.id}" for a in approvals]
        + [f"proposal/{p.id}/{p.first_approval.id if p.first_approval else ''}"
           for p in proposals]
        + [f"confirmed/{m.id}/{m.reconfirm_due_at}" for m in confirmation.values()]
    ).encode()).hexdigest()[:16]
    return {"tenant": state.tenant, "code": code, "now": state.now, "active": active,
            "last_activity": last_activity, "recorded_activity": recorded,
            "area_names": lambda keys: ", ".join(access_log.area_name(k) for k in keys),
            "temporary": [m for m in members if m.kind == "temporary"],
            "permanent": [m for m in members if m.kind == "permanent"],
            "guests": [m for m in members if m.kind == "guest"], "group_names": group_names,
            "members": members, "fingerprint": fingerprint,
            "max_age_days": state.tenant.temporary_max_age_days,
            "max_age_limit": state.tenant.temporary_max_age_days_limit,
            "open_requests": open_requests, "approvals": approvals,
            "proposals": proposals, "confirmation": confirmation,
            "me": g.identity.subject, "duration_choices": requests_view.duration_choices,
            **requests_view.template_helpers()}


def _render_help(tenant_id: str, *, errors: dict | None = None, status: int = 200,
                 values: dict | None = None):
    state = _live_state(tenant_id)
    rights = rights_table()
    return render_template(
        "web/tenant_help.html", **state, rights=rights, rights_summary=rights_summary(rights),
        errors=errors or {},
        values=values or {}, email_enabled=services().notifications.smtp is not None,
        max_recipients=MAX_RECIPIENTS), status


@bp.get("/help", endpoint="help")
@tenant_admin_required
def help_page(tenant_id):
    return _render_help(tenant_id)


@bp.get("/status.json")
@surfaces.answers_json
def status(tenant_id):
    """What the help page's script polls: the code, its expiry, the advisor lists."""
    g.identity = current_identity()
    if g.identity is None:
        return jsonify(error="login_required"), 401
    try:
        state = _live_state(tenant_id)
    except Forbidden:
        return jsonify(error="forbidden"), 403
    code = state["code"]
    return jsonify(
        code=code.display, expires_at=int(code.expires_at.timestamp()),
        # The page's "(until HH:MM)", formatted as the page formats it (language, zone).
        expires_at_text=format_time(code.expires_at, "short"),
        now=int(state["now"].timestamp()), fingerprint=state["fingerprint"],
        temporary_html=render_template("web/_temporary.html", **state),
        permanent_html=render_template("web/_permanent.html", **state),
        guests_html=render_template("web/_guests.html", **state),
        active_html=render_template("web/_active.html", **state),
        requests_html=render_template("web/_requests.html", **state),
        approvals_html=render_template("web/_approvals.html", **state),
        requests=[r.id for r in state["open_requests"]],
        active=[{"membership_id": a.membership_id, "advisor": a.subject,
                 "advisor_name": a.advisor_name, "areas": list(a.areas), "requests": a.count,
                 "last_at": int(a.last_at.timestamp()), "live": a.live} for a in state["active"]])


@bp.get("/users")
@tenant_admin_required
def users(tenant_id):
    tenant = _admin().tenant(g.identity, tenant_id)
    members = _admin().memberships_of(g.identity, tenant_id)
    return render_template("web/tenant_users.html", tenant=tenant, members=members,
                           group_names={m.group_id: m.group_name for m in members if m.group_id})


def _back(tenant_id: str) -> str:
    return url_for(RETURN_PAGES.get(request.values.get("from"), "tenant.help"), tenant_id=tenant_id)


@bp.get("/advisors/<membership_id>/remove")
@tenant_admin_required
def remove_confirm(tenant_id, membership_id):
    tenant = _admin().tenant(g.identity, tenant_id)
    try:
        membership = _admin().membership(g.identity, tenant_id, membership_id)
    except DomainError as exc:
        if exc.code != "membership_ended":
            raise
        # A link from a page left open: removing can only fail, so no button, the reason
        # and the way back (409, as the removal itself would answer).
        return render_template(
            "web/confirm.html", tenant=tenant, membership=None, blocked=True,
            title=_("This access has already ended"),
            explanation=_("There is nothing to remove: this advisor's access to the tenant has "
                          "already ended (removed, left or expired), and every token issued "
                          "under it stopped working then."),
            back=_back(tenant_id), back_label=_("Back to the list")), 409
    details = [(_("User group"), membership.group_name or "–")] \
        if membership.kind == "guest" else []
    return render_template(
        "web/confirm.html", tenant=tenant, membership=membership, details=details,
        title=_("Remove %(name)s from tenant %(tenant)s?", name=membership.shown_name,
                tenant=tenant_id),
        explanation=_("The guest user loses access at once: every token issued under this "
                      "access stops working, everywhere. To come back, the advisor needs a new "
                      "invitation.") if membership.kind == "guest" else
        _("The advisor loses access at once: every token issued under this access stops "
          "working, everywhere. To come back, the advisor needs a new access code (or a new "
          "assignment by support)."),
        action=url_for("tenant.remove", tenant_id=tenant_id, membership_id=membership_id),
        confirm_label=_("Remove from tenant"), back=_back(tenant_id),
        hidden={"from": request.args.get("from", "help")})


@bp.post("/advisors/<membership_id>/remove")
@tenant_admin_required
def remove(tenant_id, membership_id):
    removed = _admin().remove(g.identity, tenant_id, membership_id)
    flash(Markup("{} <a href=\"{}\">{}</a>").format(
        _("%(name)s was removed from tenant %(tenant)s. All tokens of this access are "
          "invalid.", name=removed.shown_name, tenant=tenant_id),
        url_for("tenant.membership", tenant_id=tenant_id, membership_id=removed.id),
        _("Which resource servers confirmed it")), "success")
    return redirect(_back(tenant_id), 303)


# --- settings ---
@bp.post("/settings/max-age")
@tenant_admin_required
def set_max_age(tenant_id):
    """Same rule as ``PATCH /api/tenants/<t>`` (:meth:`TenantAdmin.set_max_age`): 1 to the
    configured maximum (a tenant may only shorten it); a shorter maximum applies to the
    temporary advisors already in the tenant."""
    raw = request.form.get("temporary_max_age_days", "").strip()
    days = parse_int(raw)  # None: refused by the service with the form's message
    try:
        change = _admin().set_max_age(g.identity, tenant_id, days)
    except Forbidden as exc:
        if exc.code != "same_approver":
            raise
        return _render_help(tenant_id, status=explain(exc)[0], values={"max_age": raw},
                            errors={"max_age": explain(exc)[1]})
    except DomainError as exc:
        return _render_help(tenant_id, status=explain(exc)[0], values={"max_age": raw},
                            errors={"max_age": explain(exc)[1]})
    if change.pending:
        flash(_("Four eyes: the longer maximum of %(days)s days takes effect when another "
                "administrator of the tenant approves it.", days=days), "success")
        return redirect(url_for("tenant.help", tenant_id=tenant_id) + "#approvals", 303)
    ended = change.memberships_ended
    message = _("Temporary access now lasts at most %(days)s days.", days=days)
    if ended:
        message += " " + ngettext("%(num)s temporary access ended because it was older.",
                                  "%(num)s temporary accesses ended because they were older.",
                                  ended)
    flash(message, "success")
    return redirect(url_for("tenant.help", tenant_id=tenant_id) + "#settings", 303)


@bp.post("/settings/access")
@tenant_admin_required
def set_access(tenant_id):
    """The ways in (``access_modes``: radio buttons) and four eyes (a checkbox: absent means
    off), as ``PATCH /api/tenants/<t>`` (:meth:`TenantAdmin.update_settings`): turning four
    eyes off is held for a second admin while it is on."""
    modes = request.form.get("access_modes", "")
    four_eyes = request.form.get("four_eyes") == "on"
    changes = {"four_eyes": four_eyes, "access_modes": modes}
    if "permanent_mode" in request.form:
        changes["permanent_mode"] = request.form.get("permanent_mode", "")
    try:
        change = _admin().update_settings(g.identity, tenant_id, changes)
    except Forbidden as exc:
        if exc.code != "same_approver":
            raise
        return _render_help(tenant_id, status=explain(exc)[0], errors={"access": explain(exc)[1]})
    except DomainError as exc:
        return _render_help(tenant_id, status=explain(exc)[0], errors={"access": explain(exc)[1]})
    if change.pending:
        flash(_("Four eyes: %(what)s takes effect when another administrator of the tenant "
                "approves it. The rest is saved.", what=", ".join(
                    requests_view.approval_text(a) for a in change.pending)), "success")
        return redirect(url_for("tenant.help", tenant_id=tenant_id) + "#approvals", 303)
    flash(_("Saved: %(modes)s; four eyes %(state)s.",
            modes=requests_view.MODE_LABELS[change.tenant.access_modes],
            state=_("on") if change.tenant.four_eyes else _("off")), "success")
    return redirect(url_for("tenant.help", tenant_id=tenant_id) + "#settings", 303)


# --- permanent advisors with the tenant's consent ---
def _permanent_refused(tenant_id: str, exc: DomainError):
    """A refused answer to a proposal or re-confirmation: the help page again with the
    reason above the permanent advisors (a role refusal is a 403 page)."""
    if exc.kind == "forbidden" and exc.code not in ("own_permanent_access", "same_approver"):
        raise exc
    status, message = explain(exc)
    return _render_help(tenant_id, status=status, errors={"permanent": message})


@bp.post("/proposals/<proposal_id>/accept")
@tenant_admin_required
def accept_proposal(tenant_id, proposal_id):
    """Accept support's proposal; under four eyes the first acceptance is held."""
    try:
        done = use_cases().permanent.accept(g.identity, tenant_id, proposal_id)
    except DomainError as exc:
        return _permanent_refused(tenant_id, exc)
    name = done.proposal.advisor_name or done.proposal.advisor_subject
    if done.applied:
        flash(_("%(name)s is now a permanent advisor of the tenant.", name=name), "success")
    else:
        flash(_("Your acceptance of %(name)s is recorded. Four eyes: it takes effect when "
                "another administrator of the tenant accepts too.", name=name), "success")
    return redirect(url_for("tenant.help", tenant_id=tenant_id) + "#permanent-heading", 303)


@bp.post("/proposals/<proposal_id>/decline")
@tenant_admin_required
def decline_proposal(tenant_id, proposal_id):
    try:
        declined = use_cases().permanent.decline(g.identity, tenant_id, proposal_id,
                                                 note=request.form.get("note", ""))
    except DomainError as exc:
        return _permanent_refused(tenant_id, exc)
    flash(_("The proposal of %(name)s is declined; the advisor is told your note.",
            name=declined.advisor_name or declined.advisor_subject), "success")
    return redirect(url_for("tenant.help", tenant_id=tenant_id) + "#permanent-heading", 303)


@bp.post("/memberships/<membership_id>/reconfirm")
@tenant_admin_required
def reconfirm_permanent(tenant_id, membership_id):
    try:
        done = use_cases().permanent.reconfirm(g.identity, tenant_id, membership_id)
    except DomainError as exc:
        return _permanent_refused(tenant_id, exc)
    flash(_("%(name)s is re-confirmed until %(until)s.", name=done.shown_name,
            until=format_datetime(done.reconfirm_due_at, "short")), "success")
    return redirect(url_for("tenant.help", tenant_id=tenant_id) + "#permanent-heading", 303)


# --- access requests and four eyes ---
def _request_refused(tenant_id: str, exc: DomainError, request_id: str | None):
    """A refusal of an answer to a request: the help page again, with the reason next to
    the request (a role refusal is a 403 page)."""
    if exc.kind == "forbidden" and exc.code not in ("own_request", "same_approver",
                                                    "requests_not_allowed"):
        raise exc
    status, message = explain(exc)
    return _render_help(tenant_id, status=status,
                        errors={"requests": message, "request_id": request_id})


@bp.post("/requests/<request_id>/approve")
@tenant_admin_required
def approve_request(tenant_id, request_id):
    """Approve a request (optionally for fewer hours); under four eyes the first approval
    is held for a second admin."""
    raw = request.form.get("duration_hours", "").strip()
    hours = parse_int(raw) if raw else None
    if raw and hours is None:
        hours = raw  # refused by the domain with the duration's message
    try:
        decision = use_cases().access_requests.approve(
            g.identity, tenant_id, request_id, duration_hours=hours,
            note=request.form.get("note", ""))
    except DomainError as exc:
        return _request_refused(tenant_id, exc, request_id)
    name = decision.request.shown_name
    if decision.applied:
        flash(_("%(name)s now has temporary access until %(until)s.", name=name,
                until=format_datetime(decision.request.access_expires_at, "short")), "success")
    else:
        flash(_("Your approval of the request of %(name)s is recorded. Four eyes: it takes "
                "effect when another administrator of the tenant approves it too.",
                name=name), "success")
    return redirect(url_for("tenant.help", tenant_id=tenant_id) + "#requests", 303)


@bp.post("/requests/<request_id>/deny")
@tenant_admin_required
def deny_request(tenant_id, request_id):
    try:
        denied = use_cases().access_requests.deny(g.identity, tenant_id, request_id,
                                                  note=request.form.get("note", ""))
    except DomainError as exc:
        return _request_refused(tenant_id, exc, request_id)
    flash(_("The request of %(name)s is denied; the advisor is told your note.",
            name=denied.shown_name), "success")
    return redirect(url_for("tenant.help", tenant_id=tenant_id) + "#requests", 303)


@bp.post("/approvals/<approval_id>/approve")
@tenant_admin_required
def confirm_approval(tenant_id, approval_id):
    """The second admin's approval of a pending one (settings held by four eyes)."""
    try:
        done = use_cases().approvals.confirm(g.identity, tenant_id, approval_id)
    except DomainError as exc:
        return _request_refused(tenant_id, exc, None)
    flash(_("Approved by two administrators: %(what)s", what=requests_view.approval_text(
        done.approval)), "success")
    return redirect(url_for("tenant.help", tenant_id=tenant_id) + "#settings", 303)


@bp.post("/approvals/<approval_id>/reject")
@tenant_admin_required
def reject_approval(tenant_id, approval_id):
    try:
        rejected = use_cases().approvals.reject(g.identity, tenant_id, approval_id,
                                                note=request.form.get("note", ""))
    except DomainError as exc:
        return _request_refused(tenant_id, exc, None)
    flash(_("Rejected: %(what)s", what=requests_view.approval_text(rejected)), "success")
    return redirect(url_for("tenant.help", tenant_id=tenant_id) + "#approvals", 303)


@bp.post("/settings/notifications")
@tenant_admin_required
def set_notifications(tenant_id):
    raw = request.form.get("notification_emails", "")
    try:
        addresses = _admin().set_notification_emails(g.identity, tenant_id, raw)
    except Forbidden:
        raise
    except DomainError as exc:
        status, message = explain(exc)
        return _render_help(tenant_id, status=status, values={"emails": raw},
                            errors={"emails": message})
    flash(_("Notifications go to: %(addresses)s", addresses=", ".join(addresses))
          if addresses else _("No e-mail notifications will be sent."), "success")
    return redirect(url_for("tenant.help", tenant_id=tenant_id) + "#notifications", 303)


@bp.post("/settings/first-access")
@tenant_admin_required
def set_first_access(tenant_id):
    """The tenant's "tell us when an advisor first uses a new access" (a checkbox: absent
    means off, as browsers send unchecked boxes)."""
    enabled = _admin().set_first_access_notification(
        g.identity, tenant_id, request.form.get("notify_first_access") == "on")
    flash(_("We will tell you when an advisor first uses a new access.") if enabled else
          _("You will not be told when an advisor first uses a new access."), "success")
    return redirect(url_for("tenant.help", tenant_id=tenant_id) + "#notifications", 303)


# --- access log ---
def _log_events(tenant_id: str, filters, *, before_id=None, limit=None):
    return _admin().access_log(g.identity, tenant_id, LogQuery(
        events=access_log.CATEGORIES.get(filters.category), advisor=filters.advisor,
        since=filters.since, until=filters.until, before_id=before_id,
        limit=limit or access_log.PAGE_SIZE))


def _access_query(filters, **more) -> AccessQuery:
    return AccessQuery(advisor=filters.advisor, area=filters.area, since=filters.since,
                       until=filters.until, **more)


@bp.get("/log")
@tenant_admin_required
def log(tenant_id):
    filters, problems = access_log.Filters.from_args(request.args)
    before = request.args.get("before") or None
    if before is not None:
        before = parse_int(before)  # an event id: 1 to 2**53, else the column overflowed
        if before is None:
            problems = problems + [_("The page address is not valid.")]
    tenant, events, names = _log_events(tenant_id, filters, before_id=before)
    me = g.identity
    rows = [{"event": e, "what": access_log.describe(e, names),
             "who": access_log.actor_label(e, names, me)} for e in events]
    older = events[-1].id if len(events) == access_log.PAGE_SIZE else None
    # One more than shown: whether there are more.
    groups = _records().access_summary(g.identity, tenant_id, _access_query(filters),
                                       limit=access_log.GROUP_LIMIT + 1)
    shown = groups[:access_log.GROUP_LIMIT]
    reads = [{"group": group, "what": access_log.describe_group(group, names),
              "statuses": access_log.statuses_text(group.statuses),
              "drill": url_for("tenant.log_requests", tenant_id=tenant_id,
                               membership=group.membership_id, action=group.action,
                               **{**filters.query_args(), "area": group.area})}
             for group in shown]
    checkpoint = use_cases().audit_chains.latest_checkpoint(g.identity, tenant_id)
    return render_template("web/tenant_log.html", tenant=tenant, rows=rows, filters=filters,
                           problems=problems, older=older, reads=reads, checkpoint=checkpoint,
                           audit_jwks_uri=services().settings.issuer + "/audit/jwks",
                           more_groups=len(groups) > len(shown),
                           areas=access_log.area_choices(),
                           categories=access_log.CATEGORY_LABELS), 400 if problems else 200


def _request_filters():
    """The log's filters and a drill-down's membership and action (a group's requests)."""
    filters, problems = access_log.Filters.from_args(request.args)
    membership = request.args.get("membership") or None
    if membership is not None and not plausible_id(membership):
        problems.append(_("The page address is not valid."))
        membership = None
    action = request.args.get("action") or None
    if action is not None and action not in ("read", "write"):
        problems.append(_("The page address is not valid."))
        action = None
    return filters, membership, action, problems


@bp.get("/log/requests")
@tenant_admin_required
def log_requests(tenant_id):
    """The single requests behind the access log's groups (all, or one group's: an
    advisor's access, an area and an action), newest first, a page at a time."""
    filters, membership, action, problems = _request_filters()
    before = request.args.get("before") or None
    if before is not None:
        before = parse_int(before)
        if before is None:
            problems.append(_("The page address is not valid."))
    tenant = _admin().tenant(g.identity, tenant_id)
    page = _records().access_requests(
        g.identity, tenant_id, _access_query(filters, membership_id=membership, action=action),
        before_id=before, limit=access_log.REQUEST_PAGE_SIZE)
    extra = {key: value for key, value in (("membership", membership), ("action", action))
             if value}
    rows = [{"request": r, "advisor": access_log.advisor_of(r, {}),
             "area": access_log.area_name(r.area), "action": access_log.action_label(r.action)}
            for r in page.requests]
    return render_template(
        "web/tenant_log_requests.html", tenant=tenant, rows=rows, filters=filters,
        problems=problems, query={**filters.query_args(), **extra},
        next_before=page.next_before_id,
        group_label=rows[0]["advisor"] if membership and rows else None,
        area_label=access_log.area_name(filters.area) if filters.area else None,
        action_label=access_log.action_label(action) if action else None,
    ), 400 if problems else 200


@bp.get("/log.csv")
@tenant_admin_required
def log_csv(tenant_id):
    """The audit events as CSV; with ``part=requests`` the single requests the resource
    servers reported (the same filters, a drill-down's ``membership`` and ``action``)."""
    part = request.args.get("part") or "events"
    if part not in ("events", "requests"):
        deny(_("The page address is not valid."), 400)
    if part == "requests":
        return _requests_csv(tenant_id)
    filters, problems = access_log.Filters.from_args(request.args)
    if problems:
        deny(" ".join(problems), 400)
    tenant, events, names = _log_events(tenant_id, filters, limit=access_log.CSV_LIMIT)
    german = current_language() == "de"
    body = access_log.to_csv(events, names, g.identity, delimiter=";" if german else ",",
                             zone=services().settings.web_timezone)
    return _csv_response(body, "zugriffsprotokoll" if german else "access-log", tenant.id)


def _requests_csv(tenant_id: str):
    filters, membership, action, problems = _request_filters()
    if problems:
        deny(" ".join(problems), 400)
    tenant = _admin().tenant(g.identity, tenant_id)
    query = _access_query(filters, membership_id=membership, action=action)
    records, before = [], None
    while len(records) < access_log.CSV_LIMIT:  # pages of 500 (the service's maximum)
        page = _records().access_requests(g.identity, tenant_id, query, before_id=before,
                                          limit=500)
        records += page.requests
        before = page.next_before_id
        if before is None:
            break
    german = current_language() == "de"
    body = access_log.requests_to_csv(records[:access_log.CSV_LIMIT], {},
                                      delimiter=";" if german else ",",
                                      zone=services().settings.web_timezone)
    return _csv_response(body, "zugriffe" if german else "access-requests", tenant.id)


def _csv_response(body: str, prefix: str, tenant_id: str):
    stamp = utcnow().astimezone(timezone.utc).strftime("%Y%m%d-%H%M")
    name = f"{prefix}-{tenant_id}-{stamp}.csv"
    return Response(body, mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})


# --- a membership and its revocation receipts ---
@bp.get("/memberships/<membership_id>", endpoint="membership")
@tenant_admin_required
def membership_page(tenant_id, membership_id):
    """One access of the tenant, also an ended one: when it ended and which resource
    servers confirmed each of its revocations (:meth:`TenantAdmin.membership_detail`)."""
    tenant = _admin().tenant(g.identity, tenant_id)
    detail = _admin().membership_detail(g.identity, tenant_id, membership_id)
    revocations = [{
        "revocation": r, "label": receipts.revocation_label(r), "summary": receipts.summary(r),
        "rows": [{"receipt": x, "text": _("Confirmed %(when)s, after %(after)s",
                                          when=format_time(x.acknowledged_at, "medium"),
                                          after=receipts.duration(x.latency_ms))
                  if x.confirmed else receipts.reason_text(x)} for x in r.receipts]}
        for r in reversed(detail.revocations)]
    return render_template("web/tenant_membership.html", tenant=tenant, detail=detail,
                           revocations=revocations)
