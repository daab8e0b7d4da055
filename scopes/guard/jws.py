"""Compact JWS verification for resource servers (RFC 7515, RFC 7518 section 3, RFC 7517),
and the matching signer the authorization server mints its access tokens with
(:func:`sign_compact`: one encoding of base64url and of ES256 signatures for both sides).

ES256 and RS256 (what the bridge signs) on the hot path, and the other asymmetric algorithms of
RFC 7518 and RFC 8037 (:data:`VERIFY_ALGORITHMS`, for the bridge's upstream provider's
tokens), checked with ``cryptography`` directly, against the public keys of a
:class:`~scopes.guard.discovery.KeySet` (the issuer's JWKS, imported once and cached per its
``Cache-Control: max-age``) or of a :class:`JWKSetKeys` behind a lookup of the caller's. Going
around a general JOSE library is deliberate: validation sits on every request of a resource
server and on every token exchange, and a generic ``jwt.decode`` spends a third of its time
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
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature, encode_dss_signature)

if TYPE_CHECKING:
    from .discovery import KeySet

#: The algorithms the bridge signs with (:func:`sign_compact`) and ``TokenGuard`` accepts, and
#: the JWK key type each needs.
SUPPORTED_ALGORITHMS = {"ES256": "EC", "RS256": "RSA"}
#: Every algorithm :class:`JWSVerifier` can check (RFC 7518 section 3, RFC 8037 section 3.1:
#: asymmetric only, never ``none`` or HMAC), and the JWK key type each needs. An upstream
#: OpenID provider may sign with any of them.
VERIFY_ALGORITHMS = {"RS256": "RSA", "RS384": "RSA", "RS512": "RSA",
                     "PS256": "RSA", "PS384": "RSA", "PS512": "RSA",
                     "ES256": "EC", "ES384": "EC", "ES512": "EC", "EdDSA": "OKP"}

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_PKCS1V15 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()

# base64url -> base64; "+", "/" and "=" are not base64url characters (RFC 7515 section 2:
# no padding), so they are mapped to a character the strict decoder refuses.
_FROM_URLSAFE = bytes.maketrans(b"-_+/=", b"+/!!!")
_PADDING = (b"", b"!", b"==", b"=")  # a length of 1 modulo 4 is never valid
_a2b = binascii.a2b_base64


# The last character of a segment of length 2 or 3 modulo 4 carries 4 or 2 unused bits, which
# must be zero (RFC 4648 section 3.5): otherwise several texts decode to the same bytes.
_CANONICAL_LAST = (None, None, frozenset("AQgw"), frozenset("AEIMQUYcgkosw048"))


def b64url_decode(segment: str) -> bytes:
    """Strict base64url decoding without padding (canonical: unused bits zero); raises
    ValueError."""
    last = _CANONICAL_LAST[len(segment) & 3]
    if last is not None and segment[-1] not in last:
        raise ValueError("non-canonical base64url")
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
    ``unknown_kid``, ``key`` or ``signature``; ``part`` names what was refused, when one
    member is (``alg``, ``typ``, ``crit``, ``kid``, ``payload``)."""

    def __init__(self, description: str, reason: str = "malformed", part: str | None = None):
        super().__init__(description)
        self.description = description
        self.reason = reason
        self.part = part


# --- the other algorithms (RFC 7518 sections 3.3-3.5, RFC 8037 section 3.1) ----------------

_HASHES = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}
_EC_CURVES = {  # JWK crv -> (curve class, alg, bytes of r and of s)
    "P-256": (ec.SECP256R1, "ES256", 32), "P-384": (ec.SECP384R1, "ES384", 48),
    "P-521": (ec.SECP521R1, "ES512", 66)}
_EC_ALGORITHMS = {alg: (curve.name, size, ec.ECDSA(_HASHES[alg[2:]]))
                  for curve, alg, size in _EC_CURVES.values()}
