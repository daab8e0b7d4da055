"""Revocation receipts (issue 14 item 3): after a removal or a family revocation, the
membership's detail (API and page) says when the grant was revoked and, per receiver stream
that was due to receive the event, when that resource server acknowledged it, or why not
yet; "confirmed by 3 of 3 resource servers within 41 ms".

Acknowledgement times are set in the database (no sleeps): what is tested is what is shown
for them, not how fast a test machine polls."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

import pytest
from sqlalchemy import select, update

from conftest import OTHER_TENANT, TENANT, post_form, verify_access_token
from ssf_client import new_stream
from idp_bridge.services.operator import add_client
from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import (
    Membership,
    Revocation,
    RevocationReceipt,
    SsfAck,
    SsfStream,
)
from test_pages_helpers import DE, EN, signed_in, text_of

RECEIVERS = {"payments-api": "Payments API", "reports-api": "Reports API",
             "documents-api": "Documents API"}


@pytest.fixture
def receivers(bridge):
    """Three resource servers (receiver clients), each with a poll stream: client id ->
    (credentials, stream id)."""
    found = {}
    for client_id, name in RECEIVERS.items():
        secret = add_client(bridge.services.db, client_id, name=name, roles=("receiver",))
        found[client_id] = ((client_id, secret), new_stream(bridge, (client_id, secret)))
    return found


def poll_and_ack(bridge, auth, stream_id) -> list[str]:
    """Poll the stream and acknowledge everything it was given; returns the jtis."""
    sets = bridge.client.post(f"/ssf/poll/{stream_id}", auth=auth,
                              json={"returnImmediately": True}).json["sets"]
    response = bridge.client.post(f"/ssf/poll/{stream_id}", auth=auth,
                                  json={"returnImmediately": True, "ack": list(sets)})
    assert response.status_code == 200
    return list(sets)


def latest_revocation(bridge) -> Revocation:
    with bridge.services.db.read() as session:
        return session.scalars(select(Revocation).order_by(Revocation.id.desc())).first()


def set_acked_after(bridge, stream_id, revocation, ms: int) -> None:
    with bridge.services.db.transaction() as session:
        done = session.execute(update(SsfAck).where(
            SsfAck.stream_id == stream_id, SsfAck.revocation_id == revocation.id)
            .values(acked_at=revocation.created_at + timedelta(milliseconds=ms))).rowcount
        receipt = session.execute(update(RevocationReceipt).where(
            RevocationReceipt.stream_id == stream_id,
            RevocationReceipt.revocation_id == revocation.id)
            .values(acknowledged_at=revocation.created_at + timedelta(milliseconds=ms))).rowcount
    assert done == 1 and receipt == 1


def remove(bridge, user="bob", tenant=TENANT) -> str:
    bridge.join(user, tenant=tenant)
    mid = bridge.membership_id(user, tenant=tenant)
    assert bridge.api("delete", f"/api/tenants/{tenant}/memberships/{mid}").status_code == 204
    return mid


def removed_in_other_tenant(bridge) -> str:
    """bob's membership of the other tenant, ended there (anna administers only TENANT)."""
    bridge.join("bob", tenant=OTHER_TENANT)
    with bridge.services.db.transaction() as session:
        m = session.scalars(select(Membership).where(Membership.tenant_id == OTHER_TENANT,
                                                     Membership.ended_at.is_(None))).one()
        bridge.services.memberships.end(session, m, by="system", actor_role="system",
                                        reason="expired", now=utcnow())
        return m.id


def detail(bridge, mid, tenant=TENANT, user="anna"):
    response = bridge.api("get", f"/api/tenants/{tenant}/memberships/{mid}", user=user)
    assert response.status_code == 200, response.json
    return response.json


def by_client(revocation) -> dict:
    return {r["client_id"]: r for r in revocation["receipts"]}


def test_three_receivers_acknowledging_at_different_times(bridge, receivers):
    mid = remove(bridge)
    revocation = latest_revocation(bridge)
    for (auth, stream_id), ms in zip(receivers.values(), (12, 41, 30)):
        assert [j.split(".")[0] for j in poll_and_ack(bridge, auth, stream_id)] == \
            [f"r{revocation.id}"]
        set_acked_after(bridge, stream_id, revocation, ms)

    body = detail(bridge, mid)
    assert body["id"] == mid and body["end_reason"] == "removed_by_tenant"
    assert body["ended_at"] is not None and body["ended_by"]
    [grant] = body["revocation_receipts"]
    assert grant["kind"] == "grant" and grant["reason"] == "removed_by_tenant"
    assert grant["grant_id"] == revocation.value and grant["membership_id"] == mid
    assert (grant["due"], grant["confirmed"], grant["within_ms"]) == (3, 3, 41)
    receipts = by_client(grant)
    assert {c: r["latency_ms"] for c, r in receipts.items()} == {
        "payments-api": 12, "reports-api": 41, "documents-api": 30}
    assert receipts["payments-api"]["client_name"] == "Payments API"
    assert all(r["confirmed"] and r["reason"] is None and r["delivery"] == "poll"
               for r in receipts.values())
    # The tenant's list of revocations answers the same.
    listed = bridge.api("get", f"/api/tenants/{TENANT}/revocations?limit=5")
    assert listed.status_code == 200
    assert listed.json["revocations"][0] == grant


