"""Compact JWS verification for resource servers (RFC 7515, RFC 7518 section 3, RFC 7517).

Only what ``scopes.guard`` needs: ES256 and RS256 signatures checked with ``cryptography``
directly, against public keys imported once from the issuer's JWKS and cached per its
``Cache-Control: max-age``. Going around a general JOSE library is deliberate: validation sits
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
import logging
import threading
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

log = logging.getLogger("scopes.guard")

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


class KeysUnavailable(Exception):
    """The JWKS could not be fetched (a transient condition, not a property of the token)."""


def import_public_jwk(jwk: dict):
    """(public key, frozenset of algorithms it may verify) for one JWK; raises ValueError.

    Only asymmetric signature keys: ``oct`` keys (HMAC) are never imported, so a token signed
    with a symmetric secret can never verify.
    """
    kty = jwk.get("kty")
    if kty == "EC":
        if jwk.get("crv") != "P-256":
            raise ValueError(f"unsupported curve {jwk.get('crv')!r}")
        x = int.from_bytes(b64url_decode(jwk["x"]), "big")
        y = int.from_bytes(b64url_decode(jwk["y"]), "big")
        key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()  # checks the point
        algorithms = {"ES256"}
    elif kty == "RSA":
        n = int.from_bytes(b64url_decode(jwk["n"]), "big")
        e = int.from_bytes(b64url_decode(jwk["e"]), "big")
        key = rsa.RSAPublicNumbers(e, n).public_key()
        if key.key_size < 2048:
            raise ValueError("RSA key shorter than 2048 bits")
        algorithms = {"RS256"}
    else:
        raise ValueError(f"unsupported key type {kty!r}")
    if "alg" in jwk:  # a key bound to one algorithm verifies only that one (RFC 7517 4.4)
        algorithms &= {jwk["alg"]}
    return key, frozenset(algorithms)


class KeySet:
    """The verification keys published at one ``jwks_uri``, fetched lazily.

    The set is cached for the response's ``max-age``. A token naming an unknown ``kid`` may
    trigger a refetch (a key rotation), at most once per ``refetch_interval`` so that forged
    tokens cannot turn the resource server into a load generator against the issuer. When a
    refresh fails, the keys already known stay in use and the failure is logged.
    """

    def __init__(self, uri: str, fetch, *, refetch_interval: float,
                 default_max_age: float = 300.0, max_age_bounds=(1.0, 86400.0)):
        self.uri = uri
        self._fetch = fetch  # fetch(uri) -> (json document, max_age seconds or None)
        self._refetch_interval = refetch_interval
        self._default_max_age = default_max_age
        self._min_age, self._max_age = max_age_bounds
        self._keys: dict = {}
        self._loaded = False
        self._expires = 0.0  # time.monotonic() after which a refresh is due
        self._last_unknown_refetch = float("-inf")
        self._retry_at = 0.0  # no fetch before this after a failure (first load only)
        self._lock = threading.Lock()
        self.fetch_count = 0

    def get(self, kid: str):
        """(public key, algorithms) for ``kid``, or None when unknown even after a refetch."""
        if time.monotonic() >= self._expires:
            self._refresh_due()
        entry = self._keys.get(kid)
        if entry is None:
            entry = self._refetch_for(kid)
        return entry

    def refresh(self) -> None:
        """Fetch now, whatever the cache says; raises :class:`KeysUnavailable`."""
        with self._lock:
            self._load()

    # --- internals ---
    def _refresh_due(self) -> None:
        if not self._loaded:
            with self._lock:  # nobody can verify anything before the first load: wait for it
                if not self._loaded:
                    if time.monotonic() < self._retry_at:
                        raise KeysUnavailable(f"{self.uri} was unavailable moments ago")
                    try:
                        self._load()
                    except KeysUnavailable:
                        self._retry_at = time.monotonic() + self._refetch_interval
                        raise
            return
        # One thread refreshes; the others go on with the keys they have.
        if not self._lock.acquire(blocking=False):
            return
        try:
            if time.monotonic() >= self._expires:
                try:
                    self._load()
                except KeysUnavailable as exc:
                    log.warning("keeping the known keys: %s", exc)
                    self._expires = time.monotonic() + self._refetch_interval
        finally:
            self._lock.release()

    def _refetch_for(self, kid: str):
        with self._lock:
            entry = self._keys.get(kid)
            if entry is not None:
                return entry
            now = time.monotonic()
            if now - self._last_unknown_refetch < self._refetch_interval:
                return None
            self._last_unknown_refetch = now
            try:
                self._load()
            except KeysUnavailable as exc:
                log.warning("refetch for an unknown kid failed: %s", exc)
                return None
            return self._keys.get(kid)

    def _load(self) -> None:
        """Fetch and import the key set (caller holds the lock)."""
        self.fetch_count += 1
        try:
            document, max_age = self._fetch(self.uri)
            items = document["keys"]
            if not isinstance(items, list):
                raise TypeError("keys is not a list")
        except KeysUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the fetch means "unavailable"
            raise KeysUnavailable(f"JWKS at {self.uri}: {exc}") from None
        keys = {}
        for jwk in items:
            if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str):
                continue
            if jwk.get("use", "sig") != "sig" or "verify" not in jwk.get("key_ops", ["verify"]):
                continue
            try:
                keys[jwk["kid"]] = import_public_jwk(jwk)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("ignoring key %r of %s: %s", jwk["kid"], self.uri, exc)
        if max_age is None:
            max_age = self._default_max_age
        max_age = min(max(max_age, self._min_age), self._max_age)
        self._keys = keys  # one assignment: readers see the old or the new set, never a mix
        self._loaded = True
        self._expires = time.monotonic() + max_age


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
        """The payload of ``token`` as a dict if its header and signature are acceptable."""
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
