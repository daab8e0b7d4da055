"""Access records: the requests resource servers authorised with advisor and guest tokens
(issue 14; the record format is the guard's, ``scopes.guard``).

A receiver client reports batches of records. Each record is checked on its own:

1. its shape (:func:`validate_record`): bounded strings, an area and action of
   ``scopes.catalog``, an HTTP method, a route template, a status 100–599, an RFC 3339 UTC
   time not in the future (beyond a small clock skew) — else ``invalid_record``;
2. its ownership (:meth:`AccessRecords.check_ownership`): the ``grant_id`` is the grant of a
   membership (in any state: a request authorised a moment before a removal is still a true
   record) of the claimed tenant (``unknown_grant``, ``grant_tenant_mismatch``), ``sub`` is
   that membership's advisor (``subject_mismatch``), and ``sid``, if given, is a token
   family of that grant (``unknown_grant``: the token the record names was never issued).

Accepted records are stored with one ``INSERT … ON CONFLICT (client_id, record_id) DO
NOTHING`` per batch (SQLite: a multi-row VALUES list; PostgreSQL: ``INSERT … SELECT FROM
unnest(arrays)``, one statement text for every batch, and the ownership read in one round
trip): the resource server's record id is its idempotency key,
so a batch sent again is stored once and its ids answered as duplicates. A refused record
is never stored; each refusal is audited (``access_record.refused``) in the claimed tenant
when that tenant exists.

The access log's groups (:class:`~idp_bridge.storage.models.AccessRecordGroup`: per tenant,
membership, area and action the count, first and last time, and the count per status) are
kept in the same transactions: the ingest adds the records its INSERT answered as stored (a
duplicate adds nothing), the retention sweep takes away the records its DELETE returned and
reads the group's new first and last from the records left. The log reads the newest groups
without counting the tenant's history.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from collections import Counter

from sqlalchemy import and_, bindparam, delete, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from scopes.catalog import ACTIONS, CATALOG

from . import audit
from ..storage.models import (AccessRecord, AccessRecordGroup, AccessRecordGroupStatus,
                              Membership, Tenant, TokenFamily, UTCDateTime)

log = logging.getLogger(__name__)

#: At most this many records in one batch (``POST /access-records``)...
MAX_BATCH = 1000
#: ... in a body of at most this many bytes: the ingest's own request limit (every other
#: endpoint keeps ``max_request_bytes``, 64 KiB by default). 1,000 records of the guard's
#: usual size (about 350 bytes) fit with room to spare; the guard ships at most 900 KiB.
MAX_BATCH_BYTES = 1024 * 1024
#: A batch is stored in transactions of at most this many records, so that a batch of 1,000
#: does not hold SQLite's one writer lock for the time of 1,000 (other writers, the token
#: endpoint's among them, wait that long); a batch sent again is stored once all the same
#: (the record id is the idempotency key).
TRANSACTION_RECORDS = 200
#: Records dated later than this ahead of the bridge's clock are refused.
CLOCK_SKEW = timedelta(minutes=5)
#: The refusal codes of the contract.
UNKNOWN_GRANT = "unknown_grant"
GRANT_TENANT_MISMATCH = "grant_tenant_mismatch"
SUBJECT_MISMATCH = "subject_mismatch"
INVALID_RECORD = "invalid_record"
REFUSALS = (UNKNOWN_GRANT, GRANT_TENANT_MISMATCH, SUBJECT_MISMATCH, INVALID_RECORD)

METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
#: Record ids, tenants, grants and sids: printable, no spaces, 1–64 characters.
_ID = re.compile(r"[A-Za-z0-9._~:@+=-]{1,64}")
#: A route template: a path (templates in ``<…>`` or ``{…}``), never a query or fragment.
_ROUTE = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/<>{}-]{0,199}")
#: RFC 3339 in UTC (``Z`` or ``+00:00``), seconds with an optional fraction.
_AT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|\+00:00)")


@dataclass(frozen=True, slots=True)
class Record:
    """A record whose shape is valid (its ownership is not checked yet)."""

    id: str
    tenant: str
    grant_id: str
    sid: str | None
    sub: str
    area: str
    action: str
    method: str
    route: str
    status: int
    at: datetime


@dataclass(frozen=True)
class IngestResult:
    accepted: list[str]
    duplicates: list[str]
    #: (record id or None where it was not a valid id, error code)
    refused: list[tuple[str | None, str]]


def record_id_of(raw) -> str | None:
    """The record's id when it is a valid one (refusals name it), else None."""
    value = raw.get("id") if isinstance(raw, dict) else None
    return value if isinstance(value, str) and _ID.fullmatch(value) else None


