"""Validation of subject tokens issued by the upstream OpenID provider.

Discovery (OpenID Connect Discovery 1.0) and the JWK set are fetched over HTTP and cached; an
unknown ``kid`` triggers one refetch at most every few seconds (the upstream may have rotated).
Checks: the JWS rules shared with the resource-server guard
(:class:`scopes.guard.jws.JWSVerifier`: compact serialization, at most :data:`MAX_TOKEN_LENGTH`
characters, strict base64url, ``crit`` refused, a signature with an allow-listed asymmetric
algorithm by the key ``kid`` names, of the type ``alg`` names; ``none`` and HMAC never), then
every claim the bridge reads by type and range (RFC 7519 section 4.1): ``iss`` and ``sub``
bounded strings without control or bidi characters, ``exp`` (required), ``nbf``, ``iat`` and
``auth_time`` finite NumericDates, ``aud`` a string or a non-empty array of strings naming this
bridge, ``sid``/``acr`` strings and ``amr`` an array of strings. Explicit typing (RFC 8725
section 3.11): an access token has no ``typ`` header or ``JWT``/``at+jwt`` and no Keycloak
``typ`` claim other than ``Bearer``; an ID token is typed ``ID`` if at all; a token with an
``events`` claim (a logout token or another SET) is neither. ID tokens the upstream issued to
the bridge's own sign-in client are never subject tokens. Error messages name the claim, never
its value. When the provider cannot be reached and no cached key fits, validation fails closed
with :class:`UpstreamUnavailable`.
"""

from __future__ import annotations

import math
import threading
import time

import requests

from scopes.guard.jws import JWKSetKeys, JWSError, JWSVerifier

