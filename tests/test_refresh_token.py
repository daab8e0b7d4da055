"""Refresh Token grant (RFC 6749 section 6) with rotation and replay detection (DESIGN.md 5, 8)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import update

from conftest import (
    CLIENT_ID,
    RS_CLIENT_ID,
    TENANT,
    active_memberships,
    audit_events,
    post_form,
    verify_access_token,
)
from idp_bridge.services.operator import add_client
from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import Membership, RefreshToken
from scopes.catalog import advisor_scopes

PROFILE = " ".join(advisor_scopes())


def refresh(bridge, refresh_token, auth=None, **extra):
    return bridge.token({"grant_type": "refresh_token", "refresh_token": refresh_token, **extra},
                        auth=auth)


def assert_refused(response, status=400, error="invalid_grant"):
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.json["error"] == error
    assert "access_token" not in response.json


def is_active(bridge, token) -> bool:
    response = bridge.introspect(token)
    assert response.status_code == 200
    return response.json["active"]


def test_rotation_keeps_the_family(bridge):
    first = bridge.join("bob")
    response = refresh(bridge, first["refresh_token"])
    assert response.status_code == 200, response.json
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["scope"] == PROFILE
    assert body["refresh_token"] not in (first["refresh_token"], None)
    _, before = verify_access_token(bridge, first["access_token"])
    header, after = verify_access_token(bridge, body["access_token"])
    assert header["typ"] == "at+jwt"
    assert after["sid"] == before["sid"]
    assert after["grant_id"] == before["grant_id"]
    assert after["jti"] != before["jti"]
    for claim in ("iss", "sub", "aud", "client_id", "tenant", "scope", "membership",
                  "auth_time", "acr", "amr"):
        assert after[claim] == before[claim], claim
    # The next rotation works from the new token.
    again = refresh(bridge, body["refresh_token"])
    assert again.status_code == 200, again.json
    assert verify_access_token(bridge, again.json["access_token"])[1]["sid"] == before["sid"]


def test_replay_revokes_the_family_but_not_the_membership(bridge):
    first = bridge.join("bob")
    other_family = bridge.exchange("bob").json  # a second family of the same grant
    second = refresh(bridge, first["refresh_token"]).json
    assert is_active(bridge, second["access_token"])

    assert_refused(refresh(bridge, first["refresh_token"]))  # replay

    assert_refused(refresh(bridge, second["refresh_token"]))  # the successor dies too
    assert bridge.introspect(first["access_token"]).json == {"active": False}
    assert bridge.introspect(second["access_token"]).json == {"active": False}
    events = audit_events(bridge, "token.family_revoked")
    sid = verify_access_token(bridge, first["access_token"])[1]["sid"]
    assert [(e["detail"]["sid"], e["detail"]["reason"]) for e in events] == [
        (sid, "refresh_token_reuse")]
    # Only that family: the membership and its other families live on.
    assert len(active_memberships(bridge)) == 1
    assert is_active(bridge, other_family["access_token"])
    assert refresh(bridge, other_family["refresh_token"]).status_code == 200
    fresh = bridge.exchange("bob")  # a new exchange needs no code
    assert fresh.status_code == 200, fresh.json
    assert is_active(bridge, fresh.json["access_token"])


def test_replay_of_a_replay_changes_nothing_more(bridge):
    first = bridge.join("bob")
    refresh(bridge, first["refresh_token"])
    for _ in range(2):
        assert_refused(refresh(bridge, first["refresh_token"]))
    assert len(audit_events(bridge, "token.family_revoked")) == 1


def test_refresh_after_membership_removal(bridge):
    body = bridge.join("bob")
    response = bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{bridge.membership_id()}")
    assert response.status_code == 204
    assert_refused(refresh(bridge, body["refresh_token"]))


def test_refresh_after_the_advisor_left(bridge):
    body = bridge.join("bob")
    assert bridge.api("delete", f"/api/me/memberships/{TENANT}", user="bob").status_code == 204
    assert_refused(refresh(bridge, body["refresh_token"]))


def test_refresh_by_another_client_does_not_burn_the_token(bridge):
    other_secret = add_client(bridge.services.db, "second-console")
    body = bridge.join("bob")
    assert_refused(refresh(bridge, body["refresh_token"], auth=("second-console", other_secret)))
    assert_refused(refresh(bridge, body["refresh_token"], auth=(RS_CLIENT_ID, bridge.rs_secret)),
                   error="unauthorized_client")
    # The rightful client is not treated as replaying it.
    response = refresh(bridge, body["refresh_token"])
    assert response.status_code == 200, response.json
    assert audit_events(bridge, "token.family_revoked") == []


@pytest.mark.parametrize("requested, granted", [
    ("payments:read", "payments:read"),
    ("users:read tenant:read", "tenant:read users:read"),
    ("evaluation:write", "evaluation:write"),
])
def test_scope_narrowing_on_refresh(bridge, requested, granted):
    body = bridge.join("bob")
    response = refresh(bridge, body["refresh_token"], scope=requested)
    assert response.status_code == 200, response.json
    assert response.json["scope"] == granted
    assert verify_access_token(bridge, response.json["access_token"])[1]["scope"] == granted
    # Narrowing one token leaves the family's scope as granted (RFC 6749 section 6).
    later = refresh(bridge, response.json["refresh_token"])
    assert later.json["scope"] == PROFILE


@pytest.mark.parametrize("granted, requested", [
    (None, "ebics:write"),
    (None, "payments:read payments:write"),
    (None, "admin:everything"),
    ("payments:read", "payments:read ebics:read"),  # within the profile, but not the family
])
def test_scope_widening_on_refresh_is_refused_and_changes_nothing(bridge, granted, requested):
    body = bridge.join("bob", **({"scope": granted} if granted else {}))
    assert_refused(refresh(bridge, body["refresh_token"], scope=requested), error="invalid_scope")
    response = refresh(bridge, body["refresh_token"])  # not rotated, so not a replay
    assert response.status_code == 200, response.json
    assert response.json["scope"] == body["scope"]


REJECTIONS = [
    ("garbage", [("refresh_token", "garbage")], 400, "invalid_grant"),
    ("too long", [("refresh_token", "r" * 600)], 400, "invalid_grant"),
    ("empty", [("refresh_token", "")], 400, "invalid_request"),
    ("missing", [], 400, "invalid_request"),
    ("an access token", [("refresh_token", "{access_token}")], 400, "invalid_grant"),
    ("repeated", [("refresh_token", "{refresh_token}"), ("refresh_token", "{refresh_token}")],
     400, "invalid_request"),
]


@pytest.mark.parametrize("pairs, status, error", [c[1:] for c in REJECTIONS],
                         ids=[c[0] for c in REJECTIONS])
def test_malformed_refresh_requests(bridge, pairs, status, error):
    body = bridge.join("bob")
    pairs = [("grant_type", "refresh_token")] + [(k, v.format(**body)) for k, v in pairs]
    response = post_form(bridge.client, "/token", pairs, auth=bridge.auth())
    assert_refused(response, status, error)
    assert bridge.secret not in response.get_data(as_text=True)
    # Nothing changed: the real refresh token still rotates normally.
    assert refresh(bridge, body["refresh_token"]).status_code == 200
    assert audit_events(bridge, "token.family_revoked") == []


def test_expired_refresh_token(bridge):
    body = bridge.join("bob")
    with bridge.services.db.transaction() as session:
        session.execute(update(RefreshToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert_refused(refresh(bridge, body["refresh_token"]))


def test_refresh_after_the_membership_expired(bridge):
    body = bridge.join("bob")
    membership_id = bridge.membership_id()
    with bridge.services.db.transaction() as session:
        session.get(Membership, membership_id).expires_at = utcnow() - timedelta(seconds=1)
    assert_refused(refresh(bridge, body["refresh_token"]))
    assert active_memberships(bridge) == []
    with bridge.services.db.read() as session:
        row = session.get(Membership, membership_id)
        assert row.ended_at is not None
        assert row.end_reason == "expired"
    ended = audit_events(bridge, "membership.ended")
    assert [(e["membership_id"], e["detail"]["reason"]) for e in ended] == [
        (membership_id, "expired")]
    assert bridge.introspect(body["access_token"]).json == {"active": False}
    # The expiry is final: the member is gone and needs a new code.
    assert_refused(bridge.exchange("bob"))


def test_concurrent_use_of_one_refresh_token_is_a_replay(bridge):
    """Whatever the interleaving, one use wins and the other is a replay that ends the family."""
    body = bridge.join("bob")
    barrier = threading.Barrier(2)
    results = []

    def use():
        barrier.wait()
        results.append(refresh(bridge, body["refresh_token"]))

    threads = [threading.Thread(target=use) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(r.status_code for r in results) == [200, 400]
    winner = next(r for r in results if r.status_code == 200).json
    loser = next(r for r in results if r.status_code == 400).json
    assert loser["error"] == "invalid_grant"
    assert_refused(refresh(bridge, winner["refresh_token"]))
    assert bridge.introspect(winner["access_token"]).json == {"active": False}
    assert len(active_memberships(bridge)) == 1


def test_refresh_needs_client_authentication(bridge):
    body = bridge.join("bob")
    response = post_form(bridge.client, "/token", [
        ("grant_type", "refresh_token"), ("refresh_token", body["refresh_token"]),
        ("client_id", CLIENT_ID)])
    assert_refused(response, 401, "invalid_client")
    assert refresh(bridge, body["refresh_token"]).status_code == 200
