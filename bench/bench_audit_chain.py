"""What the audit hash chain costs a token exchange (issue 15 item 4).

In-process (the Flask app's test client, no socket): ``--count`` token exchanges by two
advisors of one tenant, each writing its ``token.issued`` audit event, on SQLite (WAL, the
bridge's pragmas) and, with ``--postgresql``, on a throw-away PostgreSQL server
(``tests/services.py``, ``fsync=off`` like the tests: what is measured is the bridge's own
work, not the disk). The exchanges run in batches, with the chain and without it (each
event then one plain insert, as before the chain) in turn in one process, so that the load
of a shared machine falls on both alike: per exchange the median wall and CPU time of
each, the median of the per-round ratios, p50/p99; and the CPU time of one
``audit.record`` in an otherwise empty write transaction, with and without the chain.
Bounded by ``--count``.

With ``--postgresql`` also the write transactions/s of 8 threads into one tenant's chain and
into a chain each, on a durable PostgreSQL (fsync on): the chain orders a tenant's events
one after the other, so its writers queue on the chain's head until each commit is on disk.

Writes ``bench/results/audit_chain.json``.

    python -m bench.bench_audit_chain [--count 3000] [--postgresql]
"""

from __future__ import annotations

import argparse
import itertools
import json
import secrets
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cryptography.fernet import Fernet  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from bench.common import free_port, percentile, write_result  # noqa: E402

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
TENANT = "10042"


def _app(database_url: str, issuer_of_provider: str):
    from idp_bridge.app import create_app
    from idp_bridge.services.operator import add_client, add_tenant
    from idp_bridge.settings import Settings
    from idp_bridge.storage.db import Database

    db = Database(database_url)
    db.upgrade()
    add_tenant(db, TENANT, "Muster GmbH")
    secret = add_client(db, "advisor-console")
    settings = Settings.load({
        "mode": "test", "issuer": "http://127.0.0.1:8000", "database_url": database_url,
        "secret_key": secrets.token_urlsafe(32),
        "key_encryption_key": Fernet.generate_key().decode(),
        "upstream_issuer": issuer_of_provider}, environ={})
    return create_app(settings, database=db), secret


class ChainSwitch:
    """Turns the chain off and on in this process (the benchmark's baseline): off, each
    queued audit event is one plain insert at the commit, as before the chain (into a chain
    of its own that nothing reads, numbered from a counter); on, the bridge's writer."""

    def __init__(self):
        from sqlalchemy.orm import Session

        from idp_bridge.domain import audit  # noqa: F401  (registers the writer)
        from idp_bridge.domain import audit_chain

        self._session, self._chain = Session, audit_chain
        self._numbers = itertools.count(1)
        self.on = True

    def _plain(self, session) -> None:
        pending = session.info.pop(self._chain.PENDING, None)
        if pending:
            self._chain._INSERT_EVENT.run_many(session, [
                {**v, "chain": "bench-baseline", "seq": next(self._numbers), "hash": "-"}
                for v in pending])

    def set(self, on: bool) -> None:
        from sqlalchemy import event

        if on == self.on:
            return
        old, new = ((self._plain, self._chain.link_pending) if on
                    else (self._chain.link_pending, self._plain))
        event.remove(self._session, "before_commit", old)
        event.listen(self._session, "before_commit", new)
        self.on = on


