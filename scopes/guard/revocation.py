"""The revocation set: the ``grant_id`` and ``sid`` values whose tokens are refused.

Filled by the revocation feed (:mod:`scopes.guard.feed`, CAEP ``session-revoked`` events,
docs/revocation-feed.md) or by the application itself.

**How long an entry stays (fail closed).** An entry may leave only once no token it revokes
can still be accepted. The guard accepts a token only while ``now <= exp + leeway`` and only
if ``exp - iat <= max_token_lifetime``; a token that a revocation covers was issued no later
than the revocation (``iat <= event_timestamp``, both on the bridge's clock). So every such
token is refused by its own ``exp`` from ``event_timestamp + max_token_lifetime + leeway``
on (the guard's clock against the bridge's ``exp``: a skew between the two clocks shifts
both sides alike). The guard keeps each entry ``keep_for`` after its ``event_timestamp``:
``max_token_lifetime + 2 * leeway``, the second ``leeway`` a margin for an access token
signed a moment *after* the revocation's timestamp (the bridge signs an access token just
after its family committed, and the event's timestamp is whole seconds, rounded down). An
entry whose event timestamp is unknown (``event_timestamp=None``) is kept ``keep_for``
from when it arrived: as long as a token issued up to then can live. A revocation of the
same value again only ever extends the entry. (A timestamp in the future keeps an entry
longer, never shorter: events are signed by the bridge, whose clock also stamps the tokens.)

**Cheap to keep small.** Entries are filed in time buckets of
:attr:`RevocationSet.GRANULARITY` seconds by the moment they may leave (a bucket is dropped
only once its *end* has strictly passed, so an entry never leaves early); a small heap orders
the buckets. :meth:`RevocationSet.prune` pops the buckets that are due and deletes their
entries: each entry is deleted once, so the cost is amortised O(1) per revocation, never a
scan of the whole set, and a prune with nothing due is one comparison. Every
:meth:`~RevocationSet.revoke` prunes first, and the feed prunes after every poll, so the set
holds the revocations of the last ``keep_for`` seconds and no more. When the tables have
shrunk to an eighth of their peak they are copied into fresh dicts (a dict does not give back
memory when keys leave), again amortised over the deletions. Measured with a million entries
(bench/bench_guard_memory.py, bench/results/guard_memory.json): about 140 bytes of RSS each,
freed when they leave (the allocator keeps ~10 MiB of it for the next ones: RSS does not
grow from one million to the next).

**Threads.** Readers (the validation hot path) look up ``grants`` and ``sids`` without a
lock: a dict lookup is atomic in CPython, and an entry past its time that is still there
refuses only tokens that have expired anyway. Writers (revoke, prune) hold the lock; the
compaction swaps in new dicts, so a reader sees the old or the new table, never a
half-built one.
"""

from __future__ import annotations

import heapq
import math
import threading
import time

__all__ = ["REVOCATION_KINDS", "RevocationSet"]

REVOCATION_KINDS = ("grant_id", "sid")

_NUMBER = (int, float)


