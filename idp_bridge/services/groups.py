"""Use cases of a tenant's admins about user groups (Benutzergruppen) and guest invitations
(DESIGN.md sections 1 and 4): group CRUD, invite, list, withdraw. The rules — names,
permissions, invitees, narrowing live token families — are
:class:`~idp_bridge.domain.guests.Guests`'s; these methods authorise, open the unit of work
and return plain values."""

from __future__ import annotations

from dataclasses import dataclass

from ..domain.errors import NotFound
from ..storage.db import utcnow
from .values import GroupInfo, InvitationInfo, MembershipInfo, TenantInfo, named, named_invitations


@dataclass(frozen=True)
class GroupsOverview:
    tenant: TenantInfo
    groups: list[GroupInfo]
    guests: list[MembershipInfo]
    invitations: list[InvitationInfo]


class Groups:
    def __init__(self, *, db, authorize, memberships, guests, directory, people):
        self.db = db
        self.authorize = authorize
        self.memberships = memberships
        self.guests = guests
        self.directory = directory
        self.people = people

    def _labels(self, session, subjects) -> dict[str, str]:
        return self.people.labels(session, [s for s in subjects if s])

    def _tenant(self, session, tenant_id: str) -> TenantInfo:
        return TenantInfo.of(self.memberships.tenant(session, tenant_id),
                             self.memberships.default_max_age_days)

    # --- groups ---
    def list(self, caller, tenant_id: str) -> list[GroupInfo]:
        self.authorize.tenant_admin(caller, tenant_id)
        with self.db.read() as session:
            self.memberships.tenant(session, tenant_id)
            return [GroupInfo.of(g) for g in self.guests.groups(session, tenant_id)]

    def overview(self, caller, tenant_id: str) -> GroupsOverview:
        """The tenant, its groups (with how many guests and open invitations use each), its
        guests and its open invitations."""
        self.authorize.tenant_admin(caller, tenant_id)
        now = utcnow()
        with self.db.read() as session:
            tenant = self._tenant(session, tenant_id)
            groups = self.guests.groups(session, tenant_id)
            names = {g.id: g.name for g in groups}
            guests = [MembershipInfo.of(m, group_name=names.get(m.group_id))
                      for m in self.memberships.list_for_tenant(session, tenant_id, now)
                      if m.kind == "guest"]
            invitations = [InvitationInfo.of(i, group_name=names.get(i.group_id))
                           for i in self.guests.invitations(session, tenant_id, now)]
            guests = named(session, self.people, guests)
            invitations = named_invitations(invitations, self._labels(
                session, [i.invitee_subject for i in invitations]))
        counted = [GroupInfo.of(g, guests=sum(m.group_id == g.id for m in guests),
                                pending_invitations=sum(i.group_id == g.id for i in invitations))
                   for g in groups]
        return GroupsOverview(tenant, counted, guests, invitations)

    def group(self, caller, tenant_id: str, group_id: str) -> GroupInfo:
        """One group of the tenant (``unknown_group``), with its guests and open
        invitations counted."""
        self.authorize.tenant_admin(caller, tenant_id)
        now = utcnow()
        with self.db.read() as session:
            group = self.guests.group(session, tenant_id, group_id)
            guests = sum(m.kind == "guest" and m.group_id == group.id
                         for m in self.memberships.list_for_tenant(session, tenant_id, now))
            pending = sum(i.group_id == group.id
                          for i in self.guests.invitations(session, tenant_id, now))
            return GroupInfo.of(group, guests=guests, pending_invitations=pending)

    def create(self, caller, tenant_id: str, name, permissions) -> GroupInfo:
        self.authorize.tenant_admin(caller, tenant_id)
        with self.db.transaction() as session:
            self.memberships.tenant(session, tenant_id)
            return GroupInfo.of(self.guests.create_group(
                session, tenant_id, name, permissions, by=caller.subject, now=utcnow()))

    def update(self, caller, tenant_id: str, group_id: str, *, name=None,
               permissions=None) -> tuple[GroupInfo, int]:
        """Rename and/or set the permissions; returns (group, token families narrowed):
        live token families of its guests that had wider rights are replaced at once."""
        self.authorize.tenant_admin(caller, tenant_id)
        with self.db.transaction() as session:
            group, narrowed = self.guests.update_group(
                session, tenant_id, group_id, name=name, permissions=permissions,
                by=caller.subject, now=utcnow())
            return GroupInfo.of(group), narrowed

    def delete(self, caller, tenant_id: str, group_id: str) -> GroupInfo:
        """Delete a group no guest has and no open invitation names (``group_in_use``)."""
        self.authorize.tenant_admin(caller, tenant_id)
        with self.db.transaction() as session:
            deleted = GroupInfo.of(self.guests.group(session, tenant_id, group_id))
            self.guests.delete_group(session, tenant_id, group_id, by=caller.subject,
                                     now=utcnow())
        return deleted

    # --- invitations ---
    def invitations(self, caller, tenant_id: str) -> list[InvitationInfo]:
        self.authorize.tenant_admin(caller, tenant_id)
        with self.db.read() as session:
            self.memberships.tenant(session, tenant_id)
            found = [InvitationInfo.of(i)
                     for i in self.guests.invitations(session, tenant_id, utcnow())]
            return named_invitations(found, self._labels(
                session, [i.invitee_subject for i in found]))

    def invitation(self, caller, tenant_id: str, invitation_id: str) -> InvitationInfo:
        """One open invitation of the tenant (``unknown_invitation``), with its group's name."""
        self.authorize.tenant_admin(caller, tenant_id)
        with self.db.read() as session:
            self.memberships.tenant(session, tenant_id)
            for i in self.guests.invitations(session, tenant_id, utcnow()):
                if i.id == invitation_id:
                    found = InvitationInfo.of(
                        i, group_name=self.guests.group(session, tenant_id, i.group_id).name)
                    return named_invitations([found], self._labels(
                        session, [i.invitee_subject]))[0]
        raise NotFound("no such invitation in this tenant", code="unknown_invitation")

    def invite(self, caller, tenant_id: str, *, group_id, subject=None,
               email=None) -> InvitationInfo:
        """Invite an advisor as a guest user with a group — by subject (resolved by the
        directory: an enabled person with the advisor role) or by e-mail address (accepted
        only with that address verified at the identity provider); the invitation is open
        for :data:`~idp_bridge.domain.guests.INVITATION_DAYS` days."""
        self.authorize.tenant_admin(caller, tenant_id)
        person = None
        if subject is not None and email is None:
            person = self.directory.advisor(subject)
        with self.db.transaction() as session:
            tenant = self.memberships.tenant(session, tenant_id)
            if person is not None:
                self.directory.remember(session, person)
            invitation = self.guests.invite(session, tenant, group_id=group_id, subject=subject,
                                            email=email, by=caller.subject, now=utcnow())
            found = InvitationInfo.of(invitation, group_name=self.guests.group(
                session, tenant_id, invitation.group_id).name)
            return named_invitations([found], self._labels(session, [subject]))[0]

    def withdraw(self, caller, tenant_id: str, invitation_id: str) -> None:
        self.authorize.tenant_admin(caller, tenant_id)
        with self.db.transaction() as session:
            self.memberships.tenant(session, tenant_id)
            self.guests.withdraw(session, tenant_id, invitation_id, by=caller.subject,
                                 now=utcnow())
