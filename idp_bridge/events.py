"""Wake-ups for waiters on new revocations (long polls, push delivery).

Within one process a committed revocation wakes waiters at once (a condition variable
notified after commit). Other processes and hosts are covered by a cheap database check
every ``poll_interval`` seconds, so the feed stays correct without any shared broker;
a broker (Redis) only shortens that bound.
"""

from __future__ import annotations

import threading
import time



class RevocationNotifier:
    def __init__(self, db, poll_interval: float = 0.05):
        self.db = db
        self.poll_interval = poll_interval
        self._condition = threading.Condition()
        self._generation = 0
        db.after_revocation_commit.append(self.notify)

    def notify(self) -> None:
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    def wait(self, check, timeout: float, stop: threading.Event | None = None) -> bool:
        """Wait until ``check()`` is true (re-checked on every local notification and every
        ``poll_interval``), or ``timeout`` passes; returns the last ``check()`` result.

        ``check`` asks the database, not a counter: on PostgreSQL a revocation with a lower
        id may commit after one with a higher id, so "the newest id grew" would miss it.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._condition:
                generation = self._generation
            if check():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (stop is not None and stop.is_set()):
                return False
            with self._condition:
                if self._generation == generation:
                    self._condition.wait(min(self.poll_interval, remaining))
