"""Permanent advisors with the tenant's consent (issue 15 item 2): a tenant setting says
whether support assigns permanent advisors directly (the default) or proposes them and a
tenant admin accepts (under four eyes two different admins). Permanent advisors are
re-confirmed periodically: the tenant's admins are asked ahead of time, once, and an
assignment still unconfirmed after the grace period ends through the one home of revocation
(its tokens die at once), with notices to both sides. Every refusal is a 4xx with ``error``
and ``error_code`` that changes nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from conftest import OTHER_TENANT, TENANT, active_memberships, audit_events, dump_database
from idp_bridge.devidp import DEMO_USERS
from idp_bridge.domain.people import People, PersonInfo
from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import (Membership, NotificationItem, PermanentProposal,
                                       Revocation, Tenant)

ANNA = DEMO_USERS["anna"]["sub"]
DORA = DEMO_USERS["dora"]["sub"]
BOB = DEMO_USERS["bob"]["sub"]
CAROL = DEMO_USERS["carol"]["sub"]
EVE = DEMO_USERS["eve"]["sub"]
SAM = DEMO_USERS["sam"]["sub"]
DAY = timedelta(days=1)


def assert_refused(response, status: int, error: str, code: str):
    assert response.status_code == status, (response.status_code, response.get_data(True))
    assert response.json["error"] == error, response.json
    assert response.json["error_code"] == code, response.json
    assert response.json.get("error_description")


def set_mode(bridge, mode, user="anna"):
    return bridge.api("patch", f"/api/tenants/{TENANT}", user=user, json={"permanent_mode": mode})


def propose(bridge, advisor=BOB, user="sam", tenant=TENANT, **extra):
    return bridge.api("post", f"/api/tenants/{tenant}/permanent-proposals", user=user,
                      json={"advisor": advisor, **extra})


def proposed(bridge, advisor=BOB, **extra) -> dict:
    response = propose(bridge, advisor, **extra)
    assert response.status_code == 201, response.json
    return response.json


def accept(bridge, proposal_id, user="anna"):
    return bridge.api("post", f"/api/tenants/{TENANT}/permanent-proposals/{proposal_id}/accept",
                      user=user)


def decline(bridge, proposal_id, user="anna", note="We have our own tax advisor"):
    return bridge.api("post", f"/api/tenants/{TENANT}/permanent-proposals/{proposal_id}/decline",
                      user=user, json={} if note is None else {"note": note})


def assign(bridge, subject=BOB, user="sam"):
    return bridge.api("put", f"/api/tenants/{TENANT}/permanent-advisors/{subject}", user=user)


def confirmations(bridge, user="anna") -> list[dict]:
    response = bridge.api("get", f"/api/tenants/{TENANT}/permanent-confirmations", user=user)
    assert response.status_code == 200, response.json
    return response.json["memberships"]


def reconfirm(bridge, membership_id, user="anna"):
    return bridge.api("post", f"/api/tenants/{TENANT}/memberships/{membership_id}/reconfirm",
                      user=user)


@pytest.fixture
def consenting(bridge):
    response = set_mode(bridge, "accept")
    assert response.status_code == 200 and response.json["permanent_mode"] == "accept", \
        response.json
    return bridge


# --- the setting ---

def test_direct_is_the_default_and_support_assigns_as_before(bridge):
    assert bridge.api("get", f"/api/tenants/{TENANT}").json["permanent_mode"] == "direct"
    response = assign(bridge)
    assert response.status_code == 201, response.json
    assert response.json["confirmed_at"] == response.json["since"]
    due = response.json["reconfirm_due_at"]
    assert due is not None and due > response.json["since"]
    assert bridge.exchange("bob").status_code == 200


def test_in_accept_mode_a_direct_assignment_is_refused_and_changes_nothing(consenting):
    before = dump_database(consenting.services.db)
    assert_refused(assign(consenting), 409, "conflict", "tenant_consent_required")
    assert dump_database(consenting.services.db) == before
    assert active_memberships(consenting) == []


def test_an_unknown_mode_is_refused(bridge):
    before = dump_database(bridge.services.db)
    assert_refused(set_mode(bridge, "sometimes"), 400, "invalid_request",
                   "permanent_mode_invalid")
    assert dump_database(bridge.services.db) == before


def test_only_tenant_admins_change_the_mode(bridge):
    before = dump_database(bridge.services.db)
    assert_refused(set_mode(bridge, "accept", user="sam"), 403, "forbidden", "not_tenant_admin")
    assert dump_database(bridge.services.db) == before


def test_back_to_direct_needs_four_eyes(consenting):
    assert consenting.api("patch", f"/api/tenants/{TENANT}", json={"four_eyes": True}) \
        .status_code == 200
    held = set_mode(consenting, "direct")
    assert held.status_code == 202, held.json
    assert held.json["permanent_mode"] == "accept"
    [first] = held.json["pending_approvals"]
    assert first["action"] == "tenant.permanent_direct"
    same = consenting.api("post", f"/api/tenants/{TENANT}/approvals/{first['id']}/approve",
                          user="anna")
    assert_refused(same, 403, "forbidden", "same_approver")
    done = consenting.api("post", f"/api/tenants/{TENANT}/approvals/{first['id']}/approve",
                          user="dora")
    assert done.status_code == 200 and done.json["tenant"]["permanent_mode"] == "direct"
    changed = [e for e in audit_events(consenting, "tenant.settings_changed")
               if e["detail"]["setting"] == "permanent_mode"]
    assert [(e["detail"]["new"], e["detail"]["approved_by"]) for e in changed] == \
        [("direct", [ANNA, DORA]), ("accept", [ANNA])]


# --- proposing ---

def test_a_proposal_grants_nothing(consenting):
    made = proposed(consenting, reason="Annual accounts 2026")
    assert (made["status"], made["advisor"], made["advisor_name"]) == \
        ("pending", BOB, "Bob Advisor")
    assert (made["proposed_by"], made["reason"]) == (SAM, "Annual accounts 2026")
    assert active_memberships(consenting) == []
    refused = consenting.exchange("bob")
    assert (refused.status_code, refused.json["error"]) == (400, "invalid_grant")
    listed = consenting.api("get", f"/api/tenants/{TENANT}/permanent-proposals", user="dora")
    assert [p["id"] for p in listed.json["proposals"]] == [made["id"]]
    everywhere = consenting.api("get", "/api/permanent-proposals", user="sam").json["proposals"]
    assert [p["id"] for p in everywhere] == [made["id"]]
    [event] = audit_events(consenting, "permanent_advisor.proposed")
    assert (event["actor"], event["detail"]["advisor"]) == (SAM, BOB)


@pytest.mark.parametrize("who, status, error, code", [
    ("unknown", 404, "not_found", "person_unknown"),
    ("disabled", 409, "conflict", "person_disabled"),
    ("not-advisor", 400, "invalid_request", "person_not_advisor"),
])
def test_proposing_who_the_directory_does_not_offer_stores_nothing(consenting, who, status,
                                                                   error, code):
    subject = {"unknown": "00000000-0000-4000-8000-00000000dead",
               "disabled": "d15ab1ed-0000-4000-8000-000000000001", "not-advisor": EVE}[who]
    if who == "disabled":
        with consenting.services.db.transaction() as session:
            People().record(session, PersonInfo(subject=subject, name="Dora Disabled",
                                              advisor=True, enabled=False,
                                              source="directory"), utcnow())
    before = dump_database(consenting.services.db)
    assert_refused(propose(consenting, subject), status, error, code)
    assert dump_database(consenting.services.db) == before


@pytest.mark.parametrize("case", ["duplicate", "already-permanent", "not-support", "field",
                                  "unknown-tenant", "bidi-reason"])
def test_refused_proposals_change_nothing(consenting, case):
    if case == "duplicate":
        proposed(consenting)
    if case == "already-permanent":
        made = proposed(consenting)
        assert accept(consenting, made["id"]).status_code == 200
    before = dump_database(consenting.services.db)
    response = {
        "duplicate": lambda: propose(consenting),
        "already-permanent": lambda: propose(consenting),
        "not-support": lambda: propose(consenting, user="anna"),
        "field": lambda: propose(consenting, name="Chef"),
        "unknown-tenant": lambda: propose(consenting, tenant="nope"),
        "bidi-reason": lambda: propose(consenting, reason="Ticket \u202e1174"),
    }[case]()
    expected = {
        "duplicate": (409, "conflict", "proposal_pending"),
        "already-permanent": (409, "conflict", "already_permanent"),
        "not-support": (403, "forbidden", "not_support_admin"),
        "field": (400, "invalid_request", "unknown_fields"),
        "unknown-tenant": (404, "not_found", "unknown_tenant"),
        "bidi-reason": (400, "invalid_request", "unsafe_text"),
    }[case]
    assert_refused(response, *expected)
    assert dump_database(consenting.services.db) == before


# --- accepting, declining, withdrawing ---

def test_a_tenant_admin_accepts_and_the_advisor_exchanges(consenting):
    made = proposed(consenting)
    response = accept(consenting, made["id"])
    assert response.status_code == 200, response.json
    assert response.json["proposal"]["status"] == "accepted"
    assert response.json["proposal"]["accepted_by"] == [ANNA]
    membership = response.json["membership"]
    assert (membership["kind"], membership["advisor"], membership["created_by"]) == \
        ("permanent", BOB, ANNA)
    assert response.json["proposal"]["membership_id"] == membership["id"]
    assert consenting.exchange("bob").status_code == 200
    [created] = audit_events(consenting, "membership.created")
    assert created["actor_role"] == "tenant_admin"
    assert created["detail"]["proposal"] == made["id"]
    assert created["detail"]["proposed_by"] == SAM
    [event] = audit_events(consenting, "permanent_advisor.accepted")
    assert event["detail"]["accepted_by"] == [ANNA]
    listed = consenting.api("get", f"/api/tenants/{TENANT}/permanent-proposals").json
    assert listed["proposals"] == []
    # Accepting again: the proposal is closed, nothing changes.
    before = dump_database(consenting.services.db)
    assert_refused(accept(consenting, made["id"], user="dora"), 409, "conflict",
                   "proposal_closed")
    assert dump_database(consenting.services.db) == before


def test_accepting_supersedes_a_temporary_access(consenting):
    temporary = consenting.join("bob")
    made = proposed(consenting)
    assert accept(consenting, made["id"]).status_code == 200
    assert consenting.introspect(temporary["access_token"]).json == {"active": False}
    [live] = active_memberships(consenting)
    assert live.kind == "permanent"


def test_declining_needs_a_note_and_ends_the_proposal(consenting):
    made = proposed(consenting)
    before = dump_database(consenting.services.db)
    assert_refused(decline(consenting, made["id"], note=None), 400, "invalid_request",
                   "text_required")
    assert dump_database(consenting.services.db) == before
    response = decline(consenting, made["id"])
    assert response.status_code == 200, response.json
    assert (response.json["status"], response.json["note"], response.json["decided_by"]) == \
        ("declined", "We have our own tax advisor", ANNA)
    assert active_memberships(consenting) == []
    before = dump_database(consenting.services.db)
    assert_refused(accept(consenting, made["id"]), 409, "conflict", "proposal_closed")
    assert dump_database(consenting.services.db) == before
    [event] = audit_events(consenting, "permanent_advisor.declined")
    assert event["detail"]["note"] == "We have our own tax advisor"
    assert proposed(consenting)["status"] == "pending"  # support may propose again


def test_support_withdraws_a_proposal(consenting):
    made = proposed(consenting)
    before = dump_database(consenting.services.db)
    assert_refused(consenting.api("delete", f"/api/tenants/{TENANT}/permanent-proposals/"
                                  f"{made['id']}", user="anna"), 403, "forbidden",
                   "not_support_admin")
    assert dump_database(consenting.services.db) == before
    response = consenting.api("delete", f"/api/tenants/{TENANT}/permanent-proposals/"
                              f"{made['id']}", user="sam")
    assert response.status_code == 200 and response.json["status"] == "withdrawn"
    assert_refused(accept(consenting, made["id"]), 409, "conflict", "proposal_closed")


@pytest.mark.parametrize("case", ["other-tenant-admin", "unknown", "advisor", "other-tenant"])
def test_who_may_not_accept_changes_nothing(consenting, case):
    made = proposed(consenting)
    before = dump_database(consenting.services.db)
    if case == "other-tenant-admin":
        response = accept(consenting, made["id"], user="bob")
        assert_refused(response, 403, "forbidden", "not_tenant_admin")
    elif case == "unknown":
        assert_refused(accept(consenting, "no-such-proposal"), 404, "not_found",
                       "unknown_proposal")
    elif case == "advisor":
        assert_refused(consenting.api(
            "post", f"/api/tenants/{TENANT}/permanent-proposals/{made['id']}/accept",
            user="sam"), 403, "forbidden", "not_tenant_admin")
    else:
        assert_refused(consenting.api(
            "post", f"/api/tenants/{OTHER_TENANT}/permanent-proposals/{made['id']}/accept",
            user="anna"), 403, "forbidden", "not_tenant_admin")
    assert dump_database(consenting.services.db) == before


def admin_token(bridge, user="bob") -> str:
    """``user``'s upstream token with the tenant's admin group (an advisor who also
    administers the tenant)."""
    groups = DEMO_USERS[user]["groups"] + [f"/tenants/{TENANT}/admins"]
    return bridge.upstream_token(user, extra_claims={"groups": groups})


def test_the_advisor_cannot_accept_their_own_proposal(consenting):
    made = proposed(consenting)
    before = dump_database(consenting.services.db)
    response = consenting.api("post", f"/api/tenants/{TENANT}/permanent-proposals/"
                              f"{made['id']}/accept", token=admin_token(consenting))
    assert_refused(response, 403, "forbidden", "own_permanent_access")
    assert dump_database(consenting.services.db) == before


def test_the_advisor_cannot_re_confirm_their_own_access(bridge):
    made = assign(bridge).json
    before = dump_database(bridge.services.db)
    response = bridge.api("post", f"/api/tenants/{TENANT}/memberships/{made['id']}/reconfirm",
                          token=admin_token(bridge))
    assert_refused(response, 403, "forbidden", "own_permanent_access")
    assert dump_database(bridge.services.db) == before


# --- four eyes ---

def test_under_four_eyes_accepting_needs_a_second_admin(consenting):
    assert consenting.api("patch", f"/api/tenants/{TENANT}", json={"four_eyes": True}) \
        .status_code == 200
    made = proposed(consenting)
    first = accept(consenting, made["id"])
    assert first.status_code == 202, first.json
    approval = first.json["pending_approval"]
    assert (approval["action"], approval["target"]) == ("permanent_advisor.accept", made["id"])
    assert first.json["membership"] is None and first.json["proposal"]["status"] == "pending"
    assert first.json["proposal"]["first_approval"]["id"] == approval["id"]
    assert active_memberships(consenting) == []
    assert consenting.exchange("bob").status_code == 400
    before = dump_database(consenting.services.db)
    assert_refused(accept(consenting, made["id"]), 403, "forbidden", "same_approver")
    assert dump_database(consenting.services.db) == before
    listed = consenting.api("get", f"/api/tenants/{TENANT}/approvals", user="dora").json
    assert [a["id"] for a in listed["approvals"]] == [approval["id"]]
    second = accept(consenting, made["id"], user="dora")
    assert second.status_code == 200, second.json
    assert second.json["proposal"]["accepted_by"] == [ANNA, DORA]
    assert second.json["membership"]["created_by"] == DORA
    assert consenting.exchange("bob").status_code == 200
    [done] = audit_events(consenting, "approval.completed")
    assert (done["detail"]["first_approver"], done["detail"]["second_approver"]) == (ANNA, DORA)


def test_under_four_eyes_the_second_admin_may_complete_on_the_approvals_list(consenting):
    consenting.api("patch", f"/api/tenants/{TENANT}", json={"four_eyes": True})
    made = proposed(consenting)
    approval = accept(consenting, made["id"]).json["pending_approval"]
    done = consenting.api("post", f"/api/tenants/{TENANT}/approvals/{approval['id']}/approve",
                          user="dora")
    assert done.status_code == 200, done.json
    [live] = active_memberships(consenting)
    assert (live.kind, live.advisor_subject) == ("permanent", BOB)


def test_declining_closes_a_pending_first_acceptance(consenting):
    consenting.api("patch", f"/api/tenants/{TENANT}", json={"four_eyes": True})
    made = proposed(consenting)
    approval = accept(consenting, made["id"]).json["pending_approval"]
    assert decline(consenting, made["id"], user="dora").status_code == 200
    listed = consenting.api("get", f"/api/tenants/{TENANT}/approvals").json["approvals"]
    assert listed == []
    before = dump_database(consenting.services.db)
    late = consenting.api("post", f"/api/tenants/{TENANT}/approvals/{approval['id']}/approve",
                          user="dora")
    assert_refused(late, 409, "conflict", "approval_closed")
    assert dump_database(consenting.services.db) == before
    assert active_memberships(consenting) == []


# --- re-confirmation ---

def permanent_bob(bridge) -> dict:
    response = assign(bridge)
    assert response.status_code == 201, response.json
    return response.json


def backdate(bridge, membership_id, days: float):
    """Move the membership's confirmation ``days`` into the past (as if time had passed)."""
    with bridge.services.db.transaction() as session:
        m = session.get(Membership, membership_id)
        m.confirmed_at = m.confirmed_at - timedelta(days=days)


