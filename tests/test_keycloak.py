"""Against a real Keycloak 26 (DESIGN.md sections 3, 6, 8 and 11; issue 3).

Keycloak access tokens are the subject tokens of the bridge's token exchange and authorise the
management API; the realm template's mappers (audience ``idp-bridge``, ``groups`` with full
paths, realm roles) are what the bridge's defaults read. The last tests pin down what
Keycloak's own standard token exchange (V2) leaves alive after revocation and logout: the
comparison point of ``bench/bench_keycloak_exchange.py``.

Keycloak is started once per session by the ``keycloak`` fixture (``conftest.py``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from conftest import (
    ACCESS_TOKEN_TYPE,
    TENANT,
    TOKEN_EXCHANGE,
    Bridge,
    active_memberships,
    build_app,
    verify_access_token,
)
from idp_bridge.app import services
from scopes.catalog import advisor_scopes

pytestmark = [pytest.mark.keycloak, pytest.mark.slow]

PROFILE = " ".join(advisor_scopes())
REDIRECT_URI = "http://127.0.0.1:8765/callback"  # never served: the test reads the redirect


def unverified_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def keycloak_keys(keycloak) -> KeySet:
    return KeySet.import_key_set(requests.get(keycloak.jwks_uri, timeout=30).json())


def verify_offline(keycloak, token: str) -> dict:
    """What a resource server validating JWTs locally sees: signature (Keycloak's JWKS),
    issuer and expiry; no call to Keycloak about the token itself."""
    claims = jwt.decode(token, keycloak_keys(keycloak), algorithms=["RS256"]).claims
    jwt.JWTClaimsRegistry(iss={"essential": True, "value": keycloak.issuer},
                          exp={"essential": True}).validate(claims)
    return claims


@pytest.fixture
def kc_bridge(keycloak, settings):
    """A bridge whose upstream identity provider is the real Keycloak."""
    app = build_app(settings.replace(upstream_issuer=keycloak.issuer))
    yield Bridge(app, app.test_client(), upstream=None)
    services(app).db.dispose()


def kc_access_token(keycloak, user: str, client_id: str = "idp-bridge") -> str:
    return keycloak.password_token(user, client_id=client_id)["access_token"]


def access_code(bridge: Bridge, keycloak) -> str:
    """anna, tenant admin by her Keycloak group /tenants/10042/admins, reads the code."""
    response = bridge.api("get", f"/api/tenants/{TENANT}/access-code",
                          token=kc_access_token(keycloak, "anna"))
    assert response.status_code == 200, response.json
    return response.json["code"]


# --- the realm template as the bridge's defaults read it ----------------------------------

def test_realm_tokens_carry_audience_roles_groups_and_lifespan(keycloak):
    anna = unverified_claims(kc_access_token(keycloak, "anna"))
    bob = unverified_claims(kc_access_token(keycloak, "bob"))
    sam = unverified_claims(kc_access_token(keycloak, "sam"))
    assert anna["iss"] == bob["iss"] == keycloak.issuer
    assert "idp-bridge" in (bob["aud"] if isinstance(bob["aud"], list) else [bob["aud"]])
    assert anna["groups"] == ["/tenants/10042/admins"]
    assert "advisor" in bob["realm_access"]["roles"]
    assert "support-admin" in sam["realm_access"]["roles"]
    assert bob["exp"] - bob["iat"] == 300
    assert bob["acr"] == "1"  # the template's acr-to-LoA mapping: password only is level 1


# --- a Keycloak token as the subject token of the bridge's exchange -----------------------

def test_keycloak_token_redeems_access_code(keycloak, kc_bridge):
    code = access_code(kc_bridge, keycloak)
    subject = kc_access_token(keycloak, "bob")
    response = kc_bridge.exchange(subject_token=subject, code=code, reason="Ticket 4711")
    assert response.status_code == 200, response.json
    body = response.json
    assert body["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert body["scope"] == PROFILE
    _, claims = verify_access_token(kc_bridge, body["access_token"])
    assert claims["sub"] == keycloak.user_id("bob") == unverified_claims(subject)["sub"]
    assert claims["membership"] == "temporary"
    assert claims["tenant"] == TENANT
    assert claims["scope"] == PROFILE
    assert claims["acr"] == "1"  # carried over from the Keycloak token
    # The membership stays: the next exchange needs no code.
    again = kc_bridge.exchange(subject_token=kc_access_token(keycloak, "bob"))
    assert again.status_code == 200, again.json


@pytest.mark.parametrize("user, client_id, error", [
    ("eve", "idp-bridge", "invalid_grant"),          # valid token, no advisor role
    ("sam", "idp-bridge", "invalid_grant"),          # support admin, not an advisor
    ("anna", "idp-bridge", "invalid_grant"),         # tenant admin, not an advisor
    ("bob", "kc-exchange-initial", "invalid_request"),  # advisor, but aud is not idp-bridge
], ids=["eve-no-role", "sam-support-admin", "anna-tenant-admin", "bob-wrong-audience"])
def test_keycloak_token_rejected(keycloak, kc_bridge, user, client_id, error):
    code = access_code(kc_bridge, keycloak)
    subject = kc_access_token(keycloak, user, client_id)
    response = kc_bridge.exchange(subject_token=subject, code=code)
    assert response.status_code == 400, response.json
    assert response.json["error"] == error
    assert active_memberships(kc_bridge) == []


def test_keycloak_id_token_passes_only_as_id_token(keycloak, kc_bridge):
    """Keycloak marks ID tokens with ``typ: ID``; one must not pass as an access token."""
    tokens = keycloak.password_token("bob")
    response = kc_bridge.exchange(subject_token=tokens["id_token"], code=access_code(
        kc_bridge, keycloak))
    assert response.status_code == 400, response.json
    assert response.json["error"] == "invalid_request"


# --- the real login form: authorization code + PKCE at Keycloak ---------------------------

def login_with_form(keycloak, user: str) -> dict:
    """What a browser does: Keycloak's login page, the posted form, the redirect with the
    code; then the code redemption at Keycloak's token endpoint (client_secret_basic)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    browser = keycloak.browser()
    page = browser.get(keycloak.authorization_endpoint + "?" + urlencode({
        "client_id": "idp-bridge", "response_type": "code", "scope": "openid",
        "redirect_uri": REDIRECT_URI, "state": state, "nonce": nonce,
        "code_challenge": challenge, "code_challenge_method": "S256",
    }), timeout=30)
    assert page.status_code == 200, page.text[:500]
    answer = keycloak.submit_login_form(browser, page, user)
    assert answer.status_code == 302, answer.text[:500]
    location = answer.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?")
    params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert params["state"] == state
    assert params["iss"] == keycloak.issuer  # RFC 9207 authorization server issuer
    tokens = requests.post(keycloak.token_endpoint, data={
        "grant_type": "authorization_code", "code": params["code"],
        "redirect_uri": REDIRECT_URI, "code_verifier": verifier,
    }, auth=keycloak.client_auth("idp-bridge"), timeout=30)
    assert tokens.status_code == 200, tokens.text
    tokens = tokens.json()
    assert verify_offline(keycloak, tokens["id_token"])["nonce"] == nonce
    return tokens


def test_login_form_token_redeems_access_code(keycloak, kc_bridge):
    tokens = login_with_form(keycloak, "carol")
    claims = unverified_claims(tokens["access_token"])
    assert claims["preferred_username"] == "carol"
    assert claims["azp"] == "idp-bridge"
    response = kc_bridge.exchange(subject_token=tokens["access_token"],
                                  code=access_code(kc_bridge, keycloak))
    assert response.status_code == 200, response.json
    _, issued = verify_access_token(kc_bridge, response.json["access_token"])
    assert issued["sub"] == claims["sub"]
    assert issued["membership"] == "temporary"


def test_login_requires_pkce(keycloak):
    """The template demands PKCE S256 for idp-bridge: a request without it is refused."""
    response = requests.get(keycloak.authorization_endpoint + "?" + urlencode({
        "client_id": "idp-bridge", "response_type": "code", "scope": "openid",
        "redirect_uri": REDIRECT_URI, "state": "s",
    }), allow_redirects=False, timeout=30)
    assert response.status_code == 302
    params = parse_qs(urlsplit(response.headers["Location"]).query)
    assert params["error"] == ["invalid_request"]
    assert "code_challenge" in params["error_description"][0]


# --- Keycloak's own standard token exchange (V2): what its revocation leaves alive ---------

def keycloak_exchange(keycloak, subject_token: str):
    return requests.post(keycloak.token_endpoint, data={
        "grant_type": TOKEN_EXCHANGE, "subject_token": subject_token,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "requested_token_type": ACCESS_TOKEN_TYPE,
    }, auth=keycloak.client_auth("kc-exchange-bench"), timeout=30)


def exchanged_pair(keycloak, user: str = "carol") -> tuple[dict, str]:
    """A subject token response issued to kc-exchange-initial and the access token that
    kc-exchange-bench got for it by Keycloak's standard token exchange."""
    subject = keycloak.password_token(user, client_id="kc-exchange-initial")
    response = keycloak_exchange(keycloak, subject["access_token"])
    assert response.status_code == 200, response.text
    assert response.json()["issued_token_type"] == ACCESS_TOKEN_TYPE
    return subject, response.json()["access_token"]


def test_keycloak_standard_exchange_works(keycloak):
    subject, exchanged = exchanged_pair(keycloak)
    claims = verify_offline(keycloak, exchanged)
    assert claims["azp"] == "kc-exchange-bench"
    assert claims["sub"] == unverified_claims(subject["access_token"])["sub"]
    assert claims["sid"] == unverified_claims(subject["access_token"])["sid"]  # same session
    assert keycloak.introspect(exchanged, "kc-exchange-bench")["active"] is True
    # A token not naming the requester in aud is refused (V2 only filters audiences).
    foreign = keycloak_exchange(keycloak, kc_access_token(keycloak, "carol"))
    assert foreign.status_code == 403
    assert foreign.json()["error"] == "access_denied"


def test_keycloak_exchanged_token_survives_revocation_of_subject_token(keycloak):
    """DESIGN.md section 11, checked: revoking the subject access token (RFC 7009) leaves the
    exchanged access token active, even at Keycloak's own introspection."""
    subject, exchanged = exchanged_pair(keycloak)
    assert keycloak.revoke(subject["access_token"], "access_token", "kc-exchange-initial") == 200
    assert keycloak.introspect(subject["access_token"], "kc-exchange-initial")["active"] is False
    assert keycloak.introspect(exchanged, "kc-exchange-bench")["active"] is True
    verify_offline(keycloak, exchanged)


def test_keycloak_logout_leaves_exchanged_jwt_valid_offline(keycloak):
    """Logging the user out ends the session the exchanged token shares: Keycloak's
    introspection says inactive, but a resource server validating the JWT locally accepts it
    until ``exp`` (up to the 300 s lifespan); Keycloak publishes nothing it could listen to."""
    subject, exchanged = exchanged_pair(keycloak, "carol")
    keycloak.logout_user("carol")
    assert keycloak.introspect(exchanged, "kc-exchange-bench")["active"] is False
    assert keycloak.introspect(subject["access_token"], "kc-exchange-initial")["active"] is False
    claims = verify_offline(keycloak, exchanged)
    assert claims["exp"] > time.time() + 200


def test_keycloak_disabled_user_leaves_exchanged_jwt_valid_offline(keycloak):
    subject, exchanged = exchanged_pair(keycloak, "carol")
    user_id = keycloak.user_id("carol")
    user = keycloak.admin("GET", f"/users/{user_id}").json()
    keycloak.admin("PUT", f"/users/{user_id}", json={**user, "enabled": False}).raise_for_status()
    try:
        assert keycloak.introspect(exchanged, "kc-exchange-bench")["active"] is False
        verify_offline(keycloak, exchanged)
    finally:
        keycloak.admin("PUT", f"/users/{user_id}", json={**user, "enabled": True}
                       ).raise_for_status()


def test_offline_validation_rejects_a_tampered_keycloak_token(keycloak):
    """The offline check above is a real check: a changed payload fails it."""
    _, exchanged = exchanged_pair(keycloak)
    header, payload, signature = exchanged.split(".")
    claims = unverified_claims(exchanged) | {"sub": "someone-else"}
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(JoseError):
        verify_offline(keycloak, f"{header}.{forged_payload}.{signature}")
