"""Revocation receipts: which resource servers confirmed that a grant or token family ended.

A revocation (:class:`~idp_bridge.storage.models.Revocation`, the source of the SSF feed)
is *confirmed* by a receiver stream when the stream acknowledged its event (RFC 8936
section 2.4: an ``ack`` of the poll; RFC 8935 section 2.2: a push endpoint's ``202``), i.e.
when its :class:`~idp_bridge.storage.models.RevocationReceipt` for the revocation holds an
``acknowledged_at``. The time from the revocation to then is the receipt's latency.

Counted are the streams that were *due* to receive the event: streams that existed when it
happened (created no later than the revocation, and not started after it: a stream
re-enabled after being disabled starts after everything that happened meanwhile). A stream
created later may well receive the event too (a new receiver process gets every event still
relevant), but it is not one of the servers that held the revoked tokens then, so it neither
counts nor is listed. Every due stream counts, also one that is paused or disabled, one that
does not request ``session-revoked`` or one whose receiver left the subject out: the tenant
must see that such a server has not confirmed, and why.

Receipts are durable (:class:`~idp_bridge.storage.models.RevocationReceipt`): one row per
due stream is written in the revocation's own transaction, the first acknowledgement stamps
it (an error report, RFC 8936 ``setErrs``, leaves it ``receiver_error``: not confirmed), and
a stream deleted or pruned as idle before acknowledging leaves it ``stream_deleted``.
The feed's acknowledgements and idle streams are pruned; receipts stay as long as their
revocation. The live stream, while it exists, only explains an open receipt (paused,
offline, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select

from ..ssf.rfc8417 import SESSION_REVOKED
from ..storage.models import (
    Client,
    Membership,
    Revocation,
    RevocationReceipt,
    SsfStream,
    TokenFamily,
)
from .values import MembershipInfo

#: A poll stream not seen for longer than this is reported offline (receivers long-poll
#: every few seconds to half a minute).
OFFLINE_AFTER = timedelta(minutes=2)
PUSH = "urn:ietf:rfc:8935"

#: Why a due stream has not confirmed, in the order they are looked for.
REASONS = ("events_not_requested", "subject_removed", "disabled", "paused", "offline",
           "delivered_unacknowledged", "not_yet_delivered", "stream_deleted", "receiver_error")


@dataclass(frozen=True)
class Receipt:
    """One due receiver stream and what it did with the revocation's event."""

    stream_id: str
    client_id: str
    client_name: str | None
    #: ``poll`` or ``push``
    delivery: str
    description: str | None
    #: The stream's status now (``deleted``: the stream is gone, deleted or idle).
    status: str
    #: None once the stream is gone.
    last_seen_at: datetime | None
    #: When the stream acknowledged (poll) or its endpoint accepted (push) the event.
    acknowledged_at: datetime | None
    latency_ms: int | None
    #: One of :data:`REASONS` when not confirmed, else None.
    reason: str | None

    @property
    def confirmed(self) -> bool:
        return self.acknowledged_at is not None

    @property
    def name(self) -> str:
        return self.client_name or self.client_id


@dataclass(frozen=True)
class RevocationReceipts:
    """A revocation of a grant (a membership ended) or of one token family, with the
    receipts of the streams that were due to receive it."""

    id: int
    kind: str
    value: str
    reason: str
    revoked_at: datetime
    membership_id: str | None
    advisor_subject: str | None
    receipts: tuple[Receipt, ...]

    @property
    def due(self) -> int:
        return len(self.receipts)

    @property
    def confirmed(self) -> int:
        return sum(r.confirmed for r in self.receipts)

    @property
    def within_ms(self) -> int | None:
        """The slowest confirmation's latency (None: none confirmed)."""
        latencies = [r.latency_ms for r in self.receipts if r.latency_ms is not None]
        return max(latencies) if latencies else None

    @property
    def complete(self) -> bool:
        return self.confirmed == self.due


@dataclass(frozen=True)
class MembershipDetail:
    """One membership of a tenant, live or ended, with its revocations and their receipts."""

    membership: MembershipInfo
    ended_at: datetime | None
    ended_by: str | None
    #: What the directory calls ``ended_by`` (None: unknown, or ``system``).
    ended_by_name: str | None
    end_reason: str | None
    revocations: tuple[RevocationReceipts, ...]

    @property
    def grant_revocation(self) -> RevocationReceipts | None:
        return next((r for r in self.revocations if r.kind == "grant"), None)


