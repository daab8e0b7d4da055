"""Durable revocation receipts: ``revocation_receipts`` is written in the revocation's own
transaction for every stream due to receive its event, stamped by the first acknowledgement
and closed (``stream_deleted``) when a stream goes before acknowledging. The receipts outlive
the feed's pruning of acknowledgements and idle streams."""

from __future__ import annotations

from datetime import timedelta

from alembic import command
from sqlalchemy import select

from conftest import TENANT
from idp_bridge.services.operator import add_client
from idp_bridge.ssf.streams import IDLE_STREAM
from idp_bridge.storage.db import Database, utcnow
from idp_bridge.storage.models import Revocation, RevocationReceipt, SsfAck, SsfStream
from test_pages_helpers import text_of
from test_revocation_receipts import (  # noqa: F401  (fixtures)
    anna,
    by_client,
    detail,
    latest_revocation,
    new_stream,
    poll_and_ack,
    receivers,
    remove,
    reuse_refresh_token,
)


def receipt_rows(bridge, revocation_id) -> dict[str, RevocationReceipt]:
    with bridge.services.db.transaction() as session:
        rows = session.scalars(select(RevocationReceipt).where(
            RevocationReceipt.revocation_id == revocation_id)).all()
        session.expunge_all()
    return {r.client_id: r for r in rows}


def sweep_everything(bridge) -> None:
    """The feed forgets every acknowledgement and every (now idle) stream."""
    transmitter = bridge.services.transmitter
    later = utcnow() + transmitter.relevance * 2 + IDLE_STREAM + timedelta(minutes=1)
    transmitter.cleanup(later)
    with bridge.services.db.transaction() as session:
        assert session.scalars(select(SsfAck)).all() == []
        assert session.scalars(select(SsfStream)).all() == []


def test_receipts_survive_the_sweep_of_acks_and_idle_streams(bridge, receivers):
    mid = remove(bridge)
    revocation = latest_revocation(bridge)
    for auth, stream_id in receivers.values():
        poll_and_ack(bridge, auth, stream_id)
    before = by_client(detail(bridge, mid)["revocation_receipts"][0])
    sweep_everything(bridge)

    [grant] = detail(bridge, mid)["revocation_receipts"]
    assert (grant["due"], grant["confirmed"]) == (3, 3)
    after = by_client(grant)
    assert set(after) == set(receivers)
    for client_id, receipt in after.items():
        assert receipt["confirmed"] and receipt["reason"] is None
        assert receipt["acknowledged_at"] == before[client_id]["acknowledged_at"]
        assert receipt["status"] == "deleted" and receipt["last_seen_at"] is None
        assert receipt["client_name"] == before[client_id]["client_name"]
    assert {r.outcome for r in receipt_rows(bridge, revocation.id).values()} == {"acknowledged"}


def test_a_stream_deleted_before_acknowledging_shows_stream_deleted(bridge, receivers):
    mid = remove(bridge)
    (gone_auth, gone), *others = receivers.values()
    for auth, stream_id in others:
        poll_and_ack(bridge, auth, stream_id)
    assert bridge.client.delete(f"/ssf/stream?stream_id={gone}", auth=gone_auth) \
        .status_code == 204
    [grant] = detail(bridge, mid)["revocation_receipts"]
    assert (grant["due"], grant["confirmed"]) == (3, 2)
    receipt = by_client(grant)[gone_auth[0]]
    assert (receipt["confirmed"], receipt["reason"], receipt["status"]) == \
        (False, "stream_deleted", "deleted")
    # The sweep of the others changes nothing for it, nor for them.
    sweep_everything(bridge)
    again = by_client(detail(bridge, mid)["revocation_receipts"][0])
    assert again[gone_auth[0]]["reason"] == "stream_deleted"
    assert sum(r["confirmed"] for r in again.values()) == 2


