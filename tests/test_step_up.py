"""RFC 9470 step-up in scopes.guard: acr and auth_time requirements per route.

- :class:`AuthenticationRequirement` checked when made, then against token claims (section 3):
  the right kind of authentication, recent enough; missing claims fail like unmet ones, ill-
  typed ones make the token malformed.
- The Flask decorator answers 401 ``insufficient_user_authentication`` with the exact
  ``WWW-Authenticate`` of section 3 (``acr_values``, ``max_age``), only after the token itself
  was accepted (section 9: no requirement told to a caller without a valid token).
- The bridge carries ``acr``, ``auth_time`` and ``amr`` of the upstream sign-in into its access
  tokens, across refresh, and into introspection (sections 5 and 6): a real exchange steps up.
- The example resource server requires it for ``evaluation:write`` (settings from its
  environment).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import math
import time
from pathlib import Path

import pytest
from flask import Flask, g

from test_guard import AUDIENCE, TENANT, FakeIssuer, TestClientHTTP, loopback  # noqa: F401
from scopes.guard import (AuthenticationRequirement, InsufficientScope,
                          InsufficientUserAuthentication, InvalidToken, ResourceMetadata,
                          TokenGuard)

EXAMPLE_RS = Path(__file__).resolve().parents[1] / "deploy" / "example-resource-server" / \
    "example_resource_server.py"
MFA = ["urn:konfipay:acr:mfa", "2"]
NOW = 1_767_225_600


def load_example():
    spec = importlib.util.spec_from_file_location("example_rs_step_up", EXAMPLE_RS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fake(loopback):  # noqa: F811
    holder, url = loopback
    issuer = FakeIssuer()
    issuer.issuer = url
    issuer.add_key("k1")
    holder["app"] = issuer.app
    return issuer


@pytest.fixture
def guard(fake):
    return TokenGuard(fake.issuer, AUDIENCE)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


# --- the requirement, checked when made ---

@pytest.mark.parametrize("kwargs, exc", [
    ({}, ValueError),                                  # requires nothing
    ({"acr_values": []}, ValueError),
    ({"acr_values": "mfa"}, TypeError),                # one string, not a list
    ({"acr_values": [""]}, ValueError),
    ({"acr_values": ["two words"]}, ValueError),       # a space would split it in the challenge
    ({"acr_values": ['say "mfa"']}, ValueError),
    ({"acr_values": ["back\\slash"]}, ValueError),
    ({"acr_values": ["stärker"]}, ValueError),         # not ASCII
    ({"acr_values": ["x" * 256]}, ValueError),
    ({"acr_values": [2]}, ValueError),
    ({"acr_values": ["mfa", "mfa"]}, ValueError),
    ({"max_age": -1}, ValueError),
    ({"max_age": 1.5}, ValueError),
    ({"max_age": True}, ValueError),
    ({"max_age": "300"}, ValueError),
])
def test_requirements_are_checked_when_made(kwargs, exc):
    with pytest.raises(exc):
        AuthenticationRequirement(**kwargs)


def test_challenge_params_keep_the_order_of_preference():
    requirement = AuthenticationRequirement(["urn:konfipay:acr:mfa", "2", "mfa"], 0)
    assert requirement.challenge_params == (("acr_values", "urn:konfipay:acr:mfa 2 mfa"),
                                            ("max_age", "0"))
    assert AuthenticationRequirement(max_age=300).challenge_params == (("max_age", "300"),)
    assert AuthenticationRequirement(["mfa"]).challenge_params == (("acr_values", "mfa"),)


def test_an_unknown_route_requirement_fails_at_import_time(guard):
    with pytest.raises(ValueError):
        guard.require("evaluation:write", acr_values=["two words"])
    with pytest.raises(ValueError):
        guard.require("evaluation:write", max_age=-5)


# --- the requirement against claims ---

ACR_AND_AGE = AuthenticationRequirement(MFA, 300)


@pytest.mark.parametrize("claims", [
    {"acr": "2", "auth_time": NOW - 300},               # exactly max_age old
    {"acr": "urn:konfipay:acr:mfa", "auth_time": NOW},
    {"acr": "2", "auth_time": NOW + 30},                # within the clock leeway ahead
    {"acr": "2", "auth_time": float(NOW - 10)},         # a JSON number may be a float
])
def test_met_requirements_pass(claims):
    ACR_AND_AGE.validate(claims, now=NOW)


@pytest.mark.parametrize("claims, description", [
    ({"auth_time": NOW}, "the token does not say how the user authenticated (acr)"),
    ({"acr": "1", "auth_time": NOW}, "a different authentication level is required"),
    ({"acr": "MFA", "auth_time": NOW}, "a different authentication level is required"),
    ({"acr": "2"}, "the token does not say when the user authenticated (auth_time)"),
    ({"acr": "2", "auth_time": NOW - 301}, "more recent authentication is required"),
])
def test_unmet_requirements_ask_for_step_up(claims, description):
    with pytest.raises(InsufficientUserAuthentication) as caught:
        ACR_AND_AGE.validate(claims, now=NOW)
    error = caught.value
    assert (error.status_code, error.error) == (401, "insufficient_user_authentication")
    assert error.description == description
    # Both parts of the requirement, whichever failed: one step-up meets the route.
    assert error.challenge_params == (("acr_values", "urn:konfipay:acr:mfa 2"),
                                      ("max_age", "300"))


@pytest.mark.parametrize("claims, description", [
    ({"acr": 2, "auth_time": NOW}, "token has a malformed acr claim"),
    ({"acr": ["2"], "auth_time": NOW}, "token has a malformed acr claim"),
    ({"acr": True, "auth_time": NOW}, "token has a malformed acr claim"),
    ({"acr": "2", "auth_time": str(NOW)}, "token has a malformed auth_time claim"),
    ({"acr": "2", "auth_time": True}, "token has a malformed auth_time claim"),
    ({"acr": "2", "auth_time": -1}, "token has a malformed auth_time claim"),
    ({"acr": "2", "auth_time": math.nan}, "token has a malformed auth_time claim"),
    ({"acr": "2", "auth_time": math.inf}, "token has a malformed auth_time claim"),
    ({"acr": "2", "auth_time": {"at": NOW}}, "token has a malformed auth_time claim"),
    ({"acr": "2", "auth_time": NOW + 31}, "token's auth_time is in the future"),
])
def test_ill_typed_claims_fail_closed_as_invalid_token(claims, description):
    with pytest.raises(InvalidToken) as caught:
        ACR_AND_AGE.validate(claims, now=NOW)
    assert (caught.value.status_code, caught.value.error) == (401, "invalid_token")
    assert caught.value.description == description


def test_only_the_required_claims_are_looked_at():
    AuthenticationRequirement(max_age=60).validate({"acr": 7, "auth_time": NOW}, now=NOW)
    AuthenticationRequirement(["2"]).validate({"acr": "2", "auth_time": "never"}, now=NOW)


def test_max_age_has_no_leeway():
    """300 s means 300 s: the clock leeway only lets auth_time be slightly ahead."""
    requirement = AuthenticationRequirement(max_age=300)
    requirement.validate({"auth_time": NOW - 300}, now=NOW, leeway=60)
    with pytest.raises(InsufficientUserAuthentication):
        requirement.validate({"auth_time": NOW - 301}, now=NOW, leeway=60)


def test_without_a_framework(fake, guard):
    """The same check on the non-Flask API: validate, then the requirement; the challenge
    of the error is the one the decorator sends."""
    token = fake.mint(acr="1", auth_time=int(time.time()))
    claims = guard.validate(token, tenant=TENANT, scope="evaluation:write")
    with pytest.raises(InsufficientUserAuthentication) as caught:
        ACR_AND_AGE.validate(claims, leeway=guard.leeway)
    assert guard.challenge(caught.value) == (
        f'Bearer realm="{AUDIENCE}", error="insufficient_user_authentication", '
        'error_description="a different authentication level is required", '
        'acr_values="urn:konfipay:acr:mfa 2", max_age="300"')


# --- the Flask decorator ---

@pytest.fixture
def api(guard):
    app = Flask("step-up-rs")

    @app.post("/tenants/<tenant>/evaluation/reports")
    @guard.require("evaluation:write", acr_values=MFA, max_age=300)
    def create_report(tenant):
        return {"acr": g.token_claims["acr"]}, 201

    @app.post("/tenants/<tenant>/evaluation/exports")
    @guard.require("evaluation:write", max_age=60)
    def create_export(tenant):
        return {"created": True}, 201

    @app.get("/tenants/<tenant>/evaluation")
    @guard.require("evaluation:read")
    def read(tenant):
        return {"ok": True}

    return app.test_client()


def test_a_strong_recent_sign_in_passes(fake, api):
    token = fake.mint(acr="2", auth_time=int(time.time()) - 10)
    response = api.post(f"/tenants/{TENANT}/evaluation/reports", headers=bearer(token))
    assert response.status_code == 201
    assert response.json == {"acr": "2"}


@pytest.mark.parametrize("changes, description", [
    ({"acr": "1"}, "a different authentication level is required"),
    ({"acr": None}, "the token does not say how the user authenticated (acr)"),
    ({"acr": "2", "auth_time": -3600}, "more recent authentication is required"),
    ({"acr": "2", "auth_time": None}, "the token does not say when the user authenticated "
                                      "(auth_time)"),
])
def test_step_up_challenge(fake, api, changes, description):
    if changes.get("auth_time", 0) is not None:
        changes = {**changes, "auth_time": int(time.time()) + changes.get("auth_time", 0)}
    token = fake.mint(**changes)
    response = api.post(f"/tenants/{TENANT}/evaluation/reports", headers=bearer(token))
    assert response.status_code == 401
    assert response.json == {"error": "insufficient_user_authentication",
                             "error_description": description}
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer realm="{AUDIENCE}", error="insufficient_user_authentication", '
        f'error_description="{description}", acr_values="urn:konfipay:acr:mfa 2", '
        'max_age="300"')
    assert response.headers["Cache-Control"] == "no-store"


def test_max_age_alone(fake, api):
    token = fake.mint(acr="2", auth_time=int(time.time()) - 61)
    response = api.post(f"/tenants/{TENANT}/evaluation/exports", headers=bearer(token))
    assert response.status_code == 401
    assert response.json["error"] == "insufficient_user_authentication"
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer realm="{AUDIENCE}", error="insufficient_user_authentication", '
        'error_description="more recent authentication is required", max_age="60"')


def test_routes_without_a_requirement_ignore_acr(fake, api):
    response = api.get(f"/tenants/{TENANT}/evaluation", headers=bearer(fake.mint(acr=None)))
    assert response.status_code == 200


def test_ill_typed_acr_on_a_step_up_route_is_invalid_token(fake, api):
    token = fake.mint(acr=2, auth_time=int(time.time()))
    response = api.post(f"/tenants/{TENANT}/evaluation/reports", headers=bearer(token))
    assert response.status_code == 401
    assert response.json == {"error": "invalid_token",
                             "error_description": "token has a malformed acr claim"}
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer realm="{AUDIENCE}", error="invalid_token", '
        'error_description="token has a malformed acr claim"')


def test_requirements_are_told_only_to_valid_tokens(fake, api):
    """RFC 9470 section 9: no token, an invalid token, another tenant's token or one
    without the scope never learn the route's acr_values or max_age."""
    url = f"/tenants/{TENANT}/evaluation/reports"
    none = api.post(url)
    assert none.status_code == 401 and "error" not in none.json
    assert none.headers["WWW-Authenticate"] == f'Bearer realm="{AUDIENCE}"'
    expired = api.post(url, headers=bearer(fake.mint(acr="1", exp=int(time.time()) - 100,
                                                     iat=int(time.time()) - 400)))
    assert expired.status_code == 401 and expired.json["error"] == "invalid_token"
    other = api.post("/tenants/20077/evaluation/reports", headers=bearer(fake.mint(acr="1")))
    assert other.status_code == 401 and other.json["error"] == "invalid_token"
    narrow = api.post(url, headers=bearer(fake.mint(acr="1", scope="evaluation:read")))
    assert narrow.status_code == 403 and narrow.json["error"] == "insufficient_scope"
    assert narrow.headers["WWW-Authenticate"] == (
        f'Bearer realm="{AUDIENCE}", error="insufficient_scope", '
        'error_description="token lacks the scope evaluation:write", scope="evaluation:write"')
    for response in (none, expired, other, narrow):
        header = response.headers["WWW-Authenticate"]
        assert "acr_values" not in header and "max_age" not in header


