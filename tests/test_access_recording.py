"""scopes.guard access records (issue 14 item 1): the recorder's queue, spool and shipper.

The bridge's ingest endpoint is faked here, following the issue's contract exactly
(``POST /access-records``, Basic credentials of a receiver client, at most 1,000 records in
1 MiB (an older bridge: 100 records, 64 KiB),
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
import socket
import ssl
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
# Record ids: the layout of an RFC 9562 UUID version 8 (random prefix, then a counter).
RECORD_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


class FakeIngest:
    """``POST /access-records`` as the contract says; ``mode`` ``up``, ``down`` (503) or
    ``hold`` (store, then answer only once ``release`` is set). ``max_records`` and
    ``max_bytes`` bound a batch: 400 (``at most … records``) and 413 beyond, as the bridge
    answers (an older bridge: 100 and 64 KiB)."""

    max_records = 1000
    max_bytes = 1024 * 1024

    def __init__(self, app: Flask):
        self.stored: dict[str, dict] = {}
        self.stores = Counter()  # id -> times stored (must stay 1)
        self.seen = Counter()  # id -> times received
        self.posts = 0
        self.sizes: list[int] = []  # records of the batches taken
        self.sizes_sent: list[int] = []  # bytes of every POST
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
        with self.lock:
            self.sizes_sent.append(request.content_length)
        if request.content_length > self.max_bytes:
            return jsonify({"error": "invalid_request",
                            "error_description": "the request is too large"}), 413
        body = request.get_json(silent=True)
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list) or len(records) > self.max_records:
            return jsonify({"error": "invalid_request",
                            "error_description": f"at most {self.max_records} records in one "
                                                 f"batch"}), 400
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
    assert client.post(f"/tenants/{TENANT}/evaluation?amount=31415926", headers=auth(token),
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
        assert set(record) == FIELDS and RECORD_ID.match(record["id"]) and AT.match(record["at"])
    # No raw path values, query strings or bodies, in what was shipped or is still on disk.
    shipped = json.dumps(records)
    for raw in (account, "DE-SECRET-IBAN", "DE-SECRET-BODY", "u-4711", "31415926", TENANT + "/"):
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


@pytest.mark.parametrize("max_batch", [None, 100, 250])
def test_batches_hold_at_most_max_batch_records(fake, guard, tmp_path, max_batch):
    """Waiting records go in batches of up to 1,000 (or ``max_batch``), each under the
    bridge's 1 MiB; 2,500 waiting: three POSTs."""
    fake.ingest.mode = "down"
    options = {} if max_batch is None else {"max_batch": max_batch}
    recorder = start(guard, tmp_path / "spool", max_spool_bytes=8 << 20, **options)
    claims = fake.claims()
    for _ in range(2500):
        guard.record_access(claims, "evaluation:read", method="GET",
                            route="/tenants/<tenant>/evaluation", status=200)
    # The bridge comes back only after the shipper has met it down (else the first batch
    # would be a full one, depending on the threads' timing).
    wait_for(lambda: recorder.stats["spooled"] == 2500 and recorder.stats["ship_failures"] >= 2,
             message="the spool and failed shipments")
    fake.ingest.mode = "up"
    assert recorder.wait_idle(60)
    limit = max_batch or 1000
    assert len(fake.ingest.stored) == 2500 and max(fake.ingest.sizes) == limit
    # After the failures while the bridge was down: one batch of 100, then full ones.
    assert fake.ingest.sizes[0] == 100 and len(fake.ingest.sizes) == 1 + -(-2400 // limit)
    assert max(fake.ingest.sizes_sent) < (64 * 1024 if limit == 100 else 1024 * 1024)
    assert recorder.batch_limit == limit and recorder.stats["dropped"] == 0


def test_the_end_of_a_finished_segment_is_shipped_without_waiting_for_more(fake, guard,
                                                                         tmp_path):
    """A short batch waits up to ship_linger for more records, unless it ends a segment
    that is no longer written (nothing more can follow): those go at once, only the records
    of the segment being written wait (here for an hour, or until stop)."""
    fake.ingest.mode = "down"
    recorder = start(guard, tmp_path / "spool", segment_bytes=16 * 1024, ship_linger=3600)
    claims = fake.claims()
    for count in (60, 120):  # a batch of the writer's fills a segment, the next one starts one
        for _ in range(60):
            guard.record_access(claims, "ebics:read", method="GET", route="/r", status=200)
        wait_for(lambda: recorder.stats["spooled"] == count, message="the spool")
    with recorder._lock:
        current = recorder._current.path
        finished = sum(p.read_bytes().count(b"\n") for p in (tmp_path / "spool").glob("*.jsonl")
                       if p != current)
    assert 0 < finished < 120
    fake.ingest.mode = "up"
    # Stored at the stand-in, then counted by the shipper once it has read the answer.
    wait_for(lambda: len(fake.ingest.stored) == finished
             and recorder.stats["shipped"] == finished, message="the finished segments")
    assert len(fake.ingest.stored) == finished  # the current one's records still wait
    guard.stop_access_recording(timeout=2)  # stopping ships them
    assert len(fake.ingest.stored) == 120


def test_while_shipping_fails_batches_are_small_and_nothing_is_kept_in_memory(fake, guard,
                                                                           tmp_path):
    """A bridge that does not answer gets batches of 100 (no 900 KiB body made for every
    retry) and the writer keeps nothing in memory for the shipper; once one is taken, the
    batches are full again."""
    fake.ingest.mode = "down"
    recorder = start(guard, tmp_path / "spool", max_spool_bytes=8 << 20, backoff_max=0.2)
    claims = fake.claims()
    for _ in range(2500):
        guard.record_access(claims, "ebics:read", method="GET", route="/r", status=200)
    wait_for(lambda: recorder.stats["spooled"] == 2500 and recorder.stats["ship_failures"] >= 2,
             message="the spool and failed shipments")
    assert recorder._take() == (100, 60 * 1024)
    with recorder._lock:
        assert recorder._memo_bytes == 0 and not recorder._memo
    fake.ingest.mode = "up"
    assert recorder.wait_idle(60)
    assert fake.ingest.sizes == [100, 1000, 1000, 400]
    assert len(fake.ingest.stored) == 2500 and recorder._take() == (1000, 900 * 1024)


@pytest.mark.parametrize("endpoint", ["ftp://127.0.0.1/access-records", "https:///access-records",
                                      "https://rs:secret@127.0.0.1/access-records",
                                      "https://127.0.0.1/access records",
                                      "https://127.0.0.1/access-records\r\nX: 1",
                                      "https://127.0.0.1:99999/access-records"])
def test_an_endpoint_the_shipper_cannot_post_to_is_refused(tmp_path, endpoint):
    with pytest.raises(ValueError, match="endpoint"):
        AccessRecorder(endpoint, CLIENT_ID, CLIENT_SECRET, tmp_path, max_spool_bytes=1 << 20)
    assert not list(tmp_path.iterdir())  # nothing made


def test_max_batch_must_be_100_to_1000(tmp_path):
    for wrong in (99, 1001, 0, 500.0, "500", True):
        with pytest.raises(ValueError, match="max_batch"):
            AccessRecorder("http://127.0.0.1:9/access-records", CLIENT_ID, CLIENT_SECRET,
                           tmp_path, max_spool_bytes=1 << 20, max_batch=wrong)
    assert not list(tmp_path.iterdir())  # nothing made


@pytest.mark.parametrize("limit", ["bytes", "records"])
def test_an_older_bridge_gets_smaller_batches_and_nothing_is_lost(fake, guard, tmp_path,
                                                                  caplog, limit):
    """An older bridge takes 100 records in 64 KiB: a batch of more is 413 (over 64 KiB) or
    400 ("at most 100 records", under it). The shipper halves its batches (1,000, 500, 250,
    125, 100) with the records kept in the spool, none dropped, each stored once; and stays
    at what the bridge takes."""
    fake.ingest.mode = "down"
    fake.ingest.max_records = 100
    fake.ingest.max_bytes = 64 * 1024 if limit == "bytes" else 1024 * 1024
    recorder = start(guard, tmp_path / "spool", max_spool_bytes=8 << 20, backoff_max=0.2)
    claims = fake.claims()
    # Short records (about 330 bytes): 150 fit in 64 KiB, so the 400 is reached too.
    for _ in range(2000):
        guard.record_access(claims, "ebics:read", method="GET", route="/r", status=200)
    wait_for(lambda: recorder.stats["spooled"] == 2000, message="the spool")
    fake.ingest.mode = "up"
    assert recorder.wait_idle(60)
    assert len(fake.ingest.stored) == 2000 and set(fake.ingest.stores.values()) == {1}
    assert recorder.stats["dropped"] == 0 and recorder.stats["shipped"] == 2000
    assert recorder.batch_limit == recorder.stats["batch_limit"] == 100
    assert max(fake.ingest.sizes) == 100
    refused = [n for n in fake.ingest.sizes_sent if n > 64 * 1024] if limit == "bytes" else []
    assert (len(refused) >= 1) == (limit == "bytes")
    assert "too large (HTTP 4" in caplog.text and "batches of at most 100" in caplog.text
    record_more_guard = 150  # after the step down: no more refusals
    failures = recorder.stats["ship_failures"]
    for _ in range(record_more_guard):
        guard.record_access(claims, "ebics:read", method="GET", route="/r", status=200)
    assert recorder.wait_idle(60)
    assert recorder.stats["ship_failures"] == failures and len(fake.ingest.stored) == 2150


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
    wait_for(lambda: not recorder._queue and recorder._cycles > 0, message="the writer")


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
    # A short linger: the spool is filled one record (one batch) at a time.
    recorder = start(guard, tmp_path / "spool", max_spool_bytes=64 * 1024,
                     when_full=when_full, segment_bytes=16 * 1024, backoff_max=0.1,
                     writer_linger=0.002)
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


# --- record ids ---

@pytest.mark.slow
def test_record_ids_are_unique_across_recorders_restarts_and_processes(fake, guard, tmp_path):
    """The bridge keys records by (client, record id): every recorder of a resource server
    (two processes at once, and this one before and after a restart) numbers its own."""
    spool = tmp_path / "spool"
    recorder = start(guard, spool)
    claims = fake.claims()
    for _ in range(300):
        guard.record_access(claims, "ebics:read", method="GET", route="/r", status=200)
    assert recorder.wait_idle(60)
    prefixes = {recorder._ids._prefix}
    guard.stop_access_recording(timeout=2)
    recorder = start(guard, spool)  # a restart: a new recorder on the same spool
    for _ in range(300):
        guard.record_access(claims, "ebics:read", method="GET", route="/r", status=200)
    assert recorder.wait_idle(60)
    prefixes.add(recorder._ids._prefix)
    children = [child(fake, spool, first, 300, "idle") for first in (0, 300)]
    for process in children:
        out, _ = process.communicate(timeout=60)
        assert out.split() == ["spooled", "300", "idle"]
    stored = fake.ingest.stored
    assert len(stored) == 1200 and set(fake.ingest.stores.values()) == {1}
    assert all(RECORD_ID.match(record_id) for record_id in stored)
    by_prefix = Counter(record_id[:24] for record_id in stored)
    assert len(prefixes) == 2 and len(by_prefix) == 4 and set(by_prefix.values()) == {300}
    assert prefixes <= set(by_prefix)


def test_a_record_id_counter_that_runs_out_draws_new_random_bits():
    from scopes.guard.access_log import _IdSource

    source = _IdSource()
    first = source._prefix
    source._next = _IdSource.LIMIT - 256  # one block left
    ids = source.take(600)
    assert len(set(ids)) == 600 and all(RECORD_ID.match(i) for i in ids)
    assert {i[:24] for i in ids[:256]} == {first} and source._prefix != first
    assert {i[:24] for i in ids[256:]} == {source._prefix}
    assert ids[256].endswith("-000000000000")


# --- the request thread's enqueue ---

def test_the_queue_holds_one_copy_of_each_claim_value_not_every_tokens_own(tmp_path):
    """record() interns the four claim strings: two tokens' equal values are one object in
    the queue (the tokens' own copies die with their requests); a missing sid stays None and
    a claim that is not a string is enqueued as it is (the writer counts it as invalid)."""
    recorder = AccessRecorder("http://127.0.0.1:9/access-records", CLIENT_ID, CLIENT_SECRET,
                              tmp_path / "spool", max_spool_bytes=1 << 20)  # not started

    def claims(sid="s-1"):  # new string objects each time, as a token's JSON gives
        return {"tenant": "".join(["100", "42"]), "grant_id": "".join(["g-", "1"]),
                "sid": None if sid is None else "".join(["s-", sid[2:]]),
                "sub": "".join(["bob-", "7"])}

    first, second = claims(), claims()
    assert first["tenant"] is not second["tenant"]
    for each in (first, second, claims(sid=None), {**claims(), "sub": ["bob"]}):
        assert recorder.record(each, "ebics", "read", "GET", "/r", 200)
    queued = list(recorder._queue)
    assert all(queued[0][i] is queued[1][i] for i in (1, 2, 3, 4))
    assert queued[0][1:5] == ("10042", "g-1", "s-1", "bob-7")
    assert queued[2][3] is None and queued[2][1] is queued[0][1]
    assert queued[3][4] == ["bob"] and queued[3][1] == "10042"


# --- what the writer refuses to spool ---

def test_invalid_records_are_counted_and_the_rest_of_their_batch_is_spooled(fake, guard,
                                                                           tmp_path):
    recorder = start(guard, tmp_path / "spool")
    good = fake.claims()
    bad = [fake.claims(tenant=["10042"]),  # a list: not even hashable
           fake.claims(grant_id="g" * 65), fake.claims(sub={"id": "x"}),
           fake.claims(sid=7)]
    for claims in [good, *bad, good]:
        guard.record_access(claims, "ebics:read", method="GET", route="/r", status=200)
    recorder.record(good, "ebics", "read", "X" * 17, "/r", 200)  # not a method
    recorder.record(good, "ebics", "read", "GET", "/r", 99)  # not a status
    assert recorder.wait_idle(60)
    assert recorder.stats["invalid"] == 6 and recorder.stats["spooled"] == 2
    assert recorder.stats["enqueued"] == 8  # what the request threads handed over
    assert len(fake.ingest.stored) == 2
    assert {r["grant_id"] for r in fake.ingest.stored.values()} == {good["grant_id"]}


# --- the shipper's reading of a spool ---

def test_corrupt_lines_of_an_adopted_spool_are_skipped_and_the_rest_shipped(fake, guard,
                                                                          tmp_path):
    """A killed process left a segment with lines that are not records, a line longer than
    a POST may be, a record of an older version (a UUID 4 id) and a torn last write."""
    spool = tmp_path / "spool"
    spool.mkdir()
    owner = "access-99999-0123456789ab"
    (spool / f"{owner}.lock").write_text("")
    claims = fake.claims()

    def line(record_id):
        return json.dumps({"id": record_id, "tenant": TENANT, "grant_id": claims["grant_id"],
                           "sid": claims["sid"], "sub": claims["sub"], "area": "ebics",
                           "action": "read", "method": "GET", "route": "/r", "status": 200,
                           "at": "2026-01-02T03:04:05.678Z"}) + "\n"

    old_id, new_id = str(uuid.uuid4()), "0c6d4e1a-9b2f-8a31-b7c4-00000000002a"
    content = (line(new_id) + "not json at all\n" + json.dumps({"no": "id"}) + "\n"
               + "x" * (70 * 1024) + "\n" + line(old_id) + line("bad id with spaces")
               + '{"id": "torn-off')
    (spool / f"{owner}-000001.jsonl").write_text(content)
    recorder = start(guard, spool)
    assert recorder.wait_idle(60)
    assert set(fake.ingest.stored) == {new_id, old_id}
    assert recorder.stats["corrupt_lines"] == 5 and recorder.stats["shipped"] == 2
    wait_for(lambda: list(spool.glob(f"{owner}*")) == [], message="the adopted spool to go")


def test_corrupt_lines_are_counted_once_though_their_batch_is_read_again(fake, guard,
                                                                        tmp_path):
    """The bridge is down: the batch with the corrupt lines is read again for every attempt,
    its corrupt lines counted at the first reading only."""
    fake.ingest.mode = "down"
    spool = tmp_path / "spool"
    spool.mkdir()
    owner = "access-99998-0123456789ab"
    (spool / f"{owner}.lock").write_text("")
    claims = fake.claims()
    good = [json.dumps({"id": f"0c6d4e1a-9b2f-8a31-b7c4-00000000000{n}", "tenant": TENANT,
                        "grant_id": claims["grant_id"], "sid": None, "sub": claims["sub"],
                        "area": "ebics", "action": "read", "method": "GET", "route": "/r",
                        "status": 200, "at": "2026-01-02T03:04:05.678Z"}) for n in range(3)]
    lines = [good[0], "{not json", good[1], '{"id": "has spaces"}', good[2], "[]"]
    (spool / f"{owner}-000001.jsonl").write_text("\n".join(lines) + "\n")
    recorder = start(guard, spool, backoff_max=0.05)
    wait_for(lambda: recorder.stats["ship_failures"] >= 3, timeout=30, message="failures")
    assert recorder.stats["corrupt_lines"] == 3 and recorder.stats["shipped"] == 0
    fake.ingest.mode = "up"
    assert recorder.wait_idle(60)
    assert recorder.stats["corrupt_lines"] == 3 and recorder.stats["shipped"] == 3
    assert len(fake.ingest.stored) == 3


def test_shipped_offsets_are_saved_so_a_restart_sends_nothing_again(fake, guard, tmp_path):
    spool = tmp_path / "spool"
    recorder = start(guard, spool, ack_save_interval=3600)  # saved when idle or stopping
    claims = fake.claims()
    for _ in range(150):
        guard.record_access(claims, "ebics:read", method="GET", route="/r", status=200)
    assert recorder.wait_idle(60)
    (segment,) = spool.glob("*.jsonl")
    acked = Path(f"{segment}.acked")
    wait_for(lambda: acked.exists() and int(acked.read_text()) == segment.stat().st_size,
             message="the idle shipper to save its offset")
    guard.stop_access_recording(timeout=2)
    posts = fake.ingest.posts
    recorder = start(guard, spool)
    assert recorder.wait_idle(60)
    assert fake.ingest.posts == posts and set(fake.ingest.seen.values()) == {1}
    assert len(fake.ingest.stored) == 150


# --- the shipper's HTTP client against answers the fake ingest does not give ---

class ScriptedIngest:
    """An HTTP server on 127.0.0.1 (a thread per connection) answering each request with
    ``answer(n, ids)``: raw bytes, for the n-th request, whose records have ``ids`` (a list:
    pieces sent slowly, then the connection closed); the answer ``CLOSE`` closes the
    connection without answering. Counts the ids of records it
    answered 200 for (hostile answers too) in ``stored``, counts requests and connections; ``drop_connections`` closes the
    open ones (a server's keep-alive timeout)."""

    def __init__(self, answer, tls=None):
        self.answer = answer
        self.tls = tls  # an ssl.SSLContext: HTTPS
        self.requests = 0
        self.connections = 0
        self.stored = Counter()
        self.lock = threading.Lock()
        self.open: set = set()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/access-records"
        if tls is not None:
            self.url = f"https://localhost:{self.sock.getsockname()[1]}/access-records"
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with self.lock:
                self.connections += 1
                self.open.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            with conn:
                if self.tls is not None:
                    conn.settimeout(10)
                    with self.tls.wrap_socket(conn, server_side=True) as tls_conn:
                        self._exchange(tls_conn)
                    return
                self._exchange(conn)
        except OSError:  # the client or drop_connections closed it
            pass
        finally:
            with self.lock:
                self.open.discard(conn)

    def _exchange(self, conn):
        conn.settimeout(10)
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            while len(buffer) < length:
                buffer += conn.recv(65536)
            body, buffer = buffer[:length], buffer[length:]
            ids = [r["id"] for r in json.loads(body)["records"]]
            with self.lock:
                self.requests += 1
                n = self.requests
            raw = self.answer(n, ids)
            if raw == b"CLOSE":  # the server closes the connection as the request arrives
                return
            first = raw[0] if isinstance(raw, list) else raw
            if re.search(rb"(?m)^HTTP/1\.[01] 200 OK\r$", first):
                with self.lock:
                    self.stored.update(ids)
            if isinstance(raw, list):  # pieces, sent a tenth of a second apart
                for piece in raw:
                    conn.sendall(piece)
                    time.sleep(0.1)
                return
            conn.sendall(raw)
            if b"Connection: close" in raw or raw.startswith(b"HTTP/1.0"):
                return

    def drop_connections(self):
        with self.lock:
            conns = list(self.open)
        for conn in conns:
            conn.shutdown(socket.SHUT_RDWR)
        wait_for(lambda: not self.open, message="the server to close its connections")

    def close(self):
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


def ingest_answer(ids, *, version="1.1", framing="length", extra=b""):
    body = json.dumps({"accepted": ids, "duplicates": [], "refused": []}).encode()
    head = f"HTTP/{version} 200 OK\r\nContent-Type: application/json\r\n".encode() + extra
    if framing == "length":
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    if framing == "chunked":
        chunks = [body[i:i + 7] for i in range(0, len(body), 7)]
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(
            b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\nX-Trailer: 1\r\n\r\n"
    return head + b"\r\n" + body  # to the end of the connection (HTTP/1.0)


@pytest.fixture
def scripted():
    servers = []

    def make(answer, tls=None):
        servers.append(ScriptedIngest(answer, tls))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def post_batches(recorder_url, tmp_path, count, **options):
    options.setdefault("max_batch", 100)  # a request per 100 records: the counts below
    recorder = AccessRecorder(recorder_url, CLIENT_ID, CLIENT_SECRET, tmp_path / "spool",
                              max_spool_bytes=1 << 20, backoff_initial=0.05, backoff_max=0.2,
                              http_timeout=2, **options)
    recorder.start()
    record_more(recorder, count)
    return recorder


def record_more(recorder, count):
    claims = {"tenant": TENANT, "grant_id": "g-1", "sid": "s-1", "sub": "bob"}
    for _ in range(count):
        recorder.record(claims, "ebics", "read", "GET", "/tenants/<tenant>/ebics", 200)


def test_the_shipper_keeps_its_connection_and_replaces_one_the_server_closed(scripted,
                                                                            tmp_path, caplog):
    # Requests 1-3 on one connection; the server then drops it as the 4th arrives (no
    # answer): sent again at once on a new connection, not counted as a failure.
    server = scripted(lambda n, ids: b"CLOSE" if n == 4 else ingest_answer(ids))
    recorder = post_batches(server.url, tmp_path, 300)
    try:
        assert recorder.wait_idle(60)
        assert server.connections == 1 and server.requests == 3
        record_more(recorder, 50)
        assert recorder.wait_idle(60)
    finally:
        recorder.stop(2)
    assert server.connections == 2 and server.requests == 5 and recorder._http.resent == 1
    assert len(server.stored) == 350 and set(server.stored.values()) == {1}
    assert recorder.stats["ship_failures"] == 0 and "shipping failed" not in caplog.text


def test_a_connection_the_server_closed_while_idle_is_replaced_before_sending(scripted,
                                                                             tmp_path, caplog):
    server = scripted(lambda n, ids: ingest_answer(ids))
    recorder = post_batches(server.url, tmp_path, 200)
    try:
        assert recorder.wait_idle(60)
        assert server.connections == 1 and server.requests == 2
        server.drop_connections()  # its keep-alive timeout: closed while the shipper idles
        record_more(recorder, 100)
        assert recorder.wait_idle(60)
    finally:
        recorder.stop(2)
    # The shipper saw the connection closed and sent on a new one: nothing was sent on the
    # closed one (and again).
    assert server.connections == 2 and recorder._http.resent == 0
    assert len(server.stored) == 300 and set(server.stored.values()) == {1}
    assert recorder.stats["ship_failures"] == 0 and "shipping failed" not in caplog.text


def test_a_server_that_keeps_closing_gets_one_retry_per_send_and_the_records_stay(scripted,
                                                                                tmp_path):
    closing = True
    server = scripted(lambda n, ids: b"CLOSE" if closing else ingest_answer(ids))
    recorder = post_batches(server.url, tmp_path, 100)
    try:
        wait_for(lambda: recorder.stats["ship_failures"] >= 2, timeout=60,
                 message="failed shipments")
        # Each attempt: the batch and one retry on a new connection, no more (one attempt
        # may be under way while this looks).
        failed = recorder.stats["ship_failures"]
        with server.lock:
            requests, connections = server.requests, server.connections
        resent = recorder._http.resent
        failures = recorder.stats["ship_failures"]
        assert 2 * failed <= requests <= 2 * failures + 2
        assert requests <= connections <= requests + 1  # one request a connection
        assert failed <= resent <= failures + 1
        assert recorder.stats["shipped"] == 0 and recorder.stats["dropped"] == 0
        assert recorder._pending() and not server.stored
        closing = False
        assert recorder.wait_idle(60)
    finally:
        recorder.stop(2)
    assert len(server.stored) == 100 and recorder.stats["shipped"] == 100


@pytest.mark.parametrize("framing", ["chunked", "to_close", "early_hints", "interim_answers"])
def test_the_shipper_reads_chunked_close_delimited_and_informational_answers(
        scripted, tmp_path, framing):
    def answer(n, ids):
        if framing == "chunked":
            return ingest_answer(ids, framing="chunked")
        if framing == "to_close":
            return ingest_answer(ids, version="1.0", framing="close")
        if framing == "early_hints":
            return b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + ingest_answer(ids)
        return (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n"
                b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n"
                + ingest_answer(ids))

    server = scripted(answer)
    recorder = post_batches(server.url, tmp_path, 250)
    try:
        assert recorder.wait_idle(60)
    finally:
        recorder.stop(2)
    assert len(server.stored) == 250 and recorder.stats["accepted"] == 250
    assert recorder.stats["ship_failures"] == 0
    # Interim answers are read past, the final one in full: the connection stays in step
    # (kept alive for every batch), nothing is left to be taken for the next answer.
    assert server.connections == (server.requests if framing == "to_close" else 1)


@pytest.mark.parametrize("trusted", [True, False])
def test_the_shipper_verifies_the_bridges_certificate(scripted, tmp_path, monkeypatch, caplog,
                                                      trusted):
    """HTTPS verified against the system's CAs (here: a test CA made the
    system's through SSL_CERT_FILE, or not): an untrusted certificate keeps the records in
    the spool, and nothing reaches the server."""
    from test_ssf_push_ssrf import _certificates

    ca_path, cert_path, key_path = _certificates(tmp_path, "localhost")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    if trusted:
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_path))
    server = scripted(lambda n, ids: ingest_answer(ids), tls=context)
    recorder = post_batches(server.url, tmp_path, 150)
    try:
        if trusted:
            assert recorder.wait_idle(60)
        else:
            wait_for(lambda: recorder.stats["ship_failures"] >= 2, timeout=60,
                     message="failed shipments")
            assert recorder._pending() and recorder.stats["shipped"] == 0
            assert any("CERTIFICATE_VERIFY_FAILED" in r.getMessage() for r in caplog.records)
    finally:
        recorder.stop(2)
    if trusted:
        assert len(server.stored) == 150 and recorder.stats["accepted"] == 150
        assert server.connections == 1 and recorder.stats["ship_failures"] == 0
    else:
        assert server.requests == 0 and not server.stored


