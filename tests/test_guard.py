"""scopes.guard: local validation of access tokens (RFC 9068) and the RFC 6750 decorator.

Tokens are minted here with keys generated per test and published by a tiny fake issuer on
loopback (discovery + JWKS), so the guard is tested over real HTTP without the bridge.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from flask import Flask, g, jsonify, request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from conftest import ServerThread
from scopes.catalog import UnknownScope, advisor_scopes
from scopes.guard import GuardError, InsufficientScope, InvalidToken, TokenGuard

AUDIENCE = "konfipay-api"
TENANT = "10042"
OTHER_TENANT = "20077"
ROOT = Path(__file__).resolve().parent.parent


def b64(data: bytes | dict) -> str:
    if isinstance(data, dict):
        data = json.dumps(data).encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_compact(header: dict, claims: dict, key) -> str:
    """A compact JWS signed with ``key`` (ES256 or RS256), whatever the header says."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    signing_input = f"{b64(header)}.{b64(claims)}".encode()
    private = key.get_op_key("sign")
    if isinstance(key, ECKey):
        r, s = decode_dss_signature(private.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        signature = private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.decode()}.{b64(signature)}"


class FakeIssuer:
    """Discovery and JWKS of an issuer with keys made at test time, served on loopback."""

    def __init__(self):
        self.issuer = None  # set once the server has a port
        self.keys: dict[str, object] = {}  # kid -> private joserfc key
        self.published: list[str] = []
        self.hits = Counter()
        self.metadata_paths = {"/.well-known/oauth-authorization-server",
                               "/.well-known/openid-configuration"}
        self.metadata_overrides: dict = {}
        self.jwks_cache_control = "public, max-age=300"
        self.app = Flask("fake-issuer")
        self.app.add_url_rule("/.well-known/<name>", view_func=self._well_known)
        self.app.add_url_rule("/jwks", view_func=self._jwks)

    # --- the served documents ---
    def metadata(self) -> dict:
        return {"issuer": self.issuer, "jwks_uri": f"{self.issuer}/jwks",
                "introspection_endpoint": f"{self.issuer}/introspect",
                **self.metadata_overrides}

    def _well_known(self, name):
        path = request.path
        self.hits[path] += 1
        if path not in self.metadata_paths:
            return jsonify({"error": "not_found"}), 404
        return jsonify(self.metadata())

    def _jwks(self):
        self.hits["jwks"] += 1
        keys = [{**self.keys[kid].as_dict(private=False), "kid": kid, "use": "sig",
                 "alg": "ES256" if isinstance(self.keys[kid], ECKey) else "RS256"}
                for kid in self.published]
        response = jsonify({"keys": keys})
        response.headers["Cache-Control"] = self.jwks_cache_control
        return response

    # --- keys and tokens ---
    def add_key(self, kid: str, kind: str = "EC", *, publish: bool = True):
        key = ECKey.generate_key("P-256") if kind == "EC" else RSAKey.generate_key(2048)
        self.keys[kid] = key
        if publish:
            self.published.append(kid)
        return key

    def claims(self, **changes) -> dict:
        now = int(time.time())
        claims = {
            "iss": self.issuer, "sub": str(uuid.uuid4()), "aud": AUDIENCE,
            "client_id": "advisor-console", "tenant": TENANT,
            "scope": " ".join(advisor_scopes()), "grant_id": str(uuid.uuid4()),
            "sid": str(uuid.uuid4()), "membership": "temporary", "jti": uuid.uuid4().hex,
            "iat": now, "exp": now + 300,
        }
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def mint(self, kid: str = "k1", *, header: dict | None = None, **changes) -> str:
        key = self.keys[kid]
        alg = "ES256" if isinstance(key, ECKey) else "RS256"
        if not header:
            return jwt.encode({"alg": alg, "typ": "at+jwt", "kid": kid}, self.claims(**changes),
                              key)
        # Headers joserfc would refuse to write (no kid, crit, ...): sign by hand.
        header = {k: v for k, v in {"alg": alg, "typ": "at+jwt", "kid": kid, **header}.items()
                  if v is not None}
        return sign_compact(header, self.claims(**changes), key)


