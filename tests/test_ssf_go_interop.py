"""Every kind of Security Event Token the revocation feed emits, checked by code that is not
ours: ``setcheck`` (Go, ``tests/interop_go``), a receiver's validation written from RFC 8417,
RFC 9493, SSF 1.0 Final and CAEP 1.0 / the CAEP Interoperability Profile on lestrrat-go/jwx v2
(the JOSE library of SGNL's caep.dev ``secevent``, which the Go module proxy does not serve;
docs/standards.md).

The bridge is served over real HTTP on loopback; the receiver creates streams (poll RS256,
poll ES256, push) over HTTP, asks for verification, and the bridge emits ``session-revoked``
for a membership removal and for a token family revoked by refresh-token reuse, and a
``stream-updated`` when it pauses and re-enables a stream itself. The SETs come from the poll
endpoint and from a push receiver, and setcheck (discovering the keys through the issuer's
``ssf-configuration``) must find every one valid. Broken SETs (a tampered signature, ``sub``,
``exp``, a wrong ``typ``, HS256, a claim twice and more, signed by a key setcheck trusts so
that only the broken rule can refuse them) must each be refused for exactly that rule: the
check cannot pass vacuously.

``tests/interop_go/bin/setcheck`` is built by ``.ci/install-go-interop``; with ``CI`` set a
missing Go toolchain or binary fails the test with the reason, otherwise it skips.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
import warnings
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jws, jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import OctKey, RSAKey

from conftest import RS_CLIENT_ID, TENANT, Bridge, ServerThread, build_app
from idp_bridge.app import services
from idp_bridge.storage.db import utcnow

pytestmark = pytest.mark.slow

GO_DIR = Path(__file__).resolve().parent / "interop_go"
SETCHECK = GO_DIR / "bin" / "setcheck"
INSTALL = Path(__file__).resolve().parent.parent / ".ci" / "install-go-interop"
POLL = "urn:ietf:rfc:8936"
PUSH = "urn:ietf:rfc:8935"
SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
VERIFICATION = "https://schemas.openid.net/secevent/ssf/event-type/verification"
STREAM_UPDATED = "https://schemas.openid.net/secevent/ssf/event-type/stream-updated"
HTTP_TIMEOUT = 10
DEADLINE = 20.0


# --- setcheck, the independent validator ---

def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"setcheck (Go) is required when CI is set, and it is unavailable: {reason} "
                    "(.ci/install-go-interop builds it)", pytrace=False)
    pytest.skip(f"setcheck unavailable (set CI=1 to make this a failure): {reason}")


def _stale() -> bool:
    built = SETCHECK.stat().st_mtime
    sources = [*GO_DIR.glob("setcheck/*.go"), GO_DIR / "go.mod", GO_DIR / "go.sum"]
    return any(p.stat().st_mtime > built for p in sources)


@pytest.fixture(scope="session")
def setcheck() -> Path:
    if SETCHECK.is_file() and os.access(SETCHECK, os.X_OK) and not _stale():
        return SETCHECK
    if os.environ.get("CI"):
        _unavailable(f"{SETCHECK} is missing or older than its sources")
    if shutil.which("go") is None and not Path("/usr/local/go/bin/go").is_file():
        _unavailable("Go is not on PATH nor in /usr/local/go/bin")
    try:  # once, outside CI: go.sum pins every module
        done = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True,
                              timeout=300, check=False)
    except subprocess.TimeoutExpired:
        _unavailable(".ci/install-go-interop timed out")
    if done.returncode != 0 or not SETCHECK.is_file():
        output = (done.stderr or done.stdout).strip()[-800:]
        _unavailable(f".ci/install-go-interop failed: {output}")
    return SETCHECK


def run_setcheck(binary: Path, issuer: str, items: list[dict], *, jwks: Path | None = None):
    """(exit status, verdicts by label, stderr) of setcheck over ``items``."""
    command = [str(binary), "-issuer", issuer, "-aud", RS_CLIENT_ID]
    if jwks is not None:
        command += ["-jwks", str(jwks)]
    done = subprocess.run(command, input="".join(json.dumps(i) + "\n" for i in items),
                          capture_output=True, text=True, timeout=60, check=False)
    verdicts = {}
    for line in done.stdout.splitlines():
        verdict = json.loads(line)
        verdicts[verdict["label"]] = verdict
    return done.returncode, verdicts, done.stderr


# --- the bridge on loopback, a receiver speaking HTTP to it ---

class PushReceiver:
    """An RFC 8935 push endpoint: keeps every SET and answers 202."""

    def __init__(self):
        self.received: list[tuple[str | None, str]] = []

    def __call__(self, environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        self.received.append((environ.get("CONTENT_TYPE"),
                              environ["wsgi.input"].read(length).decode()))
        start_response("202 Accepted", [("Content-Length", "0")])
        return [b""]


class Receiver:
    """The SSF receiver's side, over HTTP with its client credentials (HTTP Basic)."""

    def __init__(self, issuer: str, secret: str):
        self.issuer = issuer
        self.http = requests.Session()
        self.http.auth = (RS_CLIENT_ID, secret)
        self.config = self.get("/.well-known/ssf-configuration")

    def get(self, path: str):
        response = self.http.get(self.issuer + path, timeout=HTTP_TIMEOUT)
        assert response.status_code == 200, response.text
        return response.json()

    def create(self, body: dict) -> dict:
        response = self.http.post(self.config["configuration_endpoint"], json=body,
                                  timeout=HTTP_TIMEOUT)
        assert response.status_code == 201, response.text
        return response.json()

    def verify(self, stream_id: str, state: str) -> None:
        response = self.http.post(self.config["verification_endpoint"],
                                  json={"stream_id": stream_id, "state": state},
                                  timeout=HTTP_TIMEOUT)
        assert response.status_code == 204, response.text

    def poll(self, stream: dict, ack=()) -> dict:
        response = self.http.post(stream["delivery"]["endpoint_url"], timeout=HTTP_TIMEOUT,
                                  json={"returnImmediately": True, "ack": list(ack)})
        assert response.status_code == 200, response.text
        return response.json()["sets"]


