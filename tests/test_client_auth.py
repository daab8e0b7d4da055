"""One client authentication method per request (RFC 6749 sections 2.3 and 2.3.1; issue 10,
item 4), at every endpoint that authenticates clients: the token endpoint (exchange and
refresh), introspection and revocation. A request carrying two methods, or naming in
``client_id`` another client than its credentials, is ``401 invalid_client`` even when one
of the credentials is right, and nothing is minted, rotated, revoked or remembered. Basic
credentials that cannot be read (not base64, not UTF-8) are the same 401, never a 500."""

from __future__ import annotations

import base64
import secrets
import time
from urllib.parse import urlencode

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import func, select

from conftest import ACCESS_TOKEN_TYPE, CLIENT_ID, RS_CLIENT_ID, TENANT, TOKEN_EXCHANGE
from idp_bridge.services.operator import add_client
from idp_bridge.storage import models

KEY_CLIENT = "key-console"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture
def setup(bridge):
    """bob is a member; advisor-console (secret) and key-console (private_key_jwt) each hold
    a token family of his."""
    key = ECKey.generate_key("P-256", private=True, auto_kid=True)
    add_client(bridge.services.db, KEY_CLIENT, auth_method="private_key_jwt",
               jwks={"keys": [key.as_dict(private=False)]})

    def assertion(sub=KEY_CLIENT, jti=None):
        now = int(time.time())
        claims = {"iss": sub, "sub": sub, "aud": "http://127.0.0.1:8000/token",
                  "jti": secrets.token_urlsafe(12) if jti is None else jti,
                  "iat": now, "exp": now + 60}
        return jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key)

    tokens = {CLIENT_ID: bridge.join("bob")}
    response = send(bridge, "/token", exchange_body(bridge), pairs=[
        ("client_assertion_type", ASSERTION_TYPE), ("client_assertion", assertion())])
    assert response.status_code == 200, response.json
    tokens[KEY_CLIENT] = response.json
    return bridge, assertion, tokens


def exchange_body(bridge, tokens=None):
    """bob (a member) asks for a new token family: no access code needed."""
    return [("grant_type", TOKEN_EXCHANGE), ("subject_token", bridge.upstream_token("bob")),
            ("subject_token_type", ACCESS_TOKEN_TYPE), ("tenant", TENANT)]


ENDPOINTS = {
    # name: (path, body of a request that would succeed for the tokens' client)
    "exchange": ("/token", exchange_body),
    "refresh": ("/token", lambda b, t: [("grant_type", "refresh_token"),
                                       ("refresh_token", t["refresh_token"])]),
    "introspect": ("/introspect", lambda b, t: [("token", t["access_token"])]),
    "revoke": ("/revoke", lambda b, t: [("token", t["refresh_token"]),
                                        ("token_type_hint", "refresh_token")]),
}


def send(bridge, path, body, *, pairs=(), auth=None, query=(), headers=None):
    url = path + ("?" + urlencode(list(query)) if query else "")
    return bridge.client.post(url, data=urlencode(list(body) + list(pairs)), auth=auth,
                              headers=headers, content_type="application/x-www-form-urlencoded")


def basic(b):
    return (CLIENT_ID, b.secret)


# (case, credentials: (bridge, assertion) -> dict of pairs/auth/query/headers)
MIXED = [
    ("Basic and a body client_secret (both right)", lambda b, a: dict(
        auth=basic(b), pairs=[("client_id", CLIENT_ID), ("client_secret", b.secret)])),
    ("Basic and a body client_secret without client_id", lambda b, a: dict(
        auth=basic(b), pairs=[("client_secret", b.secret)])),
    ("Basic and a client_assertion", lambda b, a: dict(
        auth=basic(b), pairs=[("client_assertion_type", ASSERTION_TYPE),
                              ("client_assertion", a())])),
    ("Basic and a client_assertion_type alone", lambda b, a: dict(
        auth=basic(b), pairs=[("client_assertion_type", ASSERTION_TYPE)])),
    ("body client_secret and a client_assertion", lambda b, a: dict(
        pairs=[("client_id", CLIENT_ID), ("client_secret", b.secret),
               ("client_assertion_type", ASSERTION_TYPE), ("client_assertion", a())])),
    ("another Authorization scheme and a body client_secret", lambda b, a: dict(
        headers={"Authorization": "Bearer something"},
        pairs=[("client_id", CLIENT_ID), ("client_secret", b.secret)])),
    ("Basic, body client_id of another client", lambda b, a: dict(
        auth=basic(b), pairs=[("client_id", RS_CLIENT_ID)])),
    ("body secret, another client_id in the query", lambda b, a: dict(
        pairs=[("client_id", CLIENT_ID), ("client_secret", b.secret)],
        query=[("client_id", RS_CLIENT_ID)])),
    ("assertion, body client_id of another client", lambda b, a: dict(
        pairs=[("client_id", CLIENT_ID), ("client_assertion_type", ASSERTION_TYPE),
               ("client_assertion", a())])),
    ("client_secret in the request URI", lambda b, a: dict(
        auth=basic(b), query=[("client_secret", b.secret)])),
    ("client_assertion in the request URI", lambda b, a: dict(
        query=[("client_assertion_type", ASSERTION_TYPE), ("client_assertion", a())])),
    ("repeated client_secret", lambda b, a: dict(
        pairs=[("client_id", CLIENT_ID), ("client_secret", b.secret),
               ("client_secret", b.secret)])),
    ("repeated client_id", lambda b, a: dict(
        auth=basic(b), pairs=[("client_id", CLIENT_ID), ("client_id", CLIENT_ID)])),
]

