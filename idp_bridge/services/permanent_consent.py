"""Use cases of permanent advisors with the tenant's consent (issue 15 item 2): support
proposes an advisor (a person of the directory) and may withdraw the proposal; the tenant's
admins list the proposals and their permanent advisors with the re-confirmation dates,
accept (four eyes where the tenant asks for it), decline with a note, and re-confirm. The
rules are the domain's (:mod:`idp_bridge.domain.permanent_consent`); support's direct
assignment stays :meth:`~idp_bridge.services.support.Support.assign`."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..domain.permanent_consent import ACCEPT

__all__ = ["ACCEPT", "Acceptance", "PermanentAdvisors"]
from ..storage.db import utcnow
from ..storage.models import Tenant
from .units import unit_of_work
from .values import ApprovalInfo, MembershipInfo, ProposalInfo, named


@dataclass(frozen=True)
class Acceptance:
    """An admin's acceptance: ``applied`` (``membership`` the permanent access) or held
    under four eyes (``approval`` awaits a second admin)."""

    applied: bool
    proposal: ProposalInfo
    approval: ApprovalInfo | None = None
    membership: MembershipInfo | None = None


class PermanentAdvisors:
    def __init__(self, *, db, authorize, memberships, consent, directory, four_eyes, people):
        self.db = db
        self.authorize = authorize
        self.memberships = memberships
        self.consent = consent
        self.directory = directory
        self.four_eyes = four_eyes
        self.people = people

    # --- support ---
    def propose(self, caller, tenant_id: str, subject, *, reason=None) -> ProposalInfo:
        """Propose the advisor ``subject`` (resolved by the directory: an enabled person
        with the advisor role) as a permanent advisor of the tenant."""
        self.authorize.support_admin(caller)
        person = self.directory.advisor(subject)
        with unit_of_work(self.db) as session:
            tenant = self.memberships.tenant(session, tenant_id)
            self.directory.remember(session, person)
            proposal = self.consent.propose(session, tenant, subject=person.subject,
                                            name=person.display, by=caller.subject,
                                            reason=reason, now=utcnow())
            return self._info(session, proposal, tenant_name=tenant.name)

    def withdraw(self, caller, tenant_id: str, proposal_id) -> ProposalInfo:
        self.authorize.support_admin(caller)
        with unit_of_work(self.db) as session:
            tenant = self.memberships.tenant(session, tenant_id)
            proposal = self.consent.withdraw(session, tenant, proposal_id, by=caller.subject,
                                             now=utcnow())
            return self._info(session, proposal, tenant_name=tenant.name)

    def pending_everywhere(self, caller, tenant_filter: str | None = None) -> list[ProposalInfo]:
        """Support: every pending proposal (of one tenant with a filter)."""
        self.authorize.support_admin(caller)
        with self.db.read() as session:
            return [self._info(session, p)
                    for p in self.consent.pending_all(session, tenant_filter or None, utcnow())]

    # --- both: the tenant's pending proposals ---
    def proposals(self, caller, tenant_id: str) -> list[ProposalInfo]:
        """Pending proposals of the tenant, oldest first: for its admins and for support."""
        if not self.authorize.is_support_admin(caller):
            self.authorize.tenant_admin(caller, tenant_id)
        with self.db.read() as session:
            tenant = self.memberships.tenant(session, tenant_id)
            return [self._info(session, p, tenant_name=tenant.name)
                    for p in self.consent.pending_for_tenant(session, tenant_id, utcnow())]

    # --- the tenant's admins ---
    def confirmations(self, caller, tenant_id: str) -> list[MembershipInfo]:
        """The tenant's permanent advisors with their confirmation dates."""
        self.authorize.tenant_admin(caller, tenant_id)
        now = utcnow()
        with self.db.read() as session:
            self.memberships.tenant(session, tenant_id)
            rows = [m for m in self.memberships.list_for_tenant(session, tenant_id, now)
                    if m.kind == "permanent"]
            return self.dated(named(session, self.people, [MembershipInfo.of(m) for m in rows]))

    def accept(self, caller, tenant_id: str, proposal_id) -> Acceptance:
        self.authorize.tenant_admin(caller, tenant_id)
        now = utcnow()
        with unit_of_work(self.db) as session:
            tenant = self.memberships.tenant(session, tenant_id)
            outcome = self.consent.accept(session, tenant, proposal_id, by=caller.subject,
                                          now=now)
            proposal = self.consent.get(session, tenant.id, proposal_id)
            approval = None
            if outcome.approval is not None and not outcome.applied:
                names = self.people.labels(session, [outcome.approval.requested_by])
                approval = ApprovalInfo.of(outcome.approval, names)
            membership = self.dated(named(session, self.people,
                                          [MembershipInfo.of(outcome.result)]))[0] \
                if outcome.applied else None
            return Acceptance(outcome.applied, self._info(session, proposal,
                                                          tenant_name=tenant.name),
                              approval=approval, membership=membership)

    def decline(self, caller, tenant_id: str, proposal_id, *, note) -> ProposalInfo:
        self.authorize.tenant_admin(caller, tenant_id)
        with unit_of_work(self.db) as session:
            tenant = self.memberships.tenant(session, tenant_id)
            proposal = self.consent.decline(session, tenant, proposal_id, by=caller.subject,
                                            note=note, now=utcnow())
            return self._info(session, proposal, tenant_name=tenant.name)

    def reconfirm(self, caller, tenant_id: str, membership_id) -> MembershipInfo:
        """Re-confirm a permanent advisor: the next re-confirmation is due a full period
        from now."""
        self.authorize.tenant_admin(caller, tenant_id)
        with unit_of_work(self.db) as session:
            tenant = self.memberships.tenant(session, tenant_id)
            membership = self.consent.reconfirm(session, tenant, membership_id,
                                                by=caller.subject, now=utcnow())
            return self.dated(named(session, self.people, [MembershipInfo.of(membership)]))[0]

    # --- helpers ---
    def dated(self, infos: list[MembershipInfo]) -> list[MembershipInfo]:
        """``infos`` with the re-confirmation dates of the permanent ones."""
        return [replace(i, reconfirm_due_at=self.consent.due_at(i),
                        lapses_at=self.consent.lapses_at(i)) if i.kind == "permanent" else i
                for i in infos]

    def _info(self, session, proposal, *, tenant_name: str | None = None) -> ProposalInfo:
        first = None
        if proposal.status == "pending":
            pending = self.four_eyes.pending_for(session, proposal.tenant_id, ACCEPT, proposal.id)
            if pending is not None and pending.expires_at > utcnow():
                first = pending
        names = self.people.labels(session, [s for s in (
            proposal.advisor_subject, proposal.proposed_by, proposal.decided_by,
            *(proposal.accepted_by or ()), first.requested_by if first else None)
            if s and s != "system"])
        if tenant_name is None:
            tenant = session.get(Tenant, proposal.tenant_id)
            tenant_name = tenant.name if tenant else None
        return ProposalInfo.of(proposal, names, tenant_name=tenant_name,
                               first_approval=ApprovalInfo.of(first, names) if first else None,
                               expires_at=self.consent.expires_at(proposal))