class Receipts:
    """Reads receipts inside the caller's unit of work (no authorisation here: the calling
    use case has checked that the caller may see the tenant)."""

    def __init__(self, *, offline_after: timedelta = OFFLINE_AFTER):
        self.offline_after = offline_after

    def of_membership(self, session, membership: Membership, now: datetime
                      ) -> list[RevocationReceipts]:
        """The revocations of ``membership``: its grant (once it ended) and each of its
        token families revoked on its own (refresh reuse, upstream logout, a client's
        revocation, narrowed permissions), oldest first."""
        sids = select(TokenFamily.sid).where(TokenFamily.membership_id == membership.id)
        rows = session.scalars(select(Revocation).where(
            Revocation.tenant_id == membership.tenant_id,
            or_((Revocation.kind == "grant") & (Revocation.value == membership.grant_id),
                (Revocation.kind == "family") & Revocation.value.in_(sids)))
            .order_by(Revocation.id)).all()
        return self._with_receipts(session, rows, {r.id: membership.id for r in rows}, now)

    def of_tenant(self, session, tenant_id: str, limit: int, now: datetime
                  ) -> list[RevocationReceipts]:
        """The tenant's latest ``limit`` revocations, newest first."""
        rows = session.scalars(select(Revocation).where(Revocation.tenant_id == tenant_id)
                               .order_by(Revocation.id.desc()).limit(limit)).all()
        grants = {r.value for r in rows if r.kind == "grant"}
        families = {r.value for r in rows if r.kind == "family"}
        by_grant = dict(session.execute(select(Membership.grant_id, Membership.id).where(
            Membership.tenant_id == tenant_id, Membership.grant_id.in_(sorted(grants))))
            .all()) if grants else {}
        by_sid = dict(session.execute(select(TokenFamily.sid, TokenFamily.membership_id).where(
            TokenFamily.tenant_id == tenant_id, TokenFamily.sid.in_(sorted(families))))
            .all()) if families else {}
        owners = {r.id: (by_grant if r.kind == "grant" else by_sid).get(r.value) for r in rows}
        return self._with_receipts(session, rows, owners, now)

    def _with_receipts(self, session, rows, owners: dict, now: datetime
                       ) -> list[RevocationReceipts]:
        if not rows:
            return []
        found = session.execute(
            select(RevocationReceipt, Client.name, SsfStream)
            .outerjoin(Client, Client.client_id == RevocationReceipt.client_id)
            .outerjoin(SsfStream, SsfStream.stream_id == RevocationReceipt.stream_id)
            .where(RevocationReceipt.revocation_id.in_([r.id for r in rows]))
            .order_by(RevocationReceipt.revocation_id, RevocationReceipt.id)).all()
        by_revocation: dict[int, list] = {}
        for receipt, client_name, stream in found:
            by_revocation.setdefault(receipt.revocation_id, []).append(
                (receipt, client_name, stream))
        return [RevocationReceipts(
            id=r.id, kind=r.kind, value=r.value, reason=r.reason, revoked_at=r.created_at,
            membership_id=owners.get(r.id), advisor_subject=r.subject,
            receipts=tuple(self._receipt(r, receipt, name, stream, now)
                           for receipt, name, stream in by_revocation.get(r.id, ())))
            for r in rows]

    def _receipt(self, revocation: Revocation, receipt: RevocationReceipt, client_name,
                 stream: SsfStream | None, now: datetime) -> Receipt:
        acked_at, reason = receipt.acknowledged_at, None
        if receipt.outcome == "subject_removed" or (
                acked_at is not None and stream is not None
                and _subject_removed(stream, revocation)):
            # The feed drops an event for a removed subject; that confirms nothing.
            acked_at, reason = None, "subject_removed"
        elif receipt.outcome == "receiver_error":
            # The receiver reported it could not process the event (RFC 8936 setErrs).
            acked_at, reason = None, "receiver_error"
        elif acked_at is None:
            reason = "stream_deleted" if stream is None or receipt.outcome == "stream_deleted" \
                else self._why_not(revocation, stream, now)
        latency = None if acked_at is None else max(
            0, round((acked_at - revocation.created_at) / timedelta(milliseconds=1)))
        return Receipt(stream_id=receipt.stream_id, client_id=receipt.client_id,
                       client_name=client_name, delivery=receipt.delivery,
                       description=receipt.description,
                       status="deleted" if stream is None else stream.status,
                       last_seen_at=None if stream is None else stream.last_seen_at,
                       acknowledged_at=acked_at, latency_ms=latency, reason=reason)

    def _why_not(self, revocation: Revocation, stream: SsfStream, now: datetime) -> str:
        if SESSION_REVOKED not in (stream.events_requested or []):
            return "events_not_requested"
        if _subject_removed(stream, revocation):
            return "subject_removed"
        if stream.status in ("disabled", "paused"):
            return stream.status
        if stream.delivery_method != PUSH and stream.last_seen_at < now - self.offline_after:
            return "offline"
        if stream.delivered_through_id is not None and \
                stream.delivered_through_id >= revocation.id:
            return "delivered_unacknowledged"
        return "not_yet_delivered"


def _subject_removed(stream: SsfStream, revocation: Revocation) -> bool:
    """Whether the receiver left out a subject this revocation's event names (SSF 8.1.3):
    its session (opaque, or the complex subject's ``session``), tenant or user. Judged on
    the subjects removed now and generously (the user by ``sub`` alone), so that a receipt
    is never claimed for an event the feed may have dropped."""
    for removed in stream.removed_subjects or []:
        if not isinstance(removed, dict):
            continue
        if removed.get("format") == "opaque" and removed.get("id") == revocation.value:
            return True
        if removed.get("format") != "complex":
            continue
        session, tenant, user = (removed.get(k) for k in ("session", "tenant", "user"))
        if isinstance(session, dict) and session.get("id") == revocation.value:
            return True
        if isinstance(tenant, dict) and revocation.tenant_id and \
                tenant.get("id") == revocation.tenant_id:
            return True
        if isinstance(user, dict) and revocation.subject and \
                user.get("sub") == revocation.subject:
            return True
    return False


__all__ = ["OFFLINE_AFTER", "REASONS", "MembershipDetail", "Receipt", "Receipts", "RevocationReceipts"]
