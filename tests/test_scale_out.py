"""Scale-out: several bridge processes on PostgreSQL and Redis, concurrency and faults.

Each test asserts that nothing is lost and nothing is granted wrongly; none depends on
timing (waits are bounded and generous, races are forced with barriers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests
from cryptography.fernet import Fernet

from conftest import (ACCESS_TOKEN_TYPE, CLIENT_ID, RS_CLIENT_ID, TENANT, TOKEN_EXCHANGE, Bridge,
                      build_app)
from idp_bridge.devidp import DEMO_USERS
from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import AccessCodeState, Membership

BOB = DEMO_USERS["bob"]["sub"]


def twin(bridge: Bridge, **changes) -> Bridge:
    """A second bridge process's view: its own app and connection pool, same database."""
    app = build_app_shared(bridge, **changes)
    return Bridge(app, app.test_client(), bridge.upstream)


def build_app_shared(bridge: Bridge, **changes):
    from idp_bridge.app import create_app
    from conftest import _built_apps

    app = create_app(bridge.services.settings.replace(**changes))
    app.config.update(TEST_CLIENT_SECRET=bridge.secret, TEST_RS_SECRET=bridge.rs_secret)
    _built_apps.append(app)
    return app


def race(*calls):
    """Run the calls at the same moment in threads; returns their results in order."""
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)

    def run(i, call):
        barrier.wait()
        results[i] = call()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


# --- concurrency (both backends) ---

@pytest.mark.parametrize("attempt", range(3))
def test_one_code_two_advisors_two_processes(bridge, attempt):
    other = twin(bridge)
    code = bridge.current_code()
    with bridge.services.db.read() as session:
        counter_before = session.get(AccessCodeState, TENANT).counter
    bob, carol = race(lambda: bridge.exchange("bob", code=code),
                      lambda: other.exchange("carol", code=code))
    statuses = sorted([bob.status_code, carol.status_code])
    assert statuses == [200, 400]
    loser = bob if bob.status_code == 400 else carol
    assert loser.json["error"] == "invalid_grant"
    with bridge.services.db.read() as session:
        members = session.query(Membership).filter(Membership.ended_at.is_(None)).all()
        counter_after = session.get(AccessCodeState, TENANT).counter
    assert len(members) == 1
    assert counter_after - counter_before == 1  # rotated once, by the winner


def test_refresh_token_used_twice_concurrently_is_reuse(bridge):
    other = twin(bridge)
    tokens = bridge.join("bob")
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    a, b = race(lambda: bridge.token(form), lambda: other.token(form))
    assert sorted([a.status_code, b.status_code]) == [200, 400]
    winner = a if a.status_code == 200 else b
    loser = b if winner is a else a
    assert loser.json["error"] == "invalid_grant"
    # Reuse revokes the family: the winner's new tokens die too.
    assert bridge.introspect(winner.json["access_token"]).json == {"active": False}
    again = bridge.token({"grant_type": "refresh_token",
                          "refresh_token": winner.json["refresh_token"]})
    assert again.status_code == 400 and again.json["error"] == "invalid_grant"


def test_removal_racing_exchanges_leaves_no_live_token(bridge):
    other = twin(bridge)
    bridge.join("bob")
    issued, stop = [], threading.Event()

    def exchanges():
        while not stop.is_set():
            response = other.exchange("bob")
            if response.status_code == 200:
                issued.append(response.json)
            else:
                assert response.json["error"] == "invalid_grant"
                return

    worker = threading.Thread(target=exchanges)
    worker.start()
    deadline = time.monotonic() + 20
    while len(issued) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    mid = bridge.membership_id("bob")
    assert bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{mid}").status_code == 204
    stop.set()
    worker.join(30)
    assert issued
    for tokens in issued:
        assert bridge.introspect(tokens["access_token"]).json == {"active": False}
        refresh = bridge.token({"grant_type": "refresh_token",
                                "refresh_token": tokens["refresh_token"]})
        assert refresh.status_code == 400 and refresh.json["error"] == "invalid_grant"


# --- PostgreSQL faults ---

@pytest.fixture
def pg_bridge(postgres, upstream):
    import uuid

    from conftest import make_settings

    url = postgres.create_database(f"t_{uuid.uuid4().hex[:16]}", template="bridge_template")
    app = build_app(make_settings(url, upstream))
    return Bridge(app, app.test_client(), upstream)


@pytest.mark.slow
def test_postgres_down_answers_503_and_recovers(pg_bridge, postgres):
    bridge = pg_bridge
    tokens = bridge.join("bob")
    postgres.stop()
    try:
        down = bridge.exchange("bob")
        assert down.status_code == 503
        assert down.json["error"] == "temporarily_unavailable"
        assert "access_token" not in down.json
        api = bridge.api("get", f"/api/tenants/{TENANT}/memberships")
        assert api.status_code == 503 and api.json["error"] == "temporarily_unavailable"
        refresh = bridge.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
        assert refresh.status_code == 503
        ready = bridge.client.get("/readyz")
        assert ready.status_code == 503 and ready.json["checks"]["database"] == "unreachable"
    finally:
        postgres.start()
    assert bridge.exchange("bob").status_code == 200  # no restart needed
    assert bridge.client.get("/readyz").status_code == 200
    again = bridge.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert again.status_code == 200  # the refused refresh did not consume the token


# --- Redis ---

@pytest.fixture
def redis_bridges(pg_bridge, redis_server):
    import redis

    redis.Redis.from_url(redis_server.url).flushall()  # counters of earlier tests
    first = twin(pg_bridge, redis_url=redis_server.url,
                 code_guess_limit_advisor="3 per 15 minutes")
    second = twin(pg_bridge, redis_url=redis_server.url,
                  code_guess_limit_advisor="3 per 15 minutes")
    for b in (first, second):
        b.services.fanout.start()
    yield first, second
    for b in (first, second):
        b.services.fanout.stop()


