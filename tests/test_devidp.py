"""Tests for the development OpenID provider.

Covers the mode guard, OIDC Discovery, the JWKS, the RFC 6749 §4.1 code flow
with RFC 7636 PKCE (S256) and its error paths, and the Keycloak-shaped claims
of the seeded demo users.  Flask's test client only; no server is started.
"""
import base64
import hashlib
import secrets
from urllib.parse import parse_qs, urlsplit

import pytest
from joserfc import jwk, jwt

from idp_bridge.devidp import DEMO_USERS, DevProvider, DevProviderRefused

ISSUER = "http://127.0.0.1:8081"
REDIRECT = "http://127.0.0.1:5000/callback"


@pytest.fixture(scope="module")
def provider():
    return DevProvider(ISSUER, mode="test")


@pytest.fixture
def client(provider):
    return provider.create_app().test_client()


def pkce():
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authz_params(challenge, **overrides):
    params = {"response_type": "code", "client_id": "advisor-console", "redirect_uri": REDIRECT,
              "scope": "openid profile email", "state": "st-123", "nonce": "n-456",
              "code_challenge": challenge, "code_challenge_method": "S256"}
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def query_of(response):
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}


def get_code(client, challenge, username="bob"):
    resp = client.get("/authorize", query_string=authz_params(challenge))
    assert resp.status_code == 200 and b"Development sign-in" in resp.data
    resp = client.post("/authorize", data={**authz_params(challenge), "username": username})
    assert resp.status_code in (302, 303)
    assert resp.headers["Location"].startswith(REDIRECT + "?")
    q = query_of(resp)
    assert q["state"] == "st-123" and q["iss"] == ISSUER
    return q["code"]


def exchange(client, code, verifier, **overrides):
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "code_verifier": verifier, "client_id": "advisor-console", **overrides}
    return client.post("/token", data=data)


def verify(client, token):
    keys = jwk.KeySet.import_key_set(client.get("/jwks").get_json())
    decoded = jwt.decode(token, keys)
    jwt.JWTClaimsRegistry(iss={"essential": True, "value": ISSUER}, exp={"essential": True}).validate(
        decoded.claims)
    return decoded


@pytest.mark.parametrize("mode", ["production", "prod", "", "Demo", None])
def test_refuses_outside_demo_or_test(mode):
    with pytest.raises(DevProviderRefused, match="only in demo or test mode"):
        DevProvider(ISSUER, mode=mode)


def test_demo_mode_and_es256_are_accepted():
    p = DevProvider(ISSUER, mode="demo", alg="ES256")
    decoded = jwt.decode(p.issue_tokens("anna")["access_token"], jwk.KeySet.import_key_set(p.public_jwks()))
    assert decoded.header["alg"] == "ES256"


