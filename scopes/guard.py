"""Resource-server side of idp-bridge: validate access tokens locally, learn revocations.

- Access tokens are RFC 9068 JWTs (``typ: at+jwt``); :meth:`TokenGuard.validate` checks the
  signature against the issuer's JWKS (found by RFC 8414 discovery), ``iss``, ``aud``,
  ``exp``/``nbf``/``iat``, the ``tenant`` and the ``scope`` (DESIGN.md sections 4 and 5).
- Errors follow RFC 6750 section 3.1: :class:`InvalidToken` (401 ``invalid_token``),
  :class:`InsufficientScope` (403 ``insufficient_scope``); :meth:`TokenGuard.require` turns
  them into responses with a ``WWW-Authenticate: Bearer`` challenge for Flask views.
- Revocation (DESIGN.md section 8, docs/revocation-feed.md): a receiver of the bridge's Shared
  Signals stream, polling (RFC 8936) for CAEP ``session-revoked`` Security Event Tokens
  (RFC 8417) that name a revoked ``grant_id`` or ``sid``.

Feed health and failing closed: once :meth:`TokenGuard.start_revocation_listener` has been
called, a token is accepted only while the feed is healthy (its last successful poll is at most
``feed_staleness`` seconds old), or, with ``introspection_fallback=True``, while the bridge's
introspection endpoint says it is active. This stays so after
:meth:`~TokenGuard.stop_revocation_listener`: a guard that was told revocation matters does not
silently stop caring. A resource server that never starts the listener validates offline
only and accepts revoked tokens until they expire (at most ``max_token_lifetime``); that is
its choice to make, the guard does not consult the feed then.

This module imports nothing from ``idp_bridge`` and needs neither Flask (imported only inside
:meth:`TokenGuard.require`) nor, if ``http`` is given, requests (``pip install
idp-bridge[guard]``).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import socket
import threading
import time
import weakref

from ._jws import JWSError, JWSVerifier, KeySet, KeysUnavailable, SUPPORTED_ALGORITHMS
from .catalog import ALL_SCOPES, UnknownScope, implied_scopes, validate_scopes

__all__ = ["GuardError", "InvalidRequest", "InvalidToken", "InsufficientScope", "TokenGuard"]

log = logging.getLogger("scopes.guard")

ACCESS_TOKEN_TYPES = ("at+jwt", "application/at+jwt")  # RFC 9068 section 4
SET_TYPES = ("secevent+jwt", "application/secevent+jwt")  # RFC 8417 section 2.3
POLL_DELIVERY = "urn:ietf:rfc:8936"
SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
REVOCATION_KINDS = ("grant_id", "sid")

_NUMBER = (int, float)
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)")
_NO_CACHE = re.compile(r"(?:^|[,\s])no-(?:store|cache)\b")


# --- errors (RFC 6750 section 3.1) ---

class GuardError(Exception):
    """A request the guard refuses; ``error`` is the RFC 6750 error code."""

    error = "invalid_request"
    status_code = 400

    def __init__(self, description: str):
        super().__init__(description)
        self.description = description


class InvalidRequest(GuardError):
    """The ``Authorization`` header is malformed (400 ``invalid_request``)."""


class InvalidToken(GuardError):
    """Expired, revoked, malformed, or not for this resource or tenant (401)."""

    error = "invalid_token"
    status_code = 401


class InsufficientScope(GuardError):
    """A valid token without the scope the request needs (403)."""

    error = "insufficient_scope"
    status_code = 403

    def __init__(self, description: str, scope: str | None = None):
        super().__init__(description)
        self.scope = scope


class _FetchError(Exception):
    pass


# --- the guard ---

class TokenGuard:
    """Validates idp-bridge access tokens for one resource server (audience).

    ``max_token_lifetime`` must be at least the bridge's access-token lifetime: a token living
    longer is refused (it could outlive its revocation entry, which is kept
    ``event_timestamp + max_token_lifetime + leeway``). ``feed_staleness`` bounds how old the
    last successful poll of the revocation feed may be before validation fails closed (or
    introspects, with ``introspection_fallback``); the bridge's long poll is always shorter.

    ``http`` is a ``requests.Session``-like object used for discovery, JWKS and introspection
    (default: a new ``requests.Session``). Nothing is fetched before the first validation or
    :meth:`discover`. The revocation listener always uses a session of its own, so that
    :meth:`stop_revocation_listener` can cut its long poll short.
    """

    def __init__(self, issuer: str, audience: str, *, algorithms=("ES256", "RS256"),
                 leeway: float = 30, max_token_lifetime: float = 300,
                 feed_staleness: float = 30.0, introspection_fallback: bool = False,
                 introspection_cache_seconds: float = 5.0, http=None,
                 jwks_refetch_interval: float = 5.0, realm: str | None = None,
                 max_token_length: int = 8192, http_timeout: float = 5.0,
                 poll_timeout: float = 35.0, backoff_initial: float = 0.2,
                 backoff_max: float = 5.0):
        if not isinstance(issuer, str) or not issuer.startswith(("https://", "http://")):
            raise ValueError("issuer must be an http(s) URL")
        if not isinstance(audience, str) or not audience:
            raise ValueError("audience must be a non-empty string")
        algorithms = tuple(algorithms)
        unsupported = [a for a in algorithms if a not in SUPPORTED_ALGORITHMS]
        if not algorithms or unsupported:  # "none" and HMAC can never be configured
            raise ValueError(f"algorithms must be a non-empty subset of "
                             f"{sorted(SUPPORTED_ALGORITHMS)}; got {list(algorithms)}")
        for name, value in (("leeway", leeway), ("max_token_lifetime", max_token_lifetime),
                            ("feed_staleness", feed_staleness),
                            ("introspection_cache_seconds", introspection_cache_seconds),
                            ("jwks_refetch_interval", jwks_refetch_interval),
                            ("http_timeout", http_timeout), ("poll_timeout", poll_timeout),
                            ("backoff_initial", backoff_initial), ("backoff_max", backoff_max)):
            if not isinstance(value, _NUMBER) or value < 0:
                raise ValueError(f"{name} must be a number >= 0")
        if max_token_lifetime <= 0 or feed_staleness <= 0:
            raise ValueError("max_token_lifetime and feed_staleness must be > 0")
        self.issuer = issuer
        self.audience = audience
        self.algorithms = algorithms
        self.leeway = leeway
        self.max_token_lifetime = max_token_lifetime
        self.feed_staleness = feed_staleness
        self.introspection_fallback = introspection_fallback
        self.introspection_cache_seconds = introspection_cache_seconds
        self.jwks_refetch_interval = jwks_refetch_interval
        self.realm = realm or audience
        self.max_token_length = max_token_length
        self.http_timeout = http_timeout
        self.poll_timeout = poll_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = max(backoff_max, backoff_initial)
        if http is None:
            http = _requests().Session()
        self.http = http

        self.metadata: dict | None = None
        self._keys: KeySet | None = None
        self._verifier: JWSVerifier | None = None
        self._bootstrap_lock = threading.Lock()
        self._discovery_retry_at = 0.0

        # scope string -> ((required scope, (padded scopes that satisfy it)), ...)
        satisfying: dict[str, set[str]] = {}
        for granted in ALL_SCOPES:
            for covered in implied_scopes([granted]):
                satisfying.setdefault(covered, set()).add(granted)
        self._satisfying = {s: frozenset(v) for s, v in satisfying.items()}
        self._scope_checks: dict[str, tuple] = {}

        # Revocation set: id -> wall-clock time until which it matters. Readers look up
        # without a lock (a dict read is atomic in CPython); writers hold the lock; pruning
        # swaps in a new dict.
        self._revoked_grants: dict[str, float] = {}
        self._revoked_sids: dict[str, float] = {}
        self._revocation_lock = threading.Lock()
        self._pruned_at = time.monotonic()
        self.prune_interval = 10.0

        self._listener: _RevocationListener | None = None
        self._feed_required = False  # set for good by start_revocation_listener
        self._feed_ok_at = float("-inf")  # time.monotonic() of the last successful poll
        self._credentials: tuple[str, str] | None = None
        self._introspection_cache: dict[bytes, tuple[float, bool]] = {}

    # --- validation ---
    def validate(self, token, *, tenant, scope) -> dict:
        """The claims of ``token`` if it may be used for ``scope`` on ``tenant``.

        Raises :class:`InvalidToken` or :class:`InsufficientScope`; a ``scope`` that is not in
        :mod:`scopes.catalog` is a programming error (:class:`~scopes.UnknownScope`, a
        ValueError). ``write`` implies ``read`` of the same area.
        """
        checks = self._scope_checks.get(scope)
        if checks is None:
            checks = self._compile_scope(scope)
        if type(tenant) is not str:
            tenant = _tenant_string(tenant)
        verifier = self._verifier or self._bootstrap()
        try:
            claims = verifier.verify(token)
        except JWSError as exc:
            raise InvalidToken(exc.description) from None
        except KeysUnavailable:
            raise InvalidToken("the issuer's signing keys are unavailable") from None

        if claims.get("iss") != self.issuer:
            raise InvalidToken("token issuer is not accepted")
        aud = claims.get("aud")
        if aud != self.audience and not (type(aud) is list and self.audience in aud):
            raise InvalidToken("token is not intended for this audience")
        now = time.time()
        exp = claims.get("exp")
        iat = claims.get("iat")
        if type(exp) not in _NUMBER or type(iat) not in _NUMBER:
            raise InvalidToken("token lacks numeric exp and iat claims")
        if now > exp + self.leeway:
            raise InvalidToken("token has expired")
        if iat > now + self.leeway:
            raise InvalidToken("token is issued in the future (iat)")
        if exp - iat > self.max_token_lifetime:
            # It could outlive the revocation entries, which are kept that long.
            raise InvalidToken("token lifetime exceeds the accepted maximum")
        nbf = claims.get("nbf")
        if nbf is not None and (type(nbf) not in _NUMBER or nbf > now + self.leeway):
            raise InvalidToken("token is not valid yet (nbf)")

        grant_id = claims.get("grant_id")
        sid = claims.get("sid")
        if type(grant_id) is not str or type(sid) is not str:
            raise InvalidToken("token lacks grant_id or sid")
        if grant_id in self._revoked_grants or sid in self._revoked_sids:
            raise InvalidToken("token has been revoked")
        stale = self._feed_required and (
            time.monotonic() - self._feed_ok_at > self.feed_staleness)
        if stale and not self.introspection_fallback:
            raise InvalidToken("revocation feed unavailable")

        # A valid token for another tenant is not valid for this resource: 401 invalid_token
        # (RFC 6750 section 3.1), not 403 - no scope the client could ask for would help.
        if claims.get("tenant") != tenant:
            raise InvalidToken("token was not issued for this tenant")
        token_scope = claims.get("scope")
        # Space-delimited (RFC 6749 section 3.3): " a:read " in " <scope> " is an exact match.
        padded = f" {token_scope} " if type(token_scope) is str else ""
        for required, (first, second) in checks:
            if first not in padded and second not in padded:
                raise InsufficientScope(f"token lacks the scope {required}", required)

        if stale:
            self._introspect(token)
        return claims

    def discover(self) -> dict:
        """Fetch the issuer's metadata now (optional warm-up); raises :class:`InvalidToken`."""
        self._verifier or self._bootstrap()
        return self.metadata

    def require(self, scope: str, tenant_arg: str = "tenant"):
        """Flask view decorator: a Bearer token valid for ``scope`` on the view's tenant.

        The tenant is the view argument ``tenant_arg`` (a URL variable). On success the claims
        are on ``flask.g.token_claims`` and the tenant on ``flask.g.tenant``; otherwise the
        answer is ``{"error", "error_description"}`` with the RFC 6750 challenge. Only the
        ``Authorization`` header is read (RFC 6750 section 2.1), never query or form.
        """
        self._compile_scope(scope)  # an unknown scope fails here, at import time

        def decorator(view):
            @functools.wraps(view)
            def wrapper(*args, **kwargs):
                import flask

                if tenant_arg not in kwargs:
                    raise TypeError(f"view {view.__name__} has no argument {tenant_arg!r} "
                                    f"to take the tenant from")
                tenant = kwargs[tenant_arg]
                try:
                    token = bearer_token(flask.request.headers.get("Authorization"))
                    if token is None:
                        return self.error_response(None)
                    claims = self.validate(token, tenant=tenant, scope=scope)
                except GuardError as exc:
                    return self.error_response(exc)
                flask.g.token_claims = claims
                flask.g.tenant = claims["tenant"]
                return view(*args, **kwargs)

            return wrapper

        return decorator

    def error_response(self, error: GuardError | None):
        """A Flask response for ``error``; ``None`` means no credentials were sent: 401 with a
        bare challenge and no error code (RFC 6750 section 3.1)."""
        import flask

        if error is None:
            # No error code at all, in the challenge or the body (RFC 6750 section 3.1).
            response = flask.jsonify({"error_description": "a Bearer access token is required"})
            response.status_code = 401
        else:
            response = flask.jsonify({"error": error.error,
                                      "error_description": error.description})
            response.status_code = error.status_code
        response.headers["WWW-Authenticate"] = self.challenge(error)
        response.headers["Cache-Control"] = "no-store"
        return response

    def challenge(self, error: GuardError | None = None) -> str:
        """The ``WWW-Authenticate`` value for ``error`` (RFC 6750 section 3)."""
        parts = [f'realm="{_quoted(self.realm)}"']
        if error is not None:
            parts.append(f'error="{error.error}"')
            parts.append(f'error_description="{_quoted(error.description)}"')
            scope = getattr(error, "scope", None)
            if scope:
                parts.append(f'scope="{_quoted(scope)}"')
        return "Bearer " + ", ".join(parts)

    # --- revocation ---
    def revoke(self, kind: str, value: str, event_timestamp: float) -> bool:
        """Reject tokens whose ``kind`` claim (``grant_id`` or ``sid``) is ``value``.

        Kept until ``event_timestamp + max_token_lifetime + leeway``: any token it revokes
        has expired by then. Returns False when that moment has already passed.
        """
        if kind not in REVOCATION_KINDS:
            raise ValueError(f"kind must be one of {REVOCATION_KINDS}")
        if not isinstance(value, str) or not value:
            raise ValueError("value must be a non-empty string")
        if type(event_timestamp) not in _NUMBER:
            raise ValueError("event_timestamp must be a number (seconds since the epoch)")
        until = event_timestamp + self.max_token_lifetime + self.leeway
        now = time.time()
        if until <= now:
            return False
        with self._revocation_lock:
            table = self._revoked_grants if kind == "grant_id" else self._revoked_sids
            if table.get(value, 0) < until:
                table[value] = until
        self.prune_revocations()
        return True

    def is_revoked(self, kind: str, value: str) -> bool:
        table = self._revoked_grants if kind == "grant_id" else self._revoked_sids
        return value in table

    def prune_revocations(self, now: float | None = None, *, force: bool = False) -> None:
        """Forget entries whose tokens have all expired (cheap: at most every few seconds)."""
        if not force and time.monotonic() - self._pruned_at < self.prune_interval:
            return
        now = time.time() if now is None else now
        with self._revocation_lock:
            self._pruned_at = time.monotonic()
            self._revoked_grants = {k: v for k, v in self._revoked_grants.items() if v > now}
            self._revoked_sids = {k: v for k, v in self._revoked_sids.items() if v > now}

    @property
    def revocation_count(self) -> int:
        return len(self._revoked_grants) + len(self._revoked_sids)

    # --- revocation feed ---
    def start_revocation_listener(self, client_id: str, client_secret: str) -> None:
        """Subscribe to the bridge's revocation feed in a daemon thread (poll delivery).

        From now on :meth:`validate` fails closed while the feed is not healthy (see the
        module docstring). The client needs the ``receiver`` role (and ``introspect`` for
        ``introspection_fallback``).
        """
        if self._listener is not None and self._listener.alive:
            raise RuntimeError("the revocation listener is already running")
        if not client_id or not client_secret:
            raise ValueError("client_id and client_secret are required")
        self._credentials = (client_id, client_secret)
        self._feed_ok_at = float("-inf")
        self._feed_required = True
        self._listener = _RevocationListener(self, client_id, client_secret)
        self._listener.start()

    def stop_revocation_listener(self, timeout: float = 1.5) -> None:
        """Stop the listener, cutting a long poll in flight short; returns within ``timeout``
        (plus a few milliseconds). Validation keeps failing closed (or introspecting)."""
        listener = self._listener
        if listener is None:
            return
        self._feed_ok_at = float("-inf")
        listener.stop(timeout)
        self._feed_ok_at = float("-inf")

    @property
    def feed_healthy(self) -> bool:
        """Whether a running listener polled successfully within ``feed_staleness``."""
        return (self._listener is not None and self._listener.alive
                and time.monotonic() - self._feed_ok_at <= self.feed_staleness)

    # --- internals ---
    def _compile_scope(self, scope) -> tuple:
        if not isinstance(scope, str):
            raise TypeError("scope must be a string such as 'evaluation:read'")
        required = validate_scopes(s for s in scope.split(" ") if s)  # UnknownScope if not
        if not required:
            raise UnknownScope("a scope is required")
        checks = []
        for s in required:  # (scope, two padded scopes granting it: itself, or area:write)
            grants = sorted(self._satisfying[s])
            checks.append((s, (f" {grants[0]} ", f" {grants[-1]} ")))
        checks = tuple(checks)
        self._scope_checks[scope] = checks
        return checks

    def _bootstrap(self) -> JWSVerifier:
        with self._bootstrap_lock:
            if self._verifier is not None:
                return self._verifier
            if time.monotonic() < self._discovery_retry_at:
                raise InvalidToken("the issuer's metadata is unavailable")
            try:
                metadata = self._discover()
            except _FetchError as exc:
                self._discovery_retry_at = time.monotonic() + self.jwks_refetch_interval
                log.error("discovery of %s failed: %s", self.issuer, exc)
                raise InvalidToken("the issuer's metadata is unavailable") from None
            self.metadata = metadata
            self._keys = KeySet(metadata["jwks_uri"], self._fetch_json,
                                refetch_interval=self.jwks_refetch_interval)
            self._verifier = JWSVerifier(self._keys, self.algorithms, ACCESS_TOKEN_TYPES,
                                         max_length=self.max_token_length)
            return self._verifier

    def _discover(self) -> dict:
        base = self.issuer.rstrip("/")
        errors = []
        for suffix in ("oauth-authorization-server", "openid-configuration"):
            url = f"{base}/.well-known/{suffix}"
            try:
                metadata, _ = self._fetch_json(url)
            except _FetchError as exc:
                errors.append(str(exc))
                continue
            if not isinstance(metadata, dict) or metadata.get("issuer") != self.issuer:
                # RFC 8414 section 3.3: metadata for another issuer must not be used.
                raise _FetchError(f"{url} describes another issuer")
            if not isinstance(metadata.get("jwks_uri"), str):
                raise _FetchError(f"{url} has no jwks_uri")
            return metadata
        raise _FetchError("; ".join(errors))

    def _fetch_json(self, url: str, **kwargs):
        """(JSON document, max-age seconds or None) of a GET; raises :class:`_FetchError`."""
        try:
            response = self.http.get(url, timeout=self.http_timeout,
                                     headers={"Accept": "application/json"}, **kwargs)
            if response.status_code != 200:
                raise _FetchError(f"GET {url} answered HTTP {response.status_code}")
            document = response.json()
        except _FetchError:
            raise
        except Exception as exc:  # noqa: BLE001 - network, TLS, JSON: all mean unavailable
            raise _FetchError(f"GET {url} failed: {type(exc).__name__}") from None
        return document, _max_age(response.headers.get("Cache-Control"))

    def _introspect(self, token: str) -> None:
        """Accept ``token`` only if the bridge says it is active (RFC 7662), with a short
        cache keyed by the token's hash."""
        key = hashlib.sha256(token.encode()).digest()
        now = time.monotonic()
        hit = self._introspection_cache.get(key)
        if hit is not None and hit[0] > now:
            active = hit[1]
        else:
            active = self._introspection_call(token)
            cache = self._introspection_cache
            if len(cache) >= 10_000:
                for k in [k for k, (until, _) in list(cache.items()) if until <= now]:
                    cache.pop(k, None)
                if len(cache) >= 10_000:
                    cache.clear()
            cache[key] = (now + self.introspection_cache_seconds, active)
        if not active:
            raise InvalidToken("token is not active")

    def _introspection_call(self, token: str) -> bool:
        endpoint = (self.metadata or {}).get("introspection_endpoint")
        if not endpoint or self._credentials is None:
            raise InvalidToken("revocation feed unavailable")
        try:
            response = self.http.post(endpoint, data={"token": token,
                                                      "token_type_hint": "access_token"},
                                      auth=self._credentials, timeout=self.http_timeout,
                                      headers={"Accept": "application/json"})
            if response.status_code != 200:
                raise _FetchError(f"HTTP {response.status_code}")
            document = response.json()
        except Exception as exc:  # noqa: BLE001
            log.warning("introspection failed: %s", exc if isinstance(exc, _FetchError)
                        else type(exc).__name__)
            raise InvalidToken("revocation feed unavailable and introspection failed") from None
        return isinstance(document, dict) and document.get("active") is True


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header; None when there is no Bearer
    credential; :class:`InvalidRequest` when it is malformed (RFC 6750 section 2.1)."""
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = rest.strip()
    if not token or " " in token:
        raise InvalidRequest("the Authorization header must be 'Bearer <token>'")
    return token


def _tenant_string(tenant) -> str:
    if isinstance(tenant, int) and not isinstance(tenant, bool):
        return str(tenant)
    raise TypeError("tenant must be a string (a tenant id)")


def _quoted(text: str) -> str:
    """``text`` restricted to what an RFC 6750 quoted attribute may hold (no '"' or '\\')."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in text)


