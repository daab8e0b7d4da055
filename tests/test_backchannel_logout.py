"""OpenID Connect Back-Channel Logout 1.0 receiver: the upstream session ending revokes the
token families born from it; memberships stay."""

from __future__ import annotations

import json
import time

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy import func, select

from conftest import TENANT
from idp_bridge.devidp import DEMO_USERS
from idp_bridge.storage.models import EndedUpstreamSession
from test_subject_token_claims import claims_of, family_count, signed

BOB = DEMO_USERS["bob"]["sub"]
EVENT = "http://schemas.openid.net/event/backchannel-logout"


def exchange_in_session(bridge, sid):
    """bob exchanges an upstream token of the upstream session ``sid``."""
    token = bridge.upstream_token("bob", extra_claims={"sid": sid})
    response = bridge.exchange("bob", subject_token=token)
    assert response.status_code == 200, response.json
    return response.json


def post_logout(bridge, token):
    return bridge.client.post("/backchannel-logout", data={"logout_token": token})


def test_logout_by_sid_revokes_that_session_only(bridge, upstream):
    bridge.join("bob")
    first = exchange_in_session(bridge, "session-1")
    second = exchange_in_session(bridge, "session-2")
    response = post_logout(bridge, upstream.logout_token(sid="session-1"))
    assert response.status_code == 200
    assert response.json == {"revoked_token_families": 1}
    assert response.headers["Cache-Control"] == "no-store"
    assert bridge.introspect(first["access_token"]).json == {"active": False}
    assert bridge.introspect(second["access_token"]).json["active"] is True
    refresh = bridge.token({"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert refresh.status_code == 400 and refresh.json["error"] == "invalid_grant"
    # The membership stays: a new exchange (from a new upstream session) needs no code.
    assert bridge.exchange("bob").status_code == 200


def test_logout_by_sub_revokes_every_session_of_the_subject(bridge, upstream):
    bridge.join("bob")
    a = exchange_in_session(bridge, "s-a")
    b = exchange_in_session(bridge, "s-b")
    bridge.join("carol")
    response = post_logout(bridge, upstream.logout_token(sub=BOB))
    assert response.status_code == 200
    assert response.json["revoked_token_families"] >= 2
    for tokens in (a, b):
        assert bridge.introspect(tokens["access_token"]).json == {"active": False}
    carol_members = [m for m in bridge.api("get", f"/api/tenants/{TENANT}/memberships").json["memberships"]]
    assert len(carol_members) == 2  # nobody's membership ended


def test_logout_is_published_on_the_feed(bridge, upstream):
    from conftest import RS_CLIENT_ID

    client = bridge.app.test_client()
    auth = (RS_CLIENT_ID, bridge.rs_secret)
    stream_id = client.post("/ssf/stream", json={}, auth=auth).json["stream_id"]
    bridge.join("bob")
    tokens = exchange_in_session(bridge, "session-x")
    sid = bridge.introspect(tokens["access_token"]).json["sid"]
    assert post_logout(bridge, upstream.logout_token(sid="session-x")).status_code == 200
    sets = client.post(f"/ssf/poll/{stream_id}", json={"returnImmediately": True}, auth=auth).json["sets"]
    subjects = [jwt.decode(t, _jwks(client)).claims for t in sets.values()]
    assert [(c["sub_id"]["id"], c["events"][next(iter(c["events"]))]["reason_admin"]) for c in subjects] \
        == [(sid, {"en": "upstream_logout"})]


def _jwks(client):
    from joserfc.jwk import KeySet

    return KeySet.import_key_set(client.get("/ssf/jwks").json)  # the feed's own keys


def forged(upstream):
    key = RSAKey.generate_key(2048, private=True)
    claims = {"iss": upstream.issuer, "aud": "idp-bridge", "iat": int(time.time()),
              "jti": "forged-1", "sid": "s", "events": {EVENT: {}}}
    return jwt.encode({"alg": "RS256", "kid": upstream.kid}, claims, key)


def none_alg(upstream):
    import base64
    import json

    def b64(data):
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims = {"iss": upstream.issuer, "aud": "idp-bridge", "iat": int(time.time()),
              "jti": "none-1", "sid": "s", "events": {EVENT: {}}}
    return f"{b64({'alg': 'none'})}.{b64(claims)}."


@pytest.mark.parametrize("make,description", [
    (lambda u: u.logout_token(sid="s", iss="https://other.example"), "another issuer"),
    (lambda u: u.logout_token(sid="s", audience="someone-else"), "audience"),
    (lambda u: u.logout_token(sid="s", events=None), "back-channel logout event"),
    (lambda u: u.logout_token(sid="s", events={"urn:other": {}}), "back-channel logout event"),
    (lambda u: u.logout_token(sid="s", nonce="n"), "nonce"),
    (lambda u: u.logout_token(), "neither sid nor sub"),
    (lambda u: u.logout_token(sid="s", jti=None), "jti"),
    (lambda u: u.logout_token(sid="s", iat=None), "iat"),
    (lambda u: u.logout_token(sid="s", iat=int(time.time()) - 3600), "too old"),
    (lambda u: u.logout_token(sid="s", iat=int(time.time()) + 3600), "future"),
    (lambda u: u.logout_token(sid="s", exp=int(time.time()) - 3600), "expired"),
    (forged, "signature"),
    (none_alg, "algorithm"),
    (lambda u: "not-a-jwt", "not a signed JWT"),
])
def test_bad_logout_tokens_change_nothing(bridge, upstream, make, description):
    bridge.join("bob")
    tokens = exchange_in_session(bridge, "s")
    response = post_logout(bridge, make(upstream))
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    assert description in response.json["error_description"]
    assert bridge.introspect(tokens["access_token"]).json["active"] is True


def test_replayed_logout_token_is_refused(bridge, upstream):
    token = upstream.logout_token(sid="s")
    assert post_logout(bridge, token).status_code == 200
    again = post_logout(bridge, token)
    assert again.status_code == 400
    assert again.json["error"] == "invalid_request"
    assert "already used" in again.json["error_description"]


@pytest.mark.parametrize("data", [{}, {"logout_token": ["a", "b"]}])
def test_missing_or_repeated_logout_token(bridge, data):
    response = bridge.client.post("/backchannel-logout", data=data)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"


def test_a_signed_out_session_cannot_start_new_token_families(bridge, upstream):
    bridge.join("bob")
    old_session_token = bridge.upstream_token("bob", extra_claims={"sid": "ended"})
    assert post_logout(bridge, upstream.logout_token(sid="ended")).status_code == 200
    response = bridge.exchange("bob", subject_token=old_session_token)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_grant"
    assert "signed out" in response.json["error_description"]
    # Another (new) session of the same advisor works.
    assert bridge.exchange("bob", subject_token=bridge.upstream_token(
        "bob", extra_claims={"sid": "fresh"})).status_code == 200


def test_subject_wide_logout_refuses_tokens_issued_before_it(bridge, upstream):
    bridge.join("bob")
    before = bridge.upstream_token("bob", extra_claims={"iat": int(time.time()) - 60})
    assert post_logout(bridge, upstream.logout_token(sub=BOB)).status_code == 200
    refused = bridge.exchange("bob", subject_token=before)
    assert refused.status_code == 400 and refused.json["error"] == "invalid_grant"
    after = bridge.upstream_token("bob", extra_claims={"iat": int(time.time()) + 1})
    assert bridge.exchange("bob", subject_token=after).status_code == 200


def test_subject_wide_logout_refuses_tokens_that_do_not_say_when_they_were_issued(bridge, upstream):
    """A token without ``iat`` may come from a session that ended: refused once a logout of
    the whole subject exists; before it, such tokens pass as they always did."""
    bridge.join("bob")
    no_iat = signed(upstream, None, {k: v for k, v in claims_of(bridge.upstream_token("bob")).items()
                                     if k != "iat"})
    assert bridge.exchange("bob", subject_token=no_iat).status_code == 200
    families = family_count(bridge)
    assert post_logout(bridge, upstream.logout_token(sub=BOB)).status_code == 200
    refused = bridge.exchange("bob", subject_token=no_iat)
    assert refused.status_code == 400 and refused.json["error"] == "invalid_grant"
    assert "signed out" in refused.json["error_description"]
    assert family_count(bridge) == families


def _logout_claims(upstream, **changes):
    now = int(time.time())
    claims = {"iss": upstream.issuer, "aud": "idp-bridge", "iat": now, "exp": now + 120,
              "jti": f"jti-{time.monotonic_ns()}", "sid": "s", "events": {EVENT: {}}}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def typed_logout_token(typ):
    return lambda u: signed(u, {"typ": typ}, _logout_claims(u))


def raw_logout_token(**raw):
    def make(u):
        claims = _logout_claims(u)
        for name in raw:
            claims.pop(name, None)
        text = json.dumps(claims)[:-1] + "".join(f', "{k}": {v}' for k, v in raw.items()) + "}"
        return signed(u, {"typ": "logout+jwt"}, text.encode())
    return make


@pytest.mark.parametrize("make,description", [
    # Section 2.4: explicitly typed logout+jwt; another explicit type names another JWT.
    (typed_logout_token("at+jwt"), "another kind of JWT"),
    (typed_logout_token("secevent+jwt"), "another kind of JWT"),
    (typed_logout_token("JWT+at"), "another kind of JWT"),
    (lambda u: signed(u, {"typ": "logout+jwt"}, _logout_claims(u, typ="Bearer")), "typ claim"),
    (raw_logout_token(iat="NaN"), "iat"),
    (raw_logout_token(iat="1e309"), "iat"),
    (raw_logout_token(exp="NaN"), "exp"),
    (lambda u: signed(u, {"typ": "logout+jwt"}, _logout_claims(u, iat=str(int(time.time())))),
     "iat"),
    (lambda u: signed(u, {"typ": "logout+jwt"}, _logout_claims(u, sid=42)), "sid"),
    (lambda u: signed(u, {"typ": "logout+jwt"}, _logout_claims(u, sid="s\x00t")), "sid"),
    (lambda u: signed(u, {"typ": "logout+jwt"}, _logout_claims(u, sid=None, sub=["x"])), "sub"),
    (lambda u: signed(u, {"typ": "logout+jwt"}, _logout_claims(u, aud={"idp-bridge": 1})),
     "audience"),
    (lambda u: signed(u, {"typ": "logout+jwt"}, _logout_claims(u, jti=7)), "jti"),
], ids=["typ at+jwt", "typ secevent+jwt", "typ JWT+at", "typ claim Bearer", "iat NaN",
        "iat infinity", "exp NaN", "iat a string", "sid a number", "sid with NUL",
        "sub an array", "aud an object", "jti a number"])
def test_logout_tokens_typed_or_shaped_otherwise_change_nothing(bridge, upstream, make,
                                                                description):
    bridge.join("bob")
    tokens = exchange_in_session(bridge, "s")
    response = post_logout(bridge, make(upstream))
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    assert description in response.json["error_description"]
    assert bridge.introspect(tokens["access_token"]).json["active"] is True
    with bridge.services.db.read() as session:
        assert session.scalar(select(func.count()).select_from(EndedUpstreamSession)) == 0


@pytest.mark.parametrize("typ", [None, "JWT", "logout+jwt", "application/logout+jwt",
                                 "Logout+JWT"])
def test_logout_token_types_accepted(bridge, upstream, typ):
    """No typ, ``JWT`` (read as untyped: Keycloak before 25 sends it) and ``logout+jwt`` in
    any case, with or without ``application/`` (RFC 7515 section 4.1.9)."""
    bridge.join("bob")
    tokens = exchange_in_session(bridge, "s")
    response = post_logout(bridge, signed(upstream, {"typ": typ}, _logout_claims(upstream)))
    assert response.status_code == 200, response.json
    assert bridge.introspect(tokens["access_token"]).json == {"active": False}


def test_a_signed_out_session_no_longer_authorises_the_management_api(bridge, upstream):
    """anna signed out upstream: her token of that session reads no access code any more."""
    ended = bridge.upstream_token("anna", extra_claims={"sid": "anna-ended"})
    path = f"/api/tenants/{TENANT}/access-code"
    assert bridge.api("get", path, token=ended).status_code == 200
    assert post_logout(bridge, upstream.logout_token(sid="anna-ended")).status_code == 200
    refused = bridge.api("get", path, token=ended)
    assert refused.status_code == 401 and refused.json["error"] == "invalid_token"
    assert "code" not in refused.json
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    fresh = bridge.upstream_token("anna", extra_claims={"sid": "anna-new"})
    assert bridge.api("get", path, token=fresh).status_code == 200