@pytest.fixture(scope="module")
def loopback():
    """One server per module (a shutdown costs half a second); each test plugs in its app."""
    holder = {}

    def app(environ, start_response):
        return holder["app"](environ, start_response)

    with ServerThread(app) as server:
        yield holder, f"http://127.0.0.1:{server.port}"


@pytest.fixture
def fake(loopback):
    holder, url = loopback
    issuer = FakeIssuer()
    issuer.issuer = url
    issuer.add_key("k1")
    holder["app"] = issuer.app
    return issuer


@pytest.fixture
def guard(fake):
    return TokenGuard(fake.issuer, AUDIENCE)


# --- hand-made tokens the issuer would never sign ---

def unsigned(fake, alg="none", signature="") -> str:
    header = {"alg": alg, "typ": "at+jwt", "kid": "k1"}
    return f"{b64(header)}.{b64(fake.claims())}.{signature}"


def hs256_with_public_pem(fake) -> str:
    """The classic key-confusion forgery: HMAC keyed with the issuer's public key PEM."""
    pem = fake.keys["k1"].as_pem(private=False)
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'at+jwt', 'kid': 'k1'})}.{b64(fake.claims())}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def tampered_payload(fake) -> str:
    header, _, signature = fake.mint(scope="evaluation:read").split(".")
    forged = b64(fake.claims(scope="evaluation:read evaluation:write users:write"))
    return f"{header}.{forged}.{signature}"