def test_step_up_challenge_names_the_resource_metadata(fake):
    metadata = ResourceMetadata("https://api.konfipay.example",
                                authorization_servers=[fake.issuer])
    guard = TokenGuard(fake.issuer, AUDIENCE, resource_metadata=metadata)
    app = Flask("step-up-rs-with-metadata")

    @app.post("/tenants/<tenant>/evaluation/reports")
    @guard.require("evaluation:write", acr_values=["mfa"])
    def create_report(tenant):
        return {}, 201

    response = app.test_client().post(f"/tenants/{TENANT}/evaluation/reports",
                                      headers=bearer(fake.mint(acr="pwd")))
    assert response.status_code == 401
    assert response.json["error"] == "insufficient_user_authentication"
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer realm="{AUDIENCE}", error="insufficient_user_authentication", '
        'error_description="a different authentication level is required", '
        'acr_values="mfa", resource_metadata="https://api.konfipay.example/.well-known/'
        f'oauth-protected-resource/tenants/{TENANT}/evaluation/reports"')


def test_insufficient_user_authentication_is_a_guard_error():
    error = InsufficientUserAuthentication("x", AuthenticationRequirement(max_age=1))
    assert not isinstance(error, InsufficientScope)
    assert (type(error).error, type(error).status_code) == (
        "insufficient_user_authentication", 401)