def _max_age(cache_control: str | None) -> float | None:
    if not cache_control:
        return None
    if _NO_CACHE.search(cache_control):
        return 0.0
    match = _MAX_AGE.search(cache_control)
    return float(match.group(1)) if match else None


def _requests():
    try:
        import requests
    except ImportError:  # pragma: no cover - depends on the installation
        raise ImportError("scopes.guard needs requests: pip install 'idp-bridge[guard]', "
                          "or pass http=<a requests.Session-like object>") from None
    return requests


# --- revocation listener (SSF receiver, RFC 8936 poll delivery) ---

class _FeedError(Exception):
    pass


class _Outcome:
    ACK = "ack"
    RETRY = "retry"


class _RevocationListener:
    """One daemon thread: create or find the stream, then long-poll, verify, apply, ack."""

    MAX_EVENTS = 100

    def __init__(self, guard: TokenGuard, client_id: str, client_secret: str):
        self.guard = guard
        self.client_id = client_id
        self._auth = (client_id, client_secret)
        self._stop = threading.Event()
        self._sockets = weakref.WeakSet()
        self._session = _abortable_session(guard.http, self._sockets, self._stop)
        self._thread = threading.Thread(target=self._run, name="scopes-guard-revocation-feed",
                                        daemon=True)
        self._poll_url: str | None = None
        self._verifier: JWSVerifier | None = None
        self._ack: list[str] = []
        self._errors: dict[str, dict] = {}
        self._rejected: dict[str, int] = {}  # jti -> times reported in setErrs
        self._immediate = True
        self.polls = 0

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        # Closing a session does not interrupt a read in progress; shutting the socket down
        # does, and the thread then sees the stop flag.
        for connection in list(self._sockets):
            sock = getattr(connection, "sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._session.close()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("revocation listener still finishing a request; it is a daemon thread "
                        "and will exit without effect")

    # --- the loop ---
    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            try:
                if self._poll_url is None:
                    self._setup()
                pause = self._poll()
                backoff = 0.0
                if pause:
                    self._stop.wait(pause)
            except Exception as exc:  # noqa: BLE001 - the loop must survive anything
                if self._stop.is_set():
                    break
                backoff = min(self.guard.backoff_max, max(self.guard.backoff_initial,
                                                          backoff * 2))
                log.warning("revocation feed: %s; retrying in %.1f s", _describe(exc), backoff)
                self._immediate = True
                self._stop.wait(backoff)
        log.info("revocation listener stopped")

    def _setup(self) -> None:
        guard = self.guard
        try:
            guard.discover()
        except InvalidToken:
            raise _FeedError("the issuer's metadata is unavailable") from None
        url = guard.issuer.rstrip("/") + "/.well-known/ssf-configuration"
        try:
            config, _ = guard._fetch_json(url)
        except _FetchError as exc:
            raise _FeedError(str(exc)) from None
        if not isinstance(config, dict) or config.get("issuer") != guard.issuer:
            raise _FeedError(f"{url} describes another issuer")
        endpoint = config.get("configuration_endpoint")
        if not isinstance(endpoint, str):
            raise _FeedError(f"{url} has no configuration_endpoint")
        jwks_uri = config.get("jwks_uri") or guard._keys.uri
        keys = guard._keys if jwks_uri == guard._keys.uri else KeySet(
            jwks_uri, guard._fetch_json, refetch_interval=guard.jwks_refetch_interval)
        self._verifier = JWSVerifier(keys, guard.algorithms, SET_TYPES, max_length=65536)

        body = {"delivery": {"method": POLL_DELIVERY}}
        response = self._request("post", endpoint, json=body)
        if response.status_code == 409:  # our stream exists already: use it
            response = self._request("get", endpoint)
        stream = self._json(response, "stream configuration", (200, 201))
        if (stream.get("delivery") or {}).get("method") != POLL_DELIVERY:
            stream = self._json(self._request("patch", endpoint, json=body),
                                "stream update", (200,))
        poll_url = (stream.get("delivery") or {}).get("endpoint_url")
        if not isinstance(poll_url, str) or not poll_url:
            raise _FeedError("the stream has no poll endpoint_url")
        self._poll_url = poll_url
        self._immediate = True
        log.info("revocation feed: polling stream %s", stream.get("stream_id"))

    def _poll(self) -> float:
        """One poll round; returns how long to pause before the next one (0: none)."""
        body = {"maxEvents": self.MAX_EVENTS, "returnImmediately": self._immediate,
                "ack": list(self._ack)}
        if self._errors:
            body["setErrs"] = dict(self._errors)
        response = self._request("post", self._poll_url, json=body,
                                 timeout=(self.guard.http_timeout, self.guard.poll_timeout))
        if response.status_code == 404:
            self._poll_url = None
            raise _FeedError("the stream is gone (HTTP 404); creating it again")
        document = self._json(response, "poll response", (200,))
        sets = document.get("sets", {})
        if not isinstance(sets, dict):
            raise _FeedError("the poll response has no sets object")
        if self._stop.is_set():
            raise _FeedError("stopping")
        self.polls += 1
        # The acks and errors we sent were received; the feed is current as of now.
        self._ack.clear()
        self._errors.clear()
        self.guard._feed_ok_at = time.monotonic()

        retry = fresh = 0
        for jti, token in sets.items():
            outcome = self._process(jti, token)
            if outcome == _Outcome.ACK:
                self._ack.append(jti)
                fresh += 1
            elif outcome == _Outcome.RETRY:
                retry += 1
            else:
                self._errors[jti] = outcome
                if len(self._rejected) > 1000:
                    self._rejected.clear()
                seen = self._rejected.get(jti, 0)
                self._rejected[jti] = seen + 1
                fresh += seen == 0
        self.guard.prune_revocations()
        self._immediate = bool(document.get("moreAvailable"))
        if retry:
            raise _FeedError(f"{retry} event(s) could not be verified yet (keys unavailable)")
        if sets and not fresh:
            # Only events we already reported as broken: a transmitter ignoring setErrs
            # would otherwise make this a busy loop.
            repeats = max(self._rejected.get(jti, 2) for jti in sets) - 2
            return min(self.guard.backoff_max, self.guard.backoff_initial * 2 ** repeats)
        return 0.0

    def _process(self, jti: str, token) -> str | dict:
        """ACK, RETRY, or an RFC 8935 section 2.4 error object for setErrs."""
        try:
            try:
                claims = self._verifier.verify(token)
            except JWSError as exc:
                if exc.reason != "unknown_kid":
                    raise
                self._verifier.keys.refresh()  # a SET must not be lost to a stale key cache
                claims = self._verifier.verify(token)
        except KeysUnavailable:
            return _Outcome.RETRY
        except JWSError as exc:
            code = "invalid_key" if exc.reason in ("unknown_kid", "key", "signature") \
                else "invalid_request"
            return self._reject(jti, code, exc.description)
        guard = self.guard
        if claims.get("iss") != guard.issuer:
            return self._reject(jti, "invalid_issuer", "iss is not the expected issuer")
        aud = claims.get("aud")
        if aud != self.client_id and not (isinstance(aud, list) and self.client_id in aud):
            return self._reject(jti, "invalid_audience", "aud is not this receiver")
        if claims.get("jti") != jti:
            return self._reject(jti, "invalid_request", "jti does not match the SET")
        events = claims.get("events")
        if not isinstance(events, dict) or not events:
            return self._reject(jti, "invalid_request", "the SET has no events")
        event = events.get(SESSION_REVOKED)
        if event is not None:  # other events (verification, ...) need nothing but the ack
            subject = claims.get("sub_id")
            if not isinstance(subject, dict) and isinstance(event, dict):
                subject = event.get("subject")  # older CAEP drafts nest the subject
            try:
                kind = event["subject_kind"]
                value = subject["id"]
                guard.revoke(kind, value, event["event_timestamp"])
            except (KeyError, TypeError, ValueError):
                return self._reject(jti, "invalid_request",
                                    "session-revoked needs sub_id.id, subject_kind "
                                    "(grant_id or sid) and event_timestamp")
            log.info("revocation feed: %s revoked (event %s)", kind, jti)
        return _Outcome.ACK

    @staticmethod
    def _reject(jti: str, err: str, description: str) -> dict:
        log.warning("revocation feed: rejecting event %s: %s (%s)", jti, err, description)
        return {"err": err, "description": description}

    def _request(self, method: str, url: str, *, timeout=None, **kwargs):
        if self._stop.is_set():
            raise _FeedError("stopping")
        response = self._session.request(
            method, url, auth=self._auth, timeout=timeout or self.guard.http_timeout,
            headers={"Accept": "application/json"}, **kwargs)
        if response.status_code in (401, 403):
            raise _FeedError(f"{method.upper()} {url} refused the receiver credentials "
                             f"(HTTP {response.status_code})")
        return response

    @staticmethod
    def _json(response, what: str, statuses) -> dict:
        if response.status_code not in statuses:
            raise _FeedError(f"{what}: HTTP {response.status_code}")
        try:
            document = response.json()
        except ValueError:
            raise _FeedError(f"{what} is not JSON") from None
        if not isinstance(document, dict):
            raise _FeedError(f"{what} is not a JSON object")
        return document


def _describe(exc: Exception) -> str:
    if isinstance(exc, _FeedError):
        return str(exc)
    # requests' messages name the URL and the cause, never the Authorization header.
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _abortable_session(template, sockets, stopping: threading.Event):
    """A requests session whose connections register in ``sockets``, so another thread can
    shut them down (and that refuses to connect once ``stopping`` is set); its settings
    (verify, cert, proxies, trust_env) are copied from ``template``."""
    requests = _requests()
    from requests.adapters import HTTPAdapter
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def tracking(pool_class):
        class Connection(pool_class.ConnectionCls):
            def connect(self):
                super().connect()
                sockets.add(self)
                if stopping.is_set():  # stop() ran while this one was connecting
                    self.sock.shutdown(socket.SHUT_RDWR)

        return type(pool_class.__name__, (pool_class,), {"ConnectionCls": Connection})

    pools = {"http": tracking(HTTPConnectionPool), "https": tracking(HTTPSConnectionPool)}

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

    session = requests.Session()
    for name in ("verify", "cert", "proxies", "trust_env"):
        if hasattr(template, name):
            setattr(session, name, getattr(template, name))
    adapter = Adapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
