"""The evidence pack of one membership (issue 15 item 5; specified in docs/evidence-pack.md).

One document with the whole story of a grant, read from the stored rows and the tenant's
audit chain: the membership (who, which kind, which scopes, since and until when), how it
began and who agreed (the access code redeemed; the access request and its approvers, four
eyes' second one included; support's assignment, or support's proposal and the tenant's
acceptance), its re-confirmations, every token issued or renewed under it, what resource
servers recorded of its use (access transparency), how and when it ended, the revocation
receipts of each receiver stream, the earlier downloads of this pack — and, for every audit
event it names, the event itself with its chain position and the proof that it is in the
chain the bridge signed: the digests of the tenant's other events from it to the next
signed checkpoint (their content stays out), so that the verifier recomputes the chain up to
the checkpoint's signed hash (:mod:`idp_bridge.domain.evidence_verify`).

:func:`build` returns the pack's content as plain JSON values; the use case
(:mod:`idp_bridge.services.evidence`) authorises, audits the download and signs it. Lists
that can grow without bound (token events, access records) hold at most :data:`LIST_LIMIT`
entries: the first and the last half, with the total and ``truncated``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import String, cast, func, select

from ..storage.models import (AccessRecord, AuditCheckpoint, AuditEvent, Client, Membership,
                              Tenant, UserGroup)
from .audit_chain import chain_of, content_digest, exported_event, format_time
from .exchange import membership_scopes

#: ``format`` of a pack.
FORMAT = "idp-bridge-evidence/1"
#: The JWS header's ``typ`` (its media type is ``application/`` + this).
PACK_TYPE = "evidence-pack+jwt"
MEDIA_TYPE = f"application/{PACK_TYPE}"
#: Token events and access records listed at most (each): when there are more, the first
#: and the last ``LIST_LIMIT // 2``, with the count and ``truncated: true``.
LIST_LIMIT = 10_000
#: Digests of other events a pack carries at most to link its events to checkpoints; events
#: beyond are listed as ``unlinked`` (verify them with the chain export).
PROOF_LIMIT = 200_000
#: Checkpoints read per query while the proofs are made.
CHECKPOINT_BATCH = 1000
#: How much earlier than the membership's start a resource server's record may be stamped.
RECORD_CLOCK_MARGIN = timedelta(days=1)
#: The events of the token families (listed within :data:`LIST_LIMIT`).
TOKEN_EVENTS = ("token.issued", "token.refreshed")
#: The four-eyes actions that lead to a membership (domain/access_requests.py,
#: domain/permanent_consent.py).
REQUEST_ACTION = "access_request.approve"
PROPOSAL_ACTION = "permanent_advisor.accept"
#: Ways in (``began.way``).
WAYS = ("access_code", "access_request", "support_assignment", "tenant_acceptance",
        "guest_invitation", "unknown")


def build(session, membership: Membership, *, labels, now: datetime,
          receipts) -> dict:
    """The pack's content (without the signature's claims ``iss``, ``iat``, ``jti``).

    ``labels(session, subjects)`` names people (:meth:`People.labels`); ``receipts`` is a
    :class:`~idp_bridge.services.receipts.Receipts`-like reader with ``of_membership``
    (given by the use case: the domain does not import services)."""
    m = membership
    chain = chain_of(m.tenant_id)
    tenant = session.get(Tenant, m.tenant_id)
    own, tokens_total, tokens_listed = _membership_events(session, m)
    created = next((e for e in own if e.event == "membership.created"), None)
    before = _events_before(session, m, created)
    events = sorted({e.id: e for e in [*before, *own]}.values(), key=lambda e: e.seq)
    by_seq = {e.seq: e for e in events}
    subjects = {m.advisor_subject, m.created_by, m.ended_by}
    for e in events:
        subjects.add(e.actor)
        detail = e.detail or {}
        for key in ("advisor", "first_approver", "second_approver", "proposed_by", "invited_by"):
            subjects.add(detail.get(key))
        for key in ("approved_by", "accepted_by"):
            subjects.update(v for v in detail.get(key) or () if isinstance(v, str))
    names = labels(session, sorted(s for s in subjects if isinstance(s, str) and s != "system"))

    def person(subject):
        if subject is None:
            return None
        return {"subject": subject, "name": names.get(subject)}

    group = session.get(UserGroup, m.group_id) if m.group_id else None
    pack = {
        "format": FORMAT,
        "tenant": {"id": m.tenant_id, "name": tenant.name if tenant else None},
        "membership": {
            "id": m.id, "grant_id": m.grant_id, "kind": m.kind,
            "advisor": person(m.advisor_subject),
            "advisor_name_at_start": m.advisor_name,
            "scopes": sorted(membership_scopes(session, m)),
            "group": {"id": group.id, "name": group.name,
                      "permissions": sorted(group.permissions or ()),
                      "deleted_at": _time(group.deleted_at)} if group else None,
            "reason": m.reason, "created_at": _time(m.created_at),
            "created_by": person(m.created_by), "expires_at": _time(m.expires_at),
            "confirmed_at": _time(m.confirmed_at), "ended_at": _time(m.ended_at),
            "ended_by": person(m.ended_by), "end_reason": m.end_reason,
            "state": "ended" if m.ended_at else (
                "expired" if m.expires_at and m.expires_at <= now else "active"),
        },
        "began": _began(m, events, created, person),
        "reconfirmations": [_step(e, person) | {"due_at": (e.detail or {}).get("due_at")}
                            for e in events if e.event == "permanent_advisor.reconfirmed"],
        "tokens": {
            "count": tokens_total, "listed": len(tokens_listed),
            "truncated": len(tokens_listed) < tokens_total,
            "items": [{"seq": e.seq, "at": format_time(e.at), "event": e.event,
                       "sid": (e.detail or {}).get("sid"), "client_id": e.client_id,
                       "scope": (e.detail or {}).get("scope"),
                       "audience": (e.detail or {}).get("audience")} for e in tokens_listed],
        },
        "families_revoked": [{"seq": e.seq, "at": format_time(e.at),
                              "sid": (e.detail or {}).get("sid"), "client_id": e.client_id,
                              "reason": (e.detail or {}).get("reason"),
                              "by": person(e.actor), "role": e.actor_role}
                             for e in events if e.event == "token.family_revoked"],
        "access_records": _access_records(session, m, now),
        "ended": _ended(m, events, person),
        "revocations": [_revocation_json(r) for r in receipts.of_membership(session, m, now)],
        "downloads": [_step(e, person) | {"format": (e.detail or {}).get("format"),
                                          "pack": (e.detail or {}).get("pack")}
                      for e in events if e.event == "evidence.downloaded"],
        "events": [],
        "chain": None,
        "limits": {"list": LIST_LIMIT, "proof_digests": PROOF_LIMIT},
    }
    prev = _prevs(session, chain, [e.seq for e in events])
    pack["events"] = [exported_event(e, prev.get(e.seq)) for e in events]
    pack["chain"] = _proofs(session, chain, by_seq)
    return pack


# --- the events -----------------------------------------------------------------------------
def _membership_events(session, m: Membership):
    """The events naming the membership: all but the token events, and of those the first
    and the last ``LIST_LIMIT // 2`` when there are more than :data:`LIST_LIMIT`."""
    base = (AuditEvent.tenant_id == m.tenant_id, AuditEvent.membership_id == m.id)
    story = list(session.scalars(select(AuditEvent).where(
        *base, AuditEvent.event.not_in(TOKEN_EVENTS)).order_by(AuditEvent.seq)))
    token_query = select(AuditEvent).where(*base, AuditEvent.event.in_(TOKEN_EVENTS))
    total = session.scalar(select(func.count()).select_from(AuditEvent).where(
        *base, AuditEvent.event.in_(TOKEN_EVENTS)))
    if total <= LIST_LIMIT:
        tokens = list(session.scalars(token_query.order_by(AuditEvent.seq)))
    else:
        half = LIST_LIMIT // 2
        first = list(session.scalars(token_query.order_by(AuditEvent.seq).limit(half)))
        last = list(session.scalars(token_query.order_by(AuditEvent.seq.desc()).limit(half)))
        tokens = first + last[::-1]
    return story + tokens, total, tokens


