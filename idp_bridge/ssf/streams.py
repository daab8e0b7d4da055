"""Receivers' streams (SSF 1.0 section 8) and delivery bookkeeping.

Streams (section 8.1.1): created, read, updated (PATCH) and replaced (PUT), deleted.
Receiver-supplied properties are ``delivery``, ``events_requested``, ``description`` and
``set_signing_alg`` (this transmitter's extension: ``RS256``, the default, or ``ES256``);
transmitter-supplied ones may be sent back but must match; any other property is refused
(``400``). ``events_delivered`` is ``events_requested`` ∩ ``events_supported`` and is what
delivery honours: a stream without ``session-revoked`` among them gets no revocations.
Verification and Stream Updated events go to every stream (section 8.1.4, 8.1.5).

Status (section 8.1.2): ``enabled``; ``paused``: nothing is transmitted and revocations are
held (in order, for as long as they are relevant: an access-token lifetime plus leeway);
``disabled``: nothing is transmitted and nothing held: what happened while disabled (and
what was pending) is never delivered. When the transmitter itself pauses, disables or
re-enables a stream (:meth:`Transmitter.change_status`, the operator's command), a Stream
Updated event is queued first: it is the one event still delivered to a paused or disabled
stream, until acknowledged.

Subjects (section 8.1.3): every subject is in a stream by default (``default_subjects``
ALL); a receiver may remove subjects (events matching one are not sent to that stream and
are dropped, not held) and add them back.

Pending events of a stream are the revocations still relevant (newer than the access-token
lifetime plus leeway: older ones revoke only expired tokens) that the stream has not
acknowledged. Delivery is at least once; receivers deduplicate by ``jti``.

Event ids (``jti``) are ``r<revocation id>.<mac>``, ``v<verification id>.<mac>`` and
``u<stream update id>.<mac>``: the mac is an HMAC-SHA256 (key derived from the server secret)
of (kind, stream, id), truncated to 128 bits. They are the same on every redelivery to a
stream, differ between streams, and cannot be predicted, so a receiver can acknowledge only
events it was given: an acknowledgement counts only with a valid mac and for a revocation id
not above the highest one delivered to the stream (``delivered_through_id``), a verification
or stream update only while it is the stream's current one. Anything else is ignored
(RFC 8936 section 2.4).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.fernet import Fernet
from sqlalchemy import bindparam, delete, false, func, select, text, tuple_, update
from sqlalchemy.exc import IntegrityError

from ..domain.errors import Conflict, InvalidInput, NotFound
from ..metrics import FEED_LAG
from ..storage.models import Revocation, RevocationReceipt, SsfAck, SsfStream
from . import rfc8417
from .bookkeeping import DeliveriesFirst, WriteCoalescer
from .egress import PushPolicy, PushTargetRefused
from .set_keys import ALGORITHMS, DEFAULT_ALGORITHM

POLL = "urn:ietf:rfc:8936"
PUSH = "urn:ietf:rfc:8935"
EVENTS = [rfc8417.SESSION_REVOKED, rfc8417.VERIFICATION, rfc8417.STREAM_UPDATED]
STATUSES = ("enabled", "paused", "disabled")
MAX_STREAMS_PER_CLIENT = 100
IDLE_STREAM = timedelta(hours=1)
#: Seconds between two verification requests of a stream (SSF 8.1.1, 8.1.4.2: 429 sooner).
MIN_VERIFICATION_INTERVAL = 30
MAX_DESCRIPTION = 500
MAX_REASON = 500
MAX_EVENTS_REQUESTED = 32
MAX_REMOVED_SUBJECTS = 1000
MAX_SUBJECT_LENGTH = 2000
_JTI = re.compile(r"^(r|v|u)(\d{1,18})\.([0-9a-f]{32})$")
MAX_AUTHORIZATION_HEADER = 4000
_HEADER_VALUE = re.compile(r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$")

RECEIVER_PROPERTIES = ("delivery", "events_requested", "description", "set_signing_alg")
TRANSMITTER_PROPERTIES = ("stream_id", "iss", "aud", "events_supported", "events_delivered",
                          "min_verification_interval", "inactivity_timeout")
_DELIVERY_PROPERTIES = ("method", "endpoint_url", "authorization_header")
#: Subject identifier formats (RFC 9493 section 3, SSF 3.5) a receiver may name.
_SIMPLE_FORMATS = ("account", "aliases", "did", "email", "iss_sub", "jwt_id", "opaque",
                   "phone_number", "saml_assertion_id", "uri", "ip-addresses")


@dataclass(frozen=True)
class PendingRead:
    """What is pending for a stream, as read (:meth:`Transmitter.read_pending`)."""

    claims: dict
    more: bool
    #: The highest revocation id given or dropped, or None.
    top: int | None
    #: Revocation ids dropped for the stream's removed subjects.
    skipped: list
    alg: str
    #: The stream's delivered-through ceiling when read.
    ceiling: int | None

    @property
    def anything(self) -> bool:
        """Whether polling now would answer or record something."""
        return bool(self.claims or self.skipped or self.more)


class TooManyRequests(Exception):
    """A receiver asked again sooner than allowed (answered 429 with Retry-After)."""

    def __init__(self, description: str, retry_after: int):
        super().__init__(description)
        self.description = description
        self.retry_after = retry_after


class Transmitter:
    def __init__(self, *, db, set_keys, issuer: str, key_encryption_key: str,
                 relevance_seconds: int, event_id_key: bytes, push_policy: PushPolicy,
                 user_issuer: str | None = None,
                 min_verification_interval: int = MIN_VERIFICATION_INTERVAL):
        self.db = db
        self.set_keys = set_keys
        self.issuer = issuer.rstrip("/")
        self.user_issuer = user_issuer
        self._fernet = Fernet(key_encryption_key.encode())
        self.relevance = timedelta(seconds=relevance_seconds)
        if len(event_id_key) < 32:
            raise ValueError("the event id key must have at least 256 bits")
        self._event_id_key = event_id_key
        self.push_policy = push_policy
        self.min_verification_interval = min_verification_interval
        #: The write polls share: acknowledgements and delivery bookkeeping of concurrent
        #: polls in one transaction.
        self.bookkeeping = WriteCoalescer(db)
        #: Long polls answering a wake-up go before acknowledgements (rfc8936.poll).
        self.deliveries = DeliveriesFirst()

    # --- event ids ---
    def _mac(self, kind: str, stream_id: str, number: int) -> str:
        message = json.dumps([kind, stream_id, number]).encode()
        return hmac.new(self._event_id_key, message, hashlib.sha256).hexdigest()[:32]

    def event_id(self, kind: str, stream_id: str, number: int) -> str:
        """The jti of revocation (``r``), verification (``v``) or stream update (``u``)
        ``number`` on a stream."""
        return f"{kind}{number}.{self._mac(kind, stream_id, number)}"

    def _parse_event_id(self, stream_id: str, jti) -> tuple[str, int] | None:
        match = _JTI.match(jti) if isinstance(jti, str) else None
        if match is None:
            return None
        kind, number = match.group(1), int(match.group(2))
        if not hmac.compare_digest(match.group(3), self._mac(kind, stream_id, number)):
            return None
        return kind, number

    def _txn(self, *parts) -> str:
        message = json.dumps(["txn", *parts]).encode()
        return hmac.new(self._event_id_key, message, hashlib.sha256).hexdigest()[:32]

    # --- stream configuration ---
    def poll_url(self, stream_id: str) -> str:
        return f"{self.issuer}/ssf/poll/{stream_id}"

    @staticmethod
    def delivered(requested) -> list[str]:
        """``events_delivered``: the requested events this transmitter supports."""
        return [e for e in EVENTS if e in (requested or [])]

    def configuration(self, stream: SsfStream) -> dict:
        endpoint = stream.endpoint_url if stream.delivery_method == PUSH else \
            self.poll_url(stream.stream_id)
        config = {
            "stream_id": stream.stream_id, "iss": self.issuer, "aud": stream.client_id,
            "delivery": {"method": stream.delivery_method, "endpoint_url": endpoint},
            "events_supported": list(EVENTS), "events_requested": list(stream.events_requested),
            "events_delivered": self.delivered(stream.events_requested),
            "min_verification_interval": self.min_verification_interval,
            "inactivity_timeout": int(IDLE_STREAM.total_seconds()),
            "set_signing_alg": stream.set_signing_alg,
        }
        if stream.description is not None:
            config["description"] = stream.description
        return config

    def _delivery(self, delivery, stream_id: str | None) -> tuple[str, str | None, bytes | None]:
        if not isinstance(delivery, dict):
            raise InvalidInput("delivery must be an object with a method")
        if any(name not in _DELIVERY_PROPERTIES for name in delivery):
            raise InvalidInput("delivery has a property other than method, endpoint_url and "
                               "authorization_header")
        method = delivery.get("method")
        if method == POLL:
            url = delivery.get("endpoint_url")
            if url is not None and (stream_id is None or url != self.poll_url(stream_id)):
                raise InvalidInput("the transmitter supplies the endpoint_url of poll delivery")
            if "authorization_header" in delivery:
                raise InvalidInput("authorization_header is for push delivery only")
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

    @staticmethod
    def _events_requested(value) -> list[str]:
        if not isinstance(value, list) or len(value) > MAX_EVENTS_REQUESTED or \
                not all(isinstance(e, str) and 0 < len(e) <= 500 for e in value):
            raise InvalidInput("events_requested must be a list of at most "
                               f"{MAX_EVENTS_REQUESTED} event type URIs")
        return list(dict.fromkeys(value))  # unknown ones are kept and ignored (SSF 8.1.1)

    @staticmethod
    def _description(value) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise InvalidInput("description must be a string")
        return value[:MAX_DESCRIPTION]  # SSF 8.1.1: the transmitter may truncate it

    @staticmethod
    def _algorithm(value) -> str:
        if value not in ALGORITHMS:
            raise InvalidInput(f"set_signing_alg must be one of {', '.join(ALGORITHMS)}")
        return value

    def _receiver_values(self, body: dict, stream_id: str | None, *, defaults: bool) -> dict:
        """The receiver-supplied values of a create, update or replace request: only those
        present (PATCH), or all with defaults for the missing ones (POST, PUT)."""
        values = {}
        if "delivery" in body or defaults:
            (values["delivery_method"], values["endpoint_url"],
             values["authorization_header"]) = self._delivery(
                body.get("delivery", {"method": POLL}), stream_id)
        if "events_requested" in body or defaults:
            values["events_requested"] = self._events_requested(
                body.get("events_requested", list(EVENTS)))
        if "description" in body or defaults:
            values["description"] = self._description(body.get("description"))
        if "set_signing_alg" in body or defaults:
            values["set_signing_alg"] = self._algorithm(
                body.get("set_signing_alg", DEFAULT_ALGORITHM))
        return values

    @staticmethod
    def _check_properties(body, allowed) -> dict:
        if not isinstance(body, dict):
            raise InvalidInput("the request body must be a JSON object")
        if any(name not in allowed for name in body):
            # Never the name itself: it is the caller's input.
            raise InvalidInput("the request has a property this endpoint does not accept")
        return body

    def _check_transmitter_values(self, stream: SsfStream, body: dict) -> None:
        """SSF 8.1.1.3, 8.1.1.4: transmitter-supplied properties sent back must match."""
        expected = self.configuration(stream)
        for name in TRANSMITTER_PROPERTIES:
            if name in body and body[name] != expected[name]:
                raise InvalidInput(f"{name} does not match the stream's value")

    def create_stream(self, client_id: str, body, now: datetime) -> dict:
        self._check_properties(body, RECEIVER_PROPERTIES)
        values = self._receiver_values(body, None, defaults=True)
        with self.db.transaction() as session:
            count = session.execute(select(func.count()).select_from(SsfStream)
                                    .where(SsfStream.client_id == client_id)).scalar_one()
            if count >= MAX_STREAMS_PER_CLIENT:
                raise Conflict(f"a receiver may have at most {MAX_STREAMS_PER_CLIENT} streams")
            stream = SsfStream(stream_id=uuid.uuid4().hex, client_id=client_id,
                               start_after_id=0, created_at=now, last_seen_at=now,
                               status="enabled", **values)
            session.add(stream)
            return self.configuration(stream)

    def stream(self, session, client_id: str, stream_id) -> SsfStream:
        stream = session.get(SsfStream, stream_id) if isinstance(stream_id, str) and \
            len(stream_id) == 32 else None
        if stream is None or stream.client_id != client_id:
            raise NotFound("no such stream")
        return stream

    def _stream_row(self, session, client_id: str, stream_id):
        """The stream as a read-only row (attributes as on :class:`SsfStream`); NotFound as
        :meth:`stream`."""
        row = session.execute(_READ_STREAM, {"stream_id": stream_id}).first() \
            if isinstance(stream_id, str) and len(stream_id) == 32 else None
        if row is None or row.client_id != client_id:
            raise NotFound("no such stream")
        return row

    @staticmethod
    def _stream_id(value) -> str:
        if not isinstance(value, str) or not value:
            raise InvalidInput("stream_id is required")
        return value

    def list_streams(self, client_id: str) -> list[dict]:
        with self.db.read() as session:
            rows = session.scalars(select(SsfStream).where(SsfStream.client_id == client_id)
                                   .order_by(SsfStream.created_at)).all()
            return [self.configuration(s) for s in rows]

    def get_stream(self, client_id: str, stream_id, now: datetime) -> dict:
        with self.db.transaction() as session:
            stream = self.stream(session, client_id, stream_id)
            stream.last_seen_at = now  # SSF 8.1.1: management calls are activity
            return self.configuration(stream)

    def update_stream(self, client_id: str, body, now: datetime) -> dict:
        """PATCH (SSF 8.1.1.3): the receiver-supplied properties present change."""
        self._check_properties(body, RECEIVER_PROPERTIES + TRANSMITTER_PROPERTIES)
        stream_id = self._stream_id(body.get("stream_id"))
        return self._change(client_id, stream_id, body, now, replace=False)

    def replace_stream(self, client_id: str, body, now: datetime) -> dict:
        """PUT (SSF 8.1.1.4): missing receiver-supplied properties are deleted (defaults)."""
        self._check_properties(body, RECEIVER_PROPERTIES + TRANSMITTER_PROPERTIES)
        stream_id = self._stream_id(body.get("stream_id"))
        return self._change(client_id, stream_id, body, now, replace=True)

    def _change(self, client_id, stream_id, body, now, *, replace: bool) -> dict:
        with self.db.read() as session:
            self._check_transmitter_values(self.stream(session, client_id, stream_id), body)
        # Checked outside the transaction: a push endpoint's check resolves its host.
        values = self._receiver_values(body, stream_id, defaults=replace)
        with self.db.transaction() as session:
            stream = self.stream(session, client_id, stream_id)
            self._check_transmitter_values(stream, body)
            for name, value in values.items():
                setattr(stream, name, value)
            stream.last_seen_at = now
            return self.configuration(stream)

    def delete_stream(self, client_id: str, stream_id) -> None:
        with self.db.transaction() as session:
            stream = self.stream(session, client_id, stream_id)
            session.execute(delete(SsfAck).where(SsfAck.stream_id == stream.stream_id))
            _close_receipts(session, RevocationReceipt.stream_id == stream.stream_id)
            session.delete(stream)

    # --- status (SSF 8.1.2) ---
    @staticmethod
    def _status(stream: SsfStream) -> dict:
        status = {"stream_id": stream.stream_id, "status": stream.status}
        if stream.status_reason:
            status["reason"] = stream.status_reason
        return status

    def get_status(self, client_id: str, stream_id, now: datetime) -> dict:
        with self.db.transaction() as session:
            stream = self.stream(session, client_id, self._stream_id(stream_id))
            stream.last_seen_at = now
            return self._status(stream)

    @staticmethod
    def _reason(value) -> str | None:
        if value is not None and (not isinstance(value, str) or len(value) > MAX_REASON):
            raise InvalidInput(f"reason must be a string of at most {MAX_REASON} characters")
        return value or None

    def update_status(self, client_id: str, body, now: datetime) -> dict:
        """The receiver's Update Stream Status request (SSF 8.1.2.2)."""
        self._check_properties(body, ("stream_id", "status", "reason"))
        stream_id = self._stream_id(body.get("stream_id"))
        status = body.get("status")
        if status not in STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}")
        reason = self._reason(body.get("reason"))
        with self.db.transaction() as session:
            stream = self.stream(session, client_id, stream_id)
            self._set_status(session, stream, status, reason)
            stream.last_seen_at = now
            return self._status(stream)

    def change_status(self, stream_id: str, status: str, reason: str | None,
                      now: datetime) -> dict:
        """The transmitter changes a stream's status on its own (the operator's command): a
        Stream Updated event is queued before the stream stops (SSF 8.1.5)."""
        if status not in STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}")
        reason = self._reason(reason)
        with self.db.transaction() as session:
            stream = session.get(SsfStream, stream_id) if isinstance(stream_id, str) else None
            if stream is None:
                raise NotFound("no such stream")
            if stream.status == status and stream.status_reason == reason:
                return self._status(stream)
            number = int(now.timestamp() * 1000)
            stream.update_id = max(number, (stream.update_id or 0) + 1)
            stream.update_status = status
            self._set_status(session, stream, status, reason)
            return self._status(stream)

    @staticmethod
    def _set_status(session, stream: SsfStream, status: str, reason: str | None) -> None:
        if stream.status == "disabled" and status != "disabled":
            # Nothing was held while disabled: start after everything that happened so far.
            top = session.execute(select(func.max(Revocation.id))).scalar_one()
            stream.start_after_id = max(stream.start_after_id, top or 0)
        if status == "disabled":
            stream.verification_id = None  # dropped, not held
            stream.verification_state = None
        stream.status = status
        stream.status_reason = reason

    # --- subjects (SSF 8.1.3) ---
    def add_subject(self, client_id: str, body, now: datetime) -> None:
        self._check_properties(body, ("stream_id", "subject", "verified"))
        stream_id = self._stream_id(body.get("stream_id"))
        subject = _check_subject(body.get("subject"))
        if "verified" in body and not isinstance(body["verified"], bool):
            raise InvalidInput("verified must be a boolean")
        with self.db.transaction() as session:
            stream = self.stream(session, client_id, stream_id)
            removed = [s for s in (stream.removed_subjects or []) if s != subject]
            stream.removed_subjects = removed or None
            stream.last_seen_at = now

    def remove_subject(self, client_id: str, body, now: datetime) -> None:
        self._check_properties(body, ("stream_id", "subject"))
        stream_id = self._stream_id(body.get("stream_id"))
        subject = _check_subject(body.get("subject"))
        with self.db.transaction() as session:
            stream = self.stream(session, client_id, stream_id)
            removed = list(stream.removed_subjects or [])
            if subject == {"format": "opaque", "id": stream.stream_id}:
                return  # the stream itself is always in it (SSF 8.1.4.1)
            if subject not in removed:
                if len(removed) >= MAX_REMOVED_SUBJECTS:
                    raise InvalidInput(f"a stream can leave out at most {MAX_REMOVED_SUBJECTS} "
                                       "subjects")
                removed.append(subject)
            stream.removed_subjects = removed
            stream.last_seen_at = now

    # --- verification (SSF 8.1.4) ---
    def request_verification(self, client_id: str, body, now: datetime) -> None:
        self._check_properties(body, ("stream_id", "state"))
        stream_id = self._stream_id(body.get("stream_id"))
        state = body.get("state")
        if state is not None and (not isinstance(state, str) or len(state) > 500):
            raise InvalidInput("state must be a string of at most 500 characters")
        with self.db.transaction() as session:
            stream = self.stream(session, client_id, stream_id)
            last = stream.verification_requested_at
            if last is not None and self.min_verification_interval > 0:
                wait = (last + timedelta(seconds=self.min_verification_interval) - now)
                if wait.total_seconds() > 0:
                    raise TooManyRequests(
                        f"at most one verification request every "
                        f"{self.min_verification_interval} s",
                        max(1, math.ceil(wait.total_seconds())))
            stream.verification_requested_at = now
            stream.last_seen_at = now
            if stream.status == "disabled":
                return  # accepted; a disabled stream transmits nothing and holds nothing
            stream.verification_state = state or ""
            stream.verification_id = int(now.timestamp() * 1000)

    # --- delivery ---
    def pending(self, stream_id: str, client_id: str, max_events: int, now: datetime,
                *, touch: bool = True, found: "PendingRead | None" = None, company=None):
        """(sets by jti, more available) for the stream; raises NotFound for others' streams.

        What is pending is read in a read transaction (it never waits for the writer), or
        taken from ``found`` (a :meth:`read_pending` of this stream just made: the long
        poll's check). What must be written before the answer — the stream's
        delivered-through ceiling when the answer holds a newer revocation (an
        acknowledgement above the ceiling is ignored, so it is committed before the
        receiver can send one), the events of removed subjects dropped, the stream seen
        (``touch``) — goes into the write shared with the polls answered at the same moment
        (:class:`~.bookkeeping.WriteCoalescer`: one transaction for all the long polls one
        revocation wakes). The SETs are signed before it, sent once it committed. A
        delivery recorded but then not sent is sent again on the next poll (at least once:
        only an acknowledgement ends it). ``company``: the long poll's
        :class:`~.bookkeeping.Delivery` after a wake-up, whose write waits briefly for the
        wake-up's other deliveries to share it."""
        read = found if found is not None else \
            self.read_pending(stream_id, client_id, max_events, now)
        top = read.top
        if top is not None and read.ceiling is not None and top <= read.ceiling:
            top = None  # recorded already
        # Signed first, sent only once the write has committed: the signing is done before
        # the shared write (while others hold the writer), not after it.
        ring = self.set_keys.ring(read.alg)
        sets = {jti: rfc8417.sign_set(ring, body) for jti, body in read.claims.items()}
        # (company: read and signed; ready once its record is queued, or now without one)
        if touch or top is not None or read.skipped:
            self.bookkeeping.run(lambda session: self._record_delivery(
                session, stream_id, client_id, now if touch else None, top, read.skipped, now),
                gather=company.gather if company is not None else None,
                queued=company.ready if company is not None else None,
                # Without dropped events one UPDATE, which changes nothing when the stream
                # is gone (NotFound): no savepoint.
                savepoint=bool(read.skipped))
        elif company is not None:
            company.ready()
        return sets, read.more

    def read_pending(self, stream_id: str, client_id: str, max_events: int,
                     now: datetime) -> "PendingRead":
        """What :meth:`pending` would answer, read only (raises NotFound for others'
        streams). Rows, not ORM objects: this read is what a woken long poll does first,
        one poll after another in its process (the ORM's identity map and instance
        loading cost about half of it)."""
        with self.db.read() as session:
            stream = self._stream_row(session, client_id, stream_id)
            claims, more, top, skipped = self._pending_claims(session, stream, max_events, now)
            return PendingRead(claims=claims, more=more, top=top, skipped=skipped,
                               alg=stream.set_signing_alg, ceiling=stream.delivered_through_id)

    def _record_delivery(self, session, stream_id: str, client_id: str, seen_at, top,
                         skipped, now: datetime) -> None:
        """A poll's bookkeeping, inside the shared write: the stream seen, its delivered
        ceiling raised to ``top``, the revocations of removed subjects (``skipped``)
        dropped. The stream may have gone since the read: NotFound, as for its poll."""
        # One prepared UPDATE (_RECORD_DELIVERY: building it each time cost more than the
        # statement, inside the writer lock); with nothing to set, only the existence check.
        found = session.execute(_RECORD_DELIVERY[seen_at is not None, top is not None], {
            "stream_id": stream_id, "client_id": client_id, "seen_at": seen_at,
            "top": top}).rowcount
        if not found:
            raise NotFound("no such stream")
        if skipped:
            # A removed subject's events are dropped for this stream, not held (a
            # concurrent poll of the stream may have dropped some already).
            already = set(session.scalars(select(SsfAck.revocation_id).where(
                SsfAck.stream_id == stream_id, SsfAck.revocation_id.in_(skipped))))
            for revocation_id in sorted(set(skipped) - already):
                session.add(SsfAck(stream_id=stream_id, revocation_id=revocation_id,
                                   acked_at=now))
            # Its receipt says so: the event was dropped, not confirmed.
            session.execute(update(RevocationReceipt).where(
                RevocationReceipt.stream_id == stream_id,
                RevocationReceipt.revocation_id.in_(skipped),
                RevocationReceipt.outcome.is_(None))
                .values(outcome="subject_removed")
                .execution_options(synchronize_session=False))

    def _pending_claims(self, session, stream: SsfStream, max_events: int, now: datetime):
        """(claims by jti, more available, the highest revocation id given or dropped or
        None, the ids dropped for removed subjects); reads only."""
        claims: dict[str, dict] = {}
        more = False
        audience = stream.client_id
        if stream.update_id is not None:
            if max_events > len(claims):
                jti = self.event_id("u", stream.stream_id, stream.update_id)
                claims[jti] = rfc8417.stream_updated_claims(
                    stream.stream_id, stream.update_status, stream.status_reason,
                    issuer=self.issuer, audience=audience, jti=jti,
                    txn=self._txn("u", stream.stream_id, stream.update_id))
            else:
                more = True
        if stream.status != "enabled":
            return claims, more, None, []
        if stream.verification_id is not None:
            if max_events > len(claims):
                jti = self.event_id("v", stream.stream_id, stream.verification_id)
                claims[jti] = rfc8417.verification_claims(
                    stream.stream_id, stream.verification_state, issuer=self.issuer,
                    audience=audience, jti=jti,
                    txn=self._txn("v", stream.stream_id, stream.verification_id))
            else:
                more = True
        if rfc8417.SESSION_REVOKED not in self.delivered(stream.events_requested):
            return claims, more, None, []
        room = max_events - len(claims)
        if room <= 0:
            return claims, more or self._has_revocations(session, stream, now), None, []
        rows = self._pending_rows(session, stream, now, room + 1)
        delivered, skipped = [], []
        for revocation in rows[:room]:
            subjects = ({"format": "opaque", "id": revocation.value},
                        rfc8417.revocation_subject(revocation, user_issuer=self.user_issuer))
            if any(_matches(removed, s) for removed in stream.removed_subjects or []
                   for s in subjects):
                skipped.append(revocation.id)
                continue
            delivered.append(revocation)
        for revocation in delivered:
            jti = self.event_id("r", stream.stream_id, revocation.id)
            claims[jti] = rfc8417.revocation_claims(
                revocation, issuer=self.issuer, audience=audience, jti=jti,
                txn=rfc8417.transaction_id(self._event_id_key, revocation),
                user_issuer=self.user_issuer)
        top = max(r.id for r in rows[:room]) if delivered or skipped else None
        return claims, more or len(rows) > room, top, skipped

    def _pending_revocations(self, session, stream: SsfStream, now: datetime):
        cutoff = now - self.relevance
        # The scan by id starts at the oldest relevant revocation, found by its time
        # (ix_revocations_created_at), not at the stream's start: a poll and the long poll's
        # check read the relevant rows only, however many older ones the table keeps. Ids
        # need not follow created_at exactly; the smallest id of the relevant rows is a lower
        # bound of all of them. (min of id + 0: a plain min(id) makes SQLite walk the table
        # by id from the start to the first relevant row instead of reading the index.)
        floor = session.execute(select(func.min(Revocation.id + 0)).where(
            Revocation.created_at > cutoff)).scalar_one()
        if floor is None:
            # Nothing is relevant, so nothing is pending. (Scanning anyway from the stream's
            # start walked every older revocation by id: 180 ms with a million of them.)
            return select(Revocation).where(false())
        # One lower bound for the scan by id (given two, SQLite may pick the stream's).
        after = max(stream.start_after_id, floor - 1)
        acked = select(SsfAck.revocation_id).where(SsfAck.stream_id == stream.stream_id)
        return select(Revocation).where(
            Revocation.id > after, Revocation.created_at > cutoff, Revocation.id.not_in(acked))

    def _pending_rows(self, session, stream, now: datetime, limit: int) -> list:
        """The first ``limit`` pending revocations of the stream by id, as rows: what
        :meth:`_pending_revocations` selects, through the prepared statements below (the
        read of a woken long poll; building the statements each time cost more than
        running them)."""
        cutoff = now - self.relevance
        floor = session.execute(_RELEVANT_FLOOR, {"cutoff": cutoff}).scalar_one()
        if floor is None:
            return []  # nothing is relevant (_pending_revocations)
        return session.execute(_PENDING_ROWS, {
            "after": max(stream.start_after_id, floor - 1), "cutoff": cutoff,
            "stream_id": stream.stream_id, "limit": limit}).all()

    def _has_revocations(self, session, stream: SsfStream, now: datetime) -> bool:
        return session.execute(self._pending_revocations(session, stream, now).with_only_columns(
            Revocation.id).limit(1)).first() is not None

    def has_pending(self, stream_id: str, now: datetime) -> bool:
        """Cheap check (no signing) for the long-poll wait loop."""
        with self.db.read() as session:
            stream = session.get(SsfStream, stream_id)
            if stream is None:
                return True  # let the caller's next pending() report it
            if stream.update_id is not None:
                return True
            if stream.status != "enabled":
                return False
            if stream.verification_id is not None:
                return True
            if rfc8417.SESSION_REVOKED not in self.delivered(stream.events_requested):
                return False
            return self._has_revocations(session, stream, now)

    def acknowledge(self, stream_id: str, client_id: str, jtis, now: datetime,
                    errors=(), *, touch: bool = False) -> bool:
        """Record acknowledgements of events delivered to this stream; unknown, foreign,
        forged and not yet delivered jtis are ignored (RFC 8936 2.4). ``errors``: jtis the
        receiver reported it could not process (``setErrs``): not delivered again either,
        but their revocation receipts say ``receiver_error``, never confirmed. With
        ``touch`` the stream is marked seen in the same write; returns whether it was (not
        when there was nothing to record)."""
        if not isinstance(stream_id, str):
            return False
        ids, others, failed = set(), set(), set()
        for jti in list(jtis) + list(errors):
            parsed = self._parse_event_id(stream_id, jti)
            if parsed is not None:
                (ids.add(parsed[1]) if parsed[0] == "r" else others.add(parsed))
        for jti in errors:
            parsed = self._parse_event_id(stream_id, jti)
            if parsed is not None and parsed[0] == "r":
                failed.add(parsed[1])
        if not ids and not others:
            return False
        try:
            # In the write shared with concurrent polls (their acknowledgements and
            # delivery bookkeeping): committed before this poll reads what is pending.
            self.bookkeeping.run(lambda session: self._record_acks(
                session, stream_id, client_id, ids, others, now, failed,
                seen_at=now if touch else None))
        except IntegrityError:
            # Two concurrent polls acknowledged the same jti; the rows are there, which is
            # all an acknowledgement means (the stream is marked seen by the poll instead).
            return False
        return touch

    def _record_acks(self, session, stream_id, client_id, ids, others, now,
                     failed=frozenset(), *, seen_at=None) -> None:
        stream = self.stream(session, client_id, stream_id)
        if seen_at is not None:
            stream.last_seen_at = seen_at
        if stream.verification_id is not None and ("v", stream.verification_id) in others:
            stream.verification_id = None
            stream.verification_state = None
        if stream.update_id is not None and ("u", stream.update_id) in others:
            stream.update_id = None
            stream.update_status = None
        ceiling = stream.delivered_through_id
        ids = {i for i in ids if ceiling is not None and i <= ceiling}
        if not ids:
            return
        already = set(session.scalars(select(SsfAck.revocation_id).where(
            SsfAck.stream_id == stream_id, SsfAck.revocation_id.in_(ids))))
        new = sorted(ids - already)
        for revocation_id in new:
            session.add(SsfAck(stream_id=stream_id, revocation_id=revocation_id, acked_at=now))
        # The durable receipt: settled once, by the first acknowledgement or error
        # report (an event the receiver could not process is not confirmed).
        for outcome, settled in (("receiver_error", [i for i in new if i in failed]),
                                 ("acknowledged", [i for i in new if i not in failed])):
            if settled:
                session.execute(update(RevocationReceipt).where(
                    RevocationReceipt.stream_id == stream_id,
                    RevocationReceipt.revocation_id.in_(settled),
                    RevocationReceipt.acknowledged_at.is_(None),
                    RevocationReceipt.outcome.is_(None))
                    .values(acknowledged_at=None if outcome == "receiver_error" else now,
                            outcome=outcome)
                    .execution_options(synchronize_session=False))
        for created_at in session.scalars(select(Revocation.created_at)
                                          .where(Revocation.id.in_(new))):
            FEED_LAG.observe(max(0.0, (now - created_at).total_seconds()))

    #: Rows one cleanup transaction deletes at most (a sweep never holds the write lock long).
    CLEANUP_BATCH = 10_000
    #: Transactions one cleanup runs at most; the maintenance loop comes back for the rest.
    CLEANUP_ROUNDS = 10

    def cleanup(self, now: datetime, *, batch: int = CLEANUP_BATCH) -> int:
        """Forget acknowledgements of events no longer relevant and idle streams with theirs,
        in transactions of at most ``batch`` rows; returns how many acknowledgements left.

        An acknowledgement leaves ``2 x relevance`` after it was made: its event happened
        before it, so it is no longer delivered to anyone (pending events are the
        revocations of the last ``relevance``) and forgetting it sends nothing again.
        """
        removed = 0
        for _ in range(self.CLEANUP_ROUNDS):
            with self.db.transaction() as session:
                done = self._delete_acks(session, SsfAck.acked_at < now - self.relevance * 2,
                                         batch)
                if done < batch:
                    idle = session.scalars(
                        select(SsfStream.stream_id)
                        .where(SsfStream.last_seen_at < now - IDLE_STREAM)
                        .order_by(SsfStream.stream_id).limit(100)).all()
                    if idle:
                        left = batch - done
                        done += self._delete_acks(session, SsfAck.stream_id.in_(idle), left)
                        if done < batch:  # their acknowledgements are all gone
                            _close_receipts(session, RevocationReceipt.stream_id.in_(idle))
                            session.execute(delete(SsfStream)
                                            .where(SsfStream.stream_id.in_(idle)))
            removed += done
            if done < batch:
                break
        return removed

    @staticmethod
    def _delete_acks(session, condition, limit: int) -> int:
        keys = select(SsfAck.stream_id, SsfAck.revocation_id).where(condition).limit(limit)
        return session.execute(
            delete(SsfAck).where(tuple_(SsfAck.stream_id, SsfAck.revocation_id).in_(keys))
            .execution_options(synchronize_session=False)).rowcount or 0

    def push_header(self, stream: SsfStream) -> str | None:
        return self._fernet.decrypt(stream.authorization_header).decode() \
            if stream.authorization_header else None


