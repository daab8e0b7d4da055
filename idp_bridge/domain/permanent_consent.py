"""Permanent advisors with the tenant's consent, and their periodic re-confirmation
(issue 15 item 2).

How a permanent advisor comes in is a tenant setting, ``tenants.permanent_mode``:

- ``direct`` (the default, today's behaviour): support assigns a permanent advisor
  (:meth:`PermanentConsent.assign`, i.e. :meth:`Memberships.assign_permanent`);
- ``accept``: support may only *propose* one (:meth:`PermanentConsent.propose`); nothing is
  live until an admin of the tenant accepts the proposal (:meth:`PermanentConsent.accept`),
  through four eyes (:class:`~idp_bridge.domain.approvals.FourEyes`, action :data:`ACCEPT`):
  under the tenant's four eyes a second, different admin must accept too. An admin may
  decline it with a note; support may withdraw it. A proposal nobody answers expires after
  ``proposal_expiry_days`` (the maintenance loop, :meth:`PermanentConsent.expire_proposals`;
  the tenant's admins are told, and its pending first acceptance ends with it): an answer
  months later would consent to a situation nobody remembers. Support may propose in
  ``direct`` mode as well (to ask first). A direct assignment in ``accept`` mode is refused
  (``tenant_consent_required``) and changes nothing.

Turning ``accept`` on tightens (at once); back to ``direct`` loosens and needs four eyes
(:mod:`idp_bridge.domain.tenant_settings`).

Re-confirmation. Every permanent membership carries ``confirmed_at`` (its creation, or the
last re-confirmation by a tenant admin, :meth:`PermanentConsent.reconfirm`). It is due
``reconfirm_days`` later; the maintenance loop (:meth:`PermanentConsent.sweep`) asks the
tenant's admins ``notice_days`` ahead of the due date, once, and when it is still
unconfirmed ``grace_days`` after the due date, ends it through the one home of revocation
(reason ``reconfirmation_lapsed``): its tokens die at once, the feed has the event, and the
tenant's admins and the advisor are told (the membership listeners). Neither the advisor
nor support can re-confirm or accept the advisor's own access (``own_permanent_access``).

Every change is audited (``permanent_advisor.*``) and told to the listeners, in the
transaction that makes it.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import select

from ..storage.models import Membership, PermanentProposal
from . import audit
from .approvals import Action
from .errors import Conflict, Forbidden, InvalidInput, NotFound
from .memberships import plausible_id
from .text import check_text

#: ``tenants.permanent_mode``.
MODES = ("direct", "accept")
STATUSES = ("pending", "accepted", "declined", "withdrawn", "expired")
#: The four-eyes action of accepting a proposal (its target: the proposal's id).
ACCEPT = "permanent_advisor.accept"
NOTE_MAX_LENGTH = 500


def check_mode(value) -> str:
    if value not in MODES:
        raise InvalidInput("permanent_mode must be one of direct, accept",
                           code="permanent_mode_invalid")
    return value


def requires_consent(tenant) -> bool:
    return (tenant.permanent_mode or "direct") == "accept"


def _own(description: str) -> Forbidden:
    return Forbidden(description, code="own_permanent_access")


class PermanentConsent:
    def __init__(self, *, memberships, four_eyes, reconfirm_days: int, grace_days: int,
                 notice_days: int = 14, proposal_expiry_days: int = 30,
                 reason_max_length: int = 2000, listeners=()):
        self.memberships = memberships
        self.four_eyes = four_eyes
        self.period = timedelta(days=reconfirm_days)
        self.grace = timedelta(days=grace_days)
        #: Asked this long before the due date (never before the confirmation itself).
        self.notice = timedelta(days=min(notice_days, reconfirm_days))
        #: A pending proposal unanswered this long expires.
        self.proposal_expiry = timedelta(days=proposal_expiry_days)
        self.reason_max_length = reason_max_length
        #: Called as ``listener(session, event, subject, now)``: ``proposed``, ``accepted``,
        #: ``declined``, ``withdrawn``, ``expired`` (subject: the proposal) and ``reconfirmation_due``,
        #: ``reconfirmed`` (subject: the membership), in the transaction.
        self.listeners = list(listeners)
        four_eyes.register(Action(ACCEPT, apply=self._apply_accept, check=self._check_acceptor))

    # --- dates ---
    def due_at(self, membership) -> datetime | None:
        """When the permanent ``membership`` must be re-confirmed (None for other kinds)."""
        if membership.kind != "permanent" or membership.confirmed_at is None:
            return None
        return membership.confirmed_at + self.period

    def lapses_at(self, membership) -> datetime | None:
        due = self.due_at(membership)
        return due + self.grace if due is not None else None

    # --- support ---
    def assign(self, session, tenant, *, subject: str, name: str | None, by: str,
               now: datetime):
        """Support's direct assignment (``direct`` mode only); (membership, created)."""
        if requires_consent(tenant):
            raise Conflict("this tenant accepts permanent advisors itself: propose the advisor "
                           "instead", code="tenant_consent_required")
        return self.memberships.assign_permanent(session, tenant, subject=subject, name=name,
                                                 by=by, now=now)

    def propose(self, session, tenant, *, subject: str, name: str | None, by: str,
                reason=None, now: datetime) -> PermanentProposal:
        reason = check_text(reason, field="reason", max_length=self.reason_max_length)
        current = self.memberships.active(session, tenant.id, subject)
        if current is not None and current.kind == "permanent":
            raise Conflict("this advisor is already a permanent advisor of the tenant",
                           code="already_permanent")
        if current is not None and current.kind == "guest":
            raise Conflict("this advisor is a guest of the tenant; remove the guest access first",
                           code="advisor_is_guest")
        pending = session.scalars(select(PermanentProposal).where(
            PermanentProposal.tenant_id == tenant.id,
            PermanentProposal.advisor_subject == subject,
            PermanentProposal.status == "pending").with_for_update()).first()
        if pending is not None:
            raise Conflict("a proposal of this advisor awaits the tenant's answer",
                           code="proposal_pending")
        proposal = PermanentProposal(
            id=str(uuid.uuid4()), tenant_id=tenant.id, advisor_subject=subject,
            advisor_name=name, reason=reason, status="pending", proposed_by=by, proposed_at=now)
        session.add(proposal)
        session.flush()  # the partial unique index refuses a concurrent second proposal
        audit.record(session, "permanent_advisor.proposed", now, tenant_id=tenant.id, actor=by,
                     actor_role="support_admin", proposal=proposal.id, advisor=subject,
                     advisor_name=name, reason=reason)
        self._tell(session, "proposed", proposal, now)
        return proposal

    def expires_at(self, proposal) -> datetime:
        """When the pending ``proposal`` expires unanswered."""
        return proposal.proposed_at + self.proposal_expiry

    def withdraw(self, session, tenant, proposal_id, *, by: str, now: datetime):
        proposal = self.get(session, tenant.id, proposal_id, lock=True)
        self.check_open(proposal, now)
        self._decide(session, proposal, "withdrawn", by=by, actor_role="support_admin", now=now)
        return proposal

    # --- the tenant's admins ---
    def accept(self, session, tenant, proposal_id, *, by: str, now: datetime):
        """An admin's acceptance (:meth:`FourEyes.approve`): the permanent membership at
        once, or under four eyes the first acceptance held / the second completing it."""
        proposal = self.get(session, tenant.id, proposal_id, lock=True)
        self.check_open(proposal, now)
        if by == proposal.advisor_subject:
            raise _own("you cannot accept yourself as a permanent advisor; another admin of "
                       "the tenant must")
        return self.four_eyes.approve(session, tenant, ACCEPT, proposal.id, {}, by=by, now=now)

    def decline(self, session, tenant, proposal_id, *, by: str, note, now: datetime):
        proposal = self.get(session, tenant.id, proposal_id, lock=True)
        self.check_open(proposal, now)
        note = check_text(note, field="note", max_length=NOTE_MAX_LENGTH, required=True)
        self._decide(session, proposal, "declined", by=by, actor_role="tenant_admin", now=now,
                     note=note)
        return proposal

    def reconfirm(self, session, tenant, membership_id, *, by: str, now: datetime):
        """A tenant admin confirms the permanent advisor again: the next re-confirmation is
        due ``reconfirm_days`` from now."""
        membership = self.memberships.get_for_tenant(session, tenant.id, membership_id)
        if membership.kind != "permanent":
            raise Conflict("only permanent advisors are re-confirmed", code="not_permanent")
        if by == membership.advisor_subject:
            raise _own("you cannot re-confirm your own permanent access; another admin of the "
                       "tenant must")
        previous = self.due_at(membership)
        membership.confirmed_at, membership.reconfirm_asked_at = now, None
        audit.record(session, "permanent_advisor.reconfirmed", now, tenant_id=tenant.id,
                     actor=by, actor_role="tenant_admin", membership_id=membership.id,
                     advisor=membership.advisor_subject, previous_due_at=_iso(previous),
                     due_at=_iso(self.due_at(membership)))
        self._tell(session, "reconfirmed", membership, now)
        return membership

    # --- the maintenance loop ---
    def sweep(self, session, now: datetime) -> tuple[int, int]:
        """Ask the tenants' admins about re-confirmations due within ``notice_days`` (once
        each), and end permanent memberships unconfirmed ``grace_days`` after their due
        date; returns (asked, ended)."""
        lapsed = session.scalars(select(Membership).where(
            Membership.kind == "permanent", Membership.ended_at.is_(None),
            Membership.confirmed_at <= now - self.period - self.grace)).all()
        ended = 0
        for membership in lapsed:
            audit.record(session, "permanent_advisor.lapsed", now,
                         tenant_id=membership.tenant_id, actor="system", actor_role="system",
                         membership_id=membership.id, advisor=membership.advisor_subject,
                         due_at=_iso(self.due_at(membership)))
            ended += self.memberships.end(session, membership, by="system", actor_role="system",
                                          reason="reconfirmation_lapsed", now=now)
        due = session.scalars(select(Membership).where(
            Membership.kind == "permanent", Membership.ended_at.is_(None),
            Membership.reconfirm_asked_at.is_(None),
            Membership.confirmed_at <= now - self.period + self.notice)).all()
        for membership in due:
            membership.reconfirm_asked_at = now
            audit.record(session, "permanent_advisor.reconfirmation_due", now,
                         tenant_id=membership.tenant_id, actor="system", actor_role="system",
                         membership_id=membership.id, advisor=membership.advisor_subject,
                         due_at=_iso(self.due_at(membership)),
                         lapses_at=_iso(self.lapses_at(membership)))
            self._tell(session, "reconfirmation_due", membership, now)
        return len(due), ended

    def expire_proposals(self, session, now: datetime) -> int:
        """Mark the pending proposals unanswered for ``proposal_expiry_days`` expired (the
        maintenance loop), ending a pending first acceptance with each; returns how many."""
        due = session.scalars(select(PermanentProposal).where(
            PermanentProposal.status == "pending",
            PermanentProposal.proposed_at <= now - self.proposal_expiry)
            .with_for_update()).all()
        for proposal in due:
            self._decide(session, proposal, "expired", by="system", actor_role="system",
                         now=now)
        return len(due)

    # --- queries ---
    @staticmethod
    def get(session, tenant_id: str | None, proposal_id, *, lock: bool = False):
        found = session.get(PermanentProposal, proposal_id, with_for_update=lock) \
            if plausible_id(proposal_id) else None
        if found is None or (tenant_id is not None and found.tenant_id != tenant_id):
            raise NotFound("no such proposal of a permanent advisor", code="unknown_proposal")
        return found

    def pending_for_tenant(self, session, tenant_id: str, now: datetime | None = None
                           ) -> list[PermanentProposal]:
        """The tenant's open proposals (not past their expiry when ``now`` is given)."""
        statement = select(PermanentProposal).where(
            PermanentProposal.tenant_id == tenant_id, PermanentProposal.status == "pending")
        if now is not None:
            statement = statement.where(PermanentProposal.proposed_at > now - self.proposal_expiry)
        return list(session.scalars(statement
            .order_by(PermanentProposal.proposed_at, PermanentProposal.id)))

    def pending_all(self, session, tenant_id: str | None = None,
                    now: datetime | None = None) -> list[PermanentProposal]:
        statement = select(PermanentProposal).where(PermanentProposal.status == "pending")
        if now is not None:
            statement = statement.where(PermanentProposal.proposed_at > now - self.proposal_expiry)
        if tenant_id:
            statement = statement.where(PermanentProposal.tenant_id == tenant_id)
        return list(session.scalars(statement.order_by(
            PermanentProposal.tenant_id, PermanentProposal.proposed_at, PermanentProposal.id)))

    def check_open(self, proposal: PermanentProposal, now: datetime) -> None:
        """Refuse (changing nothing) a proposal that is answered, withdrawn or expired (also
        one past its expiry that the maintenance loop has not marked yet)."""
        if proposal.status == "pending" and self.expires_at(proposal) > now:
            return
        if proposal.status in ("expired", "pending"):
            raise Conflict("this proposal expired unanswered; support may propose the advisor "
                           "again", code="proposal_expired")
        raise Conflict(f"this proposal is already {proposal.status}", code="proposal_closed")

    # --- the four-eyes action ---
    def _check_acceptor(self, session, tenant, target: str, by: str) -> None:
        if by == self.get(session, tenant.id, target).advisor_subject:
            raise _own("you cannot accept yourself as a permanent advisor; another admin of "
                       "the tenant must")

    def _apply_accept(self, session, tenant, target: str, _terms: dict,
                      approvers: tuple[str, ...], now: datetime):
        proposal = self.get(session, tenant.id, target, lock=True)
        self.check_open(proposal, now)
        membership, _created = self.memberships.assign_permanent(
            session, tenant, subject=proposal.advisor_subject, name=proposal.advisor_name,
            by=approvers[-1], now=now, actor_role="tenant_admin",
            detail={"proposal": proposal.id, "proposed_by": proposal.proposed_by,
                    "accepted_by": list(approvers)})
        proposal.status, proposal.decided_at, proposal.decided_by = "accepted", now, approvers[-1]
        proposal.accepted_by, proposal.membership_id = list(approvers), membership.id
        audit.record(session, "permanent_advisor.accepted", now, tenant_id=tenant.id,
                     actor=approvers[-1], actor_role="tenant_admin", membership_id=membership.id,
                     proposal=proposal.id, advisor=proposal.advisor_subject,
                     accepted_by=list(approvers), due_at=_iso(self.due_at(membership)))
        self._tell(session, "accepted", proposal, now)
        return membership

    # --- helpers ---
    def _decide(self, session, proposal, status: str, *, by: str, actor_role: str,
                now: datetime, note: str | None = None) -> None:
        proposal.status, proposal.decided_at, proposal.decided_by = status, now, by
        proposal.decision_note = note
        self.four_eyes.close(session, proposal.tenant_id, ACCEPT, proposal.id, by=by,
                             actor_role=actor_role, reason=f"proposal_{status}", now=now)
        audit.record(session, f"permanent_advisor.{status}", now, tenant_id=proposal.tenant_id,
                     actor=by, actor_role=actor_role, proposal=proposal.id,
                     advisor=proposal.advisor_subject, **({"note": note} if note else {}))
        self._tell(session, status, proposal, now)

    def _tell(self, session, event: str, subject, now: datetime) -> None:
        for listener in self.listeners:
            listener(session, event, subject, now)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None