def tampered_signature(fake) -> str:
    token = fake.mint()
    head, _, signature = token.rpartition(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[10] ^= 0x01
    return f"{head}.{b64(bytes(raw))}"


def signed_by_unpublished_key(fake) -> str:
    fake.add_key("k-secret", publish=False)
    return fake.mint("k-secret")


def other_key_same_kid(fake) -> str:
    """Signed by a key the attacker made, claiming the issuer's kid."""
    impostor = ECKey.generate_key("P-256")
    return jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": "k1"}, fake.claims(), impostor)


def rs256_header_on_ec_kid(fake) -> str:
    rsa_key = RSAKey.generate_key(2048)
    return jwt.encode({"alg": "RS256", "typ": "at+jwt", "kid": "k1"}, fake.claims(), rsa_key)


def revoked(kind):
    def make(fake, guard):
        token = fake.mint()
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        guard.revoke(kind, claims[kind], time.time())
        return token
    make.needs_guard = True
    return make


def now() -> int:
    return int(time.time())


# (id, token maker (fake) or (fake, guard), required scope, exception class, error code)
REJECTIONS = [
    ("expired", lambda f: f.mint(iat=now() - 400, exp=now() - 100), "evaluation:read",
     InvalidToken, "invalid_token"),
    ("expired-beyond-leeway", lambda f: f.mint(iat=now() - 331, exp=now() - 31), "evaluation:read",
     InvalidToken, "invalid_token"),
    ("nbf-in-future", lambda f: f.mint(nbf=now() + 120), "evaluation:read",
     InvalidToken, "invalid_token"),
    ("iat-in-future", lambda f: f.mint(iat=now() + 120, exp=now() + 300), "evaluation:read",
     InvalidToken, "invalid_token"),
    ("lifetime-too-long", lambda f: f.mint(exp=now() + 3600), "evaluation:read",
     InvalidToken, "invalid_token"),
    ("no-exp", lambda f: f.mint(exp=None), "evaluation:read", InvalidToken, "invalid_token"),
    ("exp-not-a-number", lambda f: f.mint(exp=str(now() + 300)), "evaluation:read",
     InvalidToken, "invalid_token"),
    ("wrong-issuer", lambda f: f.mint(iss="https://evil.example"), "evaluation:read",
     InvalidToken, "invalid_token"),
    ("wrong-audience", lambda f: f.mint(aud="other-api"), "evaluation:read",
     InvalidToken, "invalid_token"),
    ("audience-list-without-ours", lambda f: f.mint(aud=["a", "b"]), "evaluation:read",
     InvalidToken, "invalid_token"),
    ("wrong-tenant", lambda f: f.mint(tenant=OTHER_TENANT), "evaluation:read",
     InvalidToken, "invalid_token"),
    ("no-tenant", lambda f: f.mint(tenant=None), "evaluation:read",
     InvalidToken, "invalid_token"),
    ("missing-scope", lambda f: f.mint(scope="tenant:read users:read"), "evaluation:read",
     InsufficientScope, "insufficient_scope"),
    ("read-does-not-imply-write", lambda f: f.mint(scope="users:read"), "users:write",
     InsufficientScope, "insufficient_scope"),
    ("no-scope-claim", lambda f: f.mint(scope=None), "evaluation:read",
     InsufficientScope, "insufficient_scope"),
    ("scope-prefix-is-not-scope", lambda f: f.mint(scope="evaluation:reader"), "evaluation:read",
     InsufficientScope, "insufficient_scope"),
    ("no-grant-id", lambda f: f.mint(grant_id=None), "evaluation:read",
     InvalidToken, "invalid_token"),
    ("alg-none", unsigned, "evaluation:read", InvalidToken, "invalid_token"),
    ("alg-none-with-signature", lambda f: unsigned(f, signature="AAAA"), "evaluation:read",
     InvalidToken, "invalid_token"),
    ("alg-None-capitalised", lambda f: unsigned(f, alg="None", signature="AAAA"),
     "evaluation:read", InvalidToken, "invalid_token"),
    ("hs256-with-public-key-pem", hs256_with_public_pem, "evaluation:read",
     InvalidToken, "invalid_token"),
    ("rs256-header-on-ec-key", rs256_header_on_ec_kid, "evaluation:read",
     InvalidToken, "invalid_token"),
    ("unknown-kid", signed_by_unpublished_key, "evaluation:read", InvalidToken, "invalid_token"),
    ("no-kid", lambda f: f.mint(header={"kid": None}), "evaluation:read",
     InvalidToken, "invalid_token"),
    ("impostor-key-same-kid", other_key_same_kid, "evaluation:read",
     InvalidToken, "invalid_token"),
    ("typ-jwt", lambda f: f.mint(header={"typ": "JWT"}), "evaluation:read",
     InvalidToken, "invalid_token"),
    ("typ-missing", lambda f: f.mint(header={"typ": None}), "evaluation:read",
     InvalidToken, "invalid_token"),
    ("typ-secevent", lambda f: f.mint(header={"typ": "secevent+jwt"}), "evaluation:read",
     InvalidToken, "invalid_token"),
    ("crit-header", lambda f: f.mint(header={"crit": ["exp"]}), "evaluation:read",
     InvalidToken, "invalid_token"),
    ("tampered-payload", tampered_payload, "evaluation:read", InvalidToken, "invalid_token"),
    ("tampered-signature", tampered_signature, "evaluation:read", InvalidToken, "invalid_token"),
    ("truncated-signature", lambda f: f.mint()[:-4], "evaluation:read",
     InvalidToken, "invalid_token"),
    ("revoked-grant-id", revoked("grant_id"), "evaluation:read", InvalidToken, "invalid_token"),
    ("revoked-sid", revoked("sid"), "evaluation:read", InvalidToken, "invalid_token"),
    ("empty", lambda f: "", "evaluation:read", InvalidToken, "invalid_token"),
    ("two-segments", lambda f: f.mint().rpartition(".")[0], "evaluation:read",
     InvalidToken, "invalid_token"),
    ("four-segments", lambda f: f.mint() + ".AAAA", "evaluation:read",
     InvalidToken, "invalid_token"),
    ("not-base64", lambda f: "!!!.@@@.###", "evaluation:read", InvalidToken, "invalid_token"),
    ("padded-base64", lambda f: f.mint().replace(".", "=.", 1), "evaluation:read",
     InvalidToken, "invalid_token"),
    ("header-not-json", lambda f: f"{b64(b'nope')}.{b64(b'{}')}.AAAA", "evaluation:read",
     InvalidToken, "invalid_token"),
    ("header-json-array", lambda f: f"{b64(b'[1]')}.{b64(b'{}')}.AAAA", "evaluation:read",
     InvalidToken, "invalid_token"),
    ("non-ascii", lambda f: f.mint()[:-2] + "é", "evaluation:read",
     InvalidToken, "invalid_token"),
    ("huge", lambda f: f.mint(padding="x" * 20_000), "evaluation:read",
     InvalidToken, "invalid_token"),
    ("not-a-string", lambda f: 12345, "evaluation:read", InvalidToken, "invalid_token"),
]


@pytest.mark.parametrize("make, scope, exc_class, error",
                         [case[1:] for case in REJECTIONS], ids=[case[0] for case in REJECTIONS])
def test_rejections(fake, guard, make, scope, exc_class, error):
    token = make(fake, guard) if getattr(make, "needs_guard", False) else make(fake)
    with pytest.raises(exc_class) as caught:
        guard.validate(token, tenant=TENANT, scope=scope)
    assert caught.value.error == error
    assert caught.value.status_code == (403 if error == "insufficient_scope" else 401)
    assert caught.value.description
    if isinstance(token, str) and len(token) > 20:
        assert token not in caught.value.description  # never echo the credential


def test_valid_token_gives_its_claims(fake, guard):
    token = fake.mint()
    claims = guard.validate(token, tenant=TENANT, scope="evaluation:read")
    assert claims["tenant"] == TENANT
    assert claims["aud"] == AUDIENCE
    assert set(claims) >= {"iss", "sub", "aud", "client_id", "tenant", "scope", "grant_id",
                           "sid", "membership", "jti", "iat", "exp"}


@pytest.mark.parametrize("granted, required", [
    ("evaluation:write", "evaluation:read"),
    ("evaluation:write", "evaluation:write"),
    ("evaluation:read", "evaluation:read"),
    ("users:read evaluation:write", "users:read evaluation:read"),  # several scopes, all needed
])
def test_write_implies_read(fake, guard, granted, required):
    assert guard.validate(fake.mint(scope=granted), tenant=TENANT, scope=required)


def test_several_required_scopes_need_all(fake, guard):
    with pytest.raises(InsufficientScope) as caught:
        guard.validate(fake.mint(scope="users:read"), tenant=TENANT,
                       scope="users:read evaluation:read")
    assert caught.value.scope == "evaluation:read"


@pytest.mark.parametrize("changes", [
    lambda: {"aud": ["other-api", AUDIENCE]},  # RFC 7519: aud may be a list
    lambda: {"exp": now() - 10, "iat": now() - 310},  # within the 30 s leeway
    lambda: {"nbf": now() + 10},
    lambda: {"iat": now() + 10, "exp": now() + 300},
], ids=["aud-list", "expired-within-leeway", "nbf-within-leeway", "iat-within-leeway"])
def test_accepted_edge_cases(fake, guard, changes):
    assert guard.validate(fake.mint(**changes()), tenant=TENANT, scope="evaluation:read")


def test_typ_with_media_type_prefix_is_accepted(fake, guard):
    """RFC 9068 section 4: at+jwt or application/at+jwt."""
    token = fake.mint(header={"typ": "application/at+jwt"})
    assert guard.validate(token, tenant=TENANT, scope="tenant:read")


def test_rs256_tokens(fake, guard):
    fake.add_key("rsa-1", "RSA")
    assert guard.validate(fake.mint("rsa-1"), tenant=TENANT, scope="tenant:read")


def test_algorithm_allow_list_is_enforced_before_keys(fake):
    fake.add_key("rsa-1", "RSA")
    guard = TokenGuard(fake.issuer, AUDIENCE, algorithms=("ES256",))
    assert guard.validate(fake.mint(), tenant=TENANT, scope="tenant:read")
    jwks_fetches = fake.hits["jwks"]
    with pytest.raises(InvalidToken, match="algorithm RS256 is not accepted"):
        guard.validate(fake.mint("rsa-1"), tenant=TENANT, scope="tenant:read")
    assert fake.hits["jwks"] == jwks_fetches  # refused on the header, no key looked up


@pytest.mark.parametrize("algorithms", [("none",), ("HS256",), ("ES256", "HS256"), ()])
def test_unsafe_algorithms_cannot_be_configured(fake, algorithms):
    with pytest.raises(ValueError, match="algorithms"):
        TokenGuard(fake.issuer, AUDIENCE, algorithms=algorithms)


def test_an_hmac_jwk_in_the_key_set_is_never_used(fake, guard):
    """Even if the JWKS carried an oct key, HS256 stays refused (and the key ignored)."""
    original = fake._jwks

    def jwks_with_oct():
        response = original()
        keys = response.get_json()["keys"] + [{"kty": "oct", "kid": "hmac", "k": b64(b"s" * 32)}]
        response.set_data(json.dumps({"keys": keys}))
        return response

    fake.app.view_functions["_jwks"] = jwks_with_oct
    secret_input = f"{b64({'alg': 'HS256', 'typ': 'at+jwt', 'kid': 'hmac'})}.{b64(fake.claims())}"
    mac = hmac.new(b"s" * 32, secret_input.encode(), hashlib.sha256).digest()
    with pytest.raises(InvalidToken):
        guard.validate(f"{secret_input}.{b64(mac)}", tenant=TENANT, scope="tenant:read")
    assert guard.validate(fake.mint(), tenant=TENANT, scope="tenant:read")


# --- keys: discovery, caching, rotation ---

def test_key_rotation_refetches_once(fake, guard):
    assert guard.validate(fake.mint(), tenant=TENANT, scope="tenant:read")
    assert fake.hits["jwks"] == 1
    fake.add_key("k2")  # the issuer rotates: a new key appears in its JWKS
    token = fake.mint("k2")
    assert guard.validate(token, tenant=TENANT, scope="tenant:read")
    assert fake.hits["jwks"] == 2
    assert guard.validate(token, tenant=TENANT, scope="tenant:read")
    assert guard.validate(fake.mint(), tenant=TENANT, scope="tenant:read")  # old key still ok
    assert fake.hits["jwks"] == 2


def test_unknown_kid_refetch_is_rate_limited(fake, guard):
    guard.validate(fake.mint(), tenant=TENANT, scope="tenant:read")
    fake.add_key("ghost-1", publish=False)
    fake.add_key("ghost-2", publish=False)
    for kid in ("ghost-1", "ghost-2", "ghost-1"):
        with pytest.raises(InvalidToken, match="unknown key"):
            guard.validate(fake.mint(kid), tenant=TENANT, scope="tenant:read")
    assert fake.hits["jwks"] == 2  # the first load, then one refetch per interval


def test_jwks_is_refetched_after_max_age(fake, guard):
    guard.validate(fake.mint(), tenant=TENANT, scope="tenant:read")
    assert fake.hits["jwks"] == 1
    guard.discovery.keys._expires = 0.0  # as if max-age had passed
    guard.validate(fake.mint(), tenant=TENANT, scope="tenant:read")
    assert fake.hits["jwks"] == 2
    guard.validate(fake.mint(), tenant=TENANT, scope="tenant:read")
    assert fake.hits["jwks"] == 2


def test_a_removed_key_stops_verifying_after_refresh(fake, guard):
    token = fake.mint()
    assert guard.validate(token, tenant=TENANT, scope="tenant:read")
    fake.add_key("k2")
    fake.published.remove("k1")
    guard.discovery.keys._expires = 0.0
    with pytest.raises(InvalidToken, match="unknown key"):
        guard.validate(token, tenant=TENANT, scope="tenant:read")


@pytest.mark.parametrize("header, expected", [
    ("public, max-age=300", 300.0), ("max-age=60, must-revalidate", 60.0), ("no-store", 0.0),
    ("no-cache", 0.0), ("public", None), (None, None), ('max-age="120"', 120.0),
])
def test_cache_control_parsing(header, expected):
    from scopes.guard._http import max_age

    assert max_age(header) == expected


def test_discovery_falls_back_to_openid_configuration(fake, guard):
    fake.metadata_paths = {"/.well-known/openid-configuration"}
    assert guard.validate(fake.mint(), tenant=TENANT, scope="tenant:read")
    assert fake.hits["/.well-known/oauth-authorization-server"] == 1
    assert fake.hits["/.well-known/openid-configuration"] == 1


def test_metadata_of_another_issuer_is_refused(fake, guard):
    fake.metadata_overrides = {"issuer": "https://evil.example"}
    with pytest.raises(InvalidToken, match="metadata is unavailable"):
        guard.validate(fake.mint(), tenant=TENANT, scope="tenant:read")


def test_unreachable_issuer_fails_closed():
    from bench.common import free_port

    guard = TokenGuard(f"http://127.0.0.1:{free_port()}", AUDIENCE, http_timeout=2)
    with pytest.raises(InvalidToken, match="unavailable"):
        guard.validate("a.b.c", tenant=TENANT, scope="tenant:read")
    with pytest.raises(InvalidToken):  # retried only after jwks_refetch_interval
        guard.validate("a.b.c", tenant=TENANT, scope="tenant:read")


def test_discovery_is_done_once(fake, guard):
    for _ in range(3):
        guard.validate(fake.mint(), tenant=TENANT, scope="tenant:read")
    assert fake.hits["/.well-known/oauth-authorization-server"] == 1
    assert guard.discover()["jwks_uri"] == f"{fake.issuer}/jwks"


# --- arguments ---

@pytest.mark.parametrize("scope", ["evaluation:delete", "payments:sign", "evaluation", " "])
def test_unknown_scope_is_a_programming_error(fake, guard, scope):
    with pytest.raises(ValueError):
        guard.validate(fake.mint(), tenant=TENANT, scope=scope)
    with pytest.raises(UnknownScope):
        guard.require(scope)


def test_tenant_may_be_an_int(fake, guard):
    assert guard.validate(fake.mint(), tenant=int(TENANT), scope="tenant:read")


@pytest.mark.parametrize("kwargs", [
    {"issuer": "idp.example"}, {"audience": ""}, {"leeway": -1}, {"feed_staleness": 0},
    {"max_token_lifetime": 0},
    # NaN compares false with everything: a staleness of NaN would never fail closed, a
    # lifetime of NaN never refuse a long-lived token.
    {"feed_staleness": float("nan")}, {"max_token_lifetime": float("nan")},
    {"leeway": float("nan")},
])
def test_configuration_is_checked_at_start(kwargs):
    arguments = {"issuer": "https://idp.example", "audience": AUDIENCE, **kwargs}
    with pytest.raises(ValueError):
        TokenGuard(arguments.pop("issuer"), arguments.pop("audience"), **arguments)


# --- revocation set ---

def test_revocation_entries_live_as_long_as_tokens_can(fake, guard):
    assert guard.revoke("grant_id", "g-old", time.time() - 400) is False  # tokens expired
    assert not guard.is_revoked("grant_id", "g-old")
    assert guard.revoke("sid", "s-1", time.time())
    assert guard.is_revoked("sid", "s-1")
    guard.prune_revocations(now=time.time() + 100)
    assert guard.is_revoked("sid", "s-1")
    guard.prune_revocations(now=time.time() + 400)
    assert not guard.is_revoked("sid", "s-1")
    assert guard.revocation_count == 0


@pytest.mark.parametrize("args", [("jti", "x", 1.0), ("sid", "", 1.0), ("sid", "x", "now"),
                                  ("sid", "x", float("nan")), ("sid", "x", float("inf")),
                                  ("sid", "x", True), ("sid", 7, 1.0)])
def test_revoke_checks_its_arguments(guard, args):
    with pytest.raises(ValueError):
        guard.revoke(*args)


def test_revocation_does_not_touch_other_grants(fake, guard):
    token = fake.mint()
    guard.revoke("grant_id", "some-other-grant", time.time())
    assert guard.validate(token, tenant=TENANT, scope="tenant:read")


def test_no_listener_means_no_feed_check(fake, guard):
    assert not guard.feed_healthy
    assert guard.validate(fake.mint(), tenant=TENANT, scope="tenant:read")


def test_concurrent_validation(fake, guard):
    tokens = [fake.mint() for _ in range(4)]
    errors = []

    def work(token):
        try:
            for _ in range(50):
                guard.validate(token, tenant=TENANT, scope="evaluation:read")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in tokens * 2]
    for thread in threads:
        thread.start()
    for i in range(200):
        guard.revoke("grant_id", f"unrelated-{i}", time.time())
    for thread in threads:
        thread.join(30)
    assert errors == []


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.one_of(st.text(max_size=300), st.binary(max_size=300),
                         st.lists(st.text(alphabet="AZaz09-_=+/", max_size=60),
                                  min_size=1, max_size=5).map(".".join)))
