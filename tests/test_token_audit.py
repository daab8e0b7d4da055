"""Every issued token is accounted for (issue 10 item 11): exchanges write ``token.issued``,
refreshes ``token.refreshed`` (in the refresh's own transaction), and the tenant's audit API
and access log show both; a refused refresh issues nothing and records no refresh."""

from __future__ import annotations

import pytest

from conftest import CLIENT_ID, TENANT, audit_events, verify_access_token
from idp_bridge.devidp import DEMO_USERS
from test_pages_helpers import EN, signed_in, text_of

BOB = DEMO_USERS["bob"]["sub"]


def refresh(bridge, token, **extra):
    return bridge.token({"grant_type": "refresh_token", "refresh_token": token, **extra})


def test_each_refresh_is_in_the_tenants_audit(bridge):
    issued = bridge.join("bob")
    sid = verify_access_token(bridge, issued["access_token"])[1]["sid"]
    first = refresh(bridge, issued["refresh_token"])
    assert first.status_code == 200, first.json
    second = refresh(bridge, first.json["refresh_token"], scope="payments:read")
    assert second.status_code == 200, second.json
    events = audit_events(bridge, "token.refreshed")  # newest first
    assert len(events) == 2
    assert {e["actor"] for e in events} == {BOB}
    assert {e["actor_role"] for e in events} == {"advisor"}
    assert {e["client_id"] for e in events} == {CLIENT_ID}
    assert {e["detail"]["sid"] for e in events} == {sid}
    assert [e["detail"]["scope"] for e in events] == ["payments:read", first.json["scope"]]
    assert {e["membership_id"] for e in events} == {bridge.membership_id("bob")}
    assert [e["detail"]["sid"] for e in audit_events(bridge, "token.issued")] == [sid]
    # Nothing secret in the audit: no token, no refresh token.
    text = str(events)
    for value in (issued["refresh_token"], first.json["refresh_token"],
                  first.json["access_token"]):
        assert value not in text


@pytest.mark.parametrize("spoil", ["replayed", "unknown"])
def test_a_refused_refresh_records_no_refresh(bridge, spoil):
    issued = bridge.join("bob")
    token = issued["refresh_token"]
    if spoil == "replayed":
        assert refresh(bridge, token).status_code == 200
        before = len(audit_events(bridge, "token.refreshed"))
    else:
        token, before = token[::-1], 0
    response = refresh(bridge, token)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_grant"
    assert "access_token" not in response.json
    assert len(audit_events(bridge, "token.refreshed")) == before


def test_the_access_log_shows_refreshes(app, bridge):
    issued = bridge.join("bob")
    assert refresh(bridge, issued["refresh_token"]).status_code == 200
    anna = signed_in(app, "anna")
    page = anna.get(f"/tenants/{TENANT}/log?category=tokens", headers=EN)
    assert page.status_code == 200
    text = text_of(page)
    assert f"Tokens renewed for the application {CLIENT_ID}." in text
    assert f"Tokens issued for the application {CLIENT_ID}." in text
