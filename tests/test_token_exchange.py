"""Token Exchange grant (RFC 8693) at ``/token``: DESIGN.md sections 5, 6, 7 and 9."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import socket
import threading
import time
from datetime import timedelta

import pytest
from joserfc import jws, jwt
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import create_engine

from conftest import (
    ACCESS_TOKEN_TYPE,
    CLIENT_ID,
    ID_TOKEN_TYPE,
    OTHER_TENANT,
    RS_CLIENT_ID,
    TENANT,
    TOKEN_EXCHANGE,
    Bridge,
    active_memberships,
    audit_events,
    build_app,
    post_form,
    verify_access_token,
    wrong_code,
)
from idp_bridge.app import services
from idp_bridge.devidp import DEMO_USERS
from idp_bridge.storage.db import StorageUnavailable, utcnow
from idp_bridge.storage.models import Membership
from scopes.catalog import advisor_scopes

BOB = DEMO_USERS["bob"]["sub"]
CAROL = DEMO_USERS["carol"]["sub"]
PROFILE = " ".join(advisor_scopes())


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def payload_of(token: str) -> dict:
    return json.loads(jws.extract_compact(token.encode()).payload)


def compact(header: dict, claims: dict, signature: bytes = b"") -> str:
    return ".".join([b64url(json.dumps(header).encode()), b64url(json.dumps(claims).encode()),
                     b64url(signature)])


# --- forged and otherwise unacceptable subject tokens -------------------------------------

def forged_signature(b: Bridge) -> str:
    """Genuine claims, signed by another key that claims the upstream's kid."""
    claims = payload_of(b.upstream_token("bob"))
    other = RSAKey.generate_key(2048, private=True)
    return jwt.encode({"alg": "RS256", "kid": b.upstream.kid, "typ": "JWT"}, claims, other)


def forged_without_kid(b: Bridge) -> str:
    claims = payload_of(b.upstream_token("bob"))
    other = RSAKey.generate_key(2048, private=True)
    return jwt.encode({"alg": "RS256", "typ": "JWT"}, claims, other)


def alg_none(b: Bridge) -> str:
    claims = payload_of(b.upstream_token("bob"))
    return compact({"alg": "none", "kid": b.upstream.kid, "typ": "JWT"}, claims)


def hs256_with_public_key(b: Bridge) -> str:
    """The classic key confusion: HMAC keyed with the upstream's published public key (PEM)."""
    public = RSAKey.import_key(b.upstream.public_jwks()["keys"][0]).as_pem(private=False)
    claims = payload_of(b.upstream_token("bob"))
    header = {"alg": "HS256", "kid": b.upstream.kid, "typ": "JWT"}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def token_of(user: str, **kwargs):
    return lambda b: b.upstream_token(user, **kwargs)


def current(b: Bridge) -> str:
    return b.current_code()


def a_wrong_code(b: Bridge) -> str:
    return wrong_code(b.current_code())


def exchange_request(b: Bridge, changes: dict) -> list[tuple[str, str]]:
    """A request that would succeed (bob redeems the current code), with ``changes``:
    None removes a parameter, a list repeats it, a callable is called with the bridge."""
    form = {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": token_of("bob"),
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "tenant": TENANT,
        "access_code": current,
    }
    form.update({k: v for k, v in changes.items() if not k.startswith("_")})
    pairs = []
    for name, value in form.items():
        if value is None:
            continue
        for item in value if isinstance(value, list) else [value]:
            pairs.append((name, item(b) if callable(item) else item))
    return pairs


def assert_clean_error(response, bridge: Bridge) -> None:
    text = response.get_data(as_text=True)
    assert response.is_json, text[:200]
    assert "Traceback" not in text and "File \"" not in text
    assert bridge.secret not in text and bridge.rs_secret not in text
    assert "access_token" not in response.json and "refresh_token" not in response.json


# --- success ------------------------------------------------------------------------------

