"""The feed's shared bookkeeping write (idp_bridge/ssf/bookkeeping.py): concurrent polls'
acknowledgements and delivery records in one transaction, committed before any answer."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from conftest import RS_CLIENT_ID, TENANT, Bridge, build_app, wait_until
from ssf_client import new_stream
from idp_bridge.app import services
from idp_bridge.ssf.bookkeeping import DeliveriesFirst, WriteCoalescer
from idp_bridge.domain.errors import NotFound
from idp_bridge.storage.db import StorageUnavailable, utcnow
from idp_bridge.storage.models import Revocation, RevocationReceipt, SsfAck, SsfStream



def poll(bridge, stream_id, **body):
    return bridge.client.post(f"/ssf/poll/{stream_id}", json={"returnImmediately": True, **body},
                              auth=(RS_CLIENT_ID, bridge.rs_secret))


def remove(bridge, user="bob") -> int:
    mid = bridge.membership_id(user)
    assert bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{mid}").status_code == 204
    with bridge.services.db.read() as session:
        return session.scalars(select(Revocation.id).order_by(Revocation.id.desc())).first()


def stream_row(bridge, stream_id) -> SsfStream:
    with bridge.services.db.read() as session:
        return session.get(SsfStream, stream_id)


def receipt_outcomes(bridge, revocation_id) -> dict[str, str | None]:
    with bridge.services.db.read() as session:
        return dict(session.execute(select(RevocationReceipt.stream_id, RevocationReceipt.outcome)
                                    .where(RevocationReceipt.revocation_id == revocation_id)).all())


class Held:
    """A piece of work that keeps the coalescer's transaction open until released, so the
    pieces of other callers queue behind it (and go into one transaction together)."""

    def __init__(self, coalescer: WriteCoalescer):
        self.coalescer = coalescer
        self.started, self.release = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=coalescer.run, args=(self._work,), daemon=True)

    def _work(self, _session):
        self.started.set()
        assert self.release.wait(30)

    def __enter__(self):
        self.thread.start()
        assert self.started.wait(30)
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


def queued(coalescer: WriteCoalescer) -> int:
    with coalescer._condition:
        return len(coalescer._queue)


def test_polls_woken_together_record_their_deliveries_in_one_transaction(bridge):
    bridge.join("bob")
    streams = [new_stream(bridge) for _ in range(5)]
    coalescer = bridge.services.transmitter.bookkeeping
    revocation_id = remove(bridge)
    # The SET keys exist (the first signature makes them, in a transaction of its own: the
    # polls sign before they write, and would wait for the held one there).
    bridge.services.set_keys.jwks()
    answers: dict[str, dict] = {}

    def answer(stream_id):
        client = bridge.app.test_client()
        answers[stream_id] = client.post(f"/ssf/poll/{stream_id}",
                                         json={"returnImmediately": True},
                                         auth=(RS_CLIENT_ID, bridge.rs_secret)).json
    with Held(coalescer):
        before = coalescer.transactions
        threads = [threading.Thread(target=answer, args=(s,), daemon=True) for s in streams]
        for thread in threads:
            thread.start()
        # Every poll has read what is pending and waits for its delivery record.
        wait_until(lambda: queued(coalescer) == len(streams),
                   what=lambda: f"{queued(coalescer)} of {len(streams)} polls queued")
        assert not answers  # none answered before its delivery is recorded
    for thread in threads:
        thread.join(30)
    # The held piece's transaction, then one for all five polls.
    assert coalescer.transactions - before == 2
    for stream_id in streams:
        assert [j.split(".")[0] for j in answers[stream_id]["sets"]] == [f"r{revocation_id}"]
        assert stream_row(bridge, stream_id).delivered_through_id == revocation_id
    # Each receiver's acknowledgement counts.
    for stream_id in streams:
        assert poll(bridge, stream_id, ack=list(answers[stream_id]["sets"])).json == {"sets": {}}
    outcomes = receipt_outcomes(bridge, revocation_id)
    assert all(outcomes[s] == "acknowledged" for s in streams)


def test_acknowledgements_of_concurrent_polls_share_a_transaction(bridge):
    bridge.join("bob")
    streams = [new_stream(bridge) for _ in range(3)]
    revocation_id = remove(bridge)
    given = {s: list(poll(bridge, s).json["sets"]) for s in streams}
    coalescer = bridge.services.transmitter.bookkeeping
    done = []

    def ack(stream_id):
        response = bridge.app.test_client().post(
            f"/ssf/poll/{stream_id}", json={"returnImmediately": True, "ack": given[stream_id]},
            auth=(RS_CLIENT_ID, bridge.rs_secret))
        done.append(response.json)
    with Held(coalescer):
        before = coalescer.transactions
        threads = [threading.Thread(target=ack, args=(s,), daemon=True) for s in streams]
        for thread in threads:
            thread.start()
        wait_until(lambda: queued(coalescer) == len(streams))
    for thread in threads:
        thread.join(30)
    assert done == [{"sets": {}}] * 3
    # The held transaction, one for the three acknowledgements (each poll marked its stream
    # seen in it too: nothing else to write).
    assert coalescer.transactions - before == 2
    assert all(receipt_outcomes(bridge, revocation_id)[s] == "acknowledged" for s in streams)


def test_an_acknowledgement_right_after_the_answer_counts_in_another_process(bridge, settings,
                                                                         upstream):
    """The delivered-through ceiling is committed before the answer: a receiver whose next
    poll reaches another bridge process (same database) has its acknowledgement counted."""
    other_app = build_app(settings)
    try:
        other = Bridge(other_app, other_app.test_client(), upstream)
        bridge.join("bob")
        stream_id = new_stream(bridge)
        revocation_id = remove(bridge)
        sets = poll(bridge, stream_id).json["sets"]
        assert [j.split(".")[0] for j in sets] == [f"r{revocation_id}"]
        assert poll(other, stream_id, ack=list(sets)).json == {"sets": {}}
        assert receipt_outcomes(bridge, revocation_id)[stream_id] == "acknowledged"
        assert poll(bridge, stream_id).json == {"sets": {}}  # not delivered again
    finally:
        services(other_app).db.dispose()


def test_a_failed_bookkeeping_write_answers_nothing_and_the_event_comes_again(bridge,
                                                                              monkeypatch):
    bridge.join("bob")
    stream_id = new_stream(bridge)
    revocation_id = remove(bridge)
    transmitter = bridge.services.transmitter
    record = transmitter._record_delivery
    failures = []

    def failing(session, *args, **kwargs):
        failures.append(1)
        raise OperationalError("UPDATE ssf_streams", {}, Exception("disk I/O error"))
    monkeypatch.setattr(transmitter, "_record_delivery", failing)
    response = poll(bridge, stream_id)
    assert failures and response.status_code == 503
    assert response.json["error"] == "temporarily_unavailable"
    assert "sets" not in response.json
    assert stream_row(bridge, stream_id).delivered_through_id is None
    monkeypatch.setattr(transmitter, "_record_delivery", record)
    sets = poll(bridge, stream_id).json["sets"]
    assert [j.split(".")[0] for j in sets] == [f"r{revocation_id}"]


def test_an_answer_lost_after_the_bookkeeping_is_delivered_again(bridge):
    """At least once: the delivery was recorded, the answer never reached the receiver (the
    process died, the connection broke); only an acknowledgement ends the event."""
    bridge.join("bob")
    stream_id = new_stream(bridge)
    revocation_id = remove(bridge)
    lost = poll(bridge, stream_id).json["sets"]
    assert stream_row(bridge, stream_id).delivered_through_id == revocation_id
    assert poll(bridge, stream_id).json["sets"].keys() == lost.keys()
    with bridge.services.db.read() as session:
        assert session.scalars(select(SsfAck).where(SsfAck.stream_id == stream_id)).all() == []
    assert receipt_outcomes(bridge, revocation_id)[stream_id] is None


def test_a_poll_of_a_stream_deleted_after_its_read_finds_it_gone(bridge, monkeypatch):
    bridge.join("bob")
    stream_id = new_stream(bridge)
    remove(bridge)
    transmitter = bridge.services.transmitter
    claims = transmitter._pending_claims

    def then_deleted(session, stream, *args):
        found = claims(session, stream, *args)
        transmitter.delete_stream(RS_CLIENT_ID, stream_id)
        return found
    monkeypatch.setattr(transmitter, "_pending_claims", then_deleted)
    response = poll(bridge, stream_id)
    assert response.status_code == 404
    assert response.json["error"] == "not_found"
    assert stream_row(bridge, stream_id) is None


# --- the coalescer itself ---

def test_one_failing_piece_is_undone_alone(bridge):
    db = bridge.services.db
    coalescer = WriteCoalescer(db)
    stream_ids = [new_stream(bridge) for _ in range(2)]
    results, errors = {}, {}

    def describe(stream_id, text):
        def work(session):
            session.get(SsfStream, stream_id).description = text
            if text == "broken":
                raise ValueError("this piece fails")
            return text
        return work

    def call(name, work):
        try:
            results[name] = coalescer.run(work)
        except ValueError as exc:
            errors[name] = exc
    with Held(coalescer):
        threads = [threading.Thread(target=call, args=(n, describe(s, n)), daemon=True)
                   for n, s in zip(("kept", "broken"), stream_ids)]
        for thread in threads:
            thread.start()
        wait_until(lambda: queued(coalescer) == 2)
    for thread in threads:
        thread.join(30)
    assert results == {"kept": "kept"} and list(errors) == ["broken"]
    assert coalescer.transactions == 2
    assert stream_row(bridge, stream_ids[0]).description == "kept"
    assert stream_row(bridge, stream_ids[1]).description is None


def test_a_piece_without_savepoint_that_fails_reaches_its_caller_alone(bridge):
    """A piece that changes nothing when it raises runs without a savepoint of its own; its
    error still reaches only its caller, and the batch's other pieces commit."""
    db = bridge.services.db
    coalescer = WriteCoalescer(db)
    kept_id, gone_id = new_stream(bridge), "0" * 32
    results, errors = {}, {}
    transmitter = bridge.services.transmitter
    statements = []
    from sqlalchemy import event

    def note(_conn, _cursor, statement, *_args):
        statements.append(statement.split()[0].upper())
    event.listen(db.write_engine, "before_cursor_execute", note)

    def record(name, stream_id):
        def work(session):
            return transmitter._record_delivery(session, stream_id, RS_CLIENT_ID,
                                                utcnow(), 7, [], utcnow())
        try:
            results[name] = coalescer.run(work, savepoint=False)
        except NotFound as exc:
            errors[name] = exc

    def describe(session):
        session.get(SsfStream, kept_id).description = "kept too"
        return "described"
    try:
        with Held(coalescer):
            threads = [threading.Thread(target=record, args=(n, s), daemon=True)
                       for n, s in (("kept", kept_id), ("gone", gone_id))]
            threads.append(threading.Thread(
                target=lambda: results.__setitem__("described", coalescer.run(describe)),
                daemon=True))
            for thread in threads:
                thread.start()
            wait_until(lambda: queued(coalescer) == 3)
            statements.clear()
        for thread in threads:
            thread.join(30)
    finally:
        event.remove(db.write_engine, "before_cursor_execute", note)
    assert results == {"kept": None, "described": "described"} and list(errors) == ["gone"]
    assert coalescer.transactions == 2
    row = stream_row(bridge, kept_id)
    assert row.delivered_through_id == 7 and row.description == "kept too"
    # One savepoint in that transaction: the piece that asked for one.
    assert statements.count("SAVEPOINT") == 1, statements


