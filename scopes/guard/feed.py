"""The feed receiver: an SSF receiver of the bridge's revocation feed (RFC 8936 poll delivery).

One daemon thread finds the transmitter (``/.well-known/ssf-configuration``), creates or
reuses its stream with poll delivery, then long-polls for Security Event Tokens (RFC 8417),
verifies each against the issuer's keys (``typ: secevent+jwt``, ``iss``, ``aud`` = this
receiver, ``jti``), applies CAEP ``session-revoked`` events to the
:class:`~scopes.guard.revocation.RevocationSet` and acknowledges them; broken events are
reported in ``setErrs`` (RFC 8936 section 2.4). Failures back off exponentially; the loop
survives anything. Every successful poll is reported through ``on_poll``, which is how the
guard knows the feed is healthy (docs/revocation-feed.md).

A Stream Updated event (SSF 1.0 section 8.1.5) saying the transmitter paused or disabled the
stream makes the feed not current: polls are no longer reported through ``on_poll`` (so the
guard falls back to introspection once the feed is stale) until one says it is enabled again.
When the listener accepts ES256 and the transmitter offers it, it asks for ES256-signed SETs
(the transmitter's ``set_signing_alg``; a stream of ours found with another algorithm is
updated): an ES256 signature costs the transmitter about a tenth of an RS256 one (40 against
440 µs), which it pays for every receiver at each revocation, while verifying it costs a
receiver about 80 µs more. Otherwise it takes the transmitter's default (RS256, CAEP
interoperability profile).

:meth:`RevocationListener.stop` cuts a long poll in flight short by shutting its socket down:
the listener uses a ``requests`` session of its own whose connections it tracks.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import weakref

from ._http import FetchError, load_requests
from .discovery import DiscoveryUnavailable, IssuerDiscovery, KeysUnavailable
from .jws import JWSError, JWSVerifier
from .revocation import RevocationSet

__all__ = ["POLL_DELIVERY", "SESSION_REVOKED", "SET_TYPES", "STREAM_UPDATED",
           "RevocationListener"]

log = logging.getLogger("scopes.guard")

SET_TYPES = ("secevent+jwt", "application/secevent+jwt")  # RFC 8417 section 2.3
POLL_DELIVERY = "urn:ietf:rfc:8936"
SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
STREAM_UPDATED = "https://schemas.openid.net/secevent/ssf/event-type/stream-updated"


class _FeedError(Exception):
    pass


class _Outcome:
    ACK = "ack"
    RETRY = "retry"


class RevocationListener:
    """One daemon thread: create or find the stream, then long-poll, verify, apply, ack."""

    MAX_EVENTS = 100
    #: Seconds the listener sleeps after applying revocations, before its next poll.
    YIELD_AFTER_REVOCATION = 0.0005

    def __init__(self, discovery: IssuerDiscovery, revocations: RevocationSet, *,
                 client_id: str, client_secret: str, algorithms, on_poll,
                 http_timeout: float, poll_timeout: float, backoff_initial: float,
                 backoff_max: float):
        self.discovery = discovery
        self.revocations = revocations
        self.issuer = discovery.issuer
        self.client_id = client_id
        self.algorithms = tuple(algorithms)
        self._on_poll = on_poll  # called after every successful poll: the feed is current
        self.http_timeout = http_timeout
        self.poll_timeout = poll_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._auth = (client_id, client_secret)
        self._stop = threading.Event()
        self._sockets = weakref.WeakSet()
        self._session = _abortable_session(discovery.http, self._sockets, self._stop)
        self._thread = threading.Thread(target=self._run, name="scopes-guard-revocation-feed",
                                        daemon=True)
        self._poll_url: str | None = None
        self._verifier: JWSVerifier | None = None
        self._ack: list[str] = []
        self._errors: dict[str, dict] = {}
        self._rejected: dict[str, int] = {}  # jti -> times reported in setErrs
        self._immediate = True
        self._stream_id: str | None = None
        #: The transmitter paused or disabled our stream (a Stream Updated event said so).
        self.stream_stopped = False
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
                backoff = min(self.backoff_max, max(self.backoff_initial, backoff * 2))
                log.warning("revocation feed: %s; retrying in %.1f s", _describe(exc), backoff)
                self._immediate = True
                self._stop.wait(backoff)
        log.info("revocation listener stopped")

    def _setup(self) -> None:
        discovery = self.discovery
        try:
            discovery.load()
        except DiscoveryUnavailable:
            raise _FeedError("the issuer's metadata is unavailable") from None
        url = self.issuer.rstrip("/") + "/.well-known/ssf-configuration"
        try:
            config, _ = discovery.fetch(url)
        except FetchError as exc:
            raise _FeedError(str(exc)) from None
        if not isinstance(config, dict) or config.get("issuer") != self.issuer:
            raise _FeedError(f"{url} describes another issuer")
        endpoint = config.get("configuration_endpoint")
        if not isinstance(endpoint, str):
            raise _FeedError(f"{url} has no configuration_endpoint")
        keys = discovery.key_set(config.get("jwks_uri") or None)
        self._verifier = JWSVerifier(keys, self.algorithms, SET_TYPES, max_length=65536)
        try:
            # Fetched now, not when the first revocation arrives: that one is verified at
            # once instead of after a round trip for the keys.
            keys.refresh()
        except KeysUnavailable as exc:  # the first SET fetches them (and reports failure)
            log.warning("revocation feed: keys not fetched yet: %s", exc)

        body = {"delivery": {"method": POLL_DELIVERY}}
        offered = config.get("set_signing_alg_values_supported")
        if "ES256" in self.algorithms and isinstance(offered, list) and "ES256" in offered:
            body["set_signing_alg"] = "ES256"
        response = self._request("post", endpoint, json=body)
        if response.status_code == 409:  # our stream exists already: use it
            response = self._request("get", endpoint)
        stream = self._json(response, "stream configuration", (200, 201))
        wanted = body.get("set_signing_alg")
        if (stream.get("delivery") or {}).get("method") != POLL_DELIVERY or \
                stream.get("set_signing_alg", wanted) != wanted:
            stream = self._json(self._request("patch", endpoint, json=body),
                                "stream update", (200,))
        poll_url = (stream.get("delivery") or {}).get("endpoint_url")
        if not isinstance(poll_url, str) or not poll_url:
            raise _FeedError("the stream has no poll endpoint_url")
        self._poll_url = poll_url
        self._stream_id = stream.get("stream_id")
        self.stream_stopped = False
        self._immediate = True
        log.info("revocation feed: polling stream %s", stream.get("stream_id"))

    def _poll(self) -> float:
        """One poll round; returns how long to pause before the next one (0: none)."""
        body = {"maxEvents": self.MAX_EVENTS, "returnImmediately": self._immediate,
                "ack": list(self._ack)}
        if self._errors:
            body["setErrs"] = dict(self._errors)
        response = self._request("post", self._poll_url, json=body,
                                 timeout=(self.http_timeout, self.poll_timeout))
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
        # The acks and errors we sent were received.
        self._ack.clear()
        self._errors.clear()

        retry = fresh = 0
        revoked = len(self.revocations)
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
        if len(self.revocations) != revoked:
            # The application's threads refuse the revoked tokens from now on; let them run
            # before this thread builds its next poll (it held the interpreter for another
            # millisecond or more, the threads validating waiting for it).
            _let_others_run(self.YIELD_AFTER_REVOCATION)
        self.revocations.prune()
        if not self.stream_stopped:
            self._on_poll()  # the feed is current as of now
        # RFC 8936 2.3: moreAvailable is sent only when true (absent: false).
        self._immediate = document.get("moreAvailable") is True
        if retry:
            raise _FeedError(f"{retry} event(s) could not be verified yet (keys unavailable)")
        if sets and not fresh:
            # Only events we already reported as broken: a transmitter ignoring setErrs
            # would otherwise make this a busy loop.
            repeats = max(self._rejected.get(jti, 2) for jti in sets) - 2
            return min(self.backoff_max, self.backoff_initial * 2 ** repeats)
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
        if claims.get("iss") != self.issuer:
            return self._reject(jti, "invalid_issuer", "iss is not the expected issuer")
        aud = claims.get("aud")
        if aud != self.client_id and not (isinstance(aud, list) and self.client_id in aud):
            return self._reject(jti, "invalid_audience", "aud is not this receiver")
        if claims.get("jti") != jti:
            return self._reject(jti, "invalid_request", "jti does not match the SET")
        events = claims.get("events")
        if not isinstance(events, dict) or not events:
            return self._reject(jti, "invalid_request", "the SET has no events")
        update = events.get(STREAM_UPDATED)
        if isinstance(update, dict) and (claims.get("sub_id") or {}).get("id") == \
                self._stream_id:
            stopped = update.get("status") != "enabled"
            if stopped != self.stream_stopped:
                log.warning("revocation feed: the transmitter set the stream %s (%s)",
                            str(update.get("status"))[:20], str(update.get("reason"))[:200])
            self.stream_stopped = stopped
        event = events.get(SESSION_REVOKED)
        if event is not None:  # other events (verification, ...) need nothing but the ack
            subject = claims.get("sub_id")
            if not isinstance(subject, dict) and isinstance(event, dict):
                subject = event.get("subject")  # older CAEP drafts nest the subject
            try:
                kind = event["subject_kind"]
                value = subject["id"]
                # event_timestamp is optional in CAEP: without it the entry is kept as long
                # as a token issued now could live (fail closed); a malformed one is refused.
                self.revocations.revoke(kind, value, event.get("event_timestamp"))
            except (KeyError, TypeError, ValueError, AttributeError):
                return self._reject(jti, "invalid_request",
                                    "session-revoked needs sub_id.id, subject_kind "
                                    "(grant_id or sid) and, if it has one, an event_timestamp "
                                    "that is a finite number")
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
            method, url, auth=self._auth, timeout=timeout or self.http_timeout,
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


def _let_others_run(seconds: float) -> None:
    time.sleep(seconds)  # releases the interpreter to the threads waiting for it


def _describe(exc: Exception) -> str:
    if isinstance(exc, _FeedError):
        return str(exc)
    # requests' messages name the URL and the cause, never the Authorization header.
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _abortable_session(template, sockets, stopping: threading.Event):
    """A requests session whose connections register in ``sockets``, so another thread can
    shut them down (and that refuses to connect once ``stopping`` is set); its settings
    (verify, cert, proxies, trust_env) are copied from ``template``."""
    requests = load_requests()
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
