"""Management API, advisor side (DESIGN.md sections 6 and 8): my tenants, and leaving one."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from conftest import OTHER_TENANT, TENANT, dump_database
from idp_bridge.devidp import DEMO_USERS

BOB = DEMO_USERS["bob"]["sub"]


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def assert_error(response, status: int, error: str):
    assert response.status_code == status, (response.status_code, response.get_data(True))
    assert response.json["error"] == error, response.json
    assert response.json.get("error_description")


def my_memberships(bridge, user="bob"):
    response = bridge.api("get", "/api/me/memberships", user=user)
    assert response.status_code == 200, response.json
    return response.json["memberships"]


def test_no_memberships_yet(bridge):
    assert my_memberships(bridge) == []


def test_lists_my_tenants(bridge):
    before = datetime.now(timezone.utc).replace(microsecond=0)
    bridge.join("bob", reason="Onboarding")
    bridge.join("bob", tenant=OTHER_TENANT)
    bridge.join("carol")
    items = my_memberships(bridge)
    assert [m["tenant"] for m in items] == [TENANT, OTHER_TENANT]
    for m in items:
        assert m["advisor"] == BOB
        assert m["kind"] == "temporary"
        since = parse_time(m["since"])
        assert before <= since <= datetime.now(timezone.utc)
        assert parse_time(m["expires_at"]) == since + timedelta(days=30)
    assert items[0]["reason"] == "Onboarding"
    assert [m["tenant"] for m in my_memberships(bridge, "carol")] == [TENANT]


def test_lists_permanent_membership_without_expiry(bridge):
    response = bridge.api("put", f"/api/tenants/{TENANT}/permanent-advisors/{BOB}", user="sam")
    assert response.status_code == 201
    [m] = my_memberships(bridge)
    assert m["kind"] == "permanent"
    assert m["expires_at"] is None


def test_leave_kills_my_tokens(bridge):
    here = bridge.join("bob")
    elsewhere = bridge.join("bob", tenant=OTHER_TENANT)
    response = bridge.api("delete", f"/api/me/memberships/{TENANT}", user="bob")
    assert response.status_code == 204
    assert response.get_data() == b""
    assert bridge.introspect(here["access_token"]).json == {"active": False}
    assert bridge.introspect(here["refresh_token"]).json == {"active": False}
    refresh = bridge.token({"grant_type": "refresh_token",
                            "refresh_token": here["refresh_token"]})
    assert_error(refresh, 400, "invalid_grant")
    assert bridge.introspect(elsewhere["access_token"]).json["active"] is True
    assert [m["tenant"] for m in my_memberships(bridge)] == [OTHER_TENANT]
    assert bridge.api("get", f"/api/tenants/{TENANT}/memberships").json["memberships"] == []
    # leaving is final: coming back needs a new code
    assert_error(bridge.exchange("bob"), 400, "invalid_grant")


def test_leave_is_audited_with_the_advisor_as_actor(bridge):
    bridge.join("bob")
    bridge.api("delete", f"/api/me/memberships/{TENANT}", user="bob")
    page = bridge.api("get", f"/api/tenants/{TENANT}/audit-events",
                      query_string={"event": "membership.ended"}).json
    [ended] = page["events"]
    assert (ended["actor"], ended["actor_role"]) == (BOB, "advisor")
    assert ended["detail"]["reason"] == "left"


@pytest.mark.parametrize("tenant", [OTHER_TENANT, "99999", "x" * 300])
def test_leaving_a_tenant_i_am_not_in(bridge, tenant):
    tokens = bridge.join("bob")
    before = dump_database(bridge.services.db)
    assert_error(bridge.api("delete", f"/api/me/memberships/{tenant}", user="bob"),
                 404, "not_found")
    assert dump_database(bridge.services.db) == before
    assert bridge.introspect(tokens["access_token"]).json["active"] is True


def test_leaving_twice(bridge):
    bridge.join("bob")
    assert bridge.api("delete", f"/api/me/memberships/{TENANT}", user="bob").status_code == 204
    assert_error(bridge.api("delete", f"/api/me/memberships/{TENANT}", user="bob"),
                 404, "not_found")


def test_cannot_leave_for_someone_else(bridge):
    carol = bridge.join("carol")
    assert_error(bridge.api("delete", f"/api/me/memberships/{TENANT}", user="bob"),
                 404, "not_found")
    assert bridge.introspect(carol["access_token"]).json["active"] is True


@pytest.mark.parametrize("method, path", [
    ("get", "/api/me/memberships"),
    ("delete", f"/api/me/memberships/{TENANT}"),
])
@pytest.mark.parametrize("caller", ["anna", "eve", "sam"])
def test_non_advisors_are_forbidden(bridge, method, path, caller):
    bridge.join("bob")
    before = dump_database(bridge.services.db)
    assert_error(bridge.api(method, path, user=caller), 403, "forbidden")
    assert dump_database(bridge.services.db) == before


@pytest.mark.parametrize("method, path", [
    ("get", "/api/me/memberships"),
    ("delete", f"/api/me/memberships/{TENANT}"),
])
def test_no_token_is_unauthorized(bridge, method, path):
    response = getattr(bridge.client, method)(path)
    assert_error(response, 401, "invalid_token")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_expired_membership_is_not_listed(bridge):
    from idp_bridge.storage.models import Membership

    bridge.join("bob")
    bridge.join("bob", tenant=OTHER_TENANT)
    membership = bridge.membership_id("bob")
    with bridge.services.db.transaction() as session:
        session.get(Membership, membership).expires_at = datetime.now(timezone.utc) - timedelta(
            seconds=1)
    assert [m["tenant"] for m in my_memberships(bridge)] == [OTHER_TENANT]
