"""Audit events: every join, failed code attempt, token issuance and removal (DESIGN.md 7, 8)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select

from ..storage.models import AuditEvent

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
)


def record(session, event: str, now: datetime, *, tenant_id=None, actor=None, actor_role=None,
           membership_id=None, client_id=None, **detail) -> None:
    assert event in EVENTS, event
    # A Core insert: audit rows are written on the token hot path and never read back here.
    session.connection().execute(_INSERT, {
        "at": now, "tenant_id": tenant_id, "event": event, "actor": actor,
        "actor_role": actor_role, "membership_id": membership_id, "client_id": client_id,
        "detail": detail or None})


_INSERT = insert(AuditEvent.__table__)


def query_events(session, tenant_id: str, *, before_id: int | None = None, limit: int = 50,
                 event: str | None = None):
    query = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    if event:
        query = query.where(AuditEvent.event == event)
    return session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit)).all()