def validate_record(raw, now: datetime) -> Record | None:
    """The record ``raw`` (one element of the batch) if its shape is valid, else None.
    Unknown members are ignored (newer guards may send more)."""
    if not isinstance(raw, dict):
        return None
    record_id = record_id_of(raw)
    tenant, grant_id, sid, sub = (raw.get(k) for k in ("tenant", "grant_id", "sid", "sub"))
    area, action, method, route = (raw.get(k) for k in ("area", "action", "method", "route"))
    status, at = raw.get("status"), raw.get("at")
    if record_id is None or not _is_id(tenant) or not _is_id(grant_id) \
            or not (sid is None or _is_id(sid)):
        return None
    if not isinstance(sub, str) or not 0 < len(sub) <= 255 or not sub.isprintable():
        return None
    if area not in CATALOG or action not in ACTIONS or method not in METHODS:
        return None
    if not isinstance(route, str) or not _ROUTE.fullmatch(route):
        return None
    if type(status) is not int or not 100 <= status <= 599:
        return None
    when = _parse_at(at)
    if when is None or when > now + CLOCK_SKEW:
        return None
    return Record(id=record_id, tenant=tenant, grant_id=grant_id, sid=sid, sub=sub, area=area,
                  action=action, method=method, route=route, status=status, at=when)


def _is_id(value) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def _parse_at(value) -> datetime | None:
    if not isinstance(value, str) or not _AT.fullmatch(value):
        return None
    try:
        # Python parses at most microseconds: cut a longer fraction.
        head, _, rest = value.partition(".")
        if rest:
            digits = rest.rstrip("Z").removesuffix("+00:00")
            value = f"{head}.{digits[:6].ljust(6, '0')}+00:00"
        else:
            value = head.removesuffix("Z").removesuffix("+00:00") + "+00:00"
        return datetime.fromisoformat(value).astimezone(timezone.utc)
    except ValueError:
        return None


def _insert(dialect_insert):
    table = AccessRecord.__table__
    return dialect_insert(table).on_conflict_do_nothing(
        index_elements=[table.c.client_id, table.c.record_id]).returning(table.c.record_id,
                                                                          table.c.id)


_INSERT_SQLITE = _insert(sqlite.insert)

#: PostgreSQL: the batch as one JSON array of rows that the server unpacks
#: (``json_to_recordset``), so the statement text (and psycopg's prepared statement) is the
#: same for every batch whatever its size, and the rows cost one ``json.dumps`` instead of a
#: parameter each. A multi-row VALUES list is a new 1,400-parameter statement that psycopg
#: parses again for every batch (about 12 ms of CPU per 100 records).
# The access log's groups (storage/models.AccessRecordGroup) are counted by the database from
# the records a statement stored, in key order (concurrent writers lock the same groups in the
# same order), the statuses after the groups, as every writer of both tables does.
def _add_to_groups_sql(source: str, postgresql_: bool) -> tuple[str, str]:
    """The two upserts adding the records ``source`` (a FROM clause: fixed SQL of this
    module) to their groups and statuses."""
    least, greatest = ("least", "greatest") if postgresql_ else ("min", "max")
    groups = (
        "INSERT INTO access_record_groups (tenant_id, membership_id, area, action, subject,"
        " count, first_at, last_at) SELECT tenant_id, membership_id, area, action,"
        " max(subject), count(*), min(at), max(at) FROM " + source +
        " GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
        " ON CONFLICT (tenant_id, membership_id, area, action) DO UPDATE SET"
        " count = access_record_groups.count + excluded.count,"
        f" first_at = {least}(access_record_groups.first_at, excluded.first_at),"
        f" last_at = {greatest}(access_record_groups.last_at, excluded.last_at)")
    statuses = (
        "INSERT INTO access_record_group_statuses (tenant_id, membership_id, area, action,"
        " status, count) SELECT tenant_id, membership_id, area, action, status, count(*)"
        " FROM " + source + " GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5"
        " ON CONFLICT (tenant_id, membership_id, area, action, status) DO UPDATE SET"
        " count = access_record_group_statuses.count + excluded.count")
    return groups, statuses


#: The statuses' source waits for every group's upsert (the count over ``grouped``).
_PG_GROUPS_OF_STORED = _add_to_groups_sql(
    "stored, (SELECT count(*) FROM grouped) AS after_groups", True)
