"""scopes.guard's revocation listener: an SSF receiver polling for session-revoked SETs
(docs/revocation-feed.md; RFC 8417, RFC 8936, CAEP 1.0).

A fake transmitter on loopback implements the feed contract minimally (stream creation, long
poll with acknowledgements and setErrs, introspection), with keys made at test time. Waits are
bounded polls with generous timeouts; nothing depends on a sleep being long enough.
"""

from __future__ import annotations

import base64
import threading
import time
import uuid

import pytest
from flask import jsonify, request
from joserfc.jwk import ECKey

from conftest import wait_until
from test_guard import AUDIENCE, TENANT, FakeIssuer, b64, loopback, sign_compact  # noqa: F401
from scopes.guard import SESSION_REVOKED, InvalidToken, TokenGuard

CLIENT_ID = "rs-1"
SECRET = "rs-1-secret"
VERIFICATION = "https://schemas.openid.net/secevent/ssf/event-type/verification"


def rejects(guard, token, match: str):
    def check():
        try:
            guard.validate(token, tenant=TENANT, scope="tenant:read")
        except InvalidToken as exc:
            return match in exc.description
        return False
    return check


def accepts(guard, token):
    def check():
        try:
            return bool(guard.validate(token, tenant=TENANT, scope="tenant:read"))
        except InvalidToken:
            return False
    return check