def _events_before(session, m: Membership, created) -> list[AuditEvent]:
    """The events that led to the membership and name it only in their detail: the access
    request (asked, first approvals under four eyes), support's proposal (proposed, the
    tenant's first acceptance) or the guest invitation (the tenant's admin invited)."""
    detail = (created.detail or {}) if created is not None else {}
    for key, names, action in (("access_request", ("access_request.created",), REQUEST_ACTION),
                               ("proposal", ("permanent_advisor.proposed",), PROPOSAL_ACTION),
                               ("invitation", ("invitation.changed",), None)):
        if isinstance(detail.get(key), str):
            target = detail[key]
            break
    else:
        return []
    approvals = ("approval.requested", "approval.completed", "approval.rejected",
                 "approval.expired", "approval.closed") if action else ()
    pattern = f"%{_like_escape(target)}%"
    rows = session.scalars(select(AuditEvent).where(
        AuditEvent.tenant_id == m.tenant_id, AuditEvent.membership_id.is_(None),
        AuditEvent.at <= created.at, AuditEvent.event.in_((*names, *approvals)),
        cast(AuditEvent.detail, String).like(pattern, escape="\\")).order_by(AuditEvent.seq))
    found = []
    for row in rows:
        d = row.detail or {}
        if row.event in names and d.get(key) == target:
            found.append(row)
        elif row.event in approvals and d.get("target") == target and d.get("action") == action:
            found.append(row)
    return found


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _step(e: AuditEvent, person) -> dict:
    return {"seq": e.seq, "at": format_time(e.at), "event": e.event, "by": person(e.actor),
            "role": e.actor_role}


