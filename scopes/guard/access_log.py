"""Access records: what a resource server authorised with an advisor or guest token, shipped
to the bridge's ingest endpoint (issue 14: ``POST <issuer>/access-records``, JSON
``{"records": [...]}``, answered ``{"accepted", "duplicates", "refused"}``).

A record names the tenant, ``grant_id``, ``sid``, subject, functional area and action of the
route's scope, HTTP method, the route *template* (never the raw path, query or body), the
response status and the time (RFC 3339 UTC, milliseconds). Three stages, so that the request
thread of the resource server never waits for a disk or the network:

1. :meth:`AccessRecorder.record` (the request thread) appends a tuple of values it already
   has (the time, four claims, area, action, method, route, status) to an in-memory
   ``collections.deque``: no lock, no formatting, no id, and no wake-up per request (the
   writer is woken only when it had gone idle). The four claim strings are interned
   (``sys.intern``): the queue holds the one copy of each value, not those of every token,
   which die with their request.
2. The writer thread takes what collected for ``writer_linger`` seconds at once, gives each
   record its id (the idempotency key at the bridge, see below), formats the time and the
   JSON lines (the fields that repeat, those of one token and route, are encoded once and
   reused; the batch's lines are one ``str.join``, no bytecode per record), appends the
   batch to the spool of this process in one write and fsyncs it once.
3. The shipper thread posts up to 1,000 records (at most 900 KiB) per request with the
   receiver client's Basic credentials on one kept-alive connection (:class:`_Poster`; the
   records taken from what the writer just wrote, kept in memory for it, while it keeps
   up; else read from the spool, several batches per read). A batch costs the shipper a
   couple of hundred microseconds whatever its size (the request, ``http.client`` parsing
   the answer, the answer checked): a batch of 1,000 makes that 0.2 per record. A bridge
   that answers 413 (one older than its 1 MiB limit for the ingest, or a proxy's smaller
   limit), or 400 to a batch of more than 100 records (an older bridge's "at most 100
   records"), gets batches half as large from then on, down to 100 records in 60 KiB (what
   every bridge takes), the records staying in the spool. Once the
   bridge answered (``accepted``, ``duplicates`` and ``refused`` all count as done; refused
   ones are logged), the shipper moves the segment's acknowledged offset on (saved to disk
   at most every ``ack_save_interval`` seconds, after half a second with nothing to ship, and
   by :meth:`~AccessRecorder.stop`: after a crash at most that much is sent again, and the
   bridge stores it once). While the bridge is unreachable it backs off exponentially, tries
   again with a batch of 100 (none of 900 KiB made for every retry) and the spool grows; the
   writer keeps nothing in memory for it then (the shipper reads the spool when the bridge
   is back).

Record ids are 36 characters in the layout of an RFC 9562 UUID version 8 (custom): 74
random bits drawn from ``os.urandom`` when a recorder is made (and again should its counter
ever run out), then a 48-bit counter. They are unique across the processes and restarts of a
resource server (a collision needs two recorders drawing the same 74 bits) and cost the
writer a string concatenation each (made 256 at a time).

The spool (``spool_dir``) holds, per process, segment files
``access-<pid>-<instance>-<seq>.jsonl`` with a ``.acked`` offset beside each and a lock file
``access-<pid>-<instance>.lock`` held (``flock``) while the process lives. A recorder that
starts adopts the segments whose lock nobody holds (a process that was killed or stopped)
and ships them first: delivery is at least once, the bridge stores each id once. A segment is
deleted when it has been shipped to its end and another one is being written.

Bounded: the unshipped bytes of the spool stay below ``max_spool_bytes`` and the queue below
``max_queue`` records. When the spool is full, ``when_full`` decides per action: ``"refuse"``
makes :meth:`check` raise :class:`RecordingUnavailable` (the guard answers 503
``temporarily_unavailable``) for advisor requests of that action, fail-closed, while records of
requests already served still fit in a reserve; ``"drop_oldest"`` deletes the oldest segment to
make room. The default is ``"refuse"`` for write scopes and ``"drop_oldest"`` for reads; once
reads had to drop, the spool counts as full (writes refused) until the bridge took enough
records for a segment again, so read traffic cannot wash out the fail-closed writes. Both
are logged (a warning when the spool becomes full or drops, once per episode) and counted in
:attr:`AccessRecorder.stats` (``spool_full``, ``dropped``, ``refused_requests``, ...).

Every stage runs in the resource server's process: whatever the writer and the shipper do
while holding the GIL is taken from the request threads, which is why they work per batch,
not per record (bench/bench_access_recording.py measures the whole cost).

The spool needs POSIX ``flock`` (Linux, macOS).
"""

from __future__ import annotations

import base64
import bisect
import collections
import fcntl
import http.client
import itertools
import json
import logging
import operator
import os
import re
import select
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from .bearer import GuardError

__all__ = ["ADVISOR_MEMBERSHIPS", "AccessRecorder", "RecordingUnavailable", "WHEN_FULL"]

log = logging.getLogger("scopes.guard")

#: The ``membership`` claim values of advisor and guest tokens: only those are recorded.
ADVISOR_MEMBERSHIPS = frozenset({"temporary", "permanent", "guest"})
WHEN_FULL = ("refuse", "drop_oldest")
MAX_BATCH = 1000  # the contract's bound per POST (the bridge's ingest takes 1 MiB)
MIN_BATCH = 100  # what every bridge takes (its app-wide 64 KiB request limit): after 413s
MAX_ID = 64
ID_LENGTH = 36  # of the record ids made here (_IdSource)
MAX_ROUTE = 200
_SEGMENT = re.compile(r"^(access-\d+-[0-9a-f]{12})-(\d{6})\.jsonl$")
_LOCK = re.compile(r"^(access-\d+-[0-9a-f]{12})\.lock$")
MAX_METHOD = 16
MAX_WRITE_BATCH = 5000  # records the writer takes from the queue at once
MAX_FRAGMENTS = 4096  # encoded (token, route) parts the writer keeps
SHIP_BYTES = 900 * 1024  # lines of one POST of MAX_BATCH (the bridge's ingest takes 1 MiB)
MIN_SHIP_BYTES = 60 * 1024  # ... of MIN_BATCH (the bridge's other endpoints take 64 KiB)
READ_AHEAD = 256 * 1024  # what the shipper reads of a segment at once (or a whole batch)
MEMO_BYTES = 1024 * 1024  # what the writer keeps of what it wrote, for the shipper
# The id at the start of a spooled line: the first one, and those after a newline (a literal
# prefix the regular expression engine searches for; "^" with MULTILINE would try every byte).
_FIRST_ID = re.compile(rb'\{"id": "([A-Za-z0-9._~:@+=-]{1,64})"')
_NEXT_IDS = re.compile(rb'\n\{"id": "([A-Za-z0-9._~:@+=-]{1,64})"')
_ID = re.compile(r"[A-Za-z0-9._~:@+=-]{1,64}")  # the ids the bridge takes
_encode = json.JSONEncoder().encode  # json.dumps' C encoder without its per-call set-up
_intern = sys.intern
_TIME = operator.itemgetter(0)  # of a queue tuple
_KEY = operator.itemgetter(slice(1, None))  # its fields but the time
_ACTION = operator.itemgetter(6)
_LINE_START = '{"id": "'
_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
_BODY_START, _BODY_END = b'{"records": [', b"]}"  # around a batch's records


