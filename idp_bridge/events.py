"""Wake-ups for waiters on new revocations (long polls, push delivery).

Within one process a committed revocation wakes waiters at once: the domain's revocation
(:class:`idp_bridge.domain.revocation.Revocations`) registers its ``wake_ups`` — wired in
``create_app`` to :meth:`RevocationNotifier.notify` and :meth:`RedisFanout.publish` — to run
after the transaction commits (:func:`idp_bridge.storage.db.after_commit`), never after a
rollback. Other processes and hosts are covered by a cheap database check
every ``poll_interval`` seconds, so the feed stays correct without any shared broker;
a broker (Redis) only shortens that bound.
"""

from __future__ import annotations

import logging
import threading
import time

from .background import Loop

log = logging.getLogger(__name__)


class RevocationNotifier:
    def __init__(self, poll_interval: float = 0.05):
        self.poll_interval = poll_interval
        self._condition = threading.Condition()
        self._generation = 0

    def notify(self) -> None:
        """A revocation has committed (a wake-up of :class:`Revocations`)."""
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
