"""End to end, with real processes: access records from resource servers to the bridge,
nothing lost and nothing forged (issue 14 item 7).

The bridge is really served (``idp-bridge serve``: gunicorn, two workers) on a real
PostgreSQL, in a process group of its own, so that it can be killed and started again on the
same port and database. The resource servers are the example resource server started
through its real ``main()`` (``RS_ACCESS_SPOOL_DIR`` turns recording on), each with a receiver
client and a spool folder of its own, so that every record can be traced to the server that
made it. The test counts every answer it gets; the bridge must end up with exactly one
record per authorised request, checked in the database and through the tenant admin's API
(``GET /api/tenants/{t}/access`` and ``…/access/requests``).

1. Ten servers answer advisor requests through a full minute in which the bridge is down
   (killed); their spools hold every record of it; after the restart every record arrives,
   once. An eleventh server keeps the guard's default feed staleness (30 s): it fails closed
   during the outage, and the requests it refused leave no record.
2. A server killed (SIGKILL) with records spooled but not shipped (the bridge was down):
   after its restart on the same spool the records arrive, once.
3. Over real HTTP a receiver reports records for another tenant, a forged grant and another
   advisor: refused with the contract's codes, audited in the claimed tenant, not stored; a
   batch sent twice is stored once and answered as duplicates.

The three end-to-end tests are slow (processes); the checks of the example server's
``RS_FEED_STALENESS`` setting at the end are not. Waits are polls with generous deadlines
(tests/conftest.py ``wait_until``); the one fixed wait is the outage itself.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
from cryptography.fernet import Fernet
from sqlalchemy import func, select

from conftest import (ACCESS_TOKEN_TYPE, CLIENT_ID, OTHER_TENANT, TENANT, TOKEN_EXCHANGE,
                      wait_until)
from idp_bridge.devidp import DEMO_USERS
from idp_bridge.services.operator import add_client
from idp_bridge.storage.db import Database
from idp_bridge.storage.models import AccessRecord, AuditEvent

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_RS = ROOT / "deploy" / "example-resource-server" / "example_resource_server.py"
BOB = DEMO_USERS["bob"]["sub"]
CAROL = DEMO_USERS["carol"]["sub"]
AREAS = ("ebics", "payments", "bank-accounts", "account-transactions", "tenant")
OUTAGE = 60.0  # seconds the bridge is down in the first test
PAUSE = 0.1  # between two requests of one sender during the outage
LONG_STALENESS = "300"  # RS_FEED_STALENESS of the servers that serve through the outage
SPOOL_MAX_BYTES = str(4 * 1024 * 1024)
_SEGMENT = re.compile(r"^access-(\d+)-[0-9a-f]{12}-\d{6}\.jsonl$")


def stable_port() -> int:
    """A free loopback port below the ephemeral range (Linux: 32768 and up), so that no
    outgoing connection takes it while its server is down (the restart binds it again)."""
    import random
    import socket

    for _ in range(200):
        port = random.randrange(20000, 32000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port from 20000 to 32000")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


class ServedBridge:
    """``idp-bridge serve`` on a fixed loopback port in a process group of its own."""

    def __init__(self, env: dict, port: int, log: Path):
        self.env, self.port, self.log = env, port, log
        self.base = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            log.write(b"--- start\n")
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "idp_bridge.cli", "serve", "--port", str(self.port)],
                env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        wait_until(self.ready, timeout=90, interval=0.1,
                   what=lambda: f"the bridge ready at {self.base}\n{_tail(self.log)}")

    def ready(self) -> bool:
        assert self.process.poll() is None, \
            f"the bridge exited ({self.process.returncode})\n{_tail(self.log, 80)}"
        try:
            return requests.get(f"{self.base}/readyz", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def reachable(self) -> bool:
        try:
            requests.get(f"{self.base}/healthz", timeout=5)
        except requests.ConnectionError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL to the master and its workers: no clean shutdown, connections just end."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        wait_until(lambda: not self.reachable(), timeout=30, what="the killed bridge gone")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            # Long polls of stopped receivers hold the graceful shutdown up to their end.
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


class ResourceServer:
    """The example resource server through its ``main()``, recording into ``spool``."""

    def __init__(self, bridge: ServedBridge, client_id: str, secret: str, folder: Path,
                 staleness: str | None):
        self.bridge, self.client_id = bridge, client_id
        self.port = stable_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.spool = folder / f"spool-{client_id}"
        self.log = folder / f"{client_id}.log"
        self.env = {**os.environ, "RS_ISSUER": bridge.base, "RS_PORT": str(self.port),
                    "RS_CLIENT_ID": client_id, "RS_CLIENT_SECRET": secret,
                    "RS_ACCESS_SPOOL_DIR": str(self.spool),
                    "RS_ACCESS_SPOOL_MAX_BYTES": SPOOL_MAX_BYTES, "PYTHONUNBUFFERED": "1"}
        self.env.pop("RS_FEED_STALENESS", None)
        if staleness is not None:
            self.env["RS_FEED_STALENESS"] = staleness
        self.process: subprocess.Popen | None = None
        #: What this server answered during the outage: (monotonic time, area, status, error).
        self.outage: list[tuple[float, str, int | None, str | None]] = []

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([sys.executable, str(EXAMPLE_RS)], env=self.env,
                                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        def healthy():
            assert self.process.poll() is None, \
                f"{self.client_id} exited ({self.process.returncode})\n{_tail(self.log, 80)}"
            try:
                return requests.get(f"{self.base}/healthz", timeout=5).json()["feed_healthy"]
            except requests.RequestException:
                return False

        wait_until(healthy, timeout=90, interval=0.1,
                   what=lambda: f"{self.client_id} serving with a healthy feed\n"
                                f"{_tail(self.log)}")

    def get(self, area: str, token: str, tenant: str = TENANT, http=requests):
        """(status, error) of an advisor's read of ``area``."""
        response = http.get(f"{self.base}/tenants/{tenant}/{area}", timeout=30,
                            headers={"Authorization": f"Bearer {token}"})
        error = response.json().get("error") if response.status_code != 200 else None
        return response.status_code, error

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def unshipped(self) -> int:
        """Records in this server's spool that the bridge has not answered for yet (read
        from the files: segment lines past the ``.acked`` offset)."""
        count = 0
        for path in self.spool.glob("access-*.jsonl"):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue  # shipped and removed meanwhile
            try:
                acked = int(path.with_name(path.name + ".acked").read_text() or 0)
            except (FileNotFoundError, ValueError):
                acked = 0
            count += data[acked:].count(b"\n")
        return count

    def segment_pids(self) -> set[int]:
        return {int(m.group(1)) for m in map(_SEGMENT.match,
                                              (p.name for p in self.spool.iterdir())) if m}


