"""DPoP at the token endpoint (RFC 9449 sections 4, 5, 6, 8; issue 13 item 7).

A proof on an exchange binds the family and the access token (``cnf.jkt``, ``token_type:
DPoP``); a refresh of a bound family needs a proof of the same key; every refused proof is
``400 invalid_dpop_proof`` with nothing minted; server nonces are ``use_dpop_nonce`` with a
``DPoP-Nonce`` header and hold across bridge processes sharing the secret; a client with
``dpop_required`` cannot get tokens without a proof; introspection answers ``cnf``.

Proofs are made with joserfc (not with the bridge's own checker), see :class:`Holder`.
"""

from __future__ import annotations

import secrets
import time

import pytest
from click.testing import CliRunner
from joserfc import jwt
from sqlalchemy import func, select, update

from conftest import CLIENT_ID, TENANT, verify_access_token
from idp_bridge.cli import main as cli
from idp_bridge.storage import models
from test_dpop_guard import Holder as ProofHolder

ISSUER = "http://127.0.0.1:8000"
TOKEN_URL = ISSUER + "/token"


class Holder(ProofHolder):
    """A client's DPoP key pair; its proofs are for the token endpoint unless told."""

    DEFAULT_URL = TOKEN_URL
    DEFAULT_METHOD = "POST"


def exchange(bridge, proof=None, *, headers=None, user="bob", auth=None, **extra):
    from conftest import ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE

    data = {"grant_type": TOKEN_EXCHANGE, "subject_token": bridge.upstream_token(user),
            "subject_token_type": ACCESS_TOKEN_TYPE, "tenant": TENANT, **extra}
    sent = dict(headers or {})
    if proof is not None:
        sent["DPoP"] = proof
    return bridge.client.post("/token", data=data, auth=auth or bridge.auth(), headers=sent)


def refresh(bridge, refresh_token, proof=None, **kwargs):
    headers = {"DPoP": proof} if proof is not None else {}
    return bridge.client.post("/token", data={"grant_type": "refresh_token",
                                              "refresh_token": refresh_token},
                              auth=kwargs.get("auth") or bridge.auth(), headers=headers)


def families(bridge) -> int:
    with bridge.services.db.read() as session:
        return session.scalar(select(func.count()).select_from(models.TokenFamily))


def assert_refused(response, error="invalid_dpop_proof", status=400):
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.json["error"] == error
    assert "access_token" not in response.json


@pytest.fixture
def member(bridge):
    """bob is a member of the tenant (joined by code, with a Bearer family)."""
    bridge.join("bob")
    return bridge


# --- binding ---

@pytest.mark.parametrize("alg", ["ES256", "ES384", "PS256", "RS256", "EdDSA"])
def test_exchange_with_a_proof_binds_the_tokens(member, alg):
    holder = Holder(alg)
    response = exchange(member, holder.proof())
    assert response.status_code == 200, response.json
    body = response.json
    assert body["token_type"] == "DPoP"
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert "DPoP-Nonce" not in response.headers  # nonces are off by default
    _, claims = verify_access_token(member, body["access_token"])
    assert claims["cnf"] == {"jkt": holder.jkt}
    with member.services.db.read() as session:
        family = session.get(models.TokenFamily, claims["sid"])
        assert family.dpop_jkt == holder.jkt


def test_exchange_without_a_proof_stays_bearer(member):
    response = exchange(member)
    assert response.status_code == 200
    assert response.json["token_type"] == "Bearer"
    assert "cnf" not in verify_access_token(member, response.json["access_token"])[1]


def test_metadata_advertises_the_proof_algorithms(bridge):
    metadata = bridge.client.get("/.well-known/oauth-authorization-server").json
    assert metadata["dpop_signing_alg_values_supported"] == [
        "ES256", "ES384", "PS256", "RS256", "EdDSA"]


def test_refresh_needs_a_proof_of_the_same_key(member):
    holder = Holder()
    first = exchange(member, holder.proof()).json
    # No proof, or another key's: invalid_grant, and the refresh token is not used up.
    assert_refused(refresh(member, first["refresh_token"]), "invalid_grant")
    assert_refused(refresh(member, first["refresh_token"], Holder().proof()), "invalid_grant")
    with member.services.db.read() as session:
        row = session.get(models.RefreshToken,
                          __import__("hashlib").sha256(first["refresh_token"].encode()).hexdigest())
        assert row.rotated_at is None
    response = refresh(member, first["refresh_token"], holder.proof())
    assert response.status_code == 200, response.json
    assert response.json["token_type"] == "DPoP"
    assert response.json["refresh_token"] != first["refresh_token"]  # still rotates
    _, claims = verify_access_token(member, response.json["access_token"])
    assert claims["cnf"] == {"jkt": holder.jkt}
    # And the rotated one is replay, as ever.
    assert_refused(refresh(member, first["refresh_token"], holder.proof()), "invalid_grant")


