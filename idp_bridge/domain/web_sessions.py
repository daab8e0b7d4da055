"""Server-side sessions of the web pages (issue 10, items 9 and 10).

The browser's cookie holds only a random handle (256 bits); the database holds its SHA-256,
who signed in (issuer, subject, the upstream ``sid``), the claims the pages use (profile,
roles, groups) and the upstream ID token encrypted with a key derived from the handle, so
that neither a copied database nor the cookie alone yields an upstream token. Every page
request reads the row: a session ended by sign-out, by the upstream's back-channel logout
(of its ``sid``, or of every session of the subject) or by expiry is signed out at once,
although its cookie may live on.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import bindparam, delete, or_, select, update

from ..storage.models import WebSession

#: Handles are URL-safe base64 of 32 random bytes (43 characters); anything else is unknown.
HANDLE_LENGTH = 43


@dataclass(frozen=True)
class SignedIn:
    """A live web session as the pages see it."""

    id: str
    issuer: str
    subject: str
    claims: dict = field(repr=False)
    expires_at: datetime


def session_key(handle: str) -> str:
    return hashlib.sha256(handle.encode()).hexdigest()


def _fernet(handle: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"idp-bridge web session id_token").derive(handle.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def decrypt_id_token(handle: str, blob: bytes | None) -> str | None:
    """The ID token kept for ``handle``'s session (None if none, or the key does not fit)."""
    if not blob:
        return None
    try:
        return _fernet(handle).decrypt(blob).decode()
    except InvalidToken:
        return None


def _well_formed(handle) -> bool:
    return isinstance(handle, str) and len(handle) == HANDLE_LENGTH and handle.isascii()


_LIVE = select(WebSession.id, WebSession.issuer, WebSession.subject, WebSession.claims,
               WebSession.expires_at).where(
    WebSession.id == bindparam("id"), WebSession.ended_at.is_(None),
    WebSession.expires_at > bindparam("now"))


class WebSessions:
    def __init__(self, *, lifetime: timedelta):
        self.lifetime = lifetime

    def start(self, session, *, issuer: str, subject: str, upstream_sid: str | None,
              claims: dict, id_token: str | None, now: datetime) -> str:
        """Record a new sign-in; returns the handle for the cookie (never stored)."""
        handle = secrets.token_urlsafe(32)
        session.add(WebSession(
            id=session_key(handle), issuer=issuer, subject=subject, upstream_sid=upstream_sid,
            claims=claims, created_at=now, expires_at=now + self.lifetime,
            id_token=_fernet(handle).encrypt(id_token.encode()) if id_token else None))
        return handle

    def find(self, session, handle, now: datetime) -> SignedIn | None:
        """The live session of ``handle`` (one primary-key read), or None when the handle is
        unknown, ended or expired."""
        if not _well_formed(handle):
            return None
        row = session.connection().execute(_LIVE, {"id": session_key(handle), "now": now}).first()
        if row is None:
            return None
        return SignedIn(id=row.id, issuer=row.issuer, subject=row.subject,
                        claims=dict(row.claims or {}), expires_at=row.expires_at)

    def end(self, session, handle, *, reason: str, now: datetime) -> str | None:
        """End the session of ``handle`` (sign-out); returns its ID token (for the logout
        hint) when it was live and had one."""
        if not _well_formed(handle):
            return None
        row = session.get(WebSession, session_key(handle))
        if row is None or row.ended_at is not None:
            return None
        row.ended_at, row.ended_reason = now, reason
        if row.expires_at <= now:
            return None
        return decrypt_id_token(handle, row.id_token)

    @staticmethod
    def end_upstream(session, *, issuer: str, sid: str | None, subject: str | None,
                     reason: str, now: datetime) -> int:
        """Back-channel logout: end the sessions of upstream session ``sid`` (and those of
        ``subject`` that recorded no sid, which cannot be told apart), or with only
        ``subject`` every session of that subject. Returns how many ended."""
        if not sid and not subject:
            return 0
        query = update(WebSession).where(WebSession.issuer == issuer,
                                         WebSession.ended_at.is_(None))
        if sid:
            match = WebSession.upstream_sid == sid
            if subject:
                match = or_(match, (WebSession.subject == subject)
                            & WebSession.upstream_sid.is_(None))
                query = query.where(WebSession.subject == subject)
            query = query.where(match)
        else:
            query = query.where(WebSession.subject == subject)
        result = session.execute(query.values(ended_at=now, ended_reason=reason)
                                 .execution_options(synchronize_session=False))
        return result.rowcount or 0

    @staticmethod
    def end_all_of_subject(session, subject: str, *, reason: str, now: datetime) -> int:
        """Every live session of ``subject`` at any issuer (the account ended upstream)."""
        result = session.execute(
            update(WebSession).where(WebSession.subject == subject, WebSession.ended_at.is_(None))
            .values(ended_at=now, ended_reason=reason)
            .execution_options(synchronize_session=False))
        return result.rowcount or 0

    @staticmethod
    def sweep(session, now: datetime) -> int:
        """Forget sessions past their lifetime (ended or not): their handles are worthless."""
        result = session.execute(delete(WebSession).where(WebSession.expires_at < now)
                                 .execution_options(synchronize_session=False))
        return result.rowcount or 0
