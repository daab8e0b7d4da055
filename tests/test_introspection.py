"""Token Introspection (RFC 7662) at ``/introspect``: DESIGN.md sections 6 and 8."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from conftest import (
    CLIENT_ID,
    RS_CLIENT_ID,
    TENANT,
    post_form,
    verify_access_token,
)
from idp_bridge.services.operator import add_client
from idp_bridge.devidp import DEMO_USERS
from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import Membership
from scopes.catalog import advisor_scopes

BOB = DEMO_USERS["bob"]["sub"]
INACTIVE = {"active": False}


def refresh(bridge, refresh_token):
    response = bridge.token({"grant_type": "refresh_token", "refresh_token": refresh_token})
    assert response.status_code == 200, response.json
    return response.json


def resigned(bridge, token, *, header=None, key=None, **claims) -> str:
    """``token`` with changed claims or header, signed with the bridge's key unless ``key``."""
    original_header, original = verify_access_token(bridge, token)
    kid, alg, signing_key = bridge.services.keys.signing_key()
    return jwt.encode({**original_header, **(header or {})}, {**original, **claims},
                      key or signing_key)


def test_active_access_token(bridge):
    body = bridge.join("bob")
    response = bridge.introspect(body["access_token"])
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    result = response.json
    _, claims = verify_access_token(bridge, body["access_token"])
    assert result["active"] is True
    assert result["token_type"] == "Bearer"
    for name in ("iss", "sub", "aud", "client_id", "scope", "tenant", "grant_id", "sid",
                 "membership", "exp", "iat", "jti", "auth_time", "acr"):
        assert result[name] == claims[name], name
    assert result["sub"] == BOB
    assert result["tenant"] == TENANT
    assert result["client_id"] == CLIENT_ID
    assert result["scope"] == " ".join(advisor_scopes())


def test_removal_deactivates_every_token_of_the_grant(bridge):
    first = bridge.join("bob")
    first_refreshed = refresh(bridge, first["refresh_token"])
    second = bridge.exchange("bob").json
    second_refreshed = refresh(bridge, second["refresh_token"])
    access_tokens = [b["access_token"] for b in (first, first_refreshed, second,
                                                 second_refreshed)]
    refresh_tokens = [first_refreshed["refresh_token"], second_refreshed["refresh_token"]]
    assert len({verify_access_token(bridge, t)[1]["sid"] for t in access_tokens}) == 2
    for token in access_tokens + refresh_tokens:
        assert bridge.introspect(token).json["active"] is True

    response = bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{bridge.membership_id()}")
    assert response.status_code == 204

    for token in access_tokens:
        assert bridge.introspect(token).json == INACTIVE
    for token in refresh_tokens:
        assert bridge.introspect(token, hint="refresh_token").json == INACTIVE


def test_other_grants_stay_active_after_a_removal(bridge):
    bob = bridge.join("bob")
    carol = bridge.join("carol")
    bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{bridge.membership_id('bob')}")
    assert bridge.introspect(bob["access_token"]).json == INACTIVE
    assert bridge.introspect(carol["access_token"]).json["active"] is True


def test_expired_membership_is_inactive_before_any_sweep(bridge):
    body = bridge.join("bob")
    with bridge.services.db.transaction() as session:
        session.get(Membership, bridge.membership_id()).expires_at = \
            utcnow() - timedelta(seconds=1)
    assert bridge.introspect(body["access_token"]).json == INACTIVE
    assert bridge.introspect(body["refresh_token"]).json == INACTIVE


@pytest.mark.parametrize("auth", [
    None,
    (RS_CLIENT_ID, "w" * 43),
    ("no-such-client", "w" * 43),
], ids=["none", "wrong secret", "unknown client"])
def test_introspection_needs_client_authentication(bridge, auth):
    body = bridge.join("bob")
    response = post_form(bridge.client, "/introspect", [("token", body["access_token"])],
                         auth=auth)
    assert response.status_code == 401
    assert response.json["error"] == "invalid_client"
    assert "active" not in response.json
    assert bridge.rs_secret not in response.get_data(as_text=True)


