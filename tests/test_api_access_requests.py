"""Access requests through the management API (issue 15 item 1): an advisor asks a tenant
for temporary access with a reason and a duration, a tenant admin approves (optionally
shorter) or denies with a note, approval creates a temporary membership with that expiry and
the advisor exchanges without a code; unanswered requests expire. Every refusal is a clear
4xx with ``error`` and ``error_code`` that changes nothing; the ways in (codes, requests,
both) are the tenant's setting. Four eyes is tests/test_four_eyes.py."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import update

from conftest import OTHER_TENANT, TENANT, active_memberships, audit_events, dump_database
from idp_bridge.devidp import DEMO_USERS
from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import AccessRequest, NotificationItem, Tenant

BOB = DEMO_USERS["bob"]["sub"]
ANNA = DEMO_USERS["anna"]["sub"]
WEBHOOK_SECRET = "webhook-secret-for-the-tests-0123456789"


def assert_refused(response, status: int, error: str, code: str):
    assert response.status_code == status, (response.status_code, response.get_data(True))
    assert response.json["error"] == error, response.json
    assert response.json["error_code"] == code, response.json
    assert response.json["error_description"]


def ask(bridge, user="bob", *, tenant=TENANT, reason="Ticket 4711: EBICS setup",
        hours=8, **extra):
    body = {"tenant": tenant, "reason": reason, "duration_hours": hours, **extra}
    return bridge.api("post", "/api/me/access-requests", user=user, json=body)


def asked(bridge, user="bob", **kwargs) -> dict:
    response = ask(bridge, user, **kwargs)
    assert response.status_code == 201, response.json
    return response.json


def approve(bridge, request_id, user="anna", tenant=TENANT, **body):
    return bridge.api("post", f"/api/tenants/{tenant}/access-requests/{request_id}/approve",
                      user=user, json=body)


def deny(bridge, request_id, user="anna", note="No ticket for this tenant", tenant=TENANT):
    body = {} if note is None else {"note": note}
    return bridge.api("post", f"/api/tenants/{tenant}/access-requests/{request_id}/deny",
                      user=user, json=body)


def set_modes(bridge, modes: str, tenant=TENANT) -> None:
    response = bridge.api("patch", f"/api/tenants/{tenant}", json={"access_modes": modes})
    assert response.status_code == 200, response.json
    assert response.json["access_modes"] == modes


def admin_token(bridge, user="bob") -> str:
    """``user``'s upstream token with the tenant's admin group (an advisor who also
    administers the tenant)."""
    groups = DEMO_USERS[user]["groups"] + [f"/tenants/{TENANT}/admins"]
    return bridge.upstream_token(user, extra_claims={"groups": groups})


def request_row(bridge, request_id) -> AccessRequest:
    with bridge.services.db.read() as session:
        return session.get(AccessRequest, request_id)


# --- asking and approving ---

def test_a_request_is_pending_and_listed_for_the_tenant_admins(bridge):
    made = asked(bridge)
    assert made["status"] == "pending" and made["tenant"] == TENANT
    assert made["advisor"] == BOB and made["advisor_name"] == "Bob Advisor"
    assert made["reason"] == "Ticket 4711: EBICS setup" and made["duration_hours"] == 8
    assert made["first_approval"] is None and made["membership_id"] is None
    listed = bridge.api("get", f"/api/tenants/{TENANT}/access-requests")
    assert listed.status_code == 200
    assert [r["id"] for r in listed.json["access_requests"]] == [made["id"]]
    mine = bridge.api("get", "/api/me/access-requests", user="bob")
    assert [r["id"] for r in mine.json["access_requests"]] == [made["id"]]
    created = audit_events(bridge, "access_request.created")
    assert len(created) == 1 and created[0]["actor"] == BOB
    assert created[0]["detail"]["reason"] == "Ticket 4711: EBICS setup"
    assert active_memberships(bridge) == []
    # Nothing is granted yet: without a code the exchange is refused.
    refused = bridge.exchange("bob")
    assert (refused.status_code, refused.json["error"]) == (400, "invalid_grant")


def test_the_request_expires_after_the_configured_hours(bridge_with):
    bridge = bridge_with(access_request_expiry_hours=3)
    made = asked(bridge)
    row = request_row(bridge, made["id"])
    assert row.expires_at - row.created_at == timedelta(hours=3)


def test_approval_makes_a_temporary_membership_and_the_advisor_exchanges_without_a_code(bridge):
    made = asked(bridge, hours=8)
    before = utcnow()
    response = approve(bridge, made["id"], note="Go ahead")
    assert response.status_code == 200, response.json
    body = response.json
    assert body["pending_approval"] is None
    request, membership = body["access_request"], body["membership"]
    assert request["status"] == "approved" and request["approved_by"] == [ANNA]
    assert request["approved_by_names"] == ["Anna Admin"] and request["approved_hours"] == 8
    assert request["membership_id"] == membership["id"] and request["note"] == "Go ahead"
    assert membership["kind"] == "temporary" and membership["advisor"] == BOB
    assert membership["reason"] == "Ticket 4711: EBICS setup"
    assert membership["created_by"] == ANNA and membership["advisor_name"] == "Bob Advisor"
    [live] = active_memberships(bridge)
    assert before + timedelta(hours=8) <= live.expires_at <= utcnow() + timedelta(hours=8)
    token = bridge.exchange("bob")  # no access_code
    assert token.status_code == 200, token.json
    assert token.json["scope"]
    approved = audit_events(bridge, "access_request.approved")
    assert approved[0]["actor"] == ANNA and approved[0]["detail"]["approved_by"] == [ANNA]
    created = audit_events(bridge, "membership.created")
    assert created[0]["detail"]["access_request"] == made["id"]
    assert bridge.api("get", f"/api/tenants/{TENANT}/access-requests").json[
        "access_requests"] == []


def test_an_admin_may_approve_a_shorter_duration(bridge):
    made = asked(bridge, hours=48)
    response = approve(bridge, made["id"], duration_hours=2)
    assert response.status_code == 200, response.json
    [live] = active_memberships(bridge)
    assert live.expires_at - live.created_at == timedelta(hours=2)
    assert response.json["access_request"]["approved_hours"] == 2


def test_the_duration_is_capped_by_a_maximum_shortened_after_the_request(bridge):
    made = asked(bridge, hours=72)
    shortened = bridge.api("patch", f"/api/tenants/{TENANT}", json={"temporary_max_age_days": 1})
    assert shortened.status_code == 200, shortened.json
    assert approve(bridge, made["id"]).status_code == 200
    [live] = active_memberships(bridge)
    assert live.expires_at - live.created_at == timedelta(days=1)


def test_denial_with_a_note_grants_nothing(bridge):
    made = asked(bridge)
    response = deny(bridge, made["id"], note="Please use the ticket of our tenant")
    assert response.status_code == 200, response.json
    assert response.json["status"] == "denied" and response.json["decided_by"] == ANNA
    assert response.json["note"] == "Please use the ticket of our tenant"
    assert active_memberships(bridge) == []
    mine = bridge.api("get", "/api/me/access-requests", user="bob").json["access_requests"]
    assert mine[0]["status"] == "denied" and mine[0]["decided_by_name"] == "Anna Admin"
    assert audit_events(bridge, "access_request.denied")[0]["detail"]["note"] == \
        "Please use the ticket of our tenant"
    # Asking again is allowed after an answer.
    assert ask(bridge).status_code == 201


def test_the_advisor_withdraws_a_pending_request(bridge):
    made = asked(bridge)
    response = bridge.api("delete", f"/api/me/access-requests/{made['id']}", user="bob")
    assert response.status_code == 200, response.json
    assert response.json["status"] == "withdrawn"
    assert bridge.api("get", f"/api/tenants/{TENANT}/access-requests").json[
        "access_requests"] == []
    assert len(audit_events(bridge, "access_request.withdrawn")) == 1


def test_unanswered_requests_expire_in_the_maintenance_sweep(bridge):
    made = asked(bridge)
    with bridge.services.db.transaction() as session:
        session.execute(update(AccessRequest).where(AccessRequest.id == made["id"]).values(
            expires_at=utcnow() - timedelta(seconds=1)))
    bridge.services.maintenance.run_once()
    assert request_row(bridge, made["id"]).status == "expired"
    assert len(audit_events(bridge, "access_request.expired")) == 1
    assert bridge.api("get", f"/api/tenants/{TENANT}/access-requests").json[
        "access_requests"] == []
    assert ask(bridge).status_code == 201  # a new request may follow


def test_a_request_past_its_expiry_does_not_block_a_new_one_before_the_sweep(bridge):
    made = asked(bridge)
    with bridge.services.db.transaction() as session:
        session.execute(update(AccessRequest).where(AccessRequest.id == made["id"]).values(
            expires_at=utcnow() - timedelta(seconds=1)))
    again = ask(bridge)
    assert again.status_code == 201, again.json
    assert request_row(bridge, made["id"]).status == "expired"


# --- the ways in ---

def test_codes_keep_working_and_both_is_the_default(bridge):
    tenant = bridge.api("get", f"/api/tenants/{TENANT}").json
    assert tenant["access_modes"] == "both" and tenant["four_eyes"] is False
    bridge.join("bob")
    assert len(active_memberships(bridge)) == 1


def test_a_request_for_a_tenant_that_allows_only_codes_is_refused(bridge):
    set_modes(bridge, "code")
    before = dump_database(bridge.services.db)
    assert_refused(ask(bridge), 403, "forbidden", "requests_not_allowed")
    assert dump_database(bridge.services.db) == before


def test_a_code_for_a_tenant_that_allows_only_requests_is_refused(bridge):
    code = bridge.current_code()
    set_modes(bridge, "request")
    before = dump_database(bridge.services.db)
    response = bridge.exchange("bob", code=code)
    assert (response.status_code, response.json["error"]) == (400, "invalid_grant")
    assert "request" in response.json["error_description"]
    assert dump_database(bridge.services.db) == before  # no guess counted, the code as it was
    assert bridge.current_code() == code
    # The way in the tenant allows works.
    made = asked(bridge)
    assert approve(bridge, made["id"]).status_code == 200
    assert bridge.exchange("bob").status_code == 200


def test_a_request_made_before_the_tenant_turned_requests_off_cannot_be_approved(bridge):
    made = asked(bridge)
    set_modes(bridge, "code")
    before = dump_database(bridge.services.db)
    assert_refused(approve(bridge, made["id"]), 403, "forbidden", "requests_not_allowed")
    assert dump_database(bridge.services.db) == before
    assert deny(bridge, made["id"]).status_code == 200  # it can still be answered "no"


@pytest.mark.parametrize("modes", ["", "codes", "none", None, 1, ["code"], "BOTH"])
def test_the_ways_in_are_one_of_three(bridge, modes):
    before = dump_database(bridge.services.db)
    response = bridge.api("patch", f"/api/tenants/{TENANT}", json={"access_modes": modes})
    assert_refused(response, 400, "invalid_request", "access_modes_invalid")
    assert dump_database(bridge.services.db) == before


def test_changing_the_ways_in_is_audited(bridge):
    set_modes(bridge, "request")
    [changed] = audit_events(bridge, "tenant.settings_changed")
    assert changed["actor"] == ANNA
    assert changed["detail"] == {"setting": "access_modes", "old": "both", "new": "request",
                                 "approved_by": [ANNA]}


# --- refusals of a request (nothing changes) ---

@pytest.mark.parametrize("body, status, error, code", [
    pytest.param({"reason": None}, 400, "invalid_request", "text_required", id="no-reason"),
    pytest.param({"reason": "   "}, 400, "invalid_request", "text_required", id="blank-reason"),
    pytest.param({"reason": "Ticket \u202e1174"}, 400, "invalid_request", "unsafe_text",
                 id="bidi-reason"),
    pytest.param({"reason": "x" * 201}, 400, "invalid_request", "text_too_long", id="long-reason"),
    pytest.param({"hours": 30 * 24 + 1}, 400, "invalid_request", "duration_out_of_range",
                 id="over-the-maximum"),
    pytest.param({"hours": 0}, 400, "invalid_request", "duration_out_of_range", id="zero"),
    pytest.param({"hours": -8}, 400, "invalid_request", "duration_out_of_range", id="negative"),
    pytest.param({"hours": "8"}, 400, "invalid_request", "duration_out_of_range", id="string"),
    pytest.param({"hours": 1.5}, 400, "invalid_request", "duration_out_of_range", id="float"),
    pytest.param({"hours": True}, 400, "invalid_request", "duration_out_of_range", id="bool"),
    pytest.param({"hours": None}, 400, "invalid_request", "duration_out_of_range", id="missing"),
    pytest.param({"hours": 10 ** 30}, 400, "invalid_request", "duration_out_of_range", id="huge"),
    pytest.param({"tenant": "99999"}, 404, "not_found", "unknown_tenant", id="unknown-tenant"),
    pytest.param({"tenant": None}, 404, "not_found", "unknown_tenant", id="no-tenant"),
    pytest.param({"tenant": ["10042"]}, 404, "not_found", "unknown_tenant", id="tenant-list"),
    pytest.param({"scope": "payments:write"}, 400, "invalid_request", "unknown_fields",
                 id="unknown-field"),
    pytest.param({"scopes": ["payments:write"]}, 403, "forbidden", "profile_immutable",
                 id="profile"),
])
def test_refused_requests_change_nothing(bridge, body, status, error, code):
    body = dict(body)  # the parameter table is shared by the SQLite and PostgreSQL runs
    before = dump_database(bridge.services.db)
    kwargs = {"reason": body.pop("reason", "Ticket 4711"), "hours": body.pop("hours", 8),
              "tenant": body.pop("tenant", TENANT)}
    assert_refused(ask(bridge, **kwargs, **body), status, error, code)
    assert dump_database(bridge.services.db) == before


def test_the_duration_limit_is_the_tenants_maximum(bridge):
    bridge.api("patch", f"/api/tenants/{TENANT}", json={"temporary_max_age_days": 2})
    before = dump_database(bridge.services.db)
    response = ask(bridge, hours=49)
    assert_refused(response, 400, "invalid_request", "duration_out_of_range")
    assert "48" in response.json["error_description"]
    assert dump_database(bridge.services.db) == before
    assert ask(bridge, hours=48).status_code == 201


def test_only_advisors_ask(bridge):
    before = dump_database(bridge.services.db)
    for user in ("anna", "eve", "sam"):
        assert_refused(ask(bridge, user), 403, "forbidden", "not_advisor")
    assert dump_database(bridge.services.db) == before


def test_a_second_pending_request_for_the_same_tenant_is_refused(bridge):
    asked(bridge)
    before = dump_database(bridge.services.db)
    assert_refused(ask(bridge, reason="Another ticket"), 409, "conflict", "request_pending")
    assert dump_database(bridge.services.db) == before
    # Another tenant, or another advisor, is a request of its own.
    assert ask(bridge, tenant=OTHER_TENANT).status_code == 201
    assert ask(bridge, "carol").status_code == 201


def test_a_request_by_an_advisor_who_has_live_access_is_refused(bridge):
    bridge.join("bob")
    before = dump_database(bridge.services.db)
    assert_refused(ask(bridge), 409, "conflict", "already_member")
    assert dump_database(bridge.services.db) == before


def test_an_advisor_has_at_most_ten_pending_requests(bridge):
    from idp_bridge.services.operator import add_tenant

    for n in range(10):
        tenant = f"3{n:04d}"
        add_tenant(bridge.services.db, tenant, f"Tenant {n}")
        asked(bridge, tenant=tenant)
    before = dump_database(bridge.services.db)
    assert_refused(ask(bridge), 409, "conflict", "too_many_requests")
    assert dump_database(bridge.services.db) == before


# --- refusals of an answer (nothing changes) ---

@pytest.mark.parametrize("user", ["bob", "carol", "eve", "sam"])
def test_only_the_tenants_admins_answer(bridge, user):
    made = asked(bridge)
    before = dump_database(bridge.services.db)
    assert_refused(approve(bridge, made["id"], user=user), 403, "forbidden", "not_tenant_admin")
    assert_refused(deny(bridge, made["id"], user=user), 403, "forbidden", "not_tenant_admin")
    listed = bridge.api("get", f"/api/tenants/{TENANT}/access-requests", user=user)
    assert_refused(listed, 403, "forbidden", "not_tenant_admin")
    assert dump_database(bridge.services.db) == before


def test_an_admin_of_another_tenant_cannot_answer_through_its_own(bridge):
    made = asked(bridge, tenant=OTHER_TENANT)
    before = dump_database(bridge.services.db)
    # anna administers 10042, the request is for 20077: named under 10042 it does not exist.
    assert_refused(approve(bridge, made["id"]), 404, "not_found", "unknown_access_request")
    assert_refused(approve(bridge, made["id"], tenant=OTHER_TENANT), 403, "forbidden",
                   "not_tenant_admin")
    assert dump_database(bridge.services.db) == before


def test_an_advisor_who_is_also_an_admin_cannot_approve_its_own_request(bridge):
    made = asked(bridge)
    before = dump_database(bridge.services.db)
    response = bridge.api("post", f"/api/tenants/{TENANT}/access-requests/{made['id']}/approve",
                          token=admin_token(bridge), json={})
    assert_refused(response, 403, "forbidden", "own_request")
    assert dump_database(bridge.services.db) == before
    assert approve(bridge, made["id"]).status_code == 200  # another admin may


@pytest.mark.parametrize("state, code", [
    ("approved", "request_already_approved"), ("denied", "request_denied"),
    ("withdrawn", "request_withdrawn"), ("expired", "request_expired"),
    ("past-expiry", "request_expired"),
])
def test_a_request_that_is_not_pending_cannot_be_answered(bridge, state, code):
    made = asked(bridge)
    if state == "approved":
        assert approve(bridge, made["id"]).status_code == 200
    elif state == "denied":
        assert deny(bridge, made["id"]).status_code == 200
    elif state == "withdrawn":
        assert bridge.api("delete", f"/api/me/access-requests/{made['id']}",
                          user="bob").status_code == 200
    else:
        with bridge.services.db.transaction() as session:
            session.execute(update(AccessRequest).where(AccessRequest.id == made["id"]).values(
                expires_at=utcnow() - timedelta(seconds=1)))
        if state == "expired":
            bridge.services.maintenance.run_once()
    before = dump_database(bridge.services.db)
    assert_refused(approve(bridge, made["id"], user="dora"), 409, "conflict", code)
    assert_refused(deny(bridge, made["id"], user="dora"), 409, "conflict", code)
    withdrawn = bridge.api("delete", f"/api/me/access-requests/{made['id']}", user="bob")
    assert_refused(withdrawn, 409, "conflict", code)
    assert dump_database(bridge.services.db) == before


@pytest.mark.parametrize("body, code", [
    pytest.param({"duration_hours": 9}, "duration_out_of_range", id="longer-than-asked"),
    pytest.param({"duration_hours": 0}, "duration_out_of_range", id="zero"),
    pytest.param({"duration_hours": "4"}, "duration_out_of_range", id="string"),
    pytest.param({"note": "a\x1bb"}, "unsafe_text", id="unsafe-note"),
    pytest.param({"note": "x" * 501}, "text_too_long", id="long-note"),
    pytest.param({"approvers": ["x"]}, "unknown_fields", id="unknown-field"),
])
def test_refused_approvals_change_nothing(bridge, body, code):
    made = asked(bridge, hours=8)
    before = dump_database(bridge.services.db)
    assert_refused(approve(bridge, made["id"], **body), 400, "invalid_request", code)
    assert dump_database(bridge.services.db) == before


@pytest.mark.parametrize("note, code", [(None, "text_required"), ("  ", "text_required"),
                                        ("\u2066x", "unsafe_text")])
def test_a_denial_needs_a_note(bridge, note, code):
    made = asked(bridge)
    before = dump_database(bridge.services.db)
    assert_refused(deny(bridge, made["id"], note=note), 400, "invalid_request", code)
    assert dump_database(bridge.services.db) == before


@pytest.mark.parametrize("request_id", ["nope", "x" * 65, "00000000-0000-0000-0000-000000000000"])
def test_unknown_requests_are_not_found(bridge, request_id):
    asked(bridge)
    before = dump_database(bridge.services.db)
    assert_refused(approve(bridge, request_id), 404, "not_found", "unknown_access_request")
    assert_refused(deny(bridge, request_id), 404, "not_found", "unknown_access_request")
    assert dump_database(bridge.services.db) == before


def test_an_advisor_withdraws_only_its_own_requests(bridge):
    made = asked(bridge)
    before = dump_database(bridge.services.db)
    response = bridge.api("delete", f"/api/me/access-requests/{made['id']}", user="carol")
    assert_refused(response, 404, "not_found", "unknown_access_request")
    assert dump_database(bridge.services.db) == before


def test_approving_when_the_advisor_joined_by_code_meanwhile_is_refused(bridge):
    made = asked(bridge)
    bridge.join("bob")
    before = dump_database(bridge.services.db)
    assert_refused(approve(bridge, made["id"]), 409, "conflict", "already_member")
    assert dump_database(bridge.services.db) == before


def test_two_admins_approving_at_once_make_one_membership(bridge):
    made = asked(bridge)
    tokens = {user: bridge.upstream_token(user) for user in ("anna", "dora")}
    barrier, answers = threading.Barrier(2), []

    def approve_now(user):
        client = bridge.app.test_client()
        barrier.wait(timeout=30)
        response = client.post(f"/api/tenants/{TENANT}/access-requests/{made['id']}/approve",
                               headers={"Authorization": f"Bearer {tokens[user]}"}, json={})
        answers.append((response.status_code, response.json.get("error_code")))

    threads = [threading.Thread(target=approve_now, args=(user,)) for user in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(status for status, _code in answers) == [200, 409], answers
    assert {code for status, code in answers if status == 409} <= {
        "request_already_approved", "concurrent_change"}
    assert len(active_memberships(bridge)) == 1
    assert len(audit_events(bridge, "access_request.approved")) == 1


# --- notifications through the outbox ---

@pytest.fixture
def notifying(bridge_with):
    bridge = bridge_with(webhook_url="http://127.0.0.1:9/hook", webhook_secret=WEBHOOK_SECRET,
                         smtp_host="127.0.0.1", smtp_port=2525, smtp_security="none",
                         smtp_from="bridge@konfipay.example")
    with bridge.services.db.transaction() as session:
        session.get(Tenant, TENANT).notification_emails = "it@muster-gmbh.example"
    return bridge


def outbox(bridge) -> list[NotificationItem]:
    with bridge.services.db.read() as session:
        return list(session.query(NotificationItem).order_by(NotificationItem.id))


def test_the_tenant_hears_of_a_request_and_the_advisor_of_the_answer(notifying):
    made = asked(notifying)
    items = outbox(notifying)
    assert sorted((i.channel, i.event) for i in items) == [
        ("email", "access_request.created"), ("webhook", "access_request.created")]
    email = next(i for i in items if i.channel == "email")
    assert email.payload["recipients"] == ["it@muster-gmbh.example"]
    assert email.payload["reason"] == "Ticket 4711: EBICS setup"
    message = notifying.services.notifications.email_message(email.payload)
    text = message.get_content()
    assert "Zugriffsanfrage" in message["Subject"] and "Access request" in message["Subject"]
    assert "Bob Advisor" in text and "Ticket 4711" in text and f"/tenants/{TENANT}/help" in text

    assert approve(notifying, made["id"]).status_code == 200
    new = outbox(notifying)[len(items):]
    events = sorted((i.channel, i.event, tuple(i.payload.get("recipients", ()))) for i in new)
    assert events == [
        ("email", "access_request.approved", ("bob@advisors.example",)),
        ("email", "advisor.joined", ("it@muster-gmbh.example",)),
        ("webhook", "access_request.approved", ()),
        ("webhook", "advisor.joined", ()),
    ]
    to_bob = next(i for i in new if i.event == "access_request.approved" and i.channel == "email")
    body = notifying.services.notifications.email_message(to_bob.payload).get_content()
    assert "ohne Zugangscode" in body and "without an access code" in body
    assert "Anna Admin" in body
    joined = next(i for i in new if i.event == "advisor.joined" and i.channel == "email")
    joined_text = notifying.services.notifications.email_message(joined.payload).get_content()
    assert "Zugriffsanfrage wurde genehmigt" in joined_text
    assert "with the access code" not in joined_text


def test_the_advisor_hears_of_a_denial_with_its_note(notifying):
    made = asked(notifying)
    assert deny(notifying, made["id"], note="Wrong tenant").status_code == 200
    to_bob = [i for i in outbox(notifying) if i.event == "access_request.denied"]
    assert sorted(i.channel for i in to_bob) == ["email", "webhook"]
    mail = next(i for i in to_bob if i.channel == "email")
    assert mail.payload["recipients"] == ["bob@advisors.example"]
    assert "Wrong tenant" in notifying.services.notifications.email_message(
        mail.payload).get_content()