#: PostgreSQL: the batch in one statement: the records not stored yet, and the groups of
#: those it stored (grouped by the server, in key order; the statuses only after the
#: groups, as every writer of both takes their locks), returning the ids stored.
_INSERT_POSTGRESQL = text(
    "WITH stored AS (INSERT INTO access_records (client_id, received_at, record_id, tenant_id,"
    " membership_id, grant_id, sid, subject, area, action, method, route, status, at) "
    "SELECT :client_id, :received_at, r.* FROM json_to_recordset(CAST(:rows AS json)) AS r("
    "record_id text, tenant_id text, membership_id text, grant_id text, sid text,"
    " subject text, area text, action text, method text, route text, status integer,"
    " at timestamp) "
    "ON CONFLICT (client_id, record_id) DO NOTHING"
    " RETURNING record_id, tenant_id, membership_id, area, action, subject, status, at), "
    "grouped AS (" + _add_to_groups_sql("stored", True)[0] + " RETURNING 1), "
    "counted AS (" + _PG_GROUPS_OF_STORED[1] + ") "
    "SELECT record_id FROM stored"
).bindparams(bindparam("received_at", type_=UTCDateTime()))
#: Times in the JSON rows as the columns store them: UTC without an offset (``timestamp``,
#: so the server's TimeZone setting never shifts them).
_naive_utc = UTCDateTime().process_bind_param
#: PostgreSQL: the batch's memberships and token families in one round trip, by arrays.
_OWNERS_POSTGRESQL = text(
    "SELECT 'm' AS kind, grant_id, id, tenant_id, advisor_subject FROM memberships "
    "WHERE grant_id = ANY(CAST(:grants AS text[])) "
    "UNION ALL SELECT 'f', grant_id, sid, NULL, NULL FROM token_families "
    "WHERE sid = ANY(CAST(:sids AS text[]))")


@dataclass(frozen=True, slots=True)
class _Owner:
    id: str
    grant_id: str
    tenant_id: str
    advisor_subject: str