def row(bridge, membership_id) -> Membership:
    with bridge.services.db.read() as session:
        return session.get(Membership, membership_id)


def test_a_tenant_admin_re_confirms_and_the_due_date_moves(bridge):
    made = permanent_bob(bridge)
    backdate(bridge, made["id"], 100)
    [listed] = confirmations(bridge)
    old_due = listed["reconfirm_due_at"]
    response = reconfirm(bridge, made["id"])
    assert response.status_code == 200, response.json
    assert response.json["reconfirm_due_at"] > old_due
    assert response.json["confirmed_at"] > listed["confirmed_at"]
    [listed] = confirmations(bridge)
    assert listed["reconfirm_due_at"] == response.json["reconfirm_due_at"]
    [event] = audit_events(bridge, "permanent_advisor.reconfirmed")
    assert event["actor"] == ANNA and event["detail"]["previous_due_at"] == old_due


@pytest.mark.parametrize("case", ["not-admin", "temporary", "unknown", "ended"])
def test_refused_re_confirmations_change_nothing(bridge, case):
    made = permanent_bob(bridge)
    target, user = made["id"], "anna"
    expected = None
    if case == "not-admin":
        user, expected = "sam", (403, "forbidden", "not_tenant_admin")
    if case == "temporary":
        bridge.join("carol")
        target = bridge.membership_id("carol")
        expected = (409, "conflict", "not_permanent")
    if case == "unknown":
        target, expected = "nope", (404, "not_found", "unknown_membership")
    if case == "ended":
        assert bridge.api("delete", f"/api/tenants/{TENANT}/permanent-advisors/{BOB}",
                          user="sam").status_code == 204
        expected = (409, "conflict", "membership_ended")
    before = dump_database(bridge.services.db)
    assert_refused(reconfirm(bridge, target, user=user), *expected)
    assert dump_database(bridge.services.db) == before


