"""The web pages' shell: wiring (Flask-Babel, blueprints, headers), the start page, the
language switch, error pages, and the checks every page shares.

Pages enforce exactly the rights of the management API: they call the same application
services (:mod:`idp_bridge.services`), which authorise the signed-in identity with the same
:class:`~idp_bridge.services.authorization.Authorizer`. A page refuses a wrong role with 403
before it reads or changes anything (the role decorators below ask the same authorizer
first, so a page shows nothing of a tenant to others); every state-changing form is a POST
carrying a CSRF token (Flask-WTF), else 400.
"""

from __future__ import annotations

from functools import wraps
from urllib.parse import urlsplit

from flask import current_app, g, redirect, render_template, request
from flask_babel import gettext as _

from .. import surfaces
from .auth import current_identity, login_required, safe_next
from .errors import deny, page_blueprint, problem_page, wants_page
from .i18n import LANGUAGES, init_babel, lang_cookie_name

__all__ = ["blueprints", "init_app", "html_security_headers", "wants_page", "problem_page",
           "deny"]

bp = page_blueprint("pages", __name__, template_folder="templates", static_folder="static",
                    static_url_path="/static/web")


def blueprints() -> tuple:
    """The pages' blueprints (``create_app`` registers them as ``surfaces.PAGE``)."""
    # audit_chain and evidence: routes of the tenant blueprint
    from . import advisor, audit_chain, evidence, groups, support, tenant  # noqa: F401
    from .auth import bp as auth_bp

    return (bp, auth_bp, tenant.bp, groups.bp, advisor.bp, support.bp)


def init_app(app, settings) -> None:
    init_babel(app, settings)
    app.after_request(html_security_headers)
    app.context_processor(_page_context)


def services():
    return current_app.extensions["idp_bridge"]


def use_cases():
    return current_app.extensions["idp_bridge"].use_cases


def _page_context() -> dict:
    identity = current_identity() if surfaces.of_endpoint(
        current_app._get_current_object(), request.endpoint) == surfaces.PAGE else None
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


def navigation(identity) -> list[tuple[str, str]]:
    """(label, path) of the pages this identity may open."""
    authorize = use_cases().authorize
    items = []
    for tenant_id in authorize.administered_tenants(identity):
        items.append((_("Help page %(tenant)s", tenant=tenant_id), f"/tenants/{tenant_id}/help"))
    if authorize.is_advisor(identity):
        items.append((_("My tenants"), "/advisor"))
    if authorize.is_support_admin(identity):
        items.append((_("Support"), "/support"))
    return items


# --- pages ---
@bp.get("/")
def index():
    identity = current_identity()
    authorize = use_cases().authorize
    return render_template("web/index.html",
                           tenants=use_cases().tenant_admin.tenant_names(identity),
                           is_advisor=authorize.is_advisor(identity),
                           is_support=authorize.is_support_admin(identity))


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
def role_required(check):
    """``login_required`` plus the services' authorization ``check(authorize, identity,
    **view_args)``, which raises a ``Forbidden`` shown as the page of its code."""

    def decorator(view):
        @wraps(view)
        @login_required
        def wrapper(*args, **kwargs):
            check(use_cases().authorize, g.identity, **kwargs)
            return view(*args, **kwargs)

        return wrapper

    return decorator


tenant_admin_required = role_required(
    lambda authorize, identity, tenant_id, **_kw: authorize.tenant_admin(identity, tenant_id))
advisor_required = role_required(lambda authorize, identity, **_kw: authorize.advisor(identity))
support_admin_required = role_required(
    lambda authorize, identity, **_kw: authorize.support_admin(identity))


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