class RevocationSet:
    """Revoked ``grant_id`` and ``sid`` values, each with the wall-clock time until which it
    matters (see the module docstring). ``clock`` is the wall clock (``time.time``)."""

    #: Seconds per time bucket: an entry leaves at most this long after its time.
    GRANULARITY = 1.0
    #: Tables below this size are not worth compacting.
    COMPACT_MIN = 4096

    def __init__(self, keep_for: float, *, clock=time.time):
        if type(keep_for) not in _NUMBER or not keep_for > 0 or math.isinf(keep_for):
            raise ValueError("keep_for must be a positive finite number of seconds")
        self.keep_for = keep_for
        self._clock = clock
        #: value -> time (epoch seconds) up to which it matters: its event's time plus
        #: ``keep_for``, rounded up to the end of its bucket
        self.grants: dict[str, float] = {}
        self.sids: dict[str, float] = {}
        self._lock = threading.Lock()
        # bucket number -> (its start, its end, [grant values], [sid values]); _due: the
        # bucket numbers as a heap.
        self._buckets: dict[int, tuple[float, float, list[str], list[str]]] = {}
        self._due: list[int] = []
        self._last = (0.0, 0.0, [], [])  # the bucket of the latest revocation
        self._peak = [0, 0]  # the sizes of grants and sids since they were last compacted

    def revoke(self, kind: str, value: str, event_timestamp: float | None = None) -> bool:
        """Refuse tokens whose ``kind`` claim (``grant_id`` or ``sid``) is ``value``, issued
        up to ``event_timestamp`` (seconds since the epoch, the bridge's clock; ``None``:
        unknown, taken as now).

        Returns False when the entry would already have expired (``event_timestamp +
        keep_for`` has passed): no token it names can still be valid. An entry matters up
        to and including its time (the guard accepts a token up to and including ``exp +
        leeway``).
        """
        if kind not in REVOCATION_KINDS:
            raise ValueError(f"kind must be one of {REVOCATION_KINDS}")
        if type(value) is not str or not value:
            raise ValueError("value must be a non-empty string")
        now = self._clock()
        if event_timestamp is None:
            event_timestamp = now
        elif type(event_timestamp) not in _NUMBER or not math.isfinite(event_timestamp):
            # NaN would compare false with everything and never be stored; refuse it.
            raise ValueError("event_timestamp must be a finite number (seconds since the "
                             "epoch)")
        until = event_timestamp + self.keep_for
        if until < now:
            return False
        with self._lock:
            due = self._due
            if due and due[0] * self.GRANULARITY < now:
                self._prune(now)
            bucket = self._last
            if not bucket[0] < until <= bucket[1]:  # events mostly come in order
                number = math.ceil(until / self.GRANULARITY)
                bucket = self._buckets.get(number)
                if bucket is None:
                    end = number * self.GRANULARITY
                    bucket = self._buckets[number] = (end - self.GRANULARITY, end, [], [])
                    heapq.heappush(self._due, number)
                self._last = bucket
            end = bucket[1]
            grant = kind == "grant_id"
            table = self.grants if grant else self.sids
            known = table.get(value)
            if known is None or known < end:
                # The bucket's end, one object per bucket: an entry costs no float of its own.
                table[value] = end
                bucket[2 if grant else 3].append(value)
            # (A bucket made for nothing stays empty until it is due: there are at most
            # keep_for / GRANULARITY + 1 buckets.)
        return True

    def is_revoked(self, kind: str, value: str) -> bool:
        table = self.grants if kind == "grant_id" else self.sids
        return value in table

    def prune(self, now: float | None = None) -> int:
        """Forget the entries whose tokens have all expired by ``now`` (default: the clock);
        returns how many left. Cheap: it touches only the entries that leave."""
        with self._lock:
            return self._prune(self._clock() if now is None else now)

    def _prune(self, now: float) -> int:
        due = self._due
        if not due or due[0] * self.GRANULARITY >= now:
            return 0
        removed = 0
        grants, sids = self.grants, self.sids
        # The tables grow only between prunes: their largest size is the one before this.
        peak = self._peak
        peak[0], peak[1] = max(peak[0], len(grants)), max(peak[1], len(sids))
        while due and due[0] * self.GRANULARITY < now:
            bucket = self._buckets.pop(heapq.heappop(due))
            if bucket is self._last:
                self._last = (0.0, 0.0, [], [])
            _, end, grant_values, sid_values = bucket
            for table, values in ((grants, grant_values), (sids, sid_values)):
                for value in values:
                    until = table.get(value)
                    # A later revocation of the same value moved it to a later bucket.
                    if until is not None and until <= end:
                        del table[value]
                        removed += 1
        self._compact()
        return removed

    def _compact(self) -> None:
        """Give the memory of a table that shrank to an eighth of its peak back (a copy
        costs its current size: paid for by the deletions since the peak)."""
        peak = self._peak
        if peak[0] >= self.COMPACT_MIN and len(self.grants) * 8 <= peak[0]:
            self.grants = dict(self.grants)
            peak[0] = len(self.grants)
        if peak[1] >= self.COMPACT_MIN and len(self.sids) * 8 <= peak[1]:
            self.sids = dict(self.sids)
            peak[1] = len(self.sids)

    @property
    def next_expiry(self) -> float | None:
        """When the next entries may leave (the end of the earliest bucket), or None."""
        with self._lock:
            due = self._due
            return due[0] * self.GRANULARITY if due else None

    def __len__(self) -> int:
        return len(self.grants) + len(self.sids)