class AccessRecords:
    """Storing, checking and sweeping access records."""

    @staticmethod
    def check_ownership(session, records: list[Record]) -> tuple[dict[str, str], dict[str, str]]:
        """(membership id per accepted record id, refusal code per refused record id),
        reading the batch's memberships and families in two queries."""
        grants = sorted({r.grant_id for r in records})
        sids = sorted({r.sid for r in records if r.sid is not None})
        memberships, families = {}, {}
        if not grants:
            pass
        elif session.get_bind().dialect.name == "postgresql":
            for kind, grant_id, key, tenant_id, subject in session.execute(
                    _OWNERS_POSTGRESQL, {"grants": grants, "sids": sids}):
                if kind == "m":
                    memberships[grant_id] = _Owner(key, grant_id, tenant_id, subject)
                else:
                    families[key] = grant_id
        else:
            memberships = {row.grant_id: row for row in session.execute(
                select(Membership.id, Membership.grant_id, Membership.tenant_id,
                       Membership.advisor_subject).where(Membership.grant_id.in_(grants)))}
            if sids:
                families = dict(session.execute(select(TokenFamily.sid, TokenFamily.grant_id)
                                                .where(TokenFamily.sid.in_(sids))).all())
        owned, refused = {}, {}
        for r in records:
            m = memberships.get(r.grant_id)
            if m is None:
                refused[r.id] = UNKNOWN_GRANT
            elif m.tenant_id != r.tenant:
                refused[r.id] = GRANT_TENANT_MISMATCH
            elif m.advisor_subject != r.sub:
                refused[r.id] = SUBJECT_MISMATCH
            elif r.sid is not None and families.get(r.sid) != r.grant_id:
                refused[r.id] = UNKNOWN_GRANT
            else:
                owned[r.id] = m.id
        return owned, refused

    @staticmethod
    def store(session, client_id: str, records: list[Record], memberships: dict[str, str],
              now: datetime) -> list[str]:
        """Insert ``records`` (ownership checked: ``memberships`` maps their ids to their
        memberships) unless their (client, id) is stored already; returns the ids stored
        now. One statement for the batch."""
        if not records:
            return []
        if session.get_bind().dialect.name == "postgresql":
            # Only checked values reach the JSON, which json.dumps escapes; the server reads
            # it by the column types above.
            rows = json.dumps([
                {"record_id": r.id, "tenant_id": r.tenant, "membership_id": memberships[r.id],
                 "grant_id": r.grant_id, "sid": r.sid, "subject": r.sub, "area": r.area,
                 "action": r.action, "method": r.method, "route": r.route, "status": r.status,
                 "at": _naive_utc(r.at, None).isoformat()} for r in records])
            return list(session.execute(_INSERT_POSTGRESQL, {
                "client_id": client_id, "received_at": now, "rows": rows}).scalars())
        rows = [{"client_id": client_id, "record_id": r.id, "tenant_id": r.tenant,
                 "membership_id": memberships[r.id], "grant_id": r.grant_id, "sid": r.sid,
                 "subject": r.sub, "area": r.area, "action": r.action, "method": r.method,
                 "route": r.route, "status": r.status, "at": r.at, "received_at": now}
                for r in records]
        # SQLite: one statement compiled once; SQLAlchemy sends the rows as one multi-row
        # INSERT ("insertmanyvalues") and collects RETURNING of those inserted.
        stored = session.execute(_INSERT_SQLITE, rows).all()
        group_stored(session, [row.id for row in stored])
        return [row.record_id for row in stored]

    @staticmethod
    def ingest(session, client_id: str, raw_records: list, now: datetime) -> IngestResult:
        """Check and store one batch (a list of raw records; the service passes at most
        :data:`TRANSACTION_RECORDS` of a batch per transaction)."""
        valid, refused = [], []
        seen: set[str] = set()
        repeated: list[str] = []
        for raw in raw_records:
            record = validate_record(raw, now)
            if record is None:
                refused.append((record_id_of(raw), INVALID_RECORD, raw))
            elif record.id in seen:
                repeated.append(record.id)  # the same id twice in one batch: stored once
            else:
                seen.add(record.id)
                valid.append(record)
        owned, not_owned = AccessRecords.check_ownership(session, valid)
        accepted_records = [r for r in valid if r.id in owned]
        refused += [(r.id, not_owned[r.id], r) for r in valid if r.id in not_owned]
        stored = AccessRecords.store(session, client_id, accepted_records, owned, now)
        stored_set = set(stored)
        accepted = [r.id for r in accepted_records if r.id in stored_set]
        duplicates = [r.id for r in accepted_records if r.id not in stored_set]
        duplicates += [i for i in repeated if i in owned]
        refused += [(i, not_owned[i], None) for i in repeated if i in not_owned]
        if refused:
            AccessRecords._audit_refusals(session, client_id, refused, now)
        return IngestResult(accepted=accepted, duplicates=duplicates,
                            refused=[(i, code) for i, code, _ in refused])

    @staticmethod
    def _audit_refusals(session, client_id: str, refused, now: datetime) -> None:
        claimed = set()
        for _i, _code, source in refused:
            tenant = source.tenant if isinstance(source, Record) else \
                source.get("tenant") if isinstance(source, dict) else None
            if _is_id(tenant):
                claimed.add(tenant)
        existing = set(session.scalars(select(Tenant.id).where(Tenant.id.in_(sorted(claimed))))) \
            if claimed else set()
        for record_id, code, source in refused:
            tenant = source.tenant if isinstance(source, Record) else \
                source.get("tenant") if isinstance(source, dict) else None
            grant_id = source.grant_id if isinstance(source, Record) else \
                source.get("grant_id") if isinstance(source, dict) else None
            if tenant not in existing:
                log.warning("access record refused (%s) from client %s for no known tenant",
                            code, client_id)
                continue
            detail = {"error": code}
            if record_id is not None:
                detail["record_id"] = record_id
            if _is_id(grant_id):
                detail["grant_id"] = grant_id
            audit.record(session, "access_record.refused", now, tenant_id=tenant,
                         actor=client_id, actor_role="receiver", client_id=client_id,
                         **detail)

    @staticmethod
    def sweep(session, now: datetime, retention_days: int, *, batch: int = 10_000) -> int:
        """Delete records older than ``retention_days`` (by their time), at most ``batch``
        per call (the maintenance loop comes back); returns how many."""
        cutoff = now - timedelta(days=retention_days)
        ids = select(AccessRecord.id).where(AccessRecord.at < cutoff).limit(batch)
        table = AccessRecord.__table__
        deleted = session.execute(delete(table).where(table.c.id.in_(ids.scalar_subquery()))
                                  .returning(table.c.tenant_id, table.c.membership_id,
                                             table.c.area, table.c.action,
                                             table.c.status)).all()
        remove_from_groups(session, [tuple(row) for row in deleted])
        return len(deleted)

    @staticmethod
    def count(session, tenant_id: str) -> int:
        return session.scalar(select(func.count()).select_from(AccessRecord)
                              .where(AccessRecord.tenant_id == tenant_id)) or 0