#: Basic credentials that cannot be read are a failed authentication, never a 500.
MALFORMED = [
    ("Basic credentials not UTF-8", lambda b, a: dict(headers={
        "Authorization": "Basic " + base64.b64encode(b"\xff\xfe:x").decode()})),
    ("Basic credentials not base64", lambda b, a: dict(headers={"Authorization": "Basic !!!"})),
    ("Basic credentials without a colon", lambda b, a: dict(headers={
        "Authorization": "Basic " + base64.b64encode(CLIENT_ID.encode()).decode()})),
    ("Basic scheme without credentials", lambda b, a: dict(headers={"Authorization": "Basic"})),
]
REFUSED = MIXED + MALFORMED

# (case, client whose tokens the request uses, credentials)
SINGLE = [
    ("Basic", CLIENT_ID, lambda b, a: dict(auth=basic(b))),
    ("Basic with the same body client_id", CLIENT_ID, lambda b, a: dict(
        auth=basic(b), pairs=[("client_id", CLIENT_ID)])),
    ("body client_secret", CLIENT_ID, lambda b, a: dict(
        pairs=[("client_id", CLIENT_ID), ("client_secret", b.secret)])),
    ("client_assertion", KEY_CLIENT, lambda b, a: dict(
        pairs=[("client_assertion_type", ASSERTION_TYPE), ("client_assertion", a())])),
    ("client_assertion with the same client_id", KEY_CLIENT, lambda b, a: dict(
        pairs=[("client_id", KEY_CLIENT), ("client_assertion_type", ASSERTION_TYPE),
               ("client_assertion", a())])),
]

TABLES = (models.TokenFamily, models.RefreshToken, models.Membership, models.SeenJti,
          models.Revocation, models.AuditEvent)


def state(bridge) -> tuple:
    """Row counts, revoked families and rotated refresh tokens: what a request could change."""
    with bridge.services.db.read() as session:
        counts = [session.scalar(select(func.count()).select_from(t)) for t in TABLES]
        revoked = session.scalar(select(func.count()).select_from(models.TokenFamily)
                                 .where(models.TokenFamily.revoked_at.is_not(None)))
        rotated = session.scalar(select(func.count()).select_from(models.RefreshToken)
                                 .where(models.RefreshToken.rotated_at.is_not(None)))
    return (*counts, revoked, rotated)


@pytest.mark.db_independent
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
@pytest.mark.parametrize("credentials", [c[1] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_more_than_one_method_or_client_is_refused(setup, endpoint, credentials):
    bridge, assertion, tokens = setup
    path, body = ENDPOINTS[endpoint]
    before = state(bridge)
    response = send(bridge, path, body(bridge, tokens[CLIENT_ID]),
                    **credentials(bridge, assertion))
    assert response.status_code == 401, response.get_data(as_text=True)[:300]
    assert response.json["error"] == "invalid_client"
    assert response.headers["WWW-Authenticate"].startswith("Basic ")
    text = response.get_data(as_text=True) + str(response.headers)
    assert bridge.secret not in text and "access_token" not in response.json
    assert state(bridge) == before
    # The token family is untouched: still active, its refresh token still unused.
    assert bridge.introspect(tokens[CLIENT_ID]["access_token"]).json["active"] is True


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
@pytest.mark.parametrize("owner, credentials", [c[1:] for c in SINGLE], ids=[c[0] for c in SINGLE])
def test_one_method_is_accepted(setup, endpoint, owner, credentials):
    bridge, assertion, tokens = setup
    path, body = ENDPOINTS[endpoint]
    response = send(bridge, path, body(bridge, tokens[owner]), **credentials(bridge, assertion))
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    if endpoint == "introspect":
        assert response.json["active"] is True and response.json["client_id"] == owner
    elif endpoint != "revoke":
        assert response.json["access_token"]


def _counts(bridge):
    with bridge.services.db.read() as session:
        return {model.__name__: session.scalar(select(func.count()).select_from(model))
                for model in (models.TokenFamily, models.RefreshToken, models.SeenJti)}


@pytest.mark.parametrize("jti", ["a\x00b", "a|b", 12345, ["x"], "", "j" * 256],
                         ids=["nul", "pipe", "number", "list", "empty", "too-long"])
def test_client_assertion_jti_is_a_string_remembered_once(setup, jti):
    """A jti is a string (RFC 7519 4.1.7) remembered as a structured (client, jti) pair: a
    second use is refused; a jti that is not a bounded string is refused at once. Refused
    requests mint and remember nothing."""
    bridge, assertion, _ = setup
    token = assertion(jti=jti)
    pairs = [("client_assertion_type", ASSERTION_TYPE), ("client_assertion", token)]
    if isinstance(jti, str) and 0 < len(jti) <= 255:
        first = send(bridge, "/token", exchange_body(bridge), pairs=pairs)
        assert first.status_code == 200, first.json
    before = _counts(bridge)
    again = send(bridge, "/token", exchange_body(bridge), pairs=pairs)
    # Failed assertions are 400 (RFC 6749 5.2 demands 401 only for the Authorization header).
    assert again.status_code == 400, again.json
    assert again.json["error"] == "invalid_client"
    assert _counts(bridge) == before
