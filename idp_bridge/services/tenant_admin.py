"""Use cases of a tenant's admins: the tenant and its settings, the access code, the
advisors (list, remove), the audit events and the access log (DESIGN.md sections 1, 7, 8).

Every method authorises the caller as an admin of ``tenant_id`` first, then reads or changes
in one unit of work, and returns plain values (:mod:`idp_bridge.services.values`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import String, cast, or_, select

from ..domain import audit
from ..domain.access_codes import CurrentCode
from ..domain.errors import InvalidInput, NotFound
from ..domain.memberships import advisor_names, plausible_id
from ..notifications import MAX_RECIPIENTS, parse_addresses
from ..storage.db import utcnow
from ..storage.models import AccessCodeState, AuditEvent, Membership, Tenant
from .receipts import MembershipDetail, Receipts, RevocationReceipts
from .units import unit_of_work
from .values import ApprovalInfo, AuditEntry, MembershipInfo, TenantInfo, named


class AddressRefused(InvalidInput):
    """A notification address that is not an e-mail address; ``address`` is the entry (the
    tenant admin's own input, shown back on the form that holds it)."""

    code = "notification_address_invalid"

    def __init__(self, address: str):
        super().__init__("notification_emails holds an entry that is not an e-mail address")
        self.address = address


@dataclass(frozen=True)
class HelpState:
    """What the help page shows and refreshes: the tenant, its current code, its advisors."""

    tenant: TenantInfo
    code: CurrentCode
    now: datetime
    members: list[MembershipInfo]


@dataclass(frozen=True)
class SettingsChange:
    """A change of the tenant's settings: the tenant as it is now, how many temporary
    memberships ended because of a shorter maximum, and the parts held under four eyes
    until a second admin approves them."""

    tenant: TenantInfo
    memberships_ended: int = 0
    pending: tuple[ApprovalInfo, ...] = ()


@dataclass(frozen=True)
class LogQuery:
    """Filters of the access log: audit event names, an advisor (name or subject, as
    typed), a first and last day (in ``zone``), and the page (events older than
    ``before_id``)."""

    events: tuple[str, ...] | None = None
    advisor: str | None = None
    since: date | None = None
    until: date | None = None
    before_id: int | None = None
    limit: int = 50


class TenantAdmin:
    def __init__(self, *, db, authorize, memberships, codes, guests, people, timezone: str,
                 settings):
        self.db = db
        #: The tenant's settings and which changes need four eyes (domain/tenant_settings.py).
        self.settings = settings
        self.authorize = authorize
        self.memberships = memberships
        self.codes = codes
        self.guests = guests
        self.people = people
        self.timezone = timezone
        self.receipts = Receipts()

    def _named(self, session, infos: list[MembershipInfo]) -> list[MembershipInfo]:
        return named(session, self.people, infos)

    @property
    def max_age_limit(self) -> int:
        return self.memberships.default_max_age_days

    # --- the tenant ---
    def tenant(self, caller, tenant_id: str) -> TenantInfo:
        self.authorize.tenant_admin(caller, tenant_id)
        with self.db.read() as session:
            return TenantInfo.of(self.memberships.tenant(session, tenant_id), self.max_age_limit)

    def tenant_names(self, caller) -> list[tuple[str, str | None]]:
        """(id, name) of the tenants the caller administers (names of existing ones)."""
        ids = self.authorize.administered_tenants(caller)
        if not ids:
            return []
        with self.db.read() as session:
            names = dict(session.execute(select(Tenant.id, Tenant.name)
                                         .where(Tenant.id.in_(ids))).all())
        return [(t, names.get(t)) for t in ids]

    def set_max_age(self, caller, tenant_id: str, days) -> "SettingsChange":
        """The maximum age of temporary access (1 to the configured maximum,
        ``max_age_out_of_range`` else): shortening applies at once (also to the temporary
        advisors already in the tenant), lengthening needs four eyes when the tenant asks
        for it."""
        return self.update_settings(caller, tenant_id, {"temporary_max_age_days": days})

    def update_settings(self, caller, tenant_id: str, changes: dict) -> "SettingsChange":
        """Change any of ``four_eyes``, ``access_modes``, ``permanent_mode`` and
        ``temporary_max_age_days`` in
        one unit of work (:class:`~idp_bridge.domain.tenant_settings.TenantSettings`: what
        loosens needs four eyes where the tenant asks for it, and is then held for a second
        admin). ``four_eyes`` is read first, so that turning it on covers the rest of the
        same change and turning it off does not."""
        self.authorize.tenant_admin(caller, tenant_id)
        now = utcnow()
        by = caller.subject
        with unit_of_work(self.db) as session:
            tenant = self.memberships.tenant(session, tenant_id)
            outcomes = []
            if "four_eyes" in changes:
                outcomes.append(self.settings.set_four_eyes(session, tenant, changes["four_eyes"],
                                                            by=by, now=now))
            if "access_modes" in changes:
                outcomes.append(self.settings.set_access_modes(
                    session, tenant, changes["access_modes"], by=by, now=now))
            if "permanent_mode" in changes:
                outcomes.append(self.settings.set_permanent_mode(
                    session, tenant, changes["permanent_mode"], by=by, now=now))
            ended = 0
            if "temporary_max_age_days" in changes:
                outcome = self.settings.set_max_age(session, tenant,
                                                    changes["temporary_max_age_days"], by=by,
                                                    now=now)
                outcomes.append(outcome)
                ended = (outcome.result or 0) if outcome.applied else 0
            held = [o.approval for o in outcomes if not o.applied]
            names = self.people.labels(session, [a.requested_by for a in held])
            return SettingsChange(TenantInfo.of(tenant, self.max_age_limit), ended,
                                  tuple(ApprovalInfo.of(a, names) for a in held))

    def set_notification_emails(self, caller, tenant_id: str, text: str | None) -> list[str]:
        """Where the tenant's notifications go: addresses as entered (comma, semicolon,
        space or line separated), at most :data:`MAX_RECIPIENTS`; returns them."""
        self.authorize.tenant_admin(caller, tenant_id)
        text = text or ""
        if len(text) > 1000:
            raise InvalidInput("notification_emails is too long", code="too_many_recipients")
        try:
            addresses = parse_addresses(text)
        except OverflowError:
            raise InvalidInput(f"notification_emails holds more than {MAX_RECIPIENTS} addresses",
                               code="too_many_recipients") from None
        except ValueError as exc:
            raise AddressRefused(str(exc)) from None
        with self.db.transaction() as session:
            tenant = self.memberships.tenant(session, tenant_id)
            tenant.notification_emails = ", ".join(addresses) or None
        return addresses

    def set_first_access_notification(self, caller, tenant_id: str, enabled: bool) -> bool:
        """Whether the tenant's admins are told (e-mail to the notification addresses, the
        webhook) when an advisor first uses a new access: the first access record a resource
        server reports for a grant. Returns the setting."""
        self.authorize.tenant_admin(caller, tenant_id)
        with self.db.transaction() as session:
            tenant = self.memberships.tenant(session, tenant_id)
            tenant.notify_first_access = bool(enabled)
        return bool(enabled)

    # --- the access code ---
    def access_code(self, caller, tenant_id: str) -> CurrentCode:
        """The tenant's current access code. A read unless the tenant has no code state
        yet: the help page polls it, and must not take a write lock every few seconds."""
        self.authorize.tenant_admin(caller, tenant_id)
        return self._current_code(tenant_id, utcnow())

    def _current_code(self, tenant_id: str, now: datetime) -> CurrentCode:
        with self.db.read() as session:
            self.memberships.tenant(session, tenant_id)
            if session.get(AccessCodeState, tenant_id) is not None:
                return self.codes.current(session, tenant_id, now)
        with self.db.transaction() as session:
            return self.codes.current(session, tenant_id, now)

    def help_state(self, caller, tenant_id: str) -> HelpState:
        self.authorize.tenant_admin(caller, tenant_id)
        now = utcnow()
        code = self._current_code(tenant_id, now)
        with self.db.read() as session:
            tenant = self.memberships.tenant(session, tenant_id)
            members = self._members(session, tenant_id, now)
            return HelpState(TenantInfo.of(tenant, self.max_age_limit), code, now, members)

    # --- advisors ---
    def memberships_of(self, caller, tenant_id: str) -> list[MembershipInfo]:
        """The tenant's live memberships (not ended, not past their maximum age), oldest
        first, guests with their group's name."""
        self.authorize.tenant_admin(caller, tenant_id)
        with self.db.read() as session:
            self.memberships.tenant(session, tenant_id)
            return self._members(session, tenant_id, utcnow())

    def membership(self, caller, tenant_id: str, membership_id: str) -> MembershipInfo:
        """One live membership of the tenant (``unknown_membership``, ``membership_ended``)."""
        self.authorize.tenant_admin(caller, tenant_id)
        with self.db.read() as session:
            self.memberships.tenant(session, tenant_id)
            m = self.memberships.get_for_tenant(session, tenant_id, membership_id)
            return self._named(session, [MembershipInfo.of(
                m, group_name=self._group_names(session, tenant_id).get(m.group_id))])[0]

    def remove(self, caller, tenant_id: str, membership_id: str) -> MembershipInfo:
        """End a membership of the tenant: its grant and every token of it are revoked at
        once (``removed_by_tenant``). Returns what it was."""
        self.authorize.tenant_admin(caller, tenant_id)
        with self.db.transaction() as session:
            m = self.memberships.get_for_tenant(session, tenant_id, membership_id)
            removed = self._named(session, [MembershipInfo.of(m)])[0]
            self.memberships.end(session, m, by=caller.subject, actor_role="tenant_admin",
                                 reason="removed_by_tenant", now=utcnow())
        return removed

    # --- revocation receipts (services/receipts.py) ---
    def membership_detail(self, caller, tenant_id: str, membership_id: str) -> MembershipDetail:
        """One membership of the tenant, live or ended (``unknown_membership`` for another
        tenant's or none), with when it ended and which resource servers confirmed each of
        its revocations."""
        self.authorize.tenant_admin(caller, tenant_id)
        now = utcnow()
        with self.db.read() as session:
            self.memberships.tenant(session, tenant_id)
            m = session.get(Membership, membership_id) if plausible_id(membership_id) else None
            if m is None or m.tenant_id != tenant_id:
                raise NotFound("no such membership in this tenant", code="unknown_membership")
            info = self._named(session, [MembershipInfo.of(
                m, group_name=self._group_names(session, tenant_id).get(m.group_id))])[0]
            ended_by = self.people.labels(session, [m.ended_by]).get(m.ended_by) \
                if m.ended_by else None
            return MembershipDetail(
                membership=info, ended_at=m.ended_at, ended_by=m.ended_by,
                ended_by_name=ended_by, end_reason=m.end_reason,
                revocations=tuple(self.receipts.of_membership(session, m, now)))

    def revocations(self, caller, tenant_id: str, limit: int = 20) -> list[RevocationReceipts]:
        """The tenant's latest revocations (grants and token families), newest first, with
        their receipts."""
        self.authorize.tenant_admin(caller, tenant_id)
        with self.db.read() as session:
            self.memberships.tenant(session, tenant_id)
            return self.receipts.of_tenant(session, tenant_id, limit, utcnow())

    def _members(self, session, tenant_id: str, now) -> list[MembershipInfo]:
        names = self._group_names(session, tenant_id)
        return self._named(session, [
            MembershipInfo.of(m, group_name=names.get(m.group_id))
            for m in self.memberships.list_for_tenant(session, tenant_id, now)])

    def _group_names(self, session, tenant_id: str) -> dict[str, str]:
        return {group.id: group.name for group in self.guests.groups(session, tenant_id)}

    # --- audit ---
    def audit_events(self, caller, tenant_id: str, *, before_id: int | None = None,
                     limit: int = 50, event: str | None = None) -> list[AuditEntry]:
        """The tenant's audit events, newest first (``unknown_event`` for an event name
        that is not one of :data:`idp_bridge.domain.audit.EVENTS`)."""
        self.authorize.tenant_admin(caller, tenant_id)
        if event is not None and event not in audit.EVENTS:
            raise InvalidInput(f"unknown event; known: {', '.join(audit.EVENTS)}",
                               code="unknown_event")
        with self.db.read() as session:
            self.memberships.tenant(session, tenant_id)
            return [AuditEntry.of(r) for r in audit.query_events(
                session, tenant_id, before_id=before_id, limit=limit, event=event)]

    def access_log(self, caller, tenant_id: str,
                   query: LogQuery) -> tuple[TenantInfo, list[AuditEntry], dict[str, str]]:
        """The access log: the tenant, its filtered events (newest first) and what to call
        the people they name (actors, advisors, invitees), from the directory's rows; the
        name an advisor's own sign-in gave where the directory knows nobody."""
        self.authorize.tenant_admin(caller, tenant_id)
        with self.db.read() as session:
            tenant = TenantInfo.of(self.memberships.tenant(session, tenant_id),
                                   self.max_age_limit)
            events = [AuditEntry.of(r) for r in session.scalars(
                self._log_statement(session, tenant_id, query))]
            mentioned = set()
            for e in events:
                mentioned.update(v for v in (e.actor, e.detail.get("advisor"),
                                             e.detail.get("invitee"), e.detail.get("invited_by"),
                                             e.detail.get("first_approver"),
                                             e.detail.get("second_approver"),
                                             *(e.detail.get("approved_by") or ()))
                                 if isinstance(v, str))
            # Only the people the events name (the tenant may have kept thousands of
            # memberships: reading every one's name grew the page with the tenant's history).
            names = advisor_names(session, tenant_id, mentioned, permanent=False)
            names.update(self.people.labels(session, mentioned))
        return tenant, events, names

    def _log_statement(self, session, tenant_id: str, query: LogQuery):
        statement = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
        if query.events:
            statement = statement.where(AuditEvent.event.in_(query.events))
        if query.advisor:
            # By name, username, e-mail or subject: the people it names (directory rows and
            # names of this tenant's memberships), then every event of theirs — token events
            # name the advisor only by membership — and events whose text mentions it.
            subjects = set(self.people.subjects_matching(session, query.advisor))
            pattern = f"%{_like_escape(query.advisor)}%"
            subjects.update(session.scalars(select(Membership.advisor_subject).where(
                Membership.tenant_id == tenant_id, or_(
                    Membership.advisor_subject == query.advisor,
                    Membership.advisor_name.ilike(pattern, escape="\\")))))
            memberships = select(Membership.id).where(
                Membership.tenant_id == tenant_id,
                Membership.advisor_subject.in_(sorted(subjects))) if subjects else None
            patterns = {pattern, f"%{_like_escape(json.dumps(query.advisor)[1:-1])}%"}
            conditions = [condition for p in patterns for condition in (
                AuditEvent.actor.ilike(p, escape="\\"),
                cast(AuditEvent.detail, String).ilike(p, escape="\\"))]
            if subjects:
                conditions += [AuditEvent.actor.in_(sorted(subjects)),
                               AuditEvent.membership_id.in_(memberships)]
                conditions += [cast(AuditEvent.detail, String).like(
                    f"%{_like_escape(json.dumps(s))}%", escape="\\") for s in sorted(subjects)[:50]]
            statement = statement.where(or_(*conditions))
        tz = ZoneInfo(self.timezone)
        if query.since:
            statement = statement.where(AuditEvent.at >= datetime.combine(query.since, time(), tz))
        if query.until:
            statement = statement.where(
                AuditEvent.at < datetime.combine(query.until + timedelta(days=1), time(), tz))
        if query.before_id is not None:
            statement = statement.where(AuditEvent.id < query.before_id)
        return statement.order_by(AuditEvent.id.desc()).limit(query.limit)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
