"""Security Event Tokens (RFC 8417) profiled by SSF 1.0 section 4.1, with CAEP 1.0 events.

Every SET has ``typ: secevent+jwt``, ``iss`` (the stream's ``iss``), ``aud`` (the stream's
``aud``), ``jti``, ``iat``, a ``txn`` and a top-level ``sub_id``; never ``sub`` nor ``exp``
(SSF 4.1.2, 4.1.7), and exactly one event (CAEP interoperability profile 2.8).

``txn`` is the same for every SET of one cause (SSF 4.1.9): every stream's SET of one
revocation, and the revocations one transaction wrote (a narrowed group ending several
token families, one upstream logout): they share reason, tenant and time to the microsecond.

Subjects of ``session-revoked``: the top-level ``sub_id`` stays ``{"format": "opaque", "id":
<grant_id or sid>}`` (what receivers match the ``grant_id`` / ``sid`` claim of access tokens
against, with ``subject_kind`` saying which), and the event carries the same principal as a
complex subject (SSF 3.3): ``session`` (the opaque id), ``tenant`` (opaque tenant id) and
``user`` (``iss_sub``: the advisor at the upstream identity provider) where known.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from joserfc import jwt

SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
VERIFICATION = "https://schemas.openid.net/secevent/ssf/event-type/verification"
STREAM_UPDATED = "https://schemas.openid.net/secevent/ssf/event-type/stream-updated"

#: Who ended the grant, in CAEP's words (``initiating_entity``).
INITIATING_ENTITY = {
    "removed_by_tenant": "admin",
    "removed_by_support": "admin",
    "superseded": "admin",
    "permissions_narrowed": "admin",
    "left": "user",
    "revoked_by_client": "user",
    "upstream_logout": "user",
    "expired": "policy",
    "refresh_token_reuse": "policy",
    "upstream_account_ended": "policy",
    "reconfirmation_lapsed": "policy",
}


def transaction_id(key: bytes, revocation) -> str:
    """The ``txn`` of a revocation's SETs: the same on every stream and for every revocation
    of the same cause (same reason, tenant and time), unpredictable to receivers."""
    cause = json.dumps(["txn", revocation.reason, revocation.tenant_id,
                        revocation.created_at.isoformat()])
    return hmac.new(key, cause.encode(), hashlib.sha256).hexdigest()[:32]


def revocation_subject(revocation, *, user_issuer: str | None) -> dict:
    """The complex subject (SSF 3.3) of a revoked grant or token family."""
    subject = {"format": "complex", "session": {"format": "opaque", "id": revocation.value}}
    if revocation.tenant_id:
        subject["tenant"] = {"format": "opaque", "id": revocation.tenant_id}
    if revocation.subject and user_issuer:
        subject["user"] = {"format": "iss_sub", "iss": user_issuer, "sub": revocation.subject}
    return subject


def revocation_claims(revocation, *, issuer: str, audience: str, jti: str, txn: str,
                      user_issuer: str | None = None) -> dict:
    event = {
        "event_timestamp": int(revocation.created_at.timestamp()),
        "initiating_entity": INITIATING_ENTITY.get(revocation.reason, "system"),
        # CAEP interoperability profile 3.1: never empty.
        "reason_admin": {"en": revocation.reason or "revoked"},
        "subject_kind": "grant_id" if revocation.kind == "grant" else "sid",
        "subject": revocation_subject(revocation, user_issuer=user_issuer),
    }
    if revocation.tenant_id:
        event["tenant"] = revocation.tenant_id
    return {
        "iss": issuer, "aud": audience, "jti": jti, "iat": int(time.time()), "txn": txn,
        "sub_id": {"format": "opaque", "id": revocation.value},
        "events": {SESSION_REVOKED: event},
    }


def verification_claims(stream_id: str, state: str | None, *, issuer: str, audience: str,
                        jti: str, txn: str) -> dict:
    """SSF 8.1.4.1: ``sub_id`` is the stream, ``state`` echoed when the receiver gave one."""
    event = {"state": state} if state else {}
    return {
        "iss": issuer, "aud": audience, "jti": jti, "iat": int(time.time()), "txn": txn,
        "sub_id": {"format": "opaque", "id": stream_id},
        "events": {VERIFICATION: event},
    }


def stream_updated_claims(stream_id: str, status: str, reason: str | None, *, issuer: str,
                          audience: str, jti: str, txn: str) -> dict:
    """SSF 8.1.5: the transmitter changed the stream's status."""
    event = {"status": status}
    if reason:
        event["reason"] = reason
    return {
        "iss": issuer, "aud": audience, "jti": jti, "iat": int(time.time()), "txn": txn,
        "sub_id": {"format": "opaque", "id": stream_id},
        "events": {STREAM_UPDATED: event},
    }


def sign_set(keyring, claims: dict) -> str:
    kid, alg, key = keyring.signing_key()
    return jwt.encode({"alg": alg, "kid": kid, "typ": "secevent+jwt"}, claims, key)