class FakeTransmitter(FakeIssuer):
    """The bridge's feed as docs/revocation-feed.md describes it, minus storage."""

    POLL = "urn:ietf:rfc:8936"

    def __init__(self):
        super().__init__()
        self.long_poll = 10.0
        self.pending: dict[str, str] = {}
        self.acked: list[str] = []
        self.set_errs: dict[str, dict] = {}
        self.poll_bodies: list[dict] = []
        self.stream_requests: list[tuple[str, dict | None]] = []
        self.stream: dict | None = None
        self.down = False  # every SSF endpoint answers 503
        self.ignore_set_errs = False  # a transmitter that redelivers what was reported
        self.unauthorized = 0
        self.fail_polls = 0  # the next n polls answer 500
        self.waiting = 0
        self.closing = False
        self.active: dict[str, bool] = {}
        self.introspection_down = False
        self.introspections: list[tuple[str, str]] = []
        self.ssf_jwks_path = "/jwks"  # the feed's keys: the issuer's, or at /ssf/jwks
        self.signing_algs = None  # set_signing_alg_values_supported, when offered
        self.cond = threading.Condition()
        app = self.app
        app.add_url_rule("/ssf/jwks", endpoint="ssf_jwks", view_func=self._ssf_jwks)
        app.add_url_rule("/.well-known/ssf-configuration", view_func=self._ssf_configuration)
        app.add_url_rule("/ssf/stream", view_func=self._stream,
                         methods=["GET", "POST", "PATCH"])
        app.add_url_rule("/ssf/poll/<stream_id>", view_func=self._poll, methods=["POST"])
        app.add_url_rule("/introspect", view_func=self._introspect, methods=["POST"])

    def metadata(self) -> dict:
        return {**super().metadata(), "introspection_endpoint": f"{self.issuer}/introspect"}

    # --- endpoints ---
    def _well_known(self, name):
        if name == "ssf-configuration":
            return self._ssf_configuration()
        return super()._well_known(name)

    def _ssf_configuration(self):
        if self.down:
            return jsonify({"error": "unavailable"}), 503
        return jsonify({
            "spec_version": "1_0", "issuer": self.issuer,
            "jwks_uri": f"{self.issuer}{self.ssf_jwks_path}",
            "delivery_methods_supported": [self.POLL, "urn:ietf:rfc:8935"],
            "configuration_endpoint": f"{self.issuer}/ssf/stream",
            "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:7617"}],
            "default_subjects": "ALL",
            **({"set_signing_alg_values_supported": self.signing_algs}
               if self.signing_algs is not None else {})})

    def _ssf_jwks(self):
        self.hits["ssf_jwks"] += 1
        return self._jwks()

    def _authenticated(self):
        auth = request.authorization
        if auth is not None and (auth.username, auth.password) == (CLIENT_ID, SECRET):
            return True
        self.unauthorized += 1
        return False

    def _stream(self):
        if self.down:
            return jsonify({"error": "unavailable"}), 503
        if not self._authenticated():
            return jsonify({"error": "invalid_client"}), 401
        body = request.get_json(silent=True)
        self.stream_requests.append((request.method, body))
        if request.method == "POST":
            if self.stream is not None:
                return jsonify({"error": "conflict"}), 409
            self.stream = self._stream_config(body["delivery"]["method"],
                                              alg=body.get("set_signing_alg"))
            return jsonify(self.stream), 201
        if self.stream is None:
            return jsonify({"error": "not_found"}), 404
        if request.method == "PATCH":
            self.stream = self._stream_config(body["delivery"]["method"],
                                              self.stream["stream_id"],
                                              alg=body.get("set_signing_alg",
                                                           self.stream.get("set_signing_alg")))
        return jsonify(self.stream)

    def _stream_config(self, method, stream_id=None, alg=None) -> dict:
        stream_id = stream_id or uuid.uuid4().hex
        url = f"{self.issuer}/ssf/poll/{stream_id}" if method == self.POLL \
            else "https://rs.example/events"
        return {"stream_id": stream_id, "iss": self.issuer, "aud": CLIENT_ID,
                "delivery": {"method": method, "endpoint_url": url},
                "events_supported": [SESSION_REVOKED, VERIFICATION],
                "events_requested": [SESSION_REVOKED], "events_delivered": [SESSION_REVOKED],
                "min_verification_interval": 0,
                **({"set_signing_alg": alg} if alg is not None else {})}

    def _poll(self, stream_id):
        if self.down:
            return jsonify({"error": "unavailable"}), 503
        if not self._authenticated():
            return jsonify({"error": "invalid_client"}), 401
        if self.stream is None or stream_id != self.stream["stream_id"]:
            return jsonify({"error": "not_found"}), 404
        if self.fail_polls:
            self.fail_polls -= 1
            return jsonify({"error": "server_error"}), 500
        body = request.get_json()
        body["received_at"] = time.monotonic()
        with self.cond:
            self.poll_bodies.append(body)
            for jti in body.get("ack", []):
                self.pending.pop(jti, None)
                self.acked.append(jti)
            for jti, error in body.get("setErrs", {}).items():
                if not self.ignore_set_errs:
                    self.pending.pop(jti, None)
                self.set_errs[jti] = error
            if not body.get("returnImmediately") and not self.pending:
                self.waiting += 1
                self.cond.wait_for(lambda: self.pending or self.closing, timeout=self.long_poll)
                self.waiting -= 1
            sets = dict(list(self.pending.items())[:body.get("maxEvents", 100)])
        return jsonify({"sets": sets, "moreAvailable": False})

    def _introspect(self):
        if self.introspection_down:
            return jsonify({"error": "unavailable"}), 503
        auth = request.authorization
        self.introspections.append((auth.username if auth else None, request.form["token"]))
        if not self._authenticated():
            return jsonify({"error": "invalid_client"}), 401
        return jsonify({"active": self.active.get(request.form["token"], False)})

    # --- events ---
    def publish(self, token: str, jti: str) -> None:
        with self.cond:
            self.pending[jti] = token
            self.cond.notify_all()

    def release(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify_all()

    def revocation_set(self, kind: str, value: str, *, jti=None, kid="k1", header=None,
                       event_changes=None, **changes) -> tuple[str, str]:
        jti = jti or f"rev-{uuid.uuid4().hex[:8]}"
        now = int(time.time())
        event = {"event_timestamp": now, "initiating_entity": "admin",
                 "reason_admin": {"en": "removed_by_tenant"}, "subject_kind": kind,
                 "tenant": TENANT, **(event_changes or {})}
        claims = {"iss": self.issuer, "aud": CLIENT_ID, "jti": jti, "iat": now,
                  "sub_id": {"format": "opaque", "id": value},
                  "events": {SESSION_REVOKED: event}, **changes}
        header = {"alg": "ES256", "kid": kid, "typ": "secevent+jwt", **(header or {})}
        return sign_compact(header, claims, self.keys[kid]), jti


@pytest.fixture
def feed(loopback):
    holder, url = loopback
    transmitter = FakeTransmitter()
    transmitter.issuer = url
    transmitter.add_key("k1")
    holder["app"] = transmitter.app
    yield transmitter
    transmitter.release()


@pytest.fixture
def guards(feed):
    made = []

    def make(**kwargs) -> TokenGuard:
        guard = TokenGuard(feed.issuer, AUDIENCE, **kwargs)
        made.append(guard)
        return guard

    yield make
    for guard in made:
        guard.stop_revocation_listener()


def claim(token: str, name: str):
    import json

    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))[name]


