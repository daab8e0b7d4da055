"""scopes.guard access records (issue 14 item 1): the recorder's queue, spool and shipper.

The bridge's ingest endpoint is faked here, following the issue's contract exactly
(``POST /access-records``, Basic credentials of a receiver client, at most 100 records,
``{"accepted", "duplicates", "refused"}``, idempotent by record id), beside the fake issuer's
discovery and JWKS of test_guard on loopback. Nothing is timed: every wait polls a condition
with a deadline.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from flask import Flask, abort, jsonify, request

from conftest import ServerThread
from scopes.guard import TokenGuard
from scopes.guard.access_log import AccessRecorder
from test_guard import AUDIENCE, TENANT, FakeIssuer

ROOT = Path(__file__).resolve().parent.parent
CLIENT_ID, CLIENT_SECRET = "konfipay-rs", "rs-secret-0123456789"
FIELDS = {"id", "tenant", "grant_id", "sid", "sub", "area", "action", "method", "route",
          "status", "at"}
AT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


class FakeIngest:
    """``POST /access-records`` as the contract says; ``mode`` ``up``, ``down`` (503) or
    ``hold`` (store, then answer only once ``release`` is set)."""

    def __init__(self, app: Flask):
        self.stored: dict[str, dict] = {}
        self.stores = Counter()  # id -> times stored (must stay 1)
        self.seen = Counter()  # id -> times received
        self.posts = 0
        self.sizes: list[int] = []
        self.forged: set[str] = set()  # grant ids the bridge does not know
        self.mode = "up"
        self.release = threading.Event()
        self.lock = threading.Lock()
        app.add_url_rule("/access-records", "ingest", self.ingest, methods=["POST"])

    def ingest(self):
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return jsonify({"error": "invalid_client"}), 401
        if self.mode == "down":
            return jsonify({"error": "temporarily_unavailable"}), 503
        body = request.get_json(silent=True)
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list) or len(records) > 100:
            return jsonify({"error": "invalid_request"}), 400
        answer = {"accepted": [], "duplicates": [], "refused": []}
        with self.lock:
            self.posts += 1
            self.sizes.append(len(records))
            for record in records:
                record_id = record.get("id") if isinstance(record, dict) else None
                self.seen[record_id] += 1
                if not isinstance(record, dict) or set(record) != FIELDS:
                    answer["refused"].append({"id": record_id, "error": "invalid_record"})
                elif record["grant_id"] in self.forged:
                    answer["refused"].append({"id": record_id, "error": "unknown_grant"})
                elif record_id in self.stored:
                    answer["duplicates"].append(record_id)
                else:
                    self.stored[record_id] = record
                    self.stores[record_id] += 1
                    answer["accepted"].append(record_id)
        if self.mode == "hold":
            self.release.wait(30)
        return jsonify(answer)


@pytest.fixture(scope="module")
def loopback():
    holder = {}

    def app(environ, start_response):
        return holder["app"](environ, start_response)

    with ServerThread(app) as server:
        yield holder, f"http://127.0.0.1:{server.port}"


@pytest.fixture
def fake(loopback):
    holder, url = loopback
    issuer = FakeIssuer()
    issuer.issuer = url
    issuer.add_key("k1")
    issuer.ingest = FakeIngest(issuer.app)
    holder["app"] = issuer.app
    return issuer


@pytest.fixture
def guard(fake):
    guard = TokenGuard(fake.issuer, AUDIENCE, backoff_initial=0.05)
    yield guard
    guard.stop_access_recording(timeout=2)


def resource_app(guard: TokenGuard) -> Flask:
    app = Flask("resource")
    app.served = Counter()

    @app.get("/tenants/<tenant>/ebics/<account>")
    @guard.require("ebics:read")
    def ebics(tenant, account):
        app.served["ebics"] += 1
        return jsonify({"account": account})

    @app.post("/tenants/<tenant>/evaluation")
    @guard.require("evaluation:write")
    def pay(tenant):
        app.served["pay"] += 1
        return jsonify({"ok": True}), 201

    @app.get("/tenants/<tenant>/users/<user>")
    @guard.require("users:read")
    def user(tenant, user):
        abort(404)

    return app


def wait_for(condition, timeout: float = 10.0, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {message}")


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def start(guard, spool, **options):
    options.setdefault("max_spool_bytes", 1024 * 1024)
    guard.start_access_recording(CLIENT_ID, CLIENT_SECRET, spool, **options)
    return guard.access_recorder


def spooled_files(spool: Path) -> list[str]:
    return sorted(p.name for p in spool.glob("*.jsonl"))


# --- recording and shipping ---

def test_advisor_requests_are_recorded_and_shipped(fake, guard, tmp_path):
    recorder = start(guard, tmp_path / "spool")
    client = resource_app(guard).test_client()
    claims = fake.claims(membership="temporary")
    token = fake.mint(**{k: v for k, v in claims.items() if k not in ("iat", "exp", "jti")})
    account = "DE89370400440532013000"
    assert client.get(f"/tenants/{TENANT}/ebics/{account}?iban=DE-SECRET-IBAN",
                      headers=auth(token)).status_code == 200
    assert client.post(f"/tenants/{TENANT}/evaluation?amount=999", headers=auth(token),
                       json={"iban": "DE-SECRET-BODY"}).status_code == 201
    assert client.get(f"/tenants/{TENANT}/users/u-4711", headers=auth(token)).status_code == 404

    assert recorder.wait_idle(60)
    records = sorted(fake.ingest.stored.values(), key=lambda r: r["at"] + r["route"])
    assert len(records) == 3 and set(fake.ingest.stores.values()) == {1}
    by_route = {r["route"]: r for r in records}
    assert set(by_route) == {"/tenants/<tenant>/ebics/<account>", "/tenants/<tenant>/evaluation",
                             "/tenants/<tenant>/users/<user>"}
    ebics = by_route["/tenants/<tenant>/ebics/<account>"]
    assert {k: ebics[k] for k in ("tenant", "grant_id", "sid", "sub", "area", "action",
                                  "method", "status")} == {
        "tenant": TENANT, "grant_id": claims["grant_id"], "sid": claims["sid"],
        "sub": claims["sub"], "area": "ebics", "action": "read", "method": "GET",
        "status": 200}
    payment = by_route["/tenants/<tenant>/evaluation"]
    assert (payment["area"], payment["action"], payment["method"], payment["status"]) == (
        "evaluation", "write", "POST", 201)
    assert by_route["/tenants/<tenant>/users/<user>"]["status"] == 404
    for record in records:
        assert set(record) == FIELDS and UUID4.match(record["id"]) and AT.match(record["at"])
    # No raw path values, query strings or bodies, in what was shipped or is still on disk.
    shipped = json.dumps(records)
    for raw in (account, "DE-SECRET-IBAN", "DE-SECRET-BODY", "u-4711", "999", TENANT + "/"):
        assert raw not in shipped
    assert spooled_files(tmp_path / "spool") in ([], [spooled_files(tmp_path / "spool")[0]])
    assert recorder.stats["accepted"] == 3 and recorder.stats["dropped"] == 0


@pytest.mark.parametrize("membership", [None, "tenant-user", ""])
def test_nothing_is_recorded_for_tokens_without_an_advisor_membership(fake, guard, tmp_path,
                                                                       membership):
    recorder = start(guard, tmp_path / "spool")
    client = resource_app(guard).test_client()
    token = fake.mint(membership=membership) if membership is not None else fake.mint(
        membership=None)
    assert client.get(f"/tenants/{TENANT}/ebics/a1", headers=auth(token)).status_code == 200
    # Refused requests are not "authorised": nothing recorded either.
    assert client.get(f"/tenants/{TENANT}/ebics/a1",
                      headers=auth(fake.mint(scope="users:read"))).status_code == 403
    assert client.get(f"/tenants/{TENANT}/ebics/a1").status_code == 401
    assert recorder.wait_idle(60)
    assert fake.ingest.posts == 0 and fake.ingest.stored == {}
    assert recorder.stats["spooled"] == 0


@pytest.mark.parametrize("membership", ["temporary", "permanent", "guest"])
def test_every_advisor_membership_is_recorded(fake, guard, tmp_path, membership):
    recorder = start(guard, tmp_path / "spool")
    client = resource_app(guard).test_client()
    assert client.get(f"/tenants/{TENANT}/ebics/a1",
                      headers=auth(fake.mint(membership=membership))).status_code == 200
    assert recorder.wait_idle(60)
    assert len(fake.ingest.stored) == 1


def test_request_thread_only_enqueues(fake, guard, tmp_path, monkeypatch):
    """The request thread neither writes the spool nor posts: with the writer and shipper
    stopped in their tracks, requests are still answered and the records wait in memory."""
    recorder = start(guard, tmp_path / "spool")
    client = resource_app(guard).test_client()
    token = fake.mint()
    blocked = threading.Event()
    original = recorder._spool

    def slow_spool(items):
        blocked.wait(30)
        return original(items)

    monkeypatch.setattr(recorder, "_spool", slow_spool)
    request_thread = threading.get_ident()
    opened = []
    real_open = open

    def watching_open(*args, **kwargs):
        if threading.get_ident() == request_thread:
            opened.append(args[0])
        return real_open(*args, **kwargs)

    monkeypatch.setattr("builtins.open", watching_open)
    for _ in range(5):
        assert client.get(f"/tenants/{TENANT}/ebics/a1", headers=auth(token)).status_code == 200
    assert opened == [] and fake.ingest.posts == 0
    blocked.set()
    monkeypatch.setattr("builtins.open", real_open)
    assert recorder.wait_idle(60)
    assert len(fake.ingest.stored) == 5


def test_batches_hold_at_most_100_records(fake, guard, tmp_path):
    fake.ingest.mode = "down"
    recorder = start(guard, tmp_path / "spool")
    claims = fake.claims()
    for _ in range(250):
        guard.record_access(claims, "evaluation:read", method="GET",
                            route="/tenants/<tenant>/evaluation", status=200)
    wait_for(lambda: recorder.stats["spooled"] == 250, message="the spool")
    fake.ingest.mode = "up"
    assert recorder.wait_idle(60)
    assert len(fake.ingest.stored) == 250 and max(fake.ingest.sizes) <= 100


def test_the_bridge_down_for_a_while_records_arrive_later(fake, guard, tmp_path):
    fake.ingest.mode = "down"
    recorder = start(guard, tmp_path / "spool", backoff_max=0.2)
    client = resource_app(guard).test_client()
    token = fake.mint()
    for _ in range(20):  # the resource server keeps serving
        assert client.get(f"/tenants/{TENANT}/ebics/a1", headers=auth(token)).status_code == 200
    wait_for(lambda: recorder.stats["ship_failures"] >= 3, message="failed shipments")
    assert fake.ingest.stored == {} and recorder.stats["spooled"] == 20
    fake.ingest.mode = "up"
    assert recorder.wait_idle(60)
    assert len(fake.ingest.stored) == 20 and set(fake.ingest.stores.values()) == {1}


def test_records_the_bridge_refuses_are_dropped_not_retried(fake, guard, tmp_path):
    recorder = start(guard, tmp_path / "spool")
    forged = fake.claims(grant_id=str(uuid.uuid4()))
    fake.ingest.forged.add(forged["grant_id"])
    guard.record_access(forged, "ebics:read", method="GET", route="/r", status=200)
    guard.record_access(fake.claims(), "ebics:read", method="GET", route="/r", status=200)
    assert recorder.wait_idle(60)
    assert recorder.stats["refused_by_bridge"] == 1 and len(fake.ingest.stored) == 1
    assert sum(fake.ingest.seen.values()) == 2  # once each: a refusal is an answer


def test_a_stopped_recorder_leaves_its_spool_to_the_next(fake, guard, tmp_path):
    fake.ingest.mode = "down"
    spool = tmp_path / "spool"
    recorder = start(guard, spool)
    for _ in range(7):
        guard.record_access(fake.claims(), "ebics:read", method="GET", route="/r", status=200)
    wait_for(lambda: recorder.stats["spooled"] == 7, message="the spool")
    guard.stop_access_recording(timeout=2)
    fake.ingest.mode = "up"
    recorder = start(guard, spool)
    assert recorder.wait_idle(60)
    assert len(fake.ingest.stored) == 7
    wait_for(lambda: list(spool.glob("*.lock")) == [p for p in spool.glob("*.lock")
                                                     if recorder._prefix in p.name],
             message="the old lock file to go")


# --- a full spool ---

def fill(guard, fake, recorder, count: int):
    claims = fake.claims()
    for _ in range(count):
        guard.record_access(claims, "evaluation:read", method="GET",
                            route="/tenants/<tenant>/evaluation", status=200)
    wait_for(lambda: recorder._queue.empty() and recorder._cycles > 0, message="the writer")


def test_full_spool_drop_oldest_keeps_serving_and_drops_the_oldest(fake, guard, tmp_path,
                                                                  caplog):
    fake.ingest.mode = "down"
    recorder = start(guard, tmp_path / "spool", max_spool_bytes=64 * 1024,
                     when_full="drop_oldest", segment_bytes=16 * 1024, backoff_max=0.1)
    first = fake.claims(sub="first-advisor")
    guard.record_access(first, "ebics:read", method="GET", route="/r", status=200)
    fill(guard, fake, recorder, 600)  # about 200 KB of records
    wait_for(lambda: recorder.stats["dropped"] > 0, message="dropping")
    client = resource_app(guard).test_client()
    token = fake.mint()
    assert client.post(f"/tenants/{TENANT}/evaluation", headers=auth(token)).status_code == 201
    assert client.get(f"/tenants/{TENANT}/ebics/a", headers=auth(token)).status_code == 200
    assert recorder.stats["spool_bytes"] <= 64 * 1024
    assert sum(s.size for s in recorder._segments) <= 64 * 1024 + 16 * 1024
    assert "dropped the" in caplog.text and "when_full=drop_oldest" in caplog.text
    fake.ingest.mode = "up"
    assert recorder.wait_idle(60)
    stored = fake.ingest.stored.values()
    assert all(r["sub"] != "first-advisor" for r in stored)  # the oldest went
    assert any(r["route"] == "/tenants/<tenant>/evaluation" for r in stored)  # the newest stay
    assert len(stored) + recorder.stats["dropped"] == 603


@pytest.mark.parametrize("when_full, read_status", [("refuse", 503), (None, 200)])
def test_full_spool_refuse_answers_503_for_advisor_requests(fake, guard, tmp_path, caplog,
                                                            when_full, read_status):
    fake.ingest.mode = "down"
    recorder = start(guard, tmp_path / "spool", max_spool_bytes=64 * 1024,
                     when_full=when_full, segment_bytes=16 * 1024, backoff_max=0.1)
    claims = fake.claims()
    filled = 0
    while not recorder.full:  # one by one: the spool just full, its reserve unused
        assert filled < 1000, "the spool never became full"
        guard.record_access(claims, "evaluation:read", method="GET",
                            route="/tenants/<tenant>/evaluation", status=200)
        filled += 1
        spooled = filled
        wait_for(lambda: recorder.stats["spooled"] == spooled, message="the writer")
    assert recorder.stats["spool_full"] is True and "spool full" in caplog.text
    app = resource_app(guard)
    client = app.test_client()
    token = fake.mint()
    response = client.post(f"/tenants/{TENANT}/evaluation", headers=auth(token))
    assert response.status_code == 503
    assert response.get_json()["error"] == "temporarily_unavailable"
    assert response.headers["Retry-After"] and app.served["pay"] == 0  # the view never ran
    read = client.get(f"/tenants/{TENANT}/ebics/a", headers=auth(token))
    assert read.status_code == read_status
    # A token without an advisor membership is not recorded, so never refused for it.
    assert client.post(f"/tenants/{TENANT}/evaluation",
                       headers=auth(fake.mint(membership=None))).status_code == 201
    assert recorder.stats["refused_requests"] >= 1
    dropped = recorder.stats["dropped"]
    if when_full == "refuse":  # nothing dropped: the reserve held the records of served ones
        assert dropped == 0
    else:  # reads drop the oldest, writes are refused all the same (fail-closed)
        assert dropped > 0
    fake.ingest.mode = "up"
    wait_for(lambda: not recorder.full, timeout=15, message="room again")
    assert client.post(f"/tenants/{TENANT}/evaluation", headers=auth(token)).status_code == 201
    assert recorder.wait_idle(60)
    assert len(fake.ingest.stored) == filled - dropped + (read_status == 200) + 1


@pytest.mark.parametrize("when_full", ["fail", {"read": "refuse"}, {"read": "x", "write": "y"}])
def test_when_full_must_be_known(fake, guard, tmp_path, when_full):
    with pytest.raises(ValueError):
        start(guard, tmp_path / "spool", when_full=when_full)
    assert guard.access_recorder is None


# --- a killed resource server (a real process, SIGKILL) ---

CHILD = r"""
import sys, time
from scopes.guard.access_log import AccessRecorder
endpoint, spool, first, count, wait = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
recorder = AccessRecorder(endpoint, "%s", "%s", spool, max_spool_bytes=1 << 20,
                          backoff_initial=0.05, backoff_max=0.2)
