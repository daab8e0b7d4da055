"""Use cases of the tenant's audit chain (issue 15 item 4; docs/audit-chain.md): a tenant
admin downloads the chain of its tenant's audit events with the bridge's signed checkpoints
(the API a page at a time, the access-log page the whole chain as JSON or CSV), and anyone
reads the checkpoint keys (``/audit/jwks``).

Pages are bounded (:data:`MAX_PAGE` events) and read by ``seq`` on the unique index
``(chain, seq)``; a whole download reads page after page up to the head it found first.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import select

from ..domain.audit_chain import CSV_COLUMNS, FORMAT, GENESIS, chain_of, csv_cells, exported_event
from ..domain.audit_checkpoints import Checkpoints
from ..domain.errors import InvalidInput
from ..storage.db import utcnow
from ..storage.models import AuditChainHead, AuditEvent

__all__ = ["AuditChains", "ChainPage", "CheckpointInfo", "CSV_COLUMNS", "FORMAT", "csv_cells"]

MAX_PAGE = 5000
DEFAULT_PAGE = 1000


@dataclass(frozen=True)
class ChainPage:
    """One page of a chain in the export's shape (plain dicts: docs/audit-chain.md)."""

    chain: str
    #: None for the system chain.
    tenant_id: str | None
    head_seq: int
    head_hash: str
    after: int
    events: list
    checkpoints: list
    #: The ``after`` of the next page, None on the last one.
    next_after: int | None

    def document(self, *, issuer: str, jwks_uri: str, exported_at: str) -> dict:
        return {"format": FORMAT, "issuer": issuer, "chain": self.chain,
                "tenant": self.tenant_id, "exported_at": exported_at,
                "head": {"seq": self.head_seq, "hash": self.head_hash},
                "after": self.after, "next_after": self.next_after, "jwks_uri": jwks_uri,
                "events": self.events, "checkpoints": self.checkpoints}


@dataclass(frozen=True)
class CheckpointInfo:
    seq: int
    signed_at: object


def checkpoint_json(row) -> dict:
    from ..domain.audit_chain import format_time

    return {"seq": row.seq, "hash": row.hash, "signed_at": format_time(row.signed_at),
            "kid": row.kid, "jws": row.jws}


class AuditChains:
    def __init__(self, *, db, authorize, memberships, checkpoints: Checkpoints):
        self.db = db
        self.authorize = authorize
        self.memberships = memberships
        self.checkpoints = checkpoints

    @property
    def issuer(self) -> str:
        return self.checkpoints.issuer

    def page(self, caller, tenant_id: str, *, after: int = 0,
             limit: int = DEFAULT_PAGE) -> ChainPage:
        """The events of the tenant's chain after position ``after`` (at most ``limit``,
        1 to :data:`MAX_PAGE`), the first with its ``prev``; the checkpoints of that range,
        and on the last page every later one too (so that a chain cut short shows)."""
        self.authorize.tenant_admin(caller, tenant_id)
        return self._page(tenant_id, after=after, limit=limit)

    def pages(self, caller, tenant_id: str, *, limit: int = DEFAULT_PAGE):
        """Every page of the chain, from seq 1 to the last (a whole download)."""
        self.authorize.tenant_admin(caller, tenant_id)
        return self._pages(tenant_id, limit=limit)

    def operator_pages(self, tenant_id: str | None, *, limit: int = DEFAULT_PAGE):
        """Every page of the chain of ``tenant_id``, or with None of the system chain (the
        events without a tenant: support's and the operator's own), for the operator's
        ``idp-bridge audit export``: who runs the CLI holds the database already."""
        return self._pages(tenant_id, limit=limit)

    def document_text(self, first: ChainPage, rest) -> Iterator[str]:
        """The whole-chain export (docs/audit-chain.md) of the pages ``first`` and
        ``rest`` as pieces of JSON text, a page at a time (a long chain never sits in
        memory): what the access-log page downloads and ``idp-bridge audit export``
        writes; ``idp-bridge audit verify`` reads it."""
        issuer = self.issuer
        opening = {"format": FORMAT, "issuer": issuer, "chain": first.chain,
                   "tenant": first.tenant_id, "exported_at": self.now_text(),
                   "jwks_uri": f"{issuer}/audit/jwks"}
        yield json.dumps(opening)[:-1] + ', "events": ['
        checkpoints, last, separator = [], first, ""
        for page in itertools.chain((first,), rest):
            for event in page.events:
                yield separator + "\n" + json.dumps(event)
                separator = ","
            checkpoints += page.checkpoints
            last = page
        yield ("\n], " + json.dumps({
            "checkpoints": checkpoints, "head": {"seq": last.head_seq, "hash": last.head_hash},
            "after": 0, "next_after": None, "jwks": self.jwks()})[1:] + "\n")

    def _pages(self, tenant_id: str | None, *, limit: int):
        page = self._page(tenant_id, limit=limit)
        yield page
        while page.next_after is not None:
            page = self._page(tenant_id, after=page.next_after, limit=limit)
            yield page

    def _page(self, tenant_id: str | None, *, after: int = 0,
              limit: int = DEFAULT_PAGE) -> ChainPage:
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be an integer from 1 to {MAX_PAGE}",
                               code="limit_out_of_range")
        if after < 0:
            raise InvalidInput("after must be a position from 0", code="after_out_of_range")
        chain = chain_of(tenant_id)
        with self.db.read() as session:
            if tenant_id is not None:
                self.memberships.tenant(session, tenant_id)
            # Checkpoints first, then the head, then the events: whatever a checkpoint
            # covers was committed before the events are read (PostgreSQL reads each
            # statement's own snapshot), so no event a checkpoint names can be missed.
            signed = self.checkpoints.of_chain(session, chain, after=after, limit=limit + 100)
            head = session.get(AuditChainHead, chain)
            head_seq, head_hash = (head.seq, head.hash) if head else (0, GENESIS)
            rows = session.scalars(
                select(AuditEvent).where(AuditEvent.chain == chain, AuditEvent.seq > after)
                .order_by(AuditEvent.seq).limit(limit)).all()
            if after == 0:
                prev = GENESIS
            else:
                prev = session.scalar(select(AuditEvent.hash).where(
                    AuditEvent.chain == chain, AuditEvent.seq == after))
        events = []
        for row in rows:
            events.append(exported_event(row, prev))
            prev = row.hash
        last = rows[-1].seq if rows else after
        more = len(rows) == limit
        checkpoints = [checkpoint_json(c) for c in signed if not more or c.seq <= last]
        return ChainPage(chain=chain, tenant_id=tenant_id, head_seq=head_seq,
                         head_hash=head_hash, after=after, events=events,
                         checkpoints=checkpoints, next_after=last if more else None)

    def latest_checkpoint(self, caller, tenant_id: str) -> CheckpointInfo | None:
        """The tenant's newest checkpoint (for the access-log page)."""
        self.authorize.tenant_admin(caller, tenant_id)
        with self.db.read() as session:
            row = self.checkpoints.latest(session, chain_of(tenant_id))
            return CheckpointInfo(row.seq, row.signed_at) if row else None

    def jwks(self) -> dict:
        """The checkpoint keys (public), for anyone."""
        return self.checkpoints.keys.jwks()

    @staticmethod
    def now_text() -> str:
        from ..domain.audit_chain import format_time

        return format_time(utcnow())
