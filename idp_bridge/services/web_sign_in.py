"""The web pages' sign-in sessions (server-side: :mod:`idp_bridge.domain.web_sessions`):
start one after the OpenID Connect callback, find the live one of a cookie's handle on every
page request, end one at sign-out. Each is one unit of work."""

from __future__ import annotations

from ..storage.db import utcnow


class WebSignIn:
    def __init__(self, *, db, web_sessions, sign_ins=None):
        self.db = db
        self.web_sessions = web_sessions
        self.sign_ins = sign_ins

    def start(self, *, issuer: str, subject: str, upstream_sid: str | None, claims: dict,
              id_token: str | None) -> str:
        """Record a sign-in (the session, and the person for the directory); returns the
        handle for the cookie."""
        with self.db.transaction() as session:
            if self.sign_ins is not None:
                self.sign_ins.seen_page_sign_in(session, subject, claims, utcnow())
            return self.web_sessions.start(session, issuer=issuer, subject=subject,
                                           upstream_sid=upstream_sid, claims=claims,
                                           id_token=id_token, now=utcnow())

    def find(self, handle):
        """The live session of ``handle``, or None (unknown, ended here or upstream, expired)."""
        with self.db.read() as session:
            return self.web_sessions.find(session, handle, utcnow())

    def end(self, handle, *, reason: str) -> str | None:
        """End the session of ``handle``; returns its ID token (the logout hint), if any."""
        with self.db.transaction() as session:
            return self.web_sessions.end(session, handle, reason=reason, now=utcnow())
