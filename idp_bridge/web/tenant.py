"""Pages of a tenant's admins: the help page (Hilfeseite) with the access code and the
advisors, the user list (Benutzer-Liste), removal with a confirmation step, the access log
with CSV, and the tenant's settings. Rights as in the API: admins of this tenant only."""

from __future__ import annotations

import hashlib
from datetime import timezone

from flask import (Response, flash, g, jsonify, redirect, render_template, request,
                   url_for)
from flask_babel import gettext as _
from flask_babel import ngettext

from ..domain.errors import InvalidInput
from ..request_guard import parse_int
from ..notifications import MAX_RECIPIENTS, parse_addresses
from ..storage.db import utcnow
from ..storage.models import AccessCodeState
from . import access_log
from .auth import current_identity
from .errors import deny, page_blueprint
from .i18n import current_language
from .pages import services, tenant_admin_required
from .rights import rights_table

bp = page_blueprint("tenant", __name__, url_prefix="/tenants/<tenant_id>")
RETURN_PAGES = {"help": "tenant.help", "users": "tenant.users", "groups": "groups.home"}


def current_code(tenant_id: str, now):
    """The tenant's current access code; a read transaction unless the tenant has no code
    state yet (the help page is polled: no write lock every few seconds)."""
    s = services()
    with s.db.read() as session:
        s.memberships.tenant(session, tenant_id)
        if session.get(AccessCodeState, tenant_id) is not None:
            return s.codes.current(session, tenant_id, now)
    with s.db.transaction() as session:
        return s.codes.current(session, tenant_id, now)


def _live_state(tenant_id: str) -> dict:
    """What the help page shows and refreshes: the code and the advisors."""
    s = services()
    now = utcnow()
    code = current_code(tenant_id, now)
    with s.db.read() as session:
        tenant = s.memberships.tenant(session, tenant_id)
        members = s.memberships.list_for_tenant(session, tenant_id, now)
        group_names = _group_names(session, tenant_id)
        limit = s.settings.temporary_max_age_days
        max_age_days = tenant.temporary_max_age_days or limit
    fingerprint = hashlib.sha256("|".join(
        [code.code] + [f"{m.id}/{m.kind}/{m.last_token_at}/{m.expires_at}/"
                       f"{group_names.get(m.group_id, '')}" for m in members]
    ).encode()).hexdigest()[:16]
    return {"tenant": tenant, "code": code, "now": now,
            "temporary": [m for m in members if m.kind == "temporary"],
            "permanent": [m for m in members if m.kind == "permanent"],
            "guests": [m for m in members if m.kind == "guest"], "group_names": group_names,
            "members": members, "fingerprint": fingerprint,
            "max_age_days": max_age_days, "max_age_limit": limit}


def _group_names(session, tenant_id: str) -> dict[str, str]:
    """The tenant's user groups by id: guests are shown with their group's name."""
    return {group.id: group.name for group in services().guests.groups(session, tenant_id)}


def _render_help(tenant_id: str, *, errors: dict | None = None, status: int = 200,
                 values: dict | None = None):
    state = _live_state(tenant_id)
    return render_template(
        "web/tenant_help.html", **state, rights=rights_table(), errors=errors or {},
        values=values or {}, email_enabled=services().notifications.smtp is not None,
        max_recipients=MAX_RECIPIENTS), status


@bp.get("/help", endpoint="help")
@tenant_admin_required
def help_page(tenant_id):
    return _render_help(tenant_id)


@bp.get("/status.json")
def status(tenant_id):
    """What the help page's script polls: the code, its expiry, the advisor lists."""
    identity = current_identity()
    if identity is None:
        return jsonify(error="login_required"), 401
    if not services().roles.check_tenant_admin(identity, tenant_id):
        return jsonify(error="forbidden"), 403
    g.identity = identity
    state = _live_state(tenant_id)
    code = state["code"]
    return jsonify(
        code=code.display, expires_at=int(code.expires_at.timestamp()),
        now=int(state["now"].timestamp()), fingerprint=state["fingerprint"],
        temporary_html=render_template("web/_temporary.html", **state),
        permanent_html=render_template("web/_permanent.html", **state),
        guests_html=render_template("web/_guests.html", **state))


@bp.get("/users")
@tenant_admin_required
def users(tenant_id):
    s = services()
    with s.db.read() as session:
        tenant = s.memberships.tenant(session, tenant_id)
        members = s.memberships.list_for_tenant(session, tenant_id, utcnow())
        group_names = _group_names(session, tenant_id)
    return render_template("web/tenant_users.html", tenant=tenant, members=members,
                           group_names=group_names)


def _back(tenant_id: str) -> str:
    return url_for(RETURN_PAGES.get(request.values.get("from"), "tenant.help"), tenant_id=tenant_id)


