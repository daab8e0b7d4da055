"""Engine and sessions. SQLite gets WAL, a group commit and a writer lock shared by every
process; other backends their defaults.

Durability: on SQLite every unit of work (:meth:`Database.transaction`) is on disk before
the call that made it returns, so a response that follows it (an exchange's tokens, a
removal's 204) survives a crash of the machine, not only of the process. The connections
run ``synchronous=NORMAL`` (SQLite then fsyncs the WAL only at checkpoints) and the
transaction, once committed and its writer lock released, waits for an ``fdatasync`` of the
WAL that *started after* its commit (:class:`WalFlush`): one flush covers every commit made
before it began, so concurrent writers share flushes (group commit) instead of taking
turns at an fsync each inside the lock, as ``synchronous=FULL`` does. On PostgreSQL the
server's own ``fsync`` and ``synchronous_commit`` decide (both on by default; README:
Durability).

One writer at a time: SQLite allows one, and its busy handler polls in sleeping steps (two
processes queueing through it saw p99 355 ms). Writers queue instead on a thread lock and
then on an ``flock`` of a lock file beside the database (:class:`WriterLock`), which the
kernel hands over at once, so several server processes can share one SQLite file."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class StorageUnavailable(RuntimeError):
    """The database cannot be reached; callers refuse rather than grant (fail closed)."""


class Database:
    def __init__(self, url: str):
        self.url = make_url(url)
        if self.url.drivername in ("postgresql", "postgres"):
            self.url = self.url.set(drivername="postgresql+psycopg")  # psycopg 3
        kwargs: dict = {"future": True}
        #: The group commit's flush (SQLite files; None: the server flushes, or nothing to).
        self.flush = None
        file = None
        if self.url.get_backend_name() == "sqlite":
            database = self.url.database
            if database and database != ":memory:" and not database.startswith("file:"):
                file = Path(database).resolve()
                file.parent.mkdir(parents=True, exist_ok=True)
                self.flush = WalFlush(file)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 15}
        else:
            # No pre-ping round trip per checkout: a connection is pinged only after it sat
            # idle in the pool (_ping_if_idle), when the server may have gone meanwhile.
            kwargs.update(pool_size=5, max_overflow=20, pool_recycle=1800)
        self.engine = create_engine(self.url, **kwargs)
        if self.url.get_backend_name() != "sqlite":
            event.listen(self.engine, "checkin", _note_checkin)
            event.listen(self.engine, "checkout", _ping_if_idle)
        #: Where units of work run. A SQLite file gets one connection of its own for them
        #: (the writer lock hands it from thread to thread): its page cache stays valid from
        #: one transaction to the next, since no other connection of the process writes.
        self.write_engine = self.engine
        if file is not None:
            self.write_engine = create_engine(self.url, pool_size=1, max_overflow=0,
                                              pool_timeout=60, **kwargs)
        if self.url.get_backend_name() == "sqlite":
            # Let SQLAlchemy's transaction control SQLite's: BEGIN IMMEDIATE takes the write
            # lock at the start, so concurrent writers queue instead of failing on upgrade.
            for engine in {self.engine, self.write_engine}:
                event.listen(engine, "begin", _sqlite_begin)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Write transactions are marked so that SQLite takes its write lock up front; reads
        # stay deferred and never wait for a writer (WAL).
        self.write_sessions = sessionmaker(self.write_engine.execution_options(write=True),
                                           expire_on_commit=False)
        # SQLite has one writer at a time. Writers queue for it on a thread lock and then on
        # an flock beside the database file (every process), instead of polling SQLite's busy
        # handler (which sleeps in millisecond steps while the holder waits for the GIL).
        if self.url.get_backend_name() != "sqlite":
            self._writer = contextlib.nullcontext()
        elif file is not None:
            self._writer = WriterLock(file.with_name(file.name + ".writer-lock"))
        else:
            self._writer = threading.Lock()
        if self.url.get_backend_name() == "sqlite":
            for engine in {self.engine, self.write_engine}:
                event.listen(engine, "connect", _sqlite_pragmas_for(
                    "NORMAL" if self.flush is not None else "FULL"))

    @contextmanager
    def transaction(self):
        """One unit of work: commit on success, roll back on any error. Callbacks registered
        with :func:`after_commit` run once the commit has succeeded (outside the SQLite
        writer lock), never after a rollback."""
        callbacks: list = []
        try:
            with self._writer, self.write_sessions.begin() as session:
                session.info[_AFTER_COMMIT] = callbacks
                yield session
        except SQLAlchemyError as exc:
            if _is_connectivity_error(exc):
                raise StorageUnavailable("the database is unreachable") from exc
            raise
        failed = None
        if self.flush is not None:
            try:
                self.flush()  # committed; now on disk too (outside the writer lock)
            except StorageUnavailable as exc:
                failed = exc  # the answer fails; the committed work is visible all the same
        for callback in callbacks:
            try:
                callback()
            except Exception:  # the work is committed: a failed wake-up must not undo the answer
                log.exception("an after-commit callback failed")
        if failed is not None:
            raise failed

    @contextmanager
    def read(self):
        try:
            with self.sessions() as session:
                yield session
        except SQLAlchemyError as exc:
            if _is_connectivity_error(exc):
                raise StorageUnavailable("the database is unreachable") from exc
            raise

    def alembic_config(self):
        # Alembic (and the mako and pygments it pulls in, about 11 MB) is loaded only by
        # what migrates: a serving worker never needs it.
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.set_main_option("sqlalchemy.url", self.url.render_as_string(hide_password=False))
        return config

    def upgrade(self) -> None:
        from alembic import command

        with self._writer, self.write_engine.begin() as connection:
            config = self.alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        if self.flush is not None:
            self.flush()

    def is_current(self) -> bool:
        return inspect(self.engine).has_table("alembic_version")

    def dispose(self) -> None:
        self.engine.dispose()
        if self.write_engine is not self.engine:
            self.write_engine.dispose()
        if isinstance(self._writer, WriterLock):
            self._writer.close()


_AFTER_COMMIT = "idp_bridge.after_commit"


def after_commit(session, callback) -> None:
    """Run ``callback()`` once after the transaction of ``session`` (a session of
    :meth:`Database.transaction`) has committed; not at all if it rolls back. Registering
    an equal callback twice in one transaction runs it once (one wake-up per commit)."""
    try:
        callbacks = session.info[_AFTER_COMMIT]
    except KeyError:
        raise RuntimeError("after_commit needs a session of Database.transaction()") from None
    if callback not in callbacks:
        callbacks.append(callback)


def _sqlite_begin(conn):
    # On the driver's connection: through exec_driver_sql this statement alone cost ~25 µs
    # of SQLAlchemy's execution machinery per transaction.
    # (Its errors become SQLAlchemy's, as they would there: a locked or missing database
    # is an OperationalError, which the callers answer as StorageUnavailable.)
    statement = "BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN"
    dbapi = conn.dialect.loaded_dbapi
    try:
        conn.connection.driver_connection.execute(statement)
    except dbapi.Error as exc:
        raise DBAPIError.instance(statement, (), exc, dbapi.Error,
                                  dialect=conn.dialect) from exc


def _sqlite_pragmas_for(synchronous: str):
    assert synchronous in ("NORMAL", "FULL")

    def pragmas(dbapi_connection, _record):
        # pysqlite's own transaction handling would defeat BEGIN IMMEDIATE above.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL: the transaction's WalFlush makes each commit durable (the module
        # docstring); FULL where there is no file to flush (an in-memory database).
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.close()

    return pragmas


class WalFlush:
    """Group commit for one SQLite file in WAL mode: ``flush()`` returns once an
    ``fdatasync`` of the WAL that started after the call has finished, so everything
    committed before the call is on disk. A flush in progress when a caller arrives may have
    begun before that caller's commit, so the caller waits for the next one; that next one
    serves every caller that arrived while the previous was running.

    The WAL is opened for each flush (SQLite may remove and recreate it); when there is none,
    SQLite has checkpointed everything into the database file, which is flushed instead.
    A failed flush raises :class:`StorageUnavailable`: the answer must not claim durability
    (the waiters then try a flush of their own)."""

    def __init__(self, database: Path):
        self.database = database
        self.wal = database.with_name(database.name + "-wal")
        self._state = threading.Condition()
        self._started = 0   # flushes begun
        self._done = 0      # the highest flush number finished
        self._running = False
        #: Flushes made (statistics: commits / flushes is the group size).
        self.flushes = 0

    def __call__(self) -> None:
        with self._state:
            wanted = self._started + 1
            while self._done < wanted:
                if not self._running:
                    self._running = True
                    self._started += 1
                    mine = self._started
                    break
                self._state.wait()
            else:
                return
        ok = False
        try:
            self._fdatasync()
            ok = True
        finally:
            with self._state:
                self._running = False
                if ok:
                    self._done = max(self._done, mine)
                    self.flushes += 1
                self._state.notify_all()

    def _fdatasync(self) -> None:
        for path in (self.wal, self.database):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StorageUnavailable("the database file cannot be flushed") from exc
            try:
                os.fdatasync(fd)
                return
            except OSError as exc:
                raise StorageUnavailable("the database file cannot be flushed") from exc
            finally:
                os.close(fd)
        raise StorageUnavailable("the database file is missing")


class WriterLock:
    """SQLite's one writer, for every thread of every process on this file: a thread lock
    (threads share a process's open files, whose ``flock`` would not exclude them), then an
    exclusive ``flock`` of ``path``. The file is opened once per process (after a fork the
    child opens its own: an inherited descriptor would share the parent's lock)."""

    def __init__(self, path: Path):
        self.path = path
        self._thread = threading.Lock()
        self._fd: int | None = None
        self._pid: int | None = None

    def __enter__(self):
        self._thread.acquire()
        try:
            if self._pid != os.getpid():
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                self._pid = os.getpid()
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread.release()

    def close(self) -> None:
        """Close this process's descriptor (reopened by the next writer)."""
        with self._thread:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = self._pid = None


#: A pooled connection idle longer than this is pinged before use (the server may have
#: restarted); one in steady use is not (issue 16: no round trip per request for it).
IDLE_BEFORE_PING = 1.0
_CHECKED_IN = "idp_bridge.checked_in"


def _note_checkin(_dbapi_connection, record) -> None:
    if record is not None:
        record.info[_CHECKED_IN] = time.monotonic()


def _ping_if_idle(dbapi_connection, record, _proxy) -> None:
    """SQLAlchemy's pessimistic disconnect handling, for idle connections only: a failed
    ping raises DisconnectionError, and the pool retries with a new connection."""
    from sqlalchemy.exc import DisconnectionError

    since = record.info.get(_CHECKED_IN)
    if since is None or time.monotonic() - since < IDLE_BEFORE_PING:
        return
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            cursor.close()
        # The driver began a transaction for the ping: end it, or the connection is handed
        # out inside one (SQLAlchemy would not know; an isolation-level change then fails).
        dbapi_connection.rollback()
    except Exception as exc:
        raise DisconnectionError("a pooled connection did not answer its ping") from exc


def _is_connectivity_error(exc: SQLAlchemyError) -> bool:
    from sqlalchemy.exc import DBAPIError, OperationalError

    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError)
