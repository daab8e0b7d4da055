"""Revocation receipts: which resource servers confirmed that a grant or token family ended.

A revocation (:class:`~idp_bridge.storage.models.Revocation`, the source of the SSF feed)
is *confirmed* by a receiver stream when the stream acknowledged its event (RFC 8936
section 2.4: an ``ack`` of the poll; RFC 8935 section 2.2: a push endpoint's ``202``), i.e.
when :class:`~idp_bridge.storage.models.SsfAck` holds a row for the stream and the
revocation. The time from the revocation to that row is the receipt's latency.

Counted are the streams that were *due* to receive the event: streams that existed when it
happened (created no later than the revocation, and not started after it: a stream
re-enabled after being disabled starts after everything that happened meanwhile). A stream
created later may well receive the event too (a new receiver process gets every event still
relevant), but it is not one of the servers that held the revoked tokens then, so it neither
counts nor is listed. Every due stream counts, also one that is paused or disabled, one that
does not request ``session-revoked`` or one whose receiver left the subject out: the tenant
must see that such a server has not confirmed, and why.

Receipts are read from the feed's own bookkeeping, so they last as long as it keeps them:
acknowledgements while the event is relevant (twice the access-token lifetime), streams
until they are idle for an hour.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select

from ..ssf.rfc8417 import SESSION_REVOKED
from ..storage.models import Client, Membership, Revocation, SsfAck, SsfStream, TokenFamily
from .values import MembershipInfo

#: A poll stream not seen for longer than this is reported offline (receivers long-poll
#: every few seconds to half a minute).
OFFLINE_AFTER = timedelta(minutes=2)
PUSH = "urn:ietf:rfc:8935"

#: Why a due stream has not confirmed, in the order they are looked for.
REASONS = ("events_not_requested", "subject_removed", "disabled", "paused", "offline",
           "delivered_unacknowledged", "not_yet_delivered")


@dataclass(frozen=True)
class Receipt:
    """One due receiver stream and what it did with the revocation's event."""

    stream_id: str
    client_id: str
    client_name: str | None
    #: ``poll`` or ``push``
    delivery: str
    description: str | None
    status: str
    last_seen_at: datetime
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
        latest = max(r.created_at for r in rows)
        streams = session.scalars(select(SsfStream).where(SsfStream.created_at <= latest)
                                  .order_by(SsfStream.created_at, SsfStream.stream_id)).all()
        names = dict(session.execute(select(Client.client_id, Client.name).where(
            Client.client_id.in_(sorted({s.client_id for s in streams})))).all()) \
            if streams else {}
        acks = {}
        if streams:
            acks = {(a.stream_id, a.revocation_id): a.acked_at for a in session.scalars(
                select(SsfAck).where(SsfAck.revocation_id.in_([r.id for r in rows])))}
        return [RevocationReceipts(
            id=r.id, kind=r.kind, value=r.value, reason=r.reason, revoked_at=r.created_at,
            membership_id=owners.get(r.id), advisor_subject=r.subject,
            receipts=tuple(self._receipt(r, s, names.get(s.client_id),
                                         acks.get((s.stream_id, r.id)), now)
                           for s in streams if _due(s, r, acks)))
            for r in rows]

    def _receipt(self, revocation: Revocation, stream: SsfStream, client_name,
                 acked_at: datetime | None, now: datetime) -> Receipt:
        reason = None
        if acked_at is not None and _subject_removed(stream, revocation):
            # The feed records an event it dropped for a removed subject like an
            # acknowledgement (it must not be sent again); that confirms nothing.
            acked_at, reason = None, "subject_removed"
        elif acked_at is None:
            reason = self._why_not(revocation, stream, now)
        latency = None if acked_at is None else max(
            0, round((acked_at - revocation.created_at) / timedelta(milliseconds=1)))
        return Receipt(stream_id=stream.stream_id, client_id=stream.client_id,
                       client_name=client_name,
                       delivery="push" if stream.delivery_method == PUSH else "poll",
                       description=stream.description, status=stream.status,
                       last_seen_at=stream.last_seen_at, acknowledged_at=acked_at,
                       latency_ms=latency, reason=reason)

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


def _due(stream: SsfStream, revocation: Revocation, acks: dict) -> bool:
    if stream.created_at > revocation.created_at:
        return False
    return stream.start_after_id < revocation.id or (stream.stream_id, revocation.id) in acks


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
