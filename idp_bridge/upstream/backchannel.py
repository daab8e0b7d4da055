"""OpenID Connect Back-Channel Logout 1.0, receiver side: validation of the Logout Token.

The upstream provider posts a Logout Token when an advisor's session ends there (sign-out,
session expiry, an admin's "sign out"). This module only validates it (section 2.6); what
the logout then does — revoke every token family the bridge minted from that upstream
session, publish them on the revocation feed, remember the session as ended — is the use
case :meth:`idp_bridge.services.tokens.TokenService.upstream_logout`
(:mod:`idp_bridge.domain.upstream_sessions`, :mod:`idp_bridge.domain.revocation`).
"""

from __future__ import annotations

import time

from ..domain.upstream_sessions import MAX_LOGOUT_TOKEN_AGE
from .oidc import SubjectTokenError, audience_set, media_type, numeric_date, plain_string

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
#: Logout tokens older than this are refused (and their jti remembered at least as long).
MAX_AGE_SECONDS = MAX_LOGOUT_TOKEN_AGE


class LogoutTokenError(ValueError):
    pass


#: ``typ`` header values of a logout token (section 2.4 asks for ``logout+jwt``). ``JWT``
#: is read as "not explicitly typed", like no ``typ`` at all: Keycloak before 25 sends it.
#: Any other type (``at+jwt``, ``secevent+jwt``, ...) names another kind of JWT.
LOGOUT_TOKEN_TYPES = (None, "jwt", "logout+jwt")


def validate_logout_token(validator, token: str, now: float | None = None) -> dict:
    """Section 2.6: signature, typ, iss, aud, iat, jti, events, no nonce, sid and/or sub.

    Claims are checked by type and range like subject tokens' (RFC 7519); messages name the
    failed check, never a value from the token.
    """
    what = "logout_token"
    try:
        header, claims = validator.verify(token, what=what)
        if media_type(header.get("typ"), what=what) not in LOGOUT_TOKEN_TYPES:
            raise LogoutTokenError("logout_token is explicitly typed as another kind of JWT")
        plain_string(claims.get("iss"), "iss", what=what, max_length=500)
        if claims["iss"] != validator.issuer:
            raise LogoutTokenError("logout_token was issued by another issuer")
        if not audience_set(claims, what=what) & validator.audiences:
            raise LogoutTokenError("logout_token is not meant for this bridge (audience)")
        now = time.time() if now is None else now
        iat = numeric_date(claims, "iat", what=what, required=True)
        if iat > now + validator.leeway or iat < now - MAX_AGE_SECONDS - validator.leeway:
            raise LogoutTokenError("logout_token is too old or from the future")
        exp = numeric_date(claims, "exp", what=what)
        if exp is not None and exp + validator.leeway < now:
            raise LogoutTokenError("logout_token has expired")
        if not claims.get("jti"):
            raise LogoutTokenError("logout_token has no jti")
        plain_string(claims["jti"], "jti", what=what)
        events = claims.get("events")
        if not isinstance(events, dict) or not isinstance(events.get(LOGOUT_EVENT), dict):
            raise LogoutTokenError("logout_token has no back-channel logout event")
        if "nonce" in claims:
            raise LogoutTokenError("logout_token must not contain a nonce")
        if claims.get("typ") not in (None, "Logout"):  # Keycloak's claim: Bearer, ID, ...
            raise LogoutTokenError("logout_token is typed as another kind of token (typ claim)")
        if not claims.get("sid") and not claims.get("sub"):
            raise LogoutTokenError("logout_token names neither sid nor sub")
        for name in ("sid", "sub"):
            if claims.get(name) is not None:
                plain_string(claims[name], name, what=what)
    except SubjectTokenError as exc:
        raise LogoutTokenError(str(exc)) from None
    return claims