def test_refresh_of_a_bearer_family_with_a_proof_binds_that_access_token(member):
    first = exchange(member).json
    holder = Holder()
    response = refresh(member, first["refresh_token"], holder.proof())
    assert response.status_code == 200, response.json
    assert response.json["token_type"] == "DPoP"
    assert verify_access_token(member, response.json["access_token"])[1]["cnf"] == {
        "jkt": holder.jkt}


def test_introspection_answers_cnf(member):
    holder = Holder()
    body = exchange(member, holder.proof()).json
    access = member.introspect(body["access_token"]).json
    assert access["active"] is True
    assert access["cnf"] == {"jkt": holder.jkt}
    assert access["token_type"] == "DPoP"
    refresh_info = member.introspect(body["refresh_token"], hint="refresh_token").json
    assert refresh_info["active"] is True and refresh_info["cnf"] == {"jkt": holder.jkt}
    bearer = member.introspect(exchange(member).json["access_token"]).json
    assert "cnf" not in bearer and bearer["token_type"] == "Bearer"


# --- refused proofs: 400 invalid_dpop_proof, nothing minted ---

def _other_key_signature(h: Holder) -> str:
    # The header names h's key, the signature is another key's.
    other = Holder(h.alg)
    return jwt.encode({"typ": "dpop+jwt", "alg": h.alg, "jwk": h.public}, h.claims(),
                      other.key, algorithms=[h.alg])


def _private_jwk(h: Holder) -> str:
    return h.proof(jwk=h.key.as_dict(private=True))


REFUSED = [
    ("typ jwt", lambda h: h.proof(header={"typ": "jwt"})),
    ("alg none", lambda h: h.unsigned({"typ": "dpop+jwt", "alg": "none", "jwk": h.public},
                                      signature=b"")),
    ("alg HS256", lambda h: h.unsigned({"typ": "dpop+jwt", "alg": "HS256", "jwk": h.public})),
    ("no jwk", lambda h: h.unsigned({"typ": "dpop+jwt", "alg": "ES256"})),
    ("private key in jwk", _private_jwk),
    ("symmetric jwk", lambda h: h.unsigned({"typ": "dpop+jwt", "alg": "ES256",
                                            "jwk": {"kty": "oct", "k": "c2VjcmV0"}})),
    ("jwk of another type than alg", lambda h: h.unsigned(
        {"typ": "dpop+jwt", "alg": "RS256", "jwk": h.public})),
    ("crit header", lambda h: h.unsigned({"typ": "dpop+jwt", "alg": "ES256", "jwk": h.public,
                                          "crit": ["exp"], "exp": 1})),
    ("signature of another key", _other_key_signature),
    ("htm GET", lambda h: h.proof(method="GET")),
    ("htu of another host", lambda h: h.proof("http://127.0.0.1:8001/token")),
    ("htu of another path", lambda h: h.proof(ISSUER + "/introspect")),
    ("htu of the Host header", lambda h: h.proof("http://localhost/token")),
    ("iat 2 minutes old", lambda h: h.proof(iat=int(time.time()) - 120)),
    ("iat 1 minute ahead", lambda h: h.proof(iat=int(time.time()) + 60)),
    ("iat a string", lambda h: h.proof(iat="now")),
    ("no jti", lambda h: h.proof(jti=None)),
    ("not a JWS", lambda h: "not-a-proof"),
]


@pytest.mark.parametrize("make", [m for _, m in REFUSED], ids=[n for n, _ in REFUSED])
def test_refused_proofs(member, make):
    before = families(member)
    assert_refused(exchange(member, make(Holder())))
    assert families(member) == before


def test_an_rsa_key_below_2048_bits_is_refused(member):
    holder = Holder("RS256", size=1024)
    assert_refused(exchange(member, holder.proof()))


