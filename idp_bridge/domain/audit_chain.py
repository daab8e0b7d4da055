"""The audit hash chain (issue 15 item 4; specified in docs/audit-chain.md).

Each tenant's audit events form a chain of their own (``tenant:<tenant id>``; events that
name no tenant form the ``system`` chain). Every event has a position ``seq`` (1, 2, … with
no gaps) and a ``hash``: SHA-256 over the canonical serialization of its fields and of
``prev``, the hash of the event before it (:data:`GENESIS` for seq 1). Editing, removing or
reordering a stored event breaks the chain from that event on; the bridge's signed
checkpoints (:mod:`idp_bridge.domain.audit_checkpoints`) fix the chain heads in time, so that
removing the newest events shows too.

This module is the one definition of the serialization (:func:`canonical_json`,
:func:`event_hash`), used by the writer below, the migration that chained the events written
before (0015), the export and the verifier (:mod:`idp_bridge.domain.audit_verify`).

Writing (:func:`link_pending`): :func:`idp_bridge.domain.audit.record` only queues an event
on its session; just before the transaction commits, the queued events of each chain get
their positions under the lock of the chain's row in ``audit_chain_heads`` (an upsert that
advances ``seq`` and returns the previous head's hash; PostgreSQL holds that row lock until
the commit, SQLite has one writer anyway), are inserted, and the head takes the last hash.
Taking the head lock last, in sorted chain order, keeps it short and free of deadlocks: a
transaction holds it only for its last statements, and two transactions never wait for each
other's heads in opposite orders. Two writers can never give out one position twice (and a
unique index on ``(chain, seq)`` would refuse it if they did): the chain does not fork.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone

from sqlalchemy import bindparam, insert, update
from sqlalchemy.dialects import postgresql, sqlite

from ..storage.models import AuditChainHead, AuditEvent

#: ``prev`` of each chain's first event.
GENESIS = "0" * 64
#: The version of the serialization below (``v`` in every hashed object).
VERSION = 1
SYSTEM_CHAIN = "system"
#: The hashed fields of an event besides ``v``, ``chain``, ``seq`` and ``prev``, with the
#: column each comes from.
FIELDS = (("at", "at"), ("event", "event"), ("tenant", "tenant_id"), ("actor", "actor"),
          ("actor_role", "actor_role"), ("membership_id", "membership_id"),
          ("client_id", "client_id"), ("detail", "detail"))
#: Integers beyond this are not exact in every JSON implementation (RFC 8785 3.2.2.3).
MAX_SAFE_INTEGER = 2 ** 53 - 1
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def chain_of(tenant_id: str | None) -> str:
    return f"tenant:{tenant_id}" if tenant_id is not None else SYSTEM_CHAIN


def format_time(at: datetime) -> str:
    """RFC 3339 in UTC with microseconds: ``2026-12-03T08:55:39.123456Z`` (always six
    digits; the database keeps microseconds on SQLite and PostgreSQL)."""
    if at.tzinfo is None:
        raise ValueError("audit times are aware datetimes")
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(value) -> str:
    """RFC 8785 (JCS) for the values audit events hold: objects with string keys sorted by
    their UTF-16 code units, no whitespace, strings escaped as ECMAScript's JSON.stringify
    does (``"`` ``\\``, controls as ``\\b \\t \\n \\f \\r`` or ``\\u00xx``, lone surrogates as
    ``\\udxxx``; everything else literal), integers in decimal. Fractional numbers and
    integers beyond 2**53-1 are refused (TypeError/ValueError): the bridge records none, and
    not every verifier would read them exactly."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise ValueError("an integer beyond 2**53-1 in an audit event")
        return str(value)
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(canonical_json(v) for v in value) + "]"
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise TypeError("audit detail keys are strings")
        keys = sorted(value, key=_utf16)
        return "{" + ",".join(f"{canonical_json(k)}:{canonical_json(value[k])}"
                              for k in keys) + "}"
    raise TypeError(f"{type(value).__name__} cannot be part of an audit event")


def _utf16(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def hashed_object(*, chain: str, seq: int, prev: str, values: dict) -> dict:
    """The object whose canonical JSON is hashed; ``values`` holds the columns (``at`` a
    datetime or its :func:`format_time` text)."""
    at = values["at"]
    obj = {"v": VERSION, "chain": chain, "seq": seq, "prev": prev}
    for name, column in FIELDS:
        obj[name] = values.get(column)
    obj["at"] = format_time(at) if isinstance(at, datetime) else at
    return obj


def event_hash(*, chain: str, seq: int, prev: str, values: dict) -> str:
    """Lower-case hex SHA-256 of the UTF-8 canonical JSON of :func:`hashed_object`
    (lone surrogates, escaped by the serialization, never reach the encoder)."""
    text = canonical_json(hashed_object(chain=chain, seq=seq, prev=prev, values=values))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- writing -------------------------------------------------------------------------------
PENDING = "idp_bridge.audit_pending"


def queue(session, values: dict) -> None:
    """Queue an event (its column values) on ``session``; :func:`link_pending` writes it
    when the transaction commits, nothing when it rolls back."""
    pending = session.info.get(PENDING)
    if pending is None:
        pending = session.info[PENDING] = []
    pending.append(values)


def discard_pending(session) -> None:
    session.info.pop(PENDING, None)


def link_pending(session) -> None:
    """Write the queued events of ``session`` into their chains (see the module doc).
    Called just before the commit (``before_commit``)."""
    pending = session.info.pop(PENDING, None)
    if not pending:
        return
    if session.new or session.dirty or session.deleted:
        session.flush()  # the transaction's own rows first: the head lock is taken last
    connection = session.connection()
    chains: dict[str, list[dict]] = {}
    for values in pending:
        chains.setdefault(chain_of(values["tenant_id"]), []).append(values)
    advance = _ADVANCE[connection.dialect.name == "postgresql"]
    rows = []
    for chain in sorted(chains):
        events = chains[chain]
        last_seq, prev = connection.execute(advance, {
            "chain": chain, "count": len(events), "genesis": GENESIS}).one()
        seq = last_seq - len(events)
        for values in events:
            seq += 1
            prev = event_hash(chain=chain, seq=seq, prev=prev, values=values)
            rows.append({**values, "chain": chain, "seq": seq, "hash": prev})
        connection.execute(_SET_HEAD_HASH, {"head_chain": chain, "head_hash": prev})
    connection.execute(_INSERT_EVENT, rows)


def _advance_statement(dialect):
    """``INSERT … ON CONFLICT (chain) DO UPDATE SET seq = seq + :count RETURNING seq, hash``:
    the chain's new last position and the hash of the event before this transaction's
    first (GENESIS for a new chain). On PostgreSQL the conflict path locks and updates the
    newest committed version of the row (also after waiting for another writer's commit),
    so the hash returned is always the committed head's."""
    heads = AuditChainHead.__table__
    return dialect.insert(heads).values(
        chain=bindparam("chain"), seq=bindparam("count"), hash=bindparam("genesis"),
    ).on_conflict_do_update(
        index_elements=[heads.c.chain], set_={"seq": heads.c.seq + bindparam("count")},
    ).returning(heads.c.seq, heads.c.hash)


_ADVANCE = {True: _advance_statement(postgresql), False: _advance_statement(sqlite)}
_SET_HEAD_HASH = update(AuditChainHead.__table__).where(
    AuditChainHead.__table__.c.chain == bindparam("head_chain")).values(
    hash=bindparam("head_hash"))
_INSERT_EVENT = insert(AuditEvent.__table__)