class E2E:
    """A served bridge on its own PostgreSQL database, receiver clients, and the reads."""

    def __init__(self, url: str, seed, upstream, folder: Path):
        self.url, self.seed, self.upstream, self.folder = url, seed, upstream, folder
        self.db = Database(url)
        env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_BRIDGE_")}
        port = stable_port()
        env.update({"IDP_BRIDGE_MODE": "test", "IDP_BRIDGE_ISSUER": f"http://127.0.0.1:{port}",
                    "IDP_BRIDGE_DATABASE_URL": url,
                    "IDP_BRIDGE_SECRET_KEY": secrets.token_urlsafe(32),
                    "IDP_BRIDGE_KEY_ENCRYPTION_KEY": Fernet.generate_key().decode(),
                    "IDP_BRIDGE_UPSTREAM_ISSUER": upstream.issuer,
                    "IDP_BRIDGE_LOG_FORMAT": "text"})
        self.bridge = ServedBridge(env, port, folder / "bridge.log")
        self.servers: list[ResourceServer] = []

    @property
    def base(self) -> str:
        return self.bridge.base

    def receiver(self, client_id: str) -> str:
        """A new receiver client (revocation feed and access records); its secret."""
        return add_client(self.db, client_id, roles=("receiver",))

    def resource_server(self, client_id: str, staleness: str | None = LONG_STALENESS):
        server = ResourceServer(self.bridge, client_id, self.receiver(client_id), self.folder,
                                staleness)
        self.servers.append(server)
        return server

    def bearer(self, user: str = "anna") -> dict:
        return {"Authorization": f"Bearer {self.upstream.issue_tokens(user)['access_token']}"}

    def advisor_token(self, user: str = "bob") -> str:
        """An advisor's access token for TENANT, over HTTP: the tenant's code, redeemed."""
        code = requests.get(f"{self.base}/api/tenants/{TENANT}/access-code",
                            headers=self.bearer("anna"), timeout=30)
        assert code.status_code == 200, code.text
        response = requests.post(f"{self.base}/token", auth=(CLIENT_ID, self.seed.secret),
                                 timeout=30, data={
                                     "grant_type": TOKEN_EXCHANGE, "tenant": TENANT,
                                     "subject_token": self.upstream.issue_tokens(user)[
                                         "access_token"],
                                     "subject_token_type": ACCESS_TOKEN_TYPE,
                                     "access_code": code.json()["code"]})
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def claims(self, token: str) -> dict:
        """The token's claims, verified with the served bridge's /jwks."""
        from joserfc import jws, jwt
        from joserfc.jwk import KeySet

        keys = KeySet.import_key_set(requests.get(f"{self.base}/jwks", timeout=30).json())
        header = jws.extract_compact(token.encode()).protected
        return jwt.decode(token, keys, algorithms=[header["alg"]]).claims

    # --- what arrived ---
    def stored(self, client_ids=None, tenant: str | None = None) -> list:
        """(client_id, record_id, tenant, subject, area, status) of the stored records."""
        query = select(AccessRecord.client_id, AccessRecord.record_id, AccessRecord.tenant_id,
                       AccessRecord.subject, AccessRecord.area, AccessRecord.status)
        if client_ids is not None:
            query = query.where(AccessRecord.client_id.in_(list(client_ids)))
        if tenant is not None:
            query = query.where(AccessRecord.tenant_id == tenant)
        with self.db.read() as session:
            return [tuple(row) for row in session.execute(query)]

    def stored_count(self, client_ids) -> int:
        with self.db.read() as session:
            return session.scalar(select(func.count()).select_from(AccessRecord).where(
                AccessRecord.client_id.in_(list(client_ids))))

    def access_requests(self) -> list[dict]:
        """Every single record of TENANT through the tenant admin's API, page by page."""
        found, before = [], None
        while True:
            params = {"limit": 500, **({"before": before} if before else {})}
            response = requests.get(f"{self.base}/api/tenants/{TENANT}/access/requests",
                                    params=params, headers=self.bearer("anna"), timeout=60)
            assert response.status_code == 200, response.text
            found += response.json()["requests"]
            before = response.json()["next_before"]
            if before is None:
                return found

    def access_groups(self, **params) -> list[dict]:
        response = requests.get(f"{self.base}/api/tenants/{TENANT}/access", params=params,
                                headers=self.bearer("anna"), timeout=60)
        assert response.status_code == 200, response.text
        return response.json()["groups"]

    def audit_refusals(self, tenant: str) -> list:
        """(actor, record id, error) of the ``access_record.refused`` events of ``tenant``."""
        with self.db.read() as session:
            events = session.scalars(select(AuditEvent).where(
                AuditEvent.event == "access_record.refused",
                AuditEvent.tenant_id == tenant)).all()
            return sorted((e.client_id, e.detail.get("record_id"), e.detail.get("error"))
                          for e in events)

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        self.bridge.stop()
        self.db.dispose()


