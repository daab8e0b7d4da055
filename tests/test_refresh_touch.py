"""A refresh records the membership's last token time at most once a minute
(``exchange.TOUCH_INTERVAL``), read with the refresh token so that most refreshes spend no
statement on it; a stale one is updated (the tenant's "last activity" reads it)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import Membership
from statements import recorded


def _refresh_counting_updates(bridge, refresh_token: str) -> list[str]:
    """Refresh (it must succeed); the UPDATE memberships statements it issued."""
    with recorded(bridge.services.db) as seen:
        refreshed = bridge.token({"grant_type": "refresh_token", "refresh_token": refresh_token})
    assert refreshed.status_code == 200, refreshed.json
    return [s for s in seen if s.startswith("UPDATE MEMBERSHIPS")]


def test_a_refresh_within_the_minute_writes_no_last_token_time(bridge):
    tokens = bridge.join("bob")
    seen = _refresh_counting_updates(bridge, tokens["refresh_token"])
    assert seen == []


def test_a_refresh_after_a_minute_records_the_last_token_time(bridge):
    tokens = bridge.join("bob")
    db = bridge.services.db
    membership_id = bridge.membership_id("bob")
    old = utcnow() - timedelta(minutes=5)
    with db.transaction() as session:
        session.execute(update(Membership).where(Membership.id == membership_id)
                        .values(last_token_at=old))
    seen = _refresh_counting_updates(bridge, tokens["refresh_token"])
    assert len(seen) == 1
    with db.read() as session:
        stamped = session.get(Membership, membership_id).last_token_at
    assert stamped > old + timedelta(minutes=4)
