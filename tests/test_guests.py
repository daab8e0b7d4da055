"""Guests: advisors invited with a user group the tenant chooses (DESIGN.md sections 1, 4)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from conftest import OTHER_TENANT, RS_CLIENT_ID, TENANT
from idp_bridge.devidp import DEMO_USERS
from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import Invitation
from scopes.catalog import ADVISOR_PROFILE

BOB = DEMO_USERS["bob"]["sub"]
CAROL = DEMO_USERS["carol"]["sub"]
GROUPS = f"/api/tenants/{TENANT}/groups"
INVITATIONS = f"/api/tenants/{TENANT}/invitations"


def make_group(bridge, name="Berater Zahlungsverkehr", permissions=("payments:read", "payments:write")):
    response = bridge.api("post", GROUPS, json={"name": name, "permissions": list(permissions)})
    assert response.status_code == 201, response.json
    return response.json


def invite(bridge, group, **who):
    response = bridge.api("post", INVITATIONS, json={"group": group["id"], **who})
    assert response.status_code == 201, response.json
    return response.json


def accept(bridge, invitation, user="bob", token=None):
    return bridge.api("post", f"/api/me/invitations/{invitation['id']}/accept", user=user, token=token)


def guest(bridge, permissions=("payments:read", "payments:write"), user="bob"):
    group = make_group(bridge, permissions=permissions)
    invitation = invite(bridge, group, subject=DEMO_USERS[user]["sub"])
    response = accept(bridge, invitation, user)
    assert response.status_code == 201, response.json
    return group, response.json


def test_group_lifecycle(bridge):
    group = make_group(bridge)
    assert group["permissions"] == ["payments:read", "payments:write"]
    listed = bridge.api("get", GROUPS).json["groups"]
    assert [g["name"] for g in listed] == ["Berater Zahlungsverkehr"]
    renamed = bridge.api("patch", f"{GROUPS}/{group['id']}", json={"name": "Onboarding"})
    assert renamed.status_code == 200 and renamed.json["name"] == "Onboarding"
    assert bridge.api("delete", f"{GROUPS}/{group['id']}").status_code == 204
    assert bridge.api("get", GROUPS).json["groups"] == []
    # The name is free again once the group is gone.
    make_group(bridge, name="Onboarding")


@pytest.mark.parametrize("body,status,error", [
    ({"name": "", "permissions": []}, 400, "invalid_request"),
    ({"name": "x" * 101, "permissions": []}, 400, "invalid_request"),
    ({"name": "G", "permissions": ["payments:delete"]}, 400, "invalid_request"),
    ({"name": "G", "permissions": "payments:read"}, 400, "invalid_request"),
    ({"name": "G", "permissions": [], "colour": "red"}, 400, "invalid_request"),
    ({"name": "G", "permissions": [], "advisor_scopes": ["ebics:write"]}, 403, "forbidden"),
])
def test_bad_group_requests_change_nothing(bridge, body, status, error):
    response = bridge.api("post", GROUPS, json=body)
    assert response.status_code == status
    assert response.json["error"] == error
    assert bridge.api("get", GROUPS).json["groups"] == []


def test_duplicate_group_name_conflicts(bridge):
    make_group(bridge, name="Prüfer")
    response = bridge.api("post", GROUPS, json={"name": "prüfer", "permissions": []})
    assert response.status_code == 409 and response.json["error"] == "conflict"


@pytest.mark.parametrize("user", ["bob", "carol", "sam", "eve"])
def test_only_tenant_admins_manage_groups_and_invitations(bridge, user):
    group = make_group(bridge)
    for method, path, body in (("get", GROUPS, None), ("post", GROUPS, {"name": "x", "permissions": []}),
                               ("patch", f"{GROUPS}/{group['id']}", {"permissions": ["api:write"]}),
                               ("delete", f"{GROUPS}/{group['id']}", None),
                               ("post", INVITATIONS, {"group": group["id"], "subject": BOB})):
        response = bridge.api(method, path, user=user, json=body)
        assert response.status_code == 403, (method, path)
        assert response.json["error"] == "forbidden"
    assert bridge.api("get", GROUPS).json["groups"][0]["permissions"] == group["permissions"]


def test_admin_of_one_tenant_cannot_use_a_group_of_another(bridge):
    other_admin = bridge.upstream_token("anna", extra_claims={"groups": [f"/tenants/{OTHER_TENANT}/admins"]})
    foreign = bridge.api("post", f"/api/tenants/{OTHER_TENANT}/groups", token=other_admin,
                         json={"name": "B", "permissions": ["ebics:write"]})
    assert foreign.status_code == 201
    for response in (
        bridge.api("post", INVITATIONS, json={"group": foreign.json["id"], "subject": BOB}),
        bridge.api("patch", f"{GROUPS}/{foreign.json['id']}", json={"permissions": []}),
        bridge.api("delete", f"{GROUPS}/{foreign.json['id']}"),
    ):
        assert response.status_code == 404
        assert response.json["error"] == "not_found"


def test_guest_gets_the_groups_permissions_not_the_advisor_profile(bridge):
    profile_before = set(ADVISOR_PROFILE)
    group, membership = guest(bridge, ("payments:read", "payments:write", "ebics:read"))
    assert membership["kind"] == "guest" and membership["group"] == group["id"]
    tokens = bridge.exchange("bob")
    assert tokens.status_code == 200, tokens.json
    assert tokens.json["scope"] == "ebics:read payments:read payments:write"
    claims = bridge.introspect(tokens.json["access_token"]).json
    assert claims["membership"] == "guest"
    wider = bridge.exchange("bob", scope="users:read")
    assert wider.status_code == 400 and wider.json["error"] == "invalid_scope"
    # An advisor of the same tenant still gets exactly the fixed profile.
    carol = bridge.join("carol")
    assert set(carol["scope"].split()) == ADVISOR_PROFILE == profile_before
    members = bridge.api("get", f"/api/tenants/{TENANT}/memberships").json["memberships"]
    assert sorted(m["kind"] for m in members) == ["guest", "temporary"]


def test_guest_cannot_edit_its_own_group(bridge):
    group, _ = guest(bridge)
    response = bridge.api("patch", f"{GROUPS}/{group['id']}", user="bob",
                          json={"permissions": [s for s in sorted(ADVISOR_PROFILE)]})
    assert response.status_code == 403 and response.json["error"] == "forbidden"


def test_group_in_use_cannot_be_deleted(bridge):
    group, _ = guest(bridge)
    response = bridge.api("delete", f"{GROUPS}/{group['id']}")
    assert response.status_code == 409 and response.json["error"] == "conflict"
    assert "guests still use" in response.json["error_description"]


def test_group_with_open_invitation_cannot_be_deleted(bridge):
    group = make_group(bridge)
    invite(bridge, group, subject=CAROL)
    assert bridge.api("delete", f"{GROUPS}/{group['id']}").status_code == 409


def test_invitation_lifecycle(bridge):
    group = make_group(bridge)
    invitation = invite(bridge, group, subject=BOB)
    assert invitation["expires_at"]
    listed = bridge.api("get", INVITATIONS).json["invitations"]
    assert [i["id"] for i in listed] == [invitation["id"]]
    mine = bridge.api("get", "/api/me/invitations", user="bob").json["invitations"]
    assert [i["id"] for i in mine] == [invitation["id"]]
    assert bridge.api("get", "/api/me/invitations", user="carol").json["invitations"] == []
    wrong = accept(bridge, invitation, "carol")
    assert wrong.status_code == 404 and wrong.json["error"] == "not_found"
    assert accept(bridge, invitation, "bob").status_code == 201
    again = accept(bridge, invitation, "bob")
    assert again.status_code == 409 and "already accepted" in again.json["error_description"]
    assert bridge.api("get", INVITATIONS).json["invitations"] == []


def test_withdrawn_invitation_cannot_be_accepted(bridge):
    invitation = invite(bridge, make_group(bridge), subject=BOB)
    assert bridge.api("delete", f"{INVITATIONS}/{invitation['id']}").status_code == 204
    response = accept(bridge, invitation)
    assert response.status_code == 409 and "withdrawn" in response.json["error_description"]
    assert bridge.exchange("bob").json["error"] == "invalid_grant"  # no membership


def test_expired_invitation_cannot_be_accepted(bridge):
    invitation = invite(bridge, make_group(bridge), subject=BOB)
    with bridge.services.db.transaction() as session:
        session.execute(update(Invitation).values(expires_at=utcnow() - timedelta(seconds=1)))
    response = accept(bridge, invitation)
    assert response.status_code == 409 and "expired" in response.json["error_description"]
    withdraw = bridge.api("delete", f"{INVITATIONS}/{invitation['id']}")
    assert withdraw.status_code == 409


def test_invitation_by_email_needs_a_verified_address(bridge):
    invitation = invite(bridge, make_group(bridge), email="Bob@Advisors.example")
    unverified = bridge.upstream_token("bob", extra_claims={"email_verified": False})
    assert accept(bridge, invitation, token=unverified).status_code == 404
    verified = bridge.upstream_token("bob", extra_claims={"email_verified": True})
    assert accept(bridge, invitation, token=verified).status_code == 201


@pytest.mark.parametrize("body", [
    {"subject": BOB, "email": "bob@advisors.example"}, {}, {"email": "not-an-address"},
    {"subject": "x" * 300},
])
def test_bad_invitations(bridge, body):
    group = make_group(bridge)
    response = bridge.api("post", INVITATIONS, json={"group": group["id"], **body})
    assert response.status_code == 400 and response.json["error"] == "invalid_request"


def test_advisor_membership_is_not_turned_into_a_guest_one(bridge):
    bridge.join("bob")
    invitation = invite(bridge, make_group(bridge), subject=BOB)
    response = accept(bridge, invitation)
    assert response.status_code == 409
    assert "must end before" in response.json["error_description"]
    tokens = bridge.exchange("bob").json
    assert set(tokens["scope"].split()) == ADVISOR_PROFILE
    assert bridge.introspect(tokens["access_token"]).json["membership"] == "temporary"


def test_a_guest_redeeming_a_code_stays_a_guest(bridge):
    guest(bridge, ("api:read",))
    response = bridge.exchange("bob", code=bridge.current_code())
    assert response.status_code == 200
    assert response.json["scope"] == "api:read"


def test_group_without_permissions_grants_nothing(bridge):
    guest(bridge, ())
    response = bridge.exchange("bob")
    assert response.status_code == 400 and response.json["error"] == "invalid_scope"


def test_narrowing_the_group_takes_effect_at_once(bridge):
    group, _ = guest(bridge, ("payments:read", "payments:write"))
    client = bridge.app.test_client()
    auth = (RS_CLIENT_ID, bridge.rs_secret)
    stream = client.post("/ssf/stream", json={}, auth=auth).json["stream_id"]
    tokens = bridge.exchange("bob").json
    response = bridge.api("patch", f"{GROUPS}/{group['id']}", json={"permissions": ["payments:read"]})
    assert response.status_code == 200 and response.json["token_families_narrowed"] == 1
    # The wider token is dead: at introspection and, through the feed, at resource servers.
    assert bridge.introspect(tokens["access_token"]).json == {"active": False}
    sets = client.post(f"/ssf/poll/{stream}", json={"returnImmediately": True}, auth=auth).json["sets"]
    assert len(sets) == 1
    # The next refresh works and carries the narrower scope.
    refreshed = bridge.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.json
    assert refreshed.json["scope"] == "payments:read"
    assert bridge.introspect(refreshed.json["access_token"]).json["active"] is True
    assert bridge.exchange("bob").json["scope"] == "payments:read"


def test_widening_keeps_existing_tokens(bridge):
    group, _ = guest(bridge, ("payments:read",))
    tokens = bridge.exchange("bob").json
    response = bridge.api("patch", f"{GROUPS}/{group['id']}",
                          json={"permissions": ["payments:read", "ebics:read"]})
    assert response.json["token_families_narrowed"] == 0
    assert bridge.introspect(tokens["access_token"]).json["active"] is True
    assert bridge.exchange("bob").json["scope"] == "ebics:read payments:read"


def test_removing_a_guest_is_like_removing_an_advisor(bridge):
    _, membership = guest(bridge)
    tokens = bridge.exchange("bob").json
    response = bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{membership['id']}")
    assert response.status_code == 204
    assert bridge.introspect(tokens["access_token"]).json == {"active": False}
    refresh = bridge.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 400 and refresh.json["error"] == "invalid_grant"
