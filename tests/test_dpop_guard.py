"""DPoP at the resource server: ``scopes.guard`` (RFC 9449 section 7; issue 13 item 8).

A token bound to a key (``cnf.jkt``) is accepted only as ``Authorization: DPoP`` with exactly
one proof of that key for this method and URL (the configured external URL, never the Host
header) naming this token (``ath``), fresh, not replayed, and with the resource server's
nonce when it asks for one; a bound token sent as Bearer is refused. Refusals are 401 with
``error`` in the body and in the challenge of the scheme used; the DPoP challenge lists the
accepted algorithms.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid

import pytest
from flask import Flask, g, jsonify
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

from scopes.guard import TokenGuard
from scopes.guard.dpop import DPoPError, ProofVerifier, ReplayCache, access_token_hash
from test_guard import AUDIENCE, TENANT, fake, loopback  # noqa: F401 - fixtures

RS_URL = "https://rs.konfipay.example"
PATH = f"/tenants/{TENANT}/payments"
URL = RS_URL + PATH


def b64(data) -> str:
    if not isinstance(data, bytes):
        data = json.dumps(data).encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Holder:
    """A client's DPoP key pair and the proofs it signs (with joserfc, not with the guard's
    own code), by default for :data:`URL` with GET."""

    DEFAULT_URL = URL
    DEFAULT_METHOD = "GET"

    def __init__(self, alg: str = "ES256", *, size: int = 2048):
        self.alg = alg
        if alg in ("ES256", "ES384"):
            self.key = ECKey.generate_key("P-256" if alg == "ES256" else "P-384")
        elif alg == "EdDSA":
            self.key = OKPKey.generate_key("Ed25519")
        else:
            self.key = RSAKey.generate_key(size)
        self.public = self.key.as_dict(private=False)
        self.jkt = self.key.thumbprint()

    def claims(self, url=None, method=None, *, access_token=None, nonce=None,
               iat=None, **extra) -> dict:
        url = url or self.DEFAULT_URL
        method = method or self.DEFAULT_METHOD
        claims = {"jti": str(uuid.uuid4()), "htm": method, "htu": url,
                  "iat": int(time.time()) if iat is None else iat}
        if access_token is not None:
            claims["ath"] = access_token_hash(access_token)
        if nonce is not None:
            claims["nonce"] = nonce
        claims.update(extra)
        return {k: v for k, v in claims.items() if v is not None}

    def proof(self, url=None, method=None, *, header=None, jwk=None, **claims) -> str:
        protected = {"typ": "dpop+jwt", "alg": self.alg, "jwk": jwk or self.public,
                     **(header or {})}
        return jwt.encode(protected, self.claims(url, method, **claims), self.key,
                          algorithms=[self.alg])

    def unsigned(self, header: dict, claims: dict | None = None, signature=b"x" * 64) -> str:
        """A proof with an arbitrary header and a meaningless signature."""
        return ".".join([b64(header), b64(claims or self.claims()), b64(signature)])



def make_app(guard: TokenGuard) -> Flask:
    app = Flask("dpop-rs")

    @app.get("/tenants/<tenant>/payments")
    @guard.require("payments:read")
    def payments(tenant):
        return jsonify(sub=g.token_claims["sub"])

    @app.post("/tenants/<tenant>/payments")
    @guard.require("payments:read")
    def post_payments(tenant):
        return jsonify(ok=True)

    return app


@pytest.fixture
def rs(fake):  # noqa: F811
    guard = TokenGuard(fake.issuer, AUDIENCE, dpop_url=RS_URL)
    return guard, make_app(guard).test_client()


@pytest.fixture
def holder():
    return Holder()


def call(client, token, proof=None, *, scheme="DPoP", method="get", path=PATH, proofs=None):
    headers = [("Authorization", f"{scheme} {token}")]
    for value in proofs if proofs is not None else ([proof] if proof is not None else []):
        headers.append(("DPoP", value))
    return getattr(client, method)(path, headers=headers)


def challenges(response) -> dict[str, str]:
    return {value.split(" ", 1)[0]: value for value in response.headers.getlist("WWW-Authenticate")}


def assert_refused(response, error, *, scheme="DPoP", status=401):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.json["error"] == error
    found = challenges(response)
    assert set(found) == {"Bearer", "DPoP"}
    assert f'error="{error}"' in found[scheme]
    other = ({"Bearer", "DPoP"} - {scheme}).pop()
    assert "error=" not in found[other]
    assert 'algs="ES256 PS256 RS256 EdDSA ES384"' in found["DPoP"]


def bound(fake, holder, **changes):  # noqa: F811
    return fake.mint(cnf={"jkt": holder.jkt}, **changes)


# --- accepted ---

def test_a_bound_token_with_its_proof_is_accepted(fake, rs, holder):  # noqa: F811
    _, client = rs
    token = bound(fake, holder)
    response = call(client, token, holder.proof(URL, "GET", access_token=token))
    assert response.status_code == 200, response.json
    # Each request needs its own proof; the scheme name is case-insensitive.
    again = call(client, token, holder.proof(URL, "GET", access_token=token), scheme="dpop")
    assert again.status_code == 200


def test_htu_ignores_the_query_and_compares_normalised(fake, rs, holder):  # noqa: F811
    _, client = rs
    token = bound(fake, holder)
    proof = holder.proof("HTTPS://RS.konfipay.example:443" + PATH, "GET", access_token=token)
    assert call(client, token, proof, path=PATH + "?page=2").status_code == 200


@pytest.mark.parametrize("alg", ["PS256", "RS256", "EdDSA", "ES384"])
def test_every_accepted_algorithm(fake, rs, alg):  # noqa: F811
    _, client = rs
    holder = Holder(alg)
    token = bound(fake, holder)
    assert call(client, token, holder.proof(URL, "GET", access_token=token)).status_code == 200


def test_unbound_bearer_tokens_still_work(fake, rs):  # noqa: F811
    _, client = rs
    response = call(client, fake.mint(), scheme="Bearer")
    assert response.status_code == 200


def test_no_credentials_get_both_challenges(rs):
    _, client = rs
    response = client.get(PATH)
    assert response.status_code == 401
    found = challenges(response)
    assert found["Bearer"] == f'Bearer realm="{AUDIENCE}"'
    assert found["DPoP"] == f'DPoP realm="{AUDIENCE}", algs="ES256 PS256 RS256 EdDSA ES384"'


# --- refused ---

def test_a_bound_token_sent_as_bearer_is_refused(fake, rs, holder):  # noqa: F811
    _, client = rs
    token = bound(fake, holder)
    response = call(client, token, holder.proof(URL, "GET", access_token=token), scheme="Bearer")
    assert_refused(response, "invalid_token", scheme="Bearer")


def test_the_dpop_scheme_needs_a_bound_token(fake, rs, holder):  # noqa: F811
    _, client = rs
    token = fake.mint()
    assert_refused(call(client, token, holder.proof(URL, "GET", access_token=token)),
                   "invalid_token")


def _other_key(fake, holder, token):  # noqa: F811
    return Holder().proof(URL, "GET", access_token=token)


REFUSED = [
    ("no proof", lambda h, t: []),
    ("two proofs", lambda h, t: [h.proof(URL, "GET", access_token=t),
                                 h.proof(URL, "GET", access_token=t)]),
    ("two proofs in one header", lambda h, t: [h.proof(URL, "GET", access_token=t) + ", "
                                               + h.proof(URL, "GET", access_token=t)]),
    ("typ jwt", lambda h, t: [h.proof(URL, "GET", access_token=t, header={"typ": "jwt"})]),
    ("alg none", lambda h, t: [h.unsigned({"typ": "dpop+jwt", "alg": "none", "jwk": h.public},
                                          h.claims(URL, "GET", access_token=t), b"")]),
    ("alg HS256", lambda h, t: [h.unsigned({"typ": "dpop+jwt", "alg": "HS256", "jwk": h.public},
                                           h.claims(URL, "GET", access_token=t))]),
    ("private key in jwk", lambda h, t: [h.proof(URL, "GET", access_token=t,
                                                 jwk=h.key.as_dict(private=True))]),
    ("signed by another key than cnf.jkt", lambda h, t: [Holder().proof(URL, "GET",
                                                                        access_token=t)]),
    ("htm POST", lambda h, t: [h.proof(URL, "POST", access_token=t)]),
    ("htu of another URL", lambda h, t: [h.proof(RS_URL + "/tenants/20077/payments", "GET",
                                                 access_token=t)]),
    ("htu of the Host header", lambda h, t: [h.proof("http://localhost" + PATH, "GET",
                                                     access_token=t)]),
    ("iat 2 minutes old", lambda h, t: [h.proof(URL, "GET", access_token=t,
                                                iat=int(time.time()) - 120)]),
    ("iat 1 minute ahead", lambda h, t: [h.proof(URL, "GET", access_token=t,
                                                 iat=int(time.time()) + 60)]),
    ("no ath", lambda h, t: [h.proof(URL, "GET")]),
    ("ath of another token", lambda h, t: [h.proof(URL, "GET", access_token=t + "x")]),
]


@pytest.mark.parametrize("make", [m for _, m in REFUSED], ids=[n for n, _ in REFUSED])
def test_refused_proofs(fake, rs, holder, make):  # noqa: F811
    _, client = rs
    token = bound(fake, holder)
    assert_refused(call(client, token, proofs=make(holder, token)), "invalid_dpop_proof")


def test_a_replayed_proof_is_refused(fake, rs, holder):  # noqa: F811
    _, client = rs
    token = bound(fake, holder)
    proof = holder.proof(URL, "GET", access_token=token)
    assert call(client, token, proof).status_code == 200
    assert_refused(call(client, token, proof), "invalid_dpop_proof")


def test_a_proof_for_get_is_refused_for_post(fake, rs, holder):  # noqa: F811
    _, client = rs
    token = bound(fake, holder)
    proof = holder.proof(URL, "GET", access_token=token)
    assert_refused(call(client, token, proof, method="post"), "invalid_dpop_proof")


def test_dpop_required_refuses_unbound_tokens(fake):  # noqa: F811
    guard = TokenGuard(fake.issuer, AUDIENCE, dpop_url=RS_URL, dpop_required=True)
    client = make_app(guard).test_client()
    assert_refused(call(client, fake.mint(), scheme="Bearer"), "invalid_token", scheme="Bearer")


def test_a_guard_without_dpop_url_refuses_bound_tokens(fake, holder):  # noqa: F811
    guard = TokenGuard(fake.issuer, AUDIENCE)
    client = make_app(guard).test_client()
    token = bound(fake, holder)
    response = call(client, token, holder.proof(URL, "GET", access_token=token))
    assert response.status_code == 401 and response.json["error"] == "invalid_dpop_proof"
    bearer = call(client, token, scheme="Bearer")
    assert bearer.status_code == 401 and bearer.json["error"] == "invalid_token"
    # Without DPoP configured, only the Bearer challenge (unchanged behaviour).
    assert [v.split(" ")[0] for v in bearer.headers.getlist("WWW-Authenticate")] == ["Bearer"]


# --- resource-server nonces ---

def test_resource_server_nonces(fake, holder):  # noqa: F811
    guard = TokenGuard(fake.issuer, AUDIENCE, dpop_url=RS_URL, dpop_nonce_secret=b"n" * 32)
    client = make_app(guard).test_client()
    token = bound(fake, holder)
    first = call(client, token, holder.proof(URL, "GET", access_token=token))
    assert_refused(first, "use_dpop_nonce")
    nonce = first.headers["DPoP-Nonce"]
    wrong = call(client, token, holder.proof(URL, "GET", access_token=token, nonce="B" * 24))
    assert_refused(wrong, "use_dpop_nonce")
    ok = call(client, token, holder.proof(URL, "GET", access_token=token, nonce=nonce))
    assert ok.status_code == 200, ok.json
    # Another resource server process with the same secret accepts the nonce (stateless).
    other = make_app(TokenGuard(fake.issuer, AUDIENCE, dpop_url=RS_URL,
                                dpop_nonce_secret=b"n" * 32)).test_client()
    assert call(other, token, holder.proof(URL, "GET", access_token=token,
                                           nonce=nonce)).status_code == 200


# --- the replay cache ---

def test_the_replay_cache_is_bounded_and_fails_closed():
    cache = ReplayCache(lifetime=70, capacity=2)
    assert cache.remember("k", "a", 1000) and cache.remember("k", "b", 1000)
    with pytest.raises(DPoPError):
        cache.remember("k", "c", 1001)  # full of live entries: refuse, never forget one
    assert not cache.remember("k", "a", 1050)  # still a replay
    assert cache.remember("k", "c", 1070)  # the first two expired: room again
    assert len(cache) == 1
    assert cache.remember("other key", "c", 1070)  # per key


def test_the_replay_cache_is_shared_across_threads():
    holder = Holder()
    verifier = ProofVerifier(replay=ReplayCache(70))
    proof = holder.proof(URL, "GET")
    results = []
    barrier = threading.Barrier(8)

    def present():
        barrier.wait()
        try:
            verifier.verify([proof], method="GET", url=URL)
            results.append("ok")
        except DPoPError:
            results.append("refused")

    threads = [threading.Thread(target=present) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["ok"] + ["refused"] * 7


def test_configuration_is_checked_when_made(fake):  # noqa: F811
    with pytest.raises(ValueError):
        TokenGuard(fake.issuer, AUDIENCE, dpop_url=RS_URL, dpop_algorithms=("HS256",))
    with pytest.raises(ValueError):
        TokenGuard(fake.issuer, AUDIENCE, dpop_required=True)
    with pytest.raises(ValueError):
        TokenGuard(fake.issuer, AUDIENCE, dpop_url="/relative")


def test_validate_request_without_flask(fake, holder):  # noqa: F811
    from scopes.guard import InvalidDPoPProof, authorization_credentials

    guard = TokenGuard(fake.issuer, AUDIENCE, dpop_url=RS_URL)
    token = bound(fake, holder)
    scheme, value = authorization_credentials(f"DPoP {token}")
    claims = guard.validate_request(scheme, value, [holder.proof(URL, "GET", access_token=token)],
                                    method="GET", path=PATH, tenant=TENANT, scope="payments:read")
    assert claims["cnf"] == {"jkt": holder.jkt}
    with pytest.raises(InvalidDPoPProof) as caught:
        guard.validate_request(scheme, value, [], method="GET", path=PATH, tenant=TENANT,
                               scope="payments:read")
    assert caught.value.error == "invalid_dpop_proof" and caught.value.status_code == 401