@pytest.fixture
def e2e(postgres, postgres_seeded, upstream, tmp_path):
    template, seed = postgres_seeded
    url = postgres.create_database(f"t_{uuid.uuid4().hex[:16]}", template=template)
    world = E2E(url, seed, upstream, tmp_path)
    try:
        world.bridge.start()
        yield world
    finally:
        world.close()


def assert_all_arrived_once(e2e: E2E, made: Counter, clients: list[str]) -> None:
    """``made`` counts the authorised requests per (receiver client, area): the database
    and the tenant admin's API hold exactly one record for each, and nothing else."""
    total = sum(made.values())
    rows = e2e.stored(clients)
    ids = Counter((client, record_id) for client, record_id, *_ in rows)
    assert len(rows) == total and max(ids.values()) == 1
    assert Counter((client, area) for client, _, _, _, area, _ in rows) == made
    assert {(tenant, subject, status) for _, _, tenant, subject, _, status in rows} == {
        (TENANT, BOB, 200)}
    listed = [r for r in e2e.access_requests() if r["resource_server"] in clients]
    assert len(listed) == total and len({r["id"] for r in listed}) == total
    assert Counter((r["resource_server"], r["area"]) for r in listed) == made
    assert {(r["advisor"], r["method"], r["status"], r["action"]) for r in listed} == {
        (BOB, "GET", 200, "read")}
    assert all(r["route"] == f"/tenants/<tenant>/{r['area']}" for r in listed)
    per_area, grouped = Counter(), Counter()
    for (_, area), count in made.items():
        per_area[area] += count
    for group in e2e.access_groups(advisor="bob"):
        assert (group["advisor"], group["action"]) == (BOB, "read")
        grouped[group["area"]] += group["count"]
    assert grouped == per_area


