"""The access log's groups kept with the records (issue 14 item 6, issue 16 item 5): the
ingest adds what it stored, the retention sweep takes away what it deleted, so each group's
count, first and last time and statuses always equal a recount of the stored records; the
log reads them at a cost that does not grow with the tenant's history (SQLite's
virtual-machine steps, not time); migration 0022 backfills them."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import pytest
from alembic import command
from sqlalchemy import func, insert, select, text

from conftest import TENANT
from idp_bridge.domain.access_records import AccessRecords, group_stored
from idp_bridge.services.access_records import MAX_GROUPS, AccessQuery
from idp_bridge.storage.db import Database, utcnow
from idp_bridge.storage.models import (AccessRecord, AccessRecordGroup, AccessRecordGroupStatus)
from test_access_ingest import _at, record, send, token_claims
from test_pages_helpers import signed_in
from test_ssf_feed_growth import count_sqlite_steps


def _anna(bridge):
    return bridge.services.use_cases.callers.from_bearer_token(bridge.upstream_token("anna"))


def _utc(value):
    from idp_bridge.services.access_records import _utc as utc
    return utc(value)


def kept(bridge) -> dict:
    """The groups as kept: key -> (subject, count, first, last, {status: count})."""
    G, S = AccessRecordGroup, AccessRecordGroupStatus
    with bridge.services.db.read() as session:
        statuses = {}
        for s in session.scalars(select(S)):
            statuses.setdefault((s.tenant_id, s.membership_id, s.area, s.action),
                                {})[s.status] = s.count
        groups = {(r.tenant_id, r.membership_id, r.area, r.action):
                  (r.subject, r.count, _utc(r.first_at), _utc(r.last_at),
                   statuses.pop((r.tenant_id, r.membership_id, r.area, r.action), {}))
                  for r in session.scalars(select(G))}
        assert not statuses, f"statuses without their group: {statuses}"
        return groups


def recount(bridge) -> dict:
    """The same figures counted from the stored records."""
    R = AccessRecord
    key = (R.tenant_id, R.membership_id, R.area, R.action)
    with bridge.services.db.read() as session:
        statuses = {}
        for *k, status, n in session.execute(select(*key, R.status, func.count())
                                             .group_by(*key, R.status)):
            statuses.setdefault(tuple(k), {})[status] = n
        return {tuple(k): (subject, n, _utc(first), _utc(last), statuses[tuple(k)])
                for *k, subject, n, first, last in session.execute(
                    select(*key, func.max(R.subject), func.count(), func.min(R.at),
                           func.max(R.at)).group_by(*key))}


def oracle(service, anna):
    """The groups as the access log counted them before they were kept: grouping every
    record of the tenant (the service still does for a day filter; this one covers all)."""
    return service.access_summary(anna, TENANT, AccessQuery(since=date(2000, 1, 1)))


def test_counts_equal_a_recount_after_ingest_duplicates_and_the_sweep(bridge):
    bob = token_claims(bridge, bridge.join("bob"))
    now = utcnow()
    old, recent = now - timedelta(days=500), now - timedelta(hours=2)
    batch = [record(bob, area=area, action=action, status=status,
                    at=_at(when + timedelta(seconds=n)),
                    method="GET" if action == "read" else "POST")
             for n, (area, action, status, when) in enumerate(
                 [("ebics", "read", 200, old)] * 5 + [("ebics", "read", 403, recent)] * 3
                 + [("payments", "write", 200, old)] * 4 + [("ebics", "read", 200, recent)] * 2
                 + [("bank-accounts", "read", 200, recent)])]
    assert len(send(bridge, batch).json["accepted"]) == len(batch)
    assert kept(bridge) == recount(bridge)
    groups = {(k[2], k[3]): v for k, v in kept(bridge).items()}
    assert groups[("ebics", "read")][1] == 10
    assert groups[("ebics", "read")][4] == {200: 7, 403: 3}
    # The same batch again, and a batch half old, half new: only what is stored counts.
    again = send(bridge, batch).json
    assert (again["accepted"], len(again["duplicates"])) == ([], len(batch))
    mixed = batch[:3] + [record(bob, area="ebics", at=_at(recent + timedelta(minutes=5)))]
    assert len(send(bridge, mixed).json["accepted"]) == 1
    assert kept(bridge) == recount(bridge)
    assert {(k[2], k[3]): v[1] for k, v in kept(bridge).items()} == {
        ("ebics", "read"): 11, ("payments", "write"): 4, ("bank-accounts", "read"): 1}
    service, anna = bridge.services.use_cases.access_records, _anna(bridge)
    assert service.access_summary(anna, TENANT, AccessQuery()) == oracle(service, anna)
    # The sweep, two records a round: counts, first and last follow the records left; a
    # group (payments) and a status left with no record go.
    with bridge.services.db.transaction() as session:
        assert AccessRecords.sweep(session, now, 400, batch=2) == 2
    assert kept(bridge) == recount(bridge)
    while True:
        with bridge.services.db.transaction() as session:
            if AccessRecords.sweep(session, now, 400, batch=2) == 0:
                break
        assert kept(bridge) == recount(bridge)
    groups = {(k[2], k[3]): v for k, v in kept(bridge).items()}
    assert set(groups) == {("ebics", "read"), ("bank-accounts", "read")}
    # Its first is now the oldest record left (the recent ones), no longer the old ones.
    assert groups[("ebics", "read")][1] == 6
    assert _utc(recent) <= groups[("ebics", "read")][2] < _utc(recent + timedelta(seconds=6))
    assert groups[("ebics", "read")][4] == {200: 3, 403: 3}
    assert service.access_summary(anna, TENANT, AccessQuery()) == oracle(service, anna)
    assert service.last_activity(anna, TENANT) == {
        next(iter(kept(bridge)))[1]: max(v[3] for v in kept(bridge).values())}


def test_the_kept_groups_answer_what_grouping_the_records_answers(bridge):
    """Many groups, statuses and filters: the same groups, counts, times and statuses as
    the old query (grouping the records) on the same data."""
    service, anna = bridge.services.use_cases.access_records, _anna(bridge)
    bob = token_claims(bridge, bridge.join("bob"))
    base = utcnow() - timedelta(days=3)
    records = [record(bob, area=area, action=action, status=(200, 404, 403)[n % 3],
                      method="GET" if action == "read" else "POST",
                      at=_at(base + timedelta(minutes=n * 7)))
               for n in range(300)
               for area, action in [(("ebics", "payments", "users")[n % 3],
                                     ("read", "write")[n % 2])]]
    for start in range(0, len(records), 100):
        send(bridge, records[start:start + 100])
    for query in (AccessQuery(), AccessQuery(area="payments"), AccessQuery(action="write"),
                  AccessQuery(advisor="bob"), AccessQuery(subject=bob["sub"], area="users")):
        by_records = service.access_summary(anna, TENANT, AccessQuery(
            since=date(2000, 1, 1), **{k: v for k, v in vars(query).items() if v}))
        assert service.access_summary(anna, TENANT, query) == by_records
        assert by_records
    assert service.access_summary(anna, TENANT, AccessQuery(area="accounting")) == []
    assert len(service.access_summary(anna, TENANT, AccessQuery(), limit=2)) == 2


def _history(bridge, groups: int, per_group: int, at, *, tenant: str = TENANT) -> None:
    """``groups`` groups of ``per_group`` records each, written as the ingest would."""
    rows = []
    for g in range(groups):
        membership = str(uuid.uuid4())
        times = [at - timedelta(minutes=g, microseconds=n) for n in range(per_group)]
        rows += [{"client_id": "example-resource-server", "record_id": str(uuid.uuid4()),
                  "tenant_id": tenant, "membership_id": membership, "grant_id": membership,
                  "sid": None, "subject": f"advisor-{g % 50}", "area": "ebics",
                  "action": "read", "method": "GET", "route": "/tenants/<tenant>/ebics",
                  "status": 200, "at": t, "received_at": t} for t in times]
    with bridge.services.db.transaction() as session:
        group_stored(session, session.execute(
            insert(AccessRecord.__table__).returning(AccessRecord.id), rows).scalars().all())


@pytest.mark.db_independent  # counts SQLite's virtual-machine steps
def test_the_log_page_and_groups_cost_the_same_with_a_hundred_times_more_history(app, bridge,
                                                                                 backend):
    """The access log's page and its groups API read the newest groups kept, never the
    tenant's records (old code: grouping every record, the steps grew with them)."""
    assert backend == "sqlite"
    service, anna = bridge.services.use_cases.access_records, _anna(bridge)
    bob = token_claims(bridge, bridge.join("bob"))
    send(bridge, [record(bob, area="payments") for _ in range(5)])
    _history(bridge, MAX_GROUPS + 10, 2, utcnow() - timedelta(hours=1))
    page = signed_in(app, "anna")
    steps = count_sqlite_steps(bridge, every=1)

    def cost() -> tuple[int, int]:
        steps[0] = 0
        groups = service.access_summary(anna, TENANT, AccessQuery())
        assert len(groups) == MAX_GROUPS and groups[0].area == "payments"
        api = steps[0]
        steps[0] = 0
        assert page.get(f"/tenants/{TENANT}/log").status_code == 200
        return api, steps[0]

    small = cost()
    # A hundred times the records: older groups, and many more records in the newest ones.
    _history(bridge, 5_000, 20, utcnow() - timedelta(days=30))
    send(bridge, [record(bob, area="payments") for _ in range(1000)])
    large = cost()
    assert all(s > 0 for s in small)
    assert large[0] <= small[0] * 1.2 and large[1] <= small[1] * 1.2, (small, large)