def test_client_without_introspect_role_sees_only_its_own_tokens(bridge):
    other_secret = add_client(bridge.services.db, "second-console")
    own = bridge.join("bob")
    foreign = bridge.token({
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": bridge.upstream_token("bob"),
        "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "tenant": TENANT}, auth=("second-console", other_secret)).json
    as_console = bridge.auth()
    assert bridge.introspect(own["access_token"], auth=as_console).json["active"] is True
    assert bridge.introspect(own["refresh_token"], auth=as_console).json["active"] is True
    assert bridge.introspect(foreign["access_token"], auth=as_console).json == INACTIVE
    assert bridge.introspect(foreign["refresh_token"], auth=as_console).json == INACTIVE
    # A resource server with the introspect role sees both.
    assert bridge.introspect(foreign["access_token"]).json["active"] is True


@pytest.mark.parametrize("make_token", [
    lambda b, t: "garbage",
    lambda b, t: "",
    lambda b, t: "a.b.c",
    lambda b, t: "x" * 9000,
    lambda b, t: t[:-4] + ("AAAA" if not t.endswith("AAAA") else "BBBB"),
    lambda b, t: resigned(b, t, exp=int(time.time()) - 10, iat=int(time.time()) - 310),
    lambda b, t: resigned(b, t, iss="https://bridge.other-region.example"),
    lambda b, t: resigned(b, t, header={"typ": "JWT"}),
    lambda b, t: resigned(b, t, key=ECKey.generate_key("P-256", private=True)),
    lambda b, t: resigned(b, t, sid="00000000-0000-0000-0000-000000000000"),
    lambda b, t: resigned(b, t, header={"kid": "unknown-kid"}),
], ids=["garbage", "empty", "three dots", "oversized", "tampered signature", "expired",
        "other issuer", "not at+jwt", "foreign key same kid", "unknown sid", "unknown kid"])
def test_unknown_or_invalid_tokens_are_inactive(bridge, make_token):
    body = bridge.join("bob")
    response = bridge.introspect(make_token(bridge, body["access_token"]))
    assert response.status_code == 200
    assert response.json == INACTIVE
    assert bridge.introspect(body["access_token"]).json["active"] is True  # control


def test_refresh_token_introspection(bridge):
    body = bridge.join("bob")
    _, claims = verify_access_token(bridge, body["access_token"])
    for hint in (None, "refresh_token", "access_token"):
        result = bridge.introspect(body["refresh_token"], hint=hint).json
        assert result["active"] is True
        assert result["token_type"] == "refresh_token"
        for name in ("client_id", "sub", "scope", "tenant", "grant_id", "sid", "iss"):
            assert result[name] == claims[name], name
        assert abs(result["iat"] - time.time()) < 60  # UTC, not local time
        assert abs(result["exp"] - (time.time() + 8 * 3600)) < 60  # refresh lifetime 8 h
    successor = refresh(bridge, body["refresh_token"])
    assert bridge.introspect(body["refresh_token"]).json == INACTIVE  # rotated
    assert bridge.introspect(successor["refresh_token"]).json["active"] is True


@pytest.mark.parametrize("pairs, error", [
    ([], "invalid_request"),
    ([("token", "x"), ("token_type_hint", "id_token")], "unsupported_token_type"),
], ids=["no token", "unsupported hint"])
def test_malformed_introspection_requests(bridge, pairs, error):
    response = post_form(bridge.client, "/introspect", pairs,
                         auth=(RS_CLIENT_ID, bridge.rs_secret))
    assert response.status_code == 400
    assert response.json["error"] == error


def test_oversized_introspection_request(bridge):
    response = post_form(bridge.client, "/introspect", [("token", "x" * (65 * 1024))],
                         auth=(RS_CLIENT_ID, bridge.rs_secret))
    assert response.status_code == 413
    assert response.json["error"] == "invalid_request"
