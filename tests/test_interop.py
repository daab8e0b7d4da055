"""Interoperability: the bridge served over real HTTP on loopback, spoken to by an independent
OAuth client library (requests-oauth2client), its tokens verified by two independent JWT
libraries (PyJWT, python-jose: always with an explicit ``algorithms`` list, DESIGN.md 11)."""

from __future__ import annotations

import contextlib

import jwt as pyjwt
import pytest
import requests
from jose import jwt as jose_jwt
from jose.exceptions import JWTClaimsError, JWTError
from requests_oauth2client import InvalidGrant, OAuth2Client

from conftest import ACCESS_TOKEN_TYPE, CLIENT_ID, TENANT, Bridge, ServerThread, build_app
from idp_bridge.app import services
from idp_bridge.devidp import DEMO_USERS

AUDIENCE = "konfipay-api"


class Served:
    def __init__(self, bridge: Bridge, issuer: str):
        self.bridge = bridge
        self.issuer = issuer

    def oauth_client(self) -> OAuth2Client:
        return OAuth2Client.from_discovery_endpoint(
            url=f"{self.issuer}/.well-known/oauth-authorization-server", issuer=self.issuer,
            auth=(CLIENT_ID, self.bridge.secret), testing=True)


@pytest.fixture
def serve(tmp_path, settings, upstream, new_database_url):
    """Serve a bridge on a free loopback port, its issuer being that very URL."""
    with contextlib.ExitStack() as stack:
        def make(**changes) -> Served:
            holder = {}
            server = stack.enter_context(ServerThread(
                lambda environ, start_response: holder["app"](environ, start_response)))
            issuer = f"http://127.0.0.1:{server.port}"
            app = build_app(settings.replace(
                issuer=issuer, database_url=new_database_url(),
                **changes))
            stack.callback(services(app).db.dispose)
            holder["app"] = app
            return Served(Bridge(app, app.test_client(), upstream), issuer)

        yield make


def verify_with_pyjwt(served: Served, token: str, alg: str, **overrides) -> dict:
    jwks = pyjwt.PyJWKClient(f"{served.issuer}/jwks", cache_keys=False)
    key = jwks.get_signing_key_from_jwt(token)
    options = {"algorithms": [alg], "audience": AUDIENCE, "issuer": served.issuer,
               "options": {"require": ["exp", "iat", "iss", "aud", "sub", "jti"]}}
    options.update(overrides)
    return pyjwt.decode(token, key.key, **options)


def verify_with_jose(served: Served, token: str, alg: str, **overrides) -> dict:
    jwks = requests.get(f"{served.issuer}/jwks", timeout=5).json()
    options = {"algorithms": [alg], "audience": AUDIENCE, "issuer": served.issuer}
    options.update(overrides)
    return jose_jwt.decode(token, jwks, **options)


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_exchange_with_an_independent_client_and_verifiers(serve, upstream, alg):
    served = serve(signing_alg=alg)
    oauth = served.oauth_client()
    assert oauth.token_endpoint == f"{served.issuer}/token"
    code = served.bridge.current_code()

    token = oauth.token_exchange(
        subject_token=upstream.issue_tokens("bob")["access_token"],
        subject_token_type=ACCESS_TOKEN_TYPE, tenant=TENANT, access_code=code,
        reason="Ticket 4711")
    assert token.token_type.lower() == "bearer"
    assert token.refresh_token
    assert token.kwargs["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert pyjwt.get_unverified_header(token.access_token)["typ"] == "at+jwt"
    assert pyjwt.get_unverified_header(token.access_token)["alg"] == alg

    for verify in (verify_with_pyjwt, verify_with_jose):
        claims = verify(served, token.access_token, alg)
        assert claims["sub"] == DEMO_USERS["bob"]["sub"]
        assert claims["tenant"] == TENANT
        assert claims["client_id"] == CLIENT_ID
        assert claims["exp"] == claims["iat"] + 300

    # Refresh, introspect and revoke with the same library.
    refreshed = oauth.refresh_token(token.refresh_token)
    assert verify_with_pyjwt(served, refreshed.access_token, alg)["sid"] == claims["sid"]
    assert oauth.introspect_token(refreshed.access_token)["active"] is True
    assert oauth.revoke_token(refreshed.refresh_token, token_type_hint="refresh_token")
    assert oauth.introspect_token(refreshed.access_token) == {"active": False}
    with pytest.raises(InvalidGrant):
        oauth.refresh_token(refreshed.refresh_token)


@pytest.mark.parametrize("alg, other", [("ES256", "RS256"), ("RS256", "ES256")])
def test_verifiers_refuse_what_they_must(serve, alg, other):
    """Controls: the independent verifiers do reject wrong algorithm, audience, issuer and
    a tampered payload, so their acceptance above means something."""
    served = serve(signing_alg=alg)
    token = served.bridge.join("bob")["access_token"]
    with pytest.raises(pyjwt.InvalidAlgorithmError):
        verify_with_pyjwt(served, token, alg, algorithms=[other])
    with pytest.raises(JWTError):
        verify_with_jose(served, token, alg, algorithms=[other])
    with pytest.raises(pyjwt.InvalidAudienceError):
        verify_with_pyjwt(served, token, alg, audience="another-api")
    with pytest.raises(JWTClaimsError):
        verify_with_jose(served, token, alg, audience="another-api")
    with pytest.raises(pyjwt.InvalidIssuerError):
        verify_with_pyjwt(served, token, alg, issuer="https://bridge.other-region.example")
    with pytest.raises(JWTClaimsError):
        verify_with_jose(served, token, alg, issuer="https://bridge.other-region.example")
    head, payload, signature = token.split(".")
    tampered = f"{head}.{payload[:-2]}{'AA' if payload[-2:] != 'AA' else 'BB'}.{signature}"
    with pytest.raises(pyjwt.PyJWTError):
        verify_with_pyjwt(served, tampered, alg)
    with pytest.raises(JWTError):
        verify_with_jose(served, tampered, alg)


def test_errors_reach_the_client_library_as_oauth_errors(serve, upstream):
    served = serve()
    oauth = served.oauth_client()
    code = served.bridge.current_code()
    wrong = ("1" if code[0] == "0" else "0") + code[1:]
    with pytest.raises(InvalidGrant) as caught:
        oauth.token_exchange(subject_token=upstream.issue_tokens("bob")["access_token"],
                             subject_token_type=ACCESS_TOKEN_TYPE, tenant=TENANT,
                             access_code=wrong)
    assert caught.value.error == "invalid_grant"
    assert served.bridge.secret not in str(caught.value.response.text)
