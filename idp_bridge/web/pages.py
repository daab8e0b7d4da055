"""The web pages' shell: wiring (Flask-Babel, blueprints, headers), the start page, the
language switch, error pages, and the checks every page shares.

Pages enforce exactly the rights of the management API (``idp_bridge/api/views.py``): the
same :class:`RoleMapper` checks on the signed-in identity, the same domain calls. A page
refuses a wrong role with 403 before it changes anything; every state-changing form is a
POST carrying a CSRF token (Flask-WTF), else 400.
"""

from __future__ import annotations

from functools import wraps
from urllib.parse import urlsplit

from flask import current_app, g, redirect, render_template, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from .auth import current_identity, login_required, safe_next
from ..domain.text import unsafe_characters
from .errors import (PAGE_BLUEPRINTS, STATUS_MESSAGES, deny, page_blueprint, problem_page,
                     wants_page)
from .i18n import LANGUAGES, init_babel, lang_cookie_name

__all__ = ["init_app", "html_security_headers", "wants_page", "problem_page", "deny"]

bp = page_blueprint("pages", __name__, template_folder="templates", static_folder="static",
                    static_url_path="/static/web")


def init_app(app, settings) -> None:
    from . import advisor, groups, support, tenant

    init_babel(app, settings)
    for blueprint in (bp, tenant.bp, groups.bp, advisor.bp, support.bp):
        app.register_blueprint(blueprint)
    app.after_request(html_security_headers)
    app.context_processor(_page_context)


def services():
    return current_app.extensions["idp_bridge"]


def _page_context() -> dict:
    identity = current_identity() if request.blueprint in PAGE_BLUEPRINTS else None
    return {"identity": identity, "nav": navigation(identity) if identity else [],
            "language_return": _language_return()}


def _language_return() -> str:
    """Where the language switch leads back to: this page, or after a POST the page the
    form was on."""
    if request.method == "GET":
        return safe_next(request.full_path.rstrip("?"))
    parts = urlsplit(request.referrer or "")
    if parts.netloc == request.host:
        return safe_next(parts.path + (f"?{parts.query}" if parts.query else ""))
    return "/"


def admin_tenants(identity) -> list[str]:
    """Tenants whose admin group the identity is in (from the configured group pattern)."""
    pattern = services().settings.tenant_admin_group
    prefix, _sep, suffix = pattern.partition("{tenant}")
    found = []
    for group in sorted(services().roles.groups(identity)):
        if group.startswith(prefix) and group.endswith(suffix) and len(group) > len(prefix + suffix):
            tenant_id = group[len(prefix):len(group) - len(suffix)]
            if "/" not in tenant_id and services().roles.check_tenant_admin(identity, tenant_id):
                found.append(tenant_id)
    return found


def navigation(identity) -> list[tuple[str, str]]:
    """(label, path) of the pages this identity may open."""
    roles = services().roles
    items = []
    for tenant_id in admin_tenants(identity):
        items.append((_("Help page %(tenant)s", tenant=tenant_id), f"/tenants/{tenant_id}/help"))
    if roles.check_advisor(identity):
        items.append((_("My tenants"), "/advisor"))
    if roles.check_support_admin(identity):
        items.append((_("Support"), "/support"))
    return items


# --- pages ---
@bp.get("/")
def index():
    identity = current_identity()
    tenants = []
    if identity is not None:
        from sqlalchemy import select

        from ..storage.models import Tenant

        ids = admin_tenants(identity)
        with services().db.read() as session:
            names = dict(session.execute(select(Tenant.id, Tenant.name)
                                         .where(Tenant.id.in_(ids))).all()) if ids else {}
        tenants = [(t, names.get(t)) for t in ids]
    return render_template("web/index.html", tenants=tenants,
                           is_advisor=identity is not None and services().roles.check_advisor(identity),
                           is_support=identity is not None
                           and services().roles.check_support_admin(identity))


@bp.post("/language")
def language():
    """The language switch (a form, so it works without JavaScript)."""
    lang = request.form.get("lang")
    if lang not in LANGUAGES:
        return problem_page(400, message=_("This language is not available."))
    response = redirect(safe_next(request.form.get("next")), 303)
    secure = current_app.config["SESSION_COOKIE_SECURE"]
    response.set_cookie(lang_cookie_name(secure), lang, max_age=365 * 86400, path="/",
                        secure=secure, httponly=True, samesite="Lax")
    return response


# --- shared checks ---
def role_required(check, message):
    """``login_required`` plus a role check (``check(roles, identity, **view_args)``)."""

    def decorator(view):
        @wraps(view)
        @login_required
        def wrapper(*args, **kwargs):
            if not check(services().roles, g.identity, **kwargs):
                deny(message(**kwargs) if callable(message) else str(message))
            return view(*args, **kwargs)

        return wrapper

    return decorator


def _refusal_for_tenant(tenant_id: str, **_kw) -> str:
    # The tenant number comes from the address: named only when it looks like one (a link
    # with control or bidirectional characters must not put its text on our page).
    if 0 < len(tenant_id) <= 64 and tenant_id.isprintable() and not unsafe_characters(tenant_id):
        return _("Only administrators of tenant %(tenant)s may open this page.", tenant=tenant_id)
    return str(STATUS_MESSAGES[403])


tenant_admin_required = role_required(
    lambda roles, identity, tenant_id, **_kw: roles.check_tenant_admin(identity, tenant_id),
    _refusal_for_tenant)
advisor_required = role_required(
    lambda roles, identity, **_kw: roles.check_advisor(identity),
    _l("This page is for advisors. Your account has no advisor role."))
support_admin_required = role_required(
    lambda roles, identity, **_kw: roles.check_support_admin(identity),
    _l("This page is for support administrators."))


def html_security_headers(response):
    """CSP for pages: own resources only, never framed (clickjacking), forms post only to
    us and to the identity provider (RP-initiated logout redirects there) and, on the page
    handing tokens to the application, to that application. Referrer only to our own origin:
    Flask-WTF compares it with the host on https (a missing one fails the CSRF check), and no
    other site learns our URLs."""
    if response.mimetype == "text/html":
        upstream = urlsplit(current_app.extensions["idp_bridge"].settings.upstream_issuer)
        form_action = f"'self' {upstream.scheme}://{upstream.netloc}"
        extra = g.get("form_action_origin")
        if extra:
            form_action += f" {extra}"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src 'self'; form-action {form_action}; frame-ancestors 'none'; "
            "base-uri 'none'; object-src 'none'")
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "same-origin"
    if current_app.config.get("SESSION_COOKIE_SECURE"):
        response.headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
    return response