@pytest.mark.parametrize("kind", ["grant_id", "sid"])
def test_revocation_reaches_the_guard_and_is_acked(feed, guards, kind):
    guard = guards()
    token, bystander = feed.mint(), feed.mint()
    guard.start_revocation_listener(CLIENT_ID, SECRET)
    wait_until(lambda: guard.feed_healthy, what="first poll")
    assert guard.validate(token, tenant=TENANT, scope="tenant:read")
    assert feed.stream_requests[0] == ("POST", {"delivery": {"method": FakeTransmitter.POLL}})
    assert feed.poll_bodies[0]["returnImmediately"] is True  # healthy at once, then long polls
    assert feed.poll_bodies[0]["maxEvents"] == 100

    set_token, jti = feed.revocation_set(kind, claim(token, kind))
    feed.publish(set_token, jti)
    wait_until(rejects(guard, token, "revoked"), what="the revocation")
    assert guard.validate(bystander, tenant=TENANT, scope="tenant:read")
    wait_until(lambda: jti in feed.acked, what="the ack")
    ack_body = next(b for b in feed.poll_bodies if jti in b["ack"])
    assert ack_body["returnImmediately"] is False and "setErrs" not in ack_body
    assert jti not in feed.pending


def test_the_listener_lets_the_application_run_after_applying_revocations(feed, guards,
                                                                          monkeypatch):
    """After a poll that applied revocations (and only then) the listener thread pauses
    briefly before its next poll: the threads validating requests refuse the tokens at once
    instead of waiting for the interpreter while it builds that poll."""
    from scopes.guard import feed as feed_module

    pauses = []
    monkeypatch.setattr(feed_module, "_let_others_run", pauses.append)
    guard = guards()
    token = feed.mint()
    guard.start_revocation_listener(CLIENT_ID, SECRET)
    wait_until(lambda: guard.feed_healthy, what="first poll")
    now = int(time.time())
    verification = sign_compact({"alg": "ES256", "kid": "k1", "typ": "secevent+jwt"}, {
        "iss": feed.issuer, "aud": CLIENT_ID, "jti": "ver-1", "iat": now,
        "sub_id": {"format": "opaque", "id": feed.stream["stream_id"]},
        "events": {VERIFICATION: {}}}, feed.keys["k1"])
    feed.publish(verification, "ver-1")
    wait_until(lambda: "ver-1" in feed.acked, what="the verification's ack")
    assert pauses == []  # nothing revoked: no pause
    set_token, jti = feed.revocation_set("grant_id", claim(token, "grant_id"))
    feed.publish(set_token, jti)
    wait_until(lambda: jti in feed.acked, what="the revocation's ack")
    assert pauses == [feed_module.RevocationListener.YIELD_AFTER_REVOCATION]
    assert rejects(guard, token, "revoked")()


def test_existing_stream_is_reused(feed, guards):
    feed.stream = feed._stream_config(FakeTransmitter.POLL)
    guard = guards()
    guard.start_revocation_listener(CLIENT_ID, SECRET)
    wait_until(lambda: guard.feed_healthy, what="first poll")
    assert [method for method, _ in feed.stream_requests] == ["POST", "GET"]


def test_a_push_stream_is_switched_to_poll(feed, guards):
    feed.stream = feed._stream_config("urn:ietf:rfc:8935")
    guard = guards()
    guard.start_revocation_listener(CLIENT_ID, SECRET)
    wait_until(lambda: guard.feed_healthy, what="first poll")
    assert [method for method, _ in feed.stream_requests] == ["POST", "GET", "PATCH"]
    assert feed.stream["delivery"]["method"] == FakeTransmitter.POLL


