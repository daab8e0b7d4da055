"""The web pages' shell: start page, security headers for HTML."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, current_app, render_template

from .auth import current_identity

bp = Blueprint("pages", __name__, template_folder="templates")


@bp.get("/")
def index():
    return render_template("web/index.html", identity=current_identity())


def html_security_headers(response):
    """CSP for pages: own resources only, never framed (clickjacking), forms post only to
    us and to the identity provider (RP-initiated logout redirects there)."""
    if response.mimetype == "text/html":
        upstream = urlsplit(current_app.extensions["idp_bridge"].settings.upstream_issuer)
        origin = f"{upstream.scheme}://{upstream.netloc}"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"form-action 'self' {origin}; frame-ancestors 'none'; base-uri 'none'; "
            "object-src 'none'")
        response.headers["Cache-Control"] = "no-store"
    if current_app.config.get("SESSION_COOKIE_SECURE"):
        response.headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
    return response
