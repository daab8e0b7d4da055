"""The access log costs what it shows, not what the tenant has kept (issue 14 item 6, issue 16
item 5): the names of the people a page mentions and a group's drill-down, counted in SQLite's
virtual-machine steps (not time) with a small and a hundred times larger history."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import insert

from conftest import TENANT
from idp_bridge.domain.access_records import group_stored
from idp_bridge.services.access_records import MAX_GROUPS, AccessQuery
from idp_bridge.services.tenant_admin import LogQuery
from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import AccessRecord, Membership
from test_access_ingest import BOB, record, send, token_claims
from test_ssf_feed_growth import count_sqlite_steps


def _anna(bridge):
    return bridge.services.use_cases.callers.from_bearer_token(bridge.upstream_token("anna"))


def add_ended_memberships(bridge, count: int, *, subject: str, name: str, created_at) -> None:
    rows = [{"id": str(uuid.uuid4()), "tenant_id": TENANT, "advisor_subject": subject,
             "advisor_name": name, "kind": "temporary", "grant_id": str(uuid.uuid4()),
             "created_at": created_at, "created_by": "test", "ended_at": created_at,
             "ended_by": "test", "end_reason": "removed_by_tenant"} for _ in range(count)]
    with bridge.services.db.transaction() as session:
        session.execute(insert(Membership.__table__), rows)


def add_records(bridge, count: int, *, membership_id: str, grant_id: str, subject: str,
                at, area: str = "ebics", action: str = "read", status: int = 200) -> None:
    rows = [{"client_id": "example-resource-server", "record_id": str(uuid.uuid4()),
             "tenant_id": TENANT, "membership_id": membership_id, "grant_id": grant_id,
             "sid": None, "subject": subject, "area": area, "action": action,
             "method": "GET", "route": "/tenants/<tenant>/ebics", "status": status,
             "at": at + timedelta(microseconds=n), "received_at": at} for n in range(count)]
    with bridge.services.db.transaction() as session:
        ids = session.execute(insert(AccessRecord.__table__).returning(AccessRecord.id),
                              rows).scalars().all()
        # As the ingest does: the records stored are added to their group.
        group_stored(session, ids)


@pytest.mark.db_independent  # counts SQLite's virtual-machine steps
def test_the_log_names_its_people_whatever_the_tenants_history(bridge, backend):
    """The page names the advisors its events mention from their newest membership; it read
    the name of every membership the tenant ever had (old code: the steps grew with them)."""
    assert backend == "sqlite"
    bridge.join("bob")
    admin, anna = bridge.services.use_cases.tenant_admin, _anna(bridge)
    long_ago = utcnow() - timedelta(days=300)
    add_ended_memberships(bridge, 100, subject=BOB, name="Bob of old", created_at=long_ago)
    add_ended_memberships(bridge, 100, subject="someone-else", name="Someone",
                          created_at=long_ago)
    steps = count_sqlite_steps(bridge, every=1)

    def cost() -> int:
        steps[0] = 0
        _tenant, events, _names = admin.access_log(anna, TENANT, LogQuery(limit=50))
        assert any(e.actor == BOB or e.detail.get("advisor") == BOB for e in events)
        return steps[0]

    small = cost()
    add_ended_memberships(bridge, 10_000, subject=BOB, name="Bob of old", created_at=long_ago)
    add_ended_memberships(bridge, 10_000, subject="someone-else", name="Someone",
                          created_at=long_ago)
    large = cost()
    assert small > 0
    assert large <= small * 1.2, (small, large)


def test_the_log_names_an_advisor_by_their_newest_membership(bridge):
    """Of an advisor's memberships in the tenant, the newest one's name is shown (where the
    directory knows nobody of that subject)."""
    admin, anna = bridge.services.use_cases.tenant_admin, _anna(bridge)
    now = utcnow()
    add_ended_memberships(bridge, 3, subject="former-advisor", name="Old Name",
                          created_at=now - timedelta(days=20))
    add_ended_memberships(bridge, 1, subject="former-advisor", name="New Name",
                          created_at=now - timedelta(days=2))
    add_ended_memberships(bridge, 2, subject="former-advisor", name="Older Name",
                          created_at=now - timedelta(days=40))
    with bridge.services.db.transaction() as session:
        from idp_bridge.domain import audit
        audit.record(session, "membership.ended", now, tenant_id=TENANT, actor="anna",
                     actor_role="tenant_admin", advisor="former-advisor", reason="test")
    _tenant, events, names = admin.access_log(anna, TENANT, LogQuery(limit=50))
    assert names["former-advisor"] == "New Name"
    assert "someone-never-mentioned" not in names


@pytest.mark.db_independent  # counts SQLite's virtual-machine steps
def test_a_groups_drill_down_costs_the_same_with_a_hundred_times_more_records(bridge, backend):
    """A group's single requests (an advisor's access, an area and an action) are read from
    that group alone; through the tenant's (time) index the page walked every newer record
    of the tenant to find them (old code: the steps grew with those records)."""
    assert backend == "sqlite"
    bob = token_claims(bridge, bridge.join("bob"))
    response = send(bridge, [record(bob, area="payments", action="write", method="POST")
                             for _ in range(20)])
    assert len(response.json["accepted"]) == 20
    service, anna = bridge.services.use_cases.access_records, _anna(bridge)
    group = [g for g in service.access_summary(anna, TENANT, AccessQuery())
             if g.area == "payments"][0]
    query = AccessQuery(membership_id=group.membership_id, area="payments", action="write")
    later = utcnow() + timedelta(minutes=1)  # newer than the group: walked first by time
    other = {"membership_id": str(uuid.uuid4()), "grant_id": str(uuid.uuid4()),
             "subject": "another-advisor", "at": later}
    add_records(bridge, 100, **other)
    steps = count_sqlite_steps(bridge, every=1)

    def cost() -> int:
        steps[0] = 0
        page = service.access_requests(anna, TENANT, query, limit=10)
        assert len(page.requests) == 10 and page.next_before_id is not None
        assert {r.area for r in page.requests} == {"payments"}
        return steps[0]

    small = cost()
    add_records(bridge, 10_000, **other)
    large = cost()
    assert small > 0
    assert large <= small * 1.2, (small, large)


def test_the_summary_answers_the_newest_groups_with_their_statuses(bridge):
    """Grouped in the database: the newest :data:`MAX_GROUPS` groups (by their last request),
    each with its count, first and last time and its statuses."""
    service, anna = bridge.services.use_cases.access_records, _anna(bridge)
    now = utcnow() - timedelta(hours=1)
    membership = {"grant_id": str(uuid.uuid4()), "subject": "seed-advisor"}
    for n in range(MAX_GROUPS + 5):
        add_records(bridge, 1, membership_id=f"00000000-0000-4000-8000-{n:012d}",
                    at=now + timedelta(seconds=n), **membership)
    newest = "00000000-0000-4000-8000-999999999999"
    add_records(bridge, 2, membership_id=newest, at=now + timedelta(hours=1, seconds=1),
                status=200, **membership)
    add_records(bridge, 3, membership_id=newest, at=now + timedelta(hours=1), status=403,
                **membership)
    groups = service.access_summary(anna, TENANT, AccessQuery())
    assert len(groups) == MAX_GROUPS
    first = groups[0]
    assert (first.membership_id, first.count, first.statuses) == (newest, 5, {200: 2, 403: 3})
    assert first.first_at < first.last_at
    assert [g.last_at for g in groups] == sorted((g.last_at for g in groups), reverse=True)
    # The oldest groups are the ones left out.
    shown = {g.membership_id for g in groups}
    assert "00000000-0000-4000-8000-000000000000" not in shown
    assert f"00000000-0000-4000-8000-{MAX_GROUPS + 4:012d}" in shown