def test_garbage_only_ever_raises_invalid_token(fake, guard, garbage):
    with pytest.raises(InvalidToken):
        guard.validate(garbage, tenant=TENANT, scope="tenant:read")


@settings(max_examples=300, deadline=None)
@given(signature=st.one_of(
    st.binary(min_size=64, max_size=64),
    st.tuples(st.sampled_from([0x00, 0x01, 0x7f, 0x80, 0xff]), st.binary(min_size=31, max_size=31),
              st.sampled_from([0x00, 0x01, 0x7f, 0x80, 0xff]), st.binary(min_size=31, max_size=31))
    .map(lambda p: bytes([p[0]]) + p[1] + bytes([p[2]]) + p[3])))
def test_der_fast_path_equals_cryptography(signature):
    """The hot path builds the DER signature from a template; it must equal
    encode_dss_signature whenever it is used."""
    from scopes.guard.jws import _DER_TEMPLATES, raw_to_der

    r0, s0 = signature[0], signature[32]
    if r0 and s0:
        fast = _DER_TEMPLATES[(r0 >> 7) | (s0 >> 7 << 1)] % (signature[:32], signature[32:])
        assert fast == raw_to_der(signature)


def test_many_signatures_verify(fake, guard):
    """Signatures of every shape (high bits, leading zero bytes) go through."""
    for _ in range(300):
        assert guard.validate(fake.mint(), tenant=TENANT, scope="tenant:read")


