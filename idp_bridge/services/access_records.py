"""Use cases of access records (issue 14): a receiver client's ingest, and what a tenant's
admins read from them — the access log's groups ("bob read EBICS — 3 requests,
10:42–10:44"), the single requests of a group, and who is active in the tenant now.

``ingest`` is a machine use case: its caller is the authenticated receiver client (the view
authenticated it), not an upstream identity. The reads authorise the caller as an admin of
the tenant first and return plain values; people are named as everywhere else
(:meth:`~idp_bridge.domain.people.People.labels`, then the name of the advisor's own sign-in).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import String, and_, cast, func, or_, select

from ..domain.access_records import (MAX_BATCH, TRANSACTION_RECORDS,
                                      AccessRecords as Records, IngestResult)
from ..domain.errors import InvalidInput
from ..domain.memberships import advisor_names
from ..storage.db import utcnow
from ..storage.models import (AccessRecord, AccessRecordGroup, AccessRecordGroupStatus, Client,
                              Membership)

#: "Active now": records within this long before now.
ACTIVE_WINDOW = timedelta(minutes=5)
#: The most groups one summary answers (the newest by their last request).
MAX_GROUPS = 500


class BatchRefused(InvalidInput):
    """A malformed batch (not an object, ``records`` not a list, too many records): 400
    ``invalid_request``, nothing stored."""


@dataclass(frozen=True)
class AccessQuery:
    """Filters of the access records: an advisor (name, username, e-mail or subject, as
    typed) or an exact ``subject``, a membership, an area and action of the catalog, a first
    and last day (in the service's time zone) and/or a time range (``start`` inclusive,
    ``end`` inclusive: a group's first and last request, for its drill-down)."""

    advisor: str | None = None
    subject: str | None = None
    membership_id: str | None = None
    area: str | None = None
    action: str | None = None
    since: date | None = None
    until: date | None = None
    start: datetime | None = None
    end: datetime | None = None


@dataclass(frozen=True)
class AccessGroup:
    """The requests of one advisor (membership) in one area with one action."""

    subject: str
    #: What to call the advisor (directory label, their own sign-in's name, else None).
    advisor_name: str | None
    membership_id: str
    area: str
    action: str
    count: int
    first_at: datetime
    last_at: datetime
    #: Response status -> how many requests answered it.
    statuses: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class AccessRequest:
    id: int
    at: datetime
    subject: str
    advisor_name: str | None
    membership_id: str
    area: str
    action: str
    method: str
    route: str
    status: int
    #: The receiver client (resource server) that reported it, and its name (None when
    #: the client has none).
    client_id: str
    client_name: str | None
    grant_id: str
    sid: str | None
    received_at: datetime

    @property
    def client_label(self) -> str:
        """What to call the resource server: its client's name, else the client id."""
        return self.client_name or self.client_id


@dataclass(frozen=True)
class ActiveAdvisor:
    subject: str
    advisor_name: str | None
    membership_id: str
    #: The membership is live (not ended): the page offers "end access now".
    live: bool
    #: Areas with requests in the window, in catalog order.
    areas: tuple[str, ...]
    count: int
    last_at: datetime


@dataclass(frozen=True)
class RequestPage:
    requests: list[AccessRequest]
    #: Pass as ``before_id`` for the next (older) page; None on the last page.
    next_before_id: int | None


class AccessRecordsService:
    def __init__(self, *, db, authorize, memberships, people, timezone: str, listeners=()):
        self.db = db
        self.authorize = authorize
        self.memberships = memberships
        self.people = people
        self.timezone = timezone
        #: Called as ``listener(session, client_id, accepted_record_ids, now)`` in the
        #: ingest's transaction (the first-access notification).
        self.listeners = list(listeners)

    # --- ingest (the receiver client) ---
    def ingest(self, client_id: str, body) -> IngestResult:
        """Store a batch ``{"records": [...]}`` of the receiver client ``client_id``
        (authenticated by the view). Records are accepted, duplicates (stored before) or
        refused one by one; a malformed batch raises :class:`BatchRefused`."""
        if not isinstance(body, dict):
            raise BatchRefused("the request body must be a JSON object")
        records = body.get("records")
        if not isinstance(records, list):
            raise BatchRefused("records must be a list")
        if len(records) > MAX_BATCH:
            raise BatchRefused(f"at most {MAX_BATCH} records in one batch")
        now = utcnow()
        accepted, duplicates, refused = [], [], []
        # In transactions of at most TRANSACTION_RECORDS (SQLite's writer lock is held for
        # one of them, not for the whole batch). Should a later one fail, the earlier ones
        # stay stored: the resource server sends the batch again, and those come back as
        # duplicates.
        for start in range(0, len(records), TRANSACTION_RECORDS):
            part = records[start:start + TRANSACTION_RECORDS]
            with self.db.transaction() as session:
                result = Records.ingest(session, client_id, part, now)
                for listener in self.listeners:
                    listener(session, client_id, result.accepted, now)
            accepted += result.accepted
            duplicates += result.duplicates
            refused += result.refused
        return IngestResult(accepted=accepted, duplicates=duplicates, refused=refused)

    # --- the tenant admins' reads ---
    def access_summary(self, caller, tenant_id: str, query: AccessQuery, *,
                       limit: int = MAX_GROUPS) -> list[AccessGroup]:
        """The tenant's records grouped per advisor (membership), area and action, newest
        group (by its last request) first, at most ``limit`` (1 to :data:`MAX_GROUPS`).

        Without a time filter the groups are read as the ingest and the sweep keep them
        (:class:`~idp_bridge.storage.models.AccessRecordGroup`): the newest ``limit`` by
        their last request and their statuses, whatever the tenant's history. A day or time
        filter counts the records in that range."""
        self.authorize.tenant_admin(caller, tenant_id)
        limit = max(1, min(int(limit), MAX_GROUPS))
        if not (query.since or query.until or query.start or query.end):
            return self._kept_groups(tenant_id, query, limit)
        with self.db.read() as session:
            self.memberships.tenant(session, tenant_id)
            conditions = self._conditions(session, tenant_id, query)
            # Grouped in the database, newest group first, and only the groups shown leave
            # it: with 10,000 records in a tenant, grouping them here (one row per status of
            # every group) cost more than the rest of the page. The statuses of a group come
            # as one "status:count,..." text.
            per_status = (select(AccessRecord.membership_id, AccessRecord.subject,
                                 AccessRecord.area, AccessRecord.action, AccessRecord.status,
                                 func.count().label("n"),
                                 func.min(AccessRecord.at).label("first"),
                                 func.max(AccessRecord.at).label("last"))
                          .where(*conditions)
                          # Not by membership first: SQLite would then read the rows through
                          # the drill-down's index (in membership order) instead of the
                          # covering (tenant, time, ...) index alone.
                          .group_by(AccessRecord.subject, AccessRecord.area,
                                    AccessRecord.action, AccessRecord.status,
                                    AccessRecord.membership_id).subquery())
            c = per_status.c
            status_text = cast(c.status, String) + ":" + cast(c.n, String)
            statuses = (func.string_agg(status_text, ",")
                        if session.get_bind().dialect.name == "postgresql"
                        else func.group_concat(status_text, ","))
            last = func.max(c.last)
            rows = session.execute(
                select(c.membership_id, c.subject, c.area, c.action, func.sum(c.n),
                       func.min(c.first), last, statuses)
                .group_by(c.membership_id, c.subject, c.area, c.action)
                .order_by(last.desc(), c.subject.desc(), c.area.desc(), c.action.desc())
                .limit(limit)).all()
            names = self._names(session, tenant_id, {row[1] for row in rows})
        found = []
        for membership_id, subject, area, action, count, first, last_at, text in rows:
            counted = {}
            for part in (text or "").split(","):
                status, _, n = part.partition(":")
                if status:
                    counted[int(status)] = counted.get(int(status), 0) + int(n)
            found.append(AccessGroup(
                subject=subject, advisor_name=names.get(subject), membership_id=membership_id,
                area=area, action=action, count=int(count), first_at=_utc(first),
                last_at=_utc(last_at), statuses=dict(sorted(counted.items()))))
        found.sort(key=lambda g: (g.last_at, g.subject, g.area, g.action), reverse=True)
        return found[:limit]

    def _kept_groups(self, tenant_id: str, query: AccessQuery, limit: int) -> list[AccessGroup]:
        """The newest ``limit`` groups as kept with the records, and their statuses: two
        bounded reads (the tenant's groups by their last request, then the statuses of
        those shown)."""
        G, S = AccessRecordGroup, AccessRecordGroupStatus
        with self.db.read() as session:
            self.memberships.tenant(session, tenant_id)
            conditions = self._conditions(session, tenant_id, query, table=G)
            rows = session.execute(
                select(G.membership_id, G.subject, G.area, G.action, G.count,
                       G.first_at, G.last_at).where(*conditions)
                .order_by(G.last_at.desc(), G.subject.desc(), G.area.desc(), G.action.desc())
                .limit(limit)).all()
            statuses: dict[tuple, dict[int, int]] = {}
            if rows:
                # The statuses of the memberships shown (a membership has a group per area
                # and action at most), by the statuses' key.
                for membership_id, area, action, status, n in session.execute(
                        select(S.membership_id, S.area, S.action, S.status, S.count)
                        .where(S.tenant_id == tenant_id,
                               S.membership_id.in_({row[0] for row in rows}))):
                    statuses.setdefault((membership_id, area, action), {})[status] = int(n)
            names = self._names(session, tenant_id, {row[1] for row in rows})
        return [AccessGroup(
            subject=subject, advisor_name=names.get(subject), membership_id=membership_id,
            area=area, action=action, count=int(count), first_at=_utc(first),
            last_at=_utc(last), statuses=dict(sorted(
                statuses.get((membership_id, area, action), {}).items())))
            for membership_id, subject, area, action, count, first, last in rows]

    def access_requests(self, caller, tenant_id: str, query: AccessQuery, *,
                        before_id: int | None = None, limit: int = 50) -> RequestPage:
        """Single records, newest first (by their time, then id), ``limit`` (1–500) per
        page; ``before_id`` is the last record of the previous page.

        The page goes on after that record in the same order, by its (time, id): records
        arrive late (a resource server's spool shipped after an outage of the bridge or a
        restart of the server), so a newer id can have an older time, and the id alone
        would skip those and repeat others."""
        self.authorize.tenant_admin(caller, tenant_id)
        limit = max(1, min(int(limit), 500))
        with self.db.read() as session:
            self.memberships.tenant(session, tenant_id)
            conditions = self._conditions(session, tenant_id, query)
            if before_id is not None:
                # Beyond the 64-bit ids no row is newer: no bound (and no overflow).
                if before_id <= 0:
                    return RequestPage([], None)
                if before_id < 2 ** 63:
                    after = session.scalar(select(AccessRecord.at).where(
                        AccessRecord.id == before_id, AccessRecord.tenant_id == tenant_id))
                    if after is None:
                        # Not a record of this tenant, or swept since (the retention sweep
                        # deletes the oldest: nothing older than it is left either).
                        return RequestPage([], None)
                    conditions.append(or_(AccessRecord.at < after, and_(
                        AccessRecord.at == after, AccessRecord.id < before_id)))
            rows = session.scalars(select(AccessRecord).where(*conditions)
                                   .order_by(AccessRecord.at.desc(), AccessRecord.id.desc())
                                   .limit(limit + 1)).all()
            names = self._names(session, tenant_id, {r.subject for r in rows})
            clients = dict(session.execute(select(Client.client_id, Client.name).where(
                Client.client_id.in_(sorted({r.client_id for r in rows})))).all()) \
                if rows else {}
        more = len(rows) > limit
        rows = rows[:limit]
        requests = [AccessRequest(
            id=r.id, at=r.at, subject=r.subject, advisor_name=names.get(r.subject),
            membership_id=r.membership_id, area=r.area, action=r.action, method=r.method,
            route=r.route, status=r.status, client_id=r.client_id,
            client_name=clients.get(r.client_id) or None, grant_id=r.grant_id,
            sid=r.sid, received_at=r.received_at) for r in rows]
        return RequestPage(requests, rows[-1].id if more and rows else None)

    def active_now(self, caller, tenant_id: str, now: datetime | None = None) -> list[ActiveAdvisor]:
        """Advisors with records in the last five minutes and the areas they used, the most
        recent first."""
        self.authorize.tenant_admin(caller, tenant_id)
        now = now or utcnow()
        with self.db.read() as session:
            self.memberships.tenant(session, tenant_id)
            rows = session.execute(
                select(AccessRecord.membership_id, AccessRecord.subject, AccessRecord.area,
                       func.count(), func.max(AccessRecord.at))
                .where(AccessRecord.tenant_id == tenant_id,
                       AccessRecord.at >= now - ACTIVE_WINDOW)
                .group_by(AccessRecord.membership_id, AccessRecord.subject,
                          AccessRecord.area)).all()
            ids = sorted({row[0] for row in rows})
            live = set(session.scalars(select(Membership.id).where(
                Membership.id.in_(ids), Membership.ended_at.is_(None)))) if ids else set()
            names = self._names(session, tenant_id, {row[1] for row in rows})
        from scopes.catalog import AREAS
        order = {area.key: i for i, area in enumerate(AREAS)}
        per: dict[tuple, dict] = {}
        for membership_id, subject, area, count, last in rows:
            a = per.setdefault((membership_id, subject), {"areas": set(), "count": 0,
                                                          "last": last})
            a["areas"].add(area)
            a["count"] += count
            a["last"] = max(a["last"], last)
        found = [ActiveAdvisor(subject=subject, advisor_name=names.get(subject),
                               membership_id=membership_id, live=membership_id in live,
                               areas=tuple(sorted(a["areas"], key=lambda k: order.get(k, 99))),
                               count=a["count"], last_at=_utc(a["last"]))
                 for (membership_id, subject), a in per.items()]
        found.sort(key=lambda a: (a.last_at, a.subject), reverse=True)
        return found

    def last_activity(self, caller, tenant_id: str) -> dict[str, datetime]:
        """The time of each membership's latest record (the advisor list's "last
        activity"), for memberships that have one."""
        self.authorize.tenant_admin(caller, tenant_id)
        with self.db.read() as session:
            self.memberships.tenant(session, tenant_id)
            # From the groups kept with the records (one row per membership, area and
            # action), not from every record of the tenant.
            return {m: _utc(at) for m, at in session.execute(
                select(AccessRecordGroup.membership_id, func.max(AccessRecordGroup.last_at))
                .where(AccessRecordGroup.tenant_id == tenant_id)
                .group_by(AccessRecordGroup.membership_id)).all()}

    # --- helpers ---
    def _conditions(self, session, tenant_id: str, query: AccessQuery, *,
                    table=AccessRecord) -> list:
        """The query's conditions on the records, or (``table``: the kept groups, which
        have the same columns but no time) on the groups, for a query without time."""
        conditions = [table.tenant_id == tenant_id]
        if query.subject:
            conditions.append(table.subject == query.subject)
        if query.membership_id:
            conditions.append(table.membership_id == query.membership_id)
        if query.area:
            conditions.append(table.area == query.area)
        if query.action:
            conditions.append(table.action == query.action)
        if query.advisor:
            # By name, username, e-mail or subject: the people it names and the names of
            # this tenant's memberships (as the audit part of the access log filters).
            subjects = set(self.people.subjects_matching(session, query.advisor))
            pattern = f"%{_like_escape(query.advisor)}%"
            subjects.update(session.scalars(select(Membership.advisor_subject).where(
                Membership.tenant_id == tenant_id, or_(
                    Membership.advisor_subject == query.advisor,
                    Membership.advisor_name.ilike(pattern, escape="\\")))))
            conditions.append(table.subject.in_(sorted(subjects)))
        if table is not AccessRecord:
            return conditions
        tz = ZoneInfo(self.timezone)
        if query.since:
            conditions.append(AccessRecord.at >= datetime.combine(query.since, time(), tz))
        if query.until:
            conditions.append(AccessRecord.at < datetime.combine(
                query.until + timedelta(days=1), time(), tz))
        if query.start:
            conditions.append(AccessRecord.at >= query.start)
        if query.end:
            conditions.append(AccessRecord.at <= query.end)
        return conditions

    def _names(self, session, tenant_id: str, subjects: set[str]) -> dict[str, str]:
        if not subjects:
            return {}
        names = advisor_names(session, tenant_id, subjects)
        names.update(self.people.labels(session, sorted(subjects)))
        return names


def _utc(value: datetime) -> datetime:
    """Aggregates (min, max) bypass the column type on SQLite: give them the UTC zone."""
    from datetime import timezone
    if isinstance(value, str):  # SQLite's min()/max() of a DATETIME column
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
