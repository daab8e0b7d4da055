"""Receivers' streams and delivery bookkeeping.

Pending events of a stream are the revocations still relevant (newer than the access-token
lifetime plus leeway: older ones revoke only expired tokens) that the stream has not
acknowledged. Delivery is at least once; receivers deduplicate by ``jti``.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta

from cryptography.fernet import Fernet
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from ..domain.errors import Conflict, InvalidInput, NotFound
from ..metrics import FEED_LAG
from ..storage.models import Revocation, SsfAck, SsfStream
from . import rfc8417

POLL = "urn:ietf:rfc:8936"
PUSH = "urn:ietf:rfc:8935"
EVENTS = [rfc8417.SESSION_REVOKED, rfc8417.VERIFICATION]
MAX_STREAMS_PER_CLIENT = 100
IDLE_STREAM = timedelta(hours=1)
_JTI = re.compile(r"^(r|v)(\d{1,18})\.([0-9a-f]{32})$")


class Transmitter:
    def __init__(self, *, db, keyring, issuer: str, key_encryption_key: str,
                 relevance_seconds: int):
        self.db = db
        self.keyring = keyring
        self.issuer = issuer.rstrip("/")
        self._fernet = Fernet(key_encryption_key.encode())
        self.relevance = timedelta(seconds=relevance_seconds)

    # --- streams ---
    def configuration(self, stream: SsfStream) -> dict:
        endpoint = stream.endpoint_url if stream.delivery_method == PUSH else \
            f"{self.issuer}/ssf/poll/{stream.stream_id}"
        return {
            "stream_id": stream.stream_id, "iss": self.issuer, "aud": stream.client_id,
            "delivery": {"method": stream.delivery_method, "endpoint_url": endpoint},
            "events_supported": EVENTS, "events_requested": stream.events_requested,
            "events_delivered": [e for e in stream.events_requested if e in EVENTS],
            "min_verification_interval": 0,
        }

    def _delivery(self, delivery) -> tuple[str, str | None, bytes | None]:
        if not isinstance(delivery, dict):
            raise InvalidInput("delivery must be an object with a method")
        method = delivery.get("method")
        if method == POLL:
            return POLL, None, None
        if method == PUSH:
            url = delivery.get("endpoint_url")
            if not isinstance(url, str) or not re.match(r"^https?://[^\s/]+", url) or len(url) > 2000:
                raise InvalidInput("push delivery needs an http(s) endpoint_url")
            header = delivery.get("authorization_header")
            if header is not None and (not isinstance(header, str) or len(header) > 4000):
                raise InvalidInput("authorization_header must be a string")
            return PUSH, url, self._fernet.encrypt(header.encode()) if header else None
        raise InvalidInput(f"delivery method must be {POLL} or {PUSH}")

    def create_stream(self, client_id: str, body: dict, now: datetime) -> dict:
        method, url, header = self._delivery(body.get("delivery", {"method": POLL}))
        requested = body.get("events_requested", EVENTS)
        if not isinstance(requested, list) or not all(isinstance(e, str) for e in requested):
            raise InvalidInput("events_requested must be a list of event type URIs")
        with self.db.transaction() as session:
            count = session.execute(select(func.count()).select_from(SsfStream)
                                    .where(SsfStream.client_id == client_id)).scalar_one()
            if count >= MAX_STREAMS_PER_CLIENT:
                raise Conflict(f"a receiver may have at most {MAX_STREAMS_PER_CLIENT} streams")
            stream = SsfStream(stream_id=uuid.uuid4().hex, client_id=client_id,
                               delivery_method=method, endpoint_url=url,
                               authorization_header=header, events_requested=requested,
                               start_after_id=0, created_at=now, last_seen_at=now)
            session.add(stream)
            return self.configuration(stream)

    def stream(self, session, client_id: str, stream_id) -> SsfStream:
        stream = session.get(SsfStream, stream_id) if isinstance(stream_id, str) and \
            len(stream_id) == 32 else None
        if stream is None or stream.client_id != client_id:
            raise NotFound("no such stream")
        return stream

    def list_streams(self, client_id: str) -> list[dict]:
        with self.db.read() as session:
            rows = session.scalars(select(SsfStream).where(SsfStream.client_id == client_id)
                                   .order_by(SsfStream.created_at)).all()
            return [self.configuration(s) for s in rows]

    def get_stream(self, client_id: str, stream_id) -> dict:
        with self.db.read() as session:
            return self.configuration(self.stream(session, client_id, stream_id))

    def update_stream(self, client_id: str, body: dict) -> dict:
        with self.db.transaction() as session:
            stream = self.stream(session, client_id, body.get("stream_id"))
            if "delivery" in body:
                stream.delivery_method, stream.endpoint_url, stream.authorization_header = \
                    self._delivery(body["delivery"])
            return self.configuration(stream)

    def delete_stream(self, client_id: str, stream_id) -> None:
        with self.db.transaction() as session:
            stream = self.stream(session, client_id, stream_id)
            session.execute(delete(SsfAck).where(SsfAck.stream_id == stream.stream_id))
            session.delete(stream)

    def request_verification(self, client_id: str, stream_id, state, now: datetime) -> None:
        if state is not None and (not isinstance(state, str) or len(state) > 500):
            raise InvalidInput("state must be a string of at most 500 characters")
        with self.db.transaction() as session:
            stream = self.stream(session, client_id, stream_id)
            stream.verification_state = state or ""
            stream.verification_id = int(now.timestamp() * 1000)

    # --- delivery ---
    def pending(self, stream_id: str, client_id: str, max_events: int, now: datetime,
                *, touch: bool = True):
        """(sets by jti, more available) for the stream; raises NotFound for others' streams."""
        horizon = now - self.relevance
        with self.db.transaction() as session:
            stream = self.stream(session, client_id, stream_id)
            if touch:
                stream.last_seen_at = now
            acked = select(SsfAck.revocation_id).where(SsfAck.stream_id == stream.stream_id)
            rows = session.scalars(
                select(Revocation)
                .where(Revocation.id > stream.start_after_id, Revocation.created_at > horizon,
                       Revocation.id.not_in(acked))
                .order_by(Revocation.id).limit(max_events + 1)).all()
            sets = {}
            if stream.verification_id is not None:
                jti = f"v{stream.verification_id}.{stream.stream_id}"
                sets[jti] = rfc8417.sign_set(self.keyring, rfc8417.verification_claims(
                    stream.stream_id, stream.verification_state, issuer=self.issuer,
                    audience=client_id, jti=jti))
            for revocation in rows[:max(0, max_events - len(sets))]:
                jti = f"r{revocation.id}.{stream.stream_id}"
                sets[jti] = rfc8417.sign_set(self.keyring, rfc8417.revocation_claims(
                    revocation, issuer=self.issuer, audience=client_id, jti=jti))
            return sets, len(rows) + (stream.verification_id is not None) > len(sets)

    def has_pending(self, stream_id: str, now: datetime) -> bool:
        """Cheap check (no signing) for the long-poll wait loop."""
        with self.db.read() as session:
            stream = session.get(SsfStream, stream_id)
            if stream is None:
                return True  # let the caller's next pending() report it
            if stream.verification_id is not None:
                return True
            acked = select(SsfAck.revocation_id).where(SsfAck.stream_id == stream_id)
            return session.execute(select(Revocation.id).where(
                Revocation.id > stream.start_after_id,
                Revocation.created_at > now - self.relevance,
                Revocation.id.not_in(acked)).limit(1)).first() is not None

    def acknowledge(self, stream_id: str, client_id: str, jtis, now: datetime) -> None:
        """Record acknowledgements; unknown or foreign jtis are ignored (RFC 8936 2.4)."""
        ids, verification = set(), None
        for jti in jtis:
            match = _JTI.match(jti) if isinstance(jti, str) else None
            if match and match.group(3) == stream_id:
                if match.group(1) == "r":
                    ids.add(int(match.group(2)))
                else:
                    verification = int(match.group(2))
        if not ids and verification is None:
            return
        try:
            self._record_acks(stream_id, client_id, ids, verification, now)
        except IntegrityError:
            # Two concurrent polls acknowledged the same jti; the rows are there, which is
            # all an acknowledgement means.
            pass

    def _record_acks(self, stream_id, client_id, ids, verification, now) -> None:
        with self.db.transaction() as session:
            stream = self.stream(session, client_id, stream_id)
            if verification is not None and stream.verification_id == verification:
                stream.verification_id = None
                stream.verification_state = None
            already = set(session.scalars(select(SsfAck.revocation_id).where(
                SsfAck.stream_id == stream_id, SsfAck.revocation_id.in_(ids))))
            new = sorted(ids - already)
            for revocation_id in new:
                session.add(SsfAck(stream_id=stream_id, revocation_id=revocation_id, acked_at=now))
            for created_at in session.scalars(select(Revocation.created_at)
                                              .where(Revocation.id.in_(new))):
                FEED_LAG.observe(max(0.0, (now - created_at).total_seconds()))

    def cleanup(self, now: datetime) -> None:
        """Forget acknowledgements of events no longer relevant and idle streams."""
        with self.db.transaction() as session:
            session.execute(delete(SsfAck).where(SsfAck.acked_at < now - self.relevance * 2))
            idle = session.scalars(select(SsfStream.stream_id)
                                   .where(SsfStream.last_seen_at < now - IDLE_STREAM)).all()
            if idle:
                session.execute(delete(SsfAck).where(SsfAck.stream_id.in_(idle)))
                session.execute(delete(SsfStream).where(SsfStream.stream_id.in_(idle)))

    def push_header(self, stream: SsfStream) -> str | None:
        return self._fernet.decrypt(stream.authorization_header).decode() \
            if stream.authorization_header else None


__all__ = ["POLL", "PUSH", "Transmitter"]