def test_a_delivery_record_raises_the_ceiling_only(bridge):
    """The delivery record's UPDATE raises the stream's ceiling, never lowers it, marks the
    stream seen only when asked, and reports a stream that is gone (NotFound)."""
    transmitter = bridge.services.transmitter
    stream_id = new_stream(bridge)
    seen = stream_row(bridge, stream_id).last_seen_at

    def record(top, seen_at=None, stream=stream_id, client=RS_CLIENT_ID):
        with bridge.services.db.transaction() as session:
            transmitter._record_delivery(session, stream, client, seen_at, top, [], utcnow())
    record(5)
    assert stream_row(bridge, stream_id).delivered_through_id == 5
    record(3)  # lower: unchanged
    record(None)  # only the existence check
    row = stream_row(bridge, stream_id)
    assert row.delivered_through_id == 5 and row.last_seen_at == seen
    later = utcnow()
    record(9, seen_at=later)
    row = stream_row(bridge, stream_id)
    assert row.delivered_through_id == 9 and row.last_seen_at == later
    for stream, client in (("0" * 32, RS_CLIENT_ID), (stream_id, "advisor-console")):
        with pytest.raises(NotFound):
            record(11, stream=stream, client=client)
    assert stream_row(bridge, stream_id).delivered_through_id == 9