@bp.get("/advisors/<membership_id>/remove")
@tenant_admin_required
def remove_confirm(tenant_id, membership_id):
    s = services()
    with s.db.read() as session:
        tenant = s.memberships.tenant(session, tenant_id)
        membership = s.memberships.get_for_tenant(session, tenant_id, membership_id)
        group_names = _group_names(session, tenant_id)
    details = [(_("User group"), group_names.get(membership.group_id, "–"))] \
        if membership.kind == "guest" else []
    return render_template(
        "web/confirm.html", tenant=tenant, membership=membership, details=details,
        title=_("Remove %(name)s from tenant %(tenant)s?",
                name=membership.advisor_name or membership.advisor_subject, tenant=tenant_id),
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
    s = services()
    with s.db.transaction() as session:
        membership = s.memberships.get_for_tenant(session, tenant_id, membership_id)
        name = membership.advisor_name or membership.advisor_subject
        s.memberships.end(session, membership, by=g.identity.subject, actor_role="tenant_admin",
                          reason="removed_by_tenant", now=utcnow())
    flash(_("%(name)s was removed from tenant %(tenant)s. All tokens of this access are "
            "invalid.", name=name, tenant=tenant_id), "success")
    return redirect(_back(tenant_id), 303)


# --- settings ---
@bp.post("/settings/max-age")
@tenant_admin_required
def set_max_age(tenant_id):
    """Same rule as ``PATCH /api/tenants/<t>`` (:meth:`Memberships.set_temporary_max_age`):
    1 to the configured maximum (a tenant may only shorten it); a shorter maximum applies to
    the temporary advisors already in the tenant."""
    s = services()
    raw = request.form.get("temporary_max_age_days", "").strip()
    days = parse_int(raw)  # None: refused below with the form's message
    try:
        with s.db.transaction() as session:
            tenant = s.memberships.tenant(session, tenant_id)
            ended = s.memberships.set_temporary_max_age(session, tenant, days, utcnow())
    except InvalidInput:
        return _render_help(tenant_id, status=400, values={"max_age": raw}, errors={
            "max_age": _("Please enter a whole number of days from 1 to %(limit)s.",
                         limit=s.settings.temporary_max_age_days)})
    message = _("Temporary access now lasts at most %(days)s days.", days=days)
    if ended:
        message += " " + ngettext("%(num)s temporary access ended because it was older.",
                                  "%(num)s temporary accesses ended because they were older.",
                                  ended)
    flash(message, "success")
    return redirect(url_for("tenant.help", tenant_id=tenant_id) + "#settings", 303)


@bp.post("/settings/notifications")
@tenant_admin_required
def set_notifications(tenant_id):
    s = services()
    raw = request.form.get("notification_emails", "")
    try:
        addresses = parse_addresses(raw) if len(raw) <= 1000 else None
        if addresses is None:
            raise OverflowError
    except ValueError as exc:
        return _render_help(tenant_id, status=400, values={"emails": raw}, errors={
            "emails": _("This is not an e-mail address: %(address)s", address=str(exc))})
    except OverflowError:
        return _render_help(tenant_id, status=400, values={"emails": raw}, errors={
            "emails": _("Please enter at most %(count)s addresses.", count=MAX_RECIPIENTS)})
    with s.db.transaction() as session:
        tenant = s.memberships.tenant(session, tenant_id)
        tenant.notification_emails = ", ".join(addresses) or None
    flash(_("Notifications go to: %(addresses)s", addresses=", ".join(addresses))
          if addresses else _("No e-mail notifications will be sent."), "success")
    return redirect(url_for("tenant.help", tenant_id=tenant_id) + "#notifications", 303)


# --- access log ---
def _log_events(tenant_id: str, filters, *, before_id=None, limit=None):
    s = services()
    with s.db.read() as session:
        tenant = s.memberships.tenant(session, tenant_id)
        events = access_log.query(session, tenant_id, filters, s.settings.web_timezone,
                                  before_id=before_id, limit=limit or access_log.PAGE_SIZE)
        names = access_log.known_names(session, tenant_id)
    return tenant, events, names


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
    return render_template("web/tenant_log.html", tenant=tenant, rows=rows, filters=filters,
                           problems=problems, older=older,
                           categories=access_log.CATEGORY_LABELS), 400 if problems else 200


@bp.get("/log.csv")
@tenant_admin_required
def log_csv(tenant_id):
    filters, problems = access_log.Filters.from_args(request.args)
    if problems:
        deny(" ".join(problems), 400)
    tenant, events, names = _log_events(tenant_id, filters, limit=access_log.CSV_LIMIT)
    german = current_language() == "de"
    body = access_log.to_csv(events, names, g.identity, delimiter=";" if german else ",",
                             zone=services().settings.web_timezone)
    stamp = utcnow().astimezone(timezone.utc).strftime("%Y%m%d-%H%M")
    name = f"{'zugriffsprotokoll' if german else 'access-log'}-{tenant.id}-{stamp}.csv"
    return Response(body, mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})
