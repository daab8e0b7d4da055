"""Use cases of four eyes for a tenant's admins (issue 15 item 3): the pending first
approvals, completing one as the second admin, rejecting one. Which decisions need four eyes
and what completing one does is the domain's (:mod:`idp_bridge.domain.approvals`, the actions
registered by :mod:`idp_bridge.domain.access_requests` and
:mod:`idp_bridge.domain.tenant_settings`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..domain.access_requests import NOTE_MAX_LENGTH
from ..domain.text import check_text
from ..storage.db import utcnow
from .units import unit_of_work
from .values import ApprovalInfo, TenantInfo


@dataclass(frozen=True)
class Completed:
    """A second approval: the approval (completed) and the tenant as it is now."""

    approval: ApprovalInfo
    tenant: TenantInfo
    #: What the action returned, as a plain value where there is one (memberships ended by
    #: a shorter maximum; the id of a membership an approved request created).
    result: object = None


class Approvals:
    def __init__(self, *, db, authorize, memberships, four_eyes, people):
        self.db = db
        self.authorize = authorize
        self.memberships = memberships
        self.four_eyes = four_eyes
        self.people = people

    def pending(self, caller, tenant_id: str) -> list[ApprovalInfo]:
        """The tenant's first approvals awaiting a second admin, oldest first."""
        self.authorize.tenant_admin(caller, tenant_id)
        with self.db.read() as session:
            self.memberships.tenant(session, tenant_id)
            rows = self.four_eyes.pending(session, tenant_id, utcnow())
            names = self.people.labels(session, [a.requested_by for a in rows])
            return [ApprovalInfo.of(a, names) for a in rows]

    def confirm(self, caller, tenant_id: str, approval_id) -> Completed:
        """The caller's approval as the second admin: the decision takes effect
        (``same_approver`` for the first approver, changing nothing)."""
        self.authorize.tenant_admin(caller, tenant_id)
        with unit_of_work(self.db) as session:
            tenant = self.memberships.tenant(session, tenant_id)
            outcome = self.four_eyes.confirm(session, tenant, approval_id, by=caller.subject,
                                             now=utcnow())
            names = self.people.labels(session, list(outcome.approvers))
            result = outcome.result
            if hasattr(result, "id"):  # a membership: its id, never the ORM row
                result = result.id
            return Completed(ApprovalInfo.of(outcome.approval, names),
                             TenantInfo.of(tenant, self.memberships.default_max_age_days), result)

    def reject(self, caller, tenant_id: str, approval_id, *, note=None) -> ApprovalInfo:
        """Any admin of the tenant rejects a pending approval (the first approver takes
        its own back the same way); nothing of it takes effect."""
        self.authorize.tenant_admin(caller, tenant_id)
        note = check_text(note, field="note", max_length=NOTE_MAX_LENGTH)
        with unit_of_work(self.db) as session:
            tenant = self.memberships.tenant(session, tenant_id)
            approval = self.four_eyes.reject(session, tenant, approval_id, by=caller.subject,
                                             note=note, now=utcnow())
            names = self.people.labels(session, [approval.requested_by, approval.decided_by])
            return ApprovalInfo.of(approval, names)
