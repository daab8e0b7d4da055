"""Access requests (Zugriffsanfragen): an advisor asks a tenant for temporary access, and
the tenant's admins decide (issue 15 item 1).

Ways in. A tenant's setting ``access_modes`` says how an advisor may get temporary access:
``code`` (the access code, DESIGN.md section 7), ``request`` (a request its admins approve)
or ``both``. :func:`allows` is the one check, used here and by the code redemption
(:mod:`idp_bridge.domain.exchange`).

A request names the tenant, a reason or ticket (required: it is what the tenant decides on)
and a duration in hours, from 1 to the tenant's maximum age of temporary access. It is
refused, changing nothing, when the tenant allows only codes (``requests_not_allowed``),
while the advisor has live access (``already_member``), while another request of the
advisor for the tenant is pending (``request_pending``: one at a time, also a partial
unique index) and beyond :data:`MAX_PENDING_PER_ADVISOR` pending requests across tenants.

The answer:

- **approve** (optionally for a shorter duration than asked), through four eyes
  (:class:`~idp_bridge.domain.approvals.FourEyes`, action :data:`APPROVE`): under four eyes
  the first admin's approval is held pending until a second, different admin approves. Its
  effect is a temporary membership with that expiry (:meth:`Memberships.create`, capped at
  the tenant's maximum age like every temporary access); the advisor then exchanges without
  a code, as any member does. An advisor who is also an admin of the tenant never approves
  its own request (``own_request``);
- **deny** with a note (required: the advisor and the audit learn why); while the tenant
  allows codes only, a request made before can be denied but not approved;
- **withdraw** by the advisor;
- **expire** unanswered after ``expiry_hours`` (the maintenance loop; until it runs, an
  expired request is refused as expired and shown nowhere).

Every change is audited (``access_request.*``) and told to the listeners (the tenant's admins
and the advisor are notified) in the transaction that makes it.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, select

from ..storage.models import AccessRequest
from . import audit
from .approvals import Action
from .errors import Conflict, Forbidden, InvalidInput, NotFound
from .memberships import plausible_id
from .text import check_text

#: The ways in a tenant may allow (``tenants.access_modes``).
ACCESS_MODES = ("code", "request", "both")
STATUSES = ("pending", "approved", "denied", "expired", "withdrawn")
#: The four-eyes action of approving a request (its target: the request's id).
APPROVE = "access_request.approve"
#: Pending requests one advisor may have open across all tenants.
MAX_PENDING_PER_ADVISOR = 10
NOTE_MAX_LENGTH = 500


def allows(tenant, way: str) -> bool:
    """Whether ``tenant`` allows the way in ``way`` (``code`` or ``request``)."""
    assert way in ("code", "request")
    return (tenant.access_modes or "both") in (way, "both")


def check_access_modes(value) -> str:
    if value not in ACCESS_MODES:
        raise InvalidInput("access_modes must be one of code, request, both",
                           code="access_modes_invalid")
    return value


class DurationRefused(InvalidInput):
    """A duration that is not a whole number of hours from 1 to ``limit_hours``."""

    code = "duration_out_of_range"

    def __init__(self, limit_hours: int, description: str | None = None):
        super().__init__(description or
                         f"duration_hours must be an integer from 1 to {limit_hours}")
        self.limit_hours = limit_hours


class AccessRequests:
    def __init__(self, *, memberships, four_eyes, expiry_hours: int, listeners=()):
        self.memberships = memberships
        self.four_eyes = four_eyes
        self.expiry = timedelta(hours=expiry_hours)
        #: Called as ``listener(session, event, request, now)`` with event ``created``,
        #: ``approved``, ``denied``, ``withdrawn`` or ``expired``, in the transaction.
        self.listeners = list(listeners)
        four_eyes.register(Action(APPROVE, apply=self._grant, check=self._check_approver,
                                  combine=_shorter, expires=self._approval_expires))

    # --- rules ---
    def max_hours(self, tenant) -> int:
        return int(self.memberships.max_age(tenant).total_seconds() // 3600)

    def check_duration(self, tenant, hours, *, at_most: int | None = None) -> int:
        limit = self.max_hours(tenant) if at_most is None else min(at_most, self.max_hours(tenant))
        if not isinstance(hours, int) or isinstance(hours, bool) or not 1 <= hours <= limit:
            raise DurationRefused(limit)
        return hours

    def check_note(self, note, *, required: bool) -> str | None:
        # Shown to the advisor and in the tenant's access log: the shared free-text rule.
        return check_text(note, field="note", max_length=NOTE_MAX_LENGTH, required=required)

    # --- queries ---
    @staticmethod
    def pending_for_tenant(session, tenant_id: str, now: datetime) -> list[AccessRequest]:
        """The tenant's open requests (pending, not past their expiry), oldest first."""
        return list(session.scalars(select(AccessRequest).where(
            AccessRequest.tenant_id == tenant_id, AccessRequest.status == "pending",
            AccessRequest.expires_at > now)
            .order_by(AccessRequest.created_at, AccessRequest.id)))

    @staticmethod
    def of_advisor(session, subject: str, *, since: datetime,
                   limit: int = 20) -> list[AccessRequest]:
        """The advisor's requests made or answered since ``since``, newest first."""
        return list(session.scalars(select(AccessRequest).where(
            AccessRequest.advisor_subject == subject,
            (AccessRequest.created_at >= since) | (AccessRequest.decided_at >= since)
            | (AccessRequest.status == "pending"))
            .order_by(AccessRequest.created_at.desc(), AccessRequest.id).limit(limit)))

    @staticmethod
    def get(session, tenant_id: str | None, request_id, *, lock: bool = False) -> AccessRequest:
        """The request ``request_id`` (of ``tenant_id`` when given), else ``NotFound``."""
        found = session.get(AccessRequest, request_id, with_for_update=lock) \
            if plausible_id(request_id) else None
        if found is None or (tenant_id is not None and found.tenant_id != tenant_id):
            raise NotFound("no such access request", code="unknown_access_request")
        return found

    @staticmethod
    def check_open(request: AccessRequest, now: datetime) -> None:
        """Refuse, changing nothing, a request that can no longer be answered."""
        if request.status == "pending" and request.expires_at > now:
            return
        if request.status == "approved":
            raise Conflict("this access request is already approved",
                           code="request_already_approved")
        if request.status == "denied":
            raise Conflict("this access request was denied", code="request_denied")
        if request.status == "withdrawn":
            raise Conflict("this access request was withdrawn by the advisor",
                           code="request_withdrawn")
        raise Conflict("this access request has expired unanswered", code="request_expired")

    # --- the advisor ---
    def create(self, session, tenant, identity, *, reason, duration_hours,
               now: datetime) -> AccessRequest:
        _check_requests_allowed(tenant)
        reason = check_text(reason, field="reason", max_length=self.memberships.reason_max_length,
                            required=True)
        hours = self.check_duration(tenant, duration_hours)
        subject = identity.subject
        current = self.memberships.active(session, tenant.id, subject)
        if current is not None and not self.memberships.end_if_expired(session, current, now):
            raise Conflict("you already have access to this tenant", code="already_member")
        previous = session.scalars(select(AccessRequest).where(
            AccessRequest.tenant_id == tenant.id, AccessRequest.advisor_subject == subject,
            AccessRequest.status == "pending").with_for_update()).first()
        if previous is not None and previous.expires_at > now:
            raise Conflict("you already have a pending access request for this tenant",
                           code="request_pending")
        if previous is not None:  # past its expiry, not yet swept
            self._expire(session, previous, now)
            session.flush()
        open_elsewhere = session.scalar(select(func.count()).select_from(AccessRequest).where(
            AccessRequest.advisor_subject == subject, AccessRequest.status == "pending",
            AccessRequest.expires_at > now))
        if open_elsewhere >= MAX_PENDING_PER_ADVISOR:
            raise Conflict(f"you have {MAX_PENDING_PER_ADVISOR} pending access requests; wait "
                           "for their answers or withdraw one", code="too_many_requests")
        request = AccessRequest(
            id=str(uuid.uuid4()), tenant_id=tenant.id, advisor_subject=subject,
            advisor_name=identity.username, reason=reason, duration_hours=hours,
            status="pending", created_at=now, expires_at=now + self.expiry)
        session.add(request)
        session.flush()  # the partial unique index refuses a concurrent second request
        audit.record(session, "access_request.created", now, tenant_id=tenant.id,
                     actor=subject, actor_role="advisor", access_request=request.id,
                     advisor=subject, advisor_name=identity.username, reason=reason,
                     duration_hours=hours, expires_at=_iso(request.expires_at))
        self._tell(session, "created", request, now)
        return request

    def withdraw(self, session, subject: str, request_id, *, now: datetime) -> AccessRequest:
        request = self.get(session, None, request_id, lock=True)
        if request.advisor_subject != subject:
            raise NotFound("no such access request", code="unknown_access_request")
        self.check_open(request, now)
        request.status, request.decided_at, request.decided_by = "withdrawn", now, subject
        self.four_eyes.close(session, request.tenant_id, APPROVE, request.id, by=subject,
                             actor_role="advisor", reason="request_withdrawn", now=now)
        audit.record(session, "access_request.withdrawn", now, tenant_id=request.tenant_id,
                     actor=subject, actor_role="advisor", access_request=request.id,
                     advisor=subject)
        self._tell(session, "withdrawn", request, now)
        return request

    # --- the tenant's admins ---
    def approve(self, session, tenant, request_id, *, by: str, duration_hours=None,
                note=None, now: datetime):
        """An admin's approval (:meth:`FourEyes.approve`): the membership at once, or
        under four eyes the first approval held pending / the second completing it.
        ``duration_hours`` may shorten what was asked for (never lengthen it)."""
        request = self.get(session, tenant.id, request_id, lock=True)
        self.check_open(request, now)
        _check_requests_allowed(tenant)
        if by == request.advisor_subject:
            raise Forbidden("you cannot approve your own access request; another admin of "
                            "the tenant must", code="own_request")
        hours = request.duration_hours if duration_hours is None else \
            self.check_duration(tenant, duration_hours, at_most=request.duration_hours)
        note = self.check_note(note, required=False)
        return self.four_eyes.approve(session, tenant, APPROVE, request.id,
                                      {"duration_hours": hours, "note": note}, by=by, now=now)

    def deny(self, session, tenant, request_id, *, by: str, note, now: datetime) -> AccessRequest:
        request = self.get(session, tenant.id, request_id, lock=True)
        self.check_open(request, now)
        note = self.check_note(note, required=True)
        request.status, request.decided_at, request.decided_by = "denied", now, by
        request.decision_note = note
        self.four_eyes.close(session, tenant.id, APPROVE, request.id, by=by,
                             actor_role="tenant_admin", reason="request_denied", now=now)
        audit.record(session, "access_request.denied", now, tenant_id=tenant.id, actor=by,
                     actor_role="tenant_admin", access_request=request.id,
                     advisor=request.advisor_subject, note=note)
        self._tell(session, "denied", request, now)
        return request

    # --- expiry ---
    def expire_due(self, session, now: datetime) -> int:
        """Mark every pending request past its expiry expired (the maintenance loop)."""
        due = session.scalars(select(AccessRequest).where(
            AccessRequest.status == "pending", AccessRequest.expires_at <= now)).all()
        for request in due:
            self._expire(session, request, now)
        return len(due)

    def _expire(self, session, request: AccessRequest, now: datetime) -> None:
        request.status, request.decided_at, request.decided_by = "expired", now, "system"
        self.four_eyes.close(session, request.tenant_id, APPROVE, request.id, by="system",
                             actor_role="system", reason="request_expired", now=now)
        audit.record(session, "access_request.expired", now, tenant_id=request.tenant_id,
                     actor="system", actor_role="system", access_request=request.id,
                     advisor=request.advisor_subject)
        self._tell(session, "expired", request, now)

    # --- the four-eyes action ---
    def _check_approver(self, session, tenant, target: str, by: str) -> None:
        request = self.get(session, tenant.id, target)
        if by == request.advisor_subject:
            raise Forbidden("you cannot approve your own access request; another admin of "
                            "the tenant must", code="own_request")

    def _approval_expires(self, session, tenant, target: str, now: datetime) -> datetime:
        return self.get(session, tenant.id, target).expires_at

    def _grant(self, session, tenant, target: str, terms: dict, approvers: tuple[str, ...],
               now: datetime):
        """The approval takes effect: a temporary membership for the approved duration."""
        request = self.get(session, tenant.id, target, lock=True)
        self.check_open(request, now)
        _check_requests_allowed(tenant)
        current = self.memberships.active(session, tenant.id, request.advisor_subject)
        if current is not None and not self.memberships.end_if_expired(session, current, now):
            raise Conflict("the advisor already has access to this tenant",
                           code="already_member")
        hours = min(int(terms["duration_hours"]), request.duration_hours, self.max_hours(tenant))
        notes = [n for n in (terms.get("note"), terms.get("second_note")) if n]
        membership = self.memberships.create(
            session, tenant, subject=request.advisor_subject, name=request.advisor_name,
            kind="temporary", created_by=approvers[-1], actor_role="tenant_admin", now=now,
            reason=request.reason, duration=timedelta(hours=hours),
            detail={"access_request": request.id, "approved_by": list(approvers)})
        request.status, request.decided_at, request.decided_by = "approved", now, approvers[-1]
        request.approved_by, request.approved_hours = list(approvers), hours
        request.decision_note = " / ".join(notes) or None
        request.membership_id = membership.id
        audit.record(session, "access_request.approved", now, tenant_id=tenant.id,
                     actor=approvers[-1], actor_role="tenant_admin",
                     membership_id=membership.id, access_request=request.id,
                     advisor=request.advisor_subject, approved_by=list(approvers),
                     duration_hours=hours, expires_at=_iso(membership.expires_at),
                     note=request.decision_note)
        self._tell(session, "approved", request, now)
        return membership

    def _tell(self, session, event: str, request: AccessRequest, now: datetime) -> None:
        for listener in self.listeners:
            listener(session, event, request, now)


def _check_requests_allowed(tenant) -> None:
    """Requests are refused while the tenant allows codes only: asking, and approving one
    that was asked before the setting changed (deny it, or let it expire)."""
    if not allows(tenant, "request"):
        raise Forbidden("this tenant allows access by access code only",
                        code="requests_not_allowed")


def _shorter(first: dict, second: dict) -> dict:
    """A second approver may shorten the duration further, never lengthen it (the request
    was checked against both); both notes are kept."""
    hours = first["duration_hours"]
    if second.get("duration_hours") is not None:
        hours = min(hours, second["duration_hours"])
    return {"duration_hours": hours, "note": first.get("note"), "second_note": second.get("note")}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None
