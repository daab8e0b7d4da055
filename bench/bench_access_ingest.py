"""Access-record ingest and the tenant's access-summary query (issue 14 item 6).

1. **Ingest** through the service (``AccessRecordsService.ingest``: validation of every
   record, the ownership check against memberships and token families — two queries per
   batch — and one ``INSERT … ON CONFLICT DO NOTHING RETURNING`` per batch of 100, one
   transaction per batch, as ``POST /access-records`` does), into PostgreSQL (target
   >= 20,000 records/s) and SQLite (>= 10,000/s). PostgreSQL is measured with ``fsync=on``
   and ``synchronous_commit=on`` (the test server runs with fsync off; the bench starts its
   own durable one and writes the settings it read back into the result); SQLite in WAL
   with the bridge's pragmas. ``--threads`` senders (PostgreSQL; SQLite has one writer).
2. **Through HTTP** (in-process WSGI: the Flask app's test client, so authentication of the
   receiver, JSON parsing and the answer are included, not a socket) on both backends.
3. **The access summary** (``access_summary``: group per advisor, area and action) p99 with
   ``--records`` stored records across ``--tenants`` tenants, seeded by a fast bulk path
   (PostgreSQL: ``COPY``; SQLite: ``executemany``), one tenant's last 30 days per query, random
   tenants; and the drill-down (``access_requests``, 50 per page).

Writes ``bench/results/access_ingest.json``.

    python -m bench.bench_access_ingest [--seconds 5] [--records 1000000] [--tenants 1000]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from datetime import timedelta, timezone
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from sqlalchemy import insert, text  # noqa: E402

from bench.common import percentile, write_result  # noqa: E402
from idp_bridge.domain.access_records import rebuild_groups  # noqa: E402
from idp_bridge.domain.people import People  # noqa: E402
from idp_bridge.services.access_records import AccessQuery, AccessRecordsService  # noqa: E402
from idp_bridge.storage.db import Database, utcnow  # noqa: E402
from idp_bridge.storage.models import (AccessRecord, Membership, Tenant,  # noqa: E402
                                       TokenFamily)
from scopes.catalog import AREAS  # noqa: E402

CLIENT = "bench-resource-server"
AREA_KEYS = [a.key for a in AREAS]
ROUTES = {a: f"/tenants/<tenant>/{a}" for a in AREA_KEYS}
ADVISORS_PER_TENANT = 5


#: The first seeded tenant is the development provider's tenant of anna (a tenant admin), so
#: the API and the page are measured as she calls them.
ANNA_TENANT = "10042"


def tenant_id(number: int) -> str:
    return ANNA_TENANT if number == 0 else f"t{number:05d}"


class AllowAll:
    """The Authorizer's in-memory group check is not what is measured: every caller is
    an admin here."""

    def tenant_admin(self, caller, tenant_id):
        return None


class FastMemberships:
    from idp_bridge.domain.memberships import Memberships as _M
    tenant = staticmethod(_M.tenant)


def seed_people(db, tenants: int):
    """Tenants, 5 memberships each, one token family per membership: [(tenant, grant, sid,
    sub, membership_id)]."""
    now = utcnow()
    grants, t_rows, m_rows, f_rows = [], [], [], []
    for t in range(tenants):
        tenant = tenant_id(t)
        t_rows.append({"id": tenant, "name": f"Tenant {t}", "created_at": now,
                       "notify_first_access": False})
        for a in range(ADVISORS_PER_TENANT):
            mid, grant, sid, sub = (str(uuid.uuid4()) for _ in range(4))
            m_rows.append({"id": mid, "tenant_id": tenant, "advisor_subject": sub,
                           "advisor_name": f"Advisor {a}", "kind": "temporary",
                           "grant_id": grant, "created_at": now, "created_by": sub})
            f_rows.append({"sid": sid, "membership_id": mid, "grant_id": grant,
                           "client_id": "advisor-console", "subject": sub, "tenant_id": tenant,
                           "scope": "ebics:read", "audience": "https://api.example",
                           "upstream_issuer": "https://idp.example", "created_at": now})
            grants.append((tenant, grant, sid, sub, mid))
    with db.transaction() as session:
        session.execute(insert(Tenant.__table__), t_rows)
        session.execute(insert(Membership.__table__), m_rows)
        session.execute(insert(TokenFamily.__table__), f_rows)
    return grants


def raw_record(grant, when) -> dict:
    tenant, grant_id, sid, sub, _mid = grant
    area = random.choice(AREA_KEYS)
    return {"id": str(uuid.uuid4()), "tenant": tenant, "grant_id": grant_id, "sid": sid,
            "sub": sub, "area": area, "action": "read", "method": "GET", "route": ROUTES[area],
            "status": 200, "at": when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"}


def batches(grants, count: int, size: int = 100):
    """Batches as a resource server sends them: records of a few advisors of one tenant."""
    now = utcnow()
    out = []
    for _ in range(count):
        tenant = random.randrange(len(grants) // ADVISORS_PER_TENANT)
        mine = grants[tenant * ADVISORS_PER_TENANT:(tenant + 1) * ADVISORS_PER_TENANT]
        out.append({"records": [raw_record(random.choice(mine), now) for _ in range(size)]})
    return out


def measure_ingest(service, grants, seconds: float, threads: int) -> dict:
    prepared = batches(grants, max(50, int(seconds * 400 / threads)) * threads)
    done = [0] * threads
    stop = time.monotonic() + seconds
    latencies: list[float] = []

    def sender(i):
        mine = prepared[i::threads]
        for body in mine:
            if time.monotonic() >= stop:
                break
            t0 = time.perf_counter()
            result = service.ingest(CLIENT, body)
            latencies.append(time.perf_counter() - t0)
            assert len(result.accepted) == len(body["records"]), result.refused[:3]
            done[i] += len(result.accepted)

    started = time.monotonic()
    workers = [threading.Thread(target=sender, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - started
    return {"threads": threads, "records": sum(done), "seconds": round(elapsed, 2),
            "records_per_second": round(sum(done) / elapsed),
            "batch_p50_ms": round(percentile(latencies, 50) * 1000, 2),
            "batch_p99_ms": round(percentile(latencies, 99) * 1000, 2)}


def measure_http(app, grants, seconds: float, secret: str) -> dict:
    client = app.test_client()
    prepared = batches(grants, int(seconds * 300))
    count, latencies = 0, []
    started = time.monotonic()
    for body in prepared:
        if time.monotonic() - started >= seconds:
            break
        t0 = time.perf_counter()
        response = client.post("/access-records", json=body, auth=(CLIENT, secret))
        latencies.append(time.perf_counter() - t0)
        assert response.status_code == 200 and not response.json["refused"], response.json
        count += len(response.json["accepted"])
    elapsed = time.monotonic() - started
    return {"records": count, "seconds": round(elapsed, 2),
            "records_per_second": round(count / elapsed),
            "request_p99_ms": round(percentile(latencies, 99) * 1000, 2)}


#: The access-record indexes the seed drops and builds again after loading (a bulk load
#: into a table with four random-order indexes is slower than building them once).
SECONDARY_INDEXES = [index for index in AccessRecord.__table__.indexes
                     if index.name != "uq_access_records_client_record"]


def bulk_seed(db, grants, total: int, days: int = 30) -> float:
    """``total`` records spread over every grant (so over the tenants) and the last ``days``
    days, generated inside the database (SQLite: a recursive CTE; PostgreSQL:
    ``generate_series``) from a table of the grants, with the secondary indexes built after
    the load. Which grant, area, status and time a record gets follow from its number by
    multiplicative hashing (deterministic, evenly spread). Returns the seconds it took."""
    started = time.monotonic()
    now = utcnow().replace(microsecond=0, tzinfo=None)
    span = days * 86400
    backend = db.url.get_backend_name()
    with db.engine.begin() as connection:
        connection.execute(text("CREATE TEMPORARY TABLE seed_grants (idx INTEGER PRIMARY KEY,"
                                " tenant_id TEXT, membership_id TEXT, grant_id TEXT,"
                                " sid TEXT, subject TEXT)"))
        connection.execute(text("INSERT INTO seed_grants VALUES (:i, :t, :m, :g, :s, :u)"), [
            {"i": i, "t": t, "m": m, "g": g, "s": sid, "u": sub}
            for i, (t, g, sid, sub, m) in enumerate(grants)])
        connection.execute(text("CREATE TEMPORARY TABLE seed_areas (idx INTEGER PRIMARY KEY,"
                                " area TEXT, route TEXT)"))
        connection.execute(text("INSERT INTO seed_areas VALUES (:i, :a, :r)"), [
            {"i": i, "a": a, "r": ROUTES[a]} for i, a in enumerate(AREA_KEYS)])
        for index in SECONDARY_INDEXES:
            connection.execute(text(f"DROP INDEX {index.name}"))
        if backend == "sqlite":
            connection.exec_driver_sql("PRAGMA cache_size = -1000000")
            numbers = ("WITH RECURSIVE n(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM n"
                       " WHERE i < :last) ")
            at = ("strftime('%Y-%m-%d %H:%M:%S', :now_epoch - ((n.i * 40503) % :span),"
                  " 'unixepoch') || '.000000'")
            received = "strftime('%Y-%m-%d %H:%M:%S', :now_epoch, 'unixepoch') || '.000000'"
            source = "FROM n"
            record_id = "'seed-' || n.i"
        else:
            connection.exec_driver_sql("SET maintenance_work_mem = '512MB'")
            numbers = ""
            at = ("to_timestamp(:now_epoch - ((n.i * 40503) % :span)) AT TIME ZONE 'UTC'")
            received = "to_timestamp(:now_epoch) AT TIME ZONE 'UTC'"
            source = "FROM generate_series(CAST(:first AS bigint), :last) AS n(i)"
            record_id = "'seed-' || n.i"
        statement = text(
            numbers + "INSERT INTO access_records (client_id, record_id, tenant_id,"
            " membership_id, grant_id, sid, subject, area, action, method, route, status, at,"
            " received_at) SELECT :client, " + record_id + ", g.tenant_id, g.membership_id,"
            " g.grant_id, g.sid, g.subject, a.area, 'read', 'GET', a.route,"
            " CASE WHEN n.i % 17 = 0 THEN 404 ELSE 200 END, " + at + ", " + received + " "
            + source + " JOIN seed_grants g ON g.idx = (n.i * 2654435761) % :grants"
            " JOIN seed_areas a ON a.idx = n.i % :areas")
        chunk = 1_000_000
        for first in range(0, total, chunk):
            connection.execute(statement, {
                "first": first, "last": min(first + chunk, total) - 1, "client": CLIENT,
                "now_epoch": int(now.replace(tzinfo=timezone.utc).timestamp()),
                "span": span, "grants": len(grants), "areas": len(AREA_KEYS)})
        for index in SECONDARY_INDEXES:
            index.create(connection)
        # The access log's groups, kept with the records by the ingest: counted once here
        # for the records written around it.
        rebuild_groups(connection)
        connection.execute(text("DROP TABLE seed_grants"))
        connection.execute(text("DROP TABLE seed_areas"))
    with db.engine.connect() as connection:
        if backend == "postgresql":
            # What autovacuum does after a bulk insert (statistics and the visibility map
            # that index-only scans need), done at once instead of some minutes later.
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("VACUUM (ANALYZE) access_records"))
        else:
            connection.execute(text("ANALYZE"))
            connection.commit()
    return time.monotonic() - started


def measure_summary(service, tenants: int, queries: int) -> dict:
    summary, requests = [], []
    since = (utcnow() - timedelta(days=30)).date()
    for _ in range(queries):
        tenant = tenant_id(random.randrange(tenants))
        t0 = time.perf_counter()
        groups = service.access_summary(None, tenant, AccessQuery(since=since))
        summary.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        page = service.access_requests(None, tenant, AccessQuery(since=since), limit=50)
        requests.append(time.perf_counter() - t0)
        assert groups and page.requests
    return {"queries": queries,
            "summary_p50_ms": round(percentile(summary, 50) * 1000, 2),
            "summary_p99_ms": round(percentile(summary, 99) * 1000, 2),
            "requests_p50_ms": round(percentile(requests, 50) * 1000, 2),
            "requests_p99_ms": round(percentile(requests, 99) * 1000, 2)}


def app_for(url: str, upstream_issuer: str = "http://127.0.0.1:9"):
    """The bridge app on ``url`` and the receiver's secret (ingest needs no upstream; the
    tenant admin's reads need the development provider at ``upstream_issuer``)."""
    from idp_bridge.app import create_app
    from idp_bridge.services.operator import add_client
    from idp_bridge.settings import Settings
    import secrets

    from cryptography.fernet import Fernet

    settings = Settings.load({
        "mode": "test", "issuer": "http://127.0.0.1:8000", "database_url": url,
        "secret_key": secrets.token_urlsafe(32),
        "key_encryption_key": Fernet.generate_key().decode(),
        "upstream_issuer": upstream_issuer,
        "resources": "https://api.konfipay.example/=konfipay-api"},
        environ={})
    app = create_app(settings)
    secret = add_client(Database(url), CLIENT, roles=("receiver",))
    return app, secret