def test_a_paused_stream_has_not_confirmed_and_says_why(bridge, receivers):
    (auth, paused), *others = receivers.values()
    assert bridge.client.post("/ssf/status", auth=auth, json={
        "stream_id": paused, "status": "paused"}).status_code == 200
    mid = remove(bridge)
    revocation = latest_revocation(bridge)
    for auth_other, stream_id in others:
        poll_and_ack(bridge, auth_other, stream_id)
        set_acked_after(bridge, stream_id, revocation, 20)
    assert poll_and_ack(bridge, auth, paused) == []  # held, not delivered

    [grant] = detail(bridge, mid)["revocation_receipts"]
    assert (grant["due"], grant["confirmed"], grant["within_ms"]) == (3, 2, 20)
    receipt = by_client(grant)["payments-api"]
    assert receipt["confirmed"] is False and receipt["acknowledged_at"] is None
    assert (receipt["status"], receipt["reason"]) == ("paused", "paused")


@pytest.mark.parametrize("change, reason", [
    ({"events_requested": []}, "events_not_requested"),
    (None, "not_yet_delivered"),
])
def test_why_a_receiver_has_not_confirmed(bridge, receivers, change, reason):
    auth, stream_id = receivers["reports-api"]
    if change:
        assert bridge.client.patch("/ssf/stream", auth=auth, json={
            "stream_id": stream_id, **change}).status_code == 200
    mid = remove(bridge)
    receipt = by_client(detail(bridge, mid)["revocation_receipts"][0])["reports-api"]
    assert (receipt["confirmed"], receipt["reason"]) == (False, reason)


def test_delivered_but_not_acknowledged_and_offline(bridge, receivers):
    auth, delivered = receivers["reports-api"]
    _auth, offline = receivers["documents-api"]
    mid = remove(bridge)
    assert bridge.client.post(f"/ssf/poll/{delivered}", auth=auth,
                              json={"returnImmediately": True}).json["sets"]
    with bridge.services.db.transaction() as session:
        session.execute(update(SsfStream).where(SsfStream.stream_id == offline).values(
            last_seen_at=latest_revocation(bridge).created_at - timedelta(minutes=10)))
    receipts = by_client(detail(bridge, mid)["revocation_receipts"][0])
    assert receipts["reports-api"]["reason"] == "delivered_unacknowledged"
    assert receipts["documents-api"]["reason"] == "offline"


def test_a_stream_created_after_the_revocation_is_not_counted(bridge, receivers):
    mid = remove(bridge)
    revocation = latest_revocation(bridge)
    for auth, stream_id in receivers.values():
        poll_and_ack(bridge, auth, stream_id)
    auth, _stream = receivers["payments-api"]
    with bridge.services.db.transaction() as session:  # streams older than the revocation
        session.execute(update(SsfStream).values(
            created_at=revocation.created_at - timedelta(seconds=1)))
    late = new_stream(bridge, auth)
    # It gets the event (a new receiver process must learn every relevant revocation) ...
    assert [j.split(".")[0] for j in poll_and_ack(bridge, auth, late)] == [f"r{revocation.id}"]
    [grant] = detail(bridge, mid)["revocation_receipts"]
    # ... but it did not hold the revoked tokens: not counted, not listed.
    assert (grant["due"], grant["confirmed"]) == (3, 3)
    assert late not in {r["stream_id"] for r in grant["receipts"]}


def test_a_subject_the_receiver_left_out_is_no_confirmation(bridge, receivers):
    auth, stream_id = receivers["payments-api"]
    assert bridge.client.post("/ssf/subjects:remove", auth=auth, json={
        "stream_id": stream_id, "subject": {"format": "complex", "tenant": {
            "format": "opaque", "id": TENANT}}}).status_code in (200, 204)
    mid = remove(bridge)
    poll_and_ack(bridge, auth, stream_id)  # the feed drops the event for this stream
    [grant] = detail(bridge, mid)["revocation_receipts"]
    receipt = by_client(grant)["payments-api"]
    assert (receipt["confirmed"], receipt["reason"]) == (False, "subject_removed")
    assert grant["confirmed"] == 0