def _began(m: Membership, events: list, created, person) -> dict:
    """How access began: the way, who did what when (each step with its event), the
    reason."""
    detail = (created.detail or {}) if created is not None else {}
    if isinstance(detail.get("access_request"), str):
        way = "access_request"
    elif isinstance(detail.get("proposal"), str):
        way = "tenant_acceptance"
    elif m.kind == "guest":
        way = "guest_invitation"
    elif created is not None and created.actor_role == "support_admin":
        way = "support_assignment"
    elif created is not None and created.actor_role == "advisor":
        way = "access_code"
    else:
        way = "unknown"
    steps = []
    approvers = []
    for e in events:
        d = e.detail or {}
        if e.event == "invitation.changed":
            steps.append(_step(e, person) | {"invitation": d.get("invitation"),
                                             "change": d.get("change")})
        elif e.event in ("access_request.created", "permanent_advisor.proposed"):
            steps.append(_step(e, person) | {"reason": d.get("reason"),
                                             "duration_hours": d.get("duration_hours")})
        elif e.event == "approval.requested":
            steps.append(_step(e, person) | {"approval": d.get("approval"),
                                             "terms": d.get("terms")})
            approvers.append({"step": "first", "seq": e.seq, "at": format_time(e.at),
                              **person(e.actor)})
        elif e.event == "approval.completed":
            steps.append(_step(e, person) | {"approval": d.get("approval"),
                                             "first_approver": person(d.get("first_approver")),
                                             "second_approver": person(d.get("second_approver"))})
            approvers.append({"step": "second", "seq": e.seq, "at": format_time(e.at),
                              **person(e.actor)})
        elif e.event in ("approval.rejected", "approval.expired", "approval.closed"):
            steps.append(_step(e, person))
        elif e.event in ("access_request.approved", "permanent_advisor.accepted"):
            steps.append(_step(e, person) | {
                "approved_by": [person(s) for s in d.get("approved_by")
                                or d.get("accepted_by") or ()],
                "note": d.get("note")})
            if not approvers:
                approvers.append({"step": "sole", "seq": e.seq, "at": format_time(e.at),
                                  **person(e.actor)})
        elif e.event == "membership.created":
            steps.append(_step(e, person) | {"client_id": e.client_id,
                                             "reason": d.get("reason")})
    return {"way": way, "at": _time(m.created_at), "by": person(m.created_by),
            "client_id": created.client_id if created is not None else None,
            "reason": m.reason, "access_request": detail.get("access_request"),
            "proposal": detail.get("proposal"),
            "proposed_by": person(detail.get("proposed_by")),
            "invitation": detail.get("invitation"),
            "invited_by": person(detail.get("invited_by")),
            "approvers": approvers, "four_eyes": any(a["step"] == "second" for a in approvers),
            "steps": steps}