@pytest.fixture
def served(settings, upstream):
    """A bridge served on a free loopback port (its issuer that very URL) that may push to
    loopback receivers (the tests' opt-in, refused in production mode)."""
    with contextlib.ExitStack() as stack:
        holder = {}
        server = stack.enter_context(ServerThread(
            lambda environ, start_response: holder["app"](environ, start_response)))
        issuer = f"http://127.0.0.1:{server.port}"
        app = build_app(settings.replace(issuer=issuer, ssf_push_allow_loopback=True))
        stack.callback(services(app).db.dispose)
        holder["app"] = app
        yield Bridge(app, app.test_client(), upstream), issuer


def collect(fetch, want: int, what: str) -> list:
    """Call ``fetch`` (which returns the new SETs) until ``want`` arrived, with a deadline."""
    got: list = []
    deadline = time.monotonic() + DEADLINE
    while len(got) < want:
        got.extend(fetch())
        if len(got) < want and time.monotonic() > deadline:
            pytest.fail(f"{what}: {len(got)} of {want} SETs within {DEADLINE} s")
    assert len(got) == want, f"{what}: {len(got)} SETs, expected {want}"
    return got


def claims_of(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def event_type(token: str) -> str:
    (kind,) = claims_of(token)["events"]
    return kind


class Feed:
    """Drains the receiver's poll streams and push endpoint into setcheck's input items."""

    def __init__(self, bridge: Bridge, receiver: Receiver, push: PushReceiver):
        self.bridge, self.receiver, self.push = bridge, receiver, push
        self.items: list[dict] = []
        self.states: dict[str, str] = {}
        self.pushed = 0

    def item(self, stream: dict, token: str, via: str) -> dict:
        item = {"label": f"{via} {stream['stream_id'][:8]} #{len(self.items)} "
                         f"{event_type(token).rsplit('/', 1)[-1]}",
                "set": token, "stream_id": stream["stream_id"],
                "alg": stream["set_signing_alg"]}
        if event_type(token) == VERIFICATION:
            item["state"] = self.states[stream["stream_id"]]
        self.items.append(item)
        return item

    def poll(self, stream: dict, want: int) -> list[dict]:
        def fetch():
            sets = self.receiver.poll(stream)
            self.receiver.poll(stream, ack=sets)  # acknowledged: never delivered again
            return [self.item(stream, token, "poll") for token in sets.values()]
        return collect(fetch, want, f"poll of stream {stream['stream_id']}")

    def pushed_to(self, stream: dict, want: int) -> list[dict]:
        def fetch():
            self.bridge.services.pusher.deliver_once()
            new = self.push.received[self.pushed:]
            self.pushed += len(new)
            for content_type, _ in new:
                assert content_type == "application/secevent+jwt"  # RFC 8935 section 2
            return [self.item(stream, token, "push") for _, token in new]
        return collect(fetch, want, f"push to stream {stream['stream_id']}")


def test_every_set_type_we_emit_passes_setcheck(served, setcheck):
    bridge, issuer = served
    receiver = Receiver(issuer, bridge.rs_secret)
    assert receiver.config["issuer"] == issuer
    push = PushReceiver()
    with ServerThread(push) as push_server:
        feed = Feed(bridge, receiver, push)
        rs256 = receiver.create({"delivery": {"method": POLL}, "set_signing_alg": "RS256",
                                 "description": "poll, RS256"})
        es256 = receiver.create({"delivery": {"method": POLL}, "set_signing_alg": "ES256"})
        pushed = receiver.create({"delivery": {
            "method": PUSH, "endpoint_url": f"http://127.0.0.1:{push_server.port}/events"}})
        assert (rs256["set_signing_alg"], es256["set_signing_alg"],
                pushed["set_signing_alg"]) == ("RS256", "ES256", "RS256")  # RS256 by default
        streams = (rs256, es256, pushed)

        # Verification (SSF 8.1.4.2) on every stream, each with its own state.
        for stream in streams:
            feed.states[stream["stream_id"]] = f"state-{uuid.uuid4().hex}"
            receiver.verify(stream["stream_id"], feed.states[stream["stream_id"]])
        # session-revoked: bob's membership removed by the tenant (an admin's action) ...
        bridge.join("bob")
        membership = bridge.membership_id("bob")
        assert bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{membership}") \
            .status_code == 204
        # ... and carol's token family revoked because a refresh token came back (policy).
        tokens = bridge.join("carol")
        refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        assert bridge.token(refresh).status_code == 200
        reuse = bridge.token(refresh)
        assert reuse.status_code == 400 and reuse.json["error"] == "invalid_grant"

        first = {s["stream_id"]: feed.poll(s, 3) for s in (rs256, es256)}
        first[pushed["stream_id"]] = feed.pushed_to(pushed, 3)

        # stream-updated (SSF 8.1.5): the transmitter pauses a stream and enables it again;
        # the receiver hears of each change.
        transmitter = bridge.services.transmitter
        for stream in (rs256, pushed):
            transmitter.change_status(stream["stream_id"], "paused", "maintenance", utcnow())
        updates = feed.poll(rs256, 1) + feed.pushed_to(pushed, 1)
        for stream in (rs256, pushed):
            transmitter.change_status(stream["stream_id"], "enabled", None, utcnow())
        updates += feed.poll(rs256, 1) + feed.pushed_to(pushed, 1)

    status, verdicts, stderr = run_setcheck(setcheck, issuer, feed.items)
    refused = {label: v["problems"] for label, v in verdicts.items() if not v["ok"]}
    assert refused == {}, f"setcheck refused SETs the bridge emitted: {refused}"
    assert status == 0, stderr
    assert len(verdicts) == len(feed.items) == 13

    # Every kind was delivered on every delivery method and algorithm it should have been.
    for stream_id, items in first.items():
        kinds = sorted(verdicts[i["label"]]["event_type"] for i in items)
        assert kinds == sorted([VERIFICATION, SESSION_REVOKED, SESSION_REVOKED]), stream_id
    assert [verdicts[i["label"]]["event_type"] for i in updates] == [STREAM_UPDATED] * 4
    assert [verdicts[i["label"]]["claims"]["events"][STREAM_UPDATED]["status"]
            for i in updates] == ["paused", "paused", "enabled", "enabled"]
    assert {verdicts[i["label"]]["alg"] for i in first[es256["stream_id"]]} == {"ES256"}
    assert {verdicts[i["label"]]["alg"] for i in first[rs256["stream_id"]] + updates} == \
        {"RS256"}

    # One cause, one txn (SSF 4.1.9): each revocation's SETs on the three streams share it.
    revoked = [verdicts[i["label"]]["claims"] for items in first.values() for i in items
               if verdicts[i["label"]]["event_type"] == SESSION_REVOKED]
    by_cause: dict[str, set] = {}
    for claims in revoked:
        event = claims["events"][SESSION_REVOKED]
        by_cause.setdefault(event["initiating_entity"], set()).add(claims["txn"])
    assert {cause: len(txns) for cause, txns in by_cause.items()} == {"admin": 1, "policy": 1}
    assert by_cause["admin"] != by_cause["policy"]
    # Receivers can match tenant and session (issue 13 A.2): a complex subject (SSF 3.3) with
    # both, as the top-level sub_id or as the event's subject (SSF 3.1.1), which setcheck
    # validated wherever it is.
    for claims in revoked:
        event = claims["events"][SESSION_REVOKED]
        (complex_subject,) = [s for s in (claims["sub_id"], event.get("subject"))
                              if isinstance(s, dict) and s.get("format") == "complex"]
        assert {"tenant", "session"} <= set(complex_subject), complex_subject


# --- refusals: setcheck is not a rubber stamp ---

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _rsa_key(bits: int, kid: str) -> RSAKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    with warnings.catch_warnings():  # joserfc warns of keys under 2048 bits: one is wanted
        warnings.simplefilter("ignore", SecurityWarning)
        return RSAKey.import_key(private, parameters={"kid": kid, "alg": "RS256", "use": "sig"})


def test_setcheck_refuses_broken_sets(served, setcheck, tmp_path):
    bridge, issuer = served
    receiver = Receiver(issuer, bridge.rs_secret)
    stream = receiver.create({"delivery": {"method": POLL}})
    receiver.verify(stream["stream_id"], "s1")
    bridge.join("bob")
    membership = bridge.membership_id("bob")
    assert bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{membership}") \
        .status_code == 204
    sets = collect(lambda: list(receiver.poll(stream).values()), 2, "poll")
    (revoked,) = [t for t in sets if event_type(t) == SESSION_REVOKED]
    (verified,) = [t for t in sets if event_type(t) == VERIFICATION]

    # Against the bridge's own keys (discovered): the real SET passes, a tampered one fails.
    header, payload, signature = revoked.split(".")
    changed = claims_of(revoked)
    changed["events"][SESSION_REVOKED]["reason_admin"] = {"en": "nothing happened"}
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    real = [{"label": "real", "set": revoked, "stream_id": stream["stream_id"]},
            {"label": "tampered payload", "set": f"{header}.{_b64(json.dumps(changed).encode())}"
                                                 f".{signature}"},
            {"label": "tampered signature", "set": f"{header}.{payload}.{flipped}"}]
    status, verdicts, _ = run_setcheck(setcheck, issuer, real)
    assert status == 1
    assert verdicts["real"]["ok"] is True
    for label in ("tampered payload", "tampered signature"):
        assert [p["rule"] for p in verdicts[label]["problems"]] == ["signature"], label

    # Against a key of this test (a JWK Set file): the bridge's claims re-signed pass; each
    # with one rule broken is refused for that rule and nothing else.
    key, small = _rsa_key(2048, "test-rs256"), _rsa_key(1024, "test-small")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False),
                                         small.as_dict(private=False)]}))
    base, verification = claims_of(revoked), claims_of(verified)

    def signed(claims, *, typ="secevent+jwt", signer=key, **changes):
        claims = {**json.loads(json.dumps(claims)), "jti": uuid.uuid4().hex, **changes}
        return jwt.encode({"alg": "RS256", "kid": signer.kid, "typ": typ}, claims, signer)

    def without(claims, name):
        return {k: v for k, v in claims.items() if k != name}

    two_events = {**base, "events": {**base["events"], VERIFICATION: {}}}
    empty_reason = json.loads(json.dumps(base))
    empty_reason["events"][SESSION_REVOKED]["reason_admin"] = {}
    no_entity = json.loads(json.dumps(base))
    del no_entity["events"][SESSION_REVOKED]["initiating_entity"]
    cases = {
        "control": (signed(base), None),
        "control verification": (signed(verification), None),
        "with sub": (signed(base, sub="bob"), "sub"),
        "with exp": (signed(base, exp=int(time.time()) + 300), "exp"),
        "typ JWT": (signed(base, typ="JWT"), "typ"),
        "no txn": (signed(without(base, "txn")), "txn"),
        "no sub_id": (signed(without(base, "sub_id")), "sub_id"),
        "sub_id of an unknown format": (
            signed(base, sub_id={"format": "nickname", "id": "x"}), "sub_id"),
        "sub_id with a member its format lacks": (
            signed(base, sub_id={"format": "opaque", "id": "x", "email": "a@b.example"}),
            "sub_id"),
        "another issuer": (signed(base, iss="https://elsewhere.example"), "iss"),
        "another audience": (signed(base, aud="someone-else"), "aud"),
        "two events": (signed(two_events), "events"),
        "empty reason_admin": (signed(empty_reason), "session-revoked/reason_admin"),
        "no initiating_entity": (signed(no_entity), "session-revoked/initiating_entity"),
        "verification of another stream": (
            signed(verification, sub_id={"format": "opaque", "id": uuid.uuid4().hex}),
            "verification/sub_id"),
        "a 1024-bit key": (signed(base, signer=small), "key"),
        "alg HS256": (jwt.encode({"alg": "HS256", "kid": key.kid, "typ": "secevent+jwt"},
                                 {**base, "jti": uuid.uuid4().hex},
                                 OctKey.generate_key(256), algorithms=["HS256"]), "alg"),
        "a claim twice": (jws.serialize_compact(
            {"alg": "RS256", "kid": key.kid, "typ": "secevent+jwt"},
            json.dumps({**base, "jti": uuid.uuid4().hex})[:-1] + ', "iss": "x"}', key,
            algorithms=["RS256"]), "claims-json"),
    }
    items = [{"label": label, "set": token, "stream_id": stream["stream_id"]}
             for label, (token, _) in cases.items()]
    for item in items:
        if VERIFICATION in claims_of(item["set"])["events"]:
            item["state"] = "s1"
    status, verdicts, stderr = run_setcheck(setcheck, issuer, items, jwks=jwks)
    assert status == 1, stderr
    assert {label: [p["rule"] for p in v["problems"]] for label, v in verdicts.items()} == {
        label: [] if rule is None else [rule] for label, (_, rule) in cases.items()}

    # Nothing to check is an error, never a pass.
    status, verdicts, stderr = run_setcheck(setcheck, issuer, [])
    assert status == 2 and verdicts == {} and "no SET" in stderr
