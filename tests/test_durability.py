"""Durability (issue 16 item 2): every exchange, refresh and removal is on disk before its
response. On SQLite each unit of work waits, after its commit, for an fdatasync of the WAL
that began after the commit (group commit: ``storage.db.WalFlush``); strace, attached to this
very process, shows an fdatasync or fsync of the database's WAL between the start of each
request and its answer. A bridge killed with SIGKILL right after a 204 removal finds the
removal there after its restart. Writers of several processes queue on an flock
(``storage.db.WriterLock``), never on SQLite's busy handler."""

from __future__ import annotations

import multiprocessing
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from cryptography.fernet import Fernet
from sqlalchemy import select, text

from conftest import ACCESS_TOKEN_TYPE, CLIENT_ID, TENANT, TOKEN_EXCHANGE, wait_until
from idp_bridge.devidp import DEMO_USERS
from idp_bridge.storage.db import Database, StorageUnavailable, WalFlush
from idp_bridge.storage.models import Membership
from test_access_records_e2e import ServedBridge, stable_port

REFRESH = "refresh_token"


@pytest.mark.db_independent
def test_sqlite_files_commit_normal_and_flush_in_the_unit_of_work(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'bridge.sqlite'}")
    try:
        for _ in range(3):  # several pooled connections, each set up the same
            with db.engine.connect() as connection:
                # NORMAL: the transaction's own flush makes the commit durable.
                assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1
                assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert isinstance(db.flush, WalFlush)
        before = db.flush.flushes
        with db.transaction() as session:
            session.execute(text("CREATE TABLE t (x INTEGER)"))
        with db.transaction() as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
        assert db.flush.flushes == before + 2
        with db.read() as session:  # a read flushes nothing
            assert session.execute(text("SELECT count(*) FROM t")).scalar() == 1
        assert db.flush.flushes == before + 2
        # A failing unit of work rolls back and flushes nothing.
        with pytest.raises(ZeroDivisionError):
            with db.transaction() as session:
                session.execute(text("INSERT INTO t VALUES (2)"))
                1 / 0
        assert db.flush.flushes == before + 2
    finally:
        db.dispose()


@pytest.mark.db_independent
def test_an_in_memory_database_keeps_full_sync_and_has_no_flush():
    db = Database("sqlite://")
    try:
        with db.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert db.flush is None
    finally:
        db.dispose()


class _CountingFlush(WalFlush):
    """A WalFlush whose fdatasync blocks until released, to watch callers group."""

    def __init__(self, path):
        super().__init__(path)
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()
        self.calls = 0

    def _fdatasync(self):
        self.calls += 1
        self.entered.release()
        assert self.release.wait(30)
        super()._fdatasync()


@pytest.mark.db_independent
def test_callers_arriving_during_a_flush_share_the_next_one(tmp_path):
    database = tmp_path / "x.sqlite"
    database.write_bytes(b"")
    flush = _CountingFlush(database)
    first = threading.Thread(target=flush)
    first.start()
    assert flush.entered.acquire(timeout=30)  # the first flush is running (blocked)
    # Five callers arrive while it runs: it may have begun before their commits, so none of
    # them may return on it; they need one more flush, which serves all five.
    done = []
    later = [threading.Thread(target=lambda: (flush(), done.append(1))) for _ in range(5)]
    for thread in later:
        thread.start()
    wait_until(lambda: flush._state._waiters and len(flush._state._waiters) == 5, timeout=30,
               what="five callers waiting")
    assert done == []
    flush.release.set()
    first.join(30)
    for thread in later:
        thread.join(30)
    assert len(done) == 5
    assert flush.calls == 2 and flush.flushes == 2


@pytest.mark.db_independent
def test_a_failed_flush_raises_and_the_next_caller_flushes_again(tmp_path, monkeypatch):
    database = tmp_path / "x.sqlite"
    database.write_bytes(b"")
    flush = WalFlush(database)
    real = os.fdatasync
    failures = iter([OSError(5, "Input/output error")])

    def fdatasync(fd):
        for error in failures:
            raise error
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    with pytest.raises(StorageUnavailable):
        flush()
    assert flush.flushes == 0
    flush()  # not marked done by the failure: a new flush runs
    assert flush.flushes == 1


@pytest.mark.db_independent
def test_a_flush_without_wal_flushes_the_database_and_without_either_fails(tmp_path):
    database = tmp_path / "x.sqlite"
    flush = WalFlush(database)
    with pytest.raises(StorageUnavailable):
        flush()  # nothing on disk to make durable: never claim it is
    database.write_bytes(b"")
    flush()
    assert flush.flushes == 1


