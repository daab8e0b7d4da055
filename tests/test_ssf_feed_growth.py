"""The feed reads the revocations still relevant, not every one it keeps (issue 16 items 5, 6).

Revocations stay in the table (they are the tenants' history: receipts, evidence packs); a
poll and the long poll's check used to walk them all by id from the stream's start. The scan
now starts at the oldest relevant revocation (``ix_revocations_created_at``, migration 0019).
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from sqlalchemy import event, insert, select, update

from conftest import RS_CLIENT_ID, TENANT
from ssf_client import new_stream
from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import Revocation, SsfAck, SsfStream



def add_revocations(bridge, values, created_at, first_id=None) -> None:
    rows = [{"kind": "grant", "value": value, "tenant_id": TENANT, "subject": "someone",
             "reason": "left", "created_at": created_at} for value in values]
    if first_id is not None:
        for n, row in enumerate(rows):
            row["id"] = first_id + n
    with bridge.services.db.transaction() as session:
        session.execute(insert(Revocation.__table__), rows)


def delivered_values(bridge, stream_id) -> list[str]:
    sets, more = bridge.services.transmitter.pending(stream_id, RS_CLIENT_ID, 100, utcnow())
    assert not more
    return [json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["sub_id"]["id"]
            for token in sets.values()]


def count_sqlite_steps(bridge, *, every: int) -> list[int]:
    """A counter (``[n]``, reset by the caller) of SQLite virtual-machine steps, one per
    ``every`` instructions, on every new connection of the bridge's engine."""
    steps = [0]

    def count():
        steps[0] += 1
        return 0

    engine = bridge.services.db.engine
    engine.dispose()
    event.listen(engine, "connect",
                 lambda connection, _record: connection.set_progress_handler(count, every))
    return steps


def test_relevant_revocations_are_found_whatever_their_ids(bridge):
    """Ids need not follow the revocations' times (a transaction takes its time before it
    inserts): a relevant revocation with a smaller id than an old one is still delivered,
    old ones never."""
    relevance = bridge.services.transmitter.relevance
    old = utcnow() - relevance - timedelta(minutes=5)
    add_revocations(bridge, [f"old-{i}" for i in range(50)], old)
    add_revocations(bridge, ["fresh-1"], utcnow() - relevance + timedelta(minutes=1))
    add_revocations(bridge, ["old-late"], old)  # a larger id, an older time
    add_revocations(bridge, ["fresh-2"], utcnow())
    stream_id = new_stream(bridge)
    assert bridge.services.transmitter.has_pending(stream_id, utcnow())
    assert delivered_values(bridge, stream_id) == ["fresh-1", "fresh-2"]


def test_nothing_relevant_means_nothing_pending(bridge):
    relevance = bridge.services.transmitter.relevance
    add_revocations(bridge, [f"old-{i}" for i in range(20)], utcnow() - relevance * 2)
    stream_id = new_stream(bridge)
    assert not bridge.services.transmitter.has_pending(stream_id, utcnow())
    assert delivered_values(bridge, stream_id) == []


@pytest.mark.db_independent  # counts SQLite's virtual-machine steps
def test_a_poll_costs_the_same_with_a_hundred_times_more_old_revocations(bridge, backend):
    """Counted in SQLite virtual-machine steps (not time): the long poll's check and a poll
    with 1,000 and with 101,000 revocations older than the relevance window."""
    assert backend == "sqlite"
    transmitter = bridge.services.transmitter
    relevance = transmitter.relevance
    # Ids as they come: the old revocations below the fresh ones.
    add_revocations(bridge, [f"old-{i}" for i in range(1_000)], utcnow() - relevance * 3,
                    first_id=1)
    add_revocations(bridge, [f"fresh-{i}" for i in range(30)], utcnow(), first_id=1_000_000)
    stream_id = new_stream(bridge)

    # Every 10 instructions: at 100 the count (7 to 10 units) moved by more than a fifth
    # between two identical polls (the remainder of each sqlite3_step call is lost).
    steps = count_sqlite_steps(bridge, every=10)

    def cost() -> int:
        steps[0] = 0
        assert transmitter.has_pending(stream_id, utcnow())
        sets, _ = transmitter.pending(stream_id, RS_CLIENT_ID, 100, utcnow(), touch=False)
        assert len(sets) == 30
        return steps[0]

    cost()  # measured from the second poll on (the first counted fewer steps)
    small = cost()
    add_revocations(bridge, [f"older-{i}" for i in range(100_000)], utcnow() - relevance * 2,
                    first_id=1_001)
    large = cost()
    assert small > 0
    assert large <= small * 1.2, (small, large)


