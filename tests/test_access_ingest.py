"""POST /access-records and the access-record services (issue 14 items 2 and 7): records
accepted, answered as duplicates or refused one by one (unknown grant, another tenant's
grant, another advisor, a forged sid, malformed), refusals audited in the claimed tenant and
never stored, a batch sent twice stored once, malformed batches 400 with nothing stored,
clients that are no receivers refused, the retention sweep, the tenant admins' reads."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from conftest import OTHER_TENANT, RS_CLIENT_ID, TENANT, audit_events, verify_access_token
from idp_bridge.devidp import DEMO_USERS
from idp_bridge.domain.access_records import AccessRecords
from idp_bridge.services.access_records import AccessQuery
from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import AccessRecord, AuditEvent

BOB = DEMO_USERS["bob"]["sub"]


def _at(when: datetime | None = None) -> str:
    when = when or utcnow()
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{when.microsecond // 1000:03d}Z"


def token_claims(bridge, body) -> dict:
    _header, claims = verify_access_token(bridge, body["access_token"])
    return claims


def record(claims, **overrides) -> dict:
    value = {"id": str(uuid.uuid4()), "tenant": claims["tenant"], "grant_id": claims["grant_id"],
             "sid": claims["sid"], "sub": claims["sub"], "area": "ebics", "action": "read",
             "method": "GET", "route": "/tenants/<tenant>/ebics", "status": 200, "at": _at()}
    value.update(overrides)
    return value


def stored(bridge) -> int:
    with bridge.services.db.read() as session:
        return session.scalar(select(func.count()).select_from(AccessRecord))


def send(bridge, records, auth=None, **kwargs):
    return bridge.client.post("/access-records", json={"records": records},
                              auth=auth or (RS_CLIENT_ID, bridge.rs_secret), **kwargs)


@pytest.fixture
def bob(bridge):
    return token_claims(bridge, bridge.join("bob"))


def test_accepted_then_duplicate(bridge, bob):
    records = [record(bob), record(bob, area="payments", status=403)]
    response = send(bridge, records)
    assert response.status_code == 200, response.json
    assert response.json == {"accepted": [r["id"] for r in records], "duplicates": [],
                             "refused": []}
    again = send(bridge, records)
    assert again.status_code == 200
    assert again.json == {"accepted": [], "duplicates": [r["id"] for r in records],
                          "refused": []}
    assert stored(bridge) == 2
    with bridge.services.db.read() as session:
        row = session.scalars(select(AccessRecord).where(
            AccessRecord.record_id == records[0]["id"])).one()
    assert (row.client_id, row.tenant_id, row.subject, row.area, row.route, row.status) == (
        RS_CLIENT_ID, TENANT, BOB, "ebics", "/tenants/<tenant>/ebics", 200)
    assert row.membership_id == bridge.membership_id("bob")


def test_times_are_stored_as_sent_whatever_the_database_time_zone(bridge, bob):
    """The record's time and the time received are UTC on every backend; a PostgreSQL whose
    sessions run in another time zone (UTC+14 here) shifts neither."""
    db = bridge.services.db
    if db.url.get_backend_name() == "postgresql":
        with db.engine.connect() as connection:
            connection.exec_driver_sql(
                f"ALTER DATABASE \"{db.url.database}\" SET timezone = 'Pacific/Kiritimati'")
            connection.commit()
        db.engine.dispose()  # new connections take the database's setting
    when = utcnow().replace(microsecond=123000) - timedelta(hours=3)
    before = utcnow().replace(microsecond=0)
    one = record(bob, at=_at(when))
    assert send(bridge, [one]).json["accepted"] == [one["id"]]
    with db.read() as session:
        if db.url.get_backend_name() == "postgresql":
            assert session.execute(select(func.current_setting("TimeZone"))).scalar() == \
                "Pacific/Kiritimati"
        row = session.scalars(select(AccessRecord).where(
            AccessRecord.record_id == one["id"])).one()
    assert row.at == when
    assert before <= row.received_at <= utcnow()


def test_same_id_twice_in_one_batch_is_stored_once(bridge, bob):
    one = record(bob)
    response = send(bridge, [one, dict(one)])
    assert response.json == {"accepted": [one["id"]], "duplicates": [one["id"]], "refused": []}
    assert stored(bridge) == 1


def _refusals(bridge, tenant=TENANT):
    return [e for e in audit_events(bridge, "access_record.refused", tenant)]


@pytest.mark.parametrize("change, error", [
    ({"grant_id": str(uuid.uuid4())}, "unknown_grant"),
    ({"sid": str(uuid.uuid4())}, "unknown_grant"),
    ({"sub": "someone-else"}, "subject_mismatch"),
    ({"area": "not-an-area"}, "invalid_record"),
    ({"action": "delete"}, "invalid_record"),
    ({"method": "get"}, "invalid_record"),
    ({"route": "/tenants/10042/ebics?x=1"}, "invalid_record"),
    ({"route": "x" * 201}, "invalid_record"),
    ({"status": 99}, "invalid_record"),
    ({"status": True}, "invalid_record"),
    ({"status": "200"}, "invalid_record"),
    ({"at": "2026-12-02T10:42:01.123+01:00"}, "invalid_record"),
    ({"at": "yesterday"}, "invalid_record"),
    ({"tenant": "t" * 65}, "invalid_record"),
    ({"sub": None}, "invalid_record"),
])
def test_refused_records_are_audited_and_not_stored(bridge, bob, change, error):
    good, bad = record(bob), record(bob, **change)
    before = len(_refusals(bridge))
    response = send(bridge, [good, bad])
    assert response.status_code == 200, response.json
    assert response.json["accepted"] == [good["id"]]
    assert response.json["refused"] == [{"id": bad["id"], "error": error}]
    assert stored(bridge) == 1
    events = _refusals(bridge)
    if "tenant" in change:  # no tenant of that name: nowhere to audit it (logged)
        assert len(events) == before
        return
    assert len(events) == before + 1
    assert events[0]["detail"]["error"] == error
    assert events[0]["actor"] == RS_CLIENT_ID


def test_future_record_is_refused(bridge, bob):
    late = record(bob, at=_at(utcnow() + timedelta(minutes=10)))
    assert send(bridge, [late]).json["refused"] == [{"id": late["id"], "error": "invalid_record"}]
    assert stored(bridge) == 0


def test_another_tenants_grant_is_refused_and_audited_in_the_claimed_tenant(bridge, bob):
    # The receiver claims bob's grant (of TENANT) for OTHER_TENANT, where bob has no access.
    forged = record(bob, tenant=OTHER_TENANT)
    response = send(bridge, [forged])
    assert response.status_code == 200
    assert response.json == {"accepted": [], "duplicates": [],
                             "refused": [{"id": forged["id"], "error": "grant_tenant_mismatch"}]}
    assert stored(bridge) == 0
    with bridge.services.db.read() as session:
        events = session.scalars(select(AuditEvent).where(
            AuditEvent.event == "access_record.refused")).all()
    assert [(e.tenant_id, e.client_id, e.detail["error"]) for e in events] == [
        (OTHER_TENANT, RS_CLIENT_ID, "grant_tenant_mismatch")]


def test_unknown_tenant_is_refused_without_an_audit_event(bridge, bob):
    forged = record(bob, tenant="no-such-tenant", grant_id=str(uuid.uuid4()))
    assert send(bridge, [forged]).json["refused"] == [{"id": forged["id"],
                                                       "error": "unknown_grant"}]
    with bridge.services.db.read() as session:
        assert session.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.event == "access_record.refused")) == 0
    assert stored(bridge) == 0


def test_ended_membership_records_are_still_true(bridge, bob):
    membership = bridge.membership_id("bob")
    removed = bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{membership}")
    assert removed.status_code in (200, 204), removed.json
    late = record(bob)
    assert send(bridge, [late]).json["accepted"] == [late["id"]]


@pytest.mark.parametrize("body", [
    b"not json", b"[]", b'"records"', b"{}", b'{"records": {}}', b'{"records": "x"}',
])
def test_malformed_batches_are_400_and_store_nothing(bridge, bob, body):
    response = bridge.client.post("/access-records", data=body,
                                  content_type="application/json",
                                  auth=(RS_CLIENT_ID, bridge.rs_secret))
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    assert stored(bridge) == 0


def test_more_than_1000_records_is_400(bridge, bob):
    response = send(bridge, [record(bob) for _ in range(1001)])
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    assert stored(bridge) == 0


def test_a_batch_of_1000_over_64_kib_is_taken_in_transactions_of_200(bridge, bob):
    """The ingest has a request limit of its own (1 MiB): 1,000 records (over the app's
    64 KiB) are stored, in transactions of at most 200 records (the listener is called in
    each); one refused record in the fourth of them refuses only itself; the batch sent
    again is stored once."""
    from idp_bridge.domain.access_records import TRANSACTION_RECORDS

    records = [record(bob) for _ in range(1000)]
    records[700] = record(bob, sub="someone-else")
    service = bridge.services.use_cases.access_records
    calls = []
    service.listeners.append(lambda session, client_id, ids, now: calls.append(len(ids)))
    try:
        body = json.dumps({"records": records}).encode()
        assert 64 * 1024 < len(body) < 1024 * 1024
        response = send(bridge, records)
        assert response.status_code == 200, response.json
        assert response.json["accepted"] == [r["id"] for i, r in enumerate(records) if i != 700]
        assert response.json["refused"] == [{"id": records[700]["id"],
                                             "error": "subject_mismatch"}]
        assert TRANSACTION_RECORDS == 200 and calls == [200, 200, 200, 199, 200]
        assert stored(bridge) == 999
        again = send(bridge, records)
        assert again.status_code == 200
        assert again.json["accepted"] == [] and len(again.json["duplicates"]) == 999
        assert again.json["refused"] == [{"id": records[700]["id"], "error": "subject_mismatch"}]
        assert stored(bridge) == 999
    finally:
        service.listeners.pop()


def test_a_failing_transaction_keeps_the_earlier_ones_and_the_batch_sent_again_once(bridge,
                                                                                   bob):
    """Should the third transaction of a batch fail, the first two stay stored; sent again,
    those are duplicates and the rest is stored: every record once."""
    records = [record(bob) for _ in range(1000)]
    service = bridge.services.use_cases.access_records
    calls = []

    def failing(session, client_id, ids, now):
        calls.append(len(ids))
        if len(calls) == 3:
            raise RuntimeError("the database went away")

    service.listeners.append(failing)
    try:
        with pytest.raises(RuntimeError):
            service.ingest(RS_CLIENT_ID, {"records": records})
        assert stored(bridge) == 400
        result = service.ingest(RS_CLIENT_ID, {"records": records})
    finally:
        service.listeners.remove(failing)
    assert result.duplicates == [r["id"] for r in records[:400]]
    assert result.accepted == [r["id"] for r in records[400:]] and result.refused == []
    assert stored(bridge) == 1000


def test_a_batch_over_1_mib_is_413_and_stores_nothing(bridge, bob):
    records = [record(bob, route="/" + "r" * 199, sub=BOB) for _ in range(1000)]
    # Over 1 MiB only by its padding: 1,000 valid records of about 1 KiB each.
    body = json.dumps({"records": records, "padding": "x" * (1024 * 1024)}).encode()
    response = bridge.client.post("/access-records", data=body,
                                  content_type="application/json",
                                  auth=(RS_CLIENT_ID, bridge.rs_secret))
    assert response.status_code == 413
    assert response.json["error"] == "invalid_request"
    assert stored(bridge) == 0
    assert _refusals(bridge) == []


def test_other_endpoints_keep_the_64_kib_limit(bridge, bob):
    """The ingest's limit is its own: the revocation feed's management endpoint (the same
    receiver client) and the token endpoint still refuse a body over 64 KiB with 413."""
    auth = (RS_CLIENT_ID, bridge.rs_secret)
    streams = bridge.client.get("/ssf/stream", auth=auth).json
    big = {"delivery": {"method": "urn:ietf:rfc:8936"}, "description": "x" * (65 * 1024)}
    response = bridge.client.post("/ssf/stream", json=big, auth=auth)
    assert response.status_code == 413
    assert response.json["error"] == "invalid_request"
    assert bridge.client.get("/ssf/stream", auth=auth).json == streams  # no stream made
    token = bridge.client.post("/token", data={"grant_type": "client_credentials",
                                                "scope": "x" * (65 * 1024)}, auth=auth)
    assert token.status_code == 413
    assert token.json["error"] == "invalid_request"
    # Just under 64 KiB the ingest answers as usual (its limit is larger, not smaller).
    assert send(bridge, [record(bob)]).status_code == 200


def test_authentication(bridge, bob):
    one = record(bob)
    wrong = send(bridge, [one], auth=(RS_CLIENT_ID, "wrong"))
    assert wrong.status_code == 401 and wrong.json["error"] == "invalid_client"
    none = bridge.client.post("/access-records", json={"records": [one]})
    assert none.status_code == 401 and none.json["error"] == "invalid_client"
    # The advisor console is a client, but no receiver.
    console = send(bridge, [one], auth=bridge.auth())
    assert console.status_code == 403 and console.json["error"] == "forbidden"
    # An advisor's access token is no management token.
    bearer = bridge.client.post("/access-records", json={"records": [one]}, headers={
        "Authorization": f"Bearer {bridge.join('carol')['access_token']}"})
    assert bearer.status_code == 401 and bearer.json["error"] == "invalid_token"
    assert stored(bridge) == 0


def _client_credentials(bridge, scope):
    response = bridge.client.post("/token", data={"grant_type": "client_credentials",
                                                  "scope": scope},
                                  auth=(RS_CLIENT_ID, bridge.rs_secret))
    assert response.status_code == 200, response.json
    return response.json["access_token"]


def test_client_credentials_token_with_access_record_scope(bridge, bob):
    one = record(bob)
    token = _client_credentials(bridge, "access.record")
    response = bridge.client.post("/access-records", json={"records": [one]},
                                  headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.json
    assert response.json["accepted"] == [one["id"]]
    # A token for managing streams only may not report records.
    manage = _client_credentials(bridge, "ssf.manage")
    refused = bridge.client.post("/access-records", json={"records": [record(bob)]},
                                 headers={"Authorization": f"Bearer {manage}"})
    assert refused.status_code == 403 and refused.json["error"] == "insufficient_scope"
    assert stored(bridge) == 1


def test_retention_sweep(bridge, bob):
    services = bridge.services
    old, new = record(bob, at=_at(utcnow() - timedelta(days=401))), record(bob)
    assert len(send(bridge, [old, new]).json["accepted"]) == 2
    services.maintenance.run_once()
    with services.db.read() as session:
        assert list(session.scalars(select(AccessRecord.record_id))) == [new["id"]]
    with services.db.transaction() as session:
        assert AccessRecords.sweep(session, utcnow() + timedelta(days=400), 400) == 1
    assert stored(bridge) == 0


def _anna(bridge):
    return bridge.services.use_cases.callers.from_bearer_token(bridge.upstream_token("anna"))


def test_reads(bridge, bob):
    now = utcnow()
    records = [record(bob, at=_at(now - timedelta(minutes=2))),
               record(bob, at=_at(now - timedelta(minutes=1)), status=404),
               record(bob, at=_at(now - timedelta(seconds=30))),
               record(bob, area="payments", at=_at(now - timedelta(hours=1)))]
    assert len(send(bridge, records).json["accepted"]) == 4
    service = bridge.services.use_cases.access_records
    anna = _anna(bridge)
    groups = service.access_summary(anna, TENANT, AccessQuery())
    assert [(g.subject, g.area, g.action, g.count, g.statuses) for g in groups] == [
        (BOB, "ebics", "read", 3, {200: 2, 404: 1}), (BOB, "payments", "read", 1, {200: 1})]
    assert groups[0].advisor_name == DEMO_USERS["bob"]["name"]
    assert groups[0].first_at < groups[0].last_at
    assert service.access_summary(anna, TENANT, AccessQuery(area="payments"))[0].count == 1
    assert service.access_summary(anna, TENANT, AccessQuery(advisor="carol")) == []
    assert len(service.access_summary(anna, TENANT, AccessQuery(advisor="bob"))) == 2
    page = service.access_requests(anna, TENANT, AccessQuery(area="ebics"), limit=2)
    assert [r.route for r in page.requests] == ["/tenants/<tenant>/ebics"] * 2
    assert page.requests[0].at > page.requests[1].at and page.next_before_id is not None
    rest = service.access_requests(anna, TENANT, AccessQuery(area="ebics"),
                                   before_id=page.next_before_id, limit=2)
    assert len(rest.requests) == 1 and rest.next_before_id is None
    active = service.active_now(anna, TENANT, now)
    assert [(a.subject, a.areas, a.count, a.live) for a in active] == [(BOB, ("ebics",), 3, True)]
    assert service.last_activity(anna, TENANT) == {
        bridge.membership_id("bob"): groups[0].last_at}


def test_paging_follows_the_time_order_when_records_arrive_late(bridge, bob):
    """A spool shipped after an outage brings older records with newer ids: paging through
    the records newest first shows each exactly once (the cursor is the last record's time
    and id, not its id alone, which skipped some and repeated others)."""
    now = utcnow()
    recent = [record(bob, at=_at(now - timedelta(seconds=s))) for s in (1, 2, 3, 4)]
    late = [record(bob, at=_at(now - timedelta(minutes=m))) for m in (1, 2, 3)]
    same = [record(bob, at=_at(now - timedelta(seconds=30))) for _ in range(3)]  # one time
    for batch in (recent, late, same):  # the late ones get the higher ids
        assert len(send(bridge, batch).json["accepted"]) == len(batch)
    service, anna = bridge.services.use_cases.access_records, _anna(bridge)
    for limit in (1, 2, 3, 500):
        seen, before = [], None
        while True:
            page = service.access_requests(anna, TENANT, AccessQuery(), before_id=before,
                                           limit=limit)
            seen += page.requests
            before = page.next_before_id
            if before is None:
                break
        assert len(seen) == 10 and len({r.id for r in seen}) == 10, limit
        assert [(r.at, r.id) for r in seen] == sorted(((r.at, r.id) for r in seen),
                                                      reverse=True)
    # A cursor that is no record of this tenant ends the list (nothing to page on from).
    assert service.access_requests(anna, TENANT, AccessQuery(), before_id=10 ** 9).requests \
        == []


def test_reads_need_a_tenant_admin(bridge, bob):
    from idp_bridge.domain.errors import Forbidden
    service = bridge.services.use_cases.access_records
    bob_caller = bridge.services.use_cases.callers.from_bearer_token(bridge.upstream_token("bob"))
    with pytest.raises(Forbidden):
        service.access_summary(bob_caller, TENANT, AccessQuery())
    with pytest.raises(Forbidden):
        service.active_now(_anna(bridge), OTHER_TENANT)


def test_openapi_document(bridge):
    from openapi_spec_validator import validate

    response = bridge.client.get("/access-records/openapi.json")
    assert response.status_code == 200
    validate(response.json)
    operation = response.json["paths"]["/access-records"]["post"]
    assert set(operation["responses"]) >= {"200", "400", "401", "403", "413"}
    batch = response.json["components"]["schemas"]["Batch"]["properties"]["records"]
    assert batch["maxItems"] == 1000
    assert "1048576 bytes" in operation["description"]
    refusals = response.json["components"]["schemas"]["Answer"]["properties"]["refused"]
    assert refusals["items"]["properties"]["error"]["enum"] == [
        "unknown_grant", "grant_tenant_mismatch", "subject_mismatch", "invalid_record"]
