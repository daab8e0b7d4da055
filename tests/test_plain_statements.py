"""idp_bridge.storage.plain: Core statements run on the driver's cursor (the token endpoint's
hot path) give what SQLAlchemy's own execution gives — the same stored values, the same
processed results, the same exceptions — and refuse what they cannot do the same way."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import (JSON, Column, Integer, MetaData, String, Table, bindparam, func,
                        insert, select, update)
from sqlalchemy.exc import IntegrityError

from idp_bridge.storage import plain
from idp_bridge.storage.models import UTCDateTime
from idp_bridge.storage.plain import Plain

metadata = MetaData()
things = Table(
    "plain_test_things", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", String(40), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("detail", JSON),
)
defaulted = Table(
    "plain_test_defaulted", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("kind", String(10), nullable=False, default="plain"),
    Column("touched", Integer, onupdate=lambda: 1),
)

AT = datetime(2026, 12, 4, 10, 42, 7, 123456, tzinfo=timezone.utc)
DETAIL = {"scopes": ["ebics:read", "payments:read"], "n": 3, "nested": {"ok": True}}

INSERT = Plain(insert(things))
BY_ID = Plain(select(things.c.id, things.c.name, things.c.at, things.c.detail)
              .where(things.c.id == bindparam("id")))
NEWEST = Plain(select(things.c.id, things.c.at).where(things.c.at >= bindparam("since"))
               .order_by(things.c.at.desc()).limit(bindparam("n")))
RENAME = Plain(update(things).where(things.c.id == bindparam("b_id"))
               .values(name=bindparam("b_name")))


@pytest.fixture
def db(bridge):
    db = bridge.services.db
    metadata.create_all(db.write_engine)
    yield db
    metadata.drop_all(db.write_engine)


def stored(db) -> list[tuple]:
    """The table as SQLAlchemy's own execution reads it."""
    with db.read() as session:
        return [tuple(row) for row in session.execute(
            select(things.c.id, things.c.name, things.c.at, things.c.detail)
            .order_by(things.c.id))]


def test_values_round_trip_as_through_sqlalchemy(db):
    with db.transaction() as session:
        INSERT.run(session, {"id": 1, "name": "plain", "at": AT, "detail": DETAIL})
        session.execute(insert(things), {"id": 2, "name": "core", "at": AT, "detail": DETAIL})
    # Written by either path, read by SQLAlchemy: the same values.
    assert stored(db) == [(1, "plain", AT, DETAIL), (2, "core", AT, DETAIL)]
    # Read by Plain: the same processed values (aware UTC datetimes, decoded JSON) as named
    # tuples.
    with db.read() as session:
        for n in (1, 2):
            row = BY_ID.first(session, {"id": n})
            assert tuple(row) == stored(db)[n - 1]
            assert row.at.tzinfo is timezone.utc and row.detail == DETAIL
        assert BY_ID.first(session, {"id": 3}) is None
        rows = NEWEST.rows(session, {"since": AT - timedelta(days=1), "n": 1})
        assert [tuple(r) for r in rows] == [(1, AT)]


def test_an_update_changes_the_rows_it_matches_and_says_how_many(db):
    with db.transaction() as session:
        INSERT.run(session, {"id": 1, "name": "a", "at": AT, "detail": None})
        assert RENAME.run(session, {"b_id": 1, "b_name": "b"}) == 1
        assert RENAME.run(session, {"b_id": 9, "b_name": "c"}) == 0
    assert stored(db) == [(1, "b", AT, None)]


def test_a_naive_datetime_is_refused_as_sqlalchemy_refuses_it_and_nothing_is_stored(db):
    with pytest.raises(Exception) as through_plain:
        with db.transaction() as session:
            INSERT.run(session, {"id": 1, "name": "x", "at": AT.replace(tzinfo=None),
                                 "detail": None})
    assert "naive datetime" in str(through_plain.value)
    assert stored(db) == []


def test_a_duplicate_key_raises_sqlalchemys_integrity_error_and_rolls_back(db):
    with db.transaction() as session:
        INSERT.run(session, {"id": 1, "name": "first", "at": AT, "detail": None})
    with pytest.raises(IntegrityError):
        with db.transaction() as session:
            INSERT.run(session, {"id": 2, "name": "second", "at": AT, "detail": None})
            INSERT.run(session, {"id": 1, "name": "again", "at": AT, "detail": None})
    # The whole transaction is gone, the row before it unchanged.
    assert stored(db) == [(1, "first", AT, None)]
    with pytest.raises(IntegrityError):
        with db.transaction() as session:
            INSERT.run_many(session, [{"id": 3, "name": "c", "at": AT, "detail": None},
                                      {"id": 1, "name": "d", "at": AT, "detail": None}])
    assert stored(db) == [(1, "first", AT, None)]


def test_run_many_inserts_every_row(db):
    with db.transaction() as session:
        INSERT.run_many(session, [{"id": n, "name": f"n{n}", "at": AT + timedelta(seconds=n),
                                   "detail": {"n": n}} for n in range(1, 4)])
        INSERT.run_many(session, [])
    assert stored(db) == [(n, f"n{n}", AT + timedelta(seconds=n), {"n": n})
                          for n in range(1, 4)]


def test_statements_it_cannot_run_as_sqlalchemy_would_are_refused_before_running(db):
    with db.transaction() as session:
        # A Python-side default SQLAlchemy would have filled in.
        with pytest.raises(ValueError, match="kind"):
            Plain(insert(defaulted)).run(session, {"id": 1})
        # An onupdate SQLAlchemy would have applied.
        with pytest.raises(ValueError, match="touched"):
            Plain(update(defaulted).where(defaulted.c.id == bindparam("b_id"))
                  .values(kind="x")).run(session, {"b_id": 1})
        # Expanding IN (a list rendered at execution).
        with pytest.raises(ValueError, match="expanding"):
            Plain(select(things.c.id).where(things.c.id.in_(bindparam("ids", expanding=True)))
                  ).rows(session, {"ids": [1, 2]})
        # A required parameter not given.
        with pytest.raises(KeyError):
            BY_ID.first(session, {})
        # Given in full, the default columns are accepted.
        Plain(insert(defaulted)).run(session, {"id": 1, "kind": "given", "touched": None})
    with db.read() as session:
        assert session.execute(select(defaulted.c.id, defaulted.c.kind)).all() == [(1, "given")]
    assert stored(db) == []


def test_the_driver_connection_is_the_transactions_and_is_forgotten_after_it(db):
    with db.transaction() as session:
        INSERT.run(session, {"id": 1, "name": "a", "at": AT, "detail": None})
        assert plain._DRIVER in session.info
        # The same transaction: SQLAlchemy sees the row Plain wrote before the commit.
        assert session.scalar(select(func.count()).select_from(things)) == 1
    assert plain._DRIVER not in session.info
    with db.read() as session:
        assert BY_ID.first(session, {"id": 1}).name == "a"
    assert plain._DRIVER not in session.info


def test_observers_are_told_each_statement_while_observing(db):
    seen: list[str] = []
    with plain.observe(seen.append):
        with db.transaction() as session:
            INSERT.run(session, {"id": 1, "name": "a", "at": AT, "detail": None})
            BY_ID.first(session, {"id": 1})
    with db.read() as session:
        BY_ID.first(session, {"id": 1})
    assert [s.split()[0] for s in seen] == ["INSERT", "SELECT"]
    assert all("plain_test_things" in s for s in seen)
