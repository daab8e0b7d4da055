"""Upstream subject tokens go through the guard's strict JWS verifier (issue 16 item 4):
``SubjectTokenValidator.verify`` uses :class:`scopes.guard.jws.JWSVerifier`, so the JWS rules
have one home. Each rule is shown to refuse, and to change nothing: no key set is fetched for
a token refused by its header, the key set is refetched for an unknown ``kid`` at most every
few seconds, and at the token endpoint no token, membership or audit event appears.

Tokens are signed by hand (``cryptography``) so that any header or encoding can be made, and,
for interop, by joserfc and PyJWT."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc import jwt as jose_jwt
from joserfc.jwk import RSAKey

from conftest import active_memberships, audit_events
from idp_bridge.upstream import oidc
from idp_bridge.upstream.oidc import (ACCESS_TOKEN, MAX_TOKEN_LENGTH, SubjectTokenError,
                                      SubjectTokenValidator, UpstreamUnavailable)
from scopes.guard.jws import (VERIFY_ALGORITHMS, JWKSetKeys, JWSError, JWSVerifier,
                              b64url_decode, import_verification_jwk)

ISSUER = "https://keycloak.example/realms/konfipay"
AUDIENCE = "idp-bridge"
DISCOVERY = f"{ISSUER}/.well-known/openid-configuration"
JWKS_URI = f"{ISSUER}/protocol/openid-connect/certs"
ALL_ALGORITHMS = tuple(VERIFY_ALGORITHMS)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value) -> str:
    return b64url(json.dumps(value).encode())


# --- an upstream provider in memory ---------------------------------------------------------

def _public_jwk(kid: str, private, alg: str | None) -> dict:
    public = private.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        numbers = public.public_numbers()
        jwk = {"kty": "RSA", "n": b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8,
                                                             "big")),
               "e": b64url(numbers.e.to_bytes(3, "big"))}
    elif isinstance(public, ec.EllipticCurvePublicKey):
        size = (public.curve.key_size + 7) // 8
        numbers = public.public_numbers()
        jwk = {"kty": "EC", "crv": {"secp256r1": "P-256", "secp384r1": "P-384",
                                    "secp521r1": "P-521"}[public.curve.name],
               "x": b64url(numbers.x.to_bytes(size, "big")),
               "y": b64url(numbers.y.to_bytes(size, "big"))}
    else:
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        crv = "Ed25519" if isinstance(public, ed25519.Ed25519PublicKey) else "Ed448"
        jwk = {"kty": "OKP", "crv": crv, "x": b64url(raw)}
    jwk.update(kid=kid, use="sig")
    if alg:
        jwk["alg"] = alg
    return jwk


_HASH = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}


def raw_sign(alg: str, private, data: bytes) -> bytes:
    if alg.startswith("RS"):
        return private.sign(data, padding.PKCS1v15(), _HASH[alg[2:]])
    if alg.startswith("PS"):
        h = _HASH[alg[2:]]
        return private.sign(data, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
    if alg.startswith("ES"):
        size = (private.curve.key_size + 7) // 8
        r, s = decode_dss_signature(private.sign(data, ec.ECDSA(_HASH[alg[2:]])))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return private.sign(data)  # EdDSA


def new_key(alg: str):
    if alg[:2] in ("RS", "PS"):
        return rsa.generate_private_key(65537, 2048)
    if alg.startswith("ES"):
        return ec.generate_private_key({"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(),
                                        "ES512": ec.SECP521R1()}[alg])
    return ed25519.Ed25519PrivateKey.generate()


class Response:
    def __init__(self, document):
        self._document = document

    def raise_for_status(self):
        pass

    def json(self):
        return self._document


class MemoryIdP:
    """Discovery and JWKS from memory, counting the GETs (``fetches``)."""

    def __init__(self):
        self.private: dict[str, object] = {}
        self.jwks: list[dict] = []
        self.fetches: list[str] = []

    def add_key(self, kid: str, private, alg: str | None = None) -> None:
        self.private[kid] = private
        self.jwks.append(_public_jwk(kid, private, alg))

    def get(self, url, timeout=None):
        self.fetches.append(url)
        if url == DISCOVERY:
            return Response({"issuer": ISSUER, "jwks_uri": JWKS_URI})
        assert url == JWKS_URI
        return Response({"keys": [dict(k) for k in self.jwks]})

    def claims(self, **changes) -> dict:
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": "0b5c-advisor", "aud": [AUDIENCE, "account"],
                  "exp": now + 300, "iat": now, "typ": "Bearer", "azp": "advisor-console",
                  "sid": "a-session", "scope": "openid profile"}
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, kid: str = "rsa-1", alg: str = "RS256", *, header=None, claims=None,
              key=None) -> str:
        protected = {"alg": alg, "typ": "JWT", "kid": kid}
        protected.update(header or {})
        protected = {k: v for k, v in protected.items() if v is not None}
        signing_input = f"{b64json(protected)}.{b64json(claims or self.claims())}"
        signature = raw_sign(alg, key or self.private[kid], signing_input.encode())
        return f"{signing_input}.{b64url(signature)}"


@pytest.fixture
def idp():
    idp = MemoryIdP()
    idp.add_key("rsa-1", new_key("RS256"))
    idp.add_key("ec-1", new_key("ES256"))
    return idp


def validator_for(idp, algorithms=ALL_ALGORITHMS) -> SubjectTokenValidator:
    return SubjectTokenValidator(issuer=ISSUER, discovery_url=DISCOVERY, audiences=[AUDIENCE],
                                 algorithms=algorithms, http=idp)


def refused(validator, token, text: str) -> None:
    with pytest.raises(SubjectTokenError) as caught:
        validator.validate(token, ACCESS_TOKEN)
    assert text in str(caught.value)


# --- accepted: every algorithm, and tokens from other libraries -------------------------------

@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
def test_each_allow_listed_algorithm_verifies(alg):
    idp = MemoryIdP()
    idp.add_key("k", new_key(alg))
    identity = validator_for(idp).validate(idp.token("k", alg), ACCESS_TOKEN)
    assert identity.subject == "0b5c-advisor" and identity.claims["sid"] == "a-session"


def test_ed448_verifies():
    idp = MemoryIdP()
    idp.add_key("k", ed448.Ed448PrivateKey.generate())
    assert validator_for(idp).validate(idp.token("k", "EdDSA"), ACCESS_TOKEN).subject


def test_tokens_signed_by_joserfc_and_pyjwt_verify_the_same(idp):
    private = idp.private["rsa-1"]
    claims = idp.claims(groups=["/advisors"], amr=["pwd", "otp"], acr="2")
    by_joserfc = jose_jwt.encode({"alg": "RS256", "kid": "rsa-1", "typ": "JWT"}, claims,
                                 RSAKey.import_key(private))
    by_pyjwt = pyjwt.encode(claims, private, algorithm="RS256",
                            headers={"kid": "rsa-1", "typ": "JWT"})
    validator = validator_for(idp)
    header, verified = validator.verify(by_joserfc, what="subject_token")
    assert verified == claims and header == {"alg": "RS256", "kid": "rsa-1", "typ": "JWT"}
    assert validator.verify(by_pyjwt, what="subject_token")[1] == claims
    assert validator.validate(by_pyjwt, ACCESS_TOKEN).claims == claims
    ec_token = pyjwt.encode(claims, idp.private["ec-1"], algorithm="ES256",
                            headers={"kid": "ec-1"})
    assert validator.verify(ec_token, what="subject_token")[1] == claims
    # And the other way round: what this module's tests sign, PyJWT reads the same.
    mine = idp.token(claims=claims)
    assert pyjwt.decode(mine, private.public_key(), algorithms=["RS256"],
                        audience=AUDIENCE) == validator.verify(mine, what="subject_token")[1]


# --- refused by the header, before any key is fetched ----------------------------------------

def test_alg_none_is_refused_before_any_key(idp):
    validator = validator_for(idp)
    token = f"{b64json({'alg': 'none', 'kid': 'rsa-1'})}.{b64json(idp.claims())}."
    refused(validator, token, "algorithm is not accepted")
    assert idp.fetches == []


def test_hs256_keyed_with_the_public_key_is_refused(idp):
    pem = idp.private["rsa-1"].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{b64json({'alg': 'HS256', 'kid': 'rsa-1'})}.{b64json(idp.claims())}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64url(mac)}"
    validator = validator_for(idp)
    refused(validator, token, "algorithm is not accepted")
    assert idp.fetches == []


@pytest.mark.parametrize("algorithms", [["HS256"], ["RS256", "none"], ["RS256", "HS512"]])
def test_symmetric_or_none_cannot_be_configured(idp, algorithms):
    with pytest.raises(ValueError):
        validator_for(idp, algorithms)


def test_an_algorithm_outside_the_configured_list_is_refused(idp):
    validator = validator_for(idp, ["ES256"])
    refused(validator, idp.token("rsa-1", "RS256"), "algorithm is not accepted")
    assert idp.fetches == []


def test_crit_is_refused(idp):
    validator = validator_for(idp)
    token = idp.token(header={"crit": ["exp"], "exp": 1})
    refused(validator, token, "critical header parameters")
    assert idp.fetches == []


@pytest.mark.parametrize("kid", [7, "", ["rsa-1"], {"k": 1}])
def test_a_kid_that_is_no_string_is_refused(idp, kid):
    validator = validator_for(idp)
    refused(validator, idp.token(header={"kid": kid}, key=idp.private["rsa-1"]),
            "is not a signed JWT")
    assert idp.fetches == []


@pytest.mark.parametrize("header", [b"[]", b'"RS256"', b"{", b'{"alg": "RS256"} x'])
def test_a_header_that_is_no_json_object_is_refused(idp, header):
    validator = validator_for(idp)
    token = f"{b64url(header)}.{b64json(idp.claims())}.{b64url(b'x' * 256)}"
    refused(validator, token, "is not a signed JWT")
    assert idp.fetches == []


# --- the key: found by kid, refreshed when unknown (rate-limited), of the alg's type ---------

def test_unknown_kid_refetches_once_then_verifies_after_rotation(idp):
    validator = validator_for(idp)
    validator.validate(idp.token(), ACCESS_TOKEN)
    assert idp.fetches == [DISCOVERY, JWKS_URI]
    rotated = new_key("RS256")
    idp.add_key("rsa-2", rotated)  # the upstream rotated: a kid the bridge has not seen
    identity = validator.validate(idp.token("rsa-2"), ACCESS_TOKEN)
    assert identity.subject == "0b5c-advisor"
    assert idp.fetches == [DISCOVERY, JWKS_URI, JWKS_URI]


def test_unknown_kid_refetches_at_most_every_few_seconds(idp, monkeypatch):
    validator = validator_for(idp)
    validator.validate(idp.token(), ACCESS_TOKEN)
    stranger = new_key("RS256")
    forged = [idp.token(f"nobody-{i}", key=stranger) for i in range(5)]
    for token in forged:
        refused(validator, token, "signature is invalid")
    assert idp.fetches == [DISCOVERY, JWKS_URI, JWKS_URI]  # one refetch for five unknown kids
    known = dict(validator._keys.by_kid)
    # Past the interval a refetch is allowed again; the known keys never changed.
    later = time.monotonic() + oidc._KID_REFETCH_SECONDS + 1
    monkeypatch.setattr(oidc.time, "monotonic", lambda: later)
    refused(validator, forged[0], "signature is invalid")
    assert idp.fetches == [DISCOVERY, JWKS_URI, JWKS_URI, JWKS_URI]
    assert validator._keys.by_kid.keys() == known.keys()
    assert validator.validate(idp.token(), ACCESS_TOKEN).subject


def test_no_kid_is_refused_when_the_set_has_several_keys(idp):
    validator = validator_for(idp)
    refused(validator, idp.token(header={"kid": None}, key=idp.private["rsa-1"]),
            "signature is invalid")
    assert idp.fetches == [DISCOVERY, JWKS_URI]  # no refetch for a token without kid


def test_no_kid_verifies_with_the_only_key():
    idp = MemoryIdP()
    idp.add_key("only", new_key("RS256"))
    validator = validator_for(idp)
    assert validator.validate(idp.token(header={"kid": None}, key=idp.private["only"]),
                              ACCESS_TOKEN).subject
    other = new_key("RS256")
    refused(validator, idp.token(header={"kid": None}, key=other), "signature is invalid")


@pytest.mark.parametrize("alg, kid", [("ES256", "rsa-1"), ("RS256", "ec-1"), ("PS256", "ec-1"),
                                      ("EdDSA", "rsa-1"), ("ES384", "ec-1")])
def test_a_key_of_another_type_than_alg_names_is_refused(idp, alg, kid):
    """The header names the kid of a key whose type does not fit its alg; the token is signed
    correctly for that alg by a key of the right type (which would verify as its own kid)."""
    validator = validator_for(idp)
    refused(validator, idp.token(kid, alg, key=new_key(alg)), "signature is invalid")
    assert idp.fetches == [DISCOVERY, JWKS_URI]


def test_a_key_bound_to_one_alg_verifies_only_that_one():
    idp = MemoryIdP()
    private = new_key("RS256")
    idp.add_key("rs-only", private, alg="RS256")
    validator = validator_for(idp)
    assert validator.validate(idp.token("rs-only", "RS256"), ACCESS_TOKEN).subject
    refused(validator, idp.token("rs-only", "PS256", key=private), "signature is invalid")
    refused(validator, idp.token("rs-only", "RS512", key=private), "signature is invalid")


@pytest.mark.parametrize("jwk_changes", [
    {"d": "AQAB"},  # a private member
    {"kty": "oct", "k": "c2VjcmV0"},  # an HMAC secret
    {"use": "enc"},
    {"key_ops": ["encrypt"]},
    {"alg": "HS256"},
    {"alg": "ES256"},  # an RSA key claiming an EC algorithm
])
def test_keys_that_are_no_signature_keys_of_their_type_are_left_out(jwk_changes):
    idp = MemoryIdP()
    idp.add_key("bad", new_key("RS256"))
    idp.add_key("good", new_key("RS256"))
    idp.jwks[0].update(jwk_changes)
    validator = validator_for(idp)
    assert validator.validate(idp.token("good"), ACCESS_TOKEN).subject
    refused(validator, idp.token("bad"), "signature is invalid")


def test_an_rsa_key_shorter_than_2048_bits_is_left_out():
    idp = MemoryIdP()
    idp.add_key("short", rsa.generate_private_key(65537, 1024))
    refused(validator_for(idp), idp.token("short"), "signature is invalid")


@pytest.mark.parametrize("document", [{"keys": "none"}, {"no": "keys"}, ["keys"],
                                      {"keys": [{}] * 101}])
def test_a_malformed_key_set_fails_closed(idp, document):
    idp.get = lambda url, timeout=None: Response(
        {"issuer": ISSUER, "jwks_uri": JWKS_URI} if url == DISCOVERY else document)
    with pytest.raises(UpstreamUnavailable):
        validator_for(idp).validate(idp.token(), ACCESS_TOKEN)


# --- encoding: compact only, strict canonical base64url, bounded size ----------------------

def _non_canonical(segment: str) -> str:
    """The same bytes with nonzero unused bits in the last character."""
    assert len(segment) % 4 in (2, 3)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    changed = segment[:-1] + alphabet[alphabet.index(segment[-1]) + 1]
    pad = "=" * (-len(segment) % 4)
    assert base64.urlsafe_b64decode(changed + pad) == base64.urlsafe_b64decode(segment + pad)
    return changed


def test_a_non_canonical_signature_is_refused(idp):
    token = idp.token()  # RS256 over 2048 bits: 342 characters, 4 unused bits
    validator = validator_for(idp)
    assert validator.validate(token, ACCESS_TOKEN).subject
    head, _, signature = token.rpartition(".")
    refused(validator, f"{head}.{_non_canonical(signature)}", "is not a signed JWT")


def test_a_non_canonical_payload_is_refused(idp):
    claims = idp.claims()
    while len(b64json(claims)) % 4 not in (2, 3):
        claims["pad"] = claims.get("pad", "") + "x"
    header = b64json({"alg": "RS256", "kid": "rsa-1"})
    payload = _non_canonical(b64json(claims))
    signing_input = f"{header}.{payload}"  # signed as it is: only the encoding is wrong
    signature = raw_sign("RS256", idp.private["rsa-1"], signing_input.encode())
    token = f"{signing_input}.{b64url(signature)}"
    refused(validator_for(idp), token, "claims are not a JSON object")


@pytest.mark.parametrize("mangle", [
    lambda t: t + ".",
    lambda t: t + ".e30",
    lambda t: t + "=",
    lambda t: t + "==",
    lambda t: t + "\n",
    lambda t: t + " ",
    lambda t: " " + t,
    lambda t: t.replace("-", "+").replace("_", "/") if ("-" in t or "_" in t) else t + "+",
    lambda t: t.rpartition(".")[0] + ".",
    lambda t: t.rpartition(".")[0],
    lambda t: json.dumps({"protected": t.split(".")[0], "payload": t.split(".")[1],
                          "signature": t.split(".")[2]}),
    lambda t: t.split(".")[0] + "." + t.split(".")[1] + "=." + t.split(".")[2],
    lambda t: t[:-1] + "é",
], ids=["trailing dot", "fourth segment", "padding", "double padding", "newline", "space",
        "leading space", "base64 alphabet", "signature stripped", "two segments",
        "JSON serialization", "padded payload", "non-ASCII"])
def test_trailing_garbage_and_other_encodings_are_refused(idp, mangle):
    token = idp.token()
    validator = validator_for(idp)
    assert validator.validate(token, ACCESS_TOKEN).subject
    bad = mangle(token)
    assert bad != token
    with pytest.raises(SubjectTokenError):
        validator.validate(bad, ACCESS_TOKEN)


def test_an_oversize_token_is_refused_before_any_key(idp):
    claims = idp.claims(groups=["/advisors/" + "g" * 40] * 400)
    token = idp.token(claims=claims)
    assert len(token) > MAX_TOKEN_LENGTH
    validator = validator_for(idp)
    refused(validator, token, "too large")
    assert idp.fetches == []
    # The verifier enforces the same bound by itself (one home for the rule).
    with pytest.raises(JWSError, match="too large"):
        validator._verifier.verify(token)
    assert idp.fetches == []


# --- the shared pieces in scopes.guard.jws ------------------------------------------------

def test_b64url_decode_is_canonical():
    assert b64url_decode("AA") == b"\x00"
    for bad in ("AB", "AAB", "A", "AA==", "A+", "A/", "AA\n"):
        with pytest.raises(ValueError):
            b64url_decode(bad)


def test_import_verification_jwk_refuses_what_is_not_a_public_signature_key():
    good = _public_jwk("k", new_key("ES256"), None)
    key, algorithms = import_verification_jwk(good)
    assert algorithms == {"ES256"}
    for changes in ({"crv": "P-256K"}, {"x": good["x"][:-2]}, {"kty": "oct"}, {"d": "AA"},
                    {"alg": "RS256"}, {"alg": 5}, {"y": good["x"]}):
        with pytest.raises(ValueError):
            import_verification_jwk({**good, **changes})
    with pytest.raises(ValueError):
        import_verification_jwk(["not", "a", "jwk"])


def test_jwk_set_keys_leave_out_duplicates_and_unusable_keys():
    first = _public_jwk("k", new_key("ES256"), None)
    second = _public_jwk("k", new_key("ES256"), None)
    keys = JWKSetKeys({"keys": [first, second, {"kty": "RSA"}, "junk", {**first, "kid": 3}]})
    assert list(keys.by_kid) == ["k"] and keys.count == 1 and keys.skipped == 3
    assert keys.get("k")[0].public_numbers().x == int.from_bytes(b64url_decode(first["x"]), "big")
    assert keys.get(None) is not None  # the one key
    assert keys.get("other") is None


def test_verifier_refuses_unknown_algorithms_and_needs_keys():
    JWSVerifier(None, ["RS256", "PS512", "EdDSA"], None, resolve=lambda kid: None)
    for algorithms in (["HS256"], ["none"], ["RS256", "HS512"]):
        with pytest.raises(ValueError):
            JWSVerifier(None, algorithms, None, resolve=lambda kid: None)
    with pytest.raises(ValueError):
        JWSVerifier(None, ["RS256"], None)


def test_verifier_header_copy_cannot_change_the_cache(idp):
    validator = validator_for(idp)
    token = idp.token()
    header, _ = validator.verify(token, what="subject_token")
    header["alg"] = "none"
    assert validator.verify(token, what="subject_token")[0]["alg"] == "RS256"


# --- at the token endpoint: status, error, nothing issued ----------------------------------

def _signed_by_upstream(upstream, header: dict, claims: dict, *, mangle_signature=None) -> str:
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    signature = b64url(upstream._key.private_key.sign(signing_input.encode(),
                                                      padding.PKCS1v15(), hashes.SHA256()))
    return f"{signing_input}.{(mangle_signature or (lambda s: s))(signature)}"


def _claims_of(token: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))


def _crit(b):
    return _signed_by_upstream(b.upstream, {"alg": "RS256", "kid": b.upstream.kid, "crit": ["x"],
                                            "x": 1}, _claims_of(b.upstream_token("bob")))


def _wrong_key_type(b):
    """ES256 under the upstream's RSA kid, signed by a P-256 key."""
    key = ec.generate_private_key(ec.SECP256R1())
    signing_input = f"{b64json({'alg': 'ES256', 'kid': b.upstream.kid})}." \
                    f"{b64json(_claims_of(b.upstream_token('bob')))}"
    return f"{signing_input}.{b64url(raw_sign('ES256', key, signing_input.encode()))}"


