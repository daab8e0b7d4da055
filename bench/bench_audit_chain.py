"""What the audit hash chain costs a token exchange (issue 15 item 4).

In-process (the Flask app's test client, no socket): ``--count`` token exchanges by two
advisors of one tenant, each writing its ``token.issued`` audit event, on SQLite (WAL, the
bridge's pragmas) and, with ``--postgresql``, on a throw-away PostgreSQL server
(``tests/services.py``, ``fsync=off`` like the tests: what is measured is the bridge's own
work, not the disk). Reports the mean, p50/p99 and this process's CPU time of one exchange, and the CPU time of
one ``audit.record`` call inside an otherwise empty write transaction. Bounded by
``--count``. To compare with a revision before the chain, run the same file from a copy of
that revision (``git archive <rev> | tar -x -C /tmp/before``, copy this file into its
``bench/``, ``cd /tmp/before && python -m bench.bench_audit_chain``).

With ``--postgresql`` also the write transactions/s of 8 threads into one tenant's chain and
into a chain each, on a durable PostgreSQL (fsync on): the chain orders a tenant's events
one after the other, so its writers queue on the chain's head until each commit is on disk.

Writes ``bench/results/audit_chain.json``.

    python -m bench.bench_audit_chain [--count 1500] [--postgresql]
"""

from __future__ import annotations

import argparse
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


def measure_exchange(database_url: str, provider, count: int) -> dict:
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
    for i in range(100):  # warm-up: caches, prepared statements, the key ring
        assert client.post("/token", auth=auth, data=forms[i % 2]).status_code == 200
    latencies = []
    cpu_started = time.process_time()
    for i in range(count):
        t0 = time.perf_counter()
        answer = client.post("/token", auth=auth, data=forms[i % 2])
        latencies.append(time.perf_counter() - t0)
        assert answer.status_code == 200, answer.json
    cpu = (time.process_time() - cpu_started) / count
    services = app.extensions["idp_bridge"]
    record = measure_record(services.db)
    services.db.dispose()
    return {"exchanges": count,
            "mean_ms": round(statistics.fmean(latencies) * 1000, 3),
            "p50_ms": round(percentile(latencies, 50) * 1000, 3),
            "p99_ms": round(percentile(latencies, 99) * 1000, 3),
            "exchanges_per_second_one_thread": round(count / sum(latencies)),
            # CPU time of this process per exchange: what the machine's other load does not
            # blur (PostgreSQL's own work runs in its server processes).
            "cpu_ms": round(cpu * 1000, 3),
            "audit_record": record}


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
    parser.add_argument("--count", type=int, default=1500)
    parser.add_argument("--postgresql", action="store_true")
    parser.add_argument("--label", default=None, help="stored with the result (e.g. a commit)")
    args = parser.parse_args(argv)
    port = free_port()
    provider = DevProvider(f"http://127.0.0.1:{port}", mode="test", access_token_lifetime=3600)
    idp = make_server("127.0.0.1", port, provider.create_app(), threaded=True)
    threading.Thread(target=idp.serve_forever, daemon=True).start()
    result = {"label": args.label, "setup": "in-process test client, one thread"}
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
