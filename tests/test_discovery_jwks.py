"""Authorization Server Metadata (RFC 8414) and the JWK set, with key rotation (DESIGN.md 5, 6)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from conftest import TOKEN_EXCHANGE, verify_access_token
from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import SigningKey

ISSUER = "http://127.0.0.1:8000"
WELL_KNOWN = ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]


@pytest.mark.db_independent
@pytest.mark.parametrize("path", WELL_KNOWN)
def test_metadata_document(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert response.is_json
    doc = response.json
    assert doc["issuer"] == ISSUER
    assert doc["token_endpoint"] == f"{ISSUER}/token"
    assert doc["jwks_uri"] == f"{ISSUER}/jwks"
    assert doc["introspection_endpoint"] == f"{ISSUER}/introspect"
    assert doc["revocation_endpoint"] == f"{ISSUER}/revoke"
    assert TOKEN_EXCHANGE in doc["grant_types_supported"]
    assert "refresh_token" in doc["grant_types_supported"]
    assert "client_credentials" in doc["grant_types_supported"]  # receivers (ssf.manage)
    for key in ("token_endpoint_auth_methods_supported",
                "introspection_endpoint_auth_methods_supported",
                "revocation_endpoint_auth_methods_supported"):
        assert "client_secret_basic" in doc[key]
        assert "none" not in doc[key]
    assert doc["access_token_signing_alg_values_supported"] == ["ES256"]


@pytest.mark.db_independent
def test_both_documents_agree(client):
    first, second = (client.get(path).json for path in WELL_KNOWN)
    assert first == second


@pytest.mark.db_independent
def test_metadata_endpoints_are_served(bridge):
    """Every advertised endpoint answers at the path the document names."""
    doc = bridge.client.get(WELL_KNOWN[0]).json
    path = lambda url: url.removeprefix(ISSUER)  # noqa: E731
    assert bridge.client.get(path(doc["jwks_uri"])).status_code == 200
    for key in ("token_endpoint", "introspection_endpoint", "revocation_endpoint"):
        response = bridge.client.post(path(doc[key]), data={
            "token": "x", "grant_type": "refresh_token", "refresh_token": "x"})
        assert response.status_code == 401, key  # exists, wants client authentication
        assert response.json["error"] == "invalid_client"


def test_metadata_follows_the_signing_alg(bridge_with):
    b = bridge_with(signing_alg="RS256")
    assert b.client.get(WELL_KNOWN[0]).json["access_token_signing_alg_values_supported"] == [
        "RS256"]
    assert {k["alg"] for k in b.client.get("/jwks").json["keys"]} == {"RS256"}


def test_jwks_publishes_public_keys_only(client):
    response = client.get("/jwks")
    assert response.status_code == 200
    assert "max-age" in response.headers["Cache-Control"]
    keys = response.json["keys"]
    assert len(keys) == 1
    for key in keys:
        assert key["kty"] == "EC" and key["crv"] == "P-256"
        assert key["alg"] == "ES256" and key["use"] == "sig" and key["kid"]
        for private in ("d", "p", "q", "dp", "dq", "qi", "k"):
            assert private not in key


def test_rsa_jwks_publishes_public_keys_only(bridge_with):
    keys = bridge_with(signing_alg="RS256").client.get("/jwks").json["keys"]
    assert keys and all(k["kty"] == "RSA" for k in keys)
    for key in keys:
        for private in ("d", "p", "q", "dp", "dq", "qi"):
            assert private not in key


def rotate(bridge) -> str:
    keys = bridge.services.keys
    with bridge.services.db.transaction() as session:
        kid = keys.create(session, utcnow())
    keys.invalidate()
    return kid


def test_key_rotation_without_downtime(bridge):
    old_kid = bridge.client.get("/jwks").json["keys"][0]["kid"]
    before = bridge.join("bob")
    assert verify_access_token(bridge, before["access_token"])[0]["kid"] == old_kid

    new_kid = rotate(bridge)
    assert new_kid != old_kid

    after = bridge.exchange("bob").json
    header, _ = verify_access_token(bridge, after["access_token"])
    assert header["kid"] == new_kid
    refreshed = bridge.token({"grant_type": "refresh_token",
                              "refresh_token": before["refresh_token"]}).json
    assert verify_access_token(bridge, refreshed["access_token"])[0]["kid"] == new_kid
    assert {k["kid"] for k in bridge.client.get("/jwks").json["keys"]} == {old_kid, new_kid}
    # Tokens signed with the old key stay valid until they expire.
    assert verify_access_token(bridge, before["access_token"])[1]["sub"]
    assert bridge.introspect(before["access_token"]).json["active"] is True
    assert bridge.introspect(after["access_token"]).json["active"] is True


def test_retired_key_leaves_the_jwks_after_its_tokens_expired(bridge):
    old_kid = bridge.client.get("/jwks").json["keys"][0]["kid"]
    before = bridge.join("bob")
    new_kid = rotate(bridge)
    # Back-date the retirement beyond token lifetime (300 s) plus margin.
    with bridge.services.db.transaction() as session:
        session.get(SigningKey, old_kid).retired_at = utcnow() - timedelta(seconds=900)
    bridge.services.keys.invalidate()
    assert {k["kid"] for k in bridge.client.get("/jwks").json["keys"]} == {new_kid}
    assert bridge.introspect(before["access_token"]).json == {"active": False}