# --- tokens minted by the bridge itself ---

def test_accepts_tokens_minted_by_the_bridge_code(fake, guard):
    from idp_bridge.domain.tokens import Family, TokenIssuer

    class KeyRing:
        def signing_key(self):
            return "k1", "ES256", fake.keys["k1"]

    family = Family(sid="s-1", membership_id="m-1", grant_id="g-1", client_id="advisor-console",
                    subject="bob", tenant_id=TENANT, scope=" ".join(advisor_scopes()),
                    audience=AUDIENCE, auth_time=now(), acr="1", amr=["pwd"])
    issued = TokenIssuer(KeyRing(), issuer=fake.issuer, access_lifetime=300,
                         refresh_lifetime=3600).mint_access_token(family, "temporary")
    claims = guard.validate(issued.token, tenant=TENANT, scope="evaluation:read")
    assert claims["grant_id"] == "g-1" and claims["membership"] == "temporary"
    guard.revoke("grant_id", "g-1", time.time())
    with pytest.raises(InvalidToken, match="revoked"):
        guard.validate(issued.token, tenant=TENANT, scope="evaluation:read")


class TestClientHTTP:
    """Routes the guard's GETs to a Flask test client (the bridge is not served over HTTP)."""

    def __init__(self, client, issuer):
        self.client, self.issuer = client, issuer

    def get(self, url, **kwargs):
        response = self.client.get(url.removeprefix(self.issuer))
        return SimpleNamespace(status_code=response.status_code, headers=response.headers,
                               json=response.get_json)