def test_the_sweep_asks_ahead_once_and_then_ends_the_access(bridge_with):
    bridge = bridge_with(smtp_host="127.0.0.1", smtp_port=2525, smtp_security="none",
                         smtp_from="bridge@konfipay.example",
                         webhook_url="http://127.0.0.1:9/hook",
                         webhook_secret="webhook-secret-for-the-tests-0123456789")
    with bridge.services.db.transaction() as session:
        session.execute(update(Tenant).where(Tenant.id == TENANT)
                        .values(notification_emails="admins@muster-gmbh.example"))
    made = permanent_bob(bridge)
    tokens = bridge.exchange("bob").json
    assert "refresh_token" in tokens
    settings = bridge.services.settings
    confirmed = row(bridge, made["id"]).confirmed_at
    due = confirmed + timedelta(days=settings.permanent_reconfirm_days)
    maintenance = bridge.services.maintenance

    def items(event):
        with bridge.services.db.read() as session:
            return session.scalars(select(NotificationItem).where(
                NotificationItem.event == event).order_by(NotificationItem.id)).all()

    # Long before the due date: nothing.
    maintenance.run_once(now=due - timedelta(days=settings.permanent_reconfirm_notice_days + 1))
    assert items("permanent_advisor.reconfirmation_due") == []
    # Within the notice period: asked once, however often the sweep runs.
    ask_at = due - timedelta(days=settings.permanent_reconfirm_notice_days - 1)
    maintenance.run_once(now=ask_at)
    maintenance.run_once(now=ask_at + DAY)
    asked = items("permanent_advisor.reconfirmation_due")
    assert sorted(i.channel for i in asked) == ["email", "webhook"]
    email = next(i for i in asked if i.channel == "email")
    assert email.payload["recipients"] == ["admins@muster-gmbh.example"]
    assert email.payload["advisor"] == BOB
    assert len(audit_events(bridge, "permanent_advisor.reconfirmation_due")) == 1
    # Past the due date but within the grace period: still live.
    maintenance.run_once(now=due + timedelta(days=settings.permanent_grace_days - 1))
    assert row(bridge, made["id"]).ended_at is None
    assert bridge.exchange("bob").status_code == 200
    # After the grace period: ended through the revocation home.
    maintenance.run_once(now=due + timedelta(days=settings.permanent_grace_days, seconds=1))
    ended = row(bridge, made["id"])
    assert ended.ended_at is not None and ended.end_reason == "reconfirmation_lapsed"
    with bridge.services.db.read() as session:
        published = session.scalars(select(Revocation).where(
            Revocation.value == ended.grant_id)).all()
    assert [r.reason for r in published] == ["reconfirmation_lapsed"]
    refresh = bridge.token({"grant_type": "refresh_token",
                            "refresh_token": tokens["refresh_token"]})
    assert (refresh.status_code, refresh.json["error"]) == (400, "invalid_grant")
    assert bridge.introspect(tokens["access_token"]).json == {"active": False}
    refused = bridge.exchange("bob")
    assert (refused.status_code, refused.json["error"]) == (400, "invalid_grant")
    lapsed = items("advisor.permanent_lapsed")
    recipients = sorted(tuple(i.payload.get("recipients", ())) for i in lapsed
                        if i.channel == "email")
    assert recipients == [("admins@muster-gmbh.example",), ("bob@advisors.example",)]
    assert [i.channel for i in lapsed].count("webhook") == 1
    [event] = [e for e in audit_events(bridge, "membership.ended")
               if e["detail"]["reason"] == "reconfirmation_lapsed"]
    assert event["actor"] == "system"
    assert len(audit_events(bridge, "permanent_advisor.lapsed")) == 1