recorder.start()
for i in range(first, first + count):
    recorder.record({"tenant": "10042", "grant_id": "g-1", "sid": "s-1", "sub": "bob-%%d" %% i},
                    "ebics", "read", "GET", "/tenants/<tenant>/ebics", 200)
deadline = time.monotonic() + 20
while recorder.stats["spooled"] < count and time.monotonic() < deadline:
    time.sleep(0.01)
print("spooled", recorder.stats["spooled"], flush=True)
if wait == "idle":
    print("idle" if recorder.wait_idle(20) else "busy", flush=True)
    recorder.stop()
else:
    time.sleep(60)
""" % (CLIENT_ID, CLIENT_SECRET)


def child(fake, spool, first, count, wait):
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, f"{fake.issuer}/access-records", str(spool), str(first),
         str(count), wait], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["ingest_down", "answer_lost"])
def test_killed_between_spool_and_shipping_records_arrive_once_after_restart(fake, tmp_path,
                                                                             phase):
    """SIGKILL after the records are spooled: while the bridge is down (nothing shipped), or
    after the bridge stored a batch but before its answer arrived (sent again: a duplicate).
    After a restart on the same spool every record is stored exactly once."""
    spool = tmp_path / "spool"
    ingest = fake.ingest
    ingest.mode = "down" if phase == "ingest_down" else "hold"
    first = child(fake, spool, 0, 40, "forever")
    try:
        assert first.stdout.readline().split() == ["spooled", "40"]
        if phase == "answer_lost":
            wait_for(lambda: len(ingest.stored) > 0, message="a stored batch")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    stored_before = len(ingest.stored)
    assert (stored_before == 0) == (phase == "ingest_down")
    ingest.mode = "up"
    ingest.release.set()
    second = child(fake, spool, 40, 5, "idle")
    out, _ = second.communicate(timeout=60)
    assert out.split() == ["spooled", "5", "idle"]
    subjects = Counter(r["sub"] for r in ingest.stored.values())
    assert set(subjects) == {f"bob-{i}" for i in range(45)}
    assert set(ingest.stores.values()) == {1} and len(ingest.stored) == 45
    if phase == "answer_lost":
        assert max(ingest.seen.values()) >= 2  # sent again, stored once
    assert list(spool.glob("*.jsonl")) == [] and list(spool.glob("*.lock")) == []
