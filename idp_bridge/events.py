"""Wake-ups for waiters on new revocations (long polls, push delivery).

Within one process a committed revocation wakes waiters at once: the domain's revocation
(:class:`idp_bridge.domain.revocation.Revocations`) registers its ``wake_ups`` — wired in
``create_app`` to :meth:`RevocationNotifier.notify` and :meth:`RedisFanout.publish` — to run
after the transaction commits (:func:`idp_bridge.storage.db.after_commit`), never after a
rollback. Other processes learn of it from the database itself
(:class:`DatabaseWakeups`, one thread per process): on SQLite (one host) a look at
``PRAGMA data_version`` every few milliseconds — it changes when another connection commits,
and costs no I/O — then, only if it changed, whether the newest revocation id grew (SQLite
commits one writer after another, so ids appear in order); the look comes at once when the
committing process says so, by a datagram to each process's socket in a directory beside the
database (:class:`WakeupInbox`: the wait was up to one interval, 2.5 ms on average); on
PostgreSQL a ``NOTIFY`` after the commit and a ``LISTEN`` per process (every host of the
database). Should any of that
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
import os
import secrets
import select
import socket
import sqlite3
import stat
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
        #: This process's datagram socket beside a SQLite file (None: polling only).
        self.inbox: WakeupInbox | None = None
        path = db.url.database if self.backend == "sqlite" else None
        self._inboxes = Path(path).resolve().parent / (Path(path).name + ".wakeups") \
            if path and path != ":memory:" and not path.startswith("file:") else None
        notifier.watchers.append(self)

    def stop(self, timeout: float = 15.0) -> None:
        self.stopping.set()
        inbox = self.inbox
        if inbox is not None:
            inbox.poke()  # its wait ends now, not after the interval
        super().stop(timeout)

    def publish(self) -> None:
        """Tell the other processes (PostgreSQL: ``NOTIFY``; SQLite: a datagram to each
        process's inbox, whose watcher then looks at once; its watcher would also see the
        commit within an interval). Run after the commit; a failure costs only speed."""
        if self.backend == "sqlite":
            if self._inboxes is not None:
                WakeupInbox.send_all(self._inboxes, mine=self.inbox)
            return
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
        inbox = WakeupInbox.open(self._inboxes) if self._inboxes is not None else None
        self.inbox = inbox
        try:
            version = connection.execute("PRAGMA data_version").fetchone()[0]
            newest = self._newest(connection)
            self.watching = True
            while not (inbox.wait(self.check_interval) if inbox is not None
                       else self.stopping.wait(self.check_interval)):
                if self.stopping.is_set():
                    break
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
            self.inbox = None
            if inbox is not None:
                inbox.close()
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


class WakeupInbox:
    """A process's datagram socket in a directory beside a SQLite file (``<file>.wakeups``,
    mode 0700): a process that committed a revocation sends one byte to every socket there
    (:meth:`send_all`), and each watcher, waiting on its socket instead of sleeping
    (:meth:`wait`), looks at the database at once. A datagram says only "look now": what
    wakes the long polls is still the database's newest revocation id, so a stray or forged
    one costs one look. Sockets left by processes that died are removed by the next sender
    (the connection is refused); the directory is used only when it is this user's and
    nobody else's. Sockets are addressed through the directory's descriptor
    (``/proc/self/fd/N/name`` on Linux), so a long database path does not exceed the ~100
    bytes of a socket address; where that is not available and the path is too long, the
    watcher polls only."""

    MAX_ADDRESS = 100  # sun_path: 108 bytes on Linux, 104 on the BSDs
    _PROC_FD = Path("/proc/self/fd").is_dir()

    def __init__(self, sock: socket.socket, directory: int, name: str, path: Path):
        self.sock = sock
        self._directory = directory
        self.name = name
        self.path = path

    @staticmethod
    def _open_directory(directory: Path, create: bool) -> int | None:
        """A descriptor of ``directory`` if it is this user's alone (else None)."""
        try:
            if create:
                directory.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        info = os.fstat(fd)
        if info.st_uid != os.geteuid() or info.st_mode & 0o077:
            os.close(fd)
            return None
        return fd

    @classmethod
    def _address(cls, fd: int, directory: Path, name: str) -> str | None:
        address = f"/proc/self/fd/{fd}/{name}" if cls._PROC_FD else os.fspath(directory / name)
        return address if len(os.fsencode(address)) <= cls.MAX_ADDRESS else None

    @classmethod
    def open(cls, directory: Path) -> "WakeupInbox | None":
        fd = cls._open_directory(directory, True)
        if fd is None:
            log.warning("the wake-up directory beside the database is not this user's alone; "
                        "watching the database by polling only")
            return None
        name = f"{os.getpid()}-{secrets.token_hex(4)}.sock"
        address = cls._address(fd, directory, name)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            if address is None:
                raise OSError("the socket address would be too long")
            sock.bind(address)
            sock.setblocking(False)
        except OSError:
            sock.close()
            os.close(fd)
            log.warning("no wake-up socket beside the database; watching it by polling only")
            return None
        return cls(sock, fd, name, directory / name)

    def wait(self, timeout: float) -> bool:
        """Wait until a datagram arrives or ``timeout`` passes; read every datagram waiting
        (many senders, one look). Returns False (the caller's loop goes on)."""
        try:
            ready, _, _ = select.select([self.sock], [], [], timeout)
            while ready:
                self.sock.recv(16)
        except (BlockingIOError, InterruptedError):
            pass
        return False

    def poke(self) -> None:
        """A datagram to this inbox (its own wait ends)."""
        address = self._address(self._directory, self.path.parent, self.name)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.sendto(b"1", address)
        except (OSError, TypeError):  # closed meanwhile, or full: it is awake
            pass

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.name, dir_fd=self._directory)
        except OSError:
            pass
        os.close(self._directory)

    @classmethod
    def send_all(cls, directory: Path, *, mine: "WakeupInbox | None" = None) -> int:
        """One datagram to every inbox in ``directory`` but ``mine``; returns how many were
        sent. Never raises, never blocks (a full inbox is awake already)."""
        fd = cls._open_directory(directory, False)
        if fd is None:
            return 0
        sent = 0
        sock = None
        try:
            names = [entry.name for entry in os.scandir(fd) if entry.name.endswith(".sock")
                     and (mine is None or entry.name != mine.name)]
            if names:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.setblocking(False)
            for name in names:
                address = cls._address(fd, directory, name)
                if address is None:
                    continue
                try:
                    sock.sendto(b"1", address)
                    sent += 1
                except (ConnectionRefusedError, FileNotFoundError):
                    try:  # nobody reads it any more (its process died)
                        os.unlink(name, dir_fd=fd)
                    except OSError:
                        pass
                except OSError:  # full (it will look anyway) or not a socket
                    pass
        except OSError:
            pass
        finally:
            if sock is not None:
                sock.close()
            os.close(fd)
        return sent
