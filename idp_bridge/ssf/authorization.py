"""OAuth 2.0 access tokens for the stream management API (CAEP interoperability profile 2.9).

A receiver client gets one with the client credentials grant (RFC 6749 section 4.4, at the
bridge's token endpoint: :mod:`idp_bridge.oauth.client_credentials`) and sends it as
``Authorization: Bearer`` (RFC 6750 section 2.1; never in the query, section 2.3). The token
is a JWT access token (RFC 9068, ``typ: at+jwt``) signed with the access-token keys, for the
audience ``<issuer>/ssf`` (no resource server accepts it, and no advisor token is accepted
here), with the scopes

- ``ssf.read``: read a stream's configuration and status;
- ``ssf.manage``: everything (create, update, replace, delete, status, subjects,
  verification, poll): the profile's "all management operations MUST accept ssf.manage";
- ``access.record``: report access records (``POST /access-records``, issue 14) — only when
  asked for: a token requested without a scope gets the two feed scopes.

Its revocation status is the client's: a client removed, disabled or no longer a receiver has
no valid token left (checked on every request). Tokens live ``lifetime`` seconds (the
access-token lifetime, within the profile's 60 minutes).
"""

from __future__ import annotations

import secrets
import time

from joserfc import jwt

from ..domain.tokens import verify_own_jwt

READ = "ssf.read"
MANAGE = "ssf.manage"
ACCESS_RECORD = "access.record"
#: The scopes of a token requested without ``scope``.
SCOPES = (MANAGE, READ)
#: Every scope a receiver may ask for.
GRANTABLE = (MANAGE, READ, ACCESS_RECORD)


class ManagementTokens:
    def __init__(self, keyring, *, issuer: str, lifetime: int):
        self.keyring = keyring
        self.issuer = issuer.rstrip("/")
        self.audience = f"{self.issuer}/ssf"
        self.lifetime = lifetime

    def mint(self, client_id: str, scopes) -> tuple[str, int]:
        """(token, expires_in) for a receiver client."""
        kid, alg, key = self.keyring.signing_key()
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": client_id, "aud": self.audience,
                  "client_id": client_id, "scope": " ".join(scopes),
                  "jti": secrets.token_urlsafe(16), "iat": now, "exp": now + self.lifetime}
        return jwt.encode({"alg": alg, "typ": "at+jwt", "kid": kid}, claims, key), self.lifetime

    def read(self, token: str) -> dict | None:
        """The claims of a valid management token, else None."""
        claims = verify_own_jwt(self.keyring, token, max_length=4096)
        if claims is None:
            return None
        now = time.time()
        if claims.get("iss") != self.issuer or claims.get("aud") != self.audience or \
                not isinstance(claims.get("exp"), int) or claims["exp"] <= now or \
                not isinstance(claims.get("client_id"), str) or \
                not isinstance(claims.get("scope"), str):
            return None
        return claims


__all__ = ["ACCESS_RECORD", "GRANTABLE", "MANAGE", "READ", "SCOPES", "ManagementTokens"]