def test_discovery(client):
    resp = client.get("/.well-known/openid-configuration")
    doc = resp.get_json()
    assert resp.status_code == 200
    assert doc["issuer"] == ISSUER
    assert doc["authorization_endpoint"] == f"{ISSUER}/authorize"
    assert doc["token_endpoint"] == f"{ISSUER}/token"
    assert doc["jwks_uri"] == f"{ISSUER}/jwks"
    assert doc["userinfo_endpoint"] == f"{ISSUER}/userinfo"
    assert doc["end_session_endpoint"] == f"{ISSUER}/logout"
    assert doc["response_types_supported"] == ["code"]
    assert doc["grant_types_supported"] == ["authorization_code"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert doc["subject_types_supported"] == ["public"]
    assert set(doc["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic", "client_secret_post", "none"}


def test_issuer_path_is_honoured():
    issuer = "http://localhost:8081/realms/dev"
    c = DevProvider(issuer, mode="test").create_app().test_client()
    doc = c.get("/realms/dev/.well-known/openid-configuration").get_json()
    assert doc["issuer"] == issuer and doc["jwks_uri"] == f"{issuer}/jwks"
    assert c.get("/realms/dev/jwks").status_code == 200


def test_jwks_verifies_access_token(client, provider):
    resp = client.get("/jwks")
    assert resp.headers["Cache-Control"] == "max-age=300"
    (key,) = resp.get_json()["keys"]
    assert "d" not in key and key["kid"] == provider.kid
    decoded = verify(client, provider.issue_tokens("bob")["access_token"])
    assert decoded.header == {"alg": "RS256", "kid": provider.kid, "typ": "JWT"}
    c = decoded.claims
    assert c["aud"] == ["idp-bridge", "account"] and c["azp"] == "advisor-console"
    assert c["typ"] == "Bearer" and c["acr"] == "1" and c["amr"] == ["pwd"]
    assert c["scope"] == "openid profile email" and c["preferred_username"] == "bob"
    for claim in ("jti", "iat", "auth_time", "sid", "name", "email"):
        assert c[claim]


def test_full_code_flow_with_pkce(client, provider):
    verifier, challenge = pkce()
    code = get_code(client, challenge, "anna")
    resp = exchange(client, code, verifier)
    assert resp.status_code == 200, resp.get_json()
    assert resp.headers["Cache-Control"] == "no-store"
    body = resp.get_json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    assert body["scope"] == "openid profile email"
    id_claims = verify(client, body["id_token"]).claims
    access = verify(client, body["access_token"]).claims
    assert id_claims["nonce"] == "n-456"
    assert id_claims["aud"] == "advisor-console" and id_claims["typ"] == "ID"
    assert id_claims["sub"] == access["sub"] == DEMO_USERS["anna"]["sub"]
    assert id_claims["sid"] == access["sid"]  # one login, one session id
    userinfo = client.get("/userinfo", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert userinfo.status_code == 200
    assert userinfo.get_json()["groups"] == ["/tenants/10042/admins"]
    # An ID token is not accepted as an access token.
    assert client.get("/userinfo", headers={"Authorization": f"Bearer {body['id_token']}"}).status_code == 401


def test_auto_login_skips_page(client):
    verifier, challenge = pkce()
    resp = client.get("/authorize", query_string={**authz_params(challenge), "login_hint": "carol", "auto": "1"})
    assert resp.status_code == 302
    tokens = exchange(client, query_of(resp)["code"], verifier).get_json()
    assert verify(client, tokens["access_token"]).claims["preferred_username"] == "carol"


def test_wrong_code_verifier_is_invalid_grant(client):
    _, challenge = pkce()
    code = get_code(client, challenge)
    resp = exchange(client, code, pkce()[0])
    assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_grant"


def test_code_reuse_is_invalid_grant(client):
    verifier, challenge = pkce()
    code = get_code(client, challenge)
    assert exchange(client, code, verifier).status_code == 200
    resp = exchange(client, code, verifier)
    assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_grant"


def test_confidential_client_authentication():
    p = DevProvider(ISSUER, mode="test", clients={"bridge": {"redirect_uris": [REDIRECT], "secret": "s3cr%t"}})
    c = p.create_app().test_client()
    verifier, challenge = pkce()
    resp = c.get("/authorize", query_string={**authz_params(challenge, client_id="bridge"),
                                             "login_hint": "bob", "auto": "1"})
    code = query_of(resp)["code"]
    bad = exchange(c, code, verifier, client_id="bridge", client_secret="nope")
    assert bad.status_code == 401 and bad.get_json()["error"] == "invalid_client"
    # The failed client authentication did not spend the code; Basic credentials are form-encoded.
    basic = base64.b64encode(b"bridge:s3cr%25t").decode()
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    ok = c.post("/token", data=data, headers={"Authorization": f"Basic {basic}"})
    assert ok.status_code == 200, ok.get_json()


def test_unknown_client_gets_400_page_without_redirect(client):
    _, challenge = pkce()
    resp = client.get("/authorize", query_string=authz_params(challenge, client_id="evil-app"))
    assert resp.status_code == 400 and "Location" not in resp.headers


@pytest.mark.parametrize("uri", ["https://evil.example/cb", "http://127.0.0.1.evil.example/cb",
                                 "http://localhost@evil.example/cb", "http://localhost\\@evil.example/",
                                 "javascript:alert(1)", "http://localhost:5000/cb#frag"])
def test_non_local_redirect_uri_rejected(client, uri):
    _, challenge = pkce()
    resp = client.get("/authorize", query_string=authz_params(challenge, redirect_uri=uri))
    assert resp.status_code == 400 and "Location" not in resp.headers


def test_missing_pkce_redirects_with_error(client):
    resp = client.get("/authorize", query_string=authz_params(None, code_challenge_method=None))
    assert resp.status_code == 302
    q = query_of(resp)
    assert q["error"] == "invalid_request" and q["state"] == "st-123"
    resp = client.get("/authorize", query_string=authz_params(pkce()[1], response_type="token"))
    assert query_of(resp)["error"] == "unsupported_response_type"


def test_sign_in_page_escapes_parameters(client):
    resp = client.get("/authorize", query_string=authz_params(pkce()[1], state='"><script>x</script>'))
    assert resp.status_code == 200 and b"<script>x" not in resp.data


def test_logout(client, provider):
    hint = provider.issue_tokens("bob")["id_token"]
    resp = client.get("/logout", query_string={"post_logout_redirect_uri": "http://localhost:5000/bye",
                                               "id_token_hint": hint, "state": "s"})
    assert resp.status_code == 302 and resp.headers["Location"] == "http://localhost:5000/bye?state=s"
    resp = client.get("/logout", query_string={"post_logout_redirect_uri": "https://evil.example/"})
    assert resp.status_code == 400 and "Location" not in resp.headers
    assert b"signed out" in client.get("/logout").data


def test_dev_token_unknown_user_is_404(client):
    resp = client.post("/dev/token", data={"username": "mallory"})
    assert resp.status_code == 404 and resp.get_json()["error"] == "unknown_user"


def test_dev_token_acr_amr(client):
    resp = client.post("/dev/token", data={"username": "sam", "acr": "2", "amr": "pwd, otp"})
    claims = verify(client, resp.get_json()["access_token"]).claims
    assert claims["acr"] == "2" and claims["amr"] == ["pwd", "otp"]


@pytest.mark.parametrize("username, roles, groups", [
    ("anna", [], ["/tenants/10042/admins"]),
    ("bob", ["advisor"], []),
    ("carol", ["advisor"], []),
    ("sam", ["support-admin"], []),
    ("eve", [], []),
])
def test_seeded_users_claims(client, provider, username, roles, groups):
    tokens = provider.issue_tokens(username)
    for token in (tokens["access_token"], tokens["id_token"]):
        claims = verify(client, token).claims
        assert claims["realm_access"] == {"roles": roles}
        assert claims["groups"] == groups
        assert claims["sub"] == DEMO_USERS[username]["sub"]


def test_sid_is_per_login(provider):
    a, b = provider.issue_tokens("bob"), provider.issue_tokens("bob")
    keys = jwk.KeySet.import_key_set(provider.public_jwks())
    sid = lambda t: jwt.decode(t, keys).claims["sid"]  # noqa: E731
    assert sid(a["access_token"]) == sid(a["id_token"]) != sid(b["access_token"])
