"""Use cases of support admins: permanent advisors (assign after agreeing it with the
tenant, list, remove) and the lists of the support page (DESIGN.md section 1)."""

from __future__ import annotations

from sqlalchemy import func, select

from ..domain.errors import InvalidInput, NotFound
from ..domain.memberships import plausible_id
from ..domain.text import check_text
from ..storage.db import utcnow
from ..storage.models import Membership, Tenant
from .values import MembershipInfo, TenantInfo

#: How many advisors the bridge has seen the support page suggests.
KNOWN_ADVISORS_SHOWN = 200
NAME_MAX = 255
SUBJECT_MAX = 255


class Support:
    def __init__(self, *, db, authorize, memberships):
        self.db = db
        self.authorize = authorize
        self.memberships = memberships

    def permanent_advisors(self, caller, tenant_id: str) -> list[MembershipInfo]:
        self.authorize.support_admin(caller)
        with self.db.read() as session:
            self.memberships.tenant(session, tenant_id)
            return [MembershipInfo.of(m)
                    for m in self.memberships.list_for_tenant(session, tenant_id, utcnow())
                    if m.kind == "permanent"]

    def assign(self, caller, tenant_id: str, subject: str,
               name: str | None = None) -> tuple[MembershipInfo, bool]:
        """Make ``subject`` a permanent advisor of the tenant; returns (membership,
        created). An active temporary membership is superseded; a guest must be removed
        first (``advisor_is_guest``)."""
        self.authorize.support_admin(caller)
        if name is not None and (not isinstance(name, str) or not 0 < len(name) <= NAME_MAX):
            raise InvalidInput(f"name must be a string of 1 to {NAME_MAX} characters",
                               code="name_invalid")
        name = check_text(name, field="name", max_length=NAME_MAX)  # shown to the tenant
        if not isinstance(subject, str) or not 0 < len(subject) <= SUBJECT_MAX \
                or not subject.isprintable():
            raise InvalidInput(f"advisor subject must be 1 to {SUBJECT_MAX} printable characters",
                               code="advisor_subject_invalid")
        with self.db.transaction() as session:
            tenant = self.memberships.tenant(session, tenant_id)
            membership, created = self.memberships.assign_permanent(
                session, tenant, subject=subject, name=name, by=caller.subject, now=utcnow())
            return MembershipInfo.of(membership, tenant_name=tenant.name), created

    def remove(self, caller, tenant_id: str, subject: str) -> MembershipInfo:
        """End the permanent assignment of ``subject`` to the tenant
        (``not_permanent_advisor`` if there is none)."""
        self.authorize.support_admin(caller)
        with self.db.transaction() as session:
            self.memberships.tenant(session, tenant_id)
            m = self.memberships.active(session, tenant_id, subject)
            return self._end(session, caller, m)

    def remove_assignment(self, caller, membership_id: str) -> MembershipInfo:
        """The same, naming the assignment by its membership id (the support page)."""
        self.authorize.support_admin(caller)
        with self.db.transaction() as session:
            return self._end(session, caller, self._permanent(session, membership_id))

    def _end(self, session, caller, m) -> MembershipInfo:
        if m is None or m.kind != "permanent" or m.ended_at is not None:
            raise _not_permanent()
        removed = MembershipInfo.of(m)
        self.memberships.end(session, m, by=caller.subject, actor_role="support_admin",
                             reason="removed_by_support", now=utcnow())
        return removed

    def assignment(self, caller, membership_id: str) -> tuple[MembershipInfo, TenantInfo]:
        """One live permanent assignment and its tenant."""
        self.authorize.support_admin(caller)
        with self.db.read() as session:
            m = self._permanent(session, membership_id)
            if m is None:
                raise _not_permanent()
            tenant = self.memberships.tenant(session, m.tenant_id)
            return (MembershipInfo.of(m, tenant_name=tenant.name),
                    TenantInfo.of(tenant, self.memberships.default_max_age_days))

    @staticmethod
    def _permanent(session, membership_id: str):
        m = session.get(Membership, membership_id) if plausible_id(membership_id) else None
        if m is None or m.kind != "permanent" or m.ended_at is not None:
            return None
        return m

    def assignments(self, caller, tenant_filter: str | None = None) -> list[MembershipInfo]:
        """Every live permanent assignment (of one tenant, with a filter), by tenant, with
        the tenant's name."""
        self.authorize.support_admin(caller)
        statement = (select(Membership, Tenant.name)
                     .join(Tenant, Tenant.id == Membership.tenant_id)
                     .where(Membership.kind == "permanent", Membership.ended_at.is_(None))
                     .order_by(Membership.tenant_id, Membership.created_at))
        if tenant_filter:
            statement = statement.where(Membership.tenant_id == tenant_filter)
        with self.db.read() as session:
            return [MembershipInfo.of(m, tenant_name=name)
                    for m, name in session.execute(statement).all()]

    def known_advisors(self, caller) -> list[tuple[str, str | None]]:
        """Advisors the bridge has seen (subject, latest name), for the form's suggestions."""
        self.authorize.support_admin(caller)
        with self.db.read() as session:
            rows = session.execute(
                select(Membership.advisor_subject, func.max(Membership.advisor_name))
                .where(Membership.kind.in_(("temporary", "permanent")))
                .group_by(Membership.advisor_subject).limit(KNOWN_ADVISORS_SHOWN)).all()
        return sorted(((s, n) for s, n in rows), key=lambda row: (row[1] or row[0]).lower())


def _not_permanent() -> NotFound:
    return NotFound("this advisor is not a permanent advisor of the tenant",
                    code="not_permanent_advisor")
