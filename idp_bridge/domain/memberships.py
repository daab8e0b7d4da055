"""Memberships (Zugriffe) and their grants, DESIGN.md sections 1 and 8.

Ending a membership goes through :mod:`idp_bridge.domain.revocation` (the one home of
revocation): the membership is marked ended, every token family of its grant revoked, the
grant appended to the feed and the end audited, in the caller's transaction. Nothing is
deleted, and nothing revives an ended membership: redeeming a new code creates a new
membership with a new ``grant_id``.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select

from ..storage.models import Membership, Tenant
from . import audit
from .errors import Conflict, InvalidInput, NotFound
from .revocation import END_REASONS, Revocations
from .text import check_text

KINDS = ("temporary", "permanent", "guest")


#: A name per advisor: the newest of their memberships in the tenant that has one, one
#: statement (compiled once) per subject, each read through
#: ``ix_memberships_tenant_subject_created`` (migration 0021): the cost follows the subjects
#: asked for, not how many memberships the tenant has kept (the access log read all of them).
_NEWEST_NAME = (select(Membership.advisor_name)
                .where(Membership.tenant_id == bindparam("tenant_id"),
                       Membership.advisor_subject == bindparam("subject"),
                       Membership.advisor_name.is_not(None))
                .order_by(Membership.created_at.desc()).limit(1))
_NEWEST_NAME_NOT_PERMANENT = _NEWEST_NAME.where(Membership.kind != "permanent")


def advisor_names(session, tenant_id: str, subjects, *, permanent: bool = True) -> dict[str, str]:
    """What the tenant's memberships call each of ``subjects`` (the name the advisor's own
    sign-in gave when they joined), newest membership first; subjects without one are
    absent. ``permanent=False``: permanent memberships' names are not used."""
    statement = _NEWEST_NAME if permanent else _NEWEST_NAME_NOT_PERMANENT
    names = {}
    for subject in sorted(set(subjects)):
        name = session.scalar(statement, {"tenant_id": tenant_id, "subject": subject})
        if name is not None:
            names[subject] = name
    return names


