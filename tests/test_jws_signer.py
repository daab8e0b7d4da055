"""The access-token signer (scopes/guard/jws.py ``sign_compact``, used by the bridge's
``TokenIssuer.mint_access_token`` instead of joserfc's generic path) and the ASCII fast path of
``is_plain_text``: what they produce is what the slow paths produced."""

from __future__ import annotations

import math
import unicodedata

import jwt as pyjwt
import pytest
from hypothesis import given, strategies as st
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from idp_bridge.upstream.identity import is_plain_text
from scopes.guard.jws import b64url_decode, b64url_encode, sign_compact, signing_header

pytestmark = pytest.mark.db_independent

_EC = ECKey.generate_key("P-256", private=True)
_RSA = RSAKey.generate_key(2048, private=True)


@pytest.mark.parametrize("key,alg", [(_EC, "ES256"), (_RSA, "RS256")])
def test_signed_tokens_verify_with_two_independent_libraries(key, alg):
    claims = {"sub": "bob", "scope": "ebics:read", "n": 3, "name": "Jürgen"}
    token = sign_compact(signing_header(alg, "kid-1", "at+jwt"), claims, alg, key.private_key)
    decoded = jwt.decode(token, key, algorithms=[alg])
    assert decoded.claims == claims
    assert decoded.header == {"alg": alg, "typ": "at+jwt", "kid": "kid-1"}
    public = key.private_key.public_key()
    assert pyjwt.decode(token, public, algorithms=[alg]) == claims
    assert pyjwt.get_unverified_header(token) == {"alg": alg, "typ": "at+jwt", "kid": "kid-1"}
    if alg == "ES256":  # r || s, 64 bytes (RFC 7518 section 3.4), not DER
        assert len(b64url_decode(token.rsplit(".", 1)[1])) == 64


def test_the_wrong_key_type_an_unknown_alg_and_nan_are_refused():
    header = signing_header("ES256", "k", "at+jwt")
    with pytest.raises(ValueError):
        sign_compact(header, {"a": 1}, "ES256", _RSA.private_key)
    with pytest.raises(ValueError):
        sign_compact(header, {"a": 1}, "RS256", _EC.private_key)
    with pytest.raises(ValueError):
        sign_compact(header, {"a": 1}, "HS256", _EC.private_key)
    with pytest.raises(ValueError):
        signing_header("none", "k", "at+jwt")
    with pytest.raises(ValueError):
        sign_compact(header, {"a": math.nan}, "ES256", _EC.private_key)


@given(st.binary(max_size=200))
def test_b64url_round_trips(data):
    encoded = b64url_encode(data)
    assert "=" not in encoded and "+" not in encoded and "/" not in encoded
    assert b64url_decode(encoded) == data


def _slow_plain(value: str) -> bool:
    return not any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")
                   for c in value)


@given(st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=40))
def test_is_plain_text_fast_path_agrees_on_ascii(value):
    assert is_plain_text(value) == _slow_plain(value)


@given(st.text(max_size=40))
def test_is_plain_text_agrees_on_any_text(value):
    assert is_plain_text(value) == _slow_plain(value)
