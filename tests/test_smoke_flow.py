"""The README story end to end through the Flask test client."""

from conftest import TENANT


def test_join_introspect_remove(bridge):
    body = bridge.join("bob", reason="Ticket 4711")
    assert body["token_type"] == "Bearer"
    assert bridge.introspect(body["access_token"]).json["active"] is True
    membership = bridge.membership_id("bob")
    response = bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{membership}")
    assert response.status_code == 204
    assert bridge.introspect(body["access_token"]).json == {"active": False}
    refresh = bridge.token({"grant_type": "refresh_token", "refresh_token": body["refresh_token"]})
    assert refresh.status_code == 400
    assert refresh.json["error"] == "invalid_grant"