# --- the bridge carries the upstream authentication (sections 5 and 6) ---

BRIDGE_ISSUER = "http://127.0.0.1:8000"


def test_the_bridge_carries_acr_auth_time_and_amr(bridge):
    upstream = bridge.upstream.issue_tokens("bob", acr="2", amr=["pwd", "otp"])
    payload = upstream["access_token"].split(".")[1]
    upstream_claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body = bridge.join("bob", subject_token=upstream["access_token"])
    guard = TokenGuard(BRIDGE_ISSUER, AUDIENCE, http=TestClientHTTP(bridge.client, BRIDGE_ISSUER))
    claims = guard.validate(body["access_token"], tenant=TENANT, scope="evaluation:write")
    assert claims["acr"] == "2" and claims["amr"] == ["pwd", "otp"]
    assert claims["auth_time"] == upstream_claims["auth_time"]
    assert type(claims["auth_time"]) is int and abs(claims["auth_time"] - time.time()) < 120
    ACR_AND_AGE.validate(claims)  # the step-up the resource server asks for is met

    # A refresh keeps the authentication event (RFC 9470 section 6.1: fixed at sign-in).
    refreshed = bridge.token({"grant_type": "refresh_token",
                              "refresh_token": body["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.json
    again = guard.validate(refreshed.json["access_token"], tenant=TENANT,
                           scope="evaluation:write")
    assert (again["acr"], again["auth_time"], again["amr"]) == (
        claims["acr"], claims["auth_time"], claims["amr"])

    # Introspection tells the same (section 6.2).
    introspected = bridge.introspect(body["access_token"])
    assert introspected.status_code == 200
    assert introspected.json["active"] is True
    assert (introspected.json["acr"], introspected.json["auth_time"]) == (
        claims["acr"], claims["auth_time"])


def test_a_password_sign_in_is_asked_to_step_up(bridge):
    body = bridge.join("bob")  # the development provider's default: acr "1", amr ["pwd"]
    guard = TokenGuard(BRIDGE_ISSUER, AUDIENCE, http=TestClientHTTP(bridge.client, BRIDGE_ISSUER))
    claims = guard.validate(body["access_token"], tenant=TENANT, scope="evaluation:write")
    assert claims["acr"] == "1"
    with pytest.raises(InsufficientUserAuthentication) as caught:
        ACR_AND_AGE.validate(claims)
    assert caught.value.description == "a different authentication level is required"


# --- the example resource server ---

@pytest.mark.parametrize("environ, expected", [
    ({}, (("2", "mfa", "urn:konfipay:acr:mfa"), 900)),
    ({"RS_WRITE_ACR_VALUES": "mfa", "RS_WRITE_MAX_AGE": "60"}, (("mfa",), 60)),
    ({"RS_WRITE_ACR_VALUES": "", "RS_WRITE_MAX_AGE": "60"}, ((), 60)),
    ({"RS_WRITE_ACR_VALUES": " 2  mfa ", "RS_WRITE_MAX_AGE": ""}, (("2", "mfa"), None)),
    ({"RS_WRITE_ACR_VALUES": "", "RS_WRITE_MAX_AGE": ""}, None),
])
def test_example_write_requirement_from_the_environment(environ, expected):
    requirement = load_example().write_requirement(environ)
    if expected is None:
        assert requirement is None
    else:
        assert (requirement.acr_values, requirement.max_age) == expected


@pytest.mark.parametrize("environ, variable", [
    ({"RS_WRITE_MAX_AGE": "15m"}, "RS_WRITE_MAX_AGE"),
    ({"RS_WRITE_MAX_AGE": "-1"}, "RS_WRITE_MAX_AGE"),
    ({"RS_WRITE_MAX_AGE": "٣"}, "RS_WRITE_MAX_AGE"),        # a digit, but not ASCII
    ({"RS_WRITE_ACR_VALUES": 'mfa "2"'}, "RS_WRITE_ACR_VALUES"),
    ({"RS_WRITE_ACR_VALUES": "mfa mfa"}, "RS_WRITE_ACR_VALUES"),
])
def test_example_refuses_bad_settings_naming_them(environ, variable):
    with pytest.raises(ValueError, match=variable):
        load_example().write_requirement(environ)


def test_example_requires_step_up_for_evaluation_write(fake, monkeypatch):
    for name in ("RS_WRITE_ACR_VALUES", "RS_WRITE_MAX_AGE"):
        monkeypatch.delenv(name, raising=False)
    example = load_example()
    rs = example.create_app(TokenGuard(fake.issuer, AUDIENCE)).test_client()
    url = f"/tenants/{TENANT}/evaluation/reports"
    now = int(time.time())
    weak = rs.post(url, json={"title": "Monatsauswertung"},
                   headers=bearer(fake.mint(acr="1", auth_time=now)))
    assert weak.status_code == 401
    assert weak.json["error"] == "insufficient_user_authentication"
    assert weak.headers["WWW-Authenticate"] == (
        f'Bearer realm="{AUDIENCE}", error="insufficient_user_authentication", '
        'error_description="a different authentication level is required", '
        'acr_values="2 mfa urn:konfipay:acr:mfa", max_age="900"')
    old = rs.post(url, json={"title": "Monatsauswertung"},
                  headers=bearer(fake.mint(acr="mfa", auth_time=now - 901)))
    assert old.status_code == 401
    assert old.json == {"error": "insufficient_user_authentication",
                        "error_description": "more recent authentication is required"}
    strong = rs.post(url, json={"title": "Monatsauswertung"},
                     headers=bearer(fake.mint(acr="mfa", auth_time=now - 60)))
    assert strong.status_code == 201 and strong.json["title"] == "Monatsauswertung"
    # Reading needs no step-up.
    read = rs.get(f"/tenants/{TENANT}/evaluation", headers=bearer(fake.mint(acr="1")))
    assert read.status_code == 200


def test_example_without_step_up(fake):
    rs = load_example().create_app(TokenGuard(fake.issuer, AUDIENCE),
                                   write_step_up=None).test_client()
    response = rs.post(f"/tenants/{TENANT}/evaluation/reports", json={"title": "t"},
                       headers=bearer(fake.mint(acr="1")))
    assert response.status_code == 201


# --- with DPoP-bound tokens (RFC 9449; the error in the scheme the request used) ---

def test_step_up_of_a_dpop_bound_token(fake):
    from test_dpop_guard import Holder

    resource = "https://rs.konfipay.example"
    guard = TokenGuard(fake.issuer, AUDIENCE, dpop_url=resource, dpop_algorithms=("ES256",))
    guard.resource_metadata = ResourceMetadata.for_guard(guard, resource)
    app = Flask("step-up-dpop-rs")

    @app.post("/tenants/<tenant>/evaluation/reports")
    @guard.require("evaluation:write", acr_values=["mfa"], max_age=300)
    def create_report(tenant):
        return {"acr": g.token_claims["acr"]}, 201

    client, holder = app.test_client(), Holder()
    path = f"/tenants/{TENANT}/evaluation/reports"

    def post(token):
        proof = holder.proof(resource + path, "POST", access_token=token)
        return client.post(path, headers=[("Authorization", f"DPoP {token}"),
                                          ("DPoP", proof)])

    now = int(time.time())
    weak = post(fake.mint(cnf={"jkt": holder.jkt}, acr="pwd", auth_time=now))
    assert weak.status_code == 401
    assert weak.json == {"error": "insufficient_user_authentication",
                         "error_description": "a different authentication level is required"}
    metadata = (f"{resource}/.well-known/oauth-protected-resource/tenants/{TENANT}/"
                "evaluation/reports")
    assert weak.headers.getlist("WWW-Authenticate") == [
        f'Bearer realm="{AUDIENCE}", resource_metadata="{metadata}"',
        f'DPoP realm="{AUDIENCE}", algs="ES256", error="insufficient_user_authentication", '
        'error_description="a different authentication level is required", '
        f'acr_values="mfa", max_age="300", resource_metadata="{metadata}"']
    strong = post(fake.mint(cnf={"jkt": holder.jkt}, acr="mfa", auth_time=now))
    assert strong.status_code == 201 and strong.json == {"acr": "mfa"}
