"""The revocation set: the ``grant_id`` and ``sid`` values whose tokens are refused.

Filled by the revocation feed (:mod:`scopes.guard.feed`, CAEP ``session-revoked`` events,
docs/revocation-feed.md) or by the application itself. An entry is kept until
``event_timestamp + keep_for`` (the guard passes its ``max_token_lifetime + leeway``): by then
every token it could revoke has expired, so forgetting it is safe and the set stays small.

Readers (the validation hot path) look up ``grants`` and ``sids`` without a lock: a dict read
is atomic in CPython. Writers hold the lock; pruning swaps in new dicts, so a reader sees the
old or the new table, never a half-pruned one.
"""

from __future__ import annotations

import threading
import time

__all__ = ["REVOCATION_KINDS", "RevocationSet"]

REVOCATION_KINDS = ("grant_id", "sid")

_NUMBER = (int, float)


class RevocationSet:
    """Revoked ``grant_id`` and ``sid`` values, each with the wall-clock time until which it
    matters."""

    def __init__(self, keep_for: float, *, prune_interval: float = 10.0):
        self.keep_for = keep_for
        self.prune_interval = prune_interval
        self.grants: dict[str, float] = {}
        self.sids: dict[str, float] = {}
        self._lock = threading.Lock()
        self._pruned_at = time.monotonic()

    def revoke(self, kind: str, value: str, event_timestamp: float) -> bool:
        """Refuse tokens whose ``kind`` claim (``grant_id`` or ``sid``) is ``value``.

        Returns False when the entry would already have expired (``event_timestamp +
        keep_for`` has passed): no token it names can still be valid.
        """
        if kind not in REVOCATION_KINDS:
            raise ValueError(f"kind must be one of {REVOCATION_KINDS}")
        if not isinstance(value, str) or not value:
            raise ValueError("value must be a non-empty string")
        if type(event_timestamp) not in _NUMBER:
            raise ValueError("event_timestamp must be a number (seconds since the epoch)")
        until = event_timestamp + self.keep_for
        if until <= time.time():
            return False
        with self._lock:
            table = self.grants if kind == "grant_id" else self.sids
            if table.get(value, 0) < until:
                table[value] = until
        self.prune()
        return True

    def is_revoked(self, kind: str, value: str) -> bool:
        table = self.grants if kind == "grant_id" else self.sids
        return value in table

    def prune(self, now: float | None = None, *, force: bool = False) -> None:
        """Forget entries whose tokens have all expired (cheap: at most every
        ``prune_interval`` seconds unless ``force``)."""
        if not force and time.monotonic() - self._pruned_at < self.prune_interval:
            return
        now = time.time() if now is None else now
        with self._lock:
            self._pruned_at = time.monotonic()
            self.grants = {k: v for k, v in self.grants.items() if v > now}
            self.sids = {k: v for k, v in self.sids.items() if v > now}

    def __len__(self) -> int:
        return len(self.grants) + len(self.sids)