class Memberships:
    def __init__(self, *, default_max_age_days: int, reason_max_length: int, listeners=(),
                 revocations: Revocations | None = None):
        self.default_max_age_days = default_max_age_days
        self.reason_max_length = reason_max_length
        #: Called as ``listener(session, event, membership, now)`` with event ``created`` or
        #: ``ended``, inside the transaction that makes the change (outboxes: the upstream
        #: mirror, notifications), so their work is durable exactly when the change is.
        self.listeners = list(listeners)
        #: Ends grants (without wake-ups when none is given: a CLI run wakes no feed).
        self.revocations = revocations if revocations is not None else Revocations()

    # --- queries ---
    @staticmethod
    def tenant(session, tenant_id: str) -> Tenant:
        """The tenant named by ``tenant_id``, read from the tenants table (the first check of
        every request naming a tenant), else :class:`NotFound`. The description does not
        repeat the input."""
        tenant = session.get(Tenant, tenant_id) if plausible_id(tenant_id) else None
        if tenant is None:
            raise NotFound("unknown tenant", code="unknown_tenant")
        return tenant

    def active(self, session, tenant_id: str, subject: str) -> Membership | None:
        """The active membership of ``subject`` in ``tenant_id`` (the tenant is validated
        first: an unknown tenant raises :class:`NotFound`), looked up by both columns."""
        tenant = self.tenant(session, tenant_id)
        if not isinstance(subject, str):
            return None
        return session.scalars(select(Membership).where(
            Membership.tenant_id == tenant.id, Membership.advisor_subject == subject,
            Membership.ended_at.is_(None))).first()

    @staticmethod
    def list_for_tenant(session, tenant_id: str, now: datetime | None = None) -> list[Membership]:
        """Memberships not ended; with ``now``, also without those past their maximum age
        (expired but not yet swept: they grant nothing, so they must not be shown)."""
        return list(session.scalars(
            select(Membership).where(Membership.tenant_id == tenant_id,
                                     Membership.ended_at.is_(None), *_unexpired(now))
            .order_by(Membership.created_at)))

    @staticmethod
    def list_for_advisor(session, subject: str, now: datetime | None = None) -> list[Membership]:
        return list(session.scalars(
            select(Membership).where(Membership.advisor_subject == subject,
                                     Membership.ended_at.is_(None), *_unexpired(now))
            .order_by(Membership.created_at)))

    def check_reason(self, reason: str | None) -> str | None:
        # Shown to the tenant (help page, access log, CSV): the shared free-text rule.
        return check_text(reason, field="reason", max_length=self.reason_max_length)

    def max_age(self, tenant: Tenant) -> timedelta:
        return timedelta(days=tenant.temporary_max_age_days or self.default_max_age_days)

    def check_max_age_days(self, days) -> int:
        """``days`` if a tenant may set it as its maximum age of temporary access (1 to
        ``default_max_age_days``), else :class:`InvalidInput` ``max_age_out_of_range``."""
        limit = self.default_max_age_days
        if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= limit:
            raise InvalidInput(f"temporary_max_age_days must be an integer from 1 to {limit}",
                               code="max_age_out_of_range")
        return days

    def set_temporary_max_age(self, session, tenant: Tenant, days, now: datetime) -> int:
        """Set the tenant's maximum age of temporary access; returns the number of
        memberships that ended because of it.

        A tenant may only shorten the configured maximum (``days`` from 1 to
        ``default_max_age_days``, else :class:`InvalidInput`). The shorter maximum applies to
        the temporary advisors already in the tenant too: their expiry moves forward, and
        those now past it end at once. Only this tenant's memberships are touched.
        """
        tenant.temporary_max_age_days = self.check_max_age_days(days)
        members = self.list_for_tenant(session, tenant.id)
        for m in members:
            if m.kind == "temporary":
                m.expires_at = min(m.expires_at, m.created_at + self.max_age(tenant))
        return sum(self.end_if_expired(session, m, now) for m in members)

    # --- lifecycle ---
    def create(self, session, tenant: Tenant, *, subject: str, name: str | None, kind: str,
               created_by: str, actor_role: str, now: datetime, reason: str | None = None,
               client_id: str | None = None, group_id: str | None = None,
               detail: dict | None = None, duration: timedelta | None = None) -> Membership:
        """A new active membership; ``detail`` adds to its audit event. A temporary one
        expires after ``duration`` (an approved access request), at most after the tenant's
        maximum age (the default)."""
        assert kind in KINDS
        assert (kind == "guest") == (group_id is not None), "guests, and only guests, have a group"
        assert duration is None or kind == "temporary"
        lifetime = self.max_age(tenant) if duration is None else min(duration, self.max_age(tenant))
        membership = Membership(
            id=str(uuid.uuid4()), tenant_id=tenant.id, advisor_subject=subject,
            advisor_name=name, kind=kind, grant_id=str(uuid.uuid4()), reason=reason,
            created_at=now, created_by=created_by,
            expires_at=now + lifetime if kind == "temporary" else None,
            group_id=group_id,
            # A permanent advisor is confirmed by its creation (support's assignment, the
            # tenant's acceptance): re-confirmation is due from then (permanent_consent.py).
            confirmed_at=now if kind == "permanent" else None,
        )
        session.add(membership)
        # The partial unique index on (tenant_id, advisor_subject) of active memberships
        # refuses a second active membership here.
        session.flush()
        for listener in self.listeners:
            listener(session, "created", membership, now)
        audit.record(session, "membership.created", now, tenant_id=tenant.id, actor=created_by,
                     actor_role=actor_role, membership_id=membership.id, client_id=client_id,
                     advisor=subject, advisor_name=name, kind=kind, reason=reason,
                     **(detail or {}))
        return membership

    def end(self, session, membership: Membership, *, by: str, actor_role: str, reason: str,
            now: datetime) -> bool:
        """End ``membership`` and revoke its grant (:meth:`Revocations.end_membership`, with
        this object's listeners). Returns False if it had already ended."""
        assert reason in END_REASONS
        return self.revocations.end_membership(session, membership, by=by,
                                               actor_role=actor_role, reason=reason, now=now,
                                               listeners=self.listeners)

    def end_if_expired(self, session, membership: Membership, now: datetime) -> bool:
        if membership.expires_at is not None and membership.expires_at <= now:
            return self.end(session, membership, by="system", actor_role="system",
                            reason="expired", now=now)
        return False

    def expire_due(self, session, now: datetime) -> int:
        """End every temporary membership past its maximum age (a periodic sweep)."""
        due = session.scalars(select(Membership).where(
            Membership.ended_at.is_(None), Membership.expires_at.is_not(None),
            Membership.expires_at <= now)).all()
        return sum(self.end_if_expired(session, m, now) for m in due)

    def end_all_of_advisor(self, session, subject: str, *, reason: str, now: datetime) -> int:
        """End every live membership of ``subject`` (e.g. its upstream account ended)."""
        live = session.scalars(select(Membership).where(
            Membership.advisor_subject == subject, Membership.ended_at.is_(None))).all()
        return sum(self.end(session, m, by="system", actor_role="system", reason=reason, now=now)
                   for m in live)

    def get_for_tenant(self, session, tenant_id: str, membership_id: str) -> Membership:
        membership = session.get(Membership, membership_id) if plausible_id(membership_id) else None
        if membership is None or membership.tenant_id != tenant_id:
            raise NotFound("no such membership in this tenant", code="unknown_membership")
        if membership.ended_at is not None:
            raise Conflict("this membership has already ended", code="membership_ended")
        return membership

    def assign_permanent(self, session, tenant: Tenant, *, subject: str, name: str | None,
                         by: str, now: datetime, actor_role: str = "support_admin",
                         detail: dict | None = None) -> tuple[Membership, bool]:
        """Make ``subject`` a permanent advisor of ``tenant``; returns (membership, created).
        Support assigns (``actor_role`` ``support_admin``), or the tenant's admins accept
        support's proposal (``tenant_admin``, ``detail`` naming it).

        An active temporary membership is superseded (its grant revoked): its tokens say
        ``membership: temporary`` and must not outlive that fact.
        """
        current = self.active(session, tenant.id, subject)
        if current is not None and current.kind == "permanent":
            return current, False
        if current is not None and current.kind == "guest":
            raise Conflict("this advisor is a guest of the tenant; remove the guest access first",
                           code="advisor_is_guest")
        if current is not None:
            self.end(session, current, by=by, actor_role=actor_role, reason="superseded",
                     now=now)
            session.flush()
        membership = self.create(session, tenant, subject=subject, name=name, kind="permanent",
                                 created_by=by, actor_role=actor_role, now=now, detail=detail)
        return membership, True


def _unexpired(now: datetime | None) -> tuple:
    if now is None:
        return ()
    return ((Membership.expires_at.is_(None)) | (Membership.expires_at > now),)


def plausible_id(value) -> bool:
    """Whether ``value`` could be an id of ours (checked before it reaches a query)."""
    return isinstance(value, str) and 0 < len(value) <= 64 and value.isprintable()