from .identity import UpstreamIdentity, is_plain_text

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
                 own_client_id: str | None = None, http: requests.Session | None = None):
        self.issuer = issuer
        #: The bridge's own sign-in client at the upstream: its ID tokens are no subject tokens.
        self.own_client_id = own_client_id
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
        self._keys: JWKSetKeys | None = None
        self._keys_at = 0.0
        self._last_refetch = 0.0
        # typ is the caller's (it depends on the kind of token); kid may be absent when the
        # upstream publishes a single key. Raises ValueError for an algorithm it cannot verify.
        self._verifier = JWSVerifier(None, self.algorithms, None, max_length=MAX_TOKEN_LENGTH,
                                     require_kid=False, resolve=self._key_for)

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

    def _key_set(self, *, force: bool = False) -> JWKSetKeys:
        now = time.monotonic()
        with self._lock:
            stale = self._keys is None or now - self._keys_at > self.cache_seconds
            if force and now - self._last_refetch < _KID_REFETCH_SECONDS:
                force = False
            if stale or force:
                try:
                    jwks = self._get_json(self.metadata()["jwks_uri"])
                    keys = JWKSetKeys(jwks)  # signature keys only (use sig)
                except UpstreamUnavailable:
                    if self._keys is None:
                        raise
                    return self._keys  # keep serving cached keys while the IdP is down
                except (KeyError, TypeError, ValueError):
                    raise UpstreamUnavailable("upstream JWK set is malformed") from None
                self._keys, self._keys_at = keys, now
                if force:
                    self._last_refetch = now
            return self._keys

    # --- validation ---
    def validate(self, token: str, token_type: str = ACCESS_TOKEN) -> UpstreamIdentity:
        header, claims = self.verify(token, what="subject_token")
        self._check_claims(header, claims, token_type)
        return UpstreamIdentity(issuer=claims["iss"], subject=claims["sub"],
                                claims=claims, token_type=token_type)

    def verify(self, token: str, *, what: str) -> tuple[dict, dict]:
        """(header, claims) of a JWT signed by the upstream provider (signature and
        algorithm only; the caller checks the claims)."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            raise SubjectTokenError(f"{what} is missing or too large")
        try:
            return self._verifier.verify_with_header(token)
        except JWSError as exc:
            message = _JWS_MESSAGES.get((exc.reason, exc.part)) or _JWS_MESSAGES[exc.reason]
            raise SubjectTokenError(f"{what} {message}") from None

    def _key_for(self, kid: str | None):
        """(public key, algorithms) for ``kid``: an unknown one refetches the key set (at
        most every few seconds); None when there is none even then."""
        entry = self._key_set().get(kid)
        if entry is None and kid is not None:
            entry = self._key_set(force=True).get(kid)
        return entry

    def verify_signature(self, token: str, *, what: str) -> dict:
        """Claims of a JWT signed by the upstream provider (signature and algorithm only)."""
        return self.verify(token, what=what)[1]

    def _check_claims(self, header: dict, claims: dict, token_type: str, now: float | None = None) -> None:
        """RFC 7519 section 4.1 by type and range, and RFC 8725 section 3.11: only the token
        type declared (an access token, or an ID token where the type says so) passes."""
        now = time.time() if now is None else now
        what = "subject_token"
        check_identity_claims(claims, what=what)
        if claims["iss"] != self.issuer:
            raise SubjectTokenError(f"{what} was issued by another issuer")
        exp = numeric_date(claims, "exp", what=what, required=True)
        if exp + self.leeway < now:
            raise SubjectTokenError(f"{what} has expired")
        nbf = numeric_date(claims, "nbf", what=what)
        if nbf is not None and nbf - self.leeway > now:
            raise SubjectTokenError(f"{what} is not valid yet")
        iat = numeric_date(claims, "iat", what=what)
        if iat is not None and iat - self.leeway > now:
            raise SubjectTokenError(f"{what} was issued in the future")
        numeric_date(claims, "auth_time", what=what)
        audiences = audience_set(claims, what=what)
        if not audiences & self.audiences:
            raise SubjectTokenError(f"{what} is not meant for this bridge (audience)")
        for name in ("azp", "client_id", "jti"):
            if name in claims:
                plain_string(claims[name], name, what=what)
        # A logout token or another Security Event Token is never a subject token.
        if "events" in claims:
            raise SubjectTokenError(f"{what} is a security event token, not an access or ID token")
        header_type = media_type(header.get("typ"), what=what)
        claim_type = claims.get("typ")  # Keycloak marks its tokens: Bearer, ID, Refresh, ...
        if claim_type is not None and not isinstance(claim_type, str):
            raise SubjectTokenError(f"{what} has a malformed typ claim")
        if token_type == ID_TOKEN:
            if header_type not in (None, "jwt", "id_token+jwt") or claim_type not in (None, "ID"):
                raise SubjectTokenError(f"{what} is not an ID token")
            if self.own_client_id and (claims.get("azp") == self.own_client_id
                                       or self.own_client_id in audiences):
                # The bridge's own sign-in: never a key to token families (issue 10).
                raise SubjectTokenError(f"{what} was issued to the bridge's own sign-in")
        else:
            if claim_type == "ID":
                raise SubjectTokenError(f"{what} is an ID token, not an access token")
            if header_type not in (None, "jwt", "at+jwt") or claim_type not in (None, "Bearer"):
                raise SubjectTokenError(f"{what} is not an access token")


#: What a refused JWS is called, by :class:`JWSError` (reason, part) or reason alone; no
#: message repeats a value from the token.
_JWS_MESSAGES = {
    "malformed": "is not a signed JWT",
    ("malformed", "payload"): "claims are not a JSON object",
    "header": "is not a signed JWT",
    ("header", "alg"): "algorithm is not accepted",
    ("header", "crit"): "has critical header parameters that are not understood",
    "unknown_kid": "signature is invalid",
    "key": "signature is invalid",
    "signature": "signature is invalid",
}

#: Upper bound of a JWT the bridge reads (an upstream access token with many groups fits).
MAX_TOKEN_LENGTH = 16384
#: Bounds of identifiers read from upstream tokens (OpenID Connect Core section 2: ``sub``
#: at most 255 ASCII characters; the storage columns hold 255).
MAX_IDENTIFIER_LENGTH = 255
MAX_ISSUER_LENGTH = 500
MAX_AMR_VALUES = 20
#: NumericDate range: after 1970 and before 10000-01-01 (every date a datetime can hold).
MAX_NUMERIC_DATE = 253402300799


def plain_string(value, name: str, *, what: str, max_length: int = MAX_IDENTIFIER_LENGTH) -> str:
    """A non-empty string of bounded length without control, format (bidi) or separator
    characters: what an identifier shown, stored and compared may be."""
    if not isinstance(value, str) or not value or len(value) > max_length \
            or not is_plain_text(value):
        raise SubjectTokenError(f"{what} has a malformed {name} claim")
    return value


def numeric_date(claims: dict, name: str, *, what: str, required: bool = False) -> float | None:
    """RFC 7519 section 2 NumericDate: a finite JSON number in a sane range (``bool`` is no
    number; ``1e309`` parses to infinity and ``NaN`` compares false to everything)."""
    if name not in claims:
        if required:
            raise SubjectTokenError(f"{what} has no {_DATE_NAMES.get(name, name)}")
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not 0 <= value <= MAX_NUMERIC_DATE:
        raise SubjectTokenError(f"{what} has a malformed {name} claim")
    return value


_DATE_NAMES = {"exp": "expiry", "iat": "iat"}


def audience_set(claims: dict, *, what: str) -> set[str]:
    """RFC 7519 section 4.1.3: a string or a non-empty array of strings."""
    aud = claims.get("aud")
    values = [aud] if isinstance(aud, str) else aud
    if not isinstance(values, list) or not values or len(values) > 50 or not all(
            isinstance(v, str) and 0 < len(v) <= MAX_ISSUER_LENGTH for v in values):
        raise SubjectTokenError(f"{what} is not meant for this bridge (audience)")
    return set(values)


def media_type(value, *, what: str) -> str | None:
    """The ``typ`` header, compared as RFC 7515 section 4.1.9 says: case-insensitively,
    ``application/`` may be left out."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise SubjectTokenError(f"{what} has a malformed typ header")
    value = value.lower()
    return value[len("application/"):] if value.startswith("application/") else value


def check_identity_claims(claims: dict, *, what: str) -> None:
    """Who the token speaks for, by type and length: ``iss`` and ``sub`` strings, ``sid``,
    ``acr`` strings and ``amr`` an array of strings when present."""
    plain_string(claims.get("iss"), "iss", what=what, max_length=MAX_ISSUER_LENGTH)
    if not claims.get("sub"):
        raise SubjectTokenError(f"{what} has no subject")
    plain_string(claims["sub"], "sub", what=what)
    for name in ("sid", "session_state", "acr"):
        if claims.get(name) is not None:
            plain_string(claims[name], name, what=what)
    amr = claims.get("amr")
    if amr is not None and not (isinstance(amr, list) and len(amr) <= MAX_AMR_VALUES and all(
            isinstance(v, str) and 0 < len(v) <= 64 and is_plain_text(v) for v in amr)):
        raise SubjectTokenError(f"{what} has a malformed amr claim")
