"""SSO sign-in for the web pages: OpenID Connect authorization code flow with PKCE.

Authlib's Flask client does the protocol: ``state`` and ``nonce`` kept in the session and
checked, PKCE S256, the ID token validated against the provider's JWK set. Nothing here is
Keycloak-specific. Roles and groups are read with the same :class:`RoleMapper` as API tokens:
from the access token when it is a JWT meant for the bridge (Keycloak puts realm roles
there), else from the ID token. Logout is RP-initiated (OpenID Connect RP-Initiated Logout).

The session is server-side (:mod:`idp_bridge.domain.web_sessions`): the signed cookie holds
a random handle, the CSRF token and, during sign-in, Authlib's state, nonce and PKCE
verifier; never an upstream token nor the roles. Every page request reads the session's row,
so a sign-out here or a back-channel logout upstream signs the browser out at once.
"""

from __future__ import annotations

import time
from functools import wraps
from urllib.parse import urlencode, urlsplit

from authlib.integrations.base_client import OAuthError
from authlib.integrations.flask_client import OAuth
from flask import Blueprint, current_app, g, redirect, request, session, url_for
from flask_babel import gettext as _
from requests import RequestException

from ..upstream.identity import UpstreamIdentity
from ..upstream.oidc import SubjectTokenError, UpstreamUnavailable, check_identity_claims

bp = Blueprint("auth", __name__)
#: The OpenID Connect scope of the sign-in request (identity only; not an advisor right).
SIGN_IN_SCOPE = "openid profile email"

#: What the web session keeps of the upstream tokens' claims (server-side; the ID token
#: itself is kept encrypted for the logout hint). ``iat`` tells a subject-wide upstream
#: logout whether the sign-in came before it.
KEPT_CLAIMS = ("iss", "sub", "preferred_username", "name", "email", "email_verified", "sid",
               "acr", "amr", "auth_time", "iat")
#: The cookie's key for the handle of the server-side web session.
SESSION_HANDLE = "web_session"
#: Display claims that a provider may return from its UserInfo endpoint only (OpenID Connect
#: Core 5.4: with the code flow, profile and email claims need not be in the ID token).
PROFILE_CLAIMS = ("preferred_username", "name", "email")


def init_app(app, settings) -> None:
    # One registry per app: Authlib's keeps the first client created under a name, so a
    # module-wide registry would give every later app the first one's provider and client.
    oauth = OAuth(app)
    oauth.register(
        "upstream",
        client_id=settings.web_client_id,
        client_secret=settings.web_client_secret or None,
        server_metadata_url=settings.discovery_url,
        client_kwargs={"scope": SIGN_IN_SCOPE, "code_challenge_method": "S256",
                       "timeout": settings.upstream_timeout_seconds,
                       **({"token_endpoint_auth_method": "none"}
                          if not settings.web_client_secret else {})},
    )


def _upstream():
    """This app's Authlib client of the upstream provider."""
    return current_app.extensions["authlib.integrations.flask_client"].upstream


def public_url(endpoint: str) -> str:
    """The absolute URL of ``endpoint`` on the configured public base URL (``issuer``), never
    on the request's ``Host`` header: a forged host must not become the ``redirect_uri``
    the provider sends the authorization code to."""
    path = url_for(endpoint)[len(request.script_root):]
    return current_app.extensions["idp_bridge"].settings.issuer.rstrip("/") + path