@pytest.mark.parametrize("algorithms, asked", [
    (("ES256", "RS256"), "ES256"),  # the guard's default: ES256, cheaper to sign
    (("ES256",), "ES256"),
    (("RS256",), None),  # the transmitter's default (RS256)
])
def test_the_listener_asks_for_es256_sets_when_it_accepts_them(feed, guards, algorithms,
                                                               asked):
    feed.signing_algs = ["RS256", "ES256"]
    guard = guards(algorithms=algorithms)
    guard.start_revocation_listener(CLIENT_ID, SECRET)
    wait_until(lambda: guard.feed_healthy, what="first poll")
    body = {"delivery": {"method": FakeTransmitter.POLL}}
    if asked:
        body["set_signing_alg"] = asked
    assert feed.stream_requests == [("POST", body)]
    assert feed.stream.get("set_signing_alg") == asked


def test_nothing_is_asked_of_a_transmitter_that_offers_no_algorithms(feed, guards):
    guard = guards()
    guard.start_revocation_listener(CLIENT_ID, SECRET)
    wait_until(lambda: guard.feed_healthy, what="first poll")
    assert feed.stream_requests == [("POST", {"delivery": {"method": FakeTransmitter.POLL}})]


def test_an_existing_rs256_stream_is_switched_to_es256(feed, guards):
    feed.signing_algs = ["RS256", "ES256"]
    feed.stream = feed._stream_config(FakeTransmitter.POLL, alg="RS256")
    guard = guards()
    guard.start_revocation_listener(CLIENT_ID, SECRET)
    wait_until(lambda: guard.feed_healthy, what="first poll")
    assert [method for method, _ in feed.stream_requests] == ["POST", "GET", "PATCH"]
    assert feed.stream_requests[-1][1]["set_signing_alg"] == "ES256"
    assert feed.stream["set_signing_alg"] == "ES256"


def test_an_existing_es256_stream_is_kept(feed, guards):
    feed.signing_algs = ["RS256", "ES256"]
    feed.stream = feed._stream_config(FakeTransmitter.POLL, alg="ES256")
    guard = guards()
    guard.start_revocation_listener(CLIENT_ID, SECRET)
    wait_until(lambda: guard.feed_healthy, what="first poll")
    assert [method for method, _ in feed.stream_requests] == ["POST", "GET"]


def impostor_signature(feed, token):
    impostor = ECKey.generate_key("P-256")
    feed.keys["impostor"] = impostor
    return feed.revocation_set("grant_id", claim(token, "grant_id"), kid="impostor",
                               header={"kid": "k1"})


BAD_SETS = [
    ("bad-signature", impostor_signature, "invalid_key"),
    ("unknown-kid", lambda f, t: f.revocation_set(
        "grant_id", claim(t, "grant_id"), kid="unpublished"), "invalid_key"),
    ("wrong-audience", lambda f, t: f.revocation_set(
        "grant_id", claim(t, "grant_id"), aud="rs-2"), "invalid_audience"),
    ("wrong-issuer", lambda f, t: f.revocation_set(
        "grant_id", claim(t, "grant_id"), iss="https://evil.example"), "invalid_issuer"),
    ("access-token-typ", lambda f, t: f.revocation_set(
        "grant_id", claim(t, "grant_id"), header={"typ": "at+jwt"}), "invalid_request"),
    ("alg-none", lambda f, t: (
        f"{b64({'alg': 'none', 'typ': 'secevent+jwt', 'kid': 'k1'})}.{b64({'jti': 'x'})}.",
        "rev-none"), "invalid_request"),
    ("unknown-subject-kind", lambda f, t: f.revocation_set(
        "jti", claim(t, "grant_id")), "invalid_request"),
    # NaN passed the old number check and was then never stored (compares false): acked
    # and lost. A malformed timestamp is refused; a missing one is applied (below).
    ("nan-event-timestamp", lambda f, t: f.revocation_set(
        "grant_id", claim(t, "grant_id"), event_changes={"event_timestamp": float("nan")}),
     "invalid_request"),
    ("infinite-event-timestamp", lambda f, t: f.revocation_set(
        "grant_id", claim(t, "grant_id"), event_changes={"event_timestamp": float("inf")}),
     "invalid_request"),
    ("string-event-timestamp", lambda f, t: f.revocation_set(
        "grant_id", claim(t, "grant_id"), event_changes={"event_timestamp": "yesterday"}),
     "invalid_request"),
]


