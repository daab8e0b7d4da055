"""Receivers' streams and delivery bookkeeping.

Pending events of a stream are the revocations still relevant (newer than the access-token
lifetime plus leeway: older ones revoke only expired tokens) that the stream has not
acknowledged. Delivery is at least once; receivers deduplicate by ``jti``.

Event ids (``jti``) are ``r<revocation id>.<mac>`` and ``v<verification id>.<mac>``: the mac
is an HMAC-SHA256 (key derived from the server secret) of (kind, stream, id), truncated to
128 bits. They are the same on every redelivery to a stream, differ between streams, and
cannot be predicted, so a receiver can acknowledge only events it was given: an
acknowledgement counts only with a valid mac and for a revocation id not above the highest
one delivered to the stream (``delivered_through_id``), a verification only while it is the
stream's current one. Anything else is ignored (RFC 8936 section 2.4).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from datetime import datetime, timedelta

from cryptography.fernet import Fernet
from sqlalchemy import case, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from ..domain.errors import Conflict, InvalidInput, NotFound
from ..metrics import FEED_LAG
from ..storage.models import Revocation, SsfAck, SsfStream
from . import rfc8417
from .egress import PushPolicy, PushTargetRefused

POLL = "urn:ietf:rfc:8936"
PUSH = "urn:ietf:rfc:8935"
EVENTS = [rfc8417.SESSION_REVOKED, rfc8417.VERIFICATION]
MAX_STREAMS_PER_CLIENT = 100
IDLE_STREAM = timedelta(hours=1)
_JTI = re.compile(r"^(r|v)(\d{1,18})\.([0-9a-f]{32})$")
MAX_AUTHORIZATION_HEADER = 4000
_HEADER_VALUE = re.compile(r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$")


class Transmitter:
    def __init__(self, *, db, keyring, issuer: str, key_encryption_key: str,
                 relevance_seconds: int, event_id_key: bytes, push_policy: PushPolicy):
        self.db = db
        self.keyring = keyring
        self.issuer = issuer.rstrip("/")
        self._fernet = Fernet(key_encryption_key.encode())
        self.relevance = timedelta(seconds=relevance_seconds)
        if len(event_id_key) < 32:
            raise ValueError("the event id key must have at least 256 bits")
        self._event_id_key = event_id_key
        self.push_policy = push_policy

    # --- event ids ---
    def _mac(self, kind: str, stream_id: str, number: int) -> str:
        message = json.dumps([kind, stream_id, number]).encode()
        return hmac.new(self._event_id_key, message, hashlib.sha256).hexdigest()[:32]

    def event_id(self, kind: str, stream_id: str, number: int) -> str:
        """The jti of revocation (``r``) or verification (``v``) ``number`` on a stream."""
        return f"{kind}{number}.{self._mac(kind, stream_id, number)}"

    def _parse_event_id(self, stream_id: str, jti) -> tuple[str, int] | None:
        match = _JTI.match(jti) if isinstance(jti, str) else None
        if match is None:
            return None
        kind, number = match.group(1), int(match.group(2))
        if not hmac.compare_digest(match.group(3), self._mac(kind, stream_id, number)):
            return None
        return kind, number

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
            if not isinstance(url, str):
                raise InvalidInput("push delivery needs an endpoint_url")
            try:
                self.push_policy.check_endpoint(url)
            except PushTargetRefused as exc:
                raise InvalidInput(str(exc)) from None
            header = delivery.get("authorization_header")
            if header is not None and (not isinstance(header, str) or
                                       len(header) > MAX_AUTHORIZATION_HEADER or
                                       not _HEADER_VALUE.match(header)):
                raise InvalidInput("authorization_header must be a header value of at most "
                                   f"{MAX_AUTHORIZATION_HEADER} printable ASCII characters")
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
        """(sets by jti, more available) for the stream; raises NotFound for others' streams.

        The transaction only reads what is pending and records what is delivered; the SETs
        are signed after it commits (no signing inside a write transaction). A delivery
        recorded but then not sent is sent again on the next poll (at least once)."""
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
            claims = {}
            if stream.verification_id is not None and max_events > 0:
                jti = self.event_id("v", stream.stream_id, stream.verification_id)
                claims[jti] = rfc8417.verification_claims(
                    stream.stream_id, stream.verification_state, issuer=self.issuer,
                    audience=client_id, jti=jti)
            delivered = rows[:max(0, max_events - len(claims))]
            for revocation in delivered:
                jti = self.event_id("r", stream.stream_id, revocation.id)
                claims[jti] = rfc8417.revocation_claims(
                    revocation, issuer=self.issuer, audience=client_id, jti=jti)
            if delivered:
                self._delivered_through(session, stream, max(r.id for r in delivered))
            more = len(rows) + (stream.verification_id is not None) > len(claims)
        sets = {jti: rfc8417.sign_set(self.keyring, body) for jti, body in claims.items()}
        return sets, more

    @staticmethod
    def _delivered_through(session, stream: SsfStream, top: int) -> None:
        """Raise the stream's highest delivered revocation id to ``top`` (never lower it,
        also when polls of the same stream run concurrently)."""
        if stream.delivered_through_id is not None and stream.delivered_through_id >= top:
            return
        column = SsfStream.delivered_through_id
        session.execute(
            update(SsfStream).where(SsfStream.stream_id == stream.stream_id)
            .values(delivered_through_id=case((or_(column.is_(None), column < top), top),
                                              else_=column))
            .execution_options(synchronize_session=False))

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
        """Record acknowledgements of events delivered to this stream; unknown, foreign,
        forged and not yet delivered jtis are ignored (RFC 8936 2.4)."""
        if not isinstance(stream_id, str):
            return
        ids, verifications = set(), set()
        for jti in jtis:
            parsed = self._parse_event_id(stream_id, jti)
            if parsed is not None:
                (ids if parsed[0] == "r" else verifications).add(parsed[1])
        if not ids and not verifications:
            return
        try:
            self._record_acks(stream_id, client_id, ids, verifications, now)
        except IntegrityError:
            # Two concurrent polls acknowledged the same jti; the rows are there, which is
            # all an acknowledgement means.
            pass

    def _record_acks(self, stream_id, client_id, ids, verifications, now) -> None:
        with self.db.transaction() as session:
            stream = self.stream(session, client_id, stream_id)
            if stream.verification_id is not None and stream.verification_id in verifications:
                stream.verification_id = None
                stream.verification_state = None
            ceiling = stream.delivered_through_id
            ids = {i for i in ids if ceiling is not None and i <= ceiling}
            if not ids:
                return
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