def _write_rows(url: str, tag: int, count: int, barrier) -> None:
    db = Database(url)
    try:
        barrier.wait(60)
        for i in range(count):
            with db.transaction() as session:
                # Read-modify-write: without one writer at a time across processes the
                # counter would lose increments (or the busy handler would time out).
                value = session.execute(text("SELECT n FROM counter")).scalar_one()
                session.execute(text("UPDATE counter SET n = :n"), {"n": value + 1})
                session.execute(text("INSERT INTO seen VALUES (:tag, :i)"), {"tag": tag, "i": i})
    finally:
        db.dispose()


@pytest.mark.slow
@pytest.mark.db_independent
def test_writers_of_several_processes_take_turns_on_the_flock(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    db = Database(url)
    with db.transaction() as session:
        session.execute(text("CREATE TABLE counter (n INTEGER)"))
        session.execute(text("INSERT INTO counter VALUES (0)"))
        session.execute(text("CREATE TABLE seen (tag INTEGER, i INTEGER)"))
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(3)
    workers = [context.Process(target=_write_rows, args=(url, tag, 150, barrier))
               for tag in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    with db.read() as session:
        assert session.execute(text("SELECT n FROM counter")).scalar_one() == 450
        assert session.execute(text("SELECT count(*) FROM seen")).scalar_one() == 450
    db.dispose()


@pytest.mark.slow
@pytest.mark.db_independent
def test_the_writer_lock_excludes_another_process_until_released(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    db = Database(url)
    lock_file = tmp_path / "shared.sqlite.writer-lock"
    probe = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR);\n"
             "try:\n fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n"
             "except BlockingIOError:\n print('held')")
    try:
        with db._writer:
            assert lock_file.exists()
            held = subprocess.run([sys.executable, "-c", probe, str(lock_file)],
                                  capture_output=True, text=True, timeout=60)
            assert held.stdout.strip() == "held", held.stderr
        free = subprocess.run([sys.executable, "-c", probe, str(lock_file)],
                              capture_output=True, text=True, timeout=60)
        assert free.stdout.strip() == "free", free.stderr
    finally:
        db.dispose()


# --- the flushes, counted with strace -----------------------------------------------------------

class Strace:
    """strace attached to this process, tracing fsync and fdatasync with the file names."""

    def __init__(self, log: Path):
        strace = shutil.which("strace")
        assert strace, "strace is needed to count the flushes (.ci/run installs it)"
        self.log = log
        self.process = subprocess.Popen(
            [strace, "-f", "-p", str(os.getpid()), "-e", "trace=fsync,fdatasync", "-y",
             "-qq", "-o", str(log)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        # Attached once a marker's flush shows in its output (a deadline, no fixed sleep).
        self.marker_dir = log.parent
        wait_until(self._sees_probe, timeout=30, interval=0.05,
                   what=lambda: "strace attached to the test process "
                                f"({self._stderr_if_exited()})")

    def _stderr_if_exited(self) -> str:
        if self.process.poll() is None:
            return "still starting"
        return self.process.stderr.read().decode(errors="replace")[:500]

    def _sees_probe(self) -> bool:
        assert self.process.poll() is None, f"strace exited: {self._stderr_if_exited()}"
        self.mark("probe")
        return self.log.exists() and "marker-probe" in self.log.read_text()

    def mark(self, name: str) -> None:
        """A flush of the file ``marker-NAME``: a point in the trace."""
        fd = os.open(self.marker_dir / f"marker-{name}", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def stop(self) -> list[str]:
        self.mark("end")
        wait_until(lambda: "marker-end" in self.log.read_text(), timeout=30, interval=0.05,
                   what="strace wrote the last marker")
        self.process.send_signal(signal.SIGINT)  # detaches; the traced process goes on
        self.process.wait(30)
        return self.log.read_text().splitlines()


def flushes_between(lines: list[str], start: str, end: str, path: str) -> int:
    """How many fsync/fdatasync of ``path`` the trace shows between the two markers."""
    begin = next(i for i, line in enumerate(lines) if f"marker-{start}>" in line)
    finish = next(i for i, line in enumerate(lines) if f"marker-{end}>" in line)
    pattern = re.compile(r"\b(fsync|fdatasync)\(\d+<" + re.escape(path) + r">\)")
    return sum(1 for line in lines[begin:finish] if pattern.search(line))


@pytest.mark.slow
@pytest.mark.db_independent  # SQLite's flushes (PostgreSQL's server flushes its own WAL)
def test_each_exchange_refresh_and_removal_is_flushed_before_its_answer(bridge, tmp_path,
                                                                        backend):
    assert backend == "sqlite"
    database = bridge.services.db.url.database
    wal = str(Path(database).resolve()) + "-wal"
    code = bridge.current_code()
    tracer = Strace(tmp_path / "strace.txt")
    try:
        tracer.mark("join-start")
        joined = bridge.exchange("bob", code=code)
        tracer.mark("join-end")
        assert joined.status_code == 200, joined.json
        answers = []
        for i in range(3):
            tracer.mark(f"exchange-{i}-start")
            answers.append(bridge.exchange("bob"))
            tracer.mark(f"exchange-{i}-end")
        tracer.mark("refresh-start")
        refreshed = bridge.token({"grant_type": REFRESH,
                                  "refresh_token": joined.json["refresh_token"]})
        tracer.mark("refresh-end")
        membership = bridge.membership_id("bob")
        tracer.mark("remove-start")
        removed = bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{membership}")
        tracer.mark("remove-end")
    finally:
        lines = tracer.stop()
    assert [a.status_code for a in answers] == [200, 200, 200], [a.json for a in answers]
    assert refreshed.status_code == 200, refreshed.json
    assert removed.status_code == 204, removed.get_data(True)
    for step in ("join", *(f"exchange-{i}" for i in range(3)), "refresh", "remove"):
        assert flushes_between(lines, f"{step}-start", f"{step}-end", wal) >= 1, (
            step, [line for line in lines if "marker" in line or wal in line][:40])
    # The markers themselves prove strace saw this thread's flushes; and a read-only
    # request flushes nothing (it commits nothing).
    tracer = Strace(tmp_path / "strace-read.txt")
    try:
        tracer.mark("read-start")
        listed = bridge.api("get", f"/api/tenants/{TENANT}/memberships")
        tracer.mark("read-end")
    finally:
        lines = tracer.stop()
    assert listed.status_code == 200
    assert flushes_between(lines, "read-start", "read-end", wal) == 0


# --- SIGKILL right after a removal ------------------------------------------------------------

@pytest.mark.slow
def test_a_removal_answered_204_survives_a_sigkill(settings, upstream, new_database_url,
                                                  tmp_path):
    from conftest import _seeded

    url = new_database_url()
    seed = _seeded[url]
    port = stable_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_BRIDGE_")}
    env.update({"IDP_BRIDGE_MODE": "test", "IDP_BRIDGE_ISSUER": f"http://127.0.0.1:{port}",
                "IDP_BRIDGE_DATABASE_URL": url,
                "IDP_BRIDGE_SECRET_KEY": secrets.token_urlsafe(32),
                "IDP_BRIDGE_KEY_ENCRYPTION_KEY": Fernet.generate_key().decode(),
                "IDP_BRIDGE_UPSTREAM_ISSUER": upstream.issuer, "IDP_BRIDGE_LOG_FORMAT": "text"})
    served = ServedBridge(env, port, tmp_path / "bridge.log")
    served.start()
    try:
        def bearer(user):
            return {"Authorization": f"Bearer {upstream.issue_tokens(user)['access_token']}"}

        code = requests.get(f"{served.base}/api/tenants/{TENANT}/access-code",
                            headers=bearer("anna"), timeout=30).json()["code"]
        joined = requests.post(f"{served.base}/token", auth=(CLIENT_ID, seed.secret), timeout=30,
                               data={"grant_type": TOKEN_EXCHANGE, "tenant": TENANT,
                                     "subject_token": upstream.issue_tokens("bob")["access_token"],
                                     "subject_token_type": ACCESS_TOKEN_TYPE,
                                     "access_code": code})
        assert joined.status_code == 200, joined.text
        listed = requests.get(f"{served.base}/api/tenants/{TENANT}/memberships",
                              headers=bearer("anna"), timeout=30).json()["memberships"]
        membership = next(m["id"] for m in listed if m["advisor"] == DEMO_USERS["bob"]["sub"])
        removed = requests.delete(f"{served.base}/api/tenants/{TENANT}/memberships/{membership}",
                                  headers=bearer("anna"), timeout=30)
        assert removed.status_code == 204, removed.text
        served.kill()  # at once: no clean shutdown, nothing flushed on the way out
        served.start()
        db = Database(url)
        try:
            with db.read() as session:
                row = session.get(Membership, membership)
                assert row is not None and row.ended_at is not None
                assert row.end_reason == "removed_by_tenant", row.end_reason
        finally:
            db.dispose()
        # The restarted bridge refuses the removed advisor's refresh token.
        again = requests.post(f"{served.base}/token", auth=(CLIENT_ID, seed.secret), timeout=30,
                              data={"grant_type": REFRESH,
                                    "refresh_token": joined.json()["refresh_token"]})
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant", again.text
    finally:
        served.stop()


# --- PostgreSQL: no pre-ping round trip per request ---------------------------------------------

def _terminate_backends(postgres, db: Database) -> None:
    """End, from an admin connection, every server connection to ``db``'s database."""
    admin = Database(postgres.admin_url)
    try:
        with admin.engine.connect() as connection:
            ended = connection.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"),
                {"name": db.url.database}).scalar()
        assert ended >= 1
    finally:
        admin.dispose()


def _pings(monkeypatch) -> list:
    """Counts the idle-connection pings (storage.db._ping_if_idle that reached the server)."""
    from idp_bridge.storage import db as storage

    seen = []
    real = storage._ping_if_idle

    def counting(dbapi_connection, record, proxy):
        since = record.info.get(storage._CHECKED_IN)
        if since is not None and time.monotonic() - since >= storage.IDLE_BEFORE_PING:
            seen.append(1)
        return real(dbapi_connection, record, proxy)

    monkeypatch.setattr(storage, "_ping_if_idle", counting)
    return seen


@pytest.mark.slow
@pytest.mark.db_independent
def test_postgres_connections_in_steady_use_are_not_pinged_idle_ones_are(postgres, monkeypatch):
    from idp_bridge.storage import db as storage

    pings = _pings(monkeypatch)
    monkeypatch.setattr(storage, "IDLE_BEFORE_PING", 3600.0)
    db = Database(postgres.create_database(f"t_{uuid.uuid4().hex[:16]}"))
    try:
        for _ in range(5):
            with db.read() as session:
                assert session.execute(text("SELECT 1")).scalar() == 1
        assert pings == []  # in use: no ping round trip
        # The server ends the pooled connection; a connection in use meets it once (503),
        # which invalidates the pool: the next request gets a fresh connection.
        _terminate_backends(postgres, db)
        with pytest.raises(StorageUnavailable):
            with db.read() as session:
                session.execute(text("SELECT 1"))
        with db.read() as session:
            assert session.execute(text("SELECT 1")).scalar() == 1
        # An idle connection is pinged before use: the ended one is replaced without an error.
        monkeypatch.setattr(storage, "IDLE_BEFORE_PING", 0.0)
        _terminate_backends(postgres, db)
        with db.read() as session:
            assert session.execute(text("SELECT 1")).scalar() == 1
        assert len(pings) >= 1
        # The ping's own transaction ended before the connection was handed out: an
        # isolation-level change (which the driver refuses inside a transaction) works.
        pinged = len(pings)
        with db.engine.connect() as connection:
            assert len(pings) == pinged + 1
            assert connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("SELECT 1")).scalar() == 1
    finally:
        db.dispose()


@pytest.mark.db_independent
def test_an_exchange_whose_flush_fails_answers_503_without_tokens(bridge, backend, monkeypatch):
    """The answer never claims what the disk did not confirm: a failing fdatasync after the
    commit answers 503 ``temporarily_unavailable`` without tokens; the family it committed
    was never handed out (only its refresh token's hash is stored), and the next exchange,
    with the disk back, works."""
    assert backend == "sqlite"
    from sqlalchemy import func

    from idp_bridge.storage.models import TokenFamily

    bridge.join("bob")
    db = bridge.services.db
    real = os.fdatasync

    def failing(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    refused = bridge.exchange("bob")
    monkeypatch.setattr(os, "fdatasync", real)
    assert refused.status_code == 503, refused.json
    assert refused.json["error"] == "temporarily_unavailable"
    assert "access_token" not in refused.json and "refresh_token" not in refused.json
    with db.read() as session:
        before = session.execute(func.count(TokenFamily.sid)).scalar_one()
    again = bridge.exchange("bob")
    assert again.status_code == 200, again.json
    with db.read() as session:
        assert session.execute(func.count(TokenFamily.sid)).scalar_one() == before + 1


@pytest.mark.db_independent
def test_a_failed_flush_still_runs_the_wake_ups_of_the_committed_work(tmp_path, monkeypatch):
    from idp_bridge.storage.db import after_commit

    db = Database(f"sqlite:///{tmp_path / 'x.sqlite'}")
    try:
        with db.transaction() as session:
            session.execute(text("CREATE TABLE t (x INTEGER)"))
        woken = []

        def failing(fd):
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "fdatasync", failing)
        with pytest.raises(StorageUnavailable):
            with db.transaction() as session:
                session.execute(text("INSERT INTO t VALUES (1)"))
                after_commit(session, lambda: woken.append(1))
        assert woken == [1]  # a removal's receivers are woken: its commit is visible
        with db.read() as session:
            assert session.execute(text("SELECT count(*) FROM t")).scalar_one() == 1
    finally:
        db.dispose()
