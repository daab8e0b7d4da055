"""Signed checkpoints of the audit chains (issue 15 item 4; docs/audit-chain.md).

A checkpoint is the bridge's signed statement "at time T the chain C had its event N with
hash H": a compact JWS, ES256, header ``typ`` :data:`CHECKPOINT_TYPE`, claims ``iss``,
``chain``, ``tenant`` (None for the system chain), ``seq``, ``hash`` and ``iat``. Once a
tenant holds one (every export carries them), events up to N cannot be changed, removed or
reordered without the verifier noticing, the newest ones included.

The maintenance loop (:meth:`Checkpoints.sign_due`) signs the head of every chain that moved
since its last checkpoint once that one is older than the interval (default 10 minutes; a
chain's first checkpoint at once), and only after checking the events since the last
checkpoint against their hashes: the bridge never signs a chain it finds broken (it logs an
error instead). Any number of processes may run it: one checkpoint per (chain, seq).

The keys are a ring of their own (purpose ``audit``, ES256, encrypted at rest like every
signing key: :class:`~idp_bridge.domain.keys.KeyRing`), published at ``/audit/jwks`` and
never at ``/jwks``: no checkpoint key can verify an access token or the other way round,
and a checkpoint has no ``aud``, ``sub``, ``scope`` or ``exp`` a resource server would
accept. Retired keys stay published for good: old checkpoints must stay verifiable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from joserfc import jwt
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import aliased

from ..storage.models import AuditChainHead, AuditCheckpoint, AuditEvent
from .audit_chain import GENESIS, SYSTEM_CHAIN, event_hash
from .keys import KeyDecryptionFailed, KeyRing

log = logging.getLogger(__name__)

CHECKPOINT_TYPE = "audit-checkpoint+jwt"
PURPOSE = "audit"
ALGORITHM = "ES256"
#: Retired checkpoint keys stay in the published key set this long (for good, in effect).
KEEP_PUBLISHED_SECONDS = 100 * 365 * 86400
#: Chains checked and signed per run at most (the rest in the next run).
CHAINS_PER_RUN = 500
#: Events read per query while a segment is checked.
SEGMENT_BATCH = 5000


@dataclass(frozen=True)
class Broken:
    """Where a stored chain does not verify."""

    chain: str
    seq: int
    problem: str


class CheckpointKeys:
    """The checkpoint key ring; its first key is made when first needed (or by ``serve``
    and ``demo`` before any worker starts), a new one when the key-encryption key does not
    open the active one."""

    def __init__(self, db, key_encryption_key: str):
        self._db = db
        self.ring = KeyRing(db, key_encryption_key, ALGORITHM, KEEP_PUBLISHED_SECONDS,
                            purpose=PURPOSE)

    def ensure(self, session, now) -> None:
        self.ring.ensure(session, now)

    def rotate(self, session, now) -> str:
        return self.ring.create(session, now)

    def signing_key(self):
        from ..storage.db import utcnow

        try:
            return self.ring.signing_key()
        except (RuntimeError, KeyDecryptionFailed) as exc:
            recover = isinstance(exc, KeyDecryptionFailed)
        with self._db.transaction() as session:
            if recover:
                self.ring.create(session, utcnow())
            else:
                self.ring.ensure(session, utcnow())
        self.ring.invalidate()
        return self.ring.signing_key()

    def jwks(self) -> dict:
        """Every checkpoint key ever used (public parts); the first is made if none yet."""
        self.signing_key()
        return self.ring.jwks()


class Checkpoints:
    def __init__(self, *, db, keys: CheckpointKeys, issuer: str, interval_seconds: int):
        self.db = db
        self.keys = keys
        self.issuer = issuer
        self.interval = timedelta(seconds=interval_seconds)

    # --- signing ---
    def sign_due(self, now: datetime, *, every_moved: bool = False) -> tuple[int, list[Broken]]:
        """Check and sign the chains that are due (``every_moved``: every chain that moved
        since its last checkpoint, however recent); returns how many were signed and the
        chains found broken (each logged as an error, none signed)."""
        with self.db.read() as session:
            due = self._due(session, now - (timedelta(0) if every_moved else self.interval))
        signed, broken = 0, []
        for chain, seq, head_hash, last_seq, last_hash in due:
            with self.db.read() as session:
                problem = check_segment(session, chain, last_seq, last_hash, seq, head_hash)
            if problem is not None:
                log.error("audit chain %s does not verify at seq %d (%s): no checkpoint signed",
                          chain, problem.seq, problem.problem)
                broken.append(problem)
                continue
            jws = self.sign(chain, seq, head_hash, now)
            with self.db.transaction() as session:
                signed += self._store(session, chain, seq, head_hash, now, jws)
        return signed, broken

    def _due(self, session, cutoff: datetime):
        """(chain, head seq, head hash, last checkpoint's seq, its hash) of the chains whose
        head moved past their last checkpoint, that checkpoint signed at ``cutoff`` or
        before. One pass over the heads; each chain's last checkpoint found on the index
        (chain, seq)."""
        inner = aliased(AuditCheckpoint)
        last = aliased(AuditCheckpoint)
        newest = (select(func.max(inner.seq)).where(inner.chain == AuditChainHead.chain)
                  .correlate(AuditChainHead).scalar_subquery())
        rows = session.execute(
            select(AuditChainHead.chain, AuditChainHead.seq, AuditChainHead.hash,
                   last.seq, last.hash)
            .outerjoin(last, (last.chain == AuditChainHead.chain) & (last.seq == newest))
            .where((last.seq.is_(None)) | ((AuditChainHead.seq > last.seq)
                                           & (last.signed_at <= cutoff)))
            .order_by(AuditChainHead.chain).limit(CHAINS_PER_RUN)).all()
        return [(chain, seq, digest, last_seq or 0, last_hash or GENESIS)
                for chain, seq, digest, last_seq, last_hash in rows]

    def sign(self, chain: str, seq: int, head_hash: str, now: datetime) -> str:
        kid, alg, key = self.keys.signing_key()
        claims = {"iss": self.issuer, "chain": chain,
                  "tenant": None if chain == SYSTEM_CHAIN else chain.split(":", 1)[1],
                  "seq": seq, "hash": head_hash, "iat": int(now.timestamp())}
        return jwt.encode({"alg": alg, "kid": kid, "typ": CHECKPOINT_TYPE}, claims, key)

    @staticmethod
    def _store(session, chain, seq, head_hash, now, jws) -> int:
        from joserfc import jws as jws_module

        kid = jws_module.extract_compact(jws.encode()).protected["kid"]
        signed_at = datetime.fromtimestamp(int(now.timestamp()), timezone.utc)
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        result = session.execute(dialect.insert(AuditCheckpoint).values(
            chain=chain, seq=seq, hash=head_hash, signed_at=signed_at, kid=kid, jws=jws,
        ).on_conflict_do_nothing(index_elements=["chain", "seq"]).returning(AuditCheckpoint.id))
        return len(result.all())

    # --- reading ---
    @staticmethod
    def of_chain(session, chain: str, *, after: int = 0, upto: int | None = None,
                 limit: int = 1000) -> list[AuditCheckpoint]:
        query = select(AuditCheckpoint).where(AuditCheckpoint.chain == chain,
                                              AuditCheckpoint.seq > after)
        if upto is not None:
            query = query.where(AuditCheckpoint.seq <= upto)
        return list(session.scalars(query.order_by(AuditCheckpoint.seq).limit(limit)))

    @staticmethod
    def latest(session, chain: str) -> AuditCheckpoint | None:
        return session.scalars(select(AuditCheckpoint).where(AuditCheckpoint.chain == chain)
                               .order_by(AuditCheckpoint.seq.desc()).limit(1)).first()


def check_segment(session, chain: str, after_seq: int, after_hash: str, upto_seq: int,
                  upto_hash: str) -> Broken | None:
    """Recompute the stored events ``after_seq + 1 … upto_seq`` of ``chain`` from
    ``after_hash`` (the last checkpoint's); None when each hash and the head match."""
    prev, expected = after_hash, after_seq + 1
    while expected <= upto_seq:
        rows = session.execute(
            select(AuditEvent).where(AuditEvent.chain == chain, AuditEvent.seq >= expected,
                                     AuditEvent.seq <= upto_seq)
            .order_by(AuditEvent.seq).limit(SEGMENT_BATCH)).scalars().all()
        if not rows:
            return Broken(chain, expected, "removed")
        for row in rows:
            if row.seq != expected:
                return Broken(chain, expected, "removed")
            values = {"at": row.at, "tenant_id": row.tenant_id, "event": row.event,
                      "actor": row.actor, "actor_role": row.actor_role,
                      "membership_id": row.membership_id, "client_id": row.client_id,
                      "detail": row.detail}
            try:
                digest = event_hash(chain=chain, seq=row.seq, prev=prev, values=values)
            except (TypeError, ValueError):
                return Broken(chain, row.seq, "changed")
            if digest != row.hash:
                return Broken(chain, row.seq, "changed")
            prev, expected = row.hash, expected + 1
    if prev != upto_hash:
        return Broken(chain, upto_seq, "head does not match its event")
    return None