def test_re_confirming_after_the_notice_asks_again_next_time(bridge):
    made = permanent_bob(bridge)
    settings = bridge.services.settings
    consent = bridge.services.permanent_consent
    start = row(bridge, made["id"]).confirmed_at
    ask_at = start + timedelta(days=settings.permanent_reconfirm_days
                               - settings.permanent_reconfirm_notice_days + 1)
    with bridge.services.db.transaction() as session:
        assert consent.sweep(session, ask_at) == (1, 0)
    with bridge.services.db.transaction() as session:
        tenant = session.get(Tenant, TENANT)
        consent.reconfirm(session, tenant, made["id"], by=ANNA, now=ask_at)
    with bridge.services.db.transaction() as session:  # the old due date passes: nothing
        assert consent.sweep(session, ask_at + timedelta(
            days=settings.permanent_reconfirm_notice_days + settings.permanent_grace_days)) \
            == (0, 0)
    with bridge.services.db.transaction() as session:  # the new one comes: asked again
        assert consent.sweep(session, ask_at + timedelta(days=settings.permanent_reconfirm_days
                                                          - 1)) == (1, 0)
    assert row(bridge, made["id"]).ended_at is None


def test_an_accepted_advisor_is_confirmed_from_the_acceptance(consenting):
    made = proposed(consenting)
    membership = accept(consenting, made["id"]).json["membership"]
    assert membership["confirmed_at"] == membership["since"]
    [listed] = confirmations(consenting, user="dora")
    assert listed["reconfirm_due_at"] == membership["reconfirm_due_at"]
    with consenting.services.db.read() as session:
        stored = session.get(PermanentProposal, made["id"])
        assert stored.membership_id == membership["id"]


