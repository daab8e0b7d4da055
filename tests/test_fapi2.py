"""``profile = "fapi2"``: the FAPI 2.0 Security Profile's rules for the token endpoint
(issue 13 item 13; FAPI 2.0 Security Profile sections 5.3.2.1, 5.3.2.2, 5.4).

Sender-constrained tokens only (a DPoP proof on every token request, of ES256 or PS256),
``private_key_jwt`` only (ES256/PS256 assertions), refresh tokens bound to the DPoP key and not
rotated, a 10 s allowance for ``iat``/``nbf`` in the future; the start refuses settings that
contradict the profile, naming the key.
"""

from __future__ import annotations

import secrets
import time

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from conftest import ACCESS_TOKEN_TYPE, TENANT, TOKEN_EXCHANGE, verify_access_token
from idp_bridge.services.operator import add_client
from idp_bridge.settings import Settings, SettingsError
from test_dpop_token import TOKEN_URL, Holder, assert_refused, families

REQUIRED_SETTINGS = {
    "issuer": "https://bridge.konfipay.example",
    "upstream_issuer": "https://sso.konfipay.example/realms/staff",
    "secret_key": secrets.token_urlsafe(32),
    "key_encryption_key": "6yW8oM1oWq3t8n1K3gq0mH1wQ0aX9Zb3c2d1e0f9g8E=",
}
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FAPI_CLIENT = "fapi-console"


class KeyClient:
    """A private_key_jwt client: its key and the assertions it signs."""

    def __init__(self, alg="ES256"):
        self.alg = alg
        self.key = ECKey.generate_key("P-256", auto_kid=True) if alg == "ES256" else \
            RSAKey.generate_key(2048, auto_kid=True)

    def assertion(self, **changes) -> str:
        now = int(time.time())
        claims = {"iss": FAPI_CLIENT, "sub": FAPI_CLIENT, "aud": TOKEN_URL,
                  "jti": secrets.token_urlsafe(12), "iat": now, "exp": now + 60, **changes}
        return jwt.encode({"alg": self.alg, "kid": self.key.kid}, claims, self.key,
                          algorithms=[self.alg])


@pytest.fixture
def fapi(bridge_with):
    bridge = bridge_with(profile="fapi2")
    client = KeyClient()
    add_client(bridge.services.db, FAPI_CLIENT, auth_method="private_key_jwt",
               jwks={"keys": [client.key.as_dict(private=False)]})
    # bob becomes a member with the secret client first: only at the token endpoint of a
    # fapi2 bridge is that client now refused.
    bridge.client_key = client
    return bridge