def safe_next(value: str | None) -> str:
    """Only same-site relative paths: no scheme, no host, no ``//`` or backslash tricks."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or any(ord(c) < 32 for c in value):
        return "/"
    return value


@bp.get("/login")
def login():
    _end_web_session("signed_in_again")
    session["next"] = safe_next(request.args.get("next"))
    try:
        return _upstream().authorize_redirect(public_url("auth.callback"))
    except Exception:  # discovery unreachable: fail closed with a clear page
        current_app.logger.warning("sign-in unavailable: upstream discovery failed")
        return _problem(503, _("The sign-in service is unavailable. Please try again later."))


@bp.get("/auth/callback")
def callback():
    if request.args.get("error"):
        return _problem(400, _("Sign-in was cancelled or refused by the identity provider."))
    try:
        token = _upstream().authorize_access_token()
    except (OAuthError, ValueError, KeyError) as exc:
        current_app.logger.info("sign-in callback rejected: %s", type(exc).__name__)
        return _problem(400, _("The sign-in response was not valid. Please sign in again."))
    except Exception:
        return _problem(503, _("The sign-in service is unavailable. Please try again later."))
    claims = dict(token.get("userinfo") or {})
    try:
        # The same type and length checks as subject tokens: the subject and session id
        # are stored and compared.
        check_identity_claims(claims, what="id_token")
    except SubjectTokenError as exc:
        current_app.logger.info("sign-in callback rejected: %s", exc)
        return _problem(400, _("The sign-in response was not valid. Please sign in again."))
    if not any(claims.get(k) for k in PROFILE_CLAIMS):
        claims.update(_userinfo_profile(token, claims["sub"]))
    role_claims = claims
    services = current_app.extensions["idp_bridge"]
    try:
        identity = services.validator.validate(token.get("access_token", ""))
        if identity.subject == claims["sub"]:
            role_claims = identity.claims  # Keycloak: realm roles live in the access token
    except (SubjectTokenError, UpstreamUnavailable):
        pass  # an opaque access token or one for another audience: the ID token speaks
    next_url = session.pop("next", "/")
    _end_web_session("signed_in_again")
    session.clear()  # a new session on sign-in (no fixation)
    session.permanent = True
    roles = services.roles
    probe = UpstreamIdentity(issuer=claims["iss"], subject=claims["sub"], claims=role_claims)
    user = {
        **{k: claims[k] for k in KEPT_CLAIMS if k in claims},
        "roles": sorted(roles.roles(probe)),
        "groups": sorted(roles.groups(probe)),
        "signed_in_at": int(time.time()),
    }
    session[SESSION_HANDLE] = services.use_cases.web_sign_in.start(
        issuer=claims["iss"], subject=claims["sub"], upstream_sid=probe.session_id,
        claims=user, id_token=token.get("id_token"))
    return redirect(next_url)


def _userinfo_profile(token, subject: str) -> dict:
    """Profile claims from the UserInfo endpoint, for providers that keep them out of the ID
    token. Display only: never roles or groups; a response about another subject is ignored
    (OpenID Connect Core 5.3.2); when it fails, the sign-in goes on without them."""
    try:
        if not token.get("access_token") or not _upstream().load_server_metadata().get(
                "userinfo_endpoint"):
            return {}
        info = _upstream().userinfo(token=token)
    except (OAuthError, RequestException, ValueError) as exc:
        current_app.logger.info("sign-in: userinfo unavailable: %s", type(exc).__name__)
        return {}
    if info.get("sub") != subject:
        return {}
    profile = {k: info[k] for k in PROFILE_CLAIMS if isinstance(info.get(k), str) and info[k]}
    if "email" in profile and info.get("email_verified") is True:
        # An invitation by e-mail is only for a verified address (domain/guests.py).
        profile["email_verified"] = True
    return profile


@bp.post("/logout")
def logout():
    id_token = _end_web_session("signed_out")
    session.clear()
    metadata = _upstream().load_server_metadata() if id_token else {}
    end_session = metadata.get("end_session_endpoint")
    if not end_session:
        return redirect("/")
    params = {"post_logout_redirect_uri": public_url("pages.index"),
              "client_id": current_app.extensions["idp_bridge"].settings.web_client_id}
    if id_token:
        params["id_token_hint"] = id_token
    return redirect(f"{end_session}?{urlencode(params)}")


def _end_web_session(reason: str) -> str | None:
    """End this browser's web session, if any; returns its ID token (the logout hint)."""
    handle = session.pop(SESSION_HANDLE, None)
    g.pop("web_identity", None)
    if not handle:
        return None
    return current_app.extensions["idp_bridge"].use_cases.web_sign_in.end(handle, reason=reason)


def current_identity() -> UpstreamIdentity | None:
    """Who is signed in: the live server-side session of the cookie's handle (read once per
    request), else None. An ended, expired or unknown session is signed out."""
    if "web_identity" in g:
        return g.web_identity
    g.web_identity = None  # storage down: the error page is rendered signed out (fail closed)
    g.web_identity = identity = _load_identity()
    return identity


def _load_identity() -> UpstreamIdentity | None:
    handle = session.get(SESSION_HANDLE)
    if not handle:
        return None
    signed_in = current_app.extensions["idp_bridge"].use_cases.web_sign_in.find(handle)
    if signed_in is None:
        session.pop(SESSION_HANDLE, None)  # ended here or upstream, or expired
        return None
    user = signed_in.claims
    claims = dict(user)
    _set_path(claims, current_app.extensions["idp_bridge"].settings.roles_claim, user["roles"])
    _set_path(claims, current_app.extensions["idp_bridge"].settings.groups_claim, user["groups"])
    return UpstreamIdentity(issuer=signed_in.issuer, subject=signed_in.subject, claims=claims)


def _set_path(claims: dict, path: str, value) -> None:
    parts = path.split(".")
    target = claims
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


def login_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        g.identity = current_identity()
        if g.identity is None:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapper


def _problem(status: int, message: str):
    from flask import render_template

    return render_template("web/problem.html", message=message, status=status), status
