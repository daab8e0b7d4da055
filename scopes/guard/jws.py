"""Compact JWS verification for resource servers (RFC 7515, RFC 7518 section 3, RFC 7517),
and the matching signer the authorization server mints its access tokens with
(:func:`sign_compact`: one encoding of base64url and of ES256 signatures for both sides).

Only what ``scopes.guard`` needs: ES256 and RS256 signatures checked with ``cryptography``
directly, against the public keys of a :class:`~scopes.guard.discovery.KeySet` (the issuer's
JWKS, imported once and cached per its ``Cache-Control: max-age``). Going around a general JOSE library is deliberate: validation sits
on every request of a resource server, and a generic ``jwt.decode`` spends a third of its time
outside the signature check (DESIGN.md section 10 asks for >= 80 % of the raw rate).

Order of checks, cheapest and most dangerous first: the header (``alg`` in the allow-list,
``typ``, ``kid``, no ``crit``) is read before any key is touched, so ``none`` and HMAC never
reach a key; the key must be of the type the ``alg`` names; only then the signature; only a
verified payload is parsed.
"""

from __future__ import annotations

import binascii
import json
import time
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature, encode_dss_signature)

if TYPE_CHECKING:
    from .discovery import KeySet

#: The algorithms this module can verify, and the JWK key type each needs.
SUPPORTED_ALGORITHMS = {"ES256": "EC", "RS256": "RSA"}

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_PKCS1V15 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()

# base64url -> base64; "+", "/" and "=" are not base64url characters (RFC 7515 section 2:
# no padding), so they are mapped to a character the strict decoder refuses.
_FROM_URLSAFE = bytes.maketrans(b"-_+/=", b"+/!!!")
_PADDING = (b"", b"!", b"==", b"=")  # a length of 1 modulo 4 is never valid
_a2b = binascii.a2b_base64


def b64url_decode(segment: str) -> bytes:
    """Strict base64url decoding without padding; raises ValueError."""
    return binascii.a2b_base64(
        segment.encode("ascii").translate(_FROM_URLSAFE) + _PADDING[len(segment) & 3],
        strict_mode=True)


# DER ECDSA-Sig-Value (RFC 3279) of r || s when neither starts with a zero byte, so both are
# 32 content bytes, plus a 0x00 when the high bit is set; indexed by (r high bit, s high bit).
_DER_TEMPLATES = (b"0D\x02 %b\x02 %b", b"0E\x02!\x00%b\x02 %b",
                  b"0E\x02 %b\x02!\x00%b", b"0F\x02!\x00%b\x02!\x00%b")


def raw_to_der(signature: bytes) -> bytes:
    """JWS ES256 signature (r || s, RFC 7518 section 3.4) as DER, for ``cryptography``."""
    return encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                int.from_bytes(signature[32:], "big"))


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return binascii.b2a_base64(data, newline=False).rstrip(b"=").translate(_TO_URLSAFE).decode()


_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True,
                                 allow_nan=False).encode


def signing_header(alg: str, kid: str, typ: str) -> str:
    """The base64url protected header ``{"alg", "typ", "kid"}`` (compute once per key)."""
    if alg not in SUPPORTED_ALGORITHMS:
        raise ValueError(f"unsupported algorithm {alg}")
    return b64url_encode(_compact_json({"alg": alg, "typ": typ, "kid": kid}).encode())


def sign_compact(header_segment: str, claims: dict, alg: str, private_key) -> str:
    """A compact JWS of ``claims`` (compact JSON; NaN and Infinity refused) under
    ``header_segment`` (:func:`signing_header`) with a ``cryptography`` private key of the
    type ``alg`` names: ES256 as r || s (RFC 7518 section 3.4), RS256 PKCS #1 v1.5."""
    signing_input = f"{header_segment}.{b64url_encode(_compact_json(claims).encode())}"
    data = signing_input.encode("ascii")
    if alg == "ES256":
        if not isinstance(private_key, ec.EllipticCurvePrivateKey) \
                or private_key.curve.name != "secp256r1":
            raise ValueError("ES256 needs a P-256 private key")
        r, s = decode_dss_signature(private_key.sign(data, _ECDSA_SHA256))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    elif alg == "RS256":
        from cryptography.hazmat.primitives.asymmetric import rsa

        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise ValueError("RS256 needs an RSA private key")
        signature = private_key.sign(data, _PKCS1V15, _SHA256)
    else:
        raise ValueError(f"unsupported algorithm {alg}")
    return f"{signing_input}.{b64url_encode(signature)}"


_scan_json = json.JSONDecoder().scan_once  # the C scanner, without json.loads' wrappers


def json_object(data: bytes):
    """Parse a JSON document (UTF-8); raises ValueError."""
    text = data.decode()
    try:
        value, end = _scan_json(text, 0)
        if end == len(text):
            return value
    except StopIteration:
        pass
    return json.loads(text)  # surrounding whitespace, or an error with a message