def test_exchange_response_per_rfc8693(bridge, upstream):
    issued = upstream.issue_tokens("bob", acr="2", amr=["pwd", "otp"])
    upstream_claims = payload_of(issued["access_token"])
    response = bridge.exchange("bob", code=bridge.current_code(),
                               subject_token=issued["access_token"], reason="Ticket 4711")
    assert response.status_code == 200, response.json
    body = response.json
    assert set(body) == {"access_token", "issued_token_type", "token_type", "expires_in",
                         "scope", "refresh_token"}
    assert body["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["scope"] == PROFILE
    assert isinstance(body["refresh_token"], str) and len(body["refresh_token"]) >= 32
    assert body["refresh_token"] != body["access_token"]
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"

    header, claims = verify_access_token(bridge, body["access_token"])
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "ES256"
    assert header["kid"] in {k["kid"] for k in bridge.client.get("/jwks").json["keys"]}
    membership = active_memberships(bridge)[0]
    assert claims["iss"] == "http://127.0.0.1:8000"
    assert claims["sub"] == BOB == upstream_claims["sub"]
    assert claims["aud"] == "konfipay-api"
    assert claims["client_id"] == CLIENT_ID
    assert claims["tenant"] == TENANT
    assert claims["scope"] == PROFILE
    assert set(claims["scope"].split()) == set(advisor_scopes())
    assert claims["grant_id"] == membership.grant_id
    assert claims["sid"] and claims["sid"] != membership.grant_id
    assert claims["membership"] == "temporary"
    assert claims["jti"]
    assert claims["exp"] == claims["iat"] + 300
    assert claims["auth_time"] == upstream_claims["auth_time"]
    assert claims["acr"] == "2"
    assert claims["amr"] == ["pwd", "otp"]


def test_reason_is_stored_and_shown_on_the_memberships_api(bridge):
    bridge.join("bob", reason="  Ticket 4711: Kontoauszug fehlt  ")
    items = bridge.api("get", f"/api/tenants/{TENANT}/memberships").json["memberships"]
    assert [(m["advisor"], m["kind"], m["reason"]) for m in items] == [
        (BOB, "temporary", "Ticket 4711: Kontoauszug fehlt")]


def test_member_exchanges_again_without_code_in_the_same_grant(bridge):
    first = bridge.join("bob")
    code = bridge.current_code()
    second = bridge.exchange("bob")
    assert second.status_code == 200, second.json
    _, one = verify_access_token(bridge, first["access_token"])
    _, two = verify_access_token(bridge, second.json["access_token"])
    assert two["grant_id"] == one["grant_id"]
    assert two["sid"] != one["sid"]
    assert two["jti"] != one["jti"]
    assert second.json["refresh_token"] != first["refresh_token"]
    assert len(active_memberships(bridge)) == 1
    assert bridge.current_code() == code  # no code was used, none rotated


def test_code_rotates_when_redeemed(bridge):
    code = bridge.current_code()
    assert bridge.exchange("bob", code=code).status_code == 200
    assert bridge.current_code() != code
    response = bridge.exchange("carol", code=code)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_grant"
    assert [m.advisor_subject for m in active_memberships(bridge)] == [BOB]
    assert bridge.exchange("carol", code=bridge.current_code()).status_code == 200


@pytest.mark.parametrize("code_input", ["{code}", "{lower}", "{plain}", " {spaced} "])
def test_code_input_is_forgiving(bridge, code_input):
    code = bridge.current_code()
    text = code_input.format(code=code, lower=code.lower(), plain=code.replace("-", ""),
                             spaced=code.replace("-", " "))
    response = bridge.exchange("bob", code=text)
    assert response.status_code == 200, response.json


@pytest.mark.parametrize("requested, granted", [
    ("payments:read ebics:read", "ebics:read payments:read"),
    ("evaluation:write", "evaluation:write"),
    ("tenant:read tenant:read", "tenant:read"),
])
def test_scope_narrows_the_token(bridge, requested, granted):
    body = bridge.join("bob", scope=requested)
    assert body["scope"] == granted
    _, claims = verify_access_token(bridge, body["access_token"])
    assert claims["scope"] == granted
    # The membership keeps the whole profile: the next exchange gets it all.
    again = bridge.exchange("bob")
    assert again.json["scope"] == PROFILE


@pytest.mark.parametrize("target", [
    {"audience": "konfipay-api"},
    {"resource": "https://api.konfipay.example/"},
    {"audience": "konfipay-api", "resource": "https://api.konfipay.example/"},
])
def test_audience_and_resource_are_accepted(bridge, target):
    body = bridge.join("bob", **target)
    _, claims = verify_access_token(bridge, body["access_token"])
    assert claims["aud"] == "konfipay-api"


def test_second_audience_is_served_and_two_at_once_refused(bridge_with):
    b = bridge_with(audiences=("konfipay-api", "reports-api"))
    both = post_form(b.client, "/token", exchange_request(
        b, {"audience": ["konfipay-api", "reports-api"]}), auth=b.auth())
    assert both.status_code == 400
    assert both.json["error"] == "invalid_target"
    assert active_memberships(b) == []
    body = b.join("bob", audience="reports-api")
    assert verify_access_token(b, body["access_token"])[1]["aud"] == "reports-api"


# --- the ID token as subject ----------------------------------------------------------------

@pytest.fixture
def id_token_bridge(tmp_path, settings, upstream, new_database_url):
    """The dev provider's ID tokens name the client (advisor-console) as audience."""
    app = build_app(settings.replace(
        upstream_audiences=("idp-bridge", "advisor-console"),
        database_url=new_database_url()))
    yield Bridge(app, app.test_client(), upstream)
    services(app).db.dispose()


def test_id_token_with_foreign_audience_is_refused_by_default(bridge, upstream):
    id_token = upstream.issue_tokens("bob")["id_token"]
    response = bridge.exchange("bob", code=bridge.current_code(), subject_token=id_token,
                               subject_token_type=ID_TOKEN_TYPE)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    assert "audience" in response.json["error_description"]
    assert active_memberships(bridge) == []


def test_id_token_accepted_when_its_audience_is_configured(id_token_bridge, upstream):
    b = id_token_bridge
    issued = upstream.issue_tokens("bob", acr="2")
    response = b.exchange("bob", code=b.current_code(), subject_token=issued["id_token"],
                          subject_token_type=ID_TOKEN_TYPE)
    assert response.status_code == 200, response.json
    _, claims = verify_access_token(b, response.json["access_token"])
    assert claims["sub"] == BOB
    assert claims["acr"] == "2"


@pytest.mark.parametrize("which, declared", [
    ("id_token", ACCESS_TOKEN_TYPE),      # an ID token must not pass as an access token
    ("access_token", ID_TOKEN_TYPE),      # nor the other way round
])
def test_token_type_must_match_the_token(id_token_bridge, upstream, which, declared):
    b = id_token_bridge
    token = upstream.issue_tokens("bob")[which]
    response = b.exchange("bob", code=b.current_code(), subject_token=token,
                          subject_token_type=declared)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    assert active_memberships(b) == []


# --- rejections: a clear error, and nothing changes ---------------------------------------

LONG = "x" * 201
REJECTIONS = [
    # (case, changes to a request that would succeed, status, error)
    ("missing subject_token", {"subject_token": None}, 400, "invalid_request"),
    ("empty subject_token", {"subject_token": ""}, 400, "invalid_request"),
    ("garbage subject_token", {"subject_token": "not-a-jwt"}, 400, "invalid_request"),
    ("missing subject_token_type", {"subject_token_type": None}, 400, "invalid_request"),
    ("bad subject_token_type", {"subject_token_type": "urn:ietf:params:oauth:token-type:jwt"},
     400, "invalid_request"),
    ("missing tenant", {"tenant": None}, 400, "invalid_request"),
    ("unknown tenant", {"tenant": "99999"}, 400, "invalid_request"),
    ("wrong code", {"access_code": a_wrong_code}, 400, "invalid_grant"),
    ("malformed code: short", {"access_code": "ABC"}, 400, "invalid_request"),
    ("malformed code: letters outside the alphabet", {"access_code": "UUUU-UUUU"},
     400, "invalid_request"),
    ("no code for a non-member", {"access_code": None}, 400, "invalid_grant"),
    ("expired subject token", {"subject_token": token_of("bob", lifetime=-120)},
     400, "invalid_request"),
    ("forged signature, same kid", {"subject_token": forged_signature}, 400, "invalid_request"),
    ("forged signature, no kid", {"subject_token": forged_without_kid}, 400, "invalid_request"),
    ("signature stripped", {"subject_token": lambda b: b.upstream_token("bob").rsplit(".", 1)[0]
                            + "."}, 400, "invalid_request"),
    ("wrong issuer", {"subject_token": token_of("bob", extra_claims={
        "iss": "https://evil.example/realms/konfipay"})}, 400, "invalid_request"),
    ("wrong audience", {"subject_token": token_of("bob", extra_claims={
        "aud": ["account", "another-service"]})}, 400, "invalid_request"),
    ("no audience", {"subject_token": token_of("bob", extra_claims={"aud": []})},
     400, "invalid_request"),
    ("alg none", {"subject_token": alg_none}, 400, "invalid_request"),
    ("HS256 keyed with the public key", {"subject_token": hs256_with_public_key},
     400, "invalid_request"),
    ("not an advisor: eve", {"subject_token": token_of("eve")}, 400, "invalid_grant"),
    ("not an advisor: tenant admin anna", {"subject_token": token_of("anna")},
     400, "invalid_grant"),
    ("not an advisor: support admin sam", {"subject_token": token_of("sam")},
     400, "invalid_grant"),
    ("not yet valid", {"subject_token": token_of("bob", extra_claims={
        "nbf": int(time.time()) + 3600})}, 400, "invalid_request"),
    ("issued in the future", {"subject_token": token_of("bob", extra_claims={
        "iat": int(time.time()) + 3600})}, 400, "invalid_request"),
    ("no expiry", {"subject_token": token_of("bob", extra_claims={"exp": None})},
     400, "invalid_request"),
    ("no subject", {"subject_token": token_of("bob", extra_claims={"sub": ""})},
     400, "invalid_request"),
    ("scope escalation", {"scope": "ebics:write"}, 400, "invalid_scope"),
    ("scope escalation among allowed", {"scope": "ebics:read payments:write"},
     400, "invalid_scope"),
    ("unknown scope", {"scope": "admin:everything"}, 400, "invalid_scope"),
    ("unknown audience", {"audience": "other-api"}, 400, "invalid_target"),
    ("unknown resource", {"resource": "https://evil.example/"}, 400, "invalid_target"),
    ("two audiences", {"audience": ["konfipay-api", "other-api"]}, 400, "invalid_target"),
    ("actor_token", {"actor_token": token_of("carol"), "actor_token_type": ACCESS_TOKEN_TYPE},
     400, "invalid_request"),
    ("repeated tenant", {"tenant": [TENANT, OTHER_TENANT]}, 400, "invalid_request"),
    ("repeated access_code", {"access_code": [current, current]}, 400, "invalid_request"),
    ("repeated subject_token", {"subject_token": [token_of("bob"), token_of("carol")]},
     400, "invalid_request"),
    ("requested refresh_token type", {
        "requested_token_type": "urn:ietf:params:oauth:token-type:refresh_token"},
     400, "invalid_request"),
    ("requested id_token type", {"requested_token_type": ID_TOKEN_TYPE}, 400, "invalid_request"),
    ("reason longer than 200", {"reason": LONG}, 400, "invalid_request"),
    ("reason with control characters", {"reason": "Ticket\x004711"}, 400, "invalid_request"),
    ("oversized request", {"reason": "x" * (65 * 1024)}, 413, "invalid_request"),
    ("wrong client secret", {"_auth": lambda b: (CLIENT_ID, "w" * 43)}, 401, "invalid_client"),
    ("unknown client", {"_auth": lambda b: ("no-such-client", b.secret)}, 401,
     "invalid_client"),
    ("no client authentication", {"_auth": lambda b: None}, 401, "invalid_client"),
    ("client without the exchange role", {"_auth": lambda b: (RS_CLIENT_ID, b.rs_secret)},
     400, "unauthorized_client"),
    ("unsupported grant_type", {"grant_type": "password"}, 400, "unsupported_grant_type"),
]


@pytest.mark.parametrize("changes, status, error",
                         [case[1:] for case in REJECTIONS], ids=[case[0] for case in REJECTIONS])
def test_rejected_and_nothing_changes(bridge, changes, status, error):
    code = bridge.current_code()
    auth = changes["_auth"](bridge) if "_auth" in changes else bridge.auth()
    response = post_form(bridge.client, "/token", exchange_request(bridge, changes), auth=auth)
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.json["error"] == error
    assert_clean_error(response, bridge)
    assert active_memberships(bridge) == []
    assert bridge.current_code() == code
    assert audit_events(bridge, "token.issued") == []
    assert audit_events(bridge, "membership.created") == []


@pytest.mark.parametrize("who", ["wrong secret", "unknown client"])
def test_client_auth_errors_name_no_secret(bridge, who):
    """Neither the registered secret nor a presented wrong one is echoed back."""
    presented = "presented-wrong-secret-" + "q" * 20
    auth = (CLIENT_ID, presented) if who == "wrong secret" else ("no-such-client", presented)
    response = post_form(bridge.client, "/token", exchange_request(bridge, {}), auth=auth)
    assert response.status_code == 401
    assert response.json["error"] == "invalid_client"
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    text = response.get_data(as_text=True) + str(response.headers)
    assert presented not in text and bridge.secret not in text


def test_client_secret_post_is_accepted(bridge):
    pairs = exchange_request(bridge, {}) + [("client_id", CLIENT_ID),
                                            ("client_secret", bridge.secret)]
    response = post_form(bridge.client, "/token", pairs)
    assert response.status_code == 200, response.json
    assert verify_access_token(bridge, response.json["access_token"])[1]["client_id"] == CLIENT_ID


ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture
def key_client(bridge):
    """A client authenticating with private_key_jwt (RFC 7523); returns a signer of assertions."""
    from idp_bridge.services.operator import add_client

    key = ECKey.generate_key("P-256", private=True, auto_kid=True)
    add_client(bridge.services.db, "key-console", auth_method="private_key_jwt",
               jwks={"keys": [key.as_dict(private=False)]})

    def assertion(signing_key=key, header=None, **claims):
        now = int(time.time())
        body = {"iss": "key-console", "sub": "key-console", "aud": "http://127.0.0.1:8000/token",
                "jti": secrets.token_urlsafe(12), "iat": now, "exp": now + 60, **claims}
        return jwt.encode({"alg": "ES256", "kid": key.kid, **(header or {})}, body, signing_key)

    return assertion


def test_private_key_jwt_client(bridge, key_client):
    assertion = key_client()
    pairs = exchange_request(bridge, {}) + [("client_assertion_type", ASSERTION_TYPE),
                                            ("client_assertion", assertion)]
    response = post_form(bridge.client, "/token", pairs)
    assert response.status_code == 200, response.json
    assert verify_access_token(bridge, response.json["access_token"])[1]["client_id"] == \
        "key-console"
    # The same assertion again is a replay (jti). Failed assertions are answered 400: RFC 6749
    # section 5.2 demands 401 only when the client used the Authorization header.
    response = post_form(bridge.client, "/token", exchange_request(bridge, {"access_code": None})
                         + [("client_assertion_type", ASSERTION_TYPE),
                            ("client_assertion", assertion)])
    assert response.status_code == 400
    assert response.json["error"] == "invalid_client"


@pytest.mark.parametrize("make", [
    lambda sign: sign(aud="https://bridge.other-region.example/token"),
    lambda sign: sign(exp=int(time.time()) - 120),
    lambda sign: sign(iss="advisor-console"),
    lambda sign: sign(sub="advisor-console", iss="advisor-console"),
    lambda sign: sign(signing_key=ECKey.generate_key("P-256", private=True)),
    lambda sign: compact({"alg": "none"}, payload_of(sign())),
    lambda sign: sign(jti=None),
    lambda sign: sign(sub="no-such-client", iss="no-such-client"),
], ids=["wrong audience", "expired", "iss differs from sub", "a secret client's id",
        "foreign key", "alg none", "no jti", "unknown client"])
def test_private_key_jwt_rejections(bridge, key_client, make):
    pairs = exchange_request(bridge, {}) + [("client_assertion_type", ASSERTION_TYPE),
                                            ("client_assertion", make(key_client))]
    response = post_form(bridge.client, "/token", pairs)
    assert response.status_code == 400, response.json
    assert response.json["error"] == "invalid_client"
    assert active_memberships(bridge) == []


def test_private_key_jwt_client_has_no_secret(bridge, key_client):
    response = post_form(bridge.client, "/token", exchange_request(bridge, {}),
                         auth=("key-console", "s" * 43))
    assert response.status_code == 401
    assert response.json["error"] == "invalid_client"


def test_permanent_advisor_exchanges_without_code(bridge):
    response = bridge.api("put", f"/api/tenants/{TENANT}/permanent-advisors/{BOB}", user="sam")
    assert response.status_code == 201, response.json
    code = bridge.current_code()
    response = bridge.exchange("bob")
    assert response.status_code == 200, response.json
    _, claims = verify_access_token(bridge, response.json["access_token"])
    assert claims["membership"] == "permanent"
    assert claims["scope"] == PROFILE  # same rights as a temporary advisor
    assert bridge.current_code() == code


def test_own_access_token_is_no_subject_token(bridge):
    """Tokens of the bridge cannot be exchanged again (only the upstream issues subjects)."""
    body = bridge.join("bob")
    response = bridge.exchange("carol", code=bridge.current_code(),
                               subject_token=body["access_token"])
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    assert [m.advisor_subject for m in active_memberships(bridge)] == [BOB]


def test_membership_in_one_tenant_grants_nothing_in_another(bridge):
    bridge.join("bob")
    other_code = bridge._code_direct(OTHER_TENANT)
    response = bridge.exchange("bob", tenant=OTHER_TENANT)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_grant"
    # Tenant A's code does not open tenant B either.
    response = bridge.exchange("bob", tenant=OTHER_TENANT, code=bridge.current_code())
    assert response.status_code == 400
    assert response.json["error"] == "invalid_grant"
    assert active_memberships(bridge, OTHER_TENANT) == []
    assert bridge._code_direct(OTHER_TENANT) == other_code
    assert bridge.exchange("bob").status_code == 200  # still a member of A


def test_expired_membership_needs_a_new_code(bridge):
    bridge.join("bob")
    with bridge.services.db.transaction() as session:
        row = session.get(Membership, bridge.membership_id())
        row.expires_at = utcnow() - timedelta(seconds=1)
    response = bridge.exchange("bob")
    assert response.status_code == 400
    assert response.json["error"] == "invalid_grant"
    assert active_memberships(bridge) == []
    ended = audit_events(bridge, "membership.ended")
    assert [e["detail"]["reason"] for e in ended] == ["expired"]
    body = bridge.join("bob")  # a new code makes a new grant
    assert verify_access_token(bridge, body["access_token"])[1]["grant_id"] != \
        ended[0]["detail"]["grant_id"]


def test_one_code_opens_the_tenant_once_under_concurrency(bridge):
    """Two advisors redeem the same code at once: exactly one gets in, whatever the timing."""
    code = bridge.current_code()
    tokens = {user: bridge.upstream_token(user) for user in ("bob", "carol")}
    barrier = threading.Barrier(2)
    results = {}

    def redeem(user):
        barrier.wait()
        results[user] = bridge.exchange(user, code=code, subject_token=tokens[user])

    threads = [threading.Thread(target=redeem, args=(user,)) for user in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    statuses = sorted(r.status_code for r in results.values())
    assert statuses == [200, 400], {u: r.json for u, r in results.items()}
    loser = next(r for r in results.values() if r.status_code == 400)
    assert loser.json["error"] == "invalid_grant"
    assert len(active_memberships(bridge)) == 1


def test_disabled_client_is_refused(bridge):
    from idp_bridge.services.operator import add_client
    from idp_bridge.storage.models import Client

    secret = add_client(bridge.services.db, "retired-console")
    with bridge.services.db.transaction() as session:
        session.get(Client, "retired-console").disabled_at = utcnow()
    response = post_form(bridge.client, "/token", exchange_request(bridge, {}),
                         auth=("retired-console", secret))
    assert response.status_code == 401
    assert response.json["error"] == "invalid_client"
    assert active_memberships(bridge) == []


def test_permanent_assignment_supersedes_the_temporary_grant(bridge):
    temporary = bridge.join("bob")
    response = bridge.api("put", f"/api/tenants/{TENANT}/permanent-advisors/{BOB}", user="sam")
    assert response.status_code == 201, response.json
    assert bridge.introspect(temporary["access_token"]).json == {"active": False}
    refreshed = bridge.token({"grant_type": "refresh_token",
                              "refresh_token": temporary["refresh_token"]})
    assert refreshed.status_code == 400
    assert refreshed.json["error"] == "invalid_grant"
    permanent = bridge.exchange("bob")
    assert permanent.status_code == 200, permanent.json
    claims = verify_access_token(bridge, permanent.json["access_token"])[1]
    assert claims["membership"] == "permanent"
    assert claims["grant_id"] != verify_access_token(bridge, temporary["access_token"])[1][
        "grant_id"]


# --- wrong guesses: rotation, rate limit, audit -------------------------------------------

def test_wrong_guesses_stop_the_guesser_not_the_code(bridge):
    """After code_max_failures wrong guesses the guesser is refused for this code; the code
    does not rotate, so another advisor holding it still redeems it (tests/test_guess_limits.py
    has the limits in detail)."""
    old = bridge.current_code()
    for attempt in range(1, 6):  # code_max_failures = 5
        response = bridge.exchange("bob", code=wrong_code(old))
        assert response.status_code == 400
        assert response.json["error"] == "invalid_grant"
        assert response.json["error_description"] == "access_code is wrong or has expired"
    assert bridge.current_code() == old
    refused = bridge.exchange("bob", code=old)
    assert refused.status_code == 400
    assert refused.json["error"] == "invalid_grant"
    assert "too many wrong access codes" in refused.json["error_description"]
    assert active_memberships(bridge) == []
    assert audit_events(bridge, "access_code.rotated") == []
    assert bridge.exchange("carol", code=old).status_code == 200
    assert [e["detail"]["cause"] for e in audit_events(bridge, "access_code.rotated")] == [
        "redeemed"]


def test_each_wrong_guess_is_audited(bridge):
    code = bridge.current_code()
    for user in ("bob", "carol", "bob"):
        assert bridge.exchange(user, code=wrong_code(code)).status_code == 400
    events = audit_events(bridge, "access_code.failed")  # newest first
    assert [e["actor"] for e in events] == [BOB, CAROL, BOB]
    assert [e["detail"]["failures"] for e in events] == [3, 2, 1]
    assert {e["detail"]["advisor_name"] for e in events} == {"bob", "carol"}
    assert {e["client_id"] for e in events} == {CLIENT_ID}
    assert {e["actor_role"] for e in events} == {"advisor"}
    assert code.replace("-", "") not in json.dumps(events)
    assert wrong_code(code).replace("-", "") not in json.dumps(events)


def test_guesses_beyond_the_advisor_limit_are_refused_even_with_the_right_code(bridge_with):
    b = bridge_with(code_guess_limit_advisor="3 per 15 minutes")
    code = b.current_code()
    for _ in range(3):
        response = b.exchange("bob", code=wrong_code(code))
        assert response.status_code == 400
        assert response.json["error"] == "invalid_grant"
    response = b.exchange("bob", code=code)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_grant"
    assert "too many" in response.json["error_description"]
    assert active_memberships(b) == []
    assert b.current_code() == code  # a refused guess is not a redemption
    assert [e["actor"] for e in audit_events(b, "access_code.rate_limited")] == [BOB]
    assert len(audit_events(b, "access_code.failed")) == 3
    # The limit is per advisor: carol redeems the same code.
    assert b.exchange("carol", code=code).status_code == 200


# --- multi-factor authentication ------------------------------------------------------------

@pytest.mark.parametrize("acr, amr, status", [
    (None, None, 400),            # dev provider default: acr "1", amr ["pwd"]
    ("1", ["pwd"], 400),
    ("0", ["pwd", "kba"], 400),
    ("2", None, 200),
    ("1", ["pwd", "otp"], 200),
    ("mfa", ["hwk"], 200),
])
def test_mfa_required(bridge_with, upstream, acr, amr, status):
    b = bridge_with(mfa_required=True)
    code = b.current_code()
    token = upstream.issue_tokens("bob", acr=acr, amr=amr)["access_token"]
    response = b.exchange("bob", code=code, subject_token=token)
    assert response.status_code == status, response.json
    if status == 400:
        assert response.json["error"] == "invalid_grant"
        assert "multi-factor" in response.json["error_description"]
        assert active_memberships(b) == []
        assert b.current_code() == code
    else:
        assert len(active_memberships(b)) == 1


def test_without_mfa_setting_a_password_login_suffices(bridge, upstream):
    token = upstream.issue_tokens("bob", acr="1", amr=["pwd"])["access_token"]
    assert bridge.exchange("bob", code=bridge.current_code(),
                           subject_token=token).status_code == 200


# --- fail closed ------------------------------------------------------------------------------

def test_storage_error_in_transaction_refuses(bridge, monkeypatch):
    code = bridge.current_code()
    token = bridge.upstream_token("bob")

    @contextlib.contextmanager
    def unavailable():
        raise StorageUnavailable("the database is unreachable")
        yield  # pragma: no cover

    with monkeypatch.context() as patch:
        patch.setattr(bridge.services.db, "transaction", unavailable)
        response = bridge.exchange("bob", code=code, subject_token=token)
    assert response.status_code == 503
    assert response.json["error"] == "temporarily_unavailable"
    assert_clean_error(response, bridge)
    assert active_memberships(bridge) == []
    assert bridge.current_code() == code


def test_unreachable_database_refuses(bridge, tmp_path):
    db = bridge.services.db
    code = bridge.current_code()
    token = bridge.upstream_token("bob")
    good = db.engine
    unreachable = create_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'sub' / 'x.sqlite'}")
    db.engine.dispose()
    db.sessions.configure(bind=unreachable)
    db.write_sessions.configure(bind=unreachable.execution_options(write=True))
    try:
        response = bridge.exchange("bob", code=code, subject_token=token)
        assert response.status_code == 503
        assert response.json["error"] == "temporarily_unavailable"
        assert_clean_error(response, bridge)
    finally:
        unreachable.dispose()
        db.sessions.configure(bind=good)
        db.write_sessions.configure(bind=good.execution_options(write=True))
    assert active_memberships(bridge) == []
    assert bridge.current_code() == code


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_upstream_refuses(bridge_with):
    b = bridge_with(upstream_discovery_url=(
        f"http://127.0.0.1:{closed_port()}/.well-known/openid-configuration"),
        upstream_timeout_seconds=2.0)
    code = b._code_direct(TENANT)
    response = b.exchange("bob", code=code)
    assert response.status_code == 503
    assert response.json["error"] == "temporarily_unavailable"
    assert_clean_error(response, b)
    assert active_memberships(b) == []
    assert b._code_direct(TENANT) == code