def test_an_idle_stream_pruned_before_acknowledging_shows_stream_deleted(bridge, receivers):
    mid = remove(bridge)
    revocation = latest_revocation(bridge)
    sweep_everything(bridge)
    rows = receipt_rows(bridge, revocation.id)
    assert {r.outcome for r in rows.values()} == {"stream_deleted"}
    assert all(r.acknowledged_at is None for r in rows.values())
    [grant] = detail(bridge, mid)["revocation_receipts"]
    assert (grant["due"], grant["confirmed"]) == (3, 0)
    assert {r["reason"] for r in grant["receipts"]} == {"stream_deleted"}


def test_a_duplicate_acknowledgement_keeps_the_first_time(bridge, receivers):
    remove(bridge)
    revocation = latest_revocation(bridge)
    auth, stream_id = receivers["payments-api"]
    [jti] = poll_and_ack(bridge, auth, stream_id)
    first = receipt_rows(bridge, revocation.id)["payments-api"].acknowledged_at
    assert first is not None
    response = bridge.client.post(f"/ssf/poll/{stream_id}", auth=auth,
                                  json={"returnImmediately": True, "ack": [jti]})
    assert response.status_code == 200
    again = receipt_rows(bridge, revocation.id)["payments-api"]
    assert (again.acknowledged_at, again.outcome) == (first, "acknowledged")


def test_another_receiver_cannot_delete_the_stream_nor_close_its_receipt(bridge, receivers):
    remove(bridge)
    revocation = latest_revocation(bridge)
    _, stream_id = receivers["payments-api"]
    other = receivers["reports-api"][0]
    before = receipt_rows(bridge, revocation.id)
    response = bridge.client.delete(f"/ssf/stream?stream_id={stream_id}", auth=other)
    assert response.status_code == 404 and response.json["error"] == "not_found"
    after = receipt_rows(bridge, revocation.id)
    assert {c: (r.outcome, r.acknowledged_at) for c, r in after.items()} == \
        {c: (r.outcome, r.acknowledged_at) for c, r in before.items()}


def test_a_stream_created_after_the_revocation_gets_no_receipt(bridge, receivers):
    mid = remove(bridge)
    revocation = latest_revocation(bridge)
    secret = add_client(bridge.services.db, "late-api", name="Late API", roles=("receiver",))
    late = new_stream(bridge, ("late-api", secret))
    poll_and_ack(bridge, ("late-api", secret), late)
    assert "late-api" not in receipt_rows(bridge, revocation.id)
    assert set(by_client(detail(bridge, mid)["revocation_receipts"][0])) == set(receivers)


def test_family_revocations_get_durable_receipts(bridge, receivers):
    mid, sid, revocation = reuse_refresh_token(bridge)
    assert (revocation.kind, revocation.value) == ("family", sid)
    assert set(receipt_rows(bridge, revocation.id)) == set(receivers)
    for auth, stream_id in receivers.values():
        poll_and_ack(bridge, auth, stream_id)
    sweep_everything(bridge)
    [family] = detail(bridge, mid)["revocation_receipts"]
    assert (family["kind"], family["sid"], family["due"], family["confirmed"]) == \
        ("family", sid, 3, 3)


def test_the_page_shows_the_confirmations_after_the_sweep(anna, bridge, receivers):
    mid = remove(bridge)
    items = list(receivers.values())
    for auth, stream_id in items[:2]:
        poll_and_ack(bridge, auth, stream_id)
    sweep_everything(bridge)
    page = anna.get(f"/tenants/{TENANT}/memberships/{mid}")
    assert page.status_code == 200
    text = text_of(page)
    assert "Confirmed by 2 of 3 resource servers" in text
    assert "its stream was deleted before it confirmed" in text
    page = anna.get(f"/tenants/{TENANT}/memberships/{mid}",
                    headers={"Accept-Language": "de"})
    assert "sein Stream wurde gelöscht, bevor er bestätigt hat" in text_of(page)