def _non_canonical_signature(b):
    token = b.upstream_token("bob")
    head, _, signature = token.rpartition(".")
    return f"{head}.{_non_canonical(signature)}"


def _unknown_kid(b):
    return _signed_by_upstream(b.upstream, {"alg": "RS256", "kid": "rotated-away"},
                               _claims_of(b.upstream_token("bob")))


def _oversize(b):
    claims = _claims_of(b.upstream_token("bob"))
    claims["groups"] = ["/advisors/" + "g" * 40] * 400
    return _signed_by_upstream(b.upstream, {"alg": "RS256", "kid": b.upstream.kid}, claims)


@pytest.mark.db_independent
@pytest.mark.parametrize("make, text", [
    (_crit, "critical"),
    (_wrong_key_type, "signature"),
    (_non_canonical_signature, "not a signed JWT"),
    (lambda b: b.upstream_token("bob") + ".e30", "signature"),
    (lambda b: b.upstream_token("bob") + "=", "not a signed JWT"),
    (_unknown_kid, "signature"),
    (_oversize, "too large"),
], ids=["crit", "wrong key type", "non-canonical base64url", "fourth segment", "padding",
        "unknown kid", "oversize"])
def test_refused_at_the_token_endpoint_and_nothing_changes(bridge, make, text):
    code = bridge.current_code()
    token = make(bridge)
    response = bridge.exchange("bob", code=code, subject_token=token)
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    assert response.json["error"] == "invalid_request"
    assert text in response.json["error_description"]
    assert "access_token" not in response.json and "refresh_token" not in response.json
    assert active_memberships(bridge) == []
    assert bridge.current_code() == code
    assert audit_events(bridge, "token.issued") == []
    # The same request with the genuine token goes through: only the token was wrong.
    assert bridge.exchange("bob", code=code).status_code == 200
    assert len(active_memberships(bridge)) == 1
