"""Key discovery: the issuer's metadata (RFC 8414) and its JWKS (RFC 7517), cached.

:class:`IssuerDiscovery` finds, on first use, the issuer's authorization server metadata at
``/.well-known/oauth-authorization-server`` (RFC 8414 section 3), falling back to
``/.well-known/openid-configuration``; metadata naming another issuer is never used (section
3.3). Its ``jwks_uri`` becomes a :class:`KeySet`: the verification keys, fetched lazily, kept
for the response's ``max-age`` and refetched (rate-limited) when a token names an unknown
``kid``, which is how a key rotation reaches the resource server.
"""

from __future__ import annotations

import logging
import threading
import time

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ._http import FetchError, fetch_json
from .jws import b64url_decode

__all__ = ["DiscoveryUnavailable", "IssuerDiscovery", "KeySet", "KeysUnavailable",
           "discover_metadata", "import_public_jwk"]

log = logging.getLogger("scopes.guard")

METADATA_SUFFIXES = ("oauth-authorization-server", "openid-configuration")


class DiscoveryUnavailable(Exception):
    """The issuer's metadata could not be had (now, or moments ago)."""


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


def discover_metadata(issuer: str, fetch) -> dict:
    """The metadata document of ``issuer``; ``fetch(url)`` -> (document, max-age). Raises
    :class:`~scopes.guard._http.FetchError`."""
    base = issuer.rstrip("/")
    errors = []
    for suffix in METADATA_SUFFIXES:
        url = f"{base}/.well-known/{suffix}"
        try:
            metadata, _ = fetch(url)
        except FetchError as exc:
            errors.append(str(exc))
            continue
        if not isinstance(metadata, dict) or metadata.get("issuer") != issuer:
            # RFC 8414 section 3.3: metadata for another issuer must not be used.
            raise FetchError(f"{url} describes another issuer")
        if not isinstance(metadata.get("jwks_uri"), str):
            raise FetchError(f"{url} has no jwks_uri")
        return metadata
    raise FetchError("; ".join(errors))


class IssuerDiscovery:
    """The metadata and key set of one issuer, loaded once, on first use.

    ``http`` is a ``requests.Session``-like object. A failed discovery is not retried for
    ``refetch_interval`` seconds, so a burst of requests while the issuer is down does not
    become a burst of fetches.
    """

    def __init__(self, issuer: str, http, *, timeout: float, refetch_interval: float):
        self.issuer = issuer
        self.http = http
        self.timeout = timeout
        self.refetch_interval = refetch_interval
        self.metadata: dict | None = None
        self.keys: KeySet | None = None
        self._lock = threading.Lock()
        self._retry_at = 0.0

    def fetch(self, url: str, **kwargs):
        """(JSON document, max-age seconds or None) of a GET; raises ``FetchError``."""
        return fetch_json(self.http, url, timeout=self.timeout, **kwargs)

    def load(self) -> KeySet:
        """The issuer's key set, discovering the metadata first if needed; raises
        :class:`DiscoveryUnavailable`."""
        keys = self.keys
        if keys is not None:
            return keys
        with self._lock:
            if self.keys is not None:
                return self.keys
            if time.monotonic() < self._retry_at:
                raise DiscoveryUnavailable(f"discovery of {self.issuer} failed moments ago")
            try:
                metadata = discover_metadata(self.issuer, self.fetch)
            except FetchError as exc:
                self._retry_at = time.monotonic() + self.refetch_interval
                log.error("discovery of %s failed: %s", self.issuer, exc)
                raise DiscoveryUnavailable(str(exc)) from None
            self.metadata = metadata
            self.keys = KeySet(metadata["jwks_uri"], self.fetch,
                               refetch_interval=self.refetch_interval)
            return self.keys

    def key_set(self, uri: str | None) -> KeySet:
        """The issuer's key set when ``uri`` is None or its ``jwks_uri``, else a new one for
        ``uri`` (the revocation feed may publish its keys elsewhere)."""
        keys = self.load()
        if uri is None or uri == keys.uri:
            return keys
        return KeySet(uri, self.fetch, refetch_interval=self.refetch_interval)