def drained(e2e: E2E, servers, clients, total: int):
    """True once every spool is shipped to its end and ``total`` records are stored."""
    return all(s.unshipped() == 0 for s in servers) and e2e.stored_count(clients) >= total


def _state(e2e: E2E, servers, clients) -> str:
    """For failure messages: what is stored and spooled, the logs of the servers that
    still hold records, the bridge's log."""
    waiting = {s.client_id: s.unshipped() for s in servers}
    stored = Counter(row[0] for row in e2e.stored(clients))
    first = sorted(servers, key=lambda s: not waiting[s.client_id])  # those still waiting
    logs = [f"--- {s.client_id}\n{_tail(s.log, 12)}" for s in first]
    return (f"stored {dict(stored)}; unshipped {waiting}\n" + "\n".join(logs[:4])
            + f"\n--- bridge\n{_tail(e2e.bridge.log, 30)}")


def _send_throughout(server: ResourceServer, token: str, until: float) -> None:
    """One sender: reads of the areas in turn on ``server`` until ``until`` (monotonic)."""
    with requests.Session() as http:
        i = 0
        while time.monotonic() < until:
            area = AREAS[i % len(AREAS)]
            i += 1
            try:
                status, error = server.get(area, token, http=http)
            except requests.RequestException as exc:  # the test fails on it below
                status, error = None, repr(exc)
            server.outage.append((time.monotonic(), area, status, error))
            time.sleep(PAUSE)


