"""Use cases of an advisor about its own access: its tenants, leaving one, its invitations
and accepting one as a guest user (DESIGN.md sections 1 and 8). Redeeming an access code
and opening a tenant mint or may mint tokens: they are :class:`~idp_bridge.services.tokens.
TokenService`'s.

Every method authorises the caller as an advisor first; the caller only ever sees and
changes its own memberships.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..domain.errors import NotFound
from ..storage.db import utcnow
from ..storage.models import Tenant, UserGroup
from .values import InvitationInfo, MembershipInfo, TenantInfo


@dataclass(frozen=True)
class AdvisorStatus:
    """What the advisor's page polls (:meth:`Advisors.status`): the caller's live
    memberships and open invitations, read at ``now``."""

    now: datetime
    memberships: tuple[MembershipInfo, ...]
    invitations: tuple[InvitationInfo, ...]


class Advisors:
    def __init__(self, *, db, authorize, memberships, guests):
        self.db = db
        self.authorize = authorize
        self.memberships = memberships
        self.guests = guests

    def my_memberships(self, caller) -> list[MembershipInfo]:
        """The caller's live memberships, oldest first, with tenant and group names."""
        self.authorize.advisor(caller)
        with self.db.read() as session:
            return [MembershipInfo.of(m, tenant_name=_name(session, Tenant, m.tenant_id),
                                      group_name=_name(session, UserGroup, m.group_id))
                    for m in self.memberships.list_for_advisor(session, caller.subject,
                                                               utcnow())]

    def status(self, caller) -> AdvisorStatus:
        """The caller's live memberships and open invitations in one read, for the page's
        script: a membership missing here has ended (removed, left, expired), so the page
        takes back its "Open" button."""
        self.authorize.advisor(caller)
        now = utcnow()
        with self.db.read() as session:
            memberships = tuple(
                MembershipInfo.of(m, tenant_name=_name(session, Tenant, m.tenant_id))
                for m in self.memberships.list_for_advisor(session, caller.subject, now))
            invitations = tuple(InvitationInfo.of(i)
                                for i in self.guests.my_invitations(session, caller, now))
        return AdvisorStatus(now=now, memberships=memberships, invitations=invitations)

    def my_membership(self, caller, tenant_id: str) -> tuple[MembershipInfo, TenantInfo]:
        """The caller's live membership of ``tenant_id`` (``no_membership``)."""
        self.authorize.advisor(caller)
        with self.db.read() as session:
            m = self._active(session, caller, tenant_id)
            tenant = self.memberships.tenant(session, tenant_id)
            return (MembershipInfo.of(m, tenant_name=tenant.name),
                    TenantInfo.of(tenant, self.memberships.default_max_age_days))

    def leave(self, caller, tenant_id: str) -> None:
        """End the caller's membership of ``tenant_id`` (``left``): its grant and every
        token of it are revoked at once."""
        self.authorize.advisor(caller)
        with self.db.transaction() as session:
            m = self._active(session, caller, tenant_id)
            self.memberships.end(session, m, by=caller.subject, actor_role="advisor",
                                 reason="left", now=utcnow())

    def _active(self, session, caller, tenant_id: str):
        m = self.memberships.active(session, tenant_id, caller.subject)
        if m is None:
            raise NotFound("you are not a member of this tenant", code="no_membership")
        return m

    # --- invitations ---
    def my_invitations(self, caller) -> list[InvitationInfo]:
        """Open invitations addressed to the caller (by subject, or by a verified e-mail
        address), with the tenant's and the group's names."""
        self.authorize.advisor(caller)
        with self.db.read() as session:
            return [InvitationInfo.of(i, tenant_name=_name(session, Tenant, i.tenant_id),
                                      group_name=_name(session, UserGroup, i.group_id))
                    for i in self.guests.my_invitations(session, caller, utcnow())]

    def accept(self, caller, invitation_id: str) -> MembershipInfo:
        """Accept an invitation: the caller becomes a guest user of its tenant with its
        group. Returns the new membership with tenant and group names."""
        self.authorize.advisor(caller)
        with self.db.transaction() as session:
            m = self.guests.accept(session, invitation_id, caller, now=utcnow())
            return MembershipInfo.of(m, tenant_name=_name(session, Tenant, m.tenant_id),
                                     group_name=_name(session, UserGroup, m.group_id))


def _name(session, model, key) -> str | None:
    row = session.get(model, key) if key else None
    return row.name if row is not None else None