def token_request(bridge, data: dict, *, proof=None, assertion=None, auth=None):
    headers = {"DPoP": proof} if proof is not None else {}
    if auth is None:
        data = {**data, "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion or bridge.client_key.assertion()}
    return bridge.client.post("/token", data=data, headers=headers, auth=auth)


def exchange_data(bridge, code=None) -> dict:
    data = {"grant_type": TOKEN_EXCHANGE, "subject_token": bridge.upstream_token("bob"),
            "subject_token_type": ACCESS_TOKEN_TYPE, "tenant": TENANT}
    if code is not None:
        data["access_code"] = code
    return data


def join(bridge, holder):
    response = token_request(bridge, exchange_data(bridge, bridge.current_code()),
                             proof=holder.proof())
    assert response.status_code == 200, response.json
    return response.json


def test_a_dpop_bound_exchange_with_private_key_jwt(fapi):
    holder = Holder()
    body = join(fapi, holder)
    assert body["token_type"] == "DPoP"
    _, claims = verify_access_token(fapi, body["access_token"])
    assert claims["cnf"] == {"jkt": holder.jkt}


def test_requests_without_a_proof_are_refused(fapi):
    before = families(fapi)
    assert_refused(token_request(fapi, exchange_data(fapi, fapi.current_code())))
    assert families(fapi) == before


def test_secret_clients_are_refused_at_the_token_endpoint(fapi):
    before = families(fapi)
    response = token_request(fapi, exchange_data(fapi, fapi.current_code()),
                             proof=Holder().proof(), auth=fapi.auth())
    assert_refused(response, "invalid_client", status=401)
    assert families(fapi) == before


@pytest.mark.parametrize("alg", ["RS256", "EdDSA", "ES384"])
def test_proof_algorithms_other_than_es256_and_ps256_are_refused(fapi, alg):
    assert_refused(token_request(fapi, exchange_data(fapi, fapi.current_code()),
                                 proof=Holder(alg).proof()))


def test_ps256_proofs_are_accepted(fapi):
    assert join(fapi, Holder("PS256"))["token_type"] == "DPoP"


def test_an_rs256_client_assertion_is_refused(bridge_with):
    bridge = bridge_with(profile="fapi2")
    client = KeyClient("RS256")
    add_client(bridge.services.db, FAPI_CLIENT, auth_method="private_key_jwt",
               jwks={"keys": [client.key.as_dict(private=False)]})
    bridge.client_key = client
    response = token_request(bridge, exchange_data(bridge, bridge.current_code()),
                             proof=Holder().proof())
    assert_refused(response, "invalid_client")  # 400: no Authorization header (RFC 6749 5.2)


@pytest.mark.parametrize("ahead, accepted", [(5, True), (25, False)])
def test_iat_in_the_future_is_allowed_ten_seconds(fapi, ahead, accepted):
    now = int(time.time())
    proof = Holder().proof(iat=now + ahead)
    response = token_request(fapi, exchange_data(fapi, fapi.current_code()), proof=proof)
    assert (response.status_code == 200) is accepted, response.json
    if not accepted:
        assert_refused(response)
    assertion = fapi.client_key.assertion(iat=now + ahead, nbf=now + ahead)
    response = token_request(fapi, exchange_data(fapi, fapi.current_code()),
                             proof=Holder().proof(), assertion=assertion)
    assert (response.status_code == 200) is accepted, response.json
    if not accepted:
        assert_refused(response, "invalid_client")


def test_refresh_tokens_are_bound_and_do_not_rotate(fapi):
    holder = Holder()
    body = join(fapi, holder)
    refresh = {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}
    first = token_request(fapi, refresh, proof=holder.proof())
    assert first.status_code == 200, first.json
    assert first.json["token_type"] == "DPoP"
    assert "refresh_token" not in first.json  # the client keeps its refresh token
    second = token_request(fapi, refresh, proof=holder.proof())
    assert second.status_code == 200, second.json  # no rotation: no replay either
    assert verify_access_token(fapi, second.json["access_token"])[1]["cnf"] == {
        "jkt": holder.jkt}
    assert_refused(token_request(fapi, refresh, proof=Holder().proof()), "invalid_grant")
    assert_refused(token_request(fapi, refresh))


def test_metadata_of_the_profile(fapi):
    metadata = fapi.client.get("/.well-known/oauth-authorization-server").json
    assert metadata["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert metadata["revocation_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert metadata["token_endpoint_auth_signing_alg_values_supported"] == ["ES256", "PS256"]
    assert metadata["dpop_signing_alg_values_supported"] == ["ES256", "PS256"]
    assert metadata["access_token_signing_alg_values_supported"] == ["ES256"]


# --- the start refuses contradictions ---

@pytest.mark.parametrize("changes, key", [
    ({"profile": "fapi3"}, "profile"),
    ({"profile": "fapi2", "signing_alg": "RS256"}, "signing_alg"),
    ({"profile": "fapi2", "dpop_algorithms": "ES256,RS256"}, "dpop_algorithms"),
    ({"profile": "fapi2", "app_url": "https://app.konfipay.example/tenants/{tenant}/open"},
     "app_url"),
    ({"dpop_algorithms": "HS256"}, "dpop_algorithms"),
])
def test_contradicting_settings_are_refused(changes, key):
    with pytest.raises(SettingsError) as caught:
        Settings.load({**REQUIRED_SETTINGS, **changes}, environ={})
    assert caught.value.key == key
    assert f"IDP_BRIDGE_{key.upper()}" in str(caught.value)


def test_the_profile_from_the_environment():
    settings = Settings.load(REQUIRED_SETTINGS, environ={"IDP_BRIDGE_PROFILE": "fapi2"})
    assert settings.fapi2 and settings.accepted_dpop_algorithms == ("ES256", "PS256")
    assert Settings.load(REQUIRED_SETTINGS, environ={}).profile == ""