def reuse_refresh_token(bridge) -> tuple[str, str, Revocation]:
    """bob joins and presents his refresh token twice: the reuse revokes the family. Returns
    the membership's id, the family's sid and the revocation."""
    first = bridge.join("bob")
    mid = bridge.membership_id("bob")
    sid = verify_access_token(bridge, first["access_token"])[1]["sid"]
    refresh = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    assert bridge.token(refresh).status_code == 200
    assert bridge.token(refresh).json["error"] == "invalid_grant"  # reuse: family revoked
    return mid, sid, latest_revocation(bridge)


def test_family_revocations_of_a_live_membership(bridge, receivers):
    mid, sid, revocation = reuse_refresh_token(bridge)
    assert (revocation.kind, revocation.value, revocation.reason) == \
        ("family", sid, "refresh_token_reuse")
    for auth, stream_id in receivers.values():
        poll_and_ack(bridge, auth, stream_id)
        set_acked_after(bridge, stream_id, revocation, 7)

    body = detail(bridge, mid)
    assert body["ended_at"] is None
    [family] = body["revocation_receipts"]
    assert family["kind"] == "family" and family["sid"] == sid and "grant_id" not in family
    assert (family["reason"], family["due"], family["confirmed"], family["within_ms"]) == \
        ("refresh_token_reuse", 3, 3, 7)
    # Then the removal: both, oldest first.
    assert bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{mid}").status_code == 204
    kinds = [r["kind"] for r in detail(bridge, mid)["revocation_receipts"]]
    assert kinds == ["family", "grant"]


def test_another_tenants_membership_is_not_found(bridge, receivers):
    mid = removed_in_other_tenant(bridge)
    response = bridge.api("get", f"/api/tenants/{TENANT}/memberships/{mid}")
    assert response.status_code == 404
    assert response.json["error_code"] == "unknown_membership"
    for bad in ("not-a-uuid", "00000000-0000-4000-8000-000000000000"):
        response = bridge.api("get", f"/api/tenants/{TENANT}/memberships/{bad}")
        assert response.status_code == 404 and response.json["error_code"] == "unknown_membership"
    # And no other tenant's revocation in this tenant's list.
    listed = bridge.api("get", f"/api/tenants/{TENANT}/revocations").json["revocations"]
    assert listed == []


def test_only_the_tenants_admins_may_read_receipts(bridge, receivers):
    mid = remove(bridge)
    for path in (f"/api/tenants/{TENANT}/memberships/{mid}", f"/api/tenants/{TENANT}/revocations"):
        response = bridge.api("get", path, user="bob")
        assert response.status_code == 403
        assert response.json["error_code"] == "not_tenant_admin"


@pytest.mark.parametrize("limit", ["0", "101", "x", "-1"])
def test_revocations_limit_out_of_range(bridge, limit):
    response = bridge.api("get", f"/api/tenants/{TENANT}/revocations?limit={limit}")
    assert response.status_code == 400
    assert (response.json["error"], response.json["error_code"]) == \
        ("invalid_request", "limit_out_of_range")


def test_a_live_membership_has_no_receipts_yet(bridge):
    bridge.join("bob")
    body = detail(bridge, bridge.membership_id("bob"))
    assert body["ended_at"] is None and body["revocation_receipts"] == []


# --- the page ---
@pytest.fixture
def anna(app):
    return signed_in(app, "anna")


def acked_removal(bridge, receivers, pause_one=False) -> str:
    items = list(receivers.values())
    if pause_one:
        auth, stream_id = items.pop()
        assert bridge.client.post("/ssf/status", auth=auth, json={
            "stream_id": stream_id, "status": "paused"}).status_code == 200
    mid = remove(bridge)
    revocation = latest_revocation(bridge)
    for (auth, stream_id), ms in zip(items, (41, 9, 30)):
        poll_and_ack(bridge, auth, stream_id)
        set_acked_after(bridge, stream_id, revocation, ms)
    return mid


@pytest.mark.parametrize("language, summary, paused", [
    (EN, "Confirmed by 3 of 3 resource servers within 41 ms.", None),
    (DE, "Bestätigt von 3 von 3 Ressourcenservern innerhalb von 41 ms.", None),
    (EN, "Confirmed by 2 of 3 resource servers within 41 ms.",
     "Not yet: its stream is paused"),
    (DE, "Bestätigt von 2 von 3 Ressourcenservern innerhalb von 41 ms.",
     "Noch nicht: sein Stream ist pausiert"),
])
def test_the_page_shows_the_summary_and_each_server(anna, bridge, receivers, language,
                                                    summary, paused):
    mid = acked_removal(bridge, receivers, pause_one=paused is not None)
    page = anna.get(f"/tenants/{TENANT}/memberships/{mid}", headers=language)
    assert page.status_code == 200
    text = text_of(page)
    assert summary in text
    assert "Bob Advisor" in text
    assert ("Documents API" in text) and ("Payments API" in text)
    if paused:
        assert paused in text
        assert 'data-reason="paused"' in page.text
    else:
        assert page.text.count('data-confirmed="yes"') == 3