def test_a_failed_transaction_reaches_every_caller_of_its_batch(bridge, monkeypatch):
    db = bridge.services.db
    coalescer = WriteCoalescer(db)
    stream_id = new_stream(bridge)
    outcomes = []

    def work(session):
        session.get(SsfStream, stream_id).description = "never"
        raise OperationalError("UPDATE", {}, Exception("database is locked"))

    def call():
        try:
            coalescer.run(work)
            outcomes.append("committed")
        except StorageUnavailable:
            outcomes.append("unavailable")
    with Held(coalescer):
        threads = [threading.Thread(target=call, daemon=True) for _ in range(3)]
        for thread in threads:
            thread.start()
        wait_until(lambda: queued(coalescer) == 3)
    for thread in threads:
        thread.join(30)
    assert outcomes == ["unavailable"] * 3
    assert stream_row(bridge, stream_id).description is None
    # The coalescer goes on: the next caller writes.
    assert coalescer.run(lambda session: 7) == 7


@pytest.mark.db_independent
def test_a_caller_alone_writes_at_once(bridge):
    coalescer = WriteCoalescer(bridge.services.db)
    assert [coalescer.run(lambda session, i=i: i) for i in range(3)] == [0, 1, 2]
    assert coalescer.transactions == 3 and coalescer.pieces == 3


