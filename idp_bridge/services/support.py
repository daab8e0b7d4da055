"""Use cases of support admins: permanent advisors (assign after agreeing it with the
tenant, list, remove) and the lists of the support page (DESIGN.md section 1).

An assigned advisor is a person of the directory (:class:`~idp_bridge.services.directory.
PeopleDirectory`): the subject stored is one the directory resolved to an enabled advisor,
and the name shown is the directory's, never text the support admin typed."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import select

from ..domain.errors import NotFound
from ..domain.memberships import plausible_id
from ..storage.db import utcnow
from ..storage.models import Membership, Tenant
from .values import MembershipInfo, TenantInfo, named


class Support:
    def __init__(self, *, db, authorize, memberships, directory, people, consent=None):
        self.db = db
        self.authorize = authorize
        self.memberships = memberships
        self.directory = directory
        self.people = people
        #: The tenant's consent (domain/permanent_consent.py): a tenant that accepts its
        #: permanent advisors itself refuses a direct assignment.
        self.consent = consent

    def _named(self, session, infos):
        """``infos`` named from the directory, with the re-confirmation dates."""
        infos = named(session, self.people, infos)
        if self.consent is None:
            return infos
        return [replace(i, reconfirm_due_at=self.consent.due_at(i),
                        lapses_at=self.consent.lapses_at(i)) if i.kind == "permanent" else i
                for i in infos]

    def permanent_advisors(self, caller, tenant_id: str) -> list[MembershipInfo]:
        self.authorize.support_admin(caller)
        with self.db.read() as session:
            self.memberships.tenant(session, tenant_id)
            return self._named(session, [
                MembershipInfo.of(m)
                for m in self.memberships.list_for_tenant(session, tenant_id, utcnow())
                if m.kind == "permanent"])

    def assign(self, caller, tenant_id: str, subject) -> tuple[MembershipInfo, bool]:
        """Make the advisor ``subject`` (resolved by the directory: an enabled person with
        the advisor role) a permanent advisor of the tenant; returns (membership, created).
        An active temporary membership is superseded; a guest must be removed first
        (``advisor_is_guest``). A tenant that accepts permanent advisors itself refuses
        (``tenant_consent_required``): support proposes instead."""
        self.authorize.support_admin(caller)
        person = self.directory.advisor(subject)
        with self.db.transaction() as session:
            tenant = self.memberships.tenant(session, tenant_id)
            self.directory.remember(session, person)
            assign = self.consent.assign if self.consent is not None \
                else self.memberships.assign_permanent
            membership, created = assign(session, tenant, subject=person.subject,
                                         name=person.display, by=caller.subject, now=utcnow())
            info = MembershipInfo.of(membership, tenant_name=tenant.name)
            return self._named(session, [info])[0], created

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
        removed = self._named(session, [MembershipInfo.of(m)])[0]
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
            return (self._named(session, [MembershipInfo.of(m, tenant_name=tenant.name)])[0],
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
            return self._named(session, [MembershipInfo.of(m, tenant_name=name)
                                         for m, name in session.execute(statement).all()])


def _not_permanent() -> NotFound:
    return NotFound("this advisor is not a permanent advisor of the tenant",
                    code="not_permanent_advisor")
