"""The audit hash chain (issue 15 item 4; specified in docs/audit-chain.md).

Each tenant's audit events form a chain of their own (``tenant:<tenant id>``; events that
name no tenant form the ``system`` chain). Every event has a position ``seq`` (1, 2, … with
no gaps) and a ``hash``: SHA-256 over ``<prev>:<seq>:<digest>``, where ``prev`` is the hash
of the event before it (:data:`GENESIS` for seq 1) and ``digest`` the SHA-256 of the
canonical serialization of the event's fields (:func:`content_digest`, :func:`link`). Editing, removing or
reordering a stored event breaks the chain from that event on; the bridge's signed
checkpoints (:mod:`idp_bridge.domain.audit_checkpoints`) fix the chain heads in time, so that
removing the newest events shows too.

This module is the one definition of the serialization (:func:`canonical_json`,
:func:`event_hash`), used by the writer below, the migration that chained the events written
before (0015), the export and the verifier (:mod:`idp_bridge.domain.audit_verify`).

Writing (:func:`link_pending`): :func:`idp_bridge.domain.audit.record` only queues an event
on its session; just before the transaction commits, the queued events get their digests,
then their positions and links under the lock of their chain's row in ``audit_chain_heads``
(an upsert that advances ``seq`` and the head's hash: on PostgreSQL one statement that also
inserts the event, the row locked until the commit; on SQLite, which has one writer at a
time, the upsert returns the previous hash, Python links, the head takes the last hash).
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

from sqlalchemy import bindparam, insert, text

from ..storage.models import AuditEvent
from ..storage.plain import Plain

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
    if at.tzinfo is not timezone.utc:
        at = at.astimezone(timezone.utc)
    return at.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def canonical_json(value) -> str:
    """RFC 8785 (JCS) for the values audit events hold: objects with string keys sorted by
    their UTF-16 code units, no whitespace, strings escaped as ECMAScript's JSON.stringify
    does (``"`` ``\\``, controls as ``\\b \\t \\n \\f \\r`` or ``\\u00xx``, lone surrogates
    as ``\\udxxx``; everything else literal), integers in decimal. Fractional numbers and
    integers beyond 2**53-1 are refused (TypeError/ValueError): the bridge records none, and
    not every verifier would read them exactly."""
    if check(value):
        # Only ASCII keys: Python's sorting and escaping are JCS's then (its encoder leaves
        # lone surrogates raw, which JSON.stringify escapes).
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    else:
        text = _exact(value)
    if _LONE_SURROGATE.search(text):
        text = _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text


def check(value) -> bool:
    """Refuse what the serialization does not hold (TypeError, ValueError); True when every
    key is ASCII."""
    if value is None or value is True or value is False or isinstance(value, str):
        return True
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise ValueError("an integer beyond 2**53-1 in an audit event")
        return True
    if isinstance(value, dict):
        ascii_keys = True
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError("audit detail keys are strings")
            ascii_keys = check(item) and ascii_keys and key.isascii()
        return ascii_keys
    if isinstance(value, (list, tuple)):
        ascii_keys = True
        for item in value:
            ascii_keys = check(item) and ascii_keys
        return ascii_keys
    raise TypeError(f"{type(value).__name__} cannot be part of an audit event")


def _exact(value) -> str:
    """The serialization spelled out (keys with non-ASCII characters: sorted by UTF-16)."""
    if value is None or value is True or value is False or isinstance(value, int):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_exact(v) for v in value) + "]"
    return "{" + ",".join(f"{_exact(k)}:{_exact(value[k])}"
                          for k in sorted(value, key=_utf16)) + "}"


def _utf16(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def content_object(*, chain: str, values: dict) -> dict:
    """The object whose canonical JSON is the event's digest: ``v``, ``chain`` and the
    columns (:data:`FIELDS`; ``at`` a datetime or its :func:`format_time` text)."""
    at = values["at"]
    obj = {"v": VERSION, "chain": chain}
    for name, column in FIELDS:
        obj[name] = values.get(column)
    obj["at"] = format_time(at) if isinstance(at, datetime) else at
    return obj


def content_digest(*, chain: str, values: dict) -> str:
    """Lower-case hex SHA-256 of the UTF-8 canonical JSON of :func:`content_object` (lone
    surrogates, escaped by the serialization, never reach the encoder)."""
    text = canonical_json(content_object(chain=chain, values=values))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def link(prev: str, seq: int, digest: str) -> str:
    """The event's ``hash``: lower-case hex SHA-256 of the ASCII text ``<prev>:<seq>:<digest>``
    (PostgreSQL computes the same in the statement that appends the event)."""
    return hashlib.sha256(f"{prev}:{seq}:{digest}".encode("ascii")).hexdigest()


def event_hash(*, chain: str, seq: int, prev: str, values: dict) -> str:
    return link(prev, seq, content_digest(chain=chain, values=values))


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
        chain = chain_of(values["tenant_id"])
        # The digest before any lock: under the lock only the link is made.
        chains.setdefault(chain, []).append(
            {**values, "chain": chain, "digest": content_digest(chain=chain, values=values)})
    if connection.dialect.name == "postgresql":
        for chain in sorted(chains):
            for row in chains[chain]:
                connection.execute(_APPEND_POSTGRESQL, row)
        return
    # SQLite (one writer at a time): advance the head, link in Python, write.
    cursor = connection.connection.driver_connection.cursor()
    try:
        rows = []
        for chain in sorted(chains):
            events = chains[chain]
            cursor.execute(_ADVANCE_SQLITE, (chain, len(events), GENESIS))
            last_seq, prev = cursor.fetchone()
            seq = last_seq - len(events)
            for row in events:
                seq += 1
                prev = link(prev, seq, row.pop("digest"))
                rows.append({**row, "seq": seq, "hash": prev})
            cursor.execute(_SET_HEAD_SQLITE, (prev, chain))
    finally:
        cursor.close()
    _INSERT_EVENT.run_many(session, rows)


_COLUMNS = ("at", "tenant_id", "event", "actor", "actor_role", "membership_id", "client_id",
            "detail", "chain")
#: PostgreSQL, one statement (one round trip) per event: the upsert advances the head and
#: makes the link from the head's hash (:func:`link` in SQL), the insert writes the event
#: with the position and hash it returned. The conflict path locks and updates the newest
#: committed version of the head row (also after waiting for another writer's commit), so
#: the link is always made from the committed head; the lock is held until the commit.
_LINK_SQL = ("encode(sha256(convert_to({prev} || ':' || ({seq})::text || ':' || :digest, "
             "'UTF8')), 'hex')")
_APPEND_POSTGRESQL = text(
    "WITH head AS (INSERT INTO audit_chain_heads AS h (chain, seq, hash) VALUES (:chain, 1, "
    + _LINK_SQL.format(prev=f"'{GENESIS}'", seq="1")
    + ") ON CONFLICT (chain) DO UPDATE SET seq = h.seq + 1, hash = "
    + _LINK_SQL.format(prev="h.hash", seq="h.seq + 1")
    + " RETURNING h.seq, h.hash) "
    f"INSERT INTO audit_events ({', '.join(_COLUMNS)}, seq, hash) "
    f"SELECT {', '.join(':' + c for c in _COLUMNS)}, head.seq, head.hash FROM head"
).bindparams(*(bindparam(c, type_=AuditEvent.__table__.c[c].type) for c in _COLUMNS))
#: SQLite: ``… ON CONFLICT (chain) DO UPDATE SET seq = seq + count RETURNING seq, hash``: the
#: chain's new last position and the hash before this transaction's first event (GENESIS
#: for a new chain); the driver's cursor (plain text and numbers) on the transaction's own
#: connection.
_ADVANCE_SQLITE = ("INSERT INTO audit_chain_heads (chain, seq, hash) VALUES (?, ?, ?) "
                   "ON CONFLICT (chain) DO UPDATE SET seq = audit_chain_heads.seq + excluded.seq "
                   "RETURNING seq, hash")
_SET_HEAD_SQLITE = "UPDATE audit_chain_heads SET hash = ? WHERE chain = ?"
#: Run on the driver's cursor (storage/plain.py): the hot path's last statement.
_INSERT_EVENT = Plain(insert(AuditEvent.__table__))


# --- the export format (docs/audit-chain.md, "The export") ---------------------------------
#: ``format`` of an exported chain (JSON).
FORMAT = "idp-bridge-audit-chain/1"
#: The CSV's columns, in order (one event a row, after a header row of these names).
CSV_COLUMNS = ("seq", "prev", "hash", "at", "event", "tenant", "actor", "actor_role",
               "membership_id", "client_id", "detail", "id")
#: A cell starting with one of these (or with whitespace) gets an apostrophe in front, so
#: that no spreadsheet runs it as a formula; an empty string is written as a lone
#: apostrophe, None as an empty cell. A reader drops one leading apostrophe.
CSV_QUOTED_STARTS = frozenset("=+-@|\"'\uff1d\uff0b\uff0d\uff20\uff5c")


def exported_event(row, prev: str | None) -> dict:
    """An event as the export shows it: the hashed fields (``tenant`` for the column
    ``tenant_id``, ``at`` as :func:`format_time`), ``seq``, ``prev``, ``hash`` and the
    bridge's row ``id`` (not hashed)."""
    return {"seq": row.seq, "prev": prev, "hash": row.hash, "at": format_time(row.at),
            "event": row.event, "tenant": row.tenant_id, "actor": row.actor,
            "actor_role": row.actor_role, "membership_id": row.membership_id,
            "client_id": row.client_id, "detail": row.detail, "id": row.id}


def csv_cells(event: dict) -> list[str]:
    """One exported event as CSV cells (:data:`CSV_COLUMNS`)."""
    cells = []
    for column in CSV_COLUMNS:
        value = event.get(column)
        if column == "detail":
            value = None if value is None else canonical_json(value)
        cells.append(_csv_cell(value))
    return cells


def _csv_cell(value) -> str:
    if value is None:
        return ""
    text = str(value)
    if text == "" or text[0] in CSV_QUOTED_STARTS or text[0].isspace():
        return "'" + text
    return text
