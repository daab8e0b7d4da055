"""Use cases of access requests (issue 15 item 1): an advisor asks for access to a tenant,
sees and withdraws its requests; the tenant's admins see the open ones and approve (four
eyes where the tenant asks for it) or deny them.

Every method authorises its caller first (an advisor; an admin of the tenant), then works in
one unit of work (:func:`~idp_bridge.services.units.unit_of_work`: two admins approving at
the same moment get ``concurrent_change`` for the second, never a second membership), and
returns plain values with the people named from the directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from ..domain.access_requests import APPROVE
from ..storage.db import utcnow
from ..storage.models import Membership, Tenant
from .units import unit_of_work
from .values import AccessRequestInfo, ApprovalInfo, MembershipInfo, named

__all__ = ["APPROVE", "AccessRequestsService", "Decision"]

#: How far back an advisor's page lists its answered requests.
HISTORY = timedelta(days=14)


@dataclass(frozen=True)
class Decision:
    """An admin's approval: ``applied`` (the request approved, ``membership`` its access)
    or held under four eyes (``approval`` awaits a second admin)."""

    applied: bool
    request: AccessRequestInfo
    approval: ApprovalInfo | None = None
    membership: MembershipInfo | None = None


class AccessRequestsService:
    def __init__(self, *, db, authorize, memberships, requests, four_eyes, people):
        self.db = db
        self.authorize = authorize
        self.memberships = memberships
        self.requests = requests
        self.four_eyes = four_eyes
        self.people = people

    # --- the advisor ---
    def request_access(self, caller, tenant_id: str, *, reason, duration_hours) -> AccessRequestInfo:
        """Ask ``tenant_id``'s admins for temporary access (see
        :class:`~idp_bridge.domain.access_requests.AccessRequests` for the refusals)."""
        self.authorize.advisor(caller)
        with unit_of_work(self.db) as session:
            tenant = self.memberships.tenant(session, tenant_id)
            request = self.requests.create(session, tenant, caller, reason=reason,
                                           duration_hours=duration_hours, now=utcnow())
            return self._info(session, request, tenant_name=tenant.name)

    def my_requests(self, caller) -> list[AccessRequestInfo]:
        """The caller's open requests and those answered in the last :data:`HISTORY`,
        newest first."""
        self.authorize.advisor(caller)
        now = utcnow()
        with self.db.read() as session:
            rows = self.requests.of_advisor(session, caller.subject, since=now - HISTORY)
            return [self._info(session, r, now=now) for r in rows]

    def withdraw(self, caller, request_id) -> AccessRequestInfo:
        self.authorize.advisor(caller)
        with unit_of_work(self.db) as session:
            request = self.requests.withdraw(session, caller.subject, request_id, now=utcnow())
            return self._info(session, request)

    # --- the tenant's admins ---
    def open_requests(self, caller, tenant_id: str) -> list[AccessRequestInfo]:
        """The tenant's pending requests, oldest first, each with its first approval where
        one awaits a second admin."""
        self.authorize.tenant_admin(caller, tenant_id)
        now = utcnow()
        with self.db.read() as session:
            self.memberships.tenant(session, tenant_id)
            return [self._info(session, r, now=now)
                    for r in self.requests.pending_for_tenant(session, tenant_id, now)]

    def approve(self, caller, tenant_id: str, request_id, *, duration_hours=None,
                note=None) -> Decision:
        self.authorize.tenant_admin(caller, tenant_id)
        now = utcnow()
        with unit_of_work(self.db) as session:
            tenant = self.memberships.tenant(session, tenant_id)
            outcome = self.requests.approve(session, tenant, request_id, by=caller.subject,
                                            duration_hours=duration_hours, note=note, now=now)
            request = self.requests.get(session, tenant.id, request_id)
            names = self._names(session, [outcome.approval.requested_by]
                                if outcome.approval else [])
            approval = ApprovalInfo.of(outcome.approval, names) if outcome.approval else None
            membership = named(session, self.people, [MembershipInfo.of(outcome.result)])[0] \
                if outcome.applied else None
            return Decision(outcome.applied, self._info(session, request, now=now),
                            approval=approval, membership=membership)

    def deny(self, caller, tenant_id: str, request_id, *, note) -> AccessRequestInfo:
        self.authorize.tenant_admin(caller, tenant_id)
        with unit_of_work(self.db) as session:
            tenant = self.memberships.tenant(session, tenant_id)
            request = self.requests.deny(session, tenant, request_id, by=caller.subject,
                                         note=note, now=utcnow())
            return self._info(session, request)

    # --- helpers ---
    def _names(self, session, subjects) -> dict[str, str]:
        return self.people.labels(session, [s for s in subjects if s and s != "system"])

    def _info(self, session, request, *, tenant_name: str | None = None,
              now=None) -> AccessRequestInfo:
        now = now or utcnow()
        first = None
        if request.status == "pending":
            pending = self.four_eyes.pending_for(session, request.tenant_id, APPROVE, request.id)
            if pending is not None and pending.expires_at > now:
                first = pending
        subjects = [request.advisor_subject, request.decided_by, *(request.approved_by or ()),
                    first.requested_by if first else None]
        names = self._names(session, subjects)
        if tenant_name is None:
            tenant = session.get(Tenant, request.tenant_id)
            tenant_name = tenant.name if tenant else None
        expires = None
        if request.membership_id:
            membership = session.get(Membership, request.membership_id)
            expires = membership.expires_at if membership is not None else None
        return AccessRequestInfo.of(request, tenant_name=tenant_name,
                                    first_approval=ApprovalInfo.of(first, names) if first else None,
                                    names=names, access_expires_at=expires)
