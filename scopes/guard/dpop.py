"""DPoP proofs (RFC 9449), framework-neutral: what a server checks of a ``DPoP`` header.

One checker for both ends: the resource server (:class:`~scopes.guard.TokenGuard`, section 7)
and the bridge's token endpoint (``idp_bridge.oauth.rfc9449``, section 5) verify proofs with
:class:`ProofVerifier`, differing only in the URL they expect, whether ``ath`` is required and
where the ``jti`` values are remembered.

:meth:`ProofVerifier.verify` follows section 4.3, cheapest and most dangerous first:

1. exactly one ``DPoP`` header, holding one compact JWS (a value with a comma is two);
2. the header: ``typ`` ``dpop+jwt``, ``alg`` in the asymmetric allow-list (never ``none``,
   never HMAC), no ``crit``, and a ``jwk`` that is a *public* key of the type ``alg`` names
   (any private member refuses the proof; RSA keys of at least 2048 bits);
3. the signature, with that key;
4. the claims: ``jti``, ``htm`` equal to the method, ``htu`` equal to the expected URL without
   query and fragment (both normalised per RFC 3986 section 6.2.2/6.2.3), ``iat`` at most
   ``max_age`` seconds old and at most ``leeway`` seconds ahead, ``ath`` the hash of the
   access token when one is presented with the proof (section 7), the server's ``nonce``
   when it requires one (section 8/9: :class:`NonceSource`, stateless);
5. the ``jti`` has not been seen within the proof's lifetime (section 11.1): the replay store
   is asked last, so that refused proofs never fill it.

Errors are :class:`DPoPError` (``invalid_dpop_proof``) and :class:`DPoPNonceRequired`
(``use_dpop_nonce``, carrying the nonce to send in ``DPoP-Nonce``), section 7.1 / 12.2.

Thumbprints are RFC 7638 (SHA-256 over the required members), the value of ``cnf.jkt``.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from base64 import urlsafe_b64encode
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .jws import _DER_TEMPLATES, _FROM_URLSAFE, _PADDING, b64url_decode, json_object

__all__ = ["DPOP_TYPE", "SUPPORTED_DPOP_ALGORITHMS", "DPoPError", "DPoPNonceRequired",
           "NonceSource", "Proof", "ProofVerifier", "ReplayCache", "access_token_hash",
           "jwk_thumbprint", "normalize_htu"]

DPOP_TYPE = "dpop+jwt"
#: Asymmetric algorithms a proof may use, and the JWK key type each needs (section 4.2:
#: "MUST NOT be none or an identifier for a symmetric algorithm").
SUPPORTED_DPOP_ALGORITHMS = {"ES256": "EC", "ES384": "EC", "PS256": "RSA", "RS256": "RSA",
                             "EdDSA": "OKP"}
#: Members of a JWK that only a private (or symmetric) key has (RFC 7518 section 6).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_CURVES = {"ES256": ("P-256", ec.SECP256R1(), 32, hashes.SHA256()),
           "ES384": ("P-384", ec.SECP384R1(), 48, hashes.SHA384())}
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)  # RFC 7518 3.5
_PKCS1V15 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()
_ECDSA_SHA256 = ec.ECDSA(_SHA256)
_a2b = __import__("binascii").a2b_base64
_NUMBER = (int, float)
#: Longest accepted proof (a header with a 4096-bit RSA key is about 1 kB).
MAX_PROOF_LENGTH = 4096
MAX_JTI_LENGTH = 256


class DPoPError(Exception):
    """A refused proof (or a DPoP-bound token without one): ``invalid_dpop_proof``."""

    error = "invalid_dpop_proof"
    status_code = 401

    def __init__(self, description: str):
        super().__init__(description)
        self.description = description


class DPoPNonceRequired(DPoPError):
    """The server requires a ``nonce`` it issued: ``use_dpop_nonce`` with the one to use."""

    error = "use_dpop_nonce"

    def __init__(self, description: str, nonce: str):
        super().__init__(description)
        self.nonce = nonce


def _b64(data: bytes) -> str:
    return urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def access_token_hash(token: str) -> str:
    """``ath``: base64url of the SHA-256 of the ASCII access token (section 4.2)."""
    return _b64(hashlib.sha256(token.encode("ascii", "replace")).digest())


#: RFC 7638 section 3.2: the required members per key type, in lexicographic order.
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"),
                       "OKP": ("crv", "kty", "x")}


def jwk_thumbprint(jwk: dict) -> str:
    """RFC 7638 SHA-256 thumbprint of a public JWK (base64url), the value of ``cnf.jkt``."""
    members = _THUMBPRINT_MEMBERS.get(jwk.get("kty"))
    if members is None or not all(isinstance(jwk.get(m), str) for m in members):
        raise DPoPError("the proof's jwk lacks the members of its key type")
    text = "{" + ",".join(f'"{m}":"{jwk[m]}"' for m in members) + "}"
    return _b64(hashlib.sha256(text.encode()).digest())


_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_htu(url: str) -> str | None:
    """``url`` as ``htu`` is compared (section 4.3 item 9): without query and fragment,
    scheme and host in lower case, the default port left out, an empty path as ``/``
    (RFC 3986 sections 6.2.2 and 6.2.3). None when it is not an absolute http(s) URL."""
    if not isinstance(url, str) or len(url) > 2048:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, parts.path or "/", "", ""))


class ReplayCache:
    """``jti`` values of accepted proofs, in memory, for a resource server: bounded
    (``capacity`` entries, each kept ``lifetime`` seconds) and shared by the threads of the
    process (one lock). Full of live entries, it refuses new proofs rather than forgetting
    one that could be replayed (fail closed)."""

    #: Expired entries are dropped at most this often (or when the cache is full).
    PRUNE_INTERVAL = 1.0

    def __init__(self, lifetime: float, capacity: int = 100_000):
        if capacity < 1 or lifetime <= 0:
            raise ValueError("capacity and lifetime must be positive")
        self.lifetime = lifetime
        self.capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self._next_prune = float("-inf")

    def remember(self, jkt: str, jti: str, now: float) -> bool:
        """Record ``jti`` (of the key ``jkt``); False if it is known and live (a replay).

        Entries are kept ``lifetime`` from their insertion, so insertion order is expiry
        order: pruning looks only at the oldest entries. An entry past its time that was
        not pruned yet is treated as gone (as pruning would have)."""
        key = jkt + " " + jti
        with self._lock:
            seen = self._seen
            if now >= self._next_prune or len(seen) >= self.capacity:
                self._prune(now)
            expires = seen.get(key)
            if expires is not None and expires > now:
                return False
            if len(seen) >= self.capacity:
                raise DPoPError("too many proofs to remember now: retry with a new proof")
            seen[key] = now + self.lifetime
            seen.move_to_end(key)
            return True

    def _prune(self, now: float) -> None:
        seen = self._seen
        while seen:
            oldest, expires = next(iter(seen.items()))
            if expires > now:
                break
            del seen[oldest]
        self._next_prune = now + self.PRUNE_INTERVAL

    def __len__(self) -> int:
        return len(self._seen)


class NonceSource:
    """Server nonces (section 8, 9) that rotate every ``lifetime`` seconds and are checked
    without state: a nonce is the HMAC of its time slot under ``secret``, so every process
    holding the secret accepts it. The current and the previous slot's nonces are accepted
    (a nonce lives ``lifetime`` to twice that)."""

    def __init__(self, secret: bytes, lifetime: float = 300.0, *, label: bytes = b"dpop nonce"):
        if len(secret) < 16:
            raise ValueError("the nonce secret must have at least 16 bytes")
        if lifetime < 1:
            raise ValueError("nonce lifetime must be at least 1 second")
        self._key = hmac.new(secret, label, hashlib.sha256).digest()
        self.lifetime = lifetime
        self._cache: tuple[int, str, str] | None = None

    def _for_slot(self, slot: int) -> str:
        return _b64(hmac.new(self._key, slot.to_bytes(8, "big"), hashlib.sha256).digest()[:18])

    def _nonces(self, now: float) -> tuple[str, str]:
        slot = int(now // self.lifetime)
        cached = self._cache
        if cached is None or cached[0] != slot:
            cached = (slot, self._for_slot(slot), self._for_slot(slot - 1))
            self._cache = cached
        return cached[1], cached[2]

    def current(self, now: float | None = None) -> str:
        return self._nonces(time.time() if now is None else now)[0]

    def check(self, nonce, now: float | None = None) -> bool:
        if not isinstance(nonce, str) or len(nonce) != 24:
            return False
        current, previous = self._nonces(time.time() if now is None else now)
        return hmac.compare_digest(nonce, current) | hmac.compare_digest(nonce, previous)


@dataclass(frozen=True)
class Proof:
    """A verified proof: the key's thumbprint (``jkt``) and the claims."""

    jkt: str
    jti: str
    iat: float
    claims: dict