def test_two_dpop_headers_are_refused(member):
    holder = Holder()
    before = families(member)
    response = member.client.post("/token", data={
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": member.upstream_token("bob"),
        "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "tenant": TENANT}, auth=member.auth(),
        headers=[("DPoP", holder.proof()), ("DPoP", holder.proof())])
    assert_refused(response)
    assert families(member) == before


def test_a_replayed_proof_is_refused(member):
    holder = Holder()
    proof = holder.proof()
    assert exchange(member, proof).status_code == 200
    before = families(member)
    assert_refused(exchange(member, proof))
    assert families(member) == before


def test_a_proof_replayed_at_another_bridge_process_is_refused(member, bridge_with):
    # Two processes on one database: the jti is remembered in the database.
    other = bridge_with(database_url=member.services.settings.database_url)
    other.secret = member.secret
    proof = Holder().proof()
    assert exchange(member, proof).status_code == 200
    assert_refused(exchange(other, proof))


def test_htu_is_compared_normalised(member):
    holder = Holder()
    response = exchange(member, holder.proof("HTTP://127.0.0.1:8000/token?x=1#f"))
    assert response.status_code == 200, response.json


# --- clients that must use DPoP ---

def _require_dpop(bridge, client_id=CLIENT_ID):
    with bridge.services.db.transaction() as session:
        session.execute(update(models.Client).where(models.Client.client_id == client_id)
                        .values(dpop_required=True))
    bridge.services.server._clients.clear()


def test_a_client_requiring_dpop_gets_nothing_without_a_proof(member):
    bearer = exchange(member).json
    _require_dpop(member)
    before = families(member)
    assert_refused(exchange(member))
    assert_refused(refresh(member, bearer["refresh_token"]))
    assert families(member) == before
    response = exchange(member, Holder().proof())
    assert response.status_code == 200 and response.json["token_type"] == "DPoP"


def test_clients_add_dpop_required(tmp_path, settings):
    from conftest import build_app

    url = f"sqlite:///{tmp_path}/cli.sqlite"
    upgraded = CliRunner().invoke(cli, ["--database-url", url, "db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    result = CliRunner().invoke(cli, ["--database-url", url, "clients", "add", "pinned",
                                      "--dpop-required"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "DPoP required" in result.output
    app = build_app(settings.replace(database_url=url))
    with app.extensions["idp_bridge"].db.read() as session:
        assert session.get(models.Client, "pinned").dpop_required is True
        assert session.get(models.Client, "pinned").auth_method == "client_secret_basic"


# --- server nonces ---

@pytest.fixture
def nonce_bridge(bridge_with):
    bridge = bridge_with(dpop_nonce_required=True)
    bridge.join("bob")
    return bridge


def test_a_proof_without_the_nonce_gets_one(nonce_bridge):
    holder = Holder()
    before = families(nonce_bridge)
    first = exchange(nonce_bridge, holder.proof())
    assert_refused(first, "use_dpop_nonce")
    nonce = first.headers["DPoP-Nonce"]
    assert families(nonce_bridge) == before
    response = exchange(nonce_bridge, holder.proof(nonce=nonce))
    assert response.status_code == 200, response.json
    assert response.headers["DPoP-Nonce"] == nonce  # the current one, for the next proof
    body = response.json
    again = refresh(nonce_bridge, body["refresh_token"], holder.proof(nonce=nonce))
    assert again.status_code == 200, again.json


@pytest.mark.parametrize("nonce", ["A" * 24, "short", "x" * 300])
def test_a_wrong_nonce_is_refused_with_the_current_one(nonce_bridge, nonce):
    response = exchange(nonce_bridge, Holder().proof(nonce=nonce))
    assert_refused(response, "use_dpop_nonce")
    assert len(response.headers["DPoP-Nonce"]) == 24


def test_nonces_are_checked_without_state_by_every_process(nonce_bridge, bridge_with):
    settings = nonce_bridge.services.settings
    other = bridge_with(database_url=settings.database_url, secret_key=settings.secret_key,
                        dpop_nonce_required=True)
    other.secret = nonce_bridge.secret
    nonce = exchange(nonce_bridge, Holder().proof()).headers["DPoP-Nonce"]
    assert exchange(other, Holder().proof(nonce=nonce)).status_code == 200
    # Another secret (another deployment) does not accept it.
    stranger = bridge_with(database_url=settings.database_url, dpop_nonce_required=True,
                           secret_key=secrets.token_urlsafe(32))
    stranger.secret = nonce_bridge.secret
    assert_refused(exchange(stranger, Holder().proof(nonce=nonce)), "use_dpop_nonce")


def test_nonces_rotate():
    from scopes.guard.dpop import NonceSource

    source = NonceSource(b"k" * 32, lifetime=300)
    now = 1_800_000_000.0
    first = source.current(now)
    assert source.check(first, now + 299)
    assert source.current(now + 300) != first
    assert source.check(first, now + 300)      # the previous slot's nonce still holds
    assert not source.check(first, now + 600)  # two slots later it does not


# --- the pages' hand-off ---

def test_open_tenant_is_refused_for_an_application_client_requiring_dpop(bridge_with):
    from test_pages_helpers import EN, post_form_page, signed_in, text_of

    bridge = bridge_with(app_url="https://app.konfipay.example/tenants/{tenant}/open")
    bridge.join("bob")
    _require_dpop(bridge)
    before = families(bridge)
    page = signed_in(bridge.app, "bob")
    response = post_form_page(page, f"/advisor/tenants/{TENANT}/open", headers=EN)
    assert response.status_code == 403, response.get_data(as_text=True)[:300]
    assert "only accepts tokens bound to its own key (DPoP)" in text_of(response)
    assert "access_token" not in response.get_data(as_text=True)
    assert families(bridge) == before
