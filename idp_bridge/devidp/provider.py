"""A tiny development OpenID provider (demo and test mode only).

It speaks enough real OIDC that the bridge uses the same code path as against
Keycloak:

* OpenID Connect Discovery 1.0 §3/§4 (``/.well-known/openid-configuration``)
* RFC 7517 JWK Set (``jwks_uri``), RFC 7519/7515 signed JWTs (RS256 or ES256)
* RFC 6749 §4.1 authorization code grant, with the errors of §4.1.2.1 and §5.2,
  client authentication per §2.3.1 (``client_secret_basic``/``_post``, or none)
* RFC 7636 PKCE, S256 only and mandatory
* RFC 9207 ``iss`` in the authorization response
* OpenID Connect Core 1.0 §3.1 (ID token, nonce) and §5.3 (userinfo)
* OpenID Connect RP-Initiated Logout 1.0 (``end_session_endpoint``)

Tokens are shaped like Keycloak's (``realm_access.roles``, ``groups``,
``azp``, ``typ``, ``aud`` containing ``account``) so the bridge's defaults work
against both.  Everything lives in memory: a new signing key per instance, and
a lock-guarded store of one-time codes.  There are no passwords unless a user
record sets one, and ``POST /dev/token`` hands out tokens for any user, which
is why the constructor refuses any mode other than ``demo`` or ``test``.
"""
from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import re
import secrets
import threading
import time
import uuid
from urllib.parse import unquote_plus, urlencode, urlsplit, urlunsplit

from flask import Flask, jsonify, redirect, render_template, request
from joserfc import jwk, jwt
from joserfc.errors import JoseError

__all__ = ["DEMO_USERS", "DevProvider", "DevProviderRefused"]

# Fixed subjects so that tokens issued by different runs (and the bridge's
# stored sessions or fixtures) refer to the same people.
DEMO_USERS: dict[str, dict] = {
    "anna": {"sub": "5b0c6f3e-0a6e-4c1e-9d41-0a0000010042", "name": "Anna Admin",
             "email": "anna@muster-gmbh.example", "realm_roles": [],
             "groups": ["/tenants/10042/admins"]},  # tenant admin of 10042 "Muster GmbH"
    # A second admin of 10042: four eyes needs two different people.
    "dora": {"sub": "d2f4a6c8-1e3b-4d5f-a7c9-0a0000020042", "name": "Dora Admin",
             "email": "dora@muster-gmbh.example", "realm_roles": [],
             "groups": ["/tenants/10042/admins"]},
    "bob": {"sub": "8e3a2d1c-4b5f-4e6a-8c7d-0b0000000002", "name": "Bob Advisor",
            "email": "bob@advisors.example", "realm_roles": ["advisor"], "groups": []},
    "carol": {"sub": "c4a1e9b7-2f3d-4a8e-9b6c-0c0000000003", "name": "Carol Advisor",
              "email": "carol@advisors.example", "realm_roles": ["advisor"], "groups": []},
    "sam": {"sub": "3f9d7b2a-6c1e-4d5f-8a9b-0d0000000004", "name": "Sam Support",
            "email": "sam@support.example", "realm_roles": ["support-admin"], "groups": []},
    "eve": {"sub": "e7b6c5d4-8a9f-4e1d-b2c3-0e0000000005", "name": "Eve User",
            "email": "eve@example.com", "realm_roles": [], "groups": []},
}

ALLOWED_MODES = ("demo", "test")
SCOPE = "openid profile email"
CODE_LIFETIME = 60  # seconds; RFC 6749 §4.1.2 recommends at most 10 minutes
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
# RFC 7636 §4.1/§4.2: verifier and challenge are 43..128 unreserved characters.
PKCE_RE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
AUTHZ_PARAMS = ("response_type", "client_id", "redirect_uri", "scope", "state",
                "nonce", "code_challenge", "code_challenge_method")


class DevProviderRefused(RuntimeError):
    """Raised when the development provider is asked to run outside demo/test."""


def is_local_url(uri: str | None) -> bool:
    """True for an absolute http(s) URL on loopback without a fragment.

    Backslashes, whitespace and userinfo are refused outright: browsers and
    urlsplit disagree about them, which is the classic open-redirect bypass.
    """
    if not uri or any(c in uri for c in "\\@ \t\r\n"):
        return False
    try:
        parts = urlsplit(uri)
        host = parts.hostname
        parts.port  # raises ValueError on a malformed port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and host in LOCAL_HOSTS and not parts.fragment