# --- proposals nobody answers ---

def test_an_unanswered_proposal_expires_and_the_tenant_is_told(bridge_with):
    bridge = bridge_with(smtp_host="127.0.0.1", smtp_port=2525, smtp_security="none",
                         smtp_from="bridge@konfipay.example")
    with bridge.services.db.transaction() as session:
        session.get(Tenant, TENANT).notification_emails = "admins@muster-gmbh.example"
    set_mode(bridge, "accept")
    bridge.api("patch", f"/api/tenants/{TENANT}", json={"four_eyes": True})
    made = proposed(bridge)
    days = bridge.services.settings.permanent_proposal_expiry_days
    assert made["expires_at"] is not None
    # A first acceptance under four eyes is pending when the proposal runs out.
    assert accept(bridge, made["id"]).json["pending_approval"] is not None
    maintenance = bridge.services.maintenance
    with bridge.services.db.read() as session:
        proposed_at = session.get(PermanentProposal, made["id"]).proposed_at
    maintenance.run_once(now=proposed_at + timedelta(days=days) - timedelta(minutes=1))
    with bridge.services.db.read() as session:
        assert session.get(PermanentProposal, made["id"]).status == "pending"
    maintenance.run_once(now=proposed_at + timedelta(days=days))
    with bridge.services.db.read() as session:
        stored = session.get(PermanentProposal, made["id"])
        assert (stored.status, stored.decided_by) == ("expired", "system")
        items = session.scalars(select(NotificationItem).where(
            NotificationItem.event == "permanent_advisor.expired")).all()
    assert [i.payload["recipients"] for i in items if i.channel == "email"] == [
        ["admins@muster-gmbh.example"]]
    [event] = audit_events(bridge, "permanent_advisor.expired")
    assert (event["actor"], event["detail"]["proposal"]) == ("system", made["id"])
    # The first acceptance lapsed long before (four eyes' expiry): nothing is pending.
    assert bridge.api("get", f"/api/tenants/{TENANT}/approvals").json["approvals"] == []
    assert active_memberships(bridge) == []
    listed = bridge.api("get", f"/api/tenants/{TENANT}/permanent-proposals")
    assert listed.status_code == 200 and listed.json["proposals"] == []
    # Answering it now is refused and changes nothing; support may propose again.
    before = dump_database(bridge.services.db)
    assert_refused(accept(bridge, made["id"], user="dora"), 409, "conflict", "proposal_expired")
    assert_refused(decline(bridge, made["id"]), 409, "conflict", "proposal_expired")
    assert dump_database(bridge.services.db) == before
    assert proposed(bridge)["status"] == "pending"


def test_a_proposal_past_its_expiry_is_refused_before_the_sweep_marks_it(consenting):
    made = proposed(consenting)
    days = consenting.services.settings.permanent_proposal_expiry_days
    with consenting.services.db.transaction() as session:
        stored = session.get(PermanentProposal, made["id"])
        stored.proposed_at = stored.proposed_at - timedelta(days=days, seconds=1)
    listed = consenting.api("get", f"/api/tenants/{TENANT}/permanent-proposals")
    assert listed.json["proposals"] == []
    before = dump_database(consenting.services.db)
    assert_refused(accept(consenting, made["id"]), 409, "conflict", "proposal_expired")
    withdrawn = consenting.api(
        "delete", f"/api/tenants/{TENANT}/permanent-proposals/{made['id']}", user="sam")
    assert_refused(withdrawn, 409, "conflict", "proposal_expired")
    assert dump_database(consenting.services.db) == before
    assert active_memberships(consenting) == []