def measure_exchange(database_url: str, provider, count: int, rounds: int = 30) -> dict:
    """``rounds`` pairs of batches of ``count // rounds`` exchanges, chain on and off in
    turn (the order alternating), in one process: the machine's other load falls on both
    alike. Per exchange: wall and CPU time of each batch, their medians, and the median of
    the per-round ratios."""
    app, secret = _app(database_url, provider.issuer)
    client = app.test_client()
    auth = ("advisor-console", secret)
    tokens = {u: provider.issue_tokens(u)["access_token"] for u in ("bob", "carol")}
    admin = provider.issue_tokens("anna")["access_token"]
    for user, token in tokens.items():
        code = client.get(f"/api/tenants/{TENANT}/access-code",
                          headers={"Authorization": f"Bearer {admin}"}).json["code"]
        answer = client.post("/token", auth=auth, data={
            "grant_type": TOKEN_EXCHANGE, "subject_token": token,
            "subject_token_type": ACCESS_TOKEN_TYPE, "tenant": TENANT, "access_code": code})
        assert answer.status_code == 200, answer.json
    forms = [{"grant_type": TOKEN_EXCHANGE, "subject_token": t,
              "subject_token_type": ACCESS_TOKEN_TYPE, "tenant": TENANT}
             for t in tokens.values()]
    switch = ChainSwitch()
    for on in (True, False, True):  # warm-up: caches, prepared statements, the key ring
        switch.set(on)
        for i in range(100):
            assert client.post("/token", auth=auth, data=forms[i % 2]).status_code == 200
    batch = max(10, count // rounds)
    times = {True: {"wall": [], "cpu": []}, False: {"wall": [], "cpu": []}}
    latencies = {True: [], False: []}
    for round_ in range(rounds):
        for on in ((True, False) if round_ % 2 else (False, True)):
            switch.set(on)
            wall, cpu = time.perf_counter(), time.process_time()
            for i in range(batch):
                t0 = time.perf_counter()
                answer = client.post("/token", auth=auth, data=forms[i % 2])
                latencies[on].append(time.perf_counter() - t0)
                assert answer.status_code == 200, answer.json
            times[on]["wall"].append((time.perf_counter() - wall) / batch)
            times[on]["cpu"].append((time.process_time() - cpu) / batch)
    switch.set(True)
    services = app.extensions["idp_bridge"]
    record = {"with_chain": measure_record(services.db)}
    switch.set(False)
    record["without_chain"] = measure_record(services.db)
    switch.set(True)
    services.db.dispose()

    def ms(values):
        return round(statistics.median(values) * 1000, 3)

    result = {"rounds": rounds, "exchanges_per_batch": batch}
    for on, name in ((True, "with_chain"), (False, "without_chain")):
        result[name] = {"wall_ms_median": ms(times[on]["wall"]),
                        "cpu_ms_median": ms(times[on]["cpu"]),
                        "p50_ms": round(percentile(latencies[on], 50) * 1000, 3),
                        "p99_ms": round(percentile(latencies[on], 99) * 1000, 3),
                        "audit_record": record[name]}
    for key in ("wall", "cpu"):
        ratios = [a / b for a, b in zip(times[True][key], times[False][key])]
        result[f"{key}_ratio_with_over_without_median"] = round(statistics.median(ratios), 3)
    return result


def measure_record(db, count: int = 2000) -> dict:
    """CPU time of one audit.record (a token.issued as the exchange writes it) in its own
    write transaction, less that of the empty transaction."""
    from idp_bridge.domain import audit
    from idp_bridge.storage.db import utcnow

    def loop(write: bool) -> float:
        started = time.process_time()
        for _ in range(count):
            with db.transaction() as session:
                if write:
                    audit.record(session, "token.issued", utcnow(), tenant_id=TENANT,
                                 actor="bench", actor_role="advisor", client_id="c",
                                 membership_id="m", sid="f", scope="payments:read ebics:read",
                                 audience="konfipay-api")
                else:
                    session.connection()
        return (time.process_time() - started) / count

    loop(True)
    empty, written = loop(False), loop(True)
    return {"transactions": count, "cpu_empty_transaction_us": round(empty * 1e6, 1),
            "cpu_with_record_us": round(written * 1e6, 1),
            "cpu_record_us": round((written - empty) * 1e6, 1)}


def measure_contention(db, threads: int = 8, seconds: float = 5.0) -> dict:
    """Write transactions/s of ``threads`` threads, each transaction one audit event
    (token.issued), all into one tenant's chain (they queue on its head) and each thread
    into a tenant of its own: what the per-chain order costs under concurrent writers."""
    from idp_bridge.domain import audit
    from idp_bridge.storage.db import utcnow

    def run(tenant_of) -> float:
        done = [0] * threads
        stop = time.monotonic() + seconds

        def writer(i):
            while time.monotonic() < stop:
                with db.transaction() as session:
                    audit.record(session, "token.issued", utcnow(), tenant_id=tenant_of(i),
                                 actor=f"bench-{i}", actor_role="advisor")
                done[i] += 1

        workers = [threading.Thread(target=writer, args=(i,)) for i in range(threads)]
        started = time.monotonic()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return round(sum(done) / (time.monotonic() - started))

    return {"threads": threads, "seconds": seconds,
            "one_tenant_per_second": run(lambda i: TENANT),
            "tenant_per_thread_per_second": run(lambda i: f"bench-{i}")}


def main(argv=None) -> dict:
    from idp_bridge.devidp import DevProvider

    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--postgresql", action="store_true")
    parser.add_argument("--label", default=None, help="stored with the result (e.g. a commit)")
    args = parser.parse_args(argv)
    port = free_port()
    provider = DevProvider(f"http://127.0.0.1:{port}", mode="test", access_token_lifetime=3600)
    idp = make_server("127.0.0.1", port, provider.create_app(), threaded=True)
    threading.Thread(target=idp.serve_forever, daemon=True).start()
    result = {"label": args.label,
              "setup": "in-process test client, one thread; chain on and off alternating "
                       "in one process"}
    try:
        with tempfile.TemporaryDirectory(prefix="idp-bridge-bench-") as workdir:
            result["sqlite"] = measure_exchange(f"sqlite:///{workdir}/bench.sqlite", provider,
                                                args.count)
        if args.postgresql:
            from idp_bridge.storage.db import Database
            from services import PostgresServer

            server = PostgresServer()
            try:
                result["postgresql"] = measure_exchange(server.create_database("bench"),
                                                        provider, args.count)
            finally:
                server.close()
            # Durable (fsync on): a commit waits for the disk, and so does the next writer
            # of the same chain.
            server = PostgresServer(durable=True)
            try:
                db = Database(server.create_database("contention"))
                db.upgrade()
                result["postgresql_durable_contention"] = measure_contention(db)
                db.dispose()
            finally:
                server.close()
    finally:
        idp.shutdown()
    path = write_result("audit_chain", result)
    print(json.dumps(result, indent=2))
    print(f"written to {path}")
    return result


if __name__ == "__main__":
    main()
