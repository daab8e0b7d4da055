"""Validation of subject tokens issued by the upstream OpenID provider.

Discovery (OpenID Connect Discovery 1.0) and the JWK set are fetched over HTTP and cached;
an unknown ``kid`` triggers one refetch at most every few seconds (the upstream may have
rotated). Checks: signature with an allow-listed asymmetric algorithm (``none`` and HMAC
never), ``iss``, ``aud``, ``exp``, ``nbf``, ``iat``. When the provider cannot be reached and
no cached key fits, validation fails closed with :class:`UpstreamUnavailable`.
"""

from __future__ import annotations

import threading
import time

import requests
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from .identity import UpstreamIdentity

ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
_KID_REFETCH_SECONDS = 5.0


class SubjectTokenError(ValueError):
    """The token is not acceptable; the message is safe to show the client."""


class UpstreamUnavailable(RuntimeError):
    """The upstream provider cannot be reached to validate a token."""


class SubjectTokenValidator:
    def __init__(self, *, issuer: str, discovery_url: str, audiences, algorithms,
                 cache_seconds: int = 300, timeout: float = 5.0, leeway: int = 30,
                 http: requests.Session | None = None):
        self.issuer = issuer
        self.discovery_url = discovery_url
        self.audiences = frozenset(audiences)
        self.algorithms = list(algorithms)
        self.cache_seconds = cache_seconds
        self.timeout = timeout
        self.leeway = leeway
        self._http = http or requests.Session()
        self._lock = threading.Lock()
        self._metadata: dict | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None
        self._keys_at = 0.0
        self._last_refetch = 0.0
        self._registry = jws.JWSRegistry(algorithms=self.algorithms)

    # --- discovery and keys ---
    def _get_json(self, url: str) -> dict:
        try:
            response = self._http.get(url, timeout=self.timeout)
            response.raise_for_status()
            data = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise UpstreamUnavailable(f"upstream provider unreachable ({type(exc).__name__})") from None
        if not isinstance(data, dict):
            raise UpstreamUnavailable("upstream provider returned an unexpected document")
        return data

    def metadata(self) -> dict:
        now = time.monotonic()
        if self._metadata is None or now - self._metadata_at > self.cache_seconds:
            data = self._get_json(self.discovery_url)
            if data.get("issuer") != self.issuer:
                raise UpstreamUnavailable("upstream discovery names a different issuer")
            self._metadata, self._metadata_at = data, now
        return self._metadata

    def _key_set(self, *, force: bool = False) -> KeySet:
        now = time.monotonic()
        with self._lock:
            stale = self._keys is None or now - self._keys_at > self.cache_seconds
            if force and now - self._last_refetch < _KID_REFETCH_SECONDS:
                force = False
            if stale or force:
                try:
                    jwks = self._get_json(self.metadata()["jwks_uri"])
                    keys = KeySet.import_key_set(
                        {"keys": [k for k in jwks.get("keys", []) if k.get("use", "sig") == "sig"]}
                    )
                except UpstreamUnavailable:
                    if self._keys is None:
                        raise
                    return self._keys  # keep serving cached keys while the IdP is down
                except (KeyError, ValueError, JoseError):
                    raise UpstreamUnavailable("upstream JWK set is malformed") from None
                self._keys, self._keys_at = keys, now
                if force:
                    self._last_refetch = now
            return self._keys

    # --- validation ---
    def validate(self, token: str, token_type: str = ACCESS_TOKEN) -> UpstreamIdentity:
        claims = self.verify_signature(token, what="subject_token")
        self._check_claims(claims, token_type)
        return UpstreamIdentity(issuer=claims["iss"], subject=str(claims["sub"]),
                                claims=claims, token_type=token_type)

    def verify_signature(self, token: str, *, what: str) -> dict:
        """Claims of a JWT signed by the upstream provider (signature and algorithm only)."""
        if not isinstance(token, str) or not token or len(token) > 16384:
            raise SubjectTokenError(f"{what} is missing or too large")
        try:
            header = jws.extract_compact(token.encode()).protected
        except (JoseError, ValueError):
            raise SubjectTokenError(f"{what} is not a signed JWT") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise SubjectTokenError(f"{what} algorithm {alg!r} is not accepted")
        kid = header.get("kid")
        keys = self._key_set()
        if kid is not None and not any(k.kid == kid for k in keys.keys):
            keys = self._key_set(force=True)
        try:
            return jwt.decode(token, keys, algorithms=self.algorithms,
                              registry=self._registry).claims
        except JoseError:
            raise SubjectTokenError(f"{what} signature is invalid") from None

    def _check_claims(self, claims: dict, token_type: str) -> None:
        now = time.time()
        if claims.get("iss") != self.issuer:
            raise SubjectTokenError("subject_token was issued by another issuer")
        if not claims.get("sub") or not isinstance(claims.get("sub"), str):
            raise SubjectTokenError("subject_token has no subject")
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)):
            raise SubjectTokenError("subject_token has no expiry")
        if exp + self.leeway < now:
            raise SubjectTokenError("subject_token has expired")
        nbf = claims.get("nbf")
        if isinstance(nbf, (int, float)) and nbf - self.leeway > now:
            raise SubjectTokenError("subject_token is not valid yet")
        iat = claims.get("iat")
        if isinstance(iat, (int, float)) and iat - self.leeway > now:
            raise SubjectTokenError("subject_token was issued in the future")
        aud = claims.get("aud")
        audiences = {aud} if isinstance(aud, str) else set(aud or [])
        if not audiences & self.audiences:
            raise SubjectTokenError("subject_token is not meant for this bridge (audience)")
        typ = claims.get("typ")
        # Keycloak marks its tokens; an ID token must not pass as an access token or back.
        if token_type == ACCESS_TOKEN and typ == "ID":
            raise SubjectTokenError("subject_token is an ID token, not an access token")
        if token_type == ID_TOKEN and typ not in (None, "ID"):
            raise SubjectTokenError("subject_token is not an ID token")