_OKP_CURVES = {"Ed25519": Ed25519PublicKey, "Ed448": Ed448PublicKey}
_RSA_ALGORITHMS = frozenset(a for a, kty in VERIFY_ALGORITHMS.items() if kty == "RSA")
_RSA_PADDING = {alg: (padding.PKCS1v15() if alg[0] == "R" else padding.PSS(
    mgf=padding.MGF1(_HASHES[alg[2:]]), salt_length=_HASHES[alg[2:]].digest_size),
    _HASHES[alg[2:]]) for alg in _RSA_ALGORITHMS}
#: Members only a private or symmetric JWK has (RFC 7518 section 6).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MIN_RSA_BITS = 2048


def verify_signature(alg: str, key, signature: bytes, data: bytes) -> None:
    """Check ``signature`` over ``data`` for ``alg`` (one of :data:`VERIFY_ALGORITHMS`) with a
    ``cryptography`` public key of the type ``alg`` names; raises InvalidSignature, also for
    a key of another type or curve (the key never decides the algorithm)."""
    if alg in _RSA_PADDING:
        if not isinstance(key, rsa.RSAPublicKey):
            raise InvalidSignature
        pad, hash_ = _RSA_PADDING[alg]
        key.verify(signature, data, pad, hash_)
    elif alg in _EC_ALGORITHMS:
        curve, size, ecdsa = _EC_ALGORITHMS[alg]
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != curve \
                or len(signature) != 2 * size:
            raise InvalidSignature
        key.verify(encode_dss_signature(int.from_bytes(signature[:size], "big"),
                                        int.from_bytes(signature[size:], "big")), data, ecdsa)
    elif alg == "EdDSA":
        if not isinstance(key, (Ed25519PublicKey, Ed448PublicKey)):
            raise InvalidSignature
        key.verify(signature, data)
    else:
        raise InvalidSignature


def _b64_member(jwk: dict, name: str, size: int | None = None) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} is missing")
    data = b64url_decode(value)
    if size is not None and len(data) != size:
        raise ValueError(f"{name} has the wrong length")
    return data


def import_verification_jwk(jwk) -> tuple[object, frozenset]:
    """(public key, frozenset of algorithms it may verify) for one public JWK (RFC 7517,
    RFC 7518 section 6, RFC 8037): RSA of at least 2048 bits (RS* and PS*), EC on P-256,
    P-384 or P-521 (the one ES* of its curve), OKP Ed25519 or Ed448 (EdDSA). A key with an
    ``alg`` member verifies only that algorithm (RFC 7517 section 4.4). Symmetric (``oct``)
    keys and any JWK with a private member are refused, so a token signed with a secret can
    never verify. Raises ValueError."""
    if not isinstance(jwk, dict):
        raise ValueError("a JWK is a JSON object")
    if _PRIVATE_MEMBERS & jwk.keys():
        raise ValueError("a private or symmetric key is no verification key")
    kty = jwk.get("kty")
    if kty == "RSA":
        n = int.from_bytes(_b64_member(jwk, "n"), "big")
        e = int.from_bytes(_b64_member(jwk, "e"), "big")
        if n.bit_length() < MIN_RSA_BITS:
            raise ValueError(f"RSA key shorter than {MIN_RSA_BITS} bits")
        key = rsa.RSAPublicNumbers(e, n).public_key()
        algorithms = _RSA_ALGORITHMS
    elif kty == "EC":
        curve, alg, size = _EC_CURVES.get(jwk.get("crv"), (None, None, None))
        if curve is None:
            raise ValueError("unsupported EC curve")
        x = int.from_bytes(_b64_member(jwk, "x", size), "big")
        y = int.from_bytes(_b64_member(jwk, "y", size), "big")
        key = ec.EllipticCurvePublicNumbers(x, y, curve()).public_key()  # checks the point
        algorithms = frozenset({alg})
    elif kty == "OKP":
        cls = _OKP_CURVES.get(jwk.get("crv"))
        if cls is None:
            raise ValueError("unsupported OKP curve")
        key = cls.from_public_bytes(_b64_member(jwk, "x"))
        algorithms = frozenset({"EdDSA"})
    else:
        raise ValueError("unsupported key type")
    if "alg" in jwk:
        algorithms = algorithms & {jwk["alg"]} if isinstance(jwk["alg"], str) else frozenset()
        if not algorithms:
            raise ValueError("the key's alg does not fit its key type")
    return key, algorithms


