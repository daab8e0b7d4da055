"""Core statements run on the driver's cursor, for the token endpoint's hot path (issue 16).

SQLAlchemy's execution of a Core statement costs about 60 µs of Python per statement (the
execution context, parameter and result machinery, events), several times what SQLite
spends on it. :class:`Plain` keeps SQLAlchemy as the one home of the SQL and of every
storage format and runs only the result: the statement is compiled once per dialect (and,
for INSERT and UPDATE, per set of given columns) by SQLAlchemy's own compiler, the
parameters pass through the bind processors of their column types and the selected values
through their result processors (public ``TypeEngine.dialect_impl`` /
``bind_processor`` / ``result_processor``: the models' ``UTCDateTime``, JSON and so on
apply exactly as on every other path), on the DBAPI connection of the session's own
transaction.

What it refuses, at the first use (a bug, found by any test that runs the statement):
expanding ``IN`` parameters, and INSERTs or UPDATEs that leave out a column with a
Python-side default or onupdate (SQLAlchemy would have filled it in). Errors of the driver
become SQLAlchemy's (``DBAPIError.instance``), so callers see the same exceptions as
through ``Connection.execute``; a disconnect invalidates the session's connection.
"""

from __future__ import annotations

import threading
from collections import namedtuple
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert, Update

_DRIVER = "idp_bridge.plain.driver"
#: Callables told the SQL of every statement run here (:func:`observe`; tests count them as
#: SQLAlchemy's ``before_cursor_execute`` counts the others).
_observers: list = []


class Plain:
    """One Core statement (a ``select``, ``insert``, ``update`` or ``delete`` whose
    parameters are ``bindparam`` names or columns) for :meth:`rows`, :meth:`first` and
    :meth:`run`."""

    def __init__(self, statement):
        self.statement = statement
        self._lock = threading.Lock()
        self._compiled: dict = {}
        self._dml = isinstance(statement, (Insert, Update))

    # --- execution ---
    def rows(self, session, params: dict | None = None) -> list:
        """Every row of a SELECT (or RETURNING) as named tuples of processed values."""
        cursor, compiled = self._execute(session, params or {})
        try:
            raw = cursor.fetchall()
        finally:
            cursor.close()
        return compiled.convert(raw, cursor.description)

    def first(self, session, params: dict | None = None):
        """The first row, or None."""
        cursor, compiled = self._execute(session, params or {})
        try:
            raw = cursor.fetchone()
        finally:
            cursor.close()
        if raw is None:
            return None
        return compiled.convert([raw], cursor.description)[0]

    def run(self, session, params: dict | None = None) -> int:
        """Run an INSERT, UPDATE or DELETE; the number of rows it matched."""
        cursor, _ = self._execute(session, params or {})
        try:
            return cursor.rowcount
        finally:
            cursor.close()

    def run_many(self, session, rows: list[dict]) -> None:
        """Run an INSERT once per row of ``rows`` (every row with the same columns)."""
        if not rows:
            return
        driver, dialect = _driver(session)
        compiled = self._for(dialect, rows[0])
        cursor = _call(session, driver, dialect, compiled.sql, "executemany",
                       [compiled.arguments(row) for row in rows])
        cursor.close()

    def _execute(self, session, params: dict):
        driver, dialect = _driver(session)
        compiled = self._for(dialect, params)
        return _call(session, driver, dialect, compiled.sql, "execute",
                     compiled.arguments(params)), compiled

    def _for(self, dialect, params: dict) -> "_Compiled":
        key = (dialect.name, frozenset(params)) if self._dml else dialect.name
        compiled = self._compiled.get(key)
        if compiled is None:
            with self._lock:
                compiled = self._compiled.get(key)
                if compiled is None:
                    compiled = self._compiled[key] = _Compiled(self.statement, dialect,
                                                               params if self._dml else None)
        return compiled


def _call(session, driver, dialect, sql: str, method: str, arguments):
    """A new cursor of ``driver`` that ran ``sql`` by ``method`` (``execute`` or
    ``executemany``), the observers told first; a driver error becomes SQLAlchemy's."""
    cursor = driver.cursor()
    for observer in _observers:
        observer(sql)
    try:
        getattr(cursor, method)(sql, arguments)
    except dialect.loaded_dbapi.Error as exc:
        cursor.close()
        raise _translated(session, driver, dialect, sql, arguments, exc) from exc
    except BaseException:
        cursor.close()
        raise
    return cursor