@pytest.mark.slow
def test_wrong_guesses_are_limited_across_processes(redis_bridges):
    first, second = redis_bridges
    code = first.current_code()
    wrong = ("0000-0000" if code != "0000-0000" else "1111-1111")
    for bridge in (first, second, first):
        response = bridge.exchange("bob", code=wrong)
        assert response.json["error_description"] == "access_code is wrong or has expired"
    # The fourth guess, on the other process, meets the shared limit even with the right code.
    limited = second.exchange("bob", code=first.current_code())
    assert limited.status_code == 400
    assert limited.json["error"] == "invalid_grant"
    assert "too many" in limited.json["error_description"]


@pytest.mark.slow
def test_long_poll_on_one_process_wakes_for_removal_on_another(redis_bridges):
    first, second = redis_bridges
    auth = (RS_CLIENT_ID, first.rs_secret)
    stream = second.client.post("/ssf/stream", json={}, auth=auth).json["stream_id"]
    first.join("bob")
    result = {}

    def poll():
        client = second.app.test_client()
        result["sets"] = client.post(f"/ssf/poll/{stream}", json={"returnImmediately": False},
                                     auth=auth).json["sets"]

    waiter = threading.Thread(target=poll)
    waiter.start()
    mid = first.membership_id("bob")
    assert first.api("delete", f"/api/tenants/{TENANT}/memberships/{mid}").status_code == 204
    waiter.join(30)
    assert len(result["sets"]) == 1


@pytest.mark.slow
def test_redis_down_neither_stops_redemption_nor_revocation(redis_bridges, redis_server):
    """Redis only wakes long polls early: guess limits live in the database."""
    first, second = redis_bridges
    tokens = first.join("bob")
    auth = (RS_CLIENT_ID, first.rs_secret)
    stream = second.client.post("/ssf/stream", json={}, auth=auth).json["stream_id"]
    code = first.current_code()
    redis_server.stop()
    try:
        wrong = "0000-0000" if code != "0000-0000" else "1111-1111"
        assert second.exchange("carol", code=wrong).json["error"] == "invalid_grant"
        carol = first.exchange("carol", code=code)
        assert carol.status_code == 200, carol.json
        assert second.client.get("/readyz").json["checks"]["redis"] == "unreachable"
        mid = first.membership_id("bob")
        assert first.api("delete", f"/api/tenants/{TENANT}/memberships/{mid}").status_code == 204
        assert second.introspect(tokens["access_token"]).json == {"active": False}
        sets = second.client.post(f"/ssf/poll/{stream}", json={"returnImmediately": True},
                                  auth=auth).json["sets"]
        assert len(sets) == 1  # through the database, without Redis
    finally:
        redis_server.start()


# --- a killed process ---

def _serve(env, port):
    return subprocess.Popen([sys.executable, "-m", "idp_bridge.cli", "serve", "--port", str(port),
                             "--workers", "1"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _wait(url):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{url} did not come up")


@pytest.mark.slow
def test_removal_survives_a_killed_process(pg_bridge, upstream):
    from services import free_port

    bridge = pg_bridge
    settings = bridge.services.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_BRIDGE_")}
    env.update({"IDP_BRIDGE_MODE": "test", "IDP_BRIDGE_ISSUER": settings.issuer,
                "IDP_BRIDGE_DATABASE_URL": settings.database_url,
                "IDP_BRIDGE_SECRET_KEY": settings.secret_key,
                "IDP_BRIDGE_KEY_ENCRYPTION_KEY": settings.key_encryption_key,
                "IDP_BRIDGE_UPSTREAM_ISSUER": settings.upstream_issuer,
                "IDP_BRIDGE_LOG_FORMAT": "text"})
    ports = free_port(), free_port()
    procs = [_serve(env, p) for p in ports]
    try:
        for p in ports:
            _wait(f"http://127.0.0.1:{p}/readyz")
        a, b = (f"http://127.0.0.1:{p}" for p in ports)
        tokens = bridge.join("bob")
        anna = {"Authorization": f"Bearer {bridge.upstream_token('anna')}"}
        mid = requests.get(f"{a}/api/tenants/{TENANT}/memberships", headers=anna).json()["memberships"][0]["id"]
        removed = requests.delete(f"{a}/api/tenants/{TENANT}/memberships/{mid}", headers=anna)
        assert removed.status_code == 204
        os.killpg(procs[0].pid, signal.SIGKILL)  # right after answering
        procs[0].wait(10)
        rs = (RS_CLIENT_ID, bridge.rs_secret)
        assert requests.post(f"{b}/introspect", auth=rs,
                             data={"token": tokens["access_token"]}).json() == {"active": False}
        refresh = requests.post(f"{b}/token", auth=(CLIENT_ID, bridge.secret), data={
            "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
        assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant"
        exchange = requests.post(f"{b}/token", auth=(CLIENT_ID, bridge.secret), data={
            "grant_type": TOKEN_EXCHANGE, "tenant": TENANT,
            "subject_token": bridge.upstream_token("bob"), "subject_token_type": ACCESS_TOKEN_TYPE})
        assert exchange.status_code == 400 and exchange.json()["error"] == "invalid_grant"
        stream = requests.post(f"{b}/ssf/stream", json={}, auth=rs).json()["stream_id"]
        sets = requests.post(f"{b}/ssf/poll/{stream}", json={"returnImmediately": True},
                             auth=rs).json()["sets"]
        assert len(sets) == 1
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(20)