def test_the_migration_backfills_receipts_from_the_feed(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'old.sqlite'}")
    try:
        db.upgrade()
        add_client(db, "rs-a", name="A", roles=("receiver",))
        add_client(db, "rs-b", name="B", roles=("receiver",))
        t0 = utcnow() - timedelta(hours=3)
        with db.transaction() as session:
            early = Revocation(kind="grant", value="g-early", tenant_id=TENANT, subject="s",
                               reason="removed_by_tenant", created_at=t0)
            session.add(early)
            session.flush()
            for sid, client, ack in (("sa", "rs-a", True), ("sb", "rs-b", False)):
                session.add(SsfStream(
                    stream_id=sid, client_id=client, delivery_method="urn:ietf:rfc:8936",
                    events_requested=[], start_after_id=early.id,
                    created_at=t0 + timedelta(minutes=1),
                    last_seen_at=t0 + timedelta(minutes=1), description=f"d-{sid}"))
            later = Revocation(kind="grant", value="g-late", tenant_id=TENANT, subject="s",
                               reason="removed_by_tenant", created_at=t0 + timedelta(minutes=2))
            session.add(later)
            session.flush()
            session.add(SsfAck(stream_id="sa", revocation_id=later.id,
                               acked_at=t0 + timedelta(minutes=3)))
            ids = early.id, later.id
        with db.engine.begin() as connection:
            config = db.alembic_config()
            config.attributes["connection"] = connection
            command.downgrade(config, "0019")
        db.upgrade()
        with db.transaction() as session:
            rows = {(r.revocation_id, r.stream_id): r for r in session.scalars(
                select(RevocationReceipt))}
            assert set(rows) == {(ids[1], "sa"), (ids[1], "sb")}  # streams started later
            a, b = rows[(ids[1], "sa")], rows[(ids[1], "sb")]
            assert (a.outcome, a.acknowledged_at) == ("acknowledged", t0 + timedelta(minutes=3))
            assert (b.outcome, b.acknowledged_at) == (None, None)
            assert (a.client_id, a.delivery, a.description) == ("rs-a", "poll", "d-sa")
    finally:
        db.dispose()


def test_a_receiver_reporting_an_error_is_not_counted_as_confirmed(bridge, receivers):
    """RFC 8936 ``setErrs``: the receiver could not process the event. The feed does not
    deliver it again, but its receipt says ``receiver_error``, never confirmed; a later
    ``ack`` of the same jti changes nothing."""
    mid = remove(bridge)
    revocation = latest_revocation(bridge)
    (bad_auth, bad), *others = receivers.values()
    for auth, stream_id in others:
        poll_and_ack(bridge, auth, stream_id)
    sets = bridge.client.post(f"/ssf/poll/{bad}", auth=bad_auth,
                              json={"returnImmediately": True}).json["sets"]
    [jti] = list(sets)
    response = bridge.client.post(f"/ssf/poll/{bad}", auth=bad_auth, json={
        "returnImmediately": True,
        "setErrs": {jti: {"err": "invalid_request", "description": "cannot apply"}}})
    assert response.status_code == 200 and response.json["sets"] == {}  # not again
    again = bridge.client.post(f"/ssf/poll/{bad}", auth=bad_auth,
                               json={"returnImmediately": True, "ack": [jti]})
    assert again.status_code == 200 and again.json["sets"] == {}
    row = receipt_rows(bridge, revocation.id)[bad_auth[0]]
    assert (row.outcome, row.acknowledged_at) == ("receiver_error", None)
    [grant] = detail(bridge, mid)["revocation_receipts"]
    assert (grant["due"], grant["confirmed"]) == (3, 2)
    receipt = by_client(grant)[bad_auth[0]]
    assert (receipt["confirmed"], receipt["reason"]) == (False, "receiver_error")
    sweep_everything(bridge)
    assert by_client(detail(bridge, mid)["revocation_receipts"][0])[bad_auth[0]]["reason"] \
        == "receiver_error"