# The read of what is pending (Transmitter.read_pending), as prepared statements: the same
# queries as the ORM's (Transmitter.stream, _pending_revocations), with the columns' own types
# for binding and results (times in UTC, JSON lists).
_STREAM_COLUMNS = ("stream_id", "client_id", "status", "status_reason", "update_id",
                   "update_status", "verification_id", "verification_state", "events_requested",
                   "removed_subjects", "start_after_id", "delivered_through_id",
                   "set_signing_alg")
_READ_STREAM = text(f"SELECT {', '.join(_STREAM_COLUMNS)} FROM ssf_streams "
                    "WHERE stream_id = :stream_id").columns(
    *(SsfStream.__table__.c[name] for name in _STREAM_COLUMNS))
_CREATED_AT = Revocation.__table__.c.created_at.type
# (min of id + 0: see _pending_revocations)
_RELEVANT_FLOOR = text("SELECT min(id + 0) FROM revocations WHERE created_at > :cutoff") \
    .bindparams(bindparam("cutoff", type_=_CREATED_AT))
_PENDING_ROWS = text(
    "SELECT id, kind, value, tenant_id, subject, reason, created_at FROM revocations "
    "WHERE id > :after AND created_at > :cutoff AND id NOT IN "
    "(SELECT revocation_id FROM ssf_acks WHERE stream_id = :stream_id) "
    "ORDER BY id LIMIT :limit").bindparams(bindparam("cutoff", type_=_CREATED_AT)).columns(
    *Revocation.__table__.c)


