"""OpenID Connect Back-Channel Logout 1.0, receiver side.

The upstream provider posts a Logout Token when an advisor's session ends there (sign-out,
session expiry, an admin's "sign out"). Every token family the bridge minted from that
upstream session is revoked and published on the revocation feed; the memberships stay,
so the advisor can sign in again and exchange anew.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from datetime import timedelta

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError

from ..domain import audit
from ..domain.tokens import Family
from ..storage.db import utcnow
from ..domain.web_sessions import WebSessions
from ..storage.models import EndedUpstreamSession, SeenJti, TokenFamily
from .oidc import SubjectTokenError, audience_set, media_type, numeric_date, plain_string

log = logging.getLogger(__name__)

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
#: Logout tokens older than this are refused (and their jti remembered at least as long).
MAX_AGE_SECONDS = 300


#: How long an ended upstream session is remembered: longer than any upstream token of it
#: can live (Keycloak access tokens: 5 minutes; ID tokens of long sessions: hours).
REMEMBER_ENDED_SESSION = timedelta(days=1)


class LogoutTokenError(ValueError):
    pass


def ended_session_keys(issuer: str, sid: str | None, sub: str | None) -> dict[str, str]:
    # NUL-separated parts are unambiguous: the issuer is the configured one, and sid and sub
    # passed the claim checks (no control characters) before they get here.
    keys = {}
    if sid:
        keys["sid"] = hashlib.sha256(f"sid\x00{issuer}\x00{sid}".encode()).hexdigest()
    if sub:
        keys["sub"] = hashlib.sha256(f"sub\x00{issuer}\x00{sub}".encode()).hexdigest()
    return keys


def remember_ended_session(session, claims: dict, now) -> None:
    """A logout naming ``sid`` ends that session; one naming only ``sub`` ends every
    session of the subject that existed then."""
    sid = str(claims["sid"]) if claims.get("sid") else None
    sub = None if sid else str(claims["sub"])
    for key in ended_session_keys(claims["iss"], sid, sub).values():
        row = session.get(EndedUpstreamSession, key)
        if row is None:
            session.add(EndedUpstreamSession(key=key, ended_at=now,
                                             expires_at=now + REMEMBER_ENDED_SESSION))
        else:
            row.ended_at, row.expires_at = now, now + REMEMBER_ENDED_SESSION


_ENDED = select(EndedUpstreamSession.key, EndedUpstreamSession.ended_at).where(
    EndedUpstreamSession.key.in_(bindparam("keys", expanding=True)))


def session_has_ended(session, identity) -> bool:
    """Whether the subject token comes from an upstream session that was logged out."""
    keys = ended_session_keys(identity.issuer, identity.session_id, identity.subject)
    # On every token exchange: a prepared Core statement on the transaction's connection.
    rows = session.connection().execute(_ENDED, {"keys": list(keys.values())}).all()
    issued = identity.claims.get("iat")
    if isinstance(issued, bool) or not isinstance(issued, (int, float)) \
            or not math.isfinite(issued):
        issued = None
    for key, ended_at in rows:
        if key == keys.get("sid"):
            return True
        # Subject-wide logout: tokens issued before it are from ended sessions, and a token
        # that does not say when it was issued may be one of them.
        if issued is None or issued <= ended_at.timestamp():
            return True
    return False


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


def apply_logout(db, issuer, claims: dict) -> int:
    """Revoke the families born from the named upstream session (or subject) and end the
    bridge's web sessions of it; returns the number of families revoked.

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
            remember_ended_session(session, claims, now)
            # The bridge's own web sessions of that upstream session (or subject) end too.
            ended_pages = WebSessions.end_upstream(
                session, issuer=claims["iss"], sid=claims.get("sid"), subject=claims.get("sub"),
                reason="upstream_logout", now=now)
            families = session.scalars(query).all()
            for row in families:
                family = Family(**{name: getattr(row, name) for name in Family.FIELDS})
                issuer.revoke_family(session, family, "upstream_logout", now)
                audit.record(session, "token.family_revoked", now, tenant_id=row.tenant_id,
                             actor=row.subject, actor_role="upstream",
                             membership_id=row.membership_id, client_id=row.client_id,
                             sid=row.sid, reason="upstream_logout")
            log.info("back-channel logout: %d token families revoked, %d web sessions ended",
                     len(families), ended_pages)
            return len(families)
    except IntegrityError:
        raise LogoutTokenError("logout_token was already used (jti)") from None