def measure_tenant_reads(app, provider, queries: int) -> dict:
    """What anna waits for: the API (``GET /api/tenants/10042/access`` and
    ``…/access/requests``, her upstream token verified as on every call) and the access-log
    page (``/tenants/10042/log``, signed in through the provider), through the WSGI app."""
    import requests
    from urllib.parse import urlsplit

    client = app.test_client()
    token = provider.issue_tokens("anna", lifetime=3600)["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    login = client.get("/login", query_string={"next": "/"})
    redirect = requests.get(login.headers["Location"], params={"login_hint": "anna",
                            "auto": "1"}, allow_redirects=False, timeout=10)
    callback = urlsplit(redirect.headers["Location"])
    assert client.get(f"{callback.path}?{callback.query}").status_code in (302, 303)
    paths = {"api_access": (f"/api/tenants/{ANNA_TENANT}/access", headers),
             "api_access_requests": (f"/api/tenants/{ANNA_TENANT}/access/requests", headers),
             "page_log": (f"/tenants/{ANNA_TENANT}/log", {})}
    out = {"queries": queries}
    for name, (path, extra) in paths.items():
        latencies = []
        for _ in range(queries):
            t0 = time.perf_counter()
            response = client.get(path, headers=extra)
            latencies.append(time.perf_counter() - t0)
            assert response.status_code == 200, (path, response.status_code)
        out[f"{name}_p50_ms"] = round(percentile(latencies, 50) * 1000, 2)
        out[f"{name}_p99_ms"] = round(percentile(latencies, 99) * 1000, 2)
    return out


def run_backend(name: str, url: str, args, provider) -> dict:
    db = Database(url)
    db.upgrade()
    grants = seed_people(db, args.tenants)
    service = AccessRecordsService(db=db, authorize=AllowAll(), memberships=FastMemberships(),
                                   people=People(), timezone="Europe/Berlin")
    result = {"ingest_service": measure_ingest(service, grants, args.seconds, 1)}
    if name == "postgresql" and args.threads > 1:
        result["ingest_service_threads"] = measure_ingest(service, grants, args.seconds,
                                                          args.threads)
    app, secret = app_for(url, provider.issuer)
    result["ingest_http_wsgi"] = measure_http(app, grants, args.seconds, secret)
    records = args.records if name == "postgresql" else args.sqlite_records
    result["seed"] = {"records": records, "tenants": args.tenants,
                      "seconds": round(bulk_seed(db, grants, records), 1)}
    result["read"] = measure_summary(service, args.tenants, args.queries)
    result["read_tenant_admin"] = measure_tenant_reads(app, provider, args.queries)
    db.dispose()
    return result


def served_provider():
    """The development OpenID provider served on loopback in a thread (anna's tokens and
    sign-in; the bridge reads its discovery and keys over HTTP as from any provider)."""
    import logging

    from werkzeug.serving import make_server

    from idp_bridge.devidp import DevProvider

    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    holder = {}
    server = make_server("127.0.0.1", 0, lambda e, s: holder["app"](e, s), threaded=True)
    provider = DevProvider(f"http://127.0.0.1:{server.server_port}", mode="test")
    holder["app"] = provider.create_app()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return provider


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--records", type=int, default=1_000_000,
                        help="records seeded into PostgreSQL for the read figures")
    parser.add_argument("--sqlite-records", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--result", default="access_ingest",
                        help="the name of the result file in bench/results/ (a 10 M-record run "
                             "is kept apart as access_ingest_10m)")
    args = parser.parse_args(argv)
    random.seed(14)
    provider = served_provider()
    out = {"load_average_at_start": [round(x, 2) for x in os.getloadavg()], "targets": {"postgresql_records_per_second": 20_000,
                       "sqlite_records_per_second": 10_000, "summary_p99_ms": 100,
                       "issue_records": 10_000_000}, "runs": {}}
    if "sqlite" in args.backends:
        directory = tempfile.mkdtemp(prefix="bench-access-")
        try:
            out["runs"]["sqlite"] = run_backend("sqlite", f"sqlite:///{directory}/bridge.db",
                                                args, provider)
        finally:
            # The database goes with the run (about 7 GB at 10 M records).
            shutil.rmtree(directory, ignore_errors=True)
        print("sqlite", out["runs"]["sqlite"], flush=True)
    if "postgresql" in args.backends:
        from services import PostgresServer

        server = PostgresServer(durable=True)
        try:
            url = server.create_database("bench_access")
            with Database(url).engine.connect() as connection:
                # What the server really runs with, read back (not what was asked for).
                out["postgresql_settings"] = {
                    name: connection.execute(text(f"SHOW {name}")).scalar()
                    for name in ("fsync", "synchronous_commit", "wal_sync_method")}
            out["runs"]["postgresql"] = run_backend("postgresql", url, args, provider)
            print("postgresql", out["runs"]["postgresql"], flush=True)
        finally:
            server.close()
    runs = out["runs"]
    out["met"] = {
        "postgresql_ingest": out.get("postgresql_settings", {}).get("fsync") == "on" and max(
            runs.get("postgresql", {}).get(k, {}).get("records_per_second", 0)
            for k in ("ingest_service", "ingest_service_threads")) >= 20_000,
        "sqlite_ingest": runs.get("sqlite", {}).get("ingest_service", {}).get(
            "records_per_second", 0) >= 10_000,
        "summary_p99": all(r["read"]["summary_p99_ms"] <= 100 for r in runs.values()),
        "tenant_admin_p99": all(
            value <= 100 for r in runs.values() for key, value in r["read_tenant_admin"].items()
            if key.endswith("_p99_ms")),
    }
    print(write_result(args.result, out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