# --- how often a waiting long poll checks on its own ---

@pytest.mark.db_independent
def test_waiters_check_rarely_while_another_process_would_wake_them(bridge):
    from idp_bridge.events import DatabaseWakeups, RevocationNotifier

    notifier = RevocationNotifier(poll_interval=0.05, assisted_interval=1.0)
    assert notifier.interval() == 0.05  # nothing else would wake them: check often
    watcher = DatabaseWakeups(bridge.services.db, notifier)
    assert notifier.watchers == [watcher] and notifier.interval() == 0.05
    watcher.watching = True  # the database is watched (data_version / LISTEN)
    assert notifier.interval() == 1.0
    watcher.watching = False  # the watcher failed and backs off: the waiters' checks again
    assert notifier.interval() == 0.05


def test_a_poll_waiting_with_the_database_watched_is_woken_by_a_revocation(bridge):
    """The long wait between a waiter's own checks changes nothing for revocations: the
    commit wakes it (here in-process; other processes through DatabaseWakeups)."""
    bridge.join("bob")
    stream_id = new_stream(bridge)
    notifier = bridge.services.notifier
    notifier.assisted_interval = 3600.0

    class Watching:
        watching = True
    notifier.watchers.append(Watching())
    answer = {}

    def long_poll():
        answer.update(bridge.app.test_client().post(
            f"/ssf/poll/{stream_id}", json={"returnImmediately": False},
            auth=(RS_CLIENT_ID, bridge.rs_secret)).json)
    thread = threading.Thread(target=long_poll, daemon=True)
    thread.start()
    wait_until(lambda: stream_row(bridge, stream_id).last_seen_at >
               stream_row(bridge, stream_id).created_at, what="the poll waiting")
    revocation_id = remove(bridge)
    thread.join(30)
    assert [j.split(".")[0] for j in answer["sets"]] == [f"r{revocation_id}"]


@pytest.mark.db_independent
def test_a_wait_skips_the_first_check_only_while_nothing_was_notified(bridge):
    from idp_bridge.events import RevocationNotifier

    notifier = RevocationNotifier(poll_interval=3600)
    checks = []

    def check():
        checks.append(1)
        return True
    since = notifier.generation()
    # Nothing happened since the caller's own read: no look before a notification or an
    # interval (here: none within the timeout).
    assert not notifier.wait(check, 0, since=since)
    assert checks == []
    assert notifier.wait(check, 0)  # without a mark: a look at once
    assert checks == [1]
    since = notifier.generation()
    notifier.notify()  # something happened after the caller's read: a look at once
    assert notifier.wait(check, 0, since=since)
    assert checks == [1, 1]