# --- the access log's groups, kept with the records ---
_GROUPS = AccessRecordGroup.__table__
_STATUSES = AccessRecordGroupStatus.__table__
_KEY = (_GROUPS.c.tenant_id, _GROUPS.c.membership_id, _GROUPS.c.area, _GROUPS.c.action)
_STATUS_KEY = (_STATUSES.c.tenant_id, _STATUSES.c.membership_id, _STATUSES.c.area,
               _STATUSES.c.action)


_GROUP_BY_IDS = {
    "sqlite": tuple(text(sql) for sql in _add_to_groups_sql(
        "access_records WHERE id IN (SELECT value FROM json_each(:ids))", False)),
    "postgresql": tuple(text(sql) for sql in _add_to_groups_sql(
        "access_records WHERE id = ANY(CAST(:ids AS bigint[]))", True)),
}


def group_stored(session, ids: list[int]) -> None:
    """Add the stored records of row ids ``ids`` (stored in this transaction, not added
    before) to their groups: two statements, the grouping done by the database."""
    if not ids:
        return
    groups, statuses = _GROUP_BY_IDS[session.get_bind().dialect.name]
    if session.get_bind().dialect.name == "postgresql":
        params = {"ids": [int(i) for i in ids]}
    else:
        params = {"ids": json.dumps([int(i) for i in ids])}
    session.execute(groups, params)
    session.execute(statuses, params)


def remove_from_groups(session, deleted: list[tuple]) -> None:
    """Take deleted records (tenant, membership, area, action, status) away from their
    groups: their counts go down, a group (or status) left with none is deleted, and the
    first and last time of the others are read again from the records left (by the index
    of a group's records: two index seeks a group)."""
    if not deleted:
        return
    per_group = Counter(row[:4] for row in deleted)
    per_status = Counter(row[:5] for row in deleted)
    records = AccessRecord.__table__
    key = and_(*(column == bindparam(f"b_{column.name}") for column in _KEY))
    status_key = and_(*(column == bindparam(f"b_{column.name}") for column in _STATUS_KEY),
                      _STATUSES.c.status == bindparam("b_status"))
    of_group = and_(records.c.tenant_id == _GROUPS.c.tenant_id,
                    records.c.membership_id == _GROUPS.c.membership_id,
                    records.c.area == _GROUPS.c.area, records.c.action == _GROUPS.c.action)

    def params(k) -> dict:
        return {"b_tenant_id": k[0], "b_membership_id": k[1], "b_area": k[2],
                "b_action": k[3]}

    # The groups first, then their statuses, as the ingest does: a status row is only
    # written by a transaction holding its group's row, so on PostgreSQL a sweep and an
    # ingest wait for each other at most (no deadlock).
    group_rows = [{**params(k), "b_n": n} for k, n in sorted(per_group.items())]
    session.execute(update(_GROUPS).where(key).values(
        count=_GROUPS.c.count - bindparam("b_n"),
        first_at=func.coalesce(select(func.min(records.c.at)).where(of_group)
                               .scalar_subquery(), _GROUPS.c.first_at),
        last_at=func.coalesce(select(func.max(records.c.at)).where(of_group)
                              .scalar_subquery(), _GROUPS.c.last_at)), group_rows)
    status_rows = [{**params(k), "b_status": k[4], "b_n": n}
                   for k, n in sorted(per_status.items())]
    session.execute(update(_STATUSES).where(status_key)
                    .values(count=_STATUSES.c.count - bindparam("b_n")), status_rows)
    session.execute(delete(_STATUSES).where(status_key, _STATUSES.c.count <= 0), status_rows)
    session.execute(delete(_GROUPS).where(key, _GROUPS.c.count <= 0),
                    [params(k) for k in sorted(per_group)])


#: The groups recounted from the records (the migration's backfill does the same): for a
#: database whose records were written around the ingest (a benchmark's seed).
REBUILD_GROUPS = (
    "DELETE FROM access_record_group_statuses",
    "DELETE FROM access_record_groups",
    "INSERT INTO access_record_groups (tenant_id, membership_id, area, action, subject, count,"
    " first_at, last_at) SELECT tenant_id, membership_id, area, action, max(subject),"
    " count(*), min(at), max(at) FROM access_records"
    " GROUP BY tenant_id, membership_id, area, action",
    "INSERT INTO access_record_group_statuses (tenant_id, membership_id, area, action,"
    " status, count) SELECT tenant_id, membership_id, area, action, status, count(*)"
    " FROM access_records GROUP BY tenant_id, membership_id, area, action, status",
)


def rebuild_groups(connection) -> None:
    for statement in REBUILD_GROUPS:
        connection.execute(text(statement))
