"""Validation: :class:`TokenGuard`, local checks of idp-bridge access tokens (RFC 9068).

:meth:`TokenGuard.validate` checks the signature against the issuer's JWKS (found by RFC 8414
discovery, :mod:`~scopes.guard.discovery`), ``iss``, ``aud``, ``exp``/``nbf``/``iat``, the
revocation set (:mod:`~scopes.guard.revocation`), the ``tenant`` and the ``scope``
(DESIGN.md sections 4 and 5); refusals are the RFC 6750 errors of :mod:`~scopes.guard.bearer`.
The guard composes the other parts of the package: the revocation feed receiver
(:mod:`~scopes.guard.feed`), the introspection fallback (:mod:`~scopes.guard.introspection`)
and, for Flask views, :mod:`~scopes.guard.flask_adapter` (imported only by :meth:`require`
and :meth:`error_response`).

Feed health and failing closed: once :meth:`TokenGuard.start_revocation_listener` has been
called, a token is accepted only while the feed is healthy (its last successful poll is at most
``feed_staleness`` seconds old), or, with ``introspection_fallback=True``, while the bridge's
introspection endpoint says it is active. This stays so after
:meth:`~TokenGuard.stop_revocation_listener`: a guard that was told revocation matters does not
silently stop caring. A resource server that never starts the listener validates offline
only and accepts revoked tokens until they expire (at most ``max_token_lifetime``); that is
its choice to make, the guard does not consult the feed then.

:meth:`TokenGuard.validate` is the hot path of every resource-server request: its checks are
written out in one function, cheapest first, reading the verifier, the revocation tables and
the feed state directly (bench/bench_guard.py holds it to the raw ES256 verify rate).

DPoP (RFC 9449 section 7): :meth:`TokenGuard.validate_request` takes the whole request (the
``Authorization`` scheme and token, the ``DPoP`` header values, method and path): a token
bound to a key (``cnf.jkt``) is accepted only with ``Authorization: DPoP`` and one proof of
that key for this method and URL (``dpop_url`` + path: the resource server's configured
external URL, never the ``Host`` header) naming this token (``ath``), not seen before (a
bounded in-memory replay cache shared by the process's threads), with the resource server's
nonce when ``dpop_nonce_secret`` is set; a bound token sent as Bearer is refused
(``invalid_token``), and with ``dpop_required`` so is every unbound token.
bench/bench_dpop.py holds it to two raw ES256 verifies.
"""

from __future__ import annotations

import threading
import time

from urllib.parse import quote

from ._http import load_requests
from .access_log import ADVISOR_MEMBERSHIPS, AccessRecorder
from .bearer import (GuardError, InsufficientScope, InvalidDPoPProof, InvalidToken, UseDPoPNonce,
                     challenge)
from .dpop import (SUPPORTED_DPOP_ALGORITHMS, DPoPError, DPoPNonceRequired, NonceSource,
                   ProofVerifier, ReplayCache, normalize_htu)
from .discovery import DiscoveryUnavailable, IssuerDiscovery, KeysUnavailable
from .feed import RevocationListener
from .introspection import Introspector
from .jws import SUPPORTED_ALGORITHMS, JWSError, JWSVerifier
from .revocation import RevocationSet
from ..catalog import ALL_SCOPES, UnknownScope, implied_scopes, validate_scopes

__all__ = ["ACCESS_TOKEN_TYPES", "TokenGuard"]

ACCESS_TOKEN_TYPES = ("at+jwt", "application/at+jwt")  # RFC 9068 section 4

_NUMBER = (int, float)


