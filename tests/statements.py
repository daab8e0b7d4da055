"""Counting the statements a request sends to the database: those SQLAlchemy executes
(``before_cursor_execute``) and those the hot path runs on the driver's cursor
(:func:`idp_bridge.storage.plain.observe`)."""

from __future__ import annotations

from contextlib import contextmanager

from sqlalchemy import event

from idp_bridge.storage import plain


@contextmanager
def recorded(db):
    """A list that collects the SQL of every statement sent while in this block, each with
    its whitespace folded and in upper case."""
    seen: list[str] = []

    def note(statement: str) -> None:
        seen.append(" ".join(statement.split()).upper())

    def before(conn, cursor, statement, parameters, context, executemany):
        note(statement)

    engines = {db.engine, db.write_engine}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", before)
    try:
        with plain.observe(note):
            yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", before)
