"""Periodic work each bridge process does (idempotent, so any number of processes may run it):
end temporary memberships past their maximum age and those of advisors whose upstream
account was disabled or deleted (publishing their grants on the feed within ``interval``
seconds), forget one-time JWT ids and feed bookkeeping no longer needed."""

from __future__ import annotations

import logging
import threading

from sqlalchemy import delete

from .storage.db import utcnow
from .storage.models import SeenJti

log = logging.getLogger(__name__)


class Maintenance:
    def __init__(self, *, db, memberships, transmitter, interval: float = 30.0, accounts=None):
        self.db = db
        self.accounts = accounts
        self.memberships = memberships
        self.transmitter = transmitter
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        now = utcnow()
        with self.db.transaction() as session:
            expired = self.memberships.expire_due(session, now)
            session.execute(delete(SeenJti).where(SeenJti.expires_at < now))
        self.transmitter.cleanup(now)
        if self.accounts is not None:
            for subject in self.accounts.ended_accounts():
                with self.db.transaction() as session:
                    expired += self.memberships.end_all_of_advisor(
                        session, subject, reason="upstream_account_ended", now=utcnow())
        return expired

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="maintenance", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception:  # keep running: the next round may succeed (database back)
                log.exception("maintenance round failed")
