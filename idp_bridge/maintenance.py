"""Periodic work each bridge process does (idempotent, so any number of processes may run it):
end temporary memberships past their maximum age and those of advisors whose upstream
account was disabled or deleted (publishing their grants on the feed within ``interval``
seconds) and end their web sessions, forget one-time JWT ids, expired web sessions, wrong
access-code guesses no limit counts any more, feed bookkeeping no longer needed, access
records older than their retention (``access_record_retention_days``), and mark access
requests and four-eyes approvals that expired unanswered; ask tenants to re-confirm their
permanent advisors and end those left unconfirmed; and sign the checkpoints of the
audit chains that are due (``audit_checkpoint_seconds``)."""

from __future__ import annotations

import logging

from sqlalchemy import delete

from .background import Loop

from .storage.db import utcnow
from .domain.access_records import AccessRecords
from .domain.web_sessions import WebSessions
from .storage.models import EndedUpstreamSession, SeenJti


log = logging.getLogger(__name__)


class Maintenance(Loop):
    name = "maintenance"

    def __init__(self, *, db, memberships, transmitter, interval: float = 30.0, accounts=None,
                 guesses=None, access_record_retention_days: int = 400, access_requests=None,
                 four_eyes=None, checkpoints=None, permanent_consent=None):
        super().__init__()
        #: Re-confirmation of permanent advisors (domain/permanent_consent.py).
        self.permanent_consent = permanent_consent
        #: The audit chains' checkpoints (domain/audit_checkpoints.py): signed when due.
        self.checkpoints = checkpoints
        self.access_requests = access_requests
        self.four_eyes = four_eyes
        self.db = db
        self.guesses = guesses
        self.accounts = accounts
        self.memberships = memberships
        self.transmitter = transmitter
        self.interval = interval
        self.access_record_retention_days = access_record_retention_days

    def run_once(self, now=None) -> int:
        now = now or utcnow()
        with self.db.transaction() as session:
            expired = self.memberships.expire_due(session, now)
            session.execute(delete(SeenJti).where(SeenJti.expires_at < now))
            session.execute(delete(EndedUpstreamSession).where(EndedUpstreamSession.expires_at < now))
            WebSessions.sweep(session, now)
            if self.guesses is not None:
                self.guesses.sweep(session, now)
            # Requests first: an expiring request closes its first approval itself.
            if self.access_requests is not None:
                self.access_requests.expire_due(session, now)
            if self.four_eyes is not None:
                self.four_eyes.expire_due(session, now)
            if self.permanent_consent is not None:
                self.permanent_consent.expire_proposals(session, now)
                expired += self.permanent_consent.sweep(session, now)[1]
        # Its own transactions of bounded size: a sweep never holds the write lock long.
        for _ in range(10):
            with self.db.transaction() as session:
                if AccessRecords.sweep(session, now, self.access_record_retention_days) == 0:
                    break
        self.transmitter.cleanup(now)
        if self.accounts is not None:
            for subject in self.accounts.ended_accounts():
                with self.db.transaction() as session:
                    expired += self.memberships.end_all_of_advisor(
                        session, subject, reason="upstream_account_ended", now=utcnow())
                    WebSessions.end_all_of_subject(session, subject, reason="upstream_account_ended",
                                                   now=utcnow())
        if self.checkpoints is not None:
            # Last, and on its own: a checkpoint that cannot be signed (keys locked) must
            # not hold back the sweeps above.
            try:
                self.checkpoints.sign_due(utcnow())
            except Exception:
                log.exception("signing the audit checkpoints failed")
        return expired

    def step(self) -> None:
        self.run_once()
