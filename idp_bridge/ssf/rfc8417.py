"""Security Event Tokens (RFC 8417) with CAEP 1.0 events, signed with our token keys."""

from __future__ import annotations

import time

from joserfc import jwt

SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
VERIFICATION = "https://schemas.openid.net/secevent/ssf/event-type/verification"

#: Who ended the grant, in CAEP's words (``initiating_entity``).
INITIATING_ENTITY = {
    "removed_by_tenant": "admin",
    "removed_by_support": "admin",
    "superseded": "admin",
    "left": "user",
    "revoked_by_client": "user",
    "upstream_logout": "user",
    "expired": "policy",
    "refresh_token_reuse": "policy",
    "upstream_account_ended": "policy",
}


def revocation_claims(revocation, *, issuer: str, audience: str, jti: str) -> dict:
    event = {
        "event_timestamp": int(revocation.created_at.timestamp()),
        "initiating_entity": INITIATING_ENTITY.get(revocation.reason, "system"),
        "reason_admin": {"en": revocation.reason},
        "subject_kind": "grant_id" if revocation.kind == "grant" else "sid",
    }
    if revocation.tenant_id:
        event["tenant"] = revocation.tenant_id
    return {
        "iss": issuer, "aud": audience, "jti": jti, "iat": int(time.time()),
        "sub_id": {"format": "opaque", "id": revocation.value},
        "events": {SESSION_REVOKED: event},
    }


def verification_claims(stream_id: str, state: str | None, *, issuer: str, audience: str,
                        jti: str) -> dict:
    event = {"state": state} if state else {}
    return {
        "iss": issuer, "aud": audience, "jti": jti, "iat": int(time.time()),
        "sub_id": {"format": "opaque", "id": stream_id},
        "events": {VERIFICATION: event},
    }


def sign_set(keyring, claims: dict) -> str:
    kid, alg, key = keyring.signing_key()
    return jwt.encode({"alg": alg, "kid": kid, "typ": "secevent+jwt"}, claims, key)