def test_the_first_delivery_of_a_wake_up_writes_once_the_others_have_queued(bridge):
    """DeliveriesFirst.gather: the deliveries a wake-up started share one transaction (the
    first to write waits for the others still reading and signing); each reads and signs
    holding the process's computing lock, which its queued record releases."""
    coalescer = WriteCoalescer(bridge.services.db)
    deliveries = DeliveriesFirst(gather_for=30.0)  # bounded; never reached here
    first, second, third = (deliveries.start() for _ in range(3))
    written = []

    def deliver(delivery, name):
        delivery.compute()
        coalescer.run(lambda session: written.append(name), gather=delivery.gather,
                      queued=delivery.ready)
        delivery.done()

    threads = [threading.Thread(target=deliver, args=(first, "first"), daemon=True)]
    threads[0].start()
    # The first has queued its record and writes: it waits for the two still reading.
    wait_until(lambda: coalescer._writing and not deliveries.computing.locked())
    assert coalescer.transactions == 0 and written == []
    for delivery, name in ((second, "second"), (third, "third")):
        threads.append(threading.Thread(target=deliver, args=(delivery, name), daemon=True))
        threads[-1].start()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    assert coalescer.transactions == 1 and coalescer.pieces == 3
    assert sorted(written) == ["first", "second", "third"]
    assert (deliveries._active, deliveries._reading) == (0, 0)


def test_a_delivery_that_finds_nothing_lets_the_first_write_without_it(bridge):
    coalescer = WriteCoalescer(bridge.services.db)
    deliveries = DeliveriesFirst(gather_for=30.0)
    first, idle = deliveries.start(), deliveries.start()
    thread = threading.Thread(target=lambda: coalescer.run(
        lambda session: None, gather=first.gather, queued=first.ready), daemon=True)
    first.compute()
    thread.start()
    wait_until(lambda: coalescer._writing)
    assert coalescer.transactions == 0
    idle.done()  # its read found nothing to answer
    thread.join(30)
    assert not thread.is_alive()
    assert coalescer.transactions == 1 and coalescer.pieces == 1
    first.done()
    assert (deliveries._active, deliveries._reading) == (0, 0)
    idle.done()  # once only
    assert (deliveries._active, deliveries._reading) == (0, 0)


def test_an_acknowledging_poll_waits_for_the_deliveries_in_progress(bridge, monkeypatch):
    """Deliveries first: a poll carrying acknowledgements writes them once the woken long
    polls of the process have answered; they count all the same."""
    bridge.join("bob")
    stream_id = new_stream(bridge)
    revocation_id = remove(bridge)
    sets = poll(bridge, stream_id).json["sets"]
    deliveries = bridge.services.transmitter.deliveries
    assert deliveries.waited == 0  # a poll without acknowledgements never waits
    monkeypatch.setattr(deliveries, "hold", 30.0)
    delivery = deliveries.start()  # another receiver's long poll, answering a wake-up
    answers = []

    def acknowledge():
        answers.append(bridge.app.test_client().post(
            f"/ssf/poll/{stream_id}", json={"returnImmediately": True, "ack": list(sets)},
            auth=(RS_CLIENT_ID, bridge.rs_secret)))

    thread = threading.Thread(target=acknowledge, daemon=True)
    thread.start()
    wait_until(lambda: deliveries.waited == 1)
    assert receipt_outcomes(bridge, revocation_id)[stream_id] is None  # not written yet
    assert not answers
    delivery.done()
    thread.join(30)
    assert not thread.is_alive()
    assert answers[0].status_code == 200 and answers[0].json == {"sets": {}}
    assert receipt_outcomes(bridge, revocation_id)[stream_id] == "acknowledged"


def test_long_polls_woken_by_a_revocation_leave_no_delivery_in_progress(bridge):
    bridge.join("bob")
    streams = [new_stream(bridge) for _ in range(3)]
    bridge.services.set_keys.jwks()
    answers: dict[str, dict] = {}

    def long_poll(stream_id):
        answers[stream_id] = bridge.app.test_client().post(
            f"/ssf/poll/{stream_id}", json={"returnImmediately": False},
            auth=(RS_CLIENT_ID, bridge.rs_secret)).json

    threads = [threading.Thread(target=long_poll, args=(s,), daemon=True) for s in streams]
    for thread in threads:
        thread.start()
    revocation_id = remove(bridge)
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    deliveries = bridge.services.transmitter.deliveries
    assert (deliveries._active, deliveries._reading) == (0, 0)
    assert not deliveries.computing.locked()
    for stream_id in streams:
        assert [j.split(".")[0] for j in answers[stream_id]["sets"]] == [f"r{revocation_id}"]
        assert poll(bridge, stream_id, ack=list(answers[stream_id]["sets"])).json == {"sets": {}}
    assert deliveries.waited == 0
    assert all(receipt_outcomes(bridge, revocation_id)[s] == "acknowledged" for s in streams)