@pytest.mark.parametrize("timestamp", ["absent", None])
def test_a_revocation_without_event_timestamp_is_applied_for_the_max_lifetime(
        feed, guards, timestamp):
    """CAEP makes event_timestamp optional: without one the entry is kept as long as a token
    issued when it arrived could be accepted (fail closed), and the event is acked."""
    guard = guards()
    token = feed.mint()
    guard.start_revocation_listener(CLIENT_ID, SECRET)
    wait_until(lambda: guard.feed_healthy, what="first poll")
    if timestamp is None:
        set_token, jti = feed.revocation_set("grant_id", claim(token, "grant_id"),
                                             event_changes={"event_timestamp": None})
    else:
        event = {"initiating_entity": "admin", "reason_admin": {"en": "removed_by_tenant"},
                 "subject_kind": "grant_id", "tenant": TENANT}
        jti = f"rev-{uuid.uuid4().hex[:8]}"
        set_token = sign_compact({"alg": "ES256", "kid": "k1", "typ": "secevent+jwt"}, {
            "iss": feed.issuer, "aud": CLIENT_ID, "jti": jti, "iat": int(time.time()),
            "sub_id": {"format": "opaque", "id": claim(token, "grant_id")},
            "events": {SESSION_REVOKED: event}}, feed.keys["k1"])
    before = time.time()
    feed.publish(set_token, jti)
    wait_until(lambda: jti in feed.acked, what="the ack")
    assert jti not in feed.set_errs
    with pytest.raises(InvalidToken, match="revoked"):
        guard.validate(token, tenant=TENANT, scope="tenant:read")
    until = guard.revocations.grants[claim(token, "grant_id")]
    assert until >= before + guard.max_token_lifetime + 2 * guard.leeway


@pytest.mark.parametrize("make, err", [c[1:] for c in BAD_SETS], ids=[c[0] for c in BAD_SETS])
def test_unverifiable_sets_are_not_applied_and_reported(feed, guards, make, err):
    feed.add_key("unpublished", publish=False)
    guard = guards()
    token = feed.mint()
    guard.start_revocation_listener(CLIENT_ID, SECRET)
    wait_until(lambda: guard.feed_healthy, what="first poll")
    bad, bad_jti = make(feed, token)
    feed.publish(bad, bad_jti)
    wait_until(lambda: bad_jti in feed.set_errs, what="the setErrs report")
    assert feed.set_errs[bad_jti]["err"] == err
    assert feed.set_errs[bad_jti]["description"]
    assert bad_jti not in feed.acked
    assert guard.validate(token, tenant=TENANT, scope="tenant:read")  # not applied

    good, good_jti = feed.revocation_set("grant_id", claim(token, "grant_id"))
    feed.publish(good, good_jti)  # the feed goes on after a bad event
    wait_until(rejects(guard, token, "revoked"), what="the good revocation")


def test_a_transmitter_redelivering_a_bad_set_is_not_polled_in_a_busy_loop(feed, guards):
    feed.ignore_set_errs = True
    guard = guards()
    token = feed.mint()
    guard.start_revocation_listener(CLIENT_ID, SECRET)
    wait_until(lambda: guard.feed_healthy, what="first poll")
    bad, jti = feed.revocation_set("grant_id", claim(token, "grant_id"), aud="rs-2")
    feed.publish(bad, jti)
    wait_until(lambda: len([b for b in feed.poll_bodies if jti in b.get("setErrs", {})]) >= 3,
               what="three reports")
    reports = [b["received_at"] for b in feed.poll_bodies if jti in b.get("setErrs", {})]
    assert reports[2] - reports[0] >= 0.2 + 0.4  # paused with backoff between redeliveries
    assert guard.validate(token, tenant=TENANT, scope="tenant:read")
    assert jti not in feed.acked


def test_verification_events_are_acked(feed, guards):
    guard = guards()
    guard.start_revocation_listener(CLIENT_ID, SECRET)
    wait_until(lambda: guard.feed_healthy, what="first poll")
    stream_id = feed.stream["stream_id"]
    now = int(time.time())
    token = sign_compact({"alg": "ES256", "kid": "k1", "typ": "secevent+jwt"}, {
        "iss": feed.issuer, "aud": CLIENT_ID, "jti": "ver-1", "iat": now,
        "sub_id": {"format": "opaque", "id": stream_id},
        "events": {VERIFICATION: {"state": "abc"}}}, feed.keys["k1"])
    feed.publish(token, "ver-1")
    wait_until(lambda: "ver-1" in feed.acked, what="the ack")
    assert guard.revocation_count == 0


