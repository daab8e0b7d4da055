"""Access records: what a resource server authorised with an advisor or guest token, shipped
to the bridge's ingest endpoint (issue 14: ``POST <issuer>/access-records``, JSON
``{"records": [...]}``, answered ``{"accepted", "duplicates", "refused"}``).

A record names the tenant, ``grant_id``, ``sid``, subject, functional area and action of the
route's scope, HTTP method, the route *template* (never the raw path, query or body), the
response status and the time (RFC 3339 UTC, milliseconds). Three stages, so that the request
thread of the resource server never waits for a disk or the network:

1. :meth:`AccessRecorder.record` (the request thread) puts a tuple on an in-memory queue.
2. The writer thread gives each record its id (a UUID 4: the idempotency key at the bridge),
   appends the batch it has as JSON lines to the spool of this process and fsyncs it once.
3. The shipper thread posts at most 100 records per request with the receiver client's Basic
   credentials and, once the bridge answered (``accepted``, ``duplicates`` and ``refused``
   all count as done; refused ones are logged), moves the segment's acknowledged offset on.
   While the bridge is unreachable it backs off exponentially and the spool grows.

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

The spool needs POSIX ``flock`` (Linux, macOS).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .bearer import GuardError

__all__ = ["ADVISOR_MEMBERSHIPS", "AccessRecorder", "RecordingUnavailable", "WHEN_FULL"]

log = logging.getLogger("scopes.guard")

#: The ``membership`` claim values of advisor and guest tokens: only those are recorded.
ADVISOR_MEMBERSHIPS = frozenset({"temporary", "permanent", "guest"})
WHEN_FULL = ("refuse", "drop_oldest")
MAX_BATCH = 100  # the contract's bound per POST (fits the bridge's 64 KiB request limit)
MAX_ID = 64
MAX_ROUTE = 200
_SEGMENT = re.compile(r"^(access-\d+-[0-9a-f]{12})-(\d{6})\.jsonl$")
_LOCK = re.compile(r"^(access-\d+-[0-9a-f]{12})\.lock$")
_ID_PREFIX = b'{"id": "'
_encode = json.JSONEncoder().encode  # json.dumps' C encoder without its per-call set-up


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

    @property
    def pending(self) -> int:
        return max(0, self.size - self.acked)


class AccessRecorder:
    """The queue, the writer thread and the shipper thread of one process (module docstring).

    ``endpoint`` is the bridge's ``/access-records`` URL, ``client_id``/``client_secret`` a
    receiver client's credentials. ``http`` a ``requests.Session``-like object of its own
    (default: a new session). ``when_full`` is ``"refuse"``, ``"drop_oldest"`` or a mapping
    ``{"read": ..., "write": ...}``; None is the default (refuse writes, drop for reads).
    """

    def __init__(self, endpoint: str, client_id: str, client_secret: str, spool_dir, *,
                 max_spool_bytes: int, when_full=None, http=None, http_timeout: float = 5.0,
                 backoff_initial: float = 0.2, backoff_max: float = 30.0,
                 max_queue: int = 10_000, segment_bytes: int | None = None,
                 orphan_scan_interval: float = 30.0, writer_linger: float = 0.01,
                 ship_linger: float = 0.2):
        if not endpoint.startswith(("https://", "http://")):
            raise ValueError("endpoint must be an http(s) URL")
        if not client_id or not client_secret:
            raise ValueError("client_id and client_secret are required")
        if type(max_spool_bytes) is not int or max_spool_bytes < 64 * 1024:
            raise ValueError("max_spool_bytes must be an int >= 65536")
        self.policy = _policy(when_full)
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
        self.spool_dir = Path(spool_dir)
        self._auth = (client_id, client_secret)
        self._http = http if http is not None else _Poster()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
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
        self.stats = {"enqueued": 0, "spooled": 0, "shipped": 0, "accepted": 0,
                      "duplicates": 0, "refused_by_bridge": 0, "dropped": 0, "dropped_queue": 0,
                      "refused_requests": 0, "invalid": 0, "corrupt_lines": 0,
                      "ship_failures": 0, "spool_full": False, "spool_bytes": 0}

    # --- the request thread: memory only ---
    def record(self, claims: dict, area: str, action: str, method: str, route: str,
               status: int) -> bool:
        """Enqueue the record of one request authorised with ``claims`` (an advisor or guest
        token); False when the queue is full (the record is dropped and counted)."""
        if self._queue.qsize() >= self.max_queue:
            self.stats["dropped_queue"] += 1
            return False
        self._queue.put((time.time(), claims.get("tenant"), claims.get("grant_id"),
                         claims.get("sid"), claims.get("sub"), area, action, method, route,
                         status))
        return True

    def check(self, action: str) -> None:
        """Raise :class:`RecordingUnavailable` when an advisor request of ``action`` must be
        refused now (the spool or the queue is full and ``when_full`` says ``"refuse"``)."""
        if self.policy[action] == "refuse" and (
                self._full or self._queue.qsize() >= self.max_queue):
            self.stats["refused_requests"] += 1
            raise RecordingUnavailable("access recording is unavailable: the resource "
                                       "server's spool is full; try again later")

    @property
    def full(self) -> bool:
        return self._full

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
            if self._queue.empty() and not self._pending():
                cycles = self._cycles  # the writer finishes what it may have taken
                while self._cycles < cycles + 2 and time.monotonic() < deadline:
                    time.sleep(0.01)
                if self._queue.empty() and not self._pending():
                    return True
            time.sleep(0.02)
        return False

    def _pending(self) -> bool:
        with self._lock:
            return any(s.pending for s in self._segments)

    _cycles = 0  # writer loop iterations finished

    # --- the writer thread ---
    def _write_loop(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.05)
            except queue.Empty:
                self._cycles += 1
                if self._stop.is_set():
                    break
                continue
            if not self._stop.is_set():
                time.sleep(self.writer_linger)  # a batch per fsync, not a record
            items = [item]
            while len(items) < 5000:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._spool(items)
            except Exception:  # noqa: BLE001 - the thread must survive a full disk
                log.exception("access records: could not write the spool; %d records lost",
                              len(items))
                self.stats["dropped"] += len(items)
            self._cycles += 1
            self._wake.set()

    def _spool(self, items) -> None:
        lines_by_action: list[tuple[str, bytes]] = []
        at = _Timestamps()
        for (when, tenant, grant_id, sid, sub, area, action, method, route, status) in items:
            if not (_bounded(tenant) and _bounded(grant_id) and _bounded(sub)
                    and (sid is None or _bounded(sid)) and type(status) is int
                    and 100 <= status <= 599):
                self.stats["invalid"] += 1
                continue
            record = {"id": self._ids.next(), "tenant": tenant, "grant_id": grant_id,
                      "sid": sid, "sub": sub, "area": area, "action": action,
                      "method": method, "route": route[:MAX_ROUTE], "status": status,
                      "at": at.format(when)}
            lines_by_action.append((action, _encode(record).encode() + b"\n"))
        if not lines_by_action:
            return
        with self._lock:
            used = self._used()
            soft = self.max_spool_bytes - self.reserve
            keep: list[bytes] = []
            touched: set = set()
            for action, line in lines_by_action:
                over_soft = used + len(line) > soft and self.policy[action] == "drop_oldest"
                if over_soft or used + len(line) > self.max_spool_bytes:
                    self._append(keep, touched)  # on disk first, so that it can be dropped
                    keep = []
                    limit = soft if over_soft else self.max_spool_bytes
                    used -= self._drop_oldest(len(line) + used - limit)
                keep.append(line)
                used += len(line)
            self._append(keep, touched)
            for f in touched:  # one fsync per batch (and segment written)
                if not f.closed:
                    f.flush()
                    os.fsync(f.fileno())
            self.stats["spooled"] += len(lines_by_action)
            self._set_full(self._used() > soft or self._pressure)

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
        backoff = 0.0
        next_scan = time.monotonic() + self.orphan_scan_interval
        lingered = False
        while not (self._stop.is_set() and time.monotonic() > self._stop_deadline):
            if time.monotonic() >= next_scan:
                next_scan = time.monotonic() + self.orphan_scan_interval
                try:
                    self._adopt_orphans()
                except Exception:  # noqa: BLE001
                    log.exception("access records: could not look for orphaned spools")
            self._wake.clear()
            batch = self._next_batch()
            if batch is None:
                if self._stop.is_set() and not self._writer.is_alive():
                    break
                self._wake.wait(0.5)
                continue
            if len(batch[2]) < MAX_BATCH and not lingered and not self._stop.is_set():
                # Fewer requests to the bridge (and less CPU here): let the batch fill up.
                lingered = True
                self._stop.wait(self.ship_linger)
                continue
            lingered = False
            segment, end, ids, lines = batch
            try:
                done = self._post(ids, lines)
            except Exception as exc:  # noqa: BLE001 - network, TLS, HTTP: all mean retry
                self.stats["ship_failures"] += 1
                if self._stop.is_set():
                    break
                backoff = min(self.backoff_max, max(self.backoff_initial, backoff * 2))
                log.warning("access records: shipping failed (%s); %d bytes wait in the spool; "
                            "retrying in %.1f s", exc, self._used(), backoff)
                self._stop.wait(backoff)
                continue
            backoff = 0.0
            self.stats["shipped"] += done
            self._acknowledge(segment, end)

    def _next_batch(self):
        """(segment, end offset, ids, raw lines) of the oldest unshipped records, or None."""
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
        ids, lines, offset, budget = [], [], start, 60 * 1024
        try:
            with open(path, "rb") as f:
                f.seek(start)
                while len(lines) < MAX_BATCH and offset < size and budget > 0:
                    line = f.readline()
                    if not line.endswith(b"\n"):
                        if is_current:
                            break  # not flushed yet
                        offset += len(line)  # a torn last write of a killed process
                        self.stats["corrupt_lines"] += 1
                        break
                    offset += len(line)
                    record_id = _record_id(line)
                    if record_id is None:
                        self.stats["corrupt_lines"] += 1
                        continue
                    ids.append(record_id)
                    lines.append(line.rstrip(b"\n"))
                    budget -= len(line)
        except FileNotFoundError:
            with self._lock:
                self._remove(segment)
            return self._next_batch()
        if not ids:
            self._acknowledge(segment, offset)
            return self._next_batch() if offset > start else None
        return segment, offset, ids, lines

    def _post(self, ids: list[str], lines: list[bytes]) -> int:
        body = b'{"records": [' + b", ".join(lines) + b"]}"
        response = self._http.post(self.endpoint, data=body, auth=self._auth,
                                   timeout=self.http_timeout,
                                   headers={"Content-Type": "application/json",
                                            "Accept": "application/json"})
        if response.status_code == 400:
            # The bridge calls the batch malformed: sending it again cannot help.
            log.error("access records: the bridge refused a batch of %d records as malformed "
                      "(HTTP 400); dropped", len(ids))
            self.stats["dropped"] += len(ids)
            return 0
        if response.status_code != 200:
            raise _ShipError(f"HTTP {response.status_code}")
        try:
            answer = response.json()
            accepted = set(answer["accepted"])
            duplicates = set(answer["duplicates"])
            refused = {r["id"]: r.get("error") for r in answer["refused"]}
        except Exception:  # noqa: BLE001
            raise _ShipError("the answer is not the ingest's JSON") from None
        missing = [i for i in ids if i not in accepted and i not in duplicates
                   and i not in refused]
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
            try:
                _write_offset(segment.path, end)
            except OSError:  # only costs a duplicate after a restart
                log.warning("access records: could not save the shipped offset")
            if segment.pending == 0 and segment is not self._current:
                self._remove(segment)
            soft = self.max_spool_bytes - self.reserve
            if self._used() <= soft - self.segment_bytes:
                self._pressure = False  # the bridge took records: room for a segment
            self._set_full(self._used() > soft or self._pressure)

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
                adopted.append(_Segment(path, size=size, acked=acked, adopted=True, lock_fd=fd))
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


class _Poster:
    """The shipper's HTTP client: urllib3 with one kept-alive pool, a ``requests``-like
    ``post`` (a tenth of the CPU ``requests`` takes per call, which the request threads feel
    through the GIL; bench/bench_access_recording.py)."""

    def __init__(self):
        import urllib3

        self._urllib3 = urllib3
        self._pool = urllib3.PoolManager(num_pools=2, maxsize=1, retries=False)

    def post(self, url, *, data, auth, timeout, headers):
        headers = {**headers, **self._urllib3.make_headers(basic_auth=":".join(auth))}
        response = self._pool.request("POST", url, body=data, headers=headers,
                                      timeout=timeout, redirect=False)
        return _Response(response.status, response.data)

    def close(self):
        self._pool.clear()


class _Response:
    def __init__(self, status: int, data: bytes):
        self.status_code = status
        self._data = data

    def json(self):
        return json.loads(self._data)


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
    """The id of a spooled line: the writer puts it first, so no parsing is needed."""
    if line.startswith(_ID_PREFIX) and line[44:45] == b'"':
        return line[8:44].decode("ascii", "replace")
    try:
        record = json.loads(line)
    except ValueError:
        return None
    record_id = record.get("id") if type(record) is dict else None
    return record_id if _bounded(record_id) else None


class _IdSource:
    """UUID 4 strings from one ``os.urandom`` call per 256 ids (the writer thread only)."""

    def __init__(self):
        self._pool: list[str] = []

    def next(self) -> str:
        if not self._pool:
            raw = bytearray(os.urandom(16 * 256))
            pool = []
            for i in range(0, len(raw), 16):
                raw[i + 6] = (raw[i + 6] & 0x0F) | 0x40  # version 4
                raw[i + 8] = (raw[i + 8] & 0x3F) | 0x80  # RFC 4122 variant
                h = raw[i:i + 16].hex()
                pool.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
            self._pool = pool
        return self._pool.pop()


class _Timestamps:
    """RFC 3339 UTC with milliseconds, the seconds part formatted once per second."""

    def __init__(self):
        self._second = None
        self._text = ""

    def format(self, when: float) -> str:
        second = int(when)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._text}.{int((when - second) * 1000):03d}Z"


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