class TokenGuard:
    """Validates idp-bridge access tokens for one resource server (audience).

    ``max_token_lifetime`` must be at least the bridge's access-token lifetime: a token living
    longer is refused (it could outlive its revocation entry, which is kept
    ``event_timestamp + max_token_lifetime + 2 * leeway``: :mod:`~scopes.guard.revocation`).
    ``feed_staleness`` bounds how old the last successful poll of the revocation feed may be
    before validation fails closed (or introspects, with ``introspection_fallback``); the
    bridge's long poll is always shorter.

    ``http`` is a ``requests.Session``-like object used for discovery, JWKS and introspection
    (default: a new ``requests.Session``). Nothing is fetched before the first validation or
    :meth:`discover`. The revocation listener always uses a session of its own, so that
    :meth:`stop_revocation_listener` can cut its long poll short.

    ``resource_metadata`` (a :class:`~scopes.guard.resource_metadata.ResourceMetadata`)
    makes every challenge name the resource's RFC 9728 metadata (``resource_metadata``).

    DPoP (RFC 9449, :meth:`validate_request`): ``dpop_url`` is the resource server's external
    base URL (proofs' ``htu`` is it plus the request path); without it DPoP-bound tokens are
    refused. ``dpop_algorithms`` are the accepted proof algorithms (asymmetric only),
    ``dpop_max_age`` / ``dpop_leeway`` how old / how far ahead a proof's ``iat`` may be,
    ``dpop_replay_capacity`` how many proof ids the replay cache holds at most,
    ``dpop_nonce_secret`` (bytes, shared by the resource server's processes) turns on
    resource-server nonces, and ``dpop_required`` refuses tokens that are not DPoP-bound.
    """

    def __init__(self, issuer: str, audience: str, *, algorithms=("ES256", "RS256"),
                 leeway: float = 30, max_token_lifetime: float = 300,
                 feed_staleness: float = 30.0, introspection_fallback: bool = False,
                 introspection_cache_seconds: float = 5.0, http=None,
                 jwks_refetch_interval: float = 5.0, realm: str | None = None,
                 max_token_length: int = 8192, http_timeout: float = 5.0,
                 poll_timeout: float = 35.0, backoff_initial: float = 0.2,
                 backoff_max: float = 5.0, resource_metadata=None,
                 dpop_url: str | None = None,
                 dpop_algorithms=("ES256", "PS256", "RS256", "EdDSA", "ES384"),
                 dpop_max_age: float = 60.0, dpop_leeway: float = 10.0,
                 dpop_replay_capacity: int = 100_000, dpop_nonce_secret: bytes | None = None,
                 dpop_nonce_lifetime: float = 300.0, dpop_required: bool = False):
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
            if not isinstance(value, _NUMBER) or not value >= 0:  # refuses NaN too
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
        self.resource_metadata = resource_metadata
        self._configure_dpop(dpop_url, dpop_algorithms, dpop_max_age, dpop_leeway,
                             dpop_replay_capacity, dpop_nonce_secret, dpop_nonce_lifetime,
                             dpop_required)
        if http is None:
            http = load_requests().Session()
        self.http = http

        self.discovery = IssuerDiscovery(issuer, http, timeout=http_timeout,
                                         refetch_interval=jwks_refetch_interval)
        self._verifier: JWSVerifier | None = None
        self._verifier_lock = threading.Lock()

        # scope string -> ((required scope, (padded scopes that satisfy it)), ...)
        satisfying: dict[str, set[str]] = {}
        for granted in ALL_SCOPES:
            for covered in implied_scopes([granted]):
                satisfying.setdefault(covered, set()).add(granted)
        self._satisfying = {s: frozenset(v) for s, v in satisfying.items()}
        self._scope_checks: dict[str, tuple] = {}

        # An entry matters as long as a token it revokes can still be accepted: until its
        # exp + leeway, plus a leeway of margin (scopes/guard/revocation.py says why).
        self.revocations = RevocationSet(max_token_lifetime + 2 * leeway)
        self.introspection = Introspector(http, self._introspection_endpoint,
                                          timeout=http_timeout,
                                          cache_seconds=introspection_cache_seconds)

        self._listener: RevocationListener | None = None
        self._feed_required = False  # set for good by start_revocation_listener
        self._feed_ok_at = float("-inf")  # time.monotonic() of the last successful poll
        self.access_recorder: AccessRecorder | None = None  # start_access_recording
        self._recorded_scopes: dict[str, tuple[str, str]] = {}  # scope -> (area, action)

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
        revoked = self.revocations
        if grant_id in revoked.grants or sid in revoked.sids:
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
            self.introspection.validate(token)
        return claims

    def validate_request(self, scheme: str, token, dpop=None, *, method: str, path: str,
                         tenant, scope) -> dict:
        """The claims of the request's token (``scheme`` ``Bearer`` or ``DPoP``, from
        :func:`~scopes.guard.bearer.authorization_credentials`) if it may be used for
        ``scope`` on ``tenant`` by this request: :meth:`validate`, then the DPoP rules of
        the module docstring for the ``DPoP`` header values ``dpop`` (a list), the HTTP
        ``method`` and ``path`` (as routed: decoded, without query). Raises
        :class:`InvalidToken`, :class:`InsufficientScope`, :class:`InvalidDPoPProof` or
        :class:`UseDPoPNonce`; each error's ``scheme`` says which challenge carries it."""
        try:
            claims = self.validate(token, tenant=tenant, scope=scope)
            cnf = claims.get("cnf")
            jkt = cnf.get("jkt") if type(cnf) is dict else None
            if scheme != "DPoP":
                if cnf is not None:
                    raise InvalidToken("this token is bound to a DPoP key: send it as "
                                       "'Authorization: DPoP' with a DPoP proof")
                if self.dpop_required:
                    raise InvalidToken("this resource server accepts only DPoP-bound tokens")
                return claims
            if type(jkt) is not str:
                raise InvalidToken("the DPoP scheme needs a DPoP-bound token (cnf.jkt)")
            verifier = self._dpop
            if verifier is None:
                raise InvalidDPoPProof("this resource server is not configured for DPoP")
            url = self._dpop_urls.get(path)
            if url is None:  # the expected htu: the configured URL, never the Host header
                url = self._dpop_base + quote(path, safe="/:@!$&'()*+,;=-._~%")
                if len(self._dpop_urls) >= 1024:  # bounded: paths vary by tenant
                    self._dpop_urls.clear()
                self._dpop_urls[path] = url
            try:
                proof = verifier.verify(dpop, method=method, url=url, access_token=token)
            except DPoPNonceRequired as exc:
                raise UseDPoPNonce(exc.description, exc.nonce) from None
            except DPoPError as exc:
                raise InvalidDPoPProof(exc.description) from None
            if proof.jkt != jkt:
                raise InvalidDPoPProof("the DPoP proof is signed by another key than the one "
                                       "the token is bound to")
            return claims
        except GuardError as exc:
            if scheme == "DPoP":
                exc.scheme = "DPoP"
            raise

    def challenges(self, error: GuardError | None = None,
                   resource: str | None = None) -> list[str]:
        """The ``WWW-Authenticate`` values for ``error``: the Bearer challenge and, when the
        guard accepts DPoP, the ``DPoP`` one with ``algs`` (RFC 9449 section 7.1); the error
        goes in the challenge of the scheme the request used (``error.scheme``), the other
        stays bare."""
        if self._dpop is None:
            return [self.challenge(error, resource)]
        metadata = self.resource_metadata
        url = metadata.url(resource) if metadata else None
        dpop_error = error is not None and getattr(error, "scheme", "Bearer") == "DPoP"
        bearer = challenge(self.realm, None if dpop_error else error, resource_metadata=url)
        dpop = challenge(self.realm, error if dpop_error else None, resource_metadata=url,
                         scheme="DPoP", algs=self.dpop_algorithms)
        return [bearer, dpop]

    def discover(self) -> dict:
        """Fetch the issuer's metadata now (optional warm-up); raises :class:`InvalidToken`."""
        self._verifier or self._bootstrap()
        return self.discovery.metadata

    @property
    def metadata(self) -> dict | None:
        """The issuer's metadata, once discovered."""
        return self.discovery.metadata

    def require(self, scope: str, tenant_arg: str = "tenant", *, acr_values=None,
                max_age: int | None = None):
        """Flask view decorator: a Bearer token valid for ``scope`` on the view's tenant,
        and with ``acr_values``/``max_age`` an authentication of one of those kinds, at most
        that many seconds ago (RFC 9470; :func:`scopes.guard.flask_adapter.require`)."""
        from .flask_adapter import require

        return require(self, scope, tenant_arg, acr_values=acr_values, max_age=max_age)

    def error_response(self, error: GuardError | None):
        """A Flask response for ``error`` (:func:`scopes.guard.flask_adapter.error_response`);
        ``None`` means no credentials were sent."""
        from .flask_adapter import error_response

        return error_response(self, error)

    def challenge(self, error: GuardError | None = None, resource: str | None = None) -> str:
        """The ``WWW-Authenticate`` value for ``error`` (RFC 6750 section 3); with
        ``resource_metadata`` configured it names the RFC 9728 metadata of ``resource`` (the
        URL the client requested; default: the configured resource identifier)."""
        metadata = self.resource_metadata
        return challenge(self.realm, error,
                         resource_metadata=metadata.url(resource) if metadata else None)

    # --- revocation (scopes.guard.revocation) ---
    def revoke(self, kind: str, value: str, event_timestamp: float | None = None) -> bool:
        """Reject tokens whose ``kind`` claim (``grant_id`` or ``sid``) is ``value``.

        Kept until ``event_timestamp + max_token_lifetime + 2 * leeway`` (``event_timestamp``
        None: unknown, taken as now): any token it revokes has expired by then. Returns
        False when that moment has already passed.
        """
        return self.revocations.revoke(kind, value, event_timestamp)

    def is_revoked(self, kind: str, value: str) -> bool:
        return self.revocations.is_revoked(kind, value)

    def prune_revocations(self, now: float | None = None) -> int:
        """Forget entries whose tokens have all expired (cheap: only the entries that leave
        are touched; revoke and the feed do it by themselves). Returns how many left."""
        return self.revocations.prune(now)

    @property
    def revocation_count(self) -> int:
        return len(self.revocations)

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
        self.introspection.credentials = (client_id, client_secret)
        self._feed_ok_at = float("-inf")
        self._feed_required = True
        self._listener = RevocationListener(
            self.discovery, self.revocations, client_id=client_id,
            client_secret=client_secret, algorithms=self.algorithms, on_poll=self._feed_polled,
            http_timeout=self.http_timeout, poll_timeout=self.poll_timeout,
            backoff_initial=self.backoff_initial, backoff_max=self.backoff_max)
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

    # --- access records (scopes.guard.access_log) ---
    def start_access_recording(self, client_id: str, client_secret: str, spool_dir, *,
                               max_spool_bytes: int, when_full=None, **options) -> None:
        """Record every request authorised with an advisor or guest token (claim
        ``membership``) and ship the records to ``<issuer>/access-records`` with the receiver
        client's credentials (:class:`~scopes.guard.access_log.AccessRecorder`; ``options``
        go to it). ``spool_dir`` holds one spool per process, at most ``max_spool_bytes``
        unshipped; ``when_full`` (``"refuse"``, ``"drop_oldest"`` or a mapping of ``read`` and
        ``write`` to them; default: refuse writes, drop the oldest for reads) decides what a
        full spool does. :meth:`require` records by itself; other frameworks call
        :meth:`check_access_recording` before and :meth:`record_access` after the view."""
        if self.access_recorder is not None and self.access_recorder.alive:
            raise RuntimeError("access recording is already running")
        recorder = AccessRecorder(
            self.issuer.rstrip("/") + "/access-records", client_id, client_secret, spool_dir,
            max_spool_bytes=max_spool_bytes, when_full=when_full,
            http_timeout=options.pop("http_timeout", self.http_timeout),
            backoff_initial=options.pop("backoff_initial", self.backoff_initial), **options)
        recorder.start()
        self.access_recorder = recorder

    def stop_access_recording(self, timeout: float = 5.0) -> None:
        """Spool what is queued and stop; what is not shipped yet waits in ``spool_dir`` for
        the next :meth:`start_access_recording` (of this or another process)."""
        recorder, self.access_recorder = self.access_recorder, None
        if recorder is not None:
            recorder.stop(timeout)

    def check_access_recording(self, claims: dict, scope: str) -> None:
        """Raise :class:`~scopes.guard.access_log.RecordingUnavailable` (503) when the
        request of an advisor token for ``scope`` must be refused: the spool is full and
        ``when_full`` is ``"refuse"`` for its action. Memory only."""
        recorder = self.access_recorder
        # Memory only, and cheapest first: most of the time the spool is not full.
        if recorder is not None and recorder.refusing and \
                claims.get("membership") in ADVISOR_MEMBERSHIPS:
            recorder.check(self._recorded_scope(scope)[1])

    def record_access(self, claims: dict, scope: str, *, method: str, route: str,
                      status: int) -> bool:
        """Enqueue the record of a request authorised with ``claims`` for ``scope`` (only
        advisor and guest tokens are recorded; False otherwise or when the queue is full).
        ``route`` is the route *template* (``/tenants/<tenant>/ebics``), never the raw path
        or query. Memory only: no disk, no network."""
        recorder = self.access_recorder
        if recorder is None or claims.get("membership") not in ADVISOR_MEMBERSHIPS:
            return False
        found = self._recorded_scopes.get(scope)
        if found is None:
            found = self._recorded_scope(scope)
        return recorder.record(claims, found[0], found[1], method, route, status)

    def _recorded_scope(self, scope: str) -> tuple[str, str]:
        """(area, action) a record names for ``scope``: its first write scope, else its
        first scope (one record per request, however many scopes it needs)."""
        found = self._recorded_scopes.get(scope)
        if found is None:
            parts = [s.split(":", 1) for s in validate_scopes(s for s in scope.split(" ") if s)]
            area, action = next((p for p in parts if p[1] == "write"), parts[0])
            found = self._recorded_scopes[scope] = (area, action)
        return found

    # --- internals ---
    def _configure_dpop(self, url, algorithms, max_age, leeway, capacity, nonce_secret,
                        nonce_lifetime, required) -> None:
        algorithms = tuple(algorithms)
        unsupported = [a for a in algorithms if a not in SUPPORTED_DPOP_ALGORITHMS]
        if not algorithms or unsupported:
            raise ValueError(f"dpop_algorithms must be a non-empty subset of "
                             f"{sorted(SUPPORTED_DPOP_ALGORITHMS)}; got {list(algorithms)}")
        self.dpop_algorithms = algorithms
        self.dpop_required = bool(required)
        self._dpop = None
        self._dpop_base = ""
        self._dpop_urls: dict[str, str] = {}
        if url is None:
            if required or nonce_secret is not None:
                raise ValueError("dpop_required and dpop_nonce_secret need dpop_url")
            return
        base = normalize_htu(url)
        if base is None:
            raise ValueError("dpop_url must be an absolute http(s) URL")
        self._dpop_base = base.rstrip("/")
        for name, value in (("dpop_max_age", max_age), ("dpop_leeway", leeway)):
            if not isinstance(value, _NUMBER) or not value >= 0:  # refuses NaN too
                raise ValueError(f"{name} must be a number >= 0")
        nonces = NonceSource(nonce_secret, nonce_lifetime, label=b"dpop rs nonce") \
            if nonce_secret is not None else None
        self._dpop = ProofVerifier(algorithms, replay=ReplayCache(max_age + leeway, capacity),
                                   max_age=max_age, leeway=leeway, nonces=nonces,
                                   nonce_required=nonces is not None)

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

    def _feed_polled(self) -> None:
        self._feed_ok_at = time.monotonic()

    def _bootstrap(self) -> JWSVerifier:
        try:
            keys = self.discovery.load()
        except DiscoveryUnavailable:
            raise InvalidToken("the issuer's metadata is unavailable") from None
        with self._verifier_lock:
            if self._verifier is None:
                self._verifier = JWSVerifier(keys, self.algorithms, ACCESS_TOKEN_TYPES,
                                             max_length=self.max_token_length)
            return self._verifier

    def _introspection_endpoint(self) -> str | None:
        return (self.discovery.metadata or {}).get("introspection_endpoint")


def _tenant_string(tenant) -> str:
    if isinstance(tenant, int) and not isinstance(tenant, bool):
        return str(tenant)
    raise TypeError("tenant must be a string (a tenant id)")