def test_a_set_signed_with_a_rotated_key_is_applied(feed, guards):
    """A new key appears in the JWKS just before it signs an event: the listener refetches
    the keys rather than reject (and lose) the event, whatever the refetch rate limit."""
    guard = guards()
    token = feed.mint()
    guard.start_revocation_listener(CLIENT_ID, SECRET)
    wait_until(lambda: guard.feed_healthy, what="first poll")
    assert guard.validate(token, tenant=TENANT, scope="tenant:read")
    feed.add_key("k2")
    set_token, jti = feed.revocation_set("grant_id", claim(token, "grant_id"), kid="k2")
    feed.publish(set_token, jti)
    wait_until(rejects(guard, token, "revoked"), what="the revocation")
    wait_until(lambda: jti in feed.acked, what="the ack")


def test_feed_down_fails_closed(feed, guards):
    feed.long_poll = 0.05
    guard = guards(feed_staleness=0.5)
    token = feed.mint()
    guard.start_revocation_listener(CLIENT_ID, SECRET)
    wait_until(accepts(guard, token), what="a healthy feed")
    feed.down = True
    wait_until(lambda: not guard.feed_healthy, what="staleness")
    with pytest.raises(InvalidToken, match="revocation feed unavailable") as caught:
        guard.validate(token, tenant=TENANT, scope="tenant:read")
    assert caught.value.error == "invalid_token"
    feed.down = False  # back: the listener recovers with its backoff (0.2 s, 0.4 s, ...)
    wait_until(accepts(guard, token), what="recovery")


def test_a_listener_that_never_succeeded_fails_closed(feed, guards):
    feed.down = True
    guard = guards()
    token = feed.mint()
    guard.start_revocation_listener(CLIENT_ID, SECRET)
    with pytest.raises(InvalidToken, match="revocation feed unavailable"):
        guard.validate(token, tenant=TENANT, scope="tenant:read")
    assert not guard.feed_healthy


def test_wrong_credentials_never_make_the_feed_healthy(feed, guards):
    guard = guards()
    guard.start_revocation_listener(CLIENT_ID, "wrong")
    wait_until(lambda: feed.unauthorized >= 2, what="two refused attempts")
    assert feed.stream_requests == []
    with pytest.raises(InvalidToken, match="revocation feed unavailable"):
        guard.validate(feed.mint(), tenant=TENANT, scope="tenant:read")


def test_introspection_fallback(feed, guards):
    feed.down = True
    guard = guards(introspection_fallback=True)
    active, inactive = feed.mint(), feed.mint()
    feed.active = {active: True, inactive: False}
    guard.start_revocation_listener(CLIENT_ID, SECRET)
    assert guard.validate(active, tenant=TENANT, scope="tenant:read")
    assert guard.validate(active, tenant=TENANT, scope="tenant:read")
    assert feed.introspections == [(CLIENT_ID, active)]  # cached for a few seconds
    with pytest.raises(InvalidToken, match="not active"):
        guard.validate(inactive, tenant=TENANT, scope="tenant:read")
    # Local checks come first: a token for another tenant is not sent anywhere.
    with pytest.raises(InvalidToken, match="tenant"):
        guard.validate(feed.mint(tenant="20077"), tenant=TENANT, scope="tenant:read")
    assert len(feed.introspections) == 2

    feed.introspection_down = True
    with pytest.raises(InvalidToken, match="introspection failed"):
        guard.validate(feed.mint(), tenant=TENANT, scope="tenant:read")


def test_healthy_feed_needs_no_introspection(feed, guards):
    guard = guards(introspection_fallback=True)
    token = feed.mint()
    guard.start_revocation_listener(CLIENT_ID, SECRET)
    wait_until(lambda: guard.feed_healthy, what="first poll")
    assert guard.validate(token, tenant=TENANT, scope="tenant:read")
    assert feed.introspections == []


