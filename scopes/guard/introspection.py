"""Introspection fallback (RFC 7662): ask the bridge whether a token is active.

Used only while the revocation feed is unhealthy and the guard was built with
``introspection_fallback=True``: a token that passed every local check is then accepted only if
the bridge's ``introspection_endpoint`` (from the issuer's metadata) answers ``active: true``.
Answers are cached for a few seconds, keyed by the token's SHA-256 (never the token itself),
in a bounded table. Any failure - no endpoint, no credentials, network, HTTP status, not JSON
- refuses the token: the guard fails closed.
"""

from __future__ import annotations

import hashlib
import logging
import time

from ._http import FetchError
from .bearer import InvalidToken

__all__ = ["Introspector"]

log = logging.getLogger("scopes.guard")


class Introspector:
    """RFC 7662 calls for one guard; ``endpoint`` is a callable returning the endpoint URL
    (known once the metadata is), ``credentials`` the (client_id, secret) of an ``introspect``
    client, set when the revocation listener starts."""

    MAX_ENTRIES = 10_000

    def __init__(self, http, endpoint, *, timeout: float, cache_seconds: float):
        self.http = http
        self._endpoint = endpoint
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self.credentials: tuple[str, str] | None = None
        self._cache: dict[bytes, tuple[float, bool]] = {}

    def validate(self, token: str) -> None:
        """Raise :class:`InvalidToken` unless the bridge says ``token`` is active."""
        key = hashlib.sha256(token.encode()).digest()
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            active = hit[1]
        else:
            active = self._ask(token)
            cache = self._cache
            if len(cache) >= self.MAX_ENTRIES:
                for k in [k for k, (until, _) in list(cache.items()) if until <= now]:
                    cache.pop(k, None)
                if len(cache) >= self.MAX_ENTRIES:
                    cache.clear()
            cache[key] = (now + self.cache_seconds, active)
        if not active:
            raise InvalidToken("token is not active")

    def _ask(self, token: str) -> bool:
        endpoint = self._endpoint()
        if not endpoint or self.credentials is None:
            raise InvalidToken("revocation feed unavailable")
        try:
            response = self.http.post(endpoint, data={"token": token,
                                                      "token_type_hint": "access_token"},
                                      auth=self.credentials, timeout=self.timeout,
                                      headers={"Accept": "application/json"})
            if response.status_code != 200:
                raise FetchError(f"HTTP {response.status_code}")
            document = response.json()
        except Exception as exc:  # noqa: BLE001
            log.warning("introspection failed: %s", exc if isinstance(exc, FetchError)
                        else type(exc).__name__)
            raise InvalidToken("revocation feed unavailable and introspection failed") from None
        return isinstance(document, dict) and document.get("active") is True