def _ended(m: Membership, events: list, person) -> dict | None:
    if m.ended_at is None:
        return None
    event = next((e for e in events if e.event == "membership.ended"), None)
    return {"at": _time(m.ended_at), "by": person(m.ended_by), "cause": m.end_reason,
            "role": event.actor_role if event else None, "seq": event.seq if event else None}


def _prevs(session, chain: str, seqs: list[int]) -> dict[int, str]:
    """The hash before each of ``seqs`` (the genesis value before seq 1)."""
    from .audit_chain import GENESIS

    wanted = sorted({s - 1 for s in seqs if s > 1})
    found = {1: GENESIS} if 1 in seqs else {}
    for start in range(0, len(wanted), 500):
        part = wanted[start:start + 500]
        for seq, digest in session.execute(select(AuditEvent.seq, AuditEvent.hash).where(
                AuditEvent.chain == chain, AuditEvent.seq.in_(part))):
            found[seq + 1] = digest
    return found


# --- access transparency ----------------------------------------------------------------------
def _access_records(session, m: Membership, now: datetime) -> dict:
    """What resource servers recorded under the membership (their reports, ``POST
    /access-records``): per resource server, area, action and status how many and when;
    the records themselves within :data:`LIST_LIMIT`."""
    # On the tenant-and-time index; a day's margin for a resource server whose clock is
    # behind (its records are the membership's all the same).
    base = (AccessRecord.tenant_id == m.tenant_id,
            AccessRecord.at >= m.created_at - RECORD_CLOCK_MARGIN,
            AccessRecord.membership_id == m.id)
    receivers = sorted(c for c, roles in session.execute(select(Client.client_id, Client.roles))
                       if "receiver" in (roles or "").split())
    groups = session.execute(
        select(AccessRecord.client_id, AccessRecord.area, AccessRecord.action,
               AccessRecord.status, func.count(), func.min(AccessRecord.at),
               func.max(AccessRecord.at))
        .where(*base).group_by(AccessRecord.client_id, AccessRecord.area, AccessRecord.action,
                               AccessRecord.status)
        .order_by(AccessRecord.client_id, AccessRecord.area, AccessRecord.action,
                  AccessRecord.status)).all()
    total = sum(g[4] for g in groups)
    query = select(AccessRecord).where(*base)
    if total <= LIST_LIMIT:
        rows = list(session.scalars(query.order_by(AccessRecord.at, AccessRecord.id)))
    else:
        half = LIST_LIMIT // 2
        rows = list(session.scalars(query.order_by(AccessRecord.at, AccessRecord.id)
                                    .limit(half)))
        rows += list(session.scalars(query.order_by(AccessRecord.at.desc(),
                                                    AccessRecord.id.desc()).limit(half)))[::-1]
    return {
        "reporting_resource_servers": receivers,
        "count": total, "listed": len(rows), "truncated": len(rows) < total,
        "first_at": _time(min((g[5] for g in groups), default=None)),
        "last_at": _time(max((g[6] for g in groups), default=None)),
        "summary": [{"resource_server": c, "area": a, "action": act, "status": s, "count": n,
                     "first_at": _time(first), "last_at": _time(last)}
                    for c, a, act, s, n, first, last in groups],
        "items": [{"at": _time(r.at), "resource_server": r.client_id, "record_id": r.record_id,
                   "sid": r.sid, "area": r.area, "action": r.action, "method": r.method,
                   "route": r.route, "status": r.status, "received_at": _time(r.received_at)}
                  for r in rows],
    }


# --- revocation receipts ------------------------------------------------------------------------
def _revocation_json(r) -> dict:
    return {"kind": r.kind, ("grant_id" if r.kind == "grant" else "sid"): r.value,
            "reason": r.reason, "revoked_at": _time(r.revoked_at), "due": r.due,
            "confirmed": r.confirmed, "within_ms": r.within_ms,
            "receipts": [{"stream_id": x.stream_id, "resource_server": x.client_id,
                          "name": x.client_name, "delivery": x.delivery,
                          "status": x.status, "confirmed": x.confirmed,
                          "acknowledged_at": _time(x.acknowledged_at),
                          "latency_ms": x.latency_ms, "reason": x.reason}
                         for x in r.receipts]}