def test_stop_returns_promptly_during_a_long_poll(feed, guards):
    feed.long_poll = 60.0
    guard = guards()
    guard.start_revocation_listener(CLIENT_ID, SECRET)
    wait_until(lambda: feed.waiting == 1, what="a long poll in flight")
    started = time.monotonic()
    guard.stop_revocation_listener()
    assert time.monotonic() - started < 2.0
    assert not guard._listener._thread.is_alive()
    assert not guard.feed_healthy
    with pytest.raises(InvalidToken, match="revocation feed unavailable"):  # still fails closed
        guard.validate(feed.mint(), tenant=TENANT, scope="tenant:read")
    guard.start_revocation_listener(CLIENT_ID, SECRET)  # and can be started again
    wait_until(lambda: guard.feed_healthy, what="the restarted listener")


def test_errors_back_off_and_recover(feed, guards):
    feed.fail_polls = 2
    guard = guards()
    guard.start_revocation_listener(CLIENT_ID, SECRET)
    wait_until(lambda: guard.feed_healthy, what="recovery after two failures")
    assert feed.fail_polls == 0


def test_a_deleted_stream_is_created_again(feed, guards):
    guard = guards()
    guard.start_revocation_listener(CLIENT_ID, SECRET)
    wait_until(lambda: feed.waiting == 1, what="a long poll in flight")
    with feed.cond:
        feed.stream = None  # deleted by an operator: the next poll gets 404
        feed.closing = True
        feed.cond.notify_all()
    wait_until(lambda: feed.stream is not None, what="a new stream")
    feed.closing = False
    wait_until(lambda: guard.feed_healthy, what="polling the new stream")


def test_start_twice_is_refused(feed, guards):
    guard = guards()
    guard.start_revocation_listener(CLIENT_ID, SECRET)
    with pytest.raises(RuntimeError):
        guard.start_revocation_listener(CLIENT_ID, SECRET)


def test_a_stream_the_transmitter_paused_is_not_a_current_feed(feed, guards):
    """SSF 1.0 section 8.1.5: a Stream Updated event saying the stream is paused makes the
    feed not current (polls are no longer counted as health) until one says enabled."""
    from scopes.guard.feed import STREAM_UPDATED

    guard = guards()
    guard.start_revocation_listener(CLIENT_ID, SECRET)
    wait_until(lambda: guard.feed_healthy, what="first poll")
    listener = guard._listener
    stream_id = feed.stream["stream_id"]

    def update(jti, event_type, event):
        now = int(time.time())
        claims = {"iss": feed.issuer, "aud": CLIENT_ID, "jti": jti, "iat": now, "txn": jti,
                  "sub_id": {"format": "opaque", "id": stream_id},
                  "events": {event_type: event}}
        feed.publish(sign_compact({"alg": "ES256", "kid": "k1", "typ": "secevent+jwt"},
                                  claims, feed.keys["k1"]), jti)

    update("u-1", STREAM_UPDATED, {"status": "paused", "reason": "maintenance"})
    wait_until(lambda: listener.stream_stopped and "u-1" in feed.acked, what="the pause")
    healthy_at = guard._feed_ok_at
    update("v-1", VERIFICATION, {})  # one more poll round, answered and acknowledged
    wait_until(lambda: "v-1" in feed.acked, what="the verification's ack")
    assert guard._feed_ok_at == healthy_at  # polls of a paused stream are not health
    update("u-2", STREAM_UPDATED, {"status": "enabled"})
    wait_until(lambda: not listener.stream_stopped, what="the re-enabling")
    wait_until(lambda: guard._feed_ok_at != healthy_at, what="health again")


def test_the_feeds_own_keys_are_fetched_before_the_first_revocation(feed, guards):
    """A feed publishing its keys apart from the issuer's (the bridge: /ssf/jwks): they are
    fetched when the listener sets up, so the first revocation is verified without a round
    trip for them."""
    feed.ssf_jwks_path = "/ssf/jwks"
    guard = guards()
    token = feed.mint()
    guard.start_revocation_listener(CLIENT_ID, SECRET)
    wait_until(lambda: guard.feed_healthy, what="first poll")
    assert feed.hits["ssf_jwks"] == 1
    set_token, jti = feed.revocation_set("grant_id", claim(token, "grant_id"))
    feed.publish(set_token, jti)
    wait_until(rejects(guard, token, "revoked"), what="the revocation")
    assert feed.hits["ssf_jwks"] == 1
