"""Guests (Gastbenutzer): advisors invited by a tenant with one of its user groups
(Benutzergruppen), whose permissions apply instead of the fixed advisor profile.

Narrowing a group's permissions takes effect at once: every live token family of the
group's guests whose scope is no longer covered is replaced by a successor family carrying
the narrowed scope (its unused refresh tokens move over), and the old family is revoked
(:meth:`idp_bridge.domain.revocation.Revocations.supersede_family`) —
published on the revocation feed by ``sid``, so resource servers reject the wider tokens
within a second, while the next refresh or exchange simply yields the narrower scope.
Revoking the families (not the grant) keeps the guests' memberships: only the rights
changed, not who may act.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from datetime import datetime, timedelta

from sqlalchemy import select

from scopes.catalog import UnknownScope, in_catalog_order, validate_scopes

from ..storage.models import Invitation, Membership, TokenFamily, UserGroup
from . import audit
from .errors import Conflict, Forbidden, InvalidInput, NotFound
from .text import UnsafeText, check_text

INVITATION_DAYS = 7
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


def check_permissions(permissions) -> list[str]:
    if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
        raise InvalidInput("permissions must be a list of scopes such as payments:read",
                           code="permissions_invalid")
    try:
        validate_scopes(permissions)
    except UnknownScope:  # the description names no value of the request
        raise InvalidInput("unknown scope: permissions name scopes not in the catalog",
                           code="unknown_scope") from None
    return in_catalog_order(permissions)


def name_key(name: str) -> str:
    """A group name as compared for uniqueness within its tenant: NFKC, case-folded (so
    ``Straße``, ``STRASSE`` and a full-width ``Ｓｔｒａｓｓｅ`` are one name)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def check_name(name) -> str:
    # Shown on the tenant's pages and in its access log: the shared free-text rule.
    try:
        return check_text(name, field="name", max_length=100, required=True)
    except UnsafeText:
        raise
    except InvalidInput:
        raise InvalidInput("a group name has 1 to 100 printable characters",
                           code="group_name_invalid") from None