def server_cells(page) -> dict[str, str]:
    """Stream id -> the text of its row's "Resource server" cell, as the page shows it."""
    return {stream: re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", cell))).strip()
            for stream, cell in re.findall(
                r'<tr data-stream="([^"]+)"[^>]*>\s*<td data-label="[^"]+">(.*?)</td>',
                page.text, flags=re.S)}


@pytest.mark.parametrize("language, word", [(EN, "stream"), (DE, "Stream")])
def test_two_streams_of_one_client_are_told_apart_on_the_page(anna, bridge, receivers,
                                                              language, word):
    """A client with two streams (two processes of one resource server, say): the page
    names each of its rows by its stream, so they can be told apart; the streams of
    clients with one stream are not named, and no row shows a whole stream id."""
    auth, first = receivers["payments-api"]
    second = new_stream(bridge, auth)
    mid = remove(bridge)
    revocation = latest_revocation(bridge)
    streams = [first, second] + [stream for client, (_a, stream) in receivers.items()
                                 if client != "payments-api"]
    for stream_auth, stream in [(auth, first), (auth, second)] + [
            receivers[c] for c in ("reports-api", "documents-api")]:
        poll_and_ack(bridge, stream_auth, stream)
        set_acked_after(bridge, stream, revocation, 20)

    page = anna.get(f"/tenants/{TENANT}/memberships/{mid}", headers=language)
    assert page.status_code == 200
    cells = server_cells(page)
    assert sorted(cells) == sorted(streams)
    # The two rows of one client: its name, each with its own stream, different rows.
    assert cells[first].startswith("Payments API") and cells[second].startswith("Payments API")
    assert cells[first].endswith(f"{word} {first[:8]}")
    assert cells[second].endswith(f"{word} {second[:8]}")
    assert cells[first] != cells[second]
    # The others: the client alone, no stream named.
    for client in ("reports-api", "documents-api"):
        _auth, stream = receivers[client]
        assert cells[stream] == f"{RECEIVERS[client]} ({client})"
        assert stream[:8] not in text_of(page)
    assert not any(stream in text_of(page) for stream in streams)
    assert 'data-confirmed="4"' in page.text and 'data-due="4"' in page.text


def test_a_described_stream_is_named_by_its_description(anna, bridge, receivers):
    """Of a client's two streams, the one the resource server described is shown by its
    description instead of its id; the other by its id, so the two differ still."""
    auth, first = receivers["payments-api"]
    described = new_stream(bridge, auth, description="Payments API, data centre Frankfurt")
    mid = remove(bridge)
    cells = server_cells(anna.get(f"/tenants/{TENANT}/memberships/{mid}", headers=EN))
    assert cells[described] == "Payments API (payments-api) Payments API, data centre Frankfurt"
    assert described[:8] not in cells[described]
    assert cells[first] == f"Payments API (payments-api) stream {first[:8]}"


def test_the_page_for_a_revocation_nobody_received(anna, bridge):
    mid = remove(bridge)
    text = text_of(anna.get(f"/tenants/{TENANT}/memberships/{mid}", headers=DE))
    assert "Zu diesem Zeitpunkt empfing kein Ressourcenserver Widerrufsereignisse." in text
    text = text_of(anna.get(f"/tenants/{TENANT}/memberships/{mid}", headers=EN))
    assert "No resource server was receiving revocation events at the time." in text


def test_removal_flash_and_access_log_link_to_the_receipts(anna, bridge, receivers):
    bridge.join("bob")
    mid = bridge.membership_id("bob")
    page = anna.get(f"/tenants/{TENANT}/advisors/{mid}/remove", headers=EN)
    token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    response = post_form(anna, f"/tenants/{TENANT}/advisors/{mid}/remove",
                         [("csrf_token", token), ("from", "help")])
    assert response.status_code == 303
    landed = anna.get(response.headers["Location"], headers=EN)
    link = f'href="/tenants/{TENANT}/memberships/{mid}"'
    assert link in landed.text and "Which resource servers confirmed it" in landed.text
    log = anna.get(f"/tenants/{TENANT}/log", headers=EN)
    assert log.status_code == 200 and link in log.text
    assert anna.get(f"/tenants/{TENANT}/memberships/{mid}", headers=EN).status_code == 200


def test_the_page_refuses_another_tenants_membership(anna, bridge):
    mid = removed_in_other_tenant(bridge)
    assert anna.get(f"/tenants/{TENANT}/memberships/{mid}", headers=EN).status_code == 404
    assert anna.get(f"/tenants/{OTHER_TENANT}/memberships/{mid}", headers=EN).status_code == 403
