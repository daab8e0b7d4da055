"""Revocation: the one place where a grant or a token family ends (DESIGN.md sections 5, 8, 9).

Whatever the cause — a tenant admin removing an advisor, the advisor leaving, support,
expiry, a supersession, the upstream account ending, a refresh token presented twice, a
client's RFC 7009 request, a back-channel logout, a user group narrowed — ending is these
four steps, inside the caller's transaction, and nowhere else:

1. **mark the rows** (never delete: the audit trail and reuse detection need them): the
   membership ended (``ended_at``, ``ended_by``, ``end_reason``), its token families
   revoked (``revoked_at``, ``revoke_reason``), so their refresh tokens stop working and
   their access tokens become inactive at introspection;
2. **append the feed event**: one :class:`~idp_bridge.storage.models.Revocation` row
   (``grant`` by ``grant_id``, or ``family`` by ``sid``), the source of the SSF feed;
3. **write the audit event** of the cause (:data:`CAUSES`);
4. **register the wake-up** of the feed (:func:`idp_bridge.storage.db.after_commit`):
   after the transaction commits, the callbacks in :attr:`Revocations.wake_ups` run once
   (long polls and push delivery of this process, the Redis fan-out to the others); if the
   transaction rolls back, nothing is woken, because nothing was revoked.

Nothing revives what ended: a new code makes a new membership with a new ``grant_id``, and
a narrowed group gets a *successor* family (:meth:`Revocations.supersede_family`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, bindparam, case, insert, select, update

from ..metrics import REVOCATIONS
from ..storage.db import after_commit, utcnow
from ..storage.models import (
    Membership,
    RefreshToken,
    Revocation,
    RevocationReceipt,
    SsfStream,
    TokenFamily,
)
from . import audit


@dataclass(frozen=True)
class Cause:
    """One cause of revocation: what it ends, and the audit event it writes."""

    reason: str
    #: ``grant`` (the membership and every family of its grant) or ``family`` (one ``sid``).
    ends: str
    #: The audit event written, or None where the caller's own event records the change
    #: (a narrowed group is one ``group.changed`` event naming the families narrowed).
    audit_event: str | None


#: Every cause, by the reason stored on the rows, on the feed and in the audit event.
CAUSES: dict[str, Cause] = {c.reason: c for c in (
    Cause("removed_by_tenant", "grant", "membership.ended"),
    Cause("left", "grant", "membership.ended"),
    Cause("removed_by_support", "grant", "membership.ended"),
    Cause("expired", "grant", "membership.ended"),
    Cause("superseded", "grant", "membership.ended"),
    Cause("upstream_account_ended", "grant", "membership.ended"),
    Cause("reconfirmation_lapsed", "grant", "membership.ended"),
    Cause("refresh_token_reuse", "family", "token.family_revoked"),
    Cause("revoked_by_client", "family", "token.family_revoked"),
    Cause("upstream_logout", "family", "token.family_revoked"),
    Cause("permissions_narrowed", "family", None),
    # The exchange or refresh committed a family whose access token then could not be
    # signed: its refresh token was never handed out; the family is closed all the same.
    Cause("issuance_failed", "family", "token.family_revoked"),
)}

#: Why a membership ends (``Membership.end_reason``).
END_REASONS = tuple(r for r, c in CAUSES.items() if c.ends == "grant")
#: Why a single token family is revoked (``TokenFamily.revoke_reason``).
FAMILY_REASONS = tuple(r for r, c in CAUSES.items() if c.ends == "family")

#: ``revoke_reason`` of the families of an ended grant.
GRANT_REVOKED = "grant_revoked"


class Revocations:
    """Ends grants and token families; see the module docstring for the four steps."""

    def __init__(self, *, wake_ups=()):
        #: Called (no arguments) once after each transaction that revoked something has
        #: committed, in this process: the feed's notifier, the Redis fan-out.
        self.wake_ups = list(wake_ups)

    # --- grants ---
    def end_membership(self, session, membership, *, by: str, actor_role: str, reason: str,
                       now: datetime, listeners=()) -> bool:
        """End ``membership`` (an ORM object or a row with ``id``, ``grant_id``,
        ``tenant_id``, ``advisor_subject``, ``advisor_name``, ``kind``) and revoke its grant:
        every token family of the grant is revoked and the grant goes on the feed.

        ``listeners`` (``listener(session, "ended", membership, now)``: the upstream mirror,
        the notifications) run in the same transaction, after the rows are marked. Returns
        False, changing nothing, if the membership had already ended.
        """
        cause = _cause(reason, "grant")
        ended = session.execute(
            update(Membership)
            .where(Membership.id == membership.id, Membership.ended_at.is_(None))
            .values(ended_at=now, ended_by=by, end_reason=reason)
            .execution_options(synchronize_session="fetch")
        ).rowcount == 1
        if not ended:
            return False
        session.execute(
            update(TokenFamily)
            .where(TokenFamily.grant_id == membership.grant_id, TokenFamily.revoked_at.is_(None))
            .values(revoked_at=now, revoke_reason=GRANT_REVOKED)
            .execution_options(synchronize_session=False))
        self._publish(session, "grant", membership.grant_id, tenant_id=membership.tenant_id,
                      subject=membership.advisor_subject, reason=reason, now=now)
        for listener in listeners:
            listener(session, "ended", membership, now)
        audit.record(session, cause.audit_event, now, tenant_id=membership.tenant_id, actor=by,
                     actor_role=actor_role, membership_id=membership.id,
                     advisor=membership.advisor_subject, advisor_name=membership.advisor_name,
                     kind=membership.kind, reason=reason, grant_id=membership.grant_id)
        return True

    # --- token families ---
    def revoke_family(self, session, family, *, reason: str, now: datetime,
                      actor: str | None = None, actor_role: str | None = None) -> bool:
        """Revoke one token family (``family``: anything with ``sid``, ``tenant_id``,
        ``subject``, ``membership_id``, ``client_id``): its refresh tokens stop working and
        its access tokens become inactive; the membership stays. Returns False, changing
        nothing, if the family was already revoked (so concurrent revocations of one family
        publish it once)."""
        cause = _cause(reason, "family")
        revoked = session.execute(
            update(TokenFamily.__table__)
            .where(TokenFamily.sid == family.sid, TokenFamily.revoked_at.is_(None))
            .values(revoked_at=now, revoke_reason=reason)).rowcount == 1
        if not revoked:
            return False
        self._publish(session, "family", family.sid, tenant_id=family.tenant_id,
                      subject=family.subject, reason=reason, now=now)
        if cause.audit_event is not None:
            audit.record(session, cause.audit_event, now, tenant_id=family.tenant_id,
                         actor=actor, actor_role=actor_role, membership_id=family.membership_id,
                         client_id=family.client_id, sid=family.sid, reason=reason)
        return True

    def supersede_family(self, session, old: TokenFamily, *, scope: str, now: datetime) -> str:
        """Replace the live family ``old`` by a successor carrying the narrower ``scope``
        (a user group lost permissions): the old family's unused refresh tokens move to the
        successor, then the old family is revoked (``permissions_narrowed``), so resource
        servers drop its wider access tokens while the next refresh yields the narrower
        scope. Returns the successor's ``sid``."""
        successor = TokenFamily(**{c: getattr(old, c) for c in (
            "membership_id", "grant_id", "client_id", "subject", "tenant_id", "audience",
            "upstream_issuer", "upstream_sid", "auth_time", "acr", "amr")},
            sid=str(uuid.uuid4()), scope=scope, created_at=now, revoked_at=None)
        session.add(successor)
        session.flush()
        session.execute(update(RefreshToken).where(
            RefreshToken.sid == old.sid, RefreshToken.rotated_at.is_(None))
            .values(sid=successor.sid).execution_options(synchronize_session=False))
        self.revoke_family(session, old, reason="permissions_narrowed", now=now)
        return successor.sid

    # --- the feed ---
    def _publish(self, session, kind: str, value: str, *, tenant_id, subject, reason: str,
                 now: datetime) -> None:
        # Stamped now, inside the transaction (after SQLite's write lock or PostgreSQL's row
        # locks were taken), not with the caller's ``now`` from before it: the feed's
        # event_timestamp tells resource servers how long to keep the revocation (until
        # its newest token can have expired), and a token of the grant signed while this
        # transaction waited for its lock must fall inside that window.
        stamp = max(now, utcnow())
        connection = session.connection()
        revocation_id = connection.execute(_INSERT_REVOCATION, {
            "kind": kind, "value": value, "tenant_id": tenant_id, "subject": subject,
            "reason": reason, "created_at": stamp}).inserted_primary_key[0]
        # One receipt for each stream due to receive the event (those that exist now and
        # did not start after it), in the same transaction: a durable record of who must
        # confirm, whatever the feed prunes later (services/receipts.py).
        connection.execute(_INSERT_RECEIPTS, {"revocation_id": revocation_id,
                                              "created_at": stamp})
        after_commit(session, lambda: REVOCATIONS.labels(kind, reason).inc())
        for wake_up in self.wake_ups:
            after_commit(session, wake_up)


#: The push delivery method (RFC 8935); every other stream polls (RFC 8936).
PUSH_DELIVERY = "urn:ietf:rfc:8935"


def _cause(reason: str, ends: str) -> Cause:
    cause = CAUSES.get(reason)
    if cause is None or cause.ends != ends:
        raise ValueError(f"not a cause that ends a {ends}: {reason}")
    return cause


_INSERT_REVOCATION = insert(Revocation.__table__)

_RECEIPTS = RevocationReceipt.__table__
_STREAMS = SsfStream.__table__
_INSERT_RECEIPTS = insert(_RECEIPTS).from_select(
    ["revocation_id", "stream_id", "client_id", "delivery", "description", "created_at"],
    select(bindparam("revocation_id", type_=BigInteger), _STREAMS.c.stream_id,
           _STREAMS.c.client_id,
           case((_STREAMS.c.delivery_method == PUSH_DELIVERY, "push"), else_="poll"),
           _STREAMS.c.description,
           bindparam("created_at", type_=_RECEIPTS.c.created_at.type))
    .where(_STREAMS.c.start_after_id < bindparam("revocation_id", type_=BigInteger)))
