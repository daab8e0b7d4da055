"""Four eyes (Vier-Augen-Prinzip): decisions of a tenant that take effect only when two
different admins of it have approved them.

A tenant asks for it with its setting ``four_eyes``. Each decision that may need it is an
:class:`Action`, registered by name on :class:`FourEyes`; an admin's approval of one goes
through :meth:`FourEyes.approve`, in the caller's transaction:

- nothing pending and the tenant does not ask for four eyes: the action is applied at once,
  with that one admin as its approver;
- nothing pending and the tenant asks for four eyes: the approval is stored as a pending
  :class:`~idp_bridge.storage.models.Approval` (the first approver, when, the terms),
  audited ``approval.requested`` and announced to the listeners (the tenant's admins are
  notified); nothing else changes;
- a first approval pending: a *different* admin's approval applies the action with both
  names (audited ``approval.completed``; the action's own audit event names both too). The
  same admin again is refused (``same_approver``) and changes nothing.

Any admin of the tenant may reject a pending approval (``approval.rejected``); a pending
approval also ends when what it is about ends (:meth:`FourEyes.close`, e.g. a denied access
request) and when it expires unanswered (:meth:`FourEyes.expire_due`, the maintenance loop).

To put another decision under four eyes (e.g. accepting a permanent advisor): register an
:class:`Action` with the function that applies it, and let its use case call
:meth:`FourEyes.approve` where it applied the decision directly. Its pending approvals then
appear on the help page and under ``/api/tenants/{t}/approvals``, and can be completed or
rejected there, without further work.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import select

from ..storage.models import Approval
from . import audit
from .errors import Conflict, Forbidden, NotFound
from .memberships import plausible_id

STATUSES = ("pending", "completed", "rejected", "closed", "expired")


@dataclass(frozen=True)
class Action:
    """A decision that four eyes may hold back.

    - ``apply(session, tenant, target, terms, approvers, now)`` makes the decision (the
      approvers' subjects in order) and returns what the use case answers; it may raise a
      :class:`~idp_bridge.domain.errors.DomainError`, and then nothing changes;
    - ``check(session, tenant, target, by)`` refuses an approver (e.g. the advisor whose
      request it is), before anything is stored;
    - ``combine(first_terms, second_terms)`` the terms a second approval applies; by
      default the second approver confirms the first's terms as they are (different terms
      are refused, ``approval_terms_differ``);
    - ``expires(session, tenant, target, now)`` when a first approval lapses unanswered
      (default: the :class:`FourEyes` expiry after it was given).
    """

    name: str
    apply: Callable
    check: Callable | None = None
    combine: Callable | None = None
    expires: Callable | None = None


@dataclass(frozen=True)
class Outcome:
    """An admin's approval: ``applied`` (then ``result`` is what the action returned) or
    held as the pending ``approval``; ``approvers`` as far as they go."""

    applied: bool
    approval: Approval | None
    result: object
    approvers: tuple[str, ...]


class FourEyes:
    def __init__(self, *, expiry_hours: int, listeners=()):
        self.expiry = timedelta(hours=expiry_hours)
        self.actions: dict[str, Action] = {}
        #: Called as ``listener(session, event, approval, now)`` with event ``requested``,
        #: ``completed``, ``rejected``, ``closed`` or ``expired``, in the transaction.
        self.listeners = list(listeners)

    def register(self, action: Action) -> None:
        assert action.name not in self.actions, action.name
        self.actions[action.name] = action

    @staticmethod
    def required(tenant) -> bool:
        return bool(tenant.four_eyes)

    # --- queries ---
    @staticmethod
    def pending(session, tenant_id: str, now: datetime) -> list[Approval]:
        """The tenant's pending approvals (not lapsed), oldest first."""
        return list(session.scalars(select(Approval).where(
            Approval.tenant_id == tenant_id, Approval.status == "pending",
            Approval.expires_at > now).order_by(Approval.requested_at, Approval.id)))

    @staticmethod
    def pending_for(session, tenant_id: str, action: str, target: str, *,
                    lock: bool = False) -> Approval | None:
        """The pending approval of ``action`` on ``target`` (lapsed or not)."""
        statement = select(Approval).where(
            Approval.tenant_id == tenant_id, Approval.action == action,
            Approval.target == target, Approval.status == "pending")
        if lock:
            statement = statement.with_for_update()
        return session.scalars(statement).first()

    @staticmethod
    def get(session, tenant_id: str, approval_id) -> Approval:
        approval = session.get(Approval, approval_id, with_for_update=True) \
            if plausible_id(approval_id) else None
        if approval is None or approval.tenant_id != tenant_id:
            raise NotFound("no such approval in this tenant", code="unknown_approval")
        return approval

    # --- decisions ---
    def approve(self, session, tenant, action: str, target: str, terms: dict, *, by: str,
                now: datetime) -> Outcome:
        """One admin's approval of ``action`` on ``target`` with ``terms`` (see the module
        docstring): applied, held as a first approval, or completing the pending one."""
        spec = self.actions[action]
        if spec.check is not None:
            spec.check(session, tenant, target, by)
        pending = self.pending_for(session, tenant.id, action, target, lock=True)
        if pending is not None and pending.expires_at <= now:
            self._end(session, pending, "expired", by="system", now=now)
            session.flush()
            pending = None
        if pending is not None:
            return self._complete(session, tenant, spec, pending, terms, by, now)
        if not self.required(tenant):
            return Outcome(True, None, spec.apply(session, tenant, target, terms, (by,), now),
                           (by,))
        expires = spec.expires(session, tenant, target, now) if spec.expires else None
        approval = Approval(
            id=str(uuid.uuid4()), tenant_id=tenant.id, action=action, target=target,
            terms=dict(terms), status="pending", requested_by=by, requested_at=now,
            expires_at=min(expires or now + self.expiry, now + self.expiry))
        session.add(approval)
        session.flush()  # the partial unique index refuses a concurrent first approval
        audit.record(session, "approval.requested", now, tenant_id=tenant.id, actor=by,
                     actor_role="tenant_admin", approval=approval.id, action=action,
                     target=target, terms=approval.terms, expires_at=_iso(approval.expires_at))
        self._tell(session, "requested", approval, now)
        return Outcome(False, approval, None, (by,))

    def confirm(self, session, tenant, approval_id, *, by: str, now: datetime) -> Outcome:
        """A second admin's approval of the pending approval ``approval_id``: the action
        is applied with the first approver's terms."""
        approval = self.get(session, tenant.id, approval_id)
        self.check_open(approval, now)
        spec = self.actions[approval.action]
        if spec.check is not None:
            spec.check(session, tenant, approval.target, by)
        return self._complete(session, tenant, spec, approval, {}, by, now)

    def reject(self, session, tenant, approval_id, *, by: str, note: str | None,
               now: datetime) -> Approval:
        """Any admin of the tenant (the first approver too, taking it back) rejects a
        pending approval: nothing of it is applied."""
        approval = self.get(session, tenant.id, approval_id)
        self.check_open(approval, now)
        self._end(session, approval, "rejected", by=by, now=now, note=note)
        return approval

    def close(self, session, tenant_id: str, action: str, target: str, *, by: str,
              actor_role: str, reason: str, now: datetime) -> Approval | None:
        """End the pending approval of ``action`` on ``target`` because what it is about
        ended (``reason``, e.g. ``request_denied``); None when there was none."""
        approval = self.pending_for(session, tenant_id, action, target, lock=True)
        if approval is None:
            return None
        self._end(session, approval, "closed", by=by, now=now, reason=reason,
                  actor_role=actor_role)
        return approval

    def expire_due(self, session, now: datetime) -> int:
        """Mark every pending approval past its expiry expired (the maintenance loop)."""
        due = session.scalars(select(Approval).where(
            Approval.status == "pending", Approval.expires_at <= now)).all()
        for approval in due:
            self._end(session, approval, "expired", by="system", now=now)
        return len(due)

    @staticmethod
    def check_open(approval: Approval, now: datetime) -> None:
        """Refuse (changing nothing) an approval that is no longer pending."""
        if approval.status == "pending" and approval.expires_at > now:
            return
        if approval.status == "completed":
            raise Conflict("this approval is already completed", code="approval_completed")
        if approval.status == "rejected":
            raise Conflict("this approval was rejected", code="approval_rejected")
        if approval.status == "closed":
            raise Conflict("what this approval was about has ended", code="approval_closed")
        raise Conflict("this approval has expired", code="approval_expired")

    # --- helpers ---
    def _complete(self, session, tenant, spec: Action, approval: Approval, terms: dict,
                  by: str, now: datetime) -> Outcome:
        if by == approval.requested_by:
            raise Forbidden("four eyes: a second, different admin of the tenant must approve "
                            "this", code="same_approver")
        combined = spec.combine(dict(approval.terms), terms) if spec.combine else \
            _confirmed(approval.terms, terms)
        approvers = (approval.requested_by, by)
        result = spec.apply(session, tenant, approval.target, combined, approvers, now)
        approval.status, approval.decided_by, approval.decided_at = "completed", by, now
        audit.record(session, "approval.completed", now, tenant_id=tenant.id, actor=by,
                     actor_role="tenant_admin", approval=approval.id, action=approval.action,
                     target=approval.target, terms=combined, first_approver=approvers[0],
                     second_approver=approvers[1])
        self._tell(session, "completed", approval, now)
        return Outcome(True, approval, result, approvers)

    def _end(self, session, approval: Approval, status: str, *, by: str, now: datetime,
             note: str | None = None, reason: str | None = None,
             actor_role: str = "tenant_admin") -> None:
        approval.status, approval.decided_by, approval.decided_at = status, by, now
        approval.note = note
        detail = {"note": note} if note else {}
        if reason:
            detail["reason"] = reason
        audit.record(session, f"approval.{status}", now, tenant_id=approval.tenant_id,
                     actor=by, actor_role="system" if by == "system" else actor_role,
                     approval=approval.id, action=approval.action, target=approval.target,
                     first_approver=approval.requested_by, **detail)
        self._tell(session, status, approval, now)

    def _tell(self, session, event: str, approval: Approval, now: datetime) -> None:
        for listener in self.listeners:
            listener(session, event, approval, now)


def _confirmed(first: dict, second: dict) -> dict:
    """The default combination: the second approver confirms the first's terms."""
    differing = {k: v for k, v in (second or {}).items() if v is not None and first.get(k) != v}
    if differing:
        raise Conflict("four eyes: the second approval must confirm the first approval's "
                       "terms as they are; reject it and propose anew to change them",
                       code="approval_terms_differ")
    return dict(first)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None
