"""Upstream sessions that ended (OpenID Connect Back-Channel Logout 1.0, section 2.7).

A validated logout token (:func:`idp_bridge.upstream.backchannel.validate_logout_token`) is
recorded here: its ``jti`` is remembered (a replay changes nothing), the upstream session it
names (or, with only ``sub``, every session of the subject that existed then) is remembered
as ended — so no new token family is born from a subject token of it — and the bridge's web
sessions of it end. The token families born from it are revoked by the caller through
:mod:`idp_bridge.domain.revocation`; memberships stay, so the advisor can sign in again.
"""

from __future__ import annotations

import hashlib
import math
from datetime import timedelta

from sqlalchemy import bindparam, select

from ..storage.models import EndedUpstreamSession, SeenJti, TokenFamily
from .errors import InvalidInput
from .web_sessions import WebSessions

#: Logout tokens older than this are refused (and their jti remembered twice as long).
MAX_LOGOUT_TOKEN_AGE = 300

#: How long an ended upstream session is remembered: longer than any upstream token of it
#: can live (Keycloak access tokens: 5 minutes; ID tokens of long sessions: hours).
REMEMBER_ENDED_SESSION = timedelta(days=1)


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
    rows = session.connection().execute(_ENDED, {"keys": list(keys.values())}).all()
    found = dict(rows)
    return ended_by(identity, found.get(keys.get("sid")), found.get(keys.get("sub")))


def ended_by(identity, sid_ended_at, sub_ended_at) -> bool:
    """The rule of :func:`session_has_ended` over what was read: when the upstream session
    ``sid`` (``sid_ended_at``) or every session of the subject (``sub_ended_at``) was logged
    out. The exchange reads both with its membership (:func:`ended_columns`)."""
    if sid_ended_at is not None:
        return True
    if sub_ended_at is None:
        return False
    issued = identity.claims.get("iat")
    if isinstance(issued, bool) or not isinstance(issued, (int, float)) \
            or not math.isfinite(issued):
        return True  # a token that does not say when it was issued may be from before
    # Subject-wide logout: tokens issued before it are from ended sessions.
    return issued <= sub_ended_at.timestamp()


def ended_key_params(identity) -> dict:
    """The parameters of :func:`ended_columns` for ``identity`` (None: no such key)."""
    keys = ended_session_keys(identity.issuer, identity.session_id, identity.subject)
    return {"ended_sid_key": keys.get("sid"), "ended_sub_key": keys.get("sub")}


def ended_columns():
    """Two scalar subqueries for a statement of the exchange's hot path: when the subject
    token's upstream session, and when all of its subject's sessions, were logged out
    (NULL: not), with the parameters of :func:`ended_key_params`."""
    def ended_at(parameter: str, label: str):
        return (select(EndedUpstreamSession.ended_at)
                .where(EndedUpstreamSession.key == bindparam(parameter))
                .scalar_subquery().label(label))

    return ended_at("ended_sid_key", "sid_ended_at"), ended_at("ended_sub_key", "sub_ended_at")


def record_logout(session, claims: dict, now) -> list[TokenFamily]:
    """Record the logout of validated ``claims`` and return the live token families born
    from the session (or subject) it names, for the caller to revoke. A replayed ``jti``
    raises :class:`InvalidInput` (``logout_token_replayed``)."""
    key = hashlib.sha256(f"logout\x00{claims['iss']}\x00{claims['jti']}".encode()).hexdigest()
    if session.get(SeenJti, key) is not None:
        raise InvalidInput("logout_token was already used (jti)", code="logout_token_replayed")
    session.add(SeenJti(key=key, expires_at=now + timedelta(seconds=2 * MAX_LOGOUT_TOKEN_AGE)))
    query = select(TokenFamily).where(TokenFamily.upstream_issuer == claims["iss"],
                                      TokenFamily.revoked_at.is_(None))
    if claims.get("sid"):
        query = query.where(TokenFamily.upstream_sid == str(claims["sid"]))
    if claims.get("sub"):
        query = query.where(TokenFamily.subject == str(claims["sub"]))
    remember_ended_session(session, claims, now)
    # The bridge's own web sessions of that upstream session (or subject) end too.
    WebSessions.end_upstream(session, issuer=claims["iss"], sid=claims.get("sid"),
                             subject=claims.get("sub"), reason="upstream_logout", now=now)
    return list(session.scalars(query).all())