def _record_delivery_statement(seen: bool, ceiling: bool):
    sets = []
    if seen:
        sets.append("last_seen_at = :seen_at")
    if ceiling:  # raised, never lowered
        sets.append("delivered_through_id = CASE WHEN delivered_through_id IS NULL OR "
                    "delivered_through_id < :top THEN :top ELSE delivered_through_id END")
    if not sets:  # only the existence check
        sets.append("delivered_through_id = delivered_through_id")
    statement = text(f"UPDATE ssf_streams SET {', '.join(sets)} "
                     "WHERE stream_id = :stream_id AND client_id = :client_id")
    seen_type = SsfStream.__table__.c.last_seen_at.type
    return statement.bindparams(bindparam("seen_at", type_=seen_type)) if seen else statement


#: Transmitter._record_delivery's UPDATE by (stream seen, ceiling raised).
_RECORD_DELIVERY = {(seen, ceiling): _record_delivery_statement(seen, ceiling)
                    for seen in (False, True) for ceiling in (False, True)}


def _close_receipts(session, condition) -> None:
    """A stream goes (deleted by its receiver or idle): its receipts stay, and those it never
    acknowledged say it went first."""
    session.execute(update(RevocationReceipt).where(condition,
                                                    RevocationReceipt.outcome.is_(None))
                    .values(outcome="stream_deleted")
                    .execution_options(synchronize_session=False))


