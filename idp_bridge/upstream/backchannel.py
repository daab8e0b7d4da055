"""OpenID Connect Back-Channel Logout 1.0, receiver side.

The upstream provider posts a Logout Token when an advisor's session ends there (sign-out,
session expiry, an admin's "sign out"). Every token family the bridge minted from that
upstream session is revoked and published on the revocation feed; the memberships stay,
so the advisor can sign in again and exchange anew.
"""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..domain import audit
from ..domain.tokens import Family
from ..storage.db import utcnow
from ..storage.models import SeenJti, TokenFamily
from .oidc import SubjectTokenError

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
#: Logout tokens older than this are refused (and their jti remembered at least as long).
MAX_AGE_SECONDS = 300


class LogoutTokenError(ValueError):
    pass


def validate_logout_token(validator, token: str, now: float | None = None) -> dict:
    """Section 2.6: signature, iss, aud, iat, jti, events, no nonce, sid and/or sub."""
    try:
        claims = validator.verify_signature(token, what="logout_token")
    except SubjectTokenError as exc:
        raise LogoutTokenError(str(exc)) from None
    now = time.time() if now is None else now
    if claims.get("iss") != validator.issuer:
        raise LogoutTokenError("logout_token was issued by another issuer")
    aud = claims.get("aud")
    audiences = {aud} if isinstance(aud, str) else set(aud or [])
    if not audiences & validator.audiences:
        raise LogoutTokenError("logout_token is not meant for this bridge (audience)")
    iat = claims.get("iat")
    if not isinstance(iat, (int, float)):
        raise LogoutTokenError("logout_token has no iat")
    if iat > now + validator.leeway or iat < now - MAX_AGE_SECONDS - validator.leeway:
        raise LogoutTokenError("logout_token is too old or from the future")
    exp = claims.get("exp")
    if isinstance(exp, (int, float)) and exp + validator.leeway < now:
        raise LogoutTokenError("logout_token has expired")
    if not isinstance(claims.get("jti"), str) or not claims["jti"]:
        raise LogoutTokenError("logout_token has no jti")
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(LOGOUT_EVENT), dict):
        raise LogoutTokenError("logout_token has no back-channel logout event")
    if "nonce" in claims:
        raise LogoutTokenError("logout_token must not contain a nonce")
    if not claims.get("sid") and not claims.get("sub"):
        raise LogoutTokenError("logout_token names neither sid nor sub")
    return claims


def apply_logout(db, issuer, claims: dict) -> int:
    """Revoke the families born from the named upstream session (or subject); returns count.

    Refuses a replayed ``jti`` with :class:`LogoutTokenError`.
    """
    now = utcnow()
    key = hashlib.sha256(f"logout\x00{claims['iss']}\x00{claims['jti']}".encode()).hexdigest()
    try:
        with db.transaction() as session:
            if session.get(SeenJti, key) is not None:
                raise LogoutTokenError("logout_token was already used (jti)")
            session.add(SeenJti(key=key, expires_at=now + timedelta(seconds=2 * MAX_AGE_SECONDS)))
            query = select(TokenFamily).where(TokenFamily.upstream_issuer == claims["iss"],
                                              TokenFamily.revoked_at.is_(None))
            if claims.get("sid"):
                query = query.where(TokenFamily.upstream_sid == str(claims["sid"]))
            if claims.get("sub"):
                query = query.where(TokenFamily.subject == str(claims["sub"]))
            families = session.scalars(query).all()
            for row in families:
                family = Family(**{name: getattr(row, name) for name in Family.FIELDS})
                issuer.revoke_family(session, family, "upstream_logout", now)
                audit.record(session, "token.family_revoked", now, tenant_id=row.tenant_id,
                             actor=row.subject, actor_role="upstream",
                             membership_id=row.membership_id, client_id=row.client_id,
                             sid=row.sid, reason="upstream_logout")
            return len(families)
    except IntegrityError:
        raise LogoutTokenError("logout_token was already used (jti)") from None
