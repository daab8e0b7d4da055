"""Audit events: every join, failed code attempt, token issuance and removal (DESIGN.md 7, 8).

:func:`record` is the one place audit events are written. Each event goes into its tenant's
hash chain (:mod:`idp_bridge.domain.audit_chain`, docs/audit-chain.md) when its transaction
commits: any session's commit links the events recorded on it (a ``before_commit``
listener on every SQLAlchemy session), a rollback drops them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..storage.models import AuditEvent
from . import audit_chain

#: Event names in use; the API documents them.
EVENTS = (
    "access_code.failed",
    "access_code.rate_limited",
    "access_code.rotated",
    "membership.created",
    "membership.ended",
    "token.issued",
    "token.refreshed",
    "token.family_revoked",
    "token.rejected",
    "group.changed",
    "invitation.changed",
    "access_record.refused",
    "access_request.created",
    "access_request.approved",
    "access_request.denied",
    "access_request.withdrawn",
    "access_request.expired",
    "approval.requested",
    "approval.completed",
    "approval.rejected",
    "approval.closed",
    "approval.expired",
    "tenant.settings_changed",
    "permanent_advisor.proposed",
    "permanent_advisor.accepted",
    "permanent_advisor.declined",
    "permanent_advisor.withdrawn",
    "permanent_advisor.expired",
    "permanent_advisor.reconfirmed",
    "permanent_advisor.reconfirmation_due",
    "permanent_advisor.lapsed",
    "evidence.downloaded",
)


def record(session, event: str, now: datetime, *, tenant_id=None, actor=None, actor_role=None,
           membership_id=None, client_id=None, **detail) -> None:
    assert event in EVENTS, event
    values = {"at": now, "tenant_id": tenant_id, "event": event, "actor": actor,
              "actor_role": actor_role, "membership_id": membership_id,
              "client_id": client_id, "detail": detail or None}
    # Checked now, so that a value the chain cannot hold fails where it was recorded (not
    # at the commit); the event is written, chained, at the commit.
    audit_chain.check(values["detail"])
    audit_chain.queue(session, values)


# Every session: the chain's writer runs just before the commit, the queue goes on rollback.
sqlalchemy_event.listen(Session, "before_commit", audit_chain.link_pending)
sqlalchemy_event.listen(Session, "after_soft_rollback",
                        lambda session, _previous: audit_chain.discard_pending(session))


def query_events(session, tenant_id: str, *, before_id: int | None = None, limit: int = 50,
                 event: str | None = None):
    query = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    if event:
        query = query.where(AuditEvent.event == event)
    return session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit)).all()