def _check_subject(subject) -> dict:
    """A subject identifier (RFC 9493) or complex subject (SSF 3.3) a receiver names."""
    if not isinstance(subject, dict) or not isinstance(subject.get("format"), str):
        raise InvalidInput("subject must be a subject identifier object with a format")
    if len(json.dumps(subject)) > MAX_SUBJECT_LENGTH:
        raise InvalidInput(f"subject must be at most {MAX_SUBJECT_LENGTH} characters of JSON")
    if subject["format"] == "complex":
        members = {k: v for k, v in subject.items() if k != "format"}
        if not members or not all(isinstance(v, dict) and _is_simple(v) for v in members.values()):
            raise InvalidInput("a complex subject needs subject identifiers as members")
    elif not _is_simple(subject):
        raise InvalidInput("subject has an unknown format or a member that is not a string")
    return subject


def _is_simple(subject: dict) -> bool:
    return subject.get("format") in _SIMPLE_FORMATS and len(subject) > 1 and all(
        isinstance(v, (str, list)) for v in subject.values())


def _matches(removed: dict, subject: dict) -> bool:
    """SSF 8.1.3.1: simple subjects match when identical; complex ones when every member is
    identical where both define it. A complex subject sharing no member with the event's
    matches nothing here (the spec's wording would let it match everything)."""
    if removed.get("format") != "complex" or subject.get("format") != "complex":
        return removed == subject
    names = (set(removed) & set(subject)) - {"format"}
    return bool(names) and all(removed[n] == subject[n] for n in names)


__all__ = ["POLL", "PUSH", "STATUSES", "TooManyRequests", "Transmitter"]
