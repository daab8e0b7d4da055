"""Wake-ups for waiters on new revocations (long polls, push delivery).

Within one process a committed revocation wakes waiters at once: the domain's revocation
(:class:`idp_bridge.domain.revocation.Revocations`) registers its ``wake_ups`` — wired in
``create_app`` to :meth:`RevocationNotifier.notify` and :meth:`RedisFanout.publish` — to run
after the transaction commits (:func:`idp_bridge.storage.db.after_commit`), never after a
rollback. Other processes learn of it from the database itself
(:class:`DatabaseWakeups`, one thread per process): on SQLite (one host) a look at
``PRAGMA data_version`` every few milliseconds — it changes when another connection commits,
and costs no I/O — then, only if it changed, whether the newest revocation id grew (SQLite
commits one writer after another, so ids appear in order); on PostgreSQL a ``NOTIFY`` after
the commit and a ``LISTEN`` per process (every host of the database). Should any of that
fail, each waiter's own database check every ``poll_interval`` seconds still finds the
revocation, so the feed stays correct without any shared broker; a broker (Redis) is
optional. While the database is watched that check is only a safety net and runs every
``assisted_interval`` seconds instead (ten waiting long polls checking every 50 ms cost a
bridge a fifth of a CPU core doing nothing, and held the interpreter when a revocation
woke them); what only the check finds in other processes — a verification requested or a
stream re-enabled through another process — waits that long at most.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

from .background import Loop

log = logging.getLogger(__name__)


class RevocationNotifier:
    def __init__(self, poll_interval: float = 0.05, assisted_interval: float = 1.0):
        self.poll_interval = poll_interval
        self.assisted_interval = assisted_interval
        self._condition = threading.Condition()
        self._generation = 0
        #: Cross-process wake-ups (:class:`DatabaseWakeups`) registered with this notifier.
        self.watchers: list = []

    def interval(self) -> float:
        """How often a waiter checks on its own: rarely while another process's revocation
        wakes it anyway (the database is watched), else ``poll_interval``."""
        if any(watcher.watching for watcher in self.watchers):
            return max(self.poll_interval, self.assisted_interval)
        return self.poll_interval

    def notify(self) -> None:
        """A revocation has committed (a wake-up of :class:`Revocations`)."""
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    def generation(self) -> int:
        """A mark to pass as ``since`` to :meth:`wait` (take it before reading)."""
        with self._condition:
            return self._generation

    def wait(self, check, timeout: float, stop: threading.Event | None = None,
             since: int | None = None) -> bool:
        """Wait until ``check()`` is true (re-checked on every notification and every
        :meth:`interval`), or ``timeout`` passes; returns the last ``check()`` result.
        ``since``: a :meth:`generation` taken before the caller read what ``check`` reads;
        while nothing was notified since, the first check is skipped (the caller has just
        made it), and the first look is after a notification or an interval.

        ``check`` asks the database, not a counter: on PostgreSQL a revocation with a lower
        id may commit after one with a higher id, so "the newest id grew" would miss it.
        """
        deadline = time.monotonic() + timeout
        skip = since is not None
        while True:
            with self._condition:
                generation = self._generation
            if skip and generation == since:
                pass  # nothing happened since the caller's own read
            elif check():
                return True
            skip = False
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (stop is not None and stop.is_set()):
                return False
            with self._condition:
                if self._generation == generation:
                    self._condition.wait(min(self.interval(), remaining))


class RedisFanout(Loop):
    """Wakes waiters of every bridge process at once: after a revocation commits, a message
    on a Redis channel; each process listens and notifies its local waiters. Losing Redis
    loses only speed: the database check of :class:`RevocationNotifier` still finds it."""

    CHANNEL = "idp-bridge:revocations"
    name = "redis-fanout"

    def __init__(self, redis_url: str, notifier: RevocationNotifier):
        import redis

        super().__init__()
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=1.0,
                                           socket_connect_timeout=1.0)
        self.notifier = notifier
        self._delay = 0.2

    def publish(self) -> None:
        """Tell every process a revocation has committed (a wake-up of :class:`Revocations`,
        run after the commit: a slow or absent Redis never holds a transaction open)."""
        try:
            self._redis.publish(self.CHANNEL, b"1")
        except Exception:  # redis errors of any kind: the database check covers it
            log.warning("could not publish a revocation wake-up to Redis")

    def step(self) -> float:
        """One subscription: listen until stopped or the connection fails (then back off)."""
        try:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(self.CHANNEL)
            self._delay = 0.2
            while not self.stopping.is_set():
                if pubsub.get_message(timeout=0.5) is not None:
                    self.notifier.notify()
            pubsub.close()
            return 0.0
        except Exception:
            self._delay = min(5.0, self._delay * 2)
            return self._delay

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except Exception:
            return False


class DatabaseWakeups(Loop):
    """Wakes the waiters of this process when another process (or host, on PostgreSQL)
    commits a revocation (the module docstring). :meth:`publish` is a wake-up of
    :class:`~idp_bridge.domain.revocation.Revocations` (after the commit)."""

    name = "database-wakeups"
    #: NOTIFY channel on PostgreSQL.
    CHANNEL = "idp_bridge_revocations"

    def __init__(self, db, notifier: RevocationNotifier, *, interval: float = 0.005):
        super().__init__()
        self.db = db
        self.notifier = notifier
        #: How often SQLite's data_version is looked at.
        self.check_interval = interval
        self.backend = db.url.get_backend_name()
        self._delay = 0.2
        #: True while the database is watched (LISTEN issued / data_version read).
        self.watching = False
        #: Commits of other connections seen (SQLite), revocations or not.
        self.seen_commits = 0
        notifier.watchers.append(self)

    def publish(self) -> None:
        """Tell the other processes (PostgreSQL: ``NOTIFY``; SQLite needs nothing: its
        watchers see the commit). Run after the commit; a failure costs only speed."""
        if self.backend != "postgresql":
            return
        try:
            with self.db.engine.connect() as connection:
                connection.exec_driver_sql(f"NOTIFY {self.CHANNEL}")
                connection.commit()
        except Exception:  # the waiters' own database checks still find the revocation
            log.warning("could not publish a revocation wake-up to PostgreSQL")

    def step(self) -> float:
        try:
            if self.backend == "sqlite":
                self._watch_sqlite()
            elif self.backend == "postgresql":
                self._listen_postgresql()
            else:
                return 3600.0
            self._delay = 0.2
            return 0.0
        except Exception:
            log.warning("revocation wake-ups from the database paused; the waiters' own "
                        "checks continue", exc_info=True)
            self._delay = min(5.0, self._delay * 2)
            return self._delay
        finally:
            self.watching = False

    def _watch_sqlite(self) -> None:
        path = self.db.url.database
        if not path or path == ":memory:":
            self.stopping.wait(3600.0)  # one connection per memory database: nothing to see
            return
        # A read-only connection of its own; the file URI percent-encodes the path.
        connection = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True,
                                     timeout=1.0, isolation_level=None)
        try:
            version = connection.execute("PRAGMA data_version").fetchone()[0]
            newest = self._newest(connection)
            self.watching = True
            while not self.stopping.wait(self.check_interval):
                current = connection.execute("PRAGMA data_version").fetchone()[0]
                if current == version:
                    continue
                version = current
                self.seen_commits += 1
                latest = self._newest(connection)
                if latest != newest:
                    newest = latest
                    self.notifier.notify()
        finally:
            connection.close()

    @staticmethod
    def _newest(connection) -> int:
        return connection.execute("SELECT coalesce(max(id), 0) FROM revocations").fetchone()[0]

    def _listen_postgresql(self) -> None:
        import psycopg

        url = self.db.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as connection:
            connection.execute(f"LISTEN {self.CHANNEL}")
            self.watching = True
            while not self.stopping.is_set():
                for _ in connection.notifies(timeout=0.5):
                    self.notifier.notify()