def _json_200(text: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text)


HOSTILE = {  # kind: (the answer, what the shipper logs about it)
    "head_line_too_long": (lambda ids: b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
                           "got more than 65536 bytes"),
    "too_many_headers": (lambda ids: b"HTTP/1.1 200 OK\r\n" + b"X: a\r\n" * 150 + b"\r\n",
                         "got more than 100 headers"),
    "body_too_long": (lambda ids: b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n{",
                      "the answer is too large"),
    "chunked_too_long": (lambda ids: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + (b"10000\r\n" + b" " * 65536 + b"\r\n") * 20 + b"0\r\n\r\n",
                         "the answer is too large"),
    "close_delimited_too_long": (lambda ids: b"HTTP/1.0 200 OK\r\n\r\n" + b" " * 2_000_000,
                                 "the answer is too large"),
    "never_ends": (lambda ids: b"HTTP/1.1 200 OK\r\n\r\n{", "timed out"),
    "trickles": (lambda ids: [b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"]
                 + [b" "] * 1000, "the answer took too long"),  # 100 s, a read each 0.1 s
    "not_http": (lambda ids: b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "BadStatusLine"),
    "http_2": (lambda ids: b"HTTP/2 200\r\n\r\n", "UnknownProtocol"),
    "two_lengths": (lambda ids: (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                 b"Content-Length: 3\r\n\r\n{}"), "multiple unmatching values"),
    "two_lengths_in_one": (lambda ids: (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\n{}"),
                           "multiple unmatching values"),
    "length_not_a_number": (lambda ids: (b"HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\n{}"),
                            "is not a length"),
    "bad_chunk": (lambda ids: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                  "IncompleteRead"),
    "short_body": (lambda ids: (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n"
                                b"Connection: close\r\n\r\n{}"), "IncompleteRead"),
    "content_coding": (lambda ids: (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
                                    b"Content-Length: 2\r\n\r\n{}"), "content coding"),
    "interim_flood": (lambda ids: b"HTTP/1.1 103 Early Hints\r\n\r\n" * 11 + _json_200(b"{}"),
                      "too many interim answers"),
    "switching_protocols": (lambda ids: b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c"
                            b"\r\nConnection: Upgrade\r\n\r\n", "HTTP 101"),
    "redirect": (lambda ids: (b"HTTP/1.1 307 Temporary Redirect\r\nLocation: "
                              b"http://127.0.0.1:9/x\r\nContent-Length: 0\r\n\r\n"), "HTTP 307"),
    "server_error": (lambda ids: b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 2"
                     b"\r\n\r\n{}", "HTTP 500"),
    "not_json": (lambda ids: _json_200(b"<html>accepted</html>"), "not the ingest's JSON"),
    "wrong_json": (lambda ids: _json_200(b'{"accepted": 7}'), "not the ingest's JSON"),
    "not_the_ids": (lambda ids: ingest_answer(ids[:-1]), "does not name 1 of the records"),
    "not_the_ids_compact": (lambda ids: _json_200(json.dumps(
        {"accepted": ids[:-1], "duplicates": [], "refused": []}, separators=(",", ":")).encode()),
        "does not name 1 of the records"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_an_answer_the_shipper_cannot_trust_keeps_the_records_in_the_spool(scripted, tmp_path,
                                                                          caplog, kind):
    hostile = True
    make, message = HOSTILE[kind]

    def answer(n, ids):
        return make(ids) if hostile else ingest_answer(ids)

    server = scripted(answer)
    recorder = post_batches(server.url, tmp_path, 120)
    try:
        wait_for(lambda: recorder.stats["ship_failures"] >= 2, timeout=60,
                 message="failed shipments")
        # Nothing changed: nothing counted as shipped or dropped, all of it still pending.
        assert recorder.stats["shipped"] == 0 and recorder.stats["dropped"] == 0
        assert recorder.stats["accepted"] == recorder.stats["refused_by_bridge"] == 0
        assert recorder.stats["spooled"] == 120 and recorder.stats["spool_bytes"] > 0
        assert recorder._pending() and recorder.alive
        assert any(message in r.getMessage() and "shipping failed" in r.getMessage()
                   for r in caplog.records)
        hostile = False
        assert recorder.wait_idle(60)  # the shipper survived: all of it arrives now
    finally:
        recorder.stop(2)
    assert recorder.stats["shipped"] == recorder.stats["accepted"] == 120
    assert recorder.stats["dropped"] == 0 and len(server.stored) == 120


def test_the_usual_answer_is_recognised_without_parsing_and_nothing_else_is():
    from scopes.guard.access_log import _all_accepted

    ids = [str(uuid.uuid4()) for _ in range(5)]
    answer = {"accepted": ids, "duplicates": [], "refused": []}
    for separators in ((",", ":"), (", ", ": ")):  # Flask's jsonify, json.dumps' default
        usual = json.dumps(answer, separators=separators).encode()
        assert _all_accepted(usual, ids) and _all_accepted(b" " + usual + b"\n", ids)
    # Anything else is not taken as all accepted here (the shipper parses it).
    others = [{"accepted": ids[::-1], "duplicates": [], "refused": []},
              {"accepted": ids[:-1], "duplicates": ids[-1:], "refused": []},
              {"accepted": ids[:-1], "duplicates": [], "refused": [{"id": ids[-1]}]},
              {"accepted": ids[:-1] + ["x" * 36], "duplicates": [], "refused": []},
              {"accepted": ids + ids[:1], "duplicates": [], "refused": []}]
    for other in others:
        for separators in ((",", ":"), (", ", ": ")):
            assert not _all_accepted(json.dumps(other, separators=separators).encode(), ids)
    usual = json.dumps(answer, separators=(",", ":")).encode()
    assert not _all_accepted(usual + b"{}", ids) and not _all_accepted(usual[:-1], ids)
    assert not _all_accepted(json.dumps(answer, indent=2).encode(), ids)  # parsed instead
    assert not _all_accepted(usual.replace(b'","', b'", "', 1), ids)


@pytest.mark.parametrize("max_batch", [100, 1000])
def test_the_shipper_gets_the_same_batches_from_memory_as_from_the_disk(tmp_path, max_batch):
    """What the writer just wrote, the shipper posts from memory: batch for batch the same
    ids, bytes and offsets as it would read from the spool (which it does for the rest)."""
    from scopes.guard.access_log import MEMO_BYTES

    recorder = AccessRecorder("http://127.0.0.1:9/access-records", CLIENT_ID, CLIENT_SECRET,
                              tmp_path, max_spool_bytes=8 << 20,
                              segment_bytes=8 << 20,
                              max_batch=max_batch)  # not started: played here
    n = 0
    for size in (1, 57, 100, 230, 3, 99, 1, 2500, 44, 1800):
        for _ in range(size):
            n += 1
            recorder.record({"tenant": TENANT, "grant_id": "g-1", "sid": None,
                             "sub": f"bob-{n}" * (1 + n % 3)}, "ebics", "read", "GET",
                            "/tenants/<tenant>/ebics", 200)
        recorder._spool([recorder._queue.popleft() for _ in range(len(recorder._queue))])
    assert recorder._memo_bytes <= MEMO_BYTES and recorder._memo
    (segment,) = recorder._segments
    position, remembered, shipped = 0, 0, []
    while position < segment.size:
        ids, lines, end, corrupt = recorder._read_lines(segment.path, position, segment.size,
                                                         True)
        assert ids and corrupt == 0 and len(ids) <= max_batch
        memo = recorder._from_memo(segment, position)
        if memo is not None:
            assert memo == (ids, b", ".join(lines), end)
            remembered += 1
        shipped += ids
        position = end
    assert position == segment.size and len(shipped) == len(set(shipped)) == n
    # The newest from memory, the rest not.
    assert 0 < remembered < len(shipped) / max_batch + 10
    recorder._close_reading()