TestClientHTTP.__test__ = False


def test_accepts_a_token_from_a_real_exchange(bridge):
    issuer = "http://127.0.0.1:8000"
    body = bridge.join("bob")
    guard = TokenGuard(issuer, AUDIENCE, http=TestClientHTTP(bridge.client, issuer))
    claims = guard.validate(body["access_token"], tenant=TENANT, scope="evaluation:read")
    assert claims["tenant"] == TENANT
    with pytest.raises(InvalidToken, match="tenant"):
        guard.validate(body["access_token"], tenant=OTHER_TENANT, scope="evaluation:read")


# --- the Flask decorator (RFC 6750) ---

@pytest.fixture
def api(fake, guard):
    app = Flask("resource-server")

    @app.get("/tenants/<tenant>/evaluations")
    @guard.require("evaluation:read")
    def evaluations(tenant):
        return {"tenant": g.tenant, "sub": g.token_claims["sub"], "url_tenant": tenant}

    @app.post("/tenants/<mandant>/users")
    @guard.require("users:write", tenant_arg="mandant")
    def create_user(mandant):
        return {"created": True}

    return app.test_client()


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def challenge_params(header: str) -> dict:
    assert header.startswith("Bearer ")
    params = {}
    for part in header[len("Bearer "):].split('", '):
        name, _, value = part.partition("=")
        params[name.strip()] = value.strip('"')
    return params