class Guests:
    def __init__(self, *, memberships):
        self.memberships = memberships

    # --- user groups ---
    @staticmethod
    def groups(session, tenant_id: str) -> list[UserGroup]:
        return list(session.scalars(select(UserGroup).where(
            UserGroup.tenant_id == tenant_id, UserGroup.deleted_at.is_(None))
            .order_by(UserGroup.name)))

    @staticmethod
    def group(session, tenant_id: str, group_id) -> UserGroup:
        group = session.get(UserGroup, group_id) if isinstance(group_id, str) and \
            len(group_id) <= 36 else None
        if group is None or group.tenant_id != tenant_id or group.deleted_at is not None:
            raise NotFound("no such user group in this tenant", code="unknown_group")
        return group

    def create_group(self, session, tenant_id: str, name, permissions, *, by: str,
                     now: datetime) -> UserGroup:
        name, permissions = check_name(name), check_permissions(permissions)
        if self._name_taken(session, tenant_id, name):
            raise Conflict("a user group of this name exists", code="group_name_taken")
        group = UserGroup(id=str(uuid.uuid4()), tenant_id=tenant_id, name=name,
                          permissions=permissions, created_at=now, updated_at=now,
                          name_key=name_key(name))
        session.add(group)
        session.flush()
        audit.record(session, "group.changed", now, tenant_id=tenant_id, actor=by,
                     actor_role="tenant_admin", group=group.id, name=name,
                     permissions=permissions, change="created")
        return group

    @staticmethod
    def _name_taken(session, tenant_id, name, except_id=None) -> bool:
        found = session.scalars(select(UserGroup.id).where(
            UserGroup.tenant_id == tenant_id, UserGroup.name_key == name_key(name),
            UserGroup.deleted_at.is_(None))).first()
        return found is not None and found != except_id

    def update_group(self, session, tenant_id: str, group_id, *, name=None, permissions=None,
                     by: str, now: datetime) -> tuple[UserGroup, int]:
        """Rename and/or set permissions; returns (group, token families narrowed)."""
        group = self.group(session, tenant_id, group_id)
        narrowed = 0
        if name is not None:
            name = check_name(name)
            if self._name_taken(session, tenant_id, name, except_id=group.id):
                raise Conflict("a user group of this name exists", code="group_name_taken")
            group.name, group.name_key = name, name_key(name)
        if permissions is not None:
            permissions = check_permissions(permissions)
            group.permissions = permissions
            narrowed = self._narrow_families(session, group, frozenset(permissions), now)
        group.updated_at = now
        audit.record(session, "group.changed", now, tenant_id=tenant_id, actor=by,
                     actor_role="tenant_admin", group=group.id, name=group.name,
                     permissions=group.permissions, change="updated",
                     token_families_narrowed=narrowed)
        return group, narrowed

    def delete_group(self, session, tenant_id: str, group_id, *, by: str, now: datetime) -> None:
        group = self.group(session, tenant_id, group_id)
        in_use = session.scalars(select(Membership.id).where(
            Membership.group_id == group.id, Membership.ended_at.is_(None))).first()
        pending = session.scalars(select(Invitation.id).where(
            Invitation.group_id == group.id, Invitation.accepted_at.is_(None),
            Invitation.withdrawn_at.is_(None), Invitation.expires_at > now)).first()
        if in_use or pending:
            raise Conflict("guests still use this user group (or are invited with it): "
                           "remove them or withdraw the invitations first", code="group_in_use")
        group.deleted_at = now
        audit.record(session, "group.changed", now, tenant_id=tenant_id, actor=by,
                     actor_role="tenant_admin", group=group.id, name=group.name, change="deleted")

    def _narrow_families(self, session, group: UserGroup, allowed: frozenset, now) -> int:
        families = session.scalars(
            select(TokenFamily).join(Membership, Membership.id == TokenFamily.membership_id)
            .where(Membership.group_id == group.id, Membership.ended_at.is_(None),
                   TokenFamily.revoked_at.is_(None))).all()
        count = 0
        for old in families:
            scope = [s for s in old.scope.split() if s in allowed]
            if len(scope) == len(old.scope.split()):
                continue  # still covered
            self.memberships.revocations.supersede_family(session, old, scope=" ".join(scope),
                                                          now=now)
            count += 1
        return count

    # --- invitations ---
    def invite(self, session, tenant, *, group_id, subject=None, email=None, by: str,
               now: datetime) -> Invitation:
        group = self.group(session, tenant.id, group_id)
        if bool(subject) == bool(email):
            raise InvalidInput("invite by exactly one of subject or email", code="invitee_ambiguous")
        if subject is not None and (not isinstance(subject, str) or not 0 < len(subject) <= 255
                                    or not subject.isprintable()):
            raise InvalidInput("subject must be the advisor's subject at the identity provider",
                               code="invitee_subject_invalid")
        if email is not None and (not isinstance(email, str) or not _EMAIL.match(email)):
            raise InvalidInput("email is not an e-mail address", code="invitee_email_invalid")
        # The invitee is shown to the tenant (invitations, access log): the free-text rule.
        check_text(email, field="email", max_length=320)
        invitation = Invitation(
            id=str(uuid.uuid4()), tenant_id=tenant.id, group_id=group.id,
            invitee_subject=subject, invitee_email=email.lower() if email else None,
            created_by=by, created_at=now, expires_at=now + timedelta(days=INVITATION_DAYS))
        session.add(invitation)
        audit.record(session, "invitation.changed", now, tenant_id=tenant.id, actor=by,
                     actor_role="tenant_admin", invitation=invitation.id, group=group.id,
                     invitee=subject or email, change="created")
        return invitation

    @staticmethod
    def invitations(session, tenant_id: str, now: datetime) -> list[Invitation]:
        return list(session.scalars(select(Invitation).where(
            Invitation.tenant_id == tenant_id, Invitation.accepted_at.is_(None),
            Invitation.withdrawn_at.is_(None), Invitation.expires_at > now)
            .order_by(Invitation.created_at)))

    @staticmethod
    def _invitation(session, invitation_id) -> Invitation | None:
        return session.get(Invitation, invitation_id) if isinstance(invitation_id, str) and \
            len(invitation_id) <= 36 else None

    def withdraw(self, session, tenant_id: str, invitation_id, *, by: str, now: datetime) -> None:
        invitation = self._invitation(session, invitation_id)
        if invitation is None or invitation.tenant_id != tenant_id:
            raise NotFound("no such invitation in this tenant", code="unknown_invitation")
        if invitation.accepted_at or invitation.withdrawn_at or invitation.expires_at <= now:
            raise Conflict("this invitation is no longer open", code="invitation_not_open")
        invitation.withdrawn_at = now
        audit.record(session, "invitation.changed", now, tenant_id=tenant_id, actor=by,
                     actor_role="tenant_admin", invitation=invitation.id, change="withdrawn")

    @staticmethod
    def addressed_to(invitation: Invitation, identity) -> bool:
        if invitation.invitee_subject is not None:
            return invitation.invitee_subject == identity.subject
        email = identity.claims.get("email")
        # Only a verified address may claim an invitation sent to it (Keycloak and most
        # providers say so in email_verified).
        return isinstance(email, str) and email.lower() == invitation.invitee_email and \
            identity.claims.get("email_verified") is True

    def my_invitations(self, session, identity, now: datetime) -> list[Invitation]:
        email = identity.claims.get("email")
        candidates = session.scalars(select(Invitation).where(
            Invitation.accepted_at.is_(None), Invitation.withdrawn_at.is_(None),
            Invitation.expires_at > now,
            (Invitation.invitee_subject == identity.subject)
            | (Invitation.invitee_email == (email.lower() if isinstance(email, str) else None))))
        return [i for i in candidates if self.addressed_to(i, identity)]

    def accept(self, session, invitation_id, identity, *, now: datetime) -> Membership:
        invitation = self._invitation(session, invitation_id)
        if invitation is None or not self.addressed_to(invitation, identity):
            raise NotFound("no such invitation for you", code="invitation_not_for_you")
        if invitation.withdrawn_at is not None:
            raise Conflict("this invitation was withdrawn", code="invitation_withdrawn")
        if invitation.accepted_at is not None:
            raise Conflict("this invitation was already accepted", code="invitation_accepted")
        if invitation.expires_at <= now:
            raise Conflict("this invitation has expired; ask the tenant for a new one",
                           code="invitation_expired")
        tenant = self.memberships.tenant(session, invitation.tenant_id)
        group = self.group(session, tenant.id, invitation.group_id)
        current = self.memberships.active(session, tenant.id, identity.subject)
        if current is not None and not self.memberships.end_if_expired(session, current, now):
            raise Conflict("you already have access to this tenant as "
                           f"{current.kind} advisor; it must end before you join as a guest",
                           code="already_member_as_advisor")
        membership = self.memberships.create(
            session, tenant, subject=identity.subject, name=identity.username, kind="guest",
            created_by=identity.subject, actor_role="advisor", now=now, group_id=group.id,
            detail={"invitation": invitation.id, "invited_by": invitation.created_by})
        invitation.accepted_at, invitation.membership_id = now, membership.id
        return membership


def guest_scopes(session, membership) -> frozenset[str]:
    group = session.get(UserGroup, membership.group_id) if membership.group_id else None
    if group is None or group.deleted_at is not None:
        return frozenset()
    return frozenset(group.permissions)


__all__ = ["Forbidden", "Guests", "check_permissions", "guest_scopes"]