@pytest.mark.slow
def test_ten_resource_servers_through_a_minute_without_the_bridge(e2e):
    servers = [e2e.resource_server(f"rs-{i}") for i in range(10)]
    strict = e2e.resource_server("rs-default-staleness", staleness=None)
    everyone = [*servers, strict]
    clients = [s.client_id for s in everyone]
    for server in everyone:
        server.start()
    for server in everyone:
        server.wait_ready()
    token = e2e.advisor_token("bob")
    made = Counter()  # authorised (200) requests per (receiver client, area)

    # The bridge is up: a read of every area on every server, shipped at once.
    for server in everyone:
        for area in AREAS:
            assert server.get(area, token) == (200, None)
            made[server.client_id, area] += 1
        # A request the guard refuses (a token of TENANT on another tenant's URL) is no
        # authorised request: no record.
        assert server.get("ebics", token, tenant=OTHER_TENANT) == (401, "invalid_token")
    wait_until(lambda: drained(e2e, everyone, clients, sum(made.values())), timeout=60,
               what=lambda: f"the records made while the bridge was up: "
                            f"{_state(e2e, everyone, clients)}")
    assert e2e.stored_count(clients) == sum(made.values())

    # The bridge is down for a full minute; requests keep coming, spread over all servers.
    e2e.bridge.kill()
    down_at = time.monotonic()
    until = down_at + OUTAGE
    senders = [threading.Thread(target=_send_throughout, args=(s, token, until), daemon=True)
               for s in everyone]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(OUTAGE + 60)
    assert not any(sender.is_alive() for sender in senders)
    assert not e2e.bridge.reachable(), "the bridge must have been down all along"

    # The ten answered every advisor request of the outage, in every quarter of it.
    for server in servers:
        statuses = Counter(status for _, _, status, _ in server.outage)
        assert statuses == {200: len(server.outage)}, (server.client_id, statuses,
                                                       server.outage[-3:])
        quarters = {int(4 * (at - down_at) // OUTAGE) for at, *_ in server.outage}
        assert quarters >= {0, 1, 2, 3}, (server.client_id, quarters)
    # With the guard's default (30 s) the eleventh failed closed once its feed went stale:
    # 200 first, then only 401 invalid_token (refused, so not recorded).
    answers = [(status, error) for _, _, status, error in strict.outage]
    assert (401, "invalid_token") in answers, Counter(answers)
    first_refusal = answers.index((401, "invalid_token"))
    assert set(answers[:first_refusal]) <= {(200, None)}
    assert set(answers[first_refusal:]) == {(401, "invalid_token")}
    refused = requests.get(f"{strict.base}/tenants/{TENANT}/payments", timeout=30,
                           headers={"Authorization": f"Bearer {token}"})
    assert (refused.status_code, refused.json()) == (401, {
        "error": "invalid_token", "error_description": "revocation feed unavailable"})
    for server in everyone:
        for _, area, status, _ in server.outage:
            if status == 200:
                made[server.client_id, area] += 1
    outage_made = {s.client_id: sum(1 for o in s.outage if o[2] == 200) for s in everyone}

    # Nothing could be shipped: each server's spool holds every record of the outage.
    wait_until(lambda: all(s.unshipped() == outage_made[s.client_id] for s in everyone),
               timeout=30, what=lambda: f"the outage's records in the spools: "
                                        f"{ {s.client_id: s.unshipped() for s in everyone} } "
                                        f"of {outage_made}")
    before_restart = e2e.stored_count(clients)

    # The bridge comes back (same database, same port): every record arrives, exactly once.
    e2e.bridge.start()
    up_at = time.monotonic()
    assert before_restart == sum(made.values()) - sum(outage_made.values())

    # The strict server serves again once its feed is current again.
    def strict_serves():
        status, error = strict.get("payments", token)
        assert (status, error) in ((200, None), (401, "invalid_token"))
        return status == 200

    wait_until(strict_serves, timeout=90, interval=0.5,
               what=lambda: f"the default-staleness server serving again\n{_tail(strict.log)}")
    made[strict.client_id, "payments"] += 1

    total = sum(made.values())
    wait_until(lambda: drained(e2e, everyone, clients, total), timeout=120, interval=0.5,
               what=lambda: f"all {total} records stored: {_state(e2e, everyone, clients)}")
    stored_at = time.monotonic()
    assert_all_arrived_once(e2e, made, clients)
    assert e2e.stored(tenant=OTHER_TENANT) == []
    print(f"\n{total} records of 11 resource servers, {sum(outage_made.values())} made "
          f"during the {up_at - down_at:.0f} s outage, all stored {stored_at - up_at:.1f} s "
          f"after the restart")


@pytest.mark.slow
def test_killed_resource_server_ships_its_spool_after_the_restart(e2e):
    server = e2e.resource_server("rs-killed")
    clients = [server.client_id]
    server.start()
    server.wait_ready()
    token = e2e.advisor_token("bob")
    made = Counter()
    assert server.get("ebics", token) == (200, None)
    made[server.client_id, "ebics"] += 1
    wait_until(lambda: drained(e2e, [server], clients, 1), timeout=60,
               what=lambda: f"the first record shipped: {_state(e2e, [server], clients)}")

    # The bridge down: the records are spooled (fsynced) but cannot be shipped ...
    e2e.bridge.kill()
    for i in range(30):
        area = AREAS[i % len(AREAS)]
        assert server.get(area, token) == (200, None)
        made[server.client_id, area] += 1
    wait_until(lambda: server.unshipped() == 30, timeout=30,
               what=lambda: f"30 records spooled, {server.unshipped()} are")
    killed_pid = server.process.pid
    assert server.segment_pids() == {killed_pid}
    # ... when the resource server is killed.
    server.kill()
    assert server.unshipped() == 30

    e2e.bridge.start()
    assert e2e.stored_count(clients) == 1  # the spool is this server's; nobody else ships it
    server.start()  # same spool folder, same port: the new process adopts the orphan
    server.wait_ready()
    wait_until(lambda: drained(e2e, [server], clients, 31), timeout=60,
               what=lambda: f"the killed server's records: {_state(e2e, [server], clients)}")
    # The adopted segments are deleted once shipped (the killed process's lock with them).
    wait_until(lambda: killed_pid not in server.segment_pids() and not any(
        p.name.startswith(f"access-{killed_pid}-") for p in server.spool.iterdir()),
        timeout=30, what=lambda: f"the adopted spool removed: {sorted(server.spool.iterdir())}")
    # The restarted server records as before.
    for area in AREAS:
        assert server.get(area, token) == (200, None)
        made[server.client_id, area] += 1
    total = sum(made.values())
    wait_until(lambda: drained(e2e, [server], clients, total), timeout=60,
               what=lambda: f"all {total} records: {_state(e2e, [server], clients)}")
    assert_all_arrived_once(e2e, made, clients)


def _record(claims: dict, **overrides) -> dict:
    now = datetime.now(timezone.utc)
    value = {"id": str(uuid.uuid4()), "tenant": claims["tenant"], "grant_id": claims["grant_id"],
             "sid": claims["sid"], "sub": claims["sub"], "area": "ebics", "action": "read",
             "method": "GET", "route": "/tenants/<tenant>/ebics", "status": 200,
             "at": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"}
    value.update(overrides)
    return value


@pytest.mark.slow
def test_forged_records_over_http_are_refused_audited_and_not_stored(e2e):
    rogue = "rs-rogue"
    auth = (rogue, e2e.receiver(rogue))
    claims = e2e.claims(e2e.advisor_token("bob"))
    assert (claims["tenant"], claims["sub"]) == (TENANT, BOB)
    good = _record(claims)
    other_tenant = _record(claims, tenant=OTHER_TENANT)  # bob's grant, claimed elsewhere
    forged_grant = _record(claims, grant_id=str(uuid.uuid4()))
    other_advisor = _record(claims, sub=CAROL)  # bob's grant, claimed for carol
    assert e2e.audit_refusals(TENANT) == e2e.audit_refusals(OTHER_TENANT) == []

    response = requests.post(f"{e2e.base}/access-records", auth=auth, timeout=30,
                             json={"records": [good, other_tenant, forged_grant, other_advisor]})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["accepted"] == [good["id"]] and answer["duplicates"] == []
    assert {r["id"]: r["error"] for r in answer["refused"]} == {
        other_tenant["id"]: "grant_tenant_mismatch", forged_grant["id"]: "unknown_grant",
        other_advisor["id"]: "subject_mismatch"}
    # Refused: never stored, audited in the tenant each record claimed.
    assert [row[1] for row in e2e.stored([rogue])] == [good["id"]]
    assert e2e.stored(tenant=OTHER_TENANT) == []
    assert e2e.audit_refusals(OTHER_TENANT) == [(rogue, other_tenant["id"],
                                                 "grant_tenant_mismatch")]
    assert e2e.audit_refusals(TENANT) == sorted([
        (rogue, forged_grant["id"], "unknown_grant"),
        (rogue, other_advisor["id"], "subject_mismatch")])
    # The tenant admin sees the refusals in the audit log and only the true record.
    audit = requests.get(f"{e2e.base}/api/tenants/{TENANT}/audit-events",
                         params={"event": "access_record.refused", "limit": 500},
                         headers=e2e.bearer("anna"), timeout=30)
    assert audit.status_code == 200, audit.text
    assert sorted((e["actor"], e["detail"]["error"]) for e in audit.json()["events"]) == [
        (rogue, "subject_mismatch"), (rogue, "unknown_grant")]
    assert [(r["resource_server"], r["advisor"], r["grant_id"], r["sid"])
            for r in e2e.access_requests()] == [(rogue, BOB, claims["grant_id"], claims["sid"])]

    # A batch sent twice (its answer lost, say) is stored once: the second time every record
    # is answered as a duplicate.
    batch = [_record(claims, area=area, route=f"/tenants/<tenant>/{area}") for area in AREAS]
    first = requests.post(f"{e2e.base}/access-records", auth=auth, timeout=30,
                          json={"records": batch})
    again = requests.post(f"{e2e.base}/access-records", auth=auth, timeout=30,
                          json={"records": batch})
    ids = [r["id"] for r in batch]
    assert (first.status_code, first.json()) == (200, {"accepted": ids, "duplicates": [],
                                                       "refused": []})
    assert (again.status_code, again.json()) == (200, {"accepted": [], "duplicates": ids,
                                                       "refused": []})
    stored = Counter(row[1] for row in e2e.stored([rogue]))
    assert stored == Counter([good["id"], *ids])
    assert len(e2e.access_requests()) == 1 + len(batch)
    assert len(e2e.audit_refusals(TENANT)) == 2  # duplicates are no refusals


# --- the example resource server's setting for outages (no process) ---

def _example():
    import importlib.util

    spec = importlib.util.spec_from_file_location("example_rs_outage", EXAMPLE_RS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("value, seconds", [(None, 30.0), ("", 30.0), (" 300 ", 300.0),
                                            ("0.5", 0.5), ("86400", 86400.0)])
def test_example_feed_staleness_from_the_environment(value, seconds):
    environ = {} if value is None else {"RS_FEED_STALENESS": value}
    assert _example().feed_staleness(environ) == seconds


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "86401", "30s", "1e400"])
def test_example_refuses_a_bad_feed_staleness_naming_it(value):
    # nan would never count as stale: the guard would stop failing closed.
    with pytest.raises(ValueError, match="RS_FEED_STALENESS"):
        _example().feed_staleness({"RS_FEED_STALENESS": value})