class JWKSetKeys:
    """The verification keys of one JWK set document (RFC 7517 section 5), imported once.

    Only signature keys (``use`` absent or ``sig``; ``key_ops``, when given, naming
    ``verify``) of the types :func:`import_verification_jwk` reads; a key that cannot be
    imported is left out (``skipped`` counts them) rather than failing the whole set, and a
    second key with the same ``kid`` is left out too. :meth:`get` with ``kid`` None finds
    the set's key only when it holds exactly one. Raises ValueError when the document is no
    JWK set or has more than ``max_keys`` keys."""

    def __init__(self, document, *, max_keys: int = 100):
        items = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(items, list) or len(items) > max_keys:
            raise ValueError("not a JWK set")
        self.by_kid: dict[str, tuple[object, frozenset]] = {}
        self.skipped = 0
        entries = []
        for jwk in items:
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            ops = jwk.get("key_ops")
            if ops is not None and not (isinstance(ops, list) and "verify" in ops):
                continue
            kid = jwk.get("kid")
            try:
                if kid is not None and (not isinstance(kid, str) or not kid or kid in self.by_kid):
                    raise ValueError("kid is no string, or not unique")
                entry = import_verification_jwk(jwk)
            except (ValueError, TypeError, OverflowError):
                self.skipped += 1
                continue
            entries.append(entry)
            if kid is not None:
                self.by_kid[kid] = entry
        self._single = entries[0] if len(entries) == 1 else None
        self.count = len(entries)

    def get(self, kid):
        """(public key, algorithms) of ``kid``, or None."""
        if kid is None:
            return self._single
        return self.by_kid.get(kid)


