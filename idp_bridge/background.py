"""Background loops of a serving process (push delivery, maintenance, the Keycloak mirror,
notifications, Redis wake-ups): one daemon thread each, stopped promptly, never killed by an
error — an outage of the database or a peer only delays the next round."""

from __future__ import annotations

import logging
import threading

from .storage.db import StorageUnavailable

log = logging.getLogger(__name__)


class Loop:
    """Runs :meth:`step` until stopped. ``step`` returns how long to wait before the next
    round (``None``: :attr:`interval`); it may also wait itself on :attr:`stopping`."""

    name = "loop"
    interval = 1.0
    retry_after_error = 1.0

    def __init__(self):
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> float | None:
        raise NotImplementedError

    def start(self) -> None:
        if self._thread is None:
            self.stopping.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                delay = self.step()
            except StorageUnavailable:
                delay = self.retry_after_error
            except Exception:
                log.exception("%s round failed", self.name)
                delay = self.retry_after_error
            self.stopping.wait(self.interval if delay is None else delay)
