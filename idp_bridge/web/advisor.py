"""The advisor's pages: redeem an access code (tenant number, code, optional reason), "my
tenants" with kind, since and expiry, leave a tenant, accept an invitation as a guest user,
and open a tenant in the application.

Opening a tenant mints tenant-scoped tokens with the token exchange's policy
(:meth:`TokenService.open_tenant`, for the configured ``app_client_id``) and hands them to the
configured ``app_url`` the way OAuth 2.0 Form Post Response Mode hands a response to a client:
a page with a form that the browser POSTs to the application (submitted by our script, or by
a button without JavaScript). Why this shape:

- the target is configuration, never a request parameter, so nobody can have tokens sent
  elsewhere (no open redirect); the page's CSP allows posting to that one origin only;
- tokens travel in a POST body: not in a URL, so not in history, logs or a Referer;
- the page is ``no-store``, the opening is a POST with a CSRF token (another site cannot
  make an advisor's browser open a tenant), and the refresh token is useless without the
  application's client credentials (the client is confidential).
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from flask import flash, g, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _

from .. import surfaces
from ..domain.errors import DomainError, Forbidden
from .auth import current_identity
from .errors import deny, explain, page_blueprint
from .i18n import current_language
from .pages import advisor_required, services, use_cases
from ..request_guard import parse_int
from . import access_requests as requests_view
from .rights import rights_summary, rights_table

bp = page_blueprint("advisor", __name__, url_prefix="/advisor")
TENANT_FIELD_MAX = 64
#: Refusals meaning "this advisor has no live access to this tenant (any more)": a page
#: left open while the tenant removed the advisor, or the access expired or was left in
#: another tab. The advisor lands back on its page with a message, not on an error page.
ACCESS_ENDED = frozenset({"not_member", "membership_expired", "no_membership"})


def _access_ended(exc: DomainError, tenant_id: str):
    """The friendly answer to a stale button for a tenant whose access ended, else None.
    Only codes raised after the tenant was found (so ``tenant_id`` names a real tenant)."""
    if exc.code not in ACCESS_ENDED:
        return None
    flash(_("Your access to tenant %(tenant)s has ended. If you need access again, please "
            "ask the tenant.", tenant=tenant_id), "error")
    return redirect(url_for("advisor.home"), 303)


def _advisors():
    return use_cases().advisors


def _render(status: int = 200, *, error: str | None = None, values: dict | None = None,
            invitation_error: str | None = None, request_error: str | None = None,
            request_values: dict | None = None):
    memberships = _advisors().my_memberships(g.identity)
    invitations = _advisors().my_invitations(g.identity)
    settings = services().settings
    rights = rights_table()
    request_values = request_values or {}
    return render_template(
        "web/advisor.html", memberships=[(m, m.tenant_name) for m in memberships],
        group_names={m.group_id: m.group_name for m in memberships if m.group_id},
        invitations=[(i, i.tenant_name, i.group_name) for i in invitations],
        invitation_error=invitation_error, error=error, values=values or {},
        rights=rights, rights_summary=rights_summary(rights), can_open=bool(settings.app_url),
        reason_max=settings.reason_max_length,
        my_requests=use_cases().access_requests.my_requests(g.identity),
        request_error=request_error, request_values=request_values,
        durations=requests_view.duration_choices(settings.temporary_max_age_days * 24),
        chosen_duration=request_values.get("duration_hours", requests_view.DEFAULT_DURATION),
        **requests_view.template_helpers()), status


@bp.get("")
@advisor_required
def home():
    return _render()


@bp.get("/status.json")
@surfaces.answers_json
def status():
    """What the advisor page's script polls: the live memberships (a row missing here has
    ended: the script takes its buttons back) and the open invitations."""
    g.identity = current_identity()
    if g.identity is None:
        return jsonify(error="login_required"), 401
    try:
        state = _advisors().status(g.identity)
    except Forbidden:
        return jsonify(error="forbidden"), 403
    return jsonify(
        now=int(state.now.timestamp()),
        memberships=[{"id": m.id, "tenant": m.tenant_id, "kind": m.kind,
                      "expires_at": int(m.expires_at.timestamp()) if m.expires_at else None}
                     for m in state.memberships],
        invitations=[i.id for i in state.invitations],
        requests=[{"id": r.id, "status": r.status}
                  for r in use_cases().access_requests.my_requests(g.identity)])


@bp.post("/join")
@advisor_required
def join():
    tenant_id = request.form.get("tenant", "").strip()
    code = request.form.get("code", "")
    reason = request.form.get("reason", "")
    values = {"tenant": tenant_id[:TENANT_FIELD_MAX], "reason": reason[:2000]}
    if not tenant_id or not code.strip():
        return _render(400, error=_("Please enter the tenant number and the access code."),
                       values=values)
    try:
        joined = services().tokens.redeem(identity=g.identity, tenant_id=tenant_id,
                                          access_code=code, reason=reason, via="web")
    except Forbidden:
        raise  # a 403 page: a missing role or second factor is no typing error
    except DomainError as exc:
        if exc.kind == "unavailable":
            raise  # a 503 page: nothing the advisor typed is wrong
        status, message = explain(exc)  # wrong code, unknown tenant, already a member: say so
        return _render(status, error=message, values=values)
    flash(_("You now have access to tenant %(tenant)s (%(name)s).", tenant=joined.tenant_id,
            name=joined.tenant_name), "success")
    return redirect(url_for("advisor.home"), 303)


@bp.post("/requests")
@advisor_required
def request_access():
    """Ask a tenant for temporary access
    (:meth:`~idp_bridge.services.access_requests.AccessRequestsService.request_access`)."""
    tenant_id = request.form.get("tenant", "").strip()
    reason = request.form.get("reason", "")
    raw = request.form.get("duration_hours", "").strip()
    hours = parse_int(raw)
    values = {"tenant": tenant_id[:TENANT_FIELD_MAX], "reason": reason[:2000],
              "duration_hours": hours}
    if not tenant_id:
        return _render(400, request_error=_("Please enter the tenant number."),
                       request_values=values)
    try:
        made = use_cases().access_requests.request_access(
            g.identity, tenant_id, reason=reason, duration_hours=hours if hours else raw)
    except DomainError as exc:
        if exc.kind == "unavailable" or exc.code in ("not_advisor", "mfa_required"):
            raise
        status, message = explain(exc)
        return _render(status, request_error=message, request_values=values)
    flash(_("Your request for tenant %(tenant)s (%(name)s) is sent. Its administrators decide; "
            "you will see the answer here and get an e-mail.", tenant=made.tenant_id,
            name=made.tenant_name), "success")
    return redirect(url_for("advisor.home") + "#my-requests", 303)


@bp.post("/requests/<request_id>/withdraw")
@advisor_required
def withdraw_request(request_id):
    try:
        withdrawn = use_cases().access_requests.withdraw(g.identity, request_id)
    except DomainError as exc:
        if exc.kind == "unavailable":
            raise
        status, message = explain(exc)
        return _render(status, request_error=message)
    flash(_("Your request for tenant %(tenant)s is withdrawn.", tenant=withdrawn.tenant_id),
          "success")
    return redirect(url_for("advisor.home") + "#my-requests", 303)


@bp.post("/invitations/<invitation_id>/accept")
@advisor_required
def accept(invitation_id):
    """Accept an invitation as a guest user (``POST /api/me/invitations/<id>/accept``)."""
    try:
        membership = _advisors().accept(g.identity, invitation_id)
    except Forbidden:
        raise
    except DomainError as exc:  # withdrawn, expired, already a member: say so
        status, message = explain(exc)
        return _render(status, invitation_error=message)
    flash(_("You are now a guest user of tenant %(tenant)s (%(name)s) with the user group "
            "%(group)s.", tenant=membership.tenant_id, name=membership.tenant_name,
            group=membership.group_name), "success")
    return redirect(url_for("advisor.home"), 303)


@bp.get("/tenants/<tenant_id>/leave")
@advisor_required
def leave_confirm(tenant_id):
    try:
        membership, tenant = _advisors().my_membership(g.identity, tenant_id)
    except DomainError as exc:
        ended = _access_ended(exc, tenant_id)
        if ended is None:
            raise
        return ended
    return render_template(
        "web/confirm.html", tenant=tenant, membership=membership,
        title=_("Leave tenant %(tenant)s (%(name)s)?", tenant=tenant_id, name=tenant.name),
        explanation=_("Your access ends at once and every token issued under it stops working. "
                      "To come back you need a new access code from the tenant."),
        action=url_for("advisor.leave", tenant_id=tenant_id), confirm_label=_("Leave tenant"),
        back=url_for("advisor.home"), hidden={})


@bp.post("/tenants/<tenant_id>/leave")
@advisor_required
def leave(tenant_id):
    try:
        _advisors().leave(g.identity, tenant_id)
    except DomainError as exc:
        ended = _access_ended(exc, tenant_id)
        if ended is None:
            raise
        return ended
    flash(_("You have left tenant %(tenant)s. Your access has ended.", tenant=tenant_id),
          "success")
    return redirect(url_for("advisor.home"), 303)


@bp.post("/tenants/<tenant_id>/open")
@advisor_required
def open_tenant(tenant_id):
    """Refusals are error pages by code: a guest whose user group has no permissions gets
    ``no_permissions`` (403), an unreachable identity provider ``upstream_unavailable``
    (503), as the token endpoint answers ``invalid_scope`` / 503. An access that has ended
    meanwhile (a stale "Open" button) leads back to the advisor page with a message.

    Besides the tokens the form carries what the application shows around them: the
    tenant's and the advisor's names as the bridge stores them, and the page's language.
    They are display text only; what the application may do follows from the access token
    it validates."""
    settings = services().settings
    if not settings.app_url:
        deny(_("No application is configured to open tenants in."), 404)
    try:
        membership, tenant = _advisors().my_membership(g.identity, tenant_id)
        issued = services().tokens.open_tenant(identity=g.identity, tenant_id=tenant_id)
    except DomainError as exc:
        ended = _access_ended(exc, tenant_id)
        if ended is None:
            raise
        return ended
    target = settings.app_url.replace("{tenant}", quote(tenant_id, safe=""))
    parts = urlsplit(target)
    g.form_action_origin = f"{parts.scheme}://{parts.netloc}"
    fields = {"access_token": issued.access_token, "token_type": "Bearer",
              "expires_in": str(issued.expires_in), "scope": issued.scope,
              "refresh_token": issued.refresh_token, "tenant": tenant_id,
              "tenant_name": tenant.name or "", "advisor_name": membership.shown_name,
              "lang": current_language()}
    return render_template("web/handoff.html", target=target, fields=fields, tenant_id=tenant_id,
                           tenant_name=tenant.name)