class JWSVerifier:
    """Verifies compact JWS of one media type (``typ``) against a :class:`KeySet`.

    The one home of the JWS rules of the guard and of the bridge's upstream tokens: compact
    serialization only, at most ``max_length`` characters, ``alg`` in the allow-list (never
    ``none`` or HMAC: not in :data:`VERIFY_ALGORITHMS`), ``crit`` refused, the key found by
    ``kid`` and of the type ``alg`` names, strict canonical base64url, a JSON object payload.

    ``types`` None leaves ``typ`` to the caller (:meth:`verify_with_header` returns the
    header); ``require_kid=False`` lets a header without ``kid`` reach the key lookup with
    None. ``resolve(kid)`` -> (public key, algorithms) or None replaces the :class:`KeySet`
    lookup (``keys`` is then unused); what it raises passes through.
    """

    def __init__(self, keys: KeySet | None, algorithms, types, *, max_length: int = 8192,
                 type_name: str | None = None, require_kid: bool = True, resolve=None):
        unknown = set(algorithms) - VERIFY_ALGORITHMS.keys()
        if unknown:
            raise ValueError(f"unsupported algorithms: {', '.join(sorted(unknown))}")
        if keys is None and resolve is None:
            raise ValueError("keys or resolve is required")
        self.keys = keys
        self._resolve = resolve
        self._algorithms = frozenset(algorithms)
        self._types = None if types is None else frozenset(t.lower() for t in types)
        self._type_name = None if types is None else (type_name or sorted(self._types)[0])
        self._require_kid = require_kid
        self._max_length = max_length
        # header segment -> (alg, kid, header) for headers that passed the checks; tokens of
        # one issuer share a handful of headers, so this skips a decode and a json.loads per call.
        self._headers: dict[str, tuple[str, str | None, dict]] = {}

    def verify(self, token) -> dict:
        """The payload of ``token`` as a dict if its header and signature are acceptable.

        Raises :class:`JWSError`, or :class:`~scopes.guard.discovery.KeysUnavailable` when the
        key set has never been loaded and cannot be fetched now.
        """
        return self._verify(token)[1]

    def verify_with_header(self, token) -> tuple[dict, dict]:
        """(protected header, payload) of ``token``, as :meth:`verify` checks it."""
        header, claims = self._verify(token)
        return dict(header[2]), claims

    def _verify(self, token):
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
        if not (dot and header_segment and payload_segment):
            raise JWSError("token is not a compact JWS (three base64url segments)")
        header = self._headers.get(header_segment)
        if header is None:
            header = self._check_header(header_segment)  # before the signature: "none" has none
        if not signature_segment:
            raise JWSError("token is not a compact JWS (three base64url segments)")
        alg, kid, _ = header
        if self._resolve is not None:
            entry = self._resolve(kid)
        else:
            keys = self.keys
            if time.monotonic() >= keys._expires:  # KeySet.get, inlined for the hot path
                keys._refresh_due()
            entry = keys._keys.get(kid)
            if entry is None:
                entry = keys._refetch_for(kid)
        if entry is None:
            raise JWSError("token is signed with an unknown key (kid)", "unknown_kid", "kid")
        key, key_algorithms = entry
        if alg not in key_algorithms:
            raise JWSError(f"the key {kid} does not verify {alg}", "key")
        last = _CANONICAL_LAST[len(signature_segment) & 3]
        try:
            if last is not None and signature_segment[-1] not in last:
                raise ValueError
            data = signing_input.encode("ascii")
            signature = _a2b(signature_segment.encode("ascii").translate(_FROM_URLSAFE)
                             + _PADDING[len(signature_segment) & 3], strict_mode=True)
        except ValueError:
            raise JWSError("token signature is not base64url") from None
        try:
            if alg == "ES256":
                if len(signature) != 64 or not isinstance(key, ec.EllipticCurvePublicKey):
                    raise InvalidSignature
                r0, s0 = signature[0], signature[32]
                if r0 and s0:  # the common case, 255 in 256: DER from a template
                    der = _DER_TEMPLATES[(r0 >> 7) | (s0 >> 7 << 1)] % (signature[:32],
                                                                         signature[32:])
                else:
                    der = raw_to_der(signature)
                key.verify(der, data, _ECDSA_SHA256)
            elif alg == "RS256":
                if not isinstance(key, rsa.RSAPublicKey):
                    raise InvalidSignature
                key.verify(signature, data, _PKCS1V15, _SHA256)
            else:
                verify_signature(alg, key, signature, data)
        except InvalidSignature:
            raise JWSError("token signature is invalid", "signature") from None
        last = _CANONICAL_LAST[len(payload_segment) & 3]
        try:
            if last is not None and payload_segment[-1] not in last:
                raise ValueError
            claims = json_object(_a2b(payload_segment.encode("ascii").translate(_FROM_URLSAFE)
                                      + _PADDING[len(payload_segment) & 3], strict_mode=True))
        except ValueError:
            raise JWSError("token payload is not base64url-encoded JSON", part="payload") from None
        if type(claims) is not dict:
            raise JWSError("token payload is not a JSON object", part="payload")
        return header, claims

    def _check_header(self, segment: str) -> tuple[str, str | None, dict]:
        try:
            header = json_object(b64url_decode(segment))
        except ValueError:
            raise JWSError("token header is not base64url-encoded JSON") from None
        if type(header) is not dict:
            raise JWSError("token header is not a JSON object")
        alg = header.get("alg")
        if alg not in self._algorithms:  # "none", HS256, ... end here, before any key
            shown = alg if isinstance(alg, str) and len(alg) <= 16 else "this"
            raise JWSError(f"algorithm {shown} is not accepted", "header", "alg")
        if self._types is not None:
            typ = header.get("typ")
            if not isinstance(typ, str) or typ.lower() not in self._types:
                raise JWSError(f"token type (typ) must be {self._type_name}", "header", "typ")
        if "crit" in header:  # no extension is understood here (RFC 7515 section 4.1.11)
            raise JWSError("token header has critical parameters that are not understood",
                           "header", "crit")
        kid = header.get("kid")
        if not (isinstance(kid, str) and kid) and (self._require_kid or kid is not None):
            raise JWSError("token header has no kid", "header", "kid")
        if len(self._headers) >= 64:  # bounded: garbage headers cannot grow it
            self._headers.clear()
        entry = (alg, kid, header)
        self._headers[segment] = entry
        return entry