# --- the chain proofs -------------------------------------------------------------------------
def _proofs(session, chain: str, by_seq: dict) -> dict:
    """For the pack's events (by ``seq``), the links to signed checkpoints: segments from a
    pack event up to the first checkpoint at or after it, with the digests of the other
    events in between (their content withheld). Events after the newest checkpoint are
    ``uncovered``; those beyond :data:`PROOF_LIMIT` digests ``unlinked``."""
    from ..storage.models import AuditChainHead

    head = session.get(AuditChainHead, chain)
    seqs = sorted(by_seq)
    segments, uncovered, unlinked = [], [], []
    budget = PROOF_LIMIT
    checkpoints: list[AuditCheckpoint] = []
    index = 0
    while index < len(seqs):
        start = seqs[index]
        checkpoint = _first_checkpoint_from(session, chain, start, checkpoints)
        if checkpoint is None:
            uncovered = seqs[index:]
            break
        upto = index
        while upto < len(seqs) and seqs[upto] <= checkpoint.seq:
            upto += 1
        members = set(seqs[index:upto])
        needed = checkpoint.seq - start + 1 - len(members)
        if needed > budget:
            unlinked += seqs[index:upto]
            index = upto
            continue
        budget -= needed
        digests = []
        for row in _events_between(session, chain, start + 1, checkpoint.seq):
            if row.seq not in members:
                digests.append({"seq": row.seq, "digest": _digest(chain, row)})
        segments.append({"from_seq": start, "to_seq": checkpoint.seq,
                         "events": sorted(members), "digests": digests,
                         "checkpoint": {"seq": checkpoint.seq, "hash": checkpoint.hash,
                                        "signed_at": format_time(checkpoint.signed_at),
                                        "kid": checkpoint.kid, "jws": checkpoint.jws}})
        index = upto
    return {"name": chain, "head": {"seq": head.seq, "hash": head.hash} if head else None,
            "segments": segments, "uncovered": uncovered, "unlinked": unlinked}


def _first_checkpoint_from(session, chain: str, seq: int, cache: list):
    while cache and cache[0].seq < seq:
        cache.pop(0)
    if not cache:
        cache.extend(session.scalars(select(AuditCheckpoint).where(
            AuditCheckpoint.chain == chain, AuditCheckpoint.seq >= seq)
            .order_by(AuditCheckpoint.seq).limit(CHECKPOINT_BATCH)))
    return cache[0] if cache else None


#: What a digest is made of (rows, not ORM objects: a segment may hold many thousands).
_HASHED_COLUMNS = (AuditEvent.seq, AuditEvent.at, AuditEvent.tenant_id, AuditEvent.event,
                   AuditEvent.actor, AuditEvent.actor_role, AuditEvent.membership_id,
                   AuditEvent.client_id, AuditEvent.detail)


def _events_between(session, chain: str, first: int, last: int):
    """The chain's events ``first`` … ``last`` in order (their hashed columns), a batch at
    a time."""
    while first <= last:
        rows = session.execute(select(*_HASHED_COLUMNS).where(
            AuditEvent.chain == chain, AuditEvent.seq >= first, AuditEvent.seq <= last)
            .order_by(AuditEvent.seq).limit(5000)).all()
        if not rows:
            return
        yield from rows
        first = rows[-1].seq + 1


def _digest(chain: str, row) -> str | None:
    """An event's digest; None for a stored value no event can hold (the verifier then
    finds the chain broken there)."""
    try:
        return content_digest(chain=chain, values=_values(row))
    except (TypeError, ValueError):
        return None


def _values(row) -> dict:
    return {"at": row.at, "tenant_id": row.tenant_id, "event": row.event, "actor": row.actor,
            "actor_role": row.actor_role, "membership_id": row.membership_id,
            "client_id": row.client_id, "detail": row.detail}


def _time(value):
    return format_time(value) if value is not None else None


__all__ = ["FORMAT", "LIST_LIMIT", "MEDIA_TYPE", "PACK_TYPE", "PROOF_LIMIT", "WAYS", "build"]