def test_migration_0022_backfills_the_groups_from_the_stored_records(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'old.sqlite'}")
    try:
        with db.engine.begin() as connection:
            config = db.alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "0021")
        with db.engine.begin() as connection:
            for n, (membership, area, status) in enumerate(
                    [("m1", "ebics", 200), ("m1", "ebics", 403), ("m1", "ebics", 200),
                     ("m1", "payments", 200), ("m2", "ebics", 200)]):
                at = f"2026-12-01 10:4{n}:00.000000"
                connection.execute(text(
                    "INSERT INTO access_records (client_id, record_id, tenant_id,"
                    " membership_id, grant_id, sid, subject, area, action, method, route,"
                    " status, at, received_at) VALUES ('rs', :id, '10042', :m, 'g', NULL,"
                    " :sub, :area, 'read', 'GET', '/x', :status, :at, :at)"),
                    {"id": f"r{n}", "m": membership, "sub": f"sub-{membership}", "area": area,
                     "status": status, "at": at})
        db.upgrade()
        with db.engine.connect() as connection:
            groups = {(m, a): (s, n, str(f), str(l)) for m, a, s, n, f, l in connection.execute(
                text("SELECT membership_id, area, subject, count, first_at, last_at"
                     " FROM access_record_groups"))}
            statuses = sorted(connection.execute(text(
                "SELECT membership_id, area, status, count FROM"
                " access_record_group_statuses")).all())
        assert groups == {
            ("m1", "ebics"): ("sub-m1", 3, "2026-12-01 10:40:00.000000",
                              "2026-12-01 10:42:00.000000"),
            ("m1", "payments"): ("sub-m1", 1, "2026-12-01 10:43:00.000000",
                                 "2026-12-01 10:43:00.000000"),
            ("m2", "ebics"): ("sub-m2", 1, "2026-12-01 10:44:00.000000",
                              "2026-12-01 10:44:00.000000")}
        assert statuses == [("m1", "ebics", 200, 2), ("m1", "ebics", 403, 1),
                            ("m1", "payments", 200, 1), ("m2", "ebics", 200, 1)]
    finally:
        db.dispose()