class ProofVerifier:
    """Verifies ``DPoP`` headers (module docstring). ``replay`` has ``remember(jkt, jti,
    now) -> bool`` (a :class:`ReplayCache`, or a store shared by processes); ``nonces`` a
    :class:`NonceSource`, required in proofs when ``nonce_required``."""

    def __init__(self, algorithms=("ES256", "PS256", "RS256", "EdDSA", "ES384"), *, replay,
                 max_age: float = 60.0, leeway: float = 10.0, nonces: NonceSource | None = None,
                 nonce_required: bool = False):
        algorithms = tuple(algorithms)
        unknown = [a for a in algorithms if a not in SUPPORTED_DPOP_ALGORITHMS]
        if not algorithms or unknown:
            raise ValueError(f"DPoP algorithms must be a non-empty subset of "
                             f"{sorted(SUPPORTED_DPOP_ALGORITHMS)}; got {list(algorithms)}")
        if nonce_required and nonces is None:
            raise ValueError("nonce_required needs a NonceSource")
        self.algorithms = algorithms
        self._algorithms = frozenset(algorithms)
        self.replay = replay
        self.max_age = max_age
        self.leeway = leeway
        self.nonces = nonces
        self.nonce_required = nonce_required
        # header segment -> (alg, public key, jkt): a client's proofs share one header.
        self._headers: dict[str, tuple[str, object, str]] = {}
        self._ath: dict[str, str] = {}

    @property
    def lifetime(self) -> float:
        """How long a proof can be accepted after its first use (the replay horizon)."""
        return self.max_age + self.leeway

    def verify(self, values, *, method: str, url: str, access_token: str | None = None,
               now: float | None = None) -> Proof:
        """The proof of a request whose ``DPoP`` header values are ``values`` (a list, one
        string, or None), made with ``method`` to ``url`` (the expected ``htu``, already
        normalised by :func:`normalize_htu` or not); ``access_token`` when one is presented
        with it (then ``ath`` must match). Raises :class:`DPoPError`."""
        if type(values) is str:
            values = [values]
        if not values:
            raise DPoPError("a DPoP proof is required")
        if len(values) != 1 or "," in values[0]:
            raise DPoPError("exactly one DPoP header is allowed")
        proof = values[0].strip()
        if len(proof) > MAX_PROOF_LENGTH:
            raise DPoPError("the DPoP proof is too large")
        signing_input, _, signature_segment = proof.rpartition(".")
        header_segment, dot, payload_segment = signing_input.partition(".")
        if not (dot and header_segment and payload_segment and signature_segment):
            raise DPoPError("the DPoP proof is not a compact JWS")
        header = self._headers.get(header_segment)
        if header is None:
            header = self._check_header(header_segment)
        alg, key, jkt = header
        try:
            signature = _a2b(signature_segment.encode("ascii").translate(_FROM_URLSAFE)
                             + _PADDING[len(signature_segment) & 3], strict_mode=True)
            data = signing_input.encode("ascii")
        except (ValueError, UnicodeEncodeError):
            raise DPoPError("the DPoP proof's signature is not base64url") from None
        try:
            if alg == "ES256":
                if len(signature) != 64:
                    raise InvalidSignature
                r0, s0 = signature[0], signature[32]
                if r0 and s0:
                    der = _DER_TEMPLATES[(r0 >> 7) | (s0 >> 7 << 1)] % (signature[:32],
                                                                         signature[32:])
                else:
                    der = _raw_to_der(signature, 32)
                key.verify(der, data, _ECDSA_SHA256)
            elif alg == "ES384":
                if len(signature) != 96:
                    raise InvalidSignature
                key.verify(_raw_to_der(signature, 48), data, ec.ECDSA(hashes.SHA384()))
            elif alg == "PS256":
                key.verify(signature, data, _PSS, _SHA256)
            elif alg == "RS256":
                key.verify(signature, data, _PKCS1V15, _SHA256)
            else:
                key.verify(signature, data)
        except InvalidSignature:
            raise DPoPError("the DPoP proof's signature is invalid") from None
        try:
            claims = json_object(_a2b(payload_segment.encode("ascii").translate(_FROM_URLSAFE)
                                      + _PADDING[len(payload_segment) & 3], strict_mode=True))
        except (ValueError, UnicodeEncodeError):
            raise DPoPError("the DPoP proof's payload is not base64url-encoded JSON") from None
        if type(claims) is not dict:
            raise DPoPError("the DPoP proof's payload is not a JSON object")

        jti = claims.get("jti")
        if type(jti) is not str or not jti or len(jti) > MAX_JTI_LENGTH:
            raise DPoPError("the DPoP proof needs a jti")
        if claims.get("htm") != method:
            raise DPoPError("the DPoP proof is for another HTTP method (htm)")
        htu = claims.get("htu")
        if htu != url and normalize_htu(htu) != normalize_htu(url):
            raise DPoPError("the DPoP proof is for another URL (htu)")
        if now is None:
            now = time.time()
        iat = claims.get("iat")
        if type(iat) not in _NUMBER:
            raise DPoPError("the DPoP proof needs a numeric iat")
        if iat > now + self.leeway:
            raise DPoPError("the DPoP proof is issued in the future (iat)")
        if iat < now - self.max_age:
            raise DPoPError("the DPoP proof is too old (iat)")
        if access_token is not None:
            ath = claims.get("ath")
            expected = self._ath.get(access_token)
            if expected is None:  # a client sends one token many times: remember its hash
                expected = access_token_hash(access_token)
                if len(self._ath) >= 256:
                    self._ath.clear()
                self._ath[access_token] = expected
            if type(ath) is not str or not hmac.compare_digest(ath, expected):
                raise DPoPError("the DPoP proof does not name this access token (ath)")
        if self.nonce_required:
            nonce = claims.get("nonce")
            if not self.nonces.check(nonce, now):
                raise DPoPNonceRequired(
                    "a fresh DPoP nonce is required" if nonce is not None
                    else "the DPoP proof must carry the server's nonce", self.nonces.current(now))
        if not self.replay.remember(jkt, jti, now):
            raise DPoPError("the DPoP proof was already used (jti)")
        return Proof(jkt, jti, iat, claims)

    def _check_header(self, segment: str) -> tuple[str, object, str]:
        try:
            header = json_object(b64url_decode(segment))
        except (ValueError, UnicodeEncodeError):
            raise DPoPError("the DPoP proof's header is not base64url-encoded JSON") from None
        if type(header) is not dict:
            raise DPoPError("the DPoP proof's header is not a JSON object")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() != DPOP_TYPE:
            raise DPoPError("the DPoP proof's typ must be dpop+jwt")
        alg = header.get("alg")
        if alg not in self._algorithms:
            raise DPoPError("the DPoP proof's algorithm is not accepted; use one of "
                            + " ".join(self.algorithms))
        if "crit" in header:
            raise DPoPError("the DPoP proof has critical header parameters")
        jwk = header.get("jwk")
        if type(jwk) is not dict:
            raise DPoPError("the DPoP proof's header needs the public key (jwk)")
        if _PRIVATE_MEMBERS.intersection(jwk):
            raise DPoPError("the DPoP proof's jwk must be a public key, without private members")
        key = _public_key(jwk, alg)
        entry = (alg, key, jwk_thumbprint(jwk))
        if len(self._headers) >= 256:  # bounded: garbage headers cannot grow it
            self._headers.clear()
        self._headers[segment] = entry
        return entry