@pytest.mark.db_independent  # counts SQLite's virtual-machine steps
def test_a_poll_with_nothing_relevant_costs_the_same_with_a_hundred_times_more(bridge, backend):
    """No revocation is relevant any more (a resource server catching up on a quiet feed):
    the poll reads none of the old ones. It walked them all by id from the stream's start
    (bench_growth: 181 ms per catch-up with a million stored revocations)."""
    assert backend == "sqlite"
    transmitter = bridge.services.transmitter
    relevance = transmitter.relevance
    add_revocations(bridge, [f"old-{i}" for i in range(1_000)], utcnow() - relevance * 3)
    stream_id = new_stream(bridge)
    steps = count_sqlite_steps(bridge, every=10)

    def cost() -> int:
        steps[0] = 0
        assert not transmitter.has_pending(stream_id, utcnow())
        sets, more = transmitter.pending(stream_id, RS_CLIENT_ID, 100, utcnow(), touch=False)
        assert (sets, more) == ({}, False)
        return steps[0]

    small = cost()
    add_revocations(bridge, [f"older-{i}" for i in range(100_000)], utcnow() - relevance * 2)
    large = cost()
    assert small > 0
    assert large <= small * 1.2 + 2, (small, large)


def test_the_pushers_back_off_state_leaves_with_its_stream(bridge):
    pusher = bridge.services.pusher
    pusher._backoff["a-deleted-stream"] = (0.0, 60.0)
    assert pusher.deliver_once() is None  # no push stream left
    assert pusher._backoff == {}


# --- the feed's bookkeeping: acknowledgements and idle streams leave ---

def ack_rows(bridge) -> set[tuple[str, int]]:
    with bridge.services.db.read() as session:
        return set(session.execute(select(SsfAck.stream_id, SsfAck.revocation_id)).all())


def add_acks(bridge, stream_id, revocation_ids, acked_at) -> None:
    with bridge.services.db.transaction() as session:
        session.execute(insert(SsfAck.__table__), [
            {"stream_id": stream_id, "revocation_id": r, "acked_at": acked_at}
            for r in revocation_ids])


def test_acknowledgements_leave_twice_the_relevance_after_they_were_made(bridge):
    """In batches (here of 3): 10 old acknowledgements leave in one cleanup, the recent ones
    stay, and the events they acknowledged are not delivered again."""
    transmitter = bridge.services.transmitter
    relevance = transmitter.relevance
    now = utcnow()
    add_revocations(bridge, [f"old-{i}" for i in range(10)], now - relevance * 3)
    add_revocations(bridge, ["recent"], now)
    stream_id = new_stream(bridge)
    with bridge.services.db.read() as session:
        ids = session.scalars(select(Revocation.id).order_by(Revocation.id)).all()
    add_acks(bridge, stream_id, ids[:10], now - relevance * 2 - timedelta(seconds=1))
    add_acks(bridge, stream_id, ids[10:], now)
    assert transmitter.cleanup(now, batch=3) == 10
    assert ack_rows(bridge) == {(stream_id, ids[10])}
    assert delivered_values(bridge, stream_id) == []  # neither old nor acknowledged
    assert transmitter.cleanup(now, batch=3) == 0  # nothing more to do
    assert ack_rows(bridge) == {(stream_id, ids[10])}


def test_an_idle_stream_leaves_with_its_acknowledgements(bridge):
    transmitter = bridge.services.transmitter
    now = utcnow()
    add_revocations(bridge, [f"r-{i}" for i in range(7)], now)
    idle, active = new_stream(bridge), new_stream(bridge)
    with bridge.services.db.read() as session:
        ids = session.scalars(select(Revocation.id).order_by(Revocation.id)).all()
    add_acks(bridge, idle, ids, now)
    add_acks(bridge, active, ids[:2], now)
    with bridge.services.db.transaction() as session:
        session.execute(update(SsfStream).where(SsfStream.stream_id == idle)
                        .values(last_seen_at=now - timedelta(hours=1, seconds=1)))
    assert transmitter.cleanup(now, batch=3) == 7
    assert ack_rows(bridge) == {(active, ids[0]), (active, ids[1])}
    with bridge.services.db.read() as session:
        assert session.scalars(select(SsfStream.stream_id)).all() == [active]