@contextmanager
def observe(callback):
    """Tell ``callback(sql)`` of every statement :class:`Plain` runs while in this block."""
    _observers.append(callback)
    try:
        yield
    finally:
        _observers.remove(callback)


def _driver(session):
    """The DBAPI connection of ``session``'s transaction (begun if need be) and its
    dialect, kept in ``session.info`` for the transaction's next statements."""
    found = session.info.get(_DRIVER)
    if found is None:
        connection = session.connection()
        found = (connection.connection.driver_connection, connection.dialect)
        session.info[_DRIVER] = found
    return found


def _forget_driver(session, transaction) -> None:
    # The connection goes back to the pool when the session's outermost transaction ends.
    if transaction.parent is None:
        session.info.pop(_DRIVER, None)


event.listen(Session, "after_transaction_end", _forget_driver)


def _translated(session, driver, dialect, sql, arguments, exc):
    """SQLAlchemy's exception for a driver error (as ``Connection.execute`` raises); a
    disconnect invalidates the session's connection."""
    invalidated = bool(dialect.is_disconnect(exc, driver, None))
    if invalidated:
        session.connection().invalidate(exc)
    return DBAPIError.instance(sql, arguments, exc, dialect.loaded_dbapi.Error,
                               connection_invalidated=invalidated, dialect=dialect)


class _Compiled:
    def __init__(self, statement, dialect, given: dict | None):
        if given is not None:
            _check_defaults(statement, given)
            compiled = statement.compile(dialect=dialect, column_keys=list(given))
        else:
            compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        binds = compiled.binds
        if any(bind.expanding for bind in binds.values()) or compiled.post_compile_params \
                or compiled.literal_execute_params:
            raise ValueError("Plain does not run expanding IN parameters or others rendered "
                             "at execution")
        self.positional = compiled.positional
        names = list(compiled.positiontup) if compiled.positional else list(binds)
        self.binds = []
        for name in names:
            bind = binds[name]
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            constant = _REQUIRED if bind.required else bind.effective_value
            self.binds.append((name, processor, constant))
        self.dialect = dialect
        columns = list(getattr(statement, "selected_columns", ()) or ())
        returning = getattr(statement, "_returning", ())
        if not columns and returning:
            columns = list(returning)
        self.columns = columns
        self.row = namedtuple("PlainRow", [_label(c, i) for i, c in enumerate(columns)],
                              rename=True) if columns else None
        self._processors = None

    def arguments(self, params: dict):
        values = []
        for name, processor, constant in self.binds:
            if name in params:
                value = params[name]
            elif constant is _REQUIRED:
                raise KeyError(f"a value for the bound parameter {name!r} is required")
            else:
                value = constant
            values.append(processor(value) if processor is not None else value)
        if self.positional:
            return tuple(values)
        return {name: value for (name, *_), value in zip(self.binds, values)}

    def convert(self, raw: list, description) -> list:
        processors = self._processors
        if processors is None:
            processors = self._processors = [
                column.type.dialect_impl(self.dialect).result_processor(
                    self.dialect, description[i][1] if description else None)
                for i, column in enumerate(self.columns)]
        if not any(processors):
            return [self.row._make(r) for r in raw]
        return [self.row._make([p(v) if p is not None else v for p, v in zip(processors, r)])
                for r in raw]


_REQUIRED = object()


def _label(column, index: int) -> str:
    name = getattr(column, "key", None) or getattr(column, "name", None)
    return name if isinstance(name, str) and name else f"_{index}"


def _check_defaults(statement, given: dict) -> None:
    table = statement.table
    for column in table.columns:
        if column.key in given:
            continue
        if isinstance(statement, Insert) and column.default is not None \
                and not column.default.is_sequence:
            raise ValueError(f"Plain INSERT into {table.name} must give {column.key} "
                             "(it has a Python-side default)")
        if isinstance(statement, Update) and column.onupdate is not None:
            raise ValueError(f"Plain UPDATE of {table.name} must give {column.key} "
                             "(it has an onupdate)")
