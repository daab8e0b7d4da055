"""Engine and sessions. SQLite gets WAL, ``synchronous=FULL`` and a busy timeout; other
backends their defaults.

Durability: on SQLite every commit is flushed to disk (the WAL fsynced, ``synchronous=FULL``)
before the call that made it returns, so a response that follows it (an exchange's tokens,
a removal's 204) survives a crash of the machine, not only of the process (``NORMAL``
flushed only at checkpoints: a power loss could bring a removal back). On PostgreSQL the
server's own ``fsync`` and ``synchronous_commit`` decide (both on by default; README:
Durability)."""

from __future__ import annotations

import contextlib
import logging
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
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
        if self.url.get_backend_name() == "sqlite":
            database = self.url.database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 15}
        else:
            kwargs.update(pool_pre_ping=True, pool_size=5, max_overflow=20, pool_recycle=1800)
        self.engine = create_engine(self.url, **kwargs)
        if self.url.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            # Let SQLAlchemy's transaction control SQLite's: BEGIN IMMEDIATE takes the write
            # lock at the start, so concurrent writers queue instead of failing on upgrade.
            event.listen(self.engine, "begin", _sqlite_begin)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Write transactions are marked so that SQLite takes its write lock up front; reads
        # stay deferred and never wait for a writer (WAL).
        self.write_sessions = sessionmaker(self.engine.execution_options(write=True),
                                           expire_on_commit=False)
        # SQLite has one writer at a time. Threads of this process queue on a lock for it
        # instead of polling SQLite's busy handler (which sleeps in millisecond steps while
        # the holder waits for the GIL); other processes still meet the busy timeout.
        self._writer = threading.Lock() if self.url.get_backend_name() == "sqlite" \
            else contextlib.nullcontext()

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
        for callback in callbacks:
            try:
                callback()
            except Exception:  # the work is committed: a failed wake-up must not undo the answer
                log.exception("an after-commit callback failed")

    @contextmanager
    def read(self):
        try:
            with self.sessions() as session:
                yield session
        except SQLAlchemyError as exc:
            if _is_connectivity_error(exc):
                raise StorageUnavailable("the database is unreachable") from exc
            raise

    def alembic_config(self) -> Config:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.set_main_option("sqlalchemy.url", self.url.render_as_string(hide_password=False))
        return config

    def upgrade(self) -> None:
        with self.engine.begin() as connection:
            config = self.alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def is_current(self) -> bool:
        return inspect(self.engine).has_table("alembic_version")

    def dispose(self) -> None:
        self.engine.dispose()


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
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")


def _sqlite_pragmas(dbapi_connection, _record):
    # pysqlite's own transaction handling would defeat BEGIN IMMEDIATE above.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # Every commit reaches the disk before it returns (the module docstring).
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.close()


def _is_connectivity_error(exc: SQLAlchemyError) -> bool:
    from sqlalchemy.exc import DBAPIError, OperationalError

    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError)
