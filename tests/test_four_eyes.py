"""Four eyes (issue 15 item 3): with the tenant's setting on, approving an access request,
lengthening the maximum age of temporary access and turning four eyes off need a second,
different tenant admin. The first approval is visible as pending (and changes nothing else),
the second applies it, both names are in the audit; the same admin twice is refused and
changes nothing. Shortening and turning it on apply at once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from conftest import TENANT, active_memberships, audit_events, dump_database
from idp_bridge.devidp import DEMO_USERS
from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import AccessRequest, Approval, Tenant
from test_api_access_requests import admin_token, approve, asked, assert_refused, deny

ANNA = DEMO_USERS["anna"]["sub"]
DORA = DEMO_USERS["dora"]["sub"]


def patch(bridge, user="anna", **body):
    return bridge.api("patch", f"/api/tenants/{TENANT}", user=user, json=body)


@pytest.fixture
def four_eyes(bridge):
    response = patch(bridge, four_eyes=True)
    assert response.status_code == 200 and response.json["four_eyes"] is True, response.json
    return bridge


def pending(bridge, user="anna") -> list[dict]:
    response = bridge.api("get", f"/api/tenants/{TENANT}/approvals", user=user)
    assert response.status_code == 200, response.json
    return response.json["approvals"]


def confirm(bridge, approval_id, user="dora"):
    return bridge.api("post", f"/api/tenants/{TENANT}/approvals/{approval_id}/approve", user=user)


def tenant_row(bridge) -> Tenant:
    with bridge.services.db.read() as session:
        return session.get(Tenant, TENANT)


# --- approving an access request ---

def test_the_first_approval_is_pending_and_grants_nothing(four_eyes):
    made = asked(four_eyes, hours=8)
    response = approve(four_eyes, made["id"], duration_hours=4, note="ok from me")
    assert response.status_code == 202, response.json
    first = response.json["pending_approval"]
    assert first["action"] == "access_request.approve" and first["target"] == made["id"]
    assert first["first_approver"] == ANNA and first["first_approver_name"] == "Anna Admin"
    assert first["terms"] == {"duration_hours": 4, "note": "ok from me"}
    assert response.json["membership"] is None
    assert response.json["access_request"]["status"] == "pending"
    assert response.json["access_request"]["first_approval"]["id"] == first["id"]
    # Visible to the other admins, with the request and among the approvals.
    listed = four_eyes.api("get", f"/api/tenants/{TENANT}/access-requests", user="dora")
    assert listed.json["access_requests"][0]["first_approval"]["first_approver"] == ANNA
    assert [a["id"] for a in pending(four_eyes, "dora")] == [first["id"]]
    mine = four_eyes.api("get", "/api/me/access-requests", user="bob").json["access_requests"]
    assert mine[0]["status"] == "pending" and mine[0]["first_approval"]["id"] == first["id"]
    assert active_memberships(four_eyes) == []
    refused = four_eyes.exchange("bob")
    assert (refused.status_code, refused.json["error"]) == (400, "invalid_grant")
    assert audit_events(four_eyes, "approval.requested")[0]["actor"] == ANNA
    assert audit_events(four_eyes, "access_request.approved") == []


def test_a_second_approval_by_the_same_admin_is_refused(four_eyes):
    made = asked(four_eyes)
    assert approve(four_eyes, made["id"]).status_code == 202
    [first] = pending(four_eyes)
    before = dump_database(four_eyes.services.db)
    assert_refused(approve(four_eyes, made["id"]), 403, "forbidden", "same_approver")
    assert_refused(confirm(four_eyes, first["id"], user="anna"), 403, "forbidden",
                   "same_approver")
    assert dump_database(four_eyes.services.db) == before
    assert active_memberships(four_eyes) == []


def test_a_second_admin_completes_it_and_both_names_are_audited(four_eyes):
    made = asked(four_eyes, hours=8)
    assert approve(four_eyes, made["id"], duration_hours=4).status_code == 202
    response = approve(four_eyes, made["id"], user="dora", note="checked the ticket")
    assert response.status_code == 200, response.json
    request = response.json["access_request"]
    assert request["status"] == "approved" and request["approved_by"] == [ANNA, DORA]
    assert request["approved_by_names"] == ["Anna Admin", "Dora Admin"]
    assert request["approved_hours"] == 4  # the first approver's shorter duration holds
    [live] = active_memberships(four_eyes)
    assert live.expires_at - live.created_at == timedelta(hours=4)
    assert four_eyes.exchange("bob").status_code == 200  # without a code
    [approved] = audit_events(four_eyes, "access_request.approved")
    assert approved["actor"] == DORA and approved["detail"]["approved_by"] == [ANNA, DORA]
    [completed] = audit_events(four_eyes, "approval.completed")
    assert completed["detail"]["first_approver"] == ANNA
    assert completed["detail"]["second_approver"] == DORA
    assert pending(four_eyes) == []


def test_the_second_admin_may_shorten_but_not_lengthen(four_eyes):
    made = asked(four_eyes, hours=8)
    assert approve(four_eyes, made["id"], duration_hours=4).status_code == 202
    before = dump_database(four_eyes.services.db)
    assert_refused(approve(four_eyes, made["id"], user="dora", duration_hours=9), 400,
                   "invalid_request", "duration_out_of_range")
    assert dump_database(four_eyes.services.db) == before
    response = approve(four_eyes, made["id"], user="dora", duration_hours=2)
    assert response.status_code == 200, response.json
    assert response.json["access_request"]["approved_hours"] == 2


def test_the_second_approval_through_the_approvals_endpoint(four_eyes):
    made = asked(four_eyes)
    first = approve(four_eyes, made["id"]).json["pending_approval"]
    response = confirm(four_eyes, first["id"])
    assert response.status_code == 200, response.json
    assert response.json["approval"]["status"] == "completed"
    assert response.json["approval"]["decided_by"] == DORA
    assert len(active_memberships(four_eyes)) == 1
    before = dump_database(four_eyes.services.db)
    assert_refused(confirm(four_eyes, first["id"], user="dora"), 409, "conflict",
                   "approval_completed")
    assert_refused(approve(four_eyes, made["id"], user="dora"), 409, "conflict",
                   "request_already_approved")
    assert dump_database(four_eyes.services.db) == before


def test_the_advisor_cannot_be_the_second_approver_of_its_own_request(four_eyes):
    made = asked(four_eyes)
    first = approve(four_eyes, made["id"]).json["pending_approval"]
    before = dump_database(four_eyes.services.db)
    token = admin_token(four_eyes)
    response = four_eyes.api("post", f"/api/tenants/{TENANT}/approvals/{first['id']}/approve",
                             token=token)
    assert_refused(response, 403, "forbidden", "own_request")
    response = four_eyes.api("post", f"/api/tenants/{TENANT}/access-requests/{made['id']}/"
                             "approve", token=token, json={})
    assert_refused(response, 403, "forbidden", "own_request")
    assert dump_database(four_eyes.services.db) == before


def test_denying_closes_the_first_approval(four_eyes):
    made = asked(four_eyes)
    first = approve(four_eyes, made["id"]).json["pending_approval"]
    assert deny(four_eyes, made["id"], user="dora", note="not needed").status_code == 200
    assert pending(four_eyes) == []
    before = dump_database(four_eyes.services.db)
    assert_refused(confirm(four_eyes, first["id"]), 409, "conflict", "approval_closed")
    assert dump_database(four_eyes.services.db) == before
    closed = audit_events(four_eyes, "approval.closed")
    assert closed[0]["detail"]["reason"] == "request_denied"


def test_a_rejected_first_approval_grants_nothing(four_eyes):
    made = asked(four_eyes)
    first = approve(four_eyes, made["id"]).json["pending_approval"]
    response = four_eyes.api("post", f"/api/tenants/{TENANT}/approvals/{first['id']}/reject",
                             user="dora", json={"note": "ask the customer first"})
    assert response.status_code == 200, response.json
    assert response.json["status"] == "rejected" and response.json["decided_by"] == DORA
    before = dump_database(four_eyes.services.db)
    assert_refused(confirm(four_eyes, first["id"]), 409, "conflict", "approval_rejected")
    assert dump_database(four_eyes.services.db) == before
    # The request itself stays open: approving it starts a new pair of approvals.
    assert approve(four_eyes, made["id"], user="dora").status_code == 202


def test_a_first_approval_lapses_with_its_request(four_eyes):
    made = asked(four_eyes)
    first = approve(four_eyes, made["id"]).json["pending_approval"]
    with four_eyes.services.db.read() as session:
        approval = session.get(Approval, first["id"])
        request = session.get(AccessRequest, made["id"])
        assert approval.expires_at == request.expires_at
    with four_eyes.services.db.transaction() as session:
        session.execute(update(AccessRequest).where(AccessRequest.id == made["id"]).values(
            expires_at=utcnow() - timedelta(seconds=1)))
        session.execute(update(Approval).where(Approval.id == first["id"]).values(
            expires_at=utcnow() - timedelta(seconds=1)))
    before = dump_database(four_eyes.services.db)
    assert_refused(confirm(four_eyes, first["id"]), 409, "conflict", "approval_expired")
    assert_refused(approve(four_eyes, made["id"], user="dora"), 409, "conflict",
                   "request_expired")
    assert dump_database(four_eyes.services.db) == before
    four_eyes.services.maintenance.run_once()
    with four_eyes.services.db.read() as session:
        assert session.get(Approval, first["id"]).status == "closed"
        assert session.get(AccessRequest, made["id"]).status == "expired"


def test_approvals_are_the_tenant_admins_only(four_eyes):
    made = asked(four_eyes)
    first = approve(four_eyes, made["id"]).json["pending_approval"]
    before = dump_database(four_eyes.services.db)
    for user in ("bob", "carol", "sam"):
        assert_refused(confirm(four_eyes, first["id"], user=user), 403, "forbidden",
                       "not_tenant_admin")
        assert_refused(four_eyes.api("get", f"/api/tenants/{TENANT}/approvals", user=user),
                       403, "forbidden", "not_tenant_admin")
    assert_refused(confirm(four_eyes, "nope"), 404, "not_found", "unknown_approval")
    assert dump_database(four_eyes.services.db) == before


# --- the maximum age ---

def test_lengthening_the_maximum_age_needs_a_second_admin(four_eyes):
    assert patch(four_eyes, temporary_max_age_days=7).status_code == 200  # shortening: at once
    assert tenant_row(four_eyes).temporary_max_age_days == 7
    response = patch(four_eyes, temporary_max_age_days=14)
    assert response.status_code == 202, response.json
    assert response.json["temporary_max_age_days"] == 7  # not applied
    [held] = response.json["pending_approvals"]
    assert held["action"] == "tenant.max_age" and held["terms"] == {"days": 14}
    assert tenant_row(four_eyes).temporary_max_age_days == 7
    assert [a["id"] for a in pending(four_eyes, "dora")] == [held["id"]]
    # The same admin again: refused, nothing changes.
    before = dump_database(four_eyes.services.db)
    assert_refused(patch(four_eyes, temporary_max_age_days=14), 403, "forbidden", "same_approver")
    assert_refused(confirm(four_eyes, held["id"], user="anna"), 403, "forbidden",
                   "same_approver")
    # A second admin proposing other terms: refused too.
    assert_refused(patch(four_eyes, "dora", temporary_max_age_days=21), 409, "conflict",
                   "approval_terms_differ")
    assert dump_database(four_eyes.services.db) == before
    # A second, different admin completes it.
    done = patch(four_eyes, "dora", temporary_max_age_days=14)
    assert done.status_code == 200, done.json
    assert done.json["temporary_max_age_days"] == 14 and done.json["pending_approvals"] == []
    assert tenant_row(four_eyes).temporary_max_age_days == 14
    changed = [e for e in audit_events(four_eyes, "tenant.settings_changed")
               if e["detail"]["setting"] == "temporary_max_age_days"]
    assert changed[0]["detail"]["new"] == 14 and changed[0]["detail"]["old"] == 7
    assert changed[0]["detail"]["approved_by"] == [ANNA, DORA]
    [completed] = audit_events(four_eyes, "approval.completed")
    assert (completed["detail"]["first_approver"], completed["detail"]["second_approver"]) == (
        ANNA, DORA)


def test_the_maximum_age_completed_through_the_approvals_endpoint(four_eyes):
    patch(four_eyes, temporary_max_age_days=7)
    held = patch(four_eyes, temporary_max_age_days=30).json["pending_approvals"][0]
    response = confirm(four_eyes, held["id"])
    assert response.status_code == 200, response.json
    assert response.json["tenant"]["temporary_max_age_days"] == 30


def test_shortening_applies_at_once_under_four_eyes(four_eyes):
    four_eyes.join("bob")
    response = patch(four_eyes, temporary_max_age_days=1)
    assert response.status_code == 200 and response.json["pending_approvals"] == []
    assert tenant_row(four_eyes).temporary_max_age_days == 1
    [live] = active_memberships(four_eyes)
    assert live.expires_at - live.created_at <= timedelta(days=1)


def test_without_four_eyes_one_admin_lengthens(bridge):
    patch(bridge, temporary_max_age_days=7)
    response = patch(bridge, temporary_max_age_days=14)
    assert response.status_code == 200 and response.json["temporary_max_age_days"] == 14
    assert pending(bridge) == []


@pytest.mark.parametrize("days", [0, 31, "14", None, True, 14.0])
def test_a_lengthening_out_of_range_is_refused_before_four_eyes(four_eyes, days):
    patch(four_eyes, temporary_max_age_days=7)
    before = dump_database(four_eyes.services.db)
    assert_refused(patch(four_eyes, temporary_max_age_days=days), 400, "invalid_request",
                   "max_age_out_of_range")
    assert dump_database(four_eyes.services.db) == before


# --- four eyes itself ---

def test_turning_four_eyes_off_needs_a_second_admin(four_eyes):
    response = patch(four_eyes, four_eyes=False)
    assert response.status_code == 202 and response.json["four_eyes"] is True, response.json
    [held] = response.json["pending_approvals"]
    assert held["action"] == "tenant.four_eyes_off"
    assert tenant_row(four_eyes).four_eyes is True
    before = dump_database(four_eyes.services.db)
    assert_refused(patch(four_eyes, four_eyes=False), 403, "forbidden", "same_approver")
    assert dump_database(four_eyes.services.db) == before
    assert confirm(four_eyes, held["id"]).status_code == 200
    assert tenant_row(four_eyes).four_eyes is False
    changed = audit_events(four_eyes, "tenant.settings_changed")
    assert changed[0]["detail"] == {"setting": "four_eyes", "old": True, "new": False,
                                    "approved_by": [ANNA, DORA]}


def test_turning_four_eyes_on_covers_the_rest_of_the_same_change(bridge):
    patch(bridge, temporary_max_age_days=7)
    response = patch(bridge, four_eyes=True, temporary_max_age_days=14)
    assert response.status_code == 202, response.json
    assert response.json["four_eyes"] is True and response.json["temporary_max_age_days"] == 7


@pytest.mark.parametrize("value", ["yes", 1, None, "true"])
def test_four_eyes_is_a_boolean(bridge, value):
    before = dump_database(bridge.services.db)
    assert_refused(patch(bridge, four_eyes=value), 400, "invalid_request", "four_eyes_invalid")
    assert dump_database(bridge.services.db) == before


def test_a_first_approval_of_a_setting_lapses(four_eyes):
    patch(four_eyes, temporary_max_age_days=7)
    held = patch(four_eyes, temporary_max_age_days=14).json["pending_approvals"][0]
    with four_eyes.services.db.read() as session:
        approval = session.get(Approval, held["id"])
        assert approval.expires_at - approval.requested_at == timedelta(hours=24)
    with four_eyes.services.db.transaction() as session:
        session.execute(update(Approval).where(Approval.id == held["id"]).values(
            expires_at=utcnow() - timedelta(seconds=1)))
    assert pending(four_eyes) == []
    assert_refused(confirm(four_eyes, held["id"]), 409, "conflict", "approval_expired")
    # A new proposal after the lapse starts afresh (the lapsed one is marked expired).
    again = patch(four_eyes, "dora", temporary_max_age_days=14)
    assert again.status_code == 202, again.json
    with four_eyes.services.db.read() as session:
        assert session.get(Approval, held["id"]).status == "expired"
