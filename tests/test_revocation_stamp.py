"""A revocation is stamped inside its transaction, not with the caller's earlier ``now``:
the feed's ``event_timestamp`` tells resource servers how long to keep it (until the newest
token it covers can have expired), so a removal that waited for the write lock must not carry
the time from before the wait (a token signed meanwhile would outlive the guard's entry)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import Membership, Revocation


def test_a_removal_that_waited_is_stamped_when_it_commits(bridge):
    bridge.join("bob")
    waited_since = utcnow() - timedelta(seconds=20)  # "now" taken before a long lock wait
    services = bridge.services
    with services.db.transaction() as session:
        membership = session.scalars(select(Membership).where(
            Membership.ended_at.is_(None))).one()
        before = utcnow()
        assert services.memberships.end(session, membership, by="anna", actor_role="tenant_admin",
                                        reason="removed_by_tenant", now=waited_since)
    with services.db.read() as session:
        row = session.scalars(select(Revocation).where(
            Revocation.value == membership.grant_id)).one()
        ended = session.get(Membership, membership.id)
    stamped = row.created_at.replace(tzinfo=before.tzinfo) if row.created_at.tzinfo is None \
        else row.created_at
    assert stamped >= before  # the feed's event_timestamp: after the wait
    ended_at = ended.ended_at.replace(tzinfo=before.tzinfo) if ended.ended_at.tzinfo is None \
        else ended.ended_at
    assert ended_at == waited_since  # the membership's own record keeps the caller's time
