"""A refresh records the membership's last token time at most once a minute
(``exchange.TOUCH_INTERVAL``), read with the refresh token so that most refreshes spend no
statement on it; a stale one is updated (the tenant's "last activity" reads it)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import event, update

from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import Membership


def _membership_updates(db):
    seen = []

    def before(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE MEMBERSHIPS"):
            seen.append(statement)

    engine = db.write_engine
    event.listen(engine, "before_cursor_execute", before)
    return seen, lambda: event.remove(engine, "before_cursor_execute", before)


def _refresh_counting_updates(bridge, refresh_token: str) -> list[str]:
    """Refresh (it must succeed); the UPDATE memberships statements it issued."""
    seen, stop = _membership_updates(bridge.services.db)
    try:
        refreshed = bridge.token({"grant_type": "refresh_token", "refresh_token": refresh_token})
    finally:
        stop()
    assert refreshed.status_code == 200, refreshed.json
    return seen


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