def _int(value) -> int:
    return int.from_bytes(b64url_decode(value), "big")


def _public_key(jwk: dict, alg: str):
    """The public key of ``jwk`` for ``alg`` (its type must be the one ``alg`` names)."""
    kty = SUPPORTED_DPOP_ALGORITHMS[alg]
    if jwk.get("kty") != kty:
        raise DPoPError(f"the DPoP proof's jwk must be an {kty} key for {alg}")
    try:
        if kty == "EC":
            name, curve, size, _ = _CURVES[alg]
            x, y = jwk.get("x"), jwk.get("y")
            if jwk.get("crv") != name or not isinstance(x, str) or not isinstance(y, str) \
                    or len(b64url_decode(x)) != size or len(b64url_decode(y)) != size:
                raise DPoPError(f"the DPoP proof's jwk must be a {name} key for {alg}")
            return ec.EllipticCurvePublicNumbers(_int(x), _int(y), curve).public_key()
        if kty == "RSA":
            n, e = jwk.get("n"), jwk.get("e")
            if not isinstance(n, str) or not isinstance(e, str):
                raise DPoPError("the DPoP proof's RSA jwk needs n and e")
            modulus = _int(n)
            if modulus.bit_length() < 2048:
                raise DPoPError("the DPoP proof's RSA key must have at least 2048 bits")
            return rsa.RSAPublicNumbers(_int(e), modulus).public_key()
        x = jwk.get("x")
        if jwk.get("crv") != "Ed25519" or not isinstance(x, str):
            raise DPoPError("the DPoP proof's OKP jwk must be an Ed25519 key")
        return Ed25519PublicKey.from_public_bytes(b64url_decode(x))
    except DPoPError:
        raise
    except (ValueError, TypeError, UnicodeEncodeError):
        raise DPoPError("the DPoP proof's jwk is not a valid public key") from None


def _raw_to_der(signature: bytes, size: int) -> bytes:
    return encode_dss_signature(int.from_bytes(signature[:size], "big"),
                                int.from_bytes(signature[size:], "big"))