class JWSError(Exception):
    """A token that is not acceptable. ``reason`` classifies it: ``malformed``, ``header``,
    ``unknown_kid``, ``key`` or ``signature``."""

    def __init__(self, description: str, reason: str = "malformed"):
        super().__init__(description)
        self.description = description
        self.reason = reason


class JWSVerifier:
    """Verifies compact JWS of one media type (``typ``) against a :class:`KeySet`."""

    def __init__(self, keys: KeySet, algorithms, types, *, max_length: int = 8192,
                 type_name: str | None = None):
        unknown = set(algorithms) - SUPPORTED_ALGORITHMS.keys()
        if unknown:
            raise ValueError(f"unsupported algorithms: {', '.join(sorted(unknown))}")
        self.keys = keys
        self._algorithms = frozenset(algorithms)
        self._types = frozenset(t.lower() for t in types)
        self._type_name = type_name or sorted(self._types)[0]
        self._max_length = max_length
        # header segment -> (alg, kid) for headers that passed the checks; tokens of one
        # issuer share a handful of headers, so this skips a decode and a json.loads per call.
        self._headers: dict[str, tuple[str, str]] = {}

    def verify(self, token) -> dict:
        """The payload of ``token`` as a dict if its header and signature are acceptable.

        Raises :class:`JWSError`, or :class:`~scopes.guard.discovery.KeysUnavailable` when the
        key set has never been loaded and cannot be fetched now.
        """
        if type(token) is not str:
            if not isinstance(token, (bytes, bytearray)):
                raise JWSError("token must be a string")
            token = bytes(token).decode("ascii", "replace")
        if not token:
            raise JWSError("token is empty")
        if len(token) > self._max_length:
            raise JWSError("token is too large")
        signing_input, _, signature_segment = token.rpartition(".")
        header_segment, dot, payload_segment = signing_input.partition(".")
        if not (dot and header_segment and payload_segment and signature_segment):
            raise JWSError("token is not a compact JWS (three base64url segments)")
        header = self._headers.get(header_segment)
        if header is None:
            header = self._check_header(header_segment)
        alg, kid = header
        keys = self.keys
        if time.monotonic() >= keys._expires:  # KeySet.get, inlined for the hot path
            keys._refresh_due()
        entry = keys._keys.get(kid)
        if entry is None:
            entry = keys._refetch_for(kid)
        if entry is None:
            raise JWSError("token is signed with an unknown key (kid)", "unknown_kid")
        key, key_algorithms = entry
        if alg not in key_algorithms:
            raise JWSError(f"the key {kid} does not verify {alg}", "key")
        try:
            data = signing_input.encode("ascii")
            signature = _a2b(signature_segment.encode("ascii").translate(_FROM_URLSAFE)
                             + _PADDING[len(signature_segment) & 3], strict_mode=True)
        except ValueError:
            raise JWSError("token signature is not base64url") from None
        try:
            if alg == "ES256":
                if len(signature) != 64:
                    raise InvalidSignature
                r0, s0 = signature[0], signature[32]
                if r0 and s0:  # the common case, 255 in 256: DER from a template
                    der = _DER_TEMPLATES[(r0 >> 7) | (s0 >> 7 << 1)] % (signature[:32],
                                                                         signature[32:])
                else:
                    der = raw_to_der(signature)
                key.verify(der, data, _ECDSA_SHA256)
            else:
                key.verify(signature, data, _PKCS1V15, _SHA256)
        except InvalidSignature:
            raise JWSError("token signature is invalid", "signature") from None
        try:
            claims = json_object(_a2b(payload_segment.encode("ascii").translate(_FROM_URLSAFE)
                                      + _PADDING[len(payload_segment) & 3], strict_mode=True))
        except ValueError:
            raise JWSError("token payload is not base64url-encoded JSON") from None
        if type(claims) is not dict:
            raise JWSError("token payload is not a JSON object")
        return claims

    def _check_header(self, segment: str) -> tuple[str, str]:
        try:
            header = json_object(b64url_decode(segment))
        except ValueError:
            raise JWSError("token header is not base64url-encoded JSON") from None
        if type(header) is not dict:
            raise JWSError("token header is not a JSON object")
        alg = header.get("alg")
        if alg not in self._algorithms:  # "none", HS256, ... end here, before any key
            shown = alg if isinstance(alg, str) and len(alg) <= 16 else "this"
            raise JWSError(f"algorithm {shown} is not accepted", "header")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in self._types:
            raise JWSError(f"token type (typ) must be {self._type_name}", "header")
        if "crit" in header:  # no extension is understood here (RFC 7515 section 4.1.11)
            raise JWSError("token header has critical parameters that are not understood",
                           "header")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise JWSError("token header has no kid", "header")
        if len(self._headers) >= 64:  # bounded: garbage headers cannot grow it
            self._headers.clear()
        self._headers[segment] = (alg, kid)
        return alg, kid