def add_query(uri: str, params: dict) -> str:
    """Append parameters, keeping any query the registered URI already has (RFC 6749 §3.1.2)."""
    parts = urlsplit(uri)
    extra = urlencode({k: v for k, v in params.items() if v is not None})
    return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class DevProvider:
    """In-memory OpenID provider for demos and tests."""

    def __init__(self, issuer: str, *, mode: str, users: dict[str, dict] | None = None,
                 clients: dict[str, dict] | None = None, audience: str = "idp-bridge",
                 access_token_lifetime: int = 300, alg: str = "RS256"):
        # Checked before anything else: a misconfigured production deployment
        # must fail at start-up, not after it has handed out a token.
        if mode not in ALLOWED_MODES:
            raise DevProviderRefused("the development OpenID provider runs only in demo or test mode")
        parts = urlsplit(issuer)
        # Discovery §3: the issuer is an http(s) URL without query or fragment.
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"issuer must be an http(s) URL without query or fragment: {issuer!r}")
        if alg == "RS256":
            self._key = jwk.RSAKey.generate_key(2048, private=True, auto_kid=True)
        elif alg == "ES256":
            self._key = jwk.ECKey.generate_key("P-256", private=True, auto_kid=True)
        else:
            raise ValueError(f"unsupported signing algorithm {alg!r} (use RS256 or ES256)")
        self.mode = mode
        # iss must match the discovery document byte for byte, so normalise once.
        self.issuer = issuer.rstrip("/")
        self._prefix = urlsplit(self.issuer).path  # routes live under the issuer's path
        self.alg = alg
        self.kid = self._key.kid
        self.audience = audience
        self.access_token_lifetime = access_token_lifetime
        # Copies, so that tests mutating their dicts (or DEMO_USERS) do not leak.
        self.users = copy.deepcopy(DEMO_USERS if users is None else users)
        self.clients = copy.deepcopy({"advisor-console": {"redirect_uris": []},
                                      "idp-bridge": {"redirect_uris": []}}
                                     if clients is None else clients)
        self._codes: dict[str, dict] = {}
        self._lock = threading.Lock()  # Flask may serve requests from several threads

    def __repr__(self) -> str:  # keep keys and secrets out of debug output
        return f"<DevProvider issuer={self.issuer!r} mode={self.mode!r} alg={self.alg}>"

    # ------------------------------------------------------------------ tokens
    def public_jwks(self) -> dict:
        key = self._key.as_dict(private=False)
        key.update(use="sig", alg=self.alg)
        return {"keys": [key]}

    def issue_tokens(self, username: str, *, client_id: str = "advisor-console", acr: str | None = None,
                     amr: list[str] | None = None, nonce: str | None = None,
                     extra_claims: dict | None = None, lifetime: int | None = None) -> dict:
        """Sign in ``username`` directly (a new login session) and return a token response.

        ``client_id`` is not checked against the registered clients, so tests
        can mint tokens for foreign ``azp`` values.  ``extra_claims`` are merged
        into the access token last and may override standard claims (useful for
        negative tests of the bridge).  Raises KeyError for an unknown user.
        """
        return self._mint(username, client_id=client_id, sid=str(uuid.uuid4()),
                          auth_time=int(time.time()), acr=acr, amr=amr, nonce=nonce,
                          extra_claims=extra_claims, lifetime=lifetime)

    def _mint(self, username: str, *, client_id: str, sid: str, auth_time: int,
              acr: str | None = None, amr: list[str] | None = None, nonce: str | None = None,
              extra_claims: dict | None = None, lifetime: int | None = None) -> dict:
        if username not in self.users:
            raise KeyError(f"unknown user {username!r}")
        user = self.users[username]
        lifetime = self.access_token_lifetime if lifetime is None else lifetime
        now = int(time.time())
        common = {
            "iss": self.issuer, "sub": user["sub"], "azp": client_id, "iat": now,
            "exp": now + lifetime, "auth_time": auth_time, "sid": sid,
            "acr": acr or "1", "amr": list(amr) if amr else ["pwd"],
            "preferred_username": username, "name": user.get("name", username),
            "email": user.get("email"), "groups": list(user.get("groups", [])),
            "realm_access": {"roles": list(user.get("realm_roles", []))},
        }
        access = {**common, "aud": [self.audience, "account"], "jti": str(uuid.uuid4()),
                  "typ": "Bearer", "scope": SCOPE, **(extra_claims or {})}
        # OIDC Core §2: the ID token's audience is the client; azp names it too.
        id_claims = {**common, "aud": client_id, "jti": str(uuid.uuid4()), "typ": "ID"}
        if nonce is not None:
            id_claims["nonce"] = nonce
        return {"access_token": self._sign(access), "id_token": self._sign(id_claims),
                "token_type": "Bearer", "expires_in": lifetime, "scope": SCOPE}

    def logout_token(self, *, sid: str | None = None, sub: str | None = None,
                     audience: str | None = None, **overrides) -> str:
        """A Back-Channel Logout 1.0 logout token for the bridge (``overrides`` replace or,
        with the value ``None``, remove claims: for negative tests)."""
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": audience or self.audience, "iat": now,
                  "exp": now + 120, "jti": str(uuid.uuid4()),
                  "events": {"http://schemas.openid.net/event/backchannel-logout": {}}}
        if sid is not None:
            claims["sid"] = sid
        if sub is not None:
            claims["sub"] = sub
        for key, value in overrides.items():
            if value is None:
                claims.pop(key, None)
            else:
                claims[key] = value
        return jwt.encode({"alg": self.alg, "kid": self.kid, "typ": "logout+jwt"}, claims, self._key)

    def _sign(self, claims: dict) -> str:
        return jwt.encode({"alg": self.alg, "kid": self.kid, "typ": "JWT"}, claims, self._key)

    def _verify(self, token: str, *, check_exp: bool = True) -> dict:
        """Verify signature and issuer (and expiry); raises JoseError/ValueError."""
        claims = jwt.decode(token, self._key, algorithms=[self.alg]).claims
        options = {"iss": {"essential": True, "value": self.issuer}}
        if check_exp:
            options["exp"] = {"essential": True}
        jwt.JWTClaimsRegistry(**options).validate(claims)
        return claims

    # ----------------------------------------------------- authorization codes
    def _new_code(self, record: dict) -> str:
        code = secrets.token_urlsafe(32)
        now = time.time()
        with self._lock:
            # Drop expired codes so a long-running demo does not grow forever.
            for stale in [c for c, r in self._codes.items() if r["expires_at"] < now]:
                del self._codes[stale]
            self._codes[code] = {**record, "expires_at": now + CODE_LIFETIME}
        return code

    def _take_code(self, code: str) -> dict | None:
        # Popped under the lock, before any further check: a code is spent on
        # its first presentation, even a failed one (RFC 6749 §4.1.2, §10.5),
        # which also stops guessing the PKCE verifier against one code.
        with self._lock:
            record = self._codes.pop(code, None)
        if record is None or record["expires_at"] < time.time():
            return None
        return record

    def _redirect_allowed(self, client: dict, redirect_uri: str | None) -> bool:
        registered = client.get("redirect_uris") or []
        if registered:
            return redirect_uri in registered  # exact string match (RFC 6749 §3.1.2.3)
        # Dev convenience: a client registered without redirect URIs may use any
        # loopback URL, so demos on random ports need no configuration.  Never
        # widened to other hosts: that would make /authorize an open redirector.
        return is_local_url(redirect_uri)

    # --------------------------------------------------------------- web app
    def create_app(self) -> Flask:
        """Build the Flask app serving this provider's endpoints.

        ``POST /dev/token`` issues tokens for any seeded user without a login.
        It exists only because this provider never runs outside demo/test mode;
        it lets scripts and tests get tokens without driving the browser flow.
        """
        app = Flask(__name__)  # templates from idp_bridge/devidp/templates
        app.extensions["devidp"] = self
        p = self._prefix
        app.add_url_rule(f"{p}/.well-known/openid-configuration", "discovery", self._discovery)
        app.add_url_rule(f"{p}/jwks", "jwks", self._jwks)
        app.add_url_rule(f"{p}/authorize", "authorize", self._authorize, methods=["GET", "POST"])
        app.add_url_rule(f"{p}/token", "token", self._token, methods=["POST"])
        app.add_url_rule(f"{p}/userinfo", "userinfo", self._userinfo, methods=["GET", "POST"])
        app.add_url_rule(f"{p}/logout", "logout", self._logout)
        app.add_url_rule(f"{p}/dev/token", "dev_token", self._dev_token, methods=["POST"])
        return app

    def _discovery(self):
        i = self.issuer
        return jsonify({
            "issuer": i, "authorization_endpoint": f"{i}/authorize", "token_endpoint": f"{i}/token",
            "jwks_uri": f"{i}/jwks", "userinfo_endpoint": f"{i}/userinfo",
            "end_session_endpoint": f"{i}/logout",
            "response_types_supported": ["code"], "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code"],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": [self.alg],
            "subject_types_supported": ["public"], "scopes_supported": ["openid", "profile", "email"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "authorization_response_iss_parameter_supported": True,
        })

    def _jwks(self):
        resp = jsonify(self.public_jwks())
        resp.headers["Cache-Control"] = "max-age=300"
        return resp

    @staticmethod
    def _page(template: str, status: int = 200, **ctx):
        return render_template(f"devidp/{template}", **ctx), status

    def _error_page(self, message: str):
        # Used when client_id/redirect_uri cannot be trusted: RFC 6749 §4.1.2.1
        # forbids redirecting to them, so the user agent gets a page instead.
        return self._page("message.html", 400, title="Sign-in error", message=message)

    def _check_authz(self, params):
        """Validate an authorization request; return (error_response, request_dict)."""
        client_id, redirect_uri = params.get("client_id"), params.get("redirect_uri")
        client = self.clients.get(client_id) if client_id else None
        if client is None or len(params.getlist("client_id")) > 1:
            return self._error_page("Unknown or missing client_id."), None
        if not self._redirect_allowed(client, redirect_uri) or len(params.getlist("redirect_uri")) > 1:
            return self._error_page("The redirect_uri is not registered for this client."), None
        req = {k: params.get(k) for k in AUTHZ_PARAMS}

        def fail(error, description):
            return redirect(add_query(redirect_uri, {
                "error": error, "error_description": description,
                "state": req["state"], "iss": self.issuer}), 303 if request.method == "POST" else 302)

        # From here on the redirect URI is trusted, so errors go back to the client.
        if any(len(params.getlist(k)) > 1 for k in AUTHZ_PARAMS):  # RFC 6749 §3.1
            return fail("invalid_request", "repeated parameter"), None
        if not req["response_type"]:
            return fail("invalid_request", "response_type is required"), None
        if req["response_type"] != "code":
            return fail("unsupported_response_type", "only response_type=code is supported"), None
        if req["code_challenge_method"] != "S256":  # RFC 7636 §4.4.1: PKCE is mandatory here
            return fail("invalid_request", "PKCE with code_challenge_method=S256 is required"), None
        if not PKCE_RE.match(req["code_challenge"] or ""):
            return fail("invalid_request", "code_challenge is missing or malformed"), None
        return None, req

    def _issue_code(self, req: dict, username: str):
        code = self._new_code({
            "client_id": req["client_id"], "redirect_uri": req["redirect_uri"],
            "code_challenge": req["code_challenge"], "nonce": req["nonce"], "username": username,
            # One login = one session id, shared by every token minted from it.
            "sid": str(uuid.uuid4()), "auth_time": int(time.time())})
        return redirect(add_query(req["redirect_uri"], {
            "code": code, "state": req["state"], "iss": self.issuer}),
            303 if request.method == "POST" else 302)  # 303 after POST: RFC 9700 §4.12

    def _authorize(self):
        params = request.form if request.method == "POST" else request.args
        error, req = self._check_authz(params)
        if error is not None:
            return error
        if request.method == "GET":
            hint = request.args.get("login_hint")
            # Automated tests skip the page; users with a password still see it.
            if request.args.get("auto") == "1" and hint in self.users \
                    and not self.users[hint].get("password"):
                return self._issue_code(req, hint)
            return self._sign_in_page(req)
        if "cancel" in request.form:
            return redirect(add_query(req["redirect_uri"], {
                "error": "access_denied", "error_description": "sign-in cancelled",
                "state": req["state"], "iss": self.issuer}), 303)
        username = request.form.get("username", "")
        user = self.users.get(username)
        if user is None:
            return self._sign_in_page(req, "Unknown user.", 400)
        if user.get("password") and not hmac.compare_digest(
                request.form.get("password", "").encode(), str(user["password"]).encode()):
            return self._sign_in_page(req, "Wrong password.", 400)
        return self._issue_code(req, username)

    def _sign_in_page(self, req: dict, error: str | None = None, status: int = 200):
        html, status = self._page("authorize.html", status, req=req, users=self.users, error=error,
                                  hidden={k: v for k, v in req.items() if v is not None})
        # No framing (clickjacking) and no caching of a page carrying request state.
        return html, status, {"X-Frame-Options": "DENY", "Cache-Control": "no-store"}

    @staticmethod
    def _oauth_error(error: str, description: str, status: int = 400, headers: dict | None = None):
        resp = jsonify({"error": error, "error_description": description})
        resp.status_code = status
        resp.headers.update({"Cache-Control": "no-store", **(headers or {})})
        return resp

    def _client_auth(self):
        """Authenticate the client (RFC 6749 §2.3.1); return (client_id, error_response)."""
        form, header = request.form, request.headers.get("Authorization", "")
        basic_id = basic_secret = None
        if header[:6].lower() == "basic ":
            try:
                raw = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
                basic_id, basic_secret = (unquote_plus(x) for x in raw.split(":", 1))
            except (ValueError, UnicodeDecodeError):
                return None, self._oauth_error("invalid_client", "malformed Basic credentials", 401,
                                               {"WWW-Authenticate": 'Basic realm="devidp"'})
            if form.get("client_secret") is not None or form.get("client_id", basic_id) != basic_id:
                return None, self._oauth_error("invalid_request", "use one client authentication method")
        client_id = basic_id or form.get("client_id")
        secret = basic_secret if basic_id else form.get("client_secret")
        client = self.clients.get(client_id) if client_id else None
        expected = client.get("secret") if client else None
        # Public clients (no secret registered) authenticate with "none".
        if client is None or (expected and not hmac.compare_digest(
                (secret or "").encode(), str(expected).encode())):
            headers = {"WWW-Authenticate": 'Basic realm="devidp"'} if basic_id else None
            return None, self._oauth_error("invalid_client", "client authentication failed", 401, headers)
        return client_id, None

    def _token(self):
        form = request.form
        if form.get("grant_type") != "authorization_code":
            return self._oauth_error("unsupported_grant_type", "only authorization_code is supported")
        client_id, error = self._client_auth()  # before the code is spent
        if error is not None:
            return error
        record = self._take_code(form.get("code", ""))
        if record is None:
            return self._oauth_error("invalid_grant", "unknown, expired or already used code")
        if record["client_id"] != client_id:
            return self._oauth_error("invalid_grant", "code was issued to another client")
        if form.get("redirect_uri") != record["redirect_uri"]:  # RFC 6749 §4.1.3
            return self._oauth_error("invalid_grant", "redirect_uri does not match")
        verifier = form.get("code_verifier", "")
        if not PKCE_RE.match(verifier) or not hmac.compare_digest(s256(verifier), record["code_challenge"]):
            return self._oauth_error("invalid_grant", "PKCE verification failed")  # RFC 7636 §4.6
        tokens = self._mint(record["username"], client_id=client_id, sid=record["sid"],
                            auth_time=record["auth_time"], nonce=record["nonce"])
        resp = jsonify(tokens)
        resp.headers.update({"Cache-Control": "no-store", "Pragma": "no-cache"})  # RFC 6749 §5.1
        return resp

    def _userinfo(self):
        header = request.headers.get("Authorization", "")
        challenge = 'Bearer error="invalid_token"'
        if header[:7].lower() != "bearer ":
            return self._oauth_error("invalid_token", "bearer token required", 401,
                                     {"WWW-Authenticate": 'Bearer realm="devidp"'})
        try:
            claims = self._verify(header[7:].strip())
        except (JoseError, ValueError):
            return self._oauth_error("invalid_token", "token is invalid or expired", 401,
                                     {"WWW-Authenticate": challenge})
        if claims.get("typ") != "Bearer":  # an ID token is not an access token
            return self._oauth_error("invalid_token", "not an access token", 401,
                                     {"WWW-Authenticate": challenge})
        return jsonify({k: claims.get(k) for k in ("sub", "preferred_username", "name", "email", "groups")})

    def _logout(self):
        # Nothing server-side to end: the provider keeps no browser session.
        target, hint = request.args.get("post_logout_redirect_uri"), request.args.get("id_token_hint")
        if hint:
            try:  # an expired hint is fine (RP-Initiated Logout §2), a forged one is not
                self._verify(hint, check_exp=False)
            except (JoseError, ValueError):
                return self._page("message.html", 400, title="Sign-out error",
                                  message="The id_token_hint is not valid.")
        if target:
            if not is_local_url(target):
                return self._page("message.html", 400, title="Sign-out error",
                                  message="post_logout_redirect_uri must be a localhost URL.")
            return redirect(add_query(target, {"state": request.args.get("state")}))
        return self._page("message.html", title="Signed out", message="You have been signed out.")

    def _dev_token(self):
        form = request.form
        username = form.get("username", "")
        if username not in self.users:
            return self._oauth_error("unknown_user", f"no such user: {username}", 404)
        amr = [m.strip() for m in form.get("amr", "").split(",") if m.strip()] or None
        resp = jsonify(self.issue_tokens(username, client_id=form.get("client_id") or "advisor-console",
                                         acr=form.get("acr") or None, amr=amr))
        resp.headers["Cache-Control"] = "no-store"
        return resp