class RecordingUnavailable(GuardError):
    """The access-record spool is full and ``when_full`` is ``"refuse"`` for this action:
    the advisor request is not served (503 ``temporarily_unavailable``, fail-closed)."""

    error = "temporarily_unavailable"
    status_code = 503
    retry_after = 30


@dataclass
class _Segment:
    path: Path
    size: int = 0
    acked: int = 0
    adopted: bool = False
    lock_fd: int | None = field(default=None, repr=False)  # for adopted ones: the owner's lock
    saved: int = 0  # the acknowledged offset last written to the .acked file
    saved_at: float = 0.0  # time.monotonic() of that write
    counted: int = 0  # corrupt lines before this offset are counted

    @property
    def pending(self) -> int:
        return max(0, self.size - self.acked)


class AccessRecorder:
    """The queue, the writer thread and the shipper thread of one process (module docstring).

    ``endpoint`` is the bridge's ``/access-records`` URL, ``client_id``/``client_secret`` a
    receiver client's credentials. ``http`` a ``requests.Session``-like object of its own
    (default: a new session). ``when_full`` is ``"refuse"``, ``"drop_oldest"`` or a mapping
    ``{"read": ..., "write": ...}``; None is the default (refuse writes, drop for reads).
    ``max_batch`` (100 to 1,000) bounds the records of one POST; a 413 halves it (down to
    100) for the rest of the recorder's life (:attr:`batch_limit`).
    """

    def __init__(self, endpoint: str, client_id: str, client_secret: str, spool_dir, *,
                 max_spool_bytes: int, when_full=None, http=None, http_timeout: float = 5.0,
                 backoff_initial: float = 0.2, backoff_max: float = 30.0,
                 max_queue: int = 10_000, segment_bytes: int | None = None,
                 orphan_scan_interval: float = 30.0, writer_linger: float = 0.1,
                 ship_linger: float = 0.2, ack_save_interval: float = 0.5,
                 max_batch: int = MAX_BATCH):
        _endpoint(endpoint)  # ValueError unless the shipper can post to it
        if not client_id or not client_secret:
            raise ValueError("client_id and client_secret are required")
        if type(max_spool_bytes) is not int or max_spool_bytes < 64 * 1024:
            raise ValueError("max_spool_bytes must be an int >= 65536")
        if type(max_batch) is not int or not MIN_BATCH <= max_batch <= MAX_BATCH:
            raise ValueError(f"max_batch must be an int from {MIN_BATCH} to {MAX_BATCH}")
        self.policy = _policy(when_full)
        self._set_batch_limit(max_batch)
        self.endpoint = endpoint
        self.max_spool_bytes = max_spool_bytes
        # Records of requests served just before the spool became full still fit here.
        self.reserve = max(8 * 1024, min(max_spool_bytes // 8, 1024 * 1024))
        self.segment_bytes = segment_bytes or max(16 * 1024, min(max_spool_bytes // 16,
                                                                4 * 1024 * 1024))
        self.max_queue = max_queue
        self.http_timeout = http_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = max(backoff_max, backoff_initial)
        self.orphan_scan_interval = orphan_scan_interval
        self.writer_linger = writer_linger  # seconds a batch collects before its fsync
        self.ship_linger = ship_linger  # seconds a short batch waits to fill up
        self.ack_save_interval = ack_save_interval  # seconds between writes of .acked
        self.spool_dir = Path(spool_dir)
        self._auth = (client_id, client_secret)
        self._http = http if http is not None else _Poster()
        # Appended by request threads, popped by the writer: both atomic, no lock.
        self._queue: collections.deque = collections.deque()
        self._writer_idle = False  # the writer waits on _writer_wake (record() sets it)
        self._writer_wake = threading.Event()
        self._lock = threading.Lock()  # the segment list and the counters below
        self._segments: list[_Segment] = []  # oldest first; the last own one is written
        self._current: _Segment | None = None
        self._current_file = None
        self._seq = 0
        self._prefix = f"access-{os.getpid()}-{os.urandom(6).hex()}"
        self._lock_fd: int | None = None
        self._full = False  # unshipped bytes above max_spool_bytes - reserve, or dropping
        self._pressure = False  # drop_oldest dropped since the bridge last made room
        self._wake = threading.Event()  # the writer tells the shipper there is something
        self._stop = threading.Event()
        self._stop_deadline = float("inf")
        self._writer = threading.Thread(target=self._write_loop, name="scopes-guard-access-writer",
                                        daemon=True)
        self._shipper = threading.Thread(target=self._ship_loop,
                                         name="scopes-guard-access-shipper", daemon=True)
        self._ids = _IdSource()
        # The shipper's segment: (path, descriptor, offset and bytes it read last).
        self._reading: tuple[Path, int, int, bytes] | None = None
        self._fragments: dict[tuple, str | None] = {}  # the writer's encoded repeated fields
        # What the writer wrote last, for the shipper: (segment, offset, end offset of each
        # line from there, ids, bytes), oldest first, MEMO_BYTES at most (the lock).
        self._memo: collections.deque = collections.deque()
        self._memo_bytes = 0
        self._failing = False  # the last POST failed: small batches, no memo (_take)
        self._at = _Timestamps()
        self.stats = {"enqueued": 0, "spooled": 0, "shipped": 0, "accepted": 0,
                      "duplicates": 0, "refused_by_bridge": 0, "dropped": 0, "dropped_queue": 0,
                      "refused_requests": 0, "invalid": 0, "corrupt_lines": 0,
                      "ship_failures": 0, "spool_full": False, "spool_bytes": 0,
                      "batch_limit": self.batch_limit}

    def _take(self) -> tuple[int, int]:
        """(records, bytes) the next batch may hold: :attr:`batch_limit` and its bytes, or
        while shipping fails ``MIN_BATCH`` and ``MIN_SHIP_BYTES``."""
        if self._failing:
            return MIN_BATCH, MIN_SHIP_BYTES
        return self.batch_limit, self._ship_bytes

    def _set_batch_limit(self, records: int) -> None:
        """At most ``records`` records in at most :func:`_ship_bytes` bytes per POST."""
        self.batch_limit = records
        self._ship_bytes = _ship_bytes(records)
        if hasattr(self, "stats"):
            self.stats["batch_limit"] = records

    # --- the request thread: memory only ---
    def record(self, claims: dict, area: str, action: str, method: str, route: str,
               status: int) -> bool:
        """Enqueue the record of one request authorised with ``claims`` (an advisor or guest
        token); False when the queue is full (the record is dropped and counted). One deque
        append: the writer thread validates, formats and numbers it."""
        queue = self._queue
        if len(queue) >= self.max_queue:
            self.stats["dropped_queue"] += 1
            return False
        get = claims.get
        sid = get("sid")
        try:
            # The canonical copies of the claim strings (the token's own die with the
            # request): a queued record keeps a tuple alive, not four new strings, and the
            # writer hashes and compares the same objects each time (_fragments).
            queue.append((time.time(), _intern(get("tenant")), _intern(get("grant_id")),
                          sid if sid is None else _intern(sid), _intern(get("sub")),
                          area, action, method, route, status))
        except TypeError:  # a claim that is not a str: the writer counts it as invalid
            queue.append((time.time(), get("tenant"), get("grant_id"), sid, get("sub"),
                          area, action, method, route, status))
        if self._writer_idle:  # only the first record after a quiet spell wakes the writer
            self._writer_wake.set()
        return True

    def check(self, action: str) -> None:
        """Raise :class:`RecordingUnavailable` when an advisor request of ``action`` must be
        refused now (the spool or the queue is full and ``when_full`` says ``"refuse"``)."""
        if self.policy[action] == "refuse" and (
                self._full or len(self._queue) >= self.max_queue):
            self.stats["refused_requests"] += 1
            raise RecordingUnavailable("access recording is unavailable: the resource "
                                       "server's spool is full; try again later")

    @property
    def full(self) -> bool:
        return self._full

    @property
    def refusing(self) -> bool:
        """Whether :meth:`check` may refuse now (the spool or the queue is full): the guard
        asks this first, and the token and action only then."""
        return self._full or len(self._queue) >= self.max_queue

    # --- lifecycle ---
    def start(self) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        lock_path = self.spool_dir / f"{self._prefix}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._lock_fd = fd
        self._adopt_orphans()
        self._writer.start()
        self._shipper.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Spool what is queued, stop both threads and release the spool: what is not shipped
        yet is adopted by the next recorder on ``spool_dir``."""
        deadline = time.monotonic() + timeout
        self._stop_deadline = deadline - min(0.5, timeout / 4)  # the shipper's last sends
        self._stop.set()
        self._wake.set()
        self._writer_wake.set()
        for thread in (self._writer, self._shipper):
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            if self._current_file is not None:
                self._current_file.close()
                self._current_file = None
            self._current = None
            for segment in list(self._segments):
                if segment.pending == 0:
                    self._remove(segment)  # shipped: nothing for the next recorder
            self._save_offsets(force=True)  # the next recorder starts where this one stopped
            for segment in self._segments:
                if segment.lock_fd is not None:
                    os.close(segment.lock_fd)
                    segment.lock_fd = None
            own_left = any(not s.adopted for s in self._segments)
            self._segments.clear()
        if self._lock_fd is not None:
            if not own_left:
                try:
                    (self.spool_dir / f"{self._prefix}.lock").unlink()
                except FileNotFoundError:
                    pass
            os.close(self._lock_fd)  # releases the flock: our segments are orphans now
            self._lock_fd = None
        close = getattr(self._http, "close", None)
        if close is not None:
            close()

    @property
    def alive(self) -> bool:
        return self._writer.is_alive() and self._shipper.is_alive()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued and the bridge has answered for everything spooled
        (for tests and orderly shutdowns); False when ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Idle, the writer holds nothing it took from the queue (it goes idle only
            # between batches); a stopped one holds nothing either.
            if not self._queue and (self._writer_idle or not self._writer.is_alive()) \
                    and not self._pending():
                return True
            time.sleep(0.02)
        return False

    def _pending(self) -> bool:
        with self._lock:
            return any(s.pending for s in self._segments)

    _cycles = 0  # writer loop iterations finished

    # --- the writer thread ---
    def _write_loop(self) -> None:
        queue, wake = self._queue, self._writer_wake
        while True:
            if not queue:
                if self._stop.is_set():
                    break
                # Idle: record() wakes it (one Event.set for the first record, not per
                # request), and so does stop().
                self._writer_idle = True
                if not queue:
                    wake.wait(1.0)
                wake.clear()
                self._writer_idle = False
                self._cycles += 1
                continue
            if not self._stop.is_set() and len(queue) < MAX_WRITE_BATCH:
                time.sleep(self.writer_linger)  # a batch per fsync, not a record
            # popleft() called by starmap: the queue emptied without a bytecode per record.
            items = list(itertools.starmap(queue.popleft, itertools.repeat(
                (), min(len(queue), MAX_WRITE_BATCH))))
            self.stats["enqueued"] += len(items)
            try:
                self._spool(items)
            except Exception:  # noqa: BLE001 - the thread must survive a full disk
                log.exception("access records: could not write the spool; %d records lost",
                              len(items))
                self.stats["dropped"] += len(items)
            self._cycles += 1
            self._wake.set()

    def _lines(self, items) -> tuple[bytes, list[int], list, list[str]]:
        """The JSON lines of ``items`` (queue tuples) as one ``bytes``, the end of each line in
        it, the items and the ids they are of (invalid ones are counted and left out).

        No bytecode per record in the usual case: the fields of one token and route are
        validated and encoded once (``_fragments``, with the separators around them), the
        time once per millisecond (with the end of its line and the start of the next), and
        the lines are one ``str.join`` of id, fields and time, record after record (the
        three lists laid into one by slice assignment); lookups, times and line lengths are
        maps over the batch."""
        n = len(items)
        keys = list(map(_KEY, items))
        try:
            parts = list(map(self._fragments.__getitem__, keys))
        except (KeyError, TypeError):  # a token or route not seen lately (or unhashable)
            parts = list(map(self._fragment, keys))
            if None in parts:
                valid = [part is not None for part in parts]
                self.stats["invalid"] += n - sum(valid)
                items = list(itertools.compress(items, valid))
                parts = list(itertools.compress(parts, valid))
                n = len(items)
                if not n:
                    return b"", [], [], []
        millis = list(map(int, map(operator.mul, map(_TIME, items), itertools.repeat(1000))))
        # What follows a record's fields: its time, the end of its line and the start of the
        # next one; per millisecond (of this batch).
        stamp = self._at.format
        stamps = {milli: f'{stamp(milli)}"}}\n{{"id": "' for milli in sorted(set(millis))}
        tails = list(map(stamps.__getitem__, millis))
        ids = self._ids.take(n)  # 36 characters each
        # Line i is '{"id": "' + id + part + tail minus the next line's start: as long as
        # id + part + tail. Each line's end (from the batch's start), for the shipper.
        tail = len(tails[0])
        if parts.count(parts[0]) == n and all(len(t) == tail for t in stamps.values()):
            line = ID_LENGTH + len(parts[0]) + tail  # all lines alike: one token and route
            ends = range(line, line * n + 1, line)
        else:
            ends = list(itertools.accumulate(map(operator.add, map(len, parts), map(
                operator.add, map(len, tails), itertools.repeat(ID_LENGTH)))))
        tails[-1] = tails[-1][:-len(_LINE_START)]  # no line after the last one
        pieces = [_LINE_START] * (3 * n + 1)
        pieces[1::3] = ids
        pieces[2::3] = parts
        pieces[3::3] = tails
        # ensure_ascii: one character is one byte, len() of a line is its size on disk.
        return "".join(pieces).encode("ascii"), ends, items, ids

    def _fragment(self, key: tuple) -> str | None:
        """``", "tenant": …, "status": …, "at": "`` of a record's repeated fields (``key``: the
        queue tuple without its time) with what comes between them and the id and time of
        its line, or None when they are not valid; remembered (a bounded number) when valid."""
        try:
            text = self._fragments.get(key)
        except TypeError:  # unhashable: a claim that is a list or an object
            return None
        if text is not None:
            return text
        tenant, grant_id, sid, sub, area, action, method, route, status = key
        if not (_bounded(tenant) and _bounded(grant_id) and _bounded(sub)
                and (sid is None or _bounded(sid)) and action in self.policy
                and type(area) is str and len(area) <= MAX_ID
                and type(method) is str and 0 < len(method) <= MAX_METHOD
                and type(route) is str and type(status) is int and 100 <= status <= 599):
            return None
        text = _encode({"tenant": tenant, "grant_id": grant_id, "sid": sid, "sub": sub,
                        "area": area, "action": action, "method": method,
                        "route": route[:MAX_ROUTE], "status": status})[1:-1]
        text = f'", {text}, "at": "'
        if len(self._fragments) >= MAX_FRAGMENTS:
            self._fragments.clear()
        self._fragments[key] = text
        return text

    def _spool(self, items) -> None:
        batch, ends, kept, ids = self._lines(items)
        if not ids:
            return
        with self._lock:
            used = self._used()
            soft = self.max_spool_bytes - self.reserve
            touched: set = set()
            current = self._current
            if used + len(batch) <= soft and current is not None and \
                    current.size + len(batch) <= self.segment_bytes:
                start = current.size
                self._write_chunk([batch], len(batch), touched)  # the usual case: one write
                if not self._failing:  # nothing for a shipper that cannot ship now
                    self._remember(current, start, ends, ids, batch)
            else:
                self._spool_lines([batch[a:b] for a, b in zip([0, *ends], ends)],
                                  list(map(_ACTION, kept)), used, soft, touched)
            for f in touched:  # one fsync per batch (and segment written)
                if not f.closed:
                    os.fsync(f.fileno())
            self.stats["spooled"] += len(ids)
            self._set_full(self._used() > soft or self._pressure)

    def _remember(self, segment: _Segment, start: int, ends: list[int], ids: list[str],
                  batch: bytes) -> None:
        """Keep what was just written for the shipper (the lock is held): it posts it from
        memory, without reading and splitting the lines again, when it gets there while it
        is still here (``MEMO_BYTES`` at most, the oldest forgotten first). Kept as the
        records of a POST's body are separated (each newline made ``", "`` here, in one
        pass over bytes just made): the shipper's body is then one slice of it, and the
        shipper does not copy and rewrite hundreds of KiB it has to fetch from another
        core's cache again."""
        # ``ends``: after each line, from ``start``.
        wire = batch.replace(b"\n", b", ")  # line i ends at ends[i] + i + 1 here
        self._memo.append((segment, start, ends, ids, wire))
        self._memo_bytes += len(wire)
        while self._memo_bytes > MEMO_BYTES and self._memo:
            self._memo_bytes -= len(self._memo.popleft()[4])

    def _from_memo(self, segment: _Segment, start: int, build: bool = True):
        """(ids, records joined for the body, end offset) of the lines of ``segment`` from
        ``start`` that the writer remembered, at most :attr:`batch_limit` and its bytes; None
        when it does not have the line at ``start`` (the lock is held). Without ``build``
        the records are None: the shipper looks whether a batch is full before it joins
        one (hundreds of KiB)."""
        ids: list[str] = []
        pieces: list[memoryview] = []
        position, size = start, 0
        limit, ship_bytes = self._take()
        for entry_segment, entry_start, ends, entry_ids, data in self._memo:
            if entry_segment is not segment or entry_start + ends[-1] <= position:
                continue
            offset = position - entry_start
            if offset < 0:
                break  # not contiguous: the rest from the disk
            first = 0 if offset == 0 else bisect.bisect_left(ends, offset) + 1
            if first > 0 and ends[first - 1] != offset:
                break  # not at a line's start (cannot happen: lines are shipped whole)
            last = min(len(ends), first + limit - len(ids),
                       bisect.bisect_right(ends, offset + ship_bytes - size))
            if last <= first:
                break
            ids += entry_ids[first:last]
            # In ``data`` every line before line i adds a byte (its newline is ", "); the
            # last line's ", " is left out.
            pieces.append(memoryview(data)[offset + first:ends[last - 1] + last - 2])
            size += ends[last - 1] - offset
            position = entry_start + ends[last - 1]
            if len(ids) >= limit or last < len(ends):
                break
        if not ids:
            return None
        if not build:
            return ids, None, position
        return ids, b", ".join(pieces) if len(pieces) > 1 else pieces[0], position

    def _forget_shipped(self) -> None:
        """Drop what the writer remembered of records shipped or dropped since (the lock is
        held)."""
        memo = self._memo
        while memo:
            segment, start, ends = memo[0][:3]
            if segment in self._segments and start + ends[-1] > segment.acked:
                break
            self._memo_bytes -= len(memo.popleft()[4])

    def _spool_lines(self, lines: list[bytes], actions: list[str], used: int, soft: int,
                     touched: set) -> None:
        """Line by line, near the limits: drop the oldest for ``drop_oldest`` actions, new
        segments as they fill (the lock is held)."""
        keep: list[bytes] = []
        for action, line in zip(actions, lines):
            over_soft = used + len(line) > soft and self.policy[action] == "drop_oldest"
            if over_soft or used + len(line) > self.max_spool_bytes:
                self._append(keep, touched)  # on disk first, so that it can be dropped
                keep = []
                limit = soft if over_soft else self.max_spool_bytes
                used -= self._drop_oldest(len(line) + used - limit)
            keep.append(line)
            used += len(line)
        self._append(keep, touched)

    def _append(self, lines: list[bytes], touched: set) -> None:
        """Write ``lines`` to the current segment, a new one whenever it is full (the lock
        is held; fsynced by the caller)."""
        chunk: list[bytes] = []
        size = 0
        for line in lines:
            if chunk and self._current is not None and (
                    self._current.size + size + len(line) > self.segment_bytes):
                self._write_chunk(chunk, size, touched)
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        if chunk:
            self._write_chunk(chunk, size, touched)

    def _write_chunk(self, chunk: list[bytes], size: int, touched: set) -> None:
        segment = self._writable(size)
        self._current_file.write(b"".join(chunk))
        segment.size += size
        touched.add(self._current_file)

    def _writable(self, size: int) -> _Segment:
        current = self._current
        if current is not None and current.size + size <= self.segment_bytes:
            return current
        if self._current_file is not None:
            self._current_file.flush()
            os.fsync(self._current_file.fileno())  # closed: the batch's fsync cannot reach it
            self._current_file.close()
        self._seq += 1
        path = self.spool_dir / f"{self._prefix}-{self._seq:06d}.jsonl"
        self._current_file = open(path, "ab", buffering=0)
        _fsync_dir(self.spool_dir)  # the new name survives a crash
        self._current = _Segment(path)
        self._segments.append(self._current)
        return self._current

    def _drop_oldest(self, needed: int) -> int:
        """Delete the oldest segments until ``needed`` unshipped bytes are free (the lock is
        held); returns the bytes freed."""
        freed = 0
        while freed < needed and self._segments:
            segment = self._segments[0]
            if segment is self._current:
                if segment.pending == 0:
                    break
                self._current_file.close()  # the next write opens a new segment
                self._current_file = None
                self._current = None
            lost = _count_lines(segment.path, segment.acked)
            freed += segment.pending
            self._remove(segment)
            # At its limit: refusing actions stay refused until shipping makes room, even
            # though dropping keeps the bytes below the limit.
            self._pressure = True
            self.stats["dropped"] += lost
            log.warning("access records: spool full (%d bytes); dropped the %d oldest "
                        "unshipped records (when_full=drop_oldest)", self.max_spool_bytes, lost)
        return freed

    def _set_full(self, full: bool) -> None:
        if full != self._full:
            if full:
                log.warning("access records: spool full (%d of %d bytes unshipped); advisor "
                            "requests of actions with when_full=refuse get 503 until the "
                            "bridge takes records again", self._used(), self.max_spool_bytes)
            else:
                log.warning("access records: spool has room again")
        self._full = full
        self.stats["spool_full"] = full
        self.stats["spool_bytes"] = self._used()

    def _used(self) -> int:
        return sum(s.pending for s in self._segments)

    # --- the shipper thread ---
    def _ship_loop(self) -> None:
        try:
            self._ship()
        finally:
            self._close_reading()

    def _ship(self) -> None:
        backoff = 0.0
        next_scan = time.monotonic() + self.orphan_scan_interval
        short_since = None  # when the batch at the head of the spool was first found short
        while not (self._stop.is_set() and time.monotonic() > self._stop_deadline):
            if time.monotonic() >= next_scan:
                next_scan = time.monotonic() + self.orphan_scan_interval
                try:
                    self._adopt_orphans()
                except Exception:  # noqa: BLE001
                    log.exception("access records: could not look for orphaned spools")
            self._wake.clear()
            try:
                batch = self._next_batch(build=False)
            except OSError:  # the spool cannot be read now (a full or failing disk)
                log.exception("access records: could not read the spool; retrying")
                self._close_reading()
                self._stop.wait(max(self.backoff_initial, 1.0))
                continue
            if batch is None:
                if self._stop.is_set() and not self._writer.is_alive():
                    break
                if not self._wake.wait(0.5):  # quiet for a while: what was shipped is on
                    with self._lock:          # disk, a shipped segment's space is freed
                        self._save_offsets(force=True)
                    self._close_reading()
                continue
            if not self._stop.is_set() and len(batch[2]) < self._take()[0] and \
                    batch[4] + 2048 < self._take()[1] and not (
                        batch[0] is not self._current and batch[1] >= batch[0].size):
                # Short: neither bound reached, and more may follow (not the end of a
                # segment that is no longer written: its last records go at once).
                # Fewer requests to the bridge (and less CPU here): let a short batch fill
                # up, for at most ship_linger, looking again after each batch the writer
                # spools (at a high rate the next one fills it: no waiting behind it).
                now = time.monotonic()
                short_since = now if short_since is None else short_since
                if now - short_since < self.ship_linger:
                    self._wake.wait(self.ship_linger - (now - short_since))
                    continue
            short_since = None
            if batch[3] is None:  # from memory, not joined yet: the batch as it is now
                try:
                    batch = self._next_batch()
                except OSError:
                    continue  # read again (and the failure logged) at the top
                if batch is None:
                    continue
            segment, end, ids, records, _size = batch
            try:
                done = self._post(ids, records)
            except _TooLarge as exc:
                # An older bridge (or a proxy) with a smaller request limit: the records
                # stay, the next batch is half as large (from the spool or the memory).
                self.stats["ship_failures"] += 1
                smaller = max(MIN_BATCH, min(self.batch_limit, len(ids)) // 2)
                log.warning("access records: the bridge refused a batch of %d records as too "
                            "large (%s); batches of at most %d from now on", len(ids), exc,
                            smaller)
                self._set_batch_limit(smaller)
                continue
            except Exception as exc:  # noqa: BLE001 - network, TLS, HTTP: all mean retry
                self.stats["ship_failures"] += 1
                if not self._failing:
                    # Until the bridge answers again: batches of MIN_BATCH (no batch of
                    # 900 KiB made again and again for a bridge that is not there), and the
                    # writer keeps nothing in memory for the shipper (it reads the spool).
                    with self._lock:
                        self._failing = True
                        self._memo.clear()
                        self._memo_bytes = 0
                if self._stop.is_set():
                    break
                backoff = min(self.backoff_max, max(self.backoff_initial, backoff * 2))
                log.warning("access records: shipping failed (%s); %d bytes wait in the spool; "
                            "retrying in %.1f s", exc, self._used(), backoff)
                self._stop.wait(backoff)
                continue
            backoff = 0.0
            self._failing = False
            self.stats["shipped"] += done
            self._acknowledge(segment, end)

    def _next_batch(self, build: bool = True):
        """(segment, end offset, ids, the records joined for the body, their bytes) of the
        oldest unshipped records, or None; without ``build`` the records of a batch from
        memory are None (:meth:`_from_memo`)."""
        while True:
            with self._lock:
                for segment in list(self._segments):
                    if segment.pending == 0:
                        if segment is not self._current:
                            self._remove(segment)
                        continue
                    break
                else:
                    return None
                path, start, size = segment.path, segment.acked, segment.size
                is_current = segment is self._current
                remembered = self._from_memo(segment, start, build)
            if remembered is not None:
                ids, records, offset = remembered
                return segment, offset, ids, records, offset - start
            try:
                ids, lines, offset, corrupt = self._read_lines(path, start, size, is_current)
            except FileNotFoundError:
                with self._lock:
                    self._remove(segment)
                continue
            if corrupt and start >= segment.counted:  # once, though a batch is read again
                self.stats["corrupt_lines"] += corrupt
                segment.counted = offset
            if ids:
                return segment, offset, ids, b", ".join(lines), offset - start
            if offset == start:
                return None  # the current segment's last line is not complete yet
            self._acknowledge(segment, offset)  # nothing but corrupt lines there

    def _read_lines(self, path: Path, start: int, size: int, is_current: bool):
        """(ids, lines, end offset, corrupt lines) of the complete lines from ``start``: at
        most :attr:`batch_limit` and its bytes, read ``READ_AHEAD`` bytes at a time (the bytes
        of a segment below its size never change, so what was read serves the next batches
        too: one ``pread`` for several POSTs). A line that is not JSON with an id the bridge
        takes, a line longer than a batch's bytes and the torn last line of a killed process
        are skipped (counted as ``corrupt_lines``); the unfinished last line of the segment
        being written is left for later. The shipper keeps the segment it reads open (one
        descriptor, its own: closed when it moves to another segment, has been idle for a
        while or stops; a segment deleted meanwhile frees its disk space then)."""
        reading = self._reading
        if reading is None or reading[0] != path:
            self._close_reading()
            reading = self._reading = (path, os.open(path, os.O_RDONLY), 0, b"")
        _, fd, read_at, read = reading
        limit, ship_bytes = self._take()
        wanted = min(size - start, ship_bytes)
        if read_at <= start and start + wanted <= read_at + len(read):
            data = read[start - read_at:start - read_at + wanted]
        else:
            read = os.pread(fd, min(size - start, max(READ_AHEAD, wanted)), start)
            self._reading = (path, fd, start, read)
            data = read[:wanted]
        parts = data.split(b"\n", limit)
        rest = parts.pop()  # after the last newline (or after the batch_limit-th)
        offset = start + len(data) - len(rest)
        if not parts:  # not one complete line
            if start + len(data) < size:  # one longer than a batch's bytes: skip it
                return [], [], _next_line(fd, start + len(data), size), 1
            if data and not is_current:  # a torn last write of a killed process
                return [], [], size, 1
            return [], [], offset, 0
        first = _FIRST_ID.match(data)
        if first is not None:
            found = _NEXT_IDS.findall(data, 0, offset - start)
            if len(found) + 1 == len(parts):  # the usual case: every line starts with its id
                found.insert(0, first.group(1))
                return b"\n".join(found).decode("ascii").split("\n"), parts, offset, 0
        ids, lines = [], []
        for line in parts:
            record_id = _record_id(line)
            if record_id is not None:
                ids.append(record_id)
                lines.append(line)
        return ids, lines, offset, len(parts) - len(ids)

    def _close_reading(self) -> None:
        reading, self._reading = self._reading, None
        if reading is not None:
            os.close(reading[1])

    def _post(self, ids: list[str], records: bytes) -> int:
        body = (_BODY_START, records, _BODY_END)
        if not isinstance(self._http, _Poster):  # a requests-like client: one buffer
            body = b"".join(body)
        response = self._http.post(self.endpoint, data=body, auth=self._auth,
                                   timeout=self.http_timeout, headers=_HEADERS)
        if response.status_code in (400, 413) and len(ids) > MIN_BATCH:
            # 400: an older bridge takes at most 100 records
            raise _TooLarge(f"HTTP {response.status_code}")
        if response.status_code == 400:
            # The bridge calls the batch malformed: sending it again cannot help.
            log.error("access records: the bridge refused a batch of %d records as malformed "
                      "(HTTP 400); dropped", len(ids))
            self.stats["dropped"] += len(ids)
            return 0
        if response.status_code == 413 and self.batch_limit > MIN_BATCH:
            raise _TooLarge("HTTP 413")  # 100 or fewer, still too large for a proxy
        if response.status_code != 200:
            raise _ShipError(f"HTTP {response.status_code}")
        content = getattr(response, "content", None)
        if type(content) is bytes and _all_accepted(content, ids):
            self.stats["accepted"] += len(ids)
            return len(ids)
        try:
            answer = response.json()
            if answer["accepted"] == ids and not answer["duplicates"] and \
                    not answer["refused"]:  # the usual answer: all taken, in order
                self.stats["accepted"] += len(ids)
                return len(ids)
            accepted = set(answer["accepted"])
            duplicates = set(answer["duplicates"])
            refused = {r["id"]: r.get("error") for r in answer["refused"]}
            answered = accepted | duplicates
            answered.update(refused)
        except Exception:  # noqa: BLE001
            raise _ShipError("the answer is not the ingest's JSON") from None
        missing = [i for i in ids if i not in answered]
        if missing:
            raise _ShipError(f"the answer does not name {len(missing)} of the records")
        for record_id, error in refused.items():
            log.warning("access records: the bridge refused record %s (%s); dropped",
                        record_id, error)
        self.stats["accepted"] += len(accepted)
        self.stats["duplicates"] += len(duplicates)
        self.stats["refused_by_bridge"] += len(refused)
        return len(ids)

    def _acknowledge(self, segment: _Segment, end: int) -> None:
        with self._lock:
            if segment not in self._segments:
                return  # dropped meanwhile
            segment.acked = end
            if segment.pending == 0 and segment is not self._current:
                self._remove(segment)
            else:
                self._save_offsets()
            self._forget_shipped()
            soft = self.max_spool_bytes - self.reserve
            if self._used() <= soft - self.segment_bytes:
                self._pressure = False  # the bridge took records: room for a segment
            self._set_full(self._used() > soft or self._pressure)

    def _save_offsets(self, force: bool = False) -> None:
        """Write the acknowledged offsets that changed to the ``.acked`` files: at most every
        ``ack_save_interval`` seconds per segment, or now with ``force`` (the lock is held).
        An offset not saved yet only costs duplicates after a crash, which the bridge
        stores once."""
        now = time.monotonic()
        for segment in self._segments:
            if segment.acked != segment.saved and (
                    force or now - segment.saved_at >= self.ack_save_interval):
                try:
                    _write_offset(segment.path, segment.acked)
                except OSError:  # only costs a duplicate after a restart
                    log.warning("access records: could not save the shipped offset")
                    continue
                segment.saved, segment.saved_at = segment.acked, now

    def _remove(self, segment: _Segment) -> None:
        """Forget and delete ``segment`` (the lock is held)."""
        if segment in self._segments:
            self._segments.remove(segment)
        for path in (segment.path, _offset_path(segment.path)):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        if segment.lock_fd is not None and not any(
                s.lock_fd == segment.lock_fd for s in self._segments):
            owner = _SEGMENT.match(segment.path.name).group(1)
            try:
                (self.spool_dir / f"{owner}.lock").unlink()
            except FileNotFoundError:
                pass
            os.close(segment.lock_fd)
        segment.lock_fd = None

    # --- adoption of orphaned spools ---
    def _adopt_orphans(self) -> None:
        """Take over the segments of recorders that are gone (their lock is free)."""
        try:
            names = sorted(os.listdir(self.spool_dir))
        except FileNotFoundError:
            return
        owners: dict[str, list[str]] = {}
        locks = set()
        for name in names:
            match = _SEGMENT.match(name)
            if match:
                owners.setdefault(match.group(1), []).append(name)
            match = _LOCK.match(name)
            if match:
                locks.add(match.group(1))
        with self._lock:
            known = {s.path.name for s in self._segments}
        adopted_owners = {m.group(1) for m in map(_SEGMENT.match, known) if m}
        for owner in sorted(set(owners) | locks):
            if owner == self._prefix:
                continue
            segments = [n for n in owners.get(owner, ()) if n not in known]
            if owner in adopted_owners:
                continue
            fd = os.open(self.spool_dir / f"{owner}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # its process is alive
                continue
            adopted = []
            for name in segments:
                path = self.spool_dir / name
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    continue
                acked = min(_read_offset(path), size)
                adopted.append(_Segment(path, size=size, acked=acked, adopted=True, lock_fd=fd,
                                        saved=acked))
            if not adopted:
                try:
                    (self.spool_dir / f"{owner}.lock").unlink()
                except FileNotFoundError:
                    pass
                os.close(fd)
                continue
            with self._lock:
                # Older than anything this process writes: shipped first.
                own = [s for s in self._segments if not s.adopted]
                self._segments = [s for s in self._segments if s.adopted] + adopted + own
                self._set_full(self._used() > self.max_spool_bytes - self.reserve)
            pending = sum(s.pending for s in adopted)
            log.info("access records: adopted %d spool segments (%d bytes unshipped) of %s",
                     len(adopted), pending, owner)
            self._wake.set()


class _ShipError(Exception):
    pass


class _TooLarge(_ShipError):
    """413: the bridge takes smaller batches (an older one: 64 KiB, 100 records)."""


def _ship_bytes(records: int) -> int:
    """The bytes of lines a POST of at most ``records`` records carries: ``SHIP_BYTES`` for
    ``MAX_BATCH``, as much less for fewer, and for ``MIN_BATCH`` ``MIN_SHIP_BYTES`` (any
    bridge's 64 KiB)."""
    if records <= MIN_BATCH:
        return MIN_SHIP_BYTES
    return max(MIN_SHIP_BYTES, SHIP_BYTES * records // MAX_BATCH)


class _FinalAnswer(http.client.HTTPResponse):
    """``http.client``'s answer, read past interim (1xx) answers: ``http.client`` skips
    ``100 Continue`` only and would take e.g. ``103 Early Hints`` for the answer, leaving the
    real one unread on the connection. ``begin`` parses the next status line and header
    block again (with ``http.client``'s own parser and bounds), at most ``MAX_INTERIM``
    times; ``101 Switching Protocols`` is final (and not an answer the shipper takes)."""

    MAX_INTERIM = 10

    def begin(self):
        super().begin()
        interim = 0
        while 100 <= self.status < 200 and self.status != 101:
            interim += 1
            if interim > self.MAX_INTERIM:
                raise http.client.HTTPException("too many interim answers")
            self.headers = self.msg = None  # begin() reads a status line again
            super().begin()


# A kept-alive connection the server closed just as the shipper sent on it: sent again, once,
# on a new connection. (One closed while idle is noticed before sending, and replaced.)
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
          ConnectionAbortedError)
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # a header name (RFC 9110 token)
_FIELD = re.compile(r"^[\x20-\x7e]*$")  # a header value made here: visible ASCII and spaces


class _Poster:
    """The shipper's HTTP client: one kept-alive HTTP/1.1 connection to the endpoint (TLS for
    ``https``, verified against the system's CAs with host name checking, TLS 1.2 or later),
    a ``requests``-like ``post``. The request head is made once (it changes only with the
    endpoint, the credentials, the headers and the body's length) and goes out with the
    body in one ``sendmsg`` (no copy of the body); the answer is parsed by ``http.client``
    (its status line and header bounds, chunked and close-delimited bodies, interim answers
    read past: :class:`_FinalAnswer`). The shipper posts a batch per up to 1,000 records,
    and every microsecond it holds the GIL is taken from the request threads
    (bench/bench_access_recording.py): urllib3's layers cost as much again as this.

    Answers are bounded (``MAX_BODY``, read within the timeout; no content coding is
    decoded; a body shorter than its ``Content-Length`` or with unmatching lengths is an
    error). A connection the server closed while idle (readable before the request: its
    end, or bytes nobody asked for) is replaced before sending; one it closed as the batch
    was sent is tried again once at once on a new connection (the ingest is idempotent: a
    batch sent twice is stored once). After any other failure, an answer that is not 200 or
    one that ends the connection, the connection is closed: the next POST opens a new one.
    Redirects are not followed (an answer that is not 200 is a failure)."""

    MAX_BODY = 1024 * 1024

    def __init__(self):
        self._sock = None
        self._key = None  # (url, auth, headers, timeout) the head and the address are for
        self._address = ("", 0)
        self._hostname = ""
        self._tls: ssl.SSLContext | None = None
        self._head = b""  # the request head up to its Content-Length value
        self._timeout = 5.0
        self.resent = 0  # batches sent again on a new connection (the old one closed)

    def post(self, url, *, data, auth, timeout, headers):
        key = (url, auth, tuple(headers.items()), timeout)
        if key != self._key:
            self._prepare(key)
        pieces = (data,) if isinstance(data, (bytes, bytearray, memoryview)) else tuple(data)
        head = b"%s%d\r\n\r\n" % (self._head, sum(map(len, pieces)))
        try:
            if self._sock is not None and _readable(self._sock):
                self.close()  # closed by the server while idle (or out of step): a new one
            try:
                response = self._exchange(head, pieces)
            except _STALE:
                self.resent += 1
                self.close()
                response = self._exchange(head, pieces)  # on a new connection
            body = self._read(response, timeout)
        except BaseException as exc:
            self.close()
            if isinstance(exc, (OSError, http.client.HTTPException)):  # named in the log
                name, text = type(exc).__name__, str(exc)
                raise _ShipError(text if text.startswith(name) else f"{name}: {text}") from None
            raise
        if response.status != 200 or response.will_close or not (
                response.isclosed() or response.length == 0):
            self.close()  # not the answer the connection is kept for, or it ends it
        response.close()
        return _Response(response.status, body)

    def _prepare(self, key) -> None:
        url, auth, headers, timeout = key
        self.close()
        scheme, hostname, port, host, path = _endpoint(url)
        self._address = (hostname, port)
        self._hostname = hostname
        self._tls = None
        if scheme == "https":
            context = ssl.create_default_context()  # CERT_REQUIRED, check_hostname
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.set_alpn_protocols(["http/1.1"])
            self._tls = context
        token = base64.b64encode(":".join(auth).encode()).decode("ascii")
        fields = {"Host": host, "User-Agent": "scopes-guard", "Accept-Encoding": "identity",
                  **dict(headers), "Authorization": f"Basic {token}"}
        for name, value in fields.items():
            if not _TOKEN.match(name) or not _FIELD.match(value) or name.lower() in (
                    "content-length", "transfer-encoding", "connection"):
                raise ValueError(f"header {name!r} cannot be sent")
        self._head = (f"POST {path} HTTP/1.1\r\n"
                      + "".join(f"{name}: {value}\r\n" for name, value in fields.items())
                      + "Content-Length: ").encode("ascii")
        self._timeout = timeout
        self._key = key

    def _connect(self):
        sock = socket.create_connection(self._address, timeout=self._timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self._hostname)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        return sock

    def _exchange(self, head: bytes, pieces: tuple) -> _FinalAnswer:
        """Send the request (``head``, then the body's ``pieces``) on the kept connection (a
        new one if there is none) and read the answer's status line and head."""
        sock = self._sock or self._connect()
        if self._tls is None:
            parts = [head, *pieces]
            sent = sock.sendmsg(parts)  # one system call, no copy: the usual case
            for part in parts:  # what a full socket buffer left over
                if sent >= len(part):
                    sent -= len(part)
                    continue
                sock.sendall(memoryview(part)[sent:])
                sent = 0
        else:
            for part in (head, *pieces):
                sock.sendall(part)
        response = _FinalAnswer(sock, method="POST")
        response.begin()
        return response

    def _read(self, response, timeout: float) -> bytes:
        """The answer's body: at most ``MAX_BODY`` bytes, read within ``timeout`` (per read
        and in all, so that a server sending a byte at a time cannot hold the shipper)."""
        coding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if coding != "identity":
            raise _ShipError(f"the answer has a content coding ({coding[:20]!r})")
        lengths = {v.strip() for field in response.headers.get_all("Content-Length", ())
                   for v in field.split(",")}
        if len(lengths) > 1:
            raise _ShipError("the answer's Content-Length has multiple unmatching values")
        if lengths and not response.chunked and (
                response.length is None or str(response.length) not in lengths):
            raise _ShipError("the answer's Content-Length is not a length")
        length = response.length  # None: chunked or to the end of the connection
        if length is not None and length > self.MAX_BODY:
            raise _ShipError("the answer is too large")
        deadline = time.monotonic() + timeout
        chunks, size = [], 0
        while length is None or size < length:  # the bridge's answer: one read
            chunk = response.read1(65536)  # what one receive brought (or had buffered)
            if not chunk:
                break
            size += len(chunk)
            if size > self.MAX_BODY:
                raise _ShipError("the answer is too large")
            if time.monotonic() > deadline:
                raise _ShipError("the answer took too long")
            chunks.append(chunk)
        if length is not None and size < length:
            raise http.client.IncompleteRead(b"".join(chunks), length - size)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


def _endpoint(url: str) -> tuple[str, str, int, str, str]:
    """(scheme, host name, port, ``Host`` header, request target) of an ingest endpoint:
    ``http`` or ``https``, a host, no credentials, no spaces or control characters."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError("the endpoint must be an http(s) URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc \
            or not _FIELD.match(url) or " " in url:
        raise ValueError("the endpoint must be an http(s) URL with a host, without "
                         "credentials, spaces or control characters")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port, parts.netloc, path


def _readable(sock) -> bool:
    """Whether an idle connection has something to read: the server closed it (or sent what
    nobody asked for). Either way it is not used for the next request."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


class _Response:
    def __init__(self, status: int, data: bytes):
        self.status_code = status
        self.content = data

    def json(self):
        return json.loads(self.content)


# The usual answer, every record accepted in order, as the bridge's Flask (jsonify: compact)
# or json.dumps with its default separators writes it: (start, between two ids, end).
_ALL_ACCEPTED = (('{"accepted":["', '","', '"],"duplicates":[],"refused":[]}'),
                 ('{"accepted": ["', '", "', '"], "duplicates": [], "refused": []}'))


def _all_accepted(content: bytes, ids: list[str]) -> bool:
    """Whether ``content`` is the usual answer to a batch of ``ids`` (:data:`_ALL_ACCEPTED`,
    byte for byte but for white space around it): then it means exactly ``{"accepted": ids,
    "duplicates": [], "refused": []}`` (the ids need no escaping: :data:`_ID`), without
    parsing 40 KiB of JSON and comparing a thousand strings. Any other answer is parsed."""
    content = content.strip()
    for start, between, end in _ALL_ACCEPTED:
        if content.startswith(start.encode()):
            size = len(start) + len(end) + len(between) * (len(ids) - 1) + sum(map(len, ids))
            return len(content) == size and content == (
                start + between.join(ids) + end).encode("ascii")
    return False


def _policy(when_full) -> dict[str, str]:
    if when_full is None:
        when_full = {"read": "drop_oldest", "write": "refuse"}
    if isinstance(when_full, str):
        when_full = {"read": when_full, "write": when_full}
    if set(when_full) != {"read", "write"} or not set(when_full.values()) <= set(WHEN_FULL):
        raise ValueError(f"when_full must be one of {WHEN_FULL} or a mapping of read and "
                         f"write to one of them")
    return dict(when_full)


def _bounded(value) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_ID


def _record_id(line: bytes) -> str | None:
    """The id of a spooled line (the writer puts it first, so usually no parsing is needed),
    if it is one the bridge takes: a line with another id would be refused without it, and
    an answer that does not name a record is sent again, for ever."""
    found = _FIRST_ID.match(line)
    if found is not None:
        return found.group(1).decode("ascii")
    try:
        record = json.loads(line)
    except ValueError:
        return None
    record_id = record.get("id") if type(record) is dict else None
    return record_id if type(record_id) is str and _ID.fullmatch(record_id) else None


class _IdSource:
    """Record ids (the writer thread only): 36 characters in the layout of an RFC 9562 UUID
    version 8, 74 random bits from ``os.urandom`` per source (drawn again should the counter
    run out), then a 48-bit counter (module docstring). Made 256 at a time: the high 40 bits
    of the counter formatted once, the low 8 from a table."""

    LIMIT = 1 << 48
    _LOW = [f"{n:02x}" for n in range(256)]

    def __init__(self):
        self._prefix = _id_prefix()
        self._next = 0
        self._pool: list[str] = []

    def take(self, count: int) -> list[str]:
        pool = self._pool
        while len(pool) < count:
            if self._next >= self.LIMIT:
                self._prefix, self._next = _id_prefix(), 0
            block = f"{self._prefix}{self._next >> 8:010x}"
            pool.extend([block + low for low in self._LOW])
            self._next += 256
        taken = pool[:count]
        del pool[:count]
        return taken


def _id_prefix() -> str:
    """``xxxxxxxx-xxxx-8xxx-Vxxx-``: 74 random bits, version 8, variant 10 (RFC 9562)."""
    h = os.urandom(10).hex()
    return f"{h[:8]}-{h[8:12]}-8{h[12:15]}-{'89ab'[int(h[15], 16) & 3]}{h[16:19]}-"


class _Timestamps:
    """RFC 3339 UTC with milliseconds of a time in milliseconds, the seconds part formatted
    once per second; ``milli`` and ``text`` are the last one (the writer reuses it)."""

    def __init__(self):
        self._second = None
        self._seconds_text = ""
        self.milli = None
        self.text = ""

    def format(self, milli: int) -> str:
        second, fraction = divmod(milli, 1000)
        if second != self._second:
            self._second = second
            self._seconds_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        self.milli, self.text = milli, f"{self._seconds_text}.{fraction:03d}Z"
        return self.text


def _offset_path(path: Path) -> Path:
    return path.with_name(path.name + ".acked")


def _write_offset(path: Path, offset: int) -> None:
    target = _offset_path(path)
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(str(offset))
    os.replace(temporary, target)


def _read_offset(path: Path) -> int:
    try:
        return max(0, int(_offset_path(path).read_text().strip() or 0))
    except (FileNotFoundError, ValueError):
        return 0


def _next_line(fd: int, offset: int, size: int) -> int:
    """The offset after the next newline at or after ``offset`` (``size`` if none)."""
    while offset < size:
        data = os.pread(fd, min(size - offset, 65536), offset)
        if not data:
            break
        index = data.find(b"\n")
        if index >= 0:
            return offset + index + 1
        offset += len(data)
    return size


def _count_lines(path: Path, start: int) -> int:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(65536), b""))
    except FileNotFoundError:
        return 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