def test_require_passes_claims_on_g(fake, api):
    token = fake.mint(sub="advisor-7")
    response = api.get(f"/tenants/{TENANT}/evaluations", headers=bearer(token))
    assert response.status_code == 200
    assert response.json == {"tenant": TENANT, "sub": "advisor-7", "url_tenant": TENANT}


def test_require_accepts_lowercase_scheme(fake, api):
    response = api.get(f"/tenants/{TENANT}/evaluations",
                       headers={"Authorization": f"bearer {fake.mint()}"})
    assert response.status_code == 200


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic dXNlcjpwYXNz"}])
def test_require_without_token_answers_a_bare_challenge(api, headers):
    response = api.get(f"/tenants/{TENANT}/evaluations", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == f'Bearer realm="{AUDIENCE}"'
    assert "error" not in response.json  # RFC 6750 section 3.1: no error code


def test_require_with_invalid_token(fake, api):
    response = api.get(f"/tenants/{TENANT}/evaluations",
                       headers=bearer(fake.mint(exp=now() - 100, iat=now() - 400)))
    assert response.status_code == 401
    assert response.json == {"error": "invalid_token", "error_description": "token has expired"}
    params = challenge_params(response.headers["WWW-Authenticate"])
    assert params == {"realm": AUDIENCE, "error": "invalid_token",
                      "error_description": "token has expired"}
    assert response.headers["Cache-Control"] == "no-store"


def test_require_with_insufficient_scope(fake, api):
    response = api.post(f"/tenants/{TENANT}/users", headers=bearer(fake.mint()))  # advisor: read
    assert response.status_code == 403
    assert response.json["error"] == "insufficient_scope"
    params = challenge_params(response.headers["WWW-Authenticate"])
    assert params["error"] == "insufficient_scope"
    assert params["scope"] == "users:write"
    assert params["realm"] == AUDIENCE


def test_require_with_another_tenant_in_the_url(fake, api):
    """A token of tenant A used on tenant B's URL is not valid for this resource: 401
    invalid_token (RFC 6750 section 3.1), not 403 - no scope would make it acceptable."""
    response = api.get(f"/tenants/{OTHER_TENANT}/evaluations", headers=bearer(fake.mint()))
    assert response.status_code == 401
    assert response.json["error"] == "invalid_token"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "Bearer a b"])
def test_require_with_malformed_header(api, value):
    response = api.get(f"/tenants/{TENANT}/evaluations", headers={"Authorization": value})
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    assert 'error="invalid_request"' in response.headers["WWW-Authenticate"]


def test_challenge_quotes_are_safe(guard):
    header = guard.challenge(InvalidToken('bad "token" \\ with\nnewline'))
    assert '\n' not in header
    assert challenge_params(header)["error_description"] == "bad ?token? ? with?newline"


def test_guard_errors_are_one_family():
    assert issubclass(InvalidToken, GuardError) and issubclass(InsufficientScope, GuardError)
    assert (InvalidToken.error, InvalidToken.status_code) == ("invalid_token", 401)
    assert (InsufficientScope.error, InsufficientScope.status_code) == ("insufficient_scope", 403)


@pytest.mark.slow
def test_import_needs_neither_idp_bridge_nor_flask():
    code = ("import scopes.guard, sys; "
            "assert not any(m.startswith('idp_bridge') for m in sys.modules), 'idp_bridge'; "
            "assert 'flask' not in sys.modules, 'flask'")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
