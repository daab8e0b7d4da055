"""Token Introspection (RFC 7662).

Access tokens are ours if they verify; they are active while they have not expired and
their grant (membership) and token family live. A client may introspect its own tokens;
resource servers need the ``introspect`` role to introspect any.
"""

from __future__ import annotations

from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from ..storage.db import utcnow
from .errors import check_token_type_hint


class StoredToken:
    """What introspection and revocation need to know about one presented token."""

    def __init__(self, kind: str, client_id: str, active: bool, data: dict, sid: str | None):
        self.kind = kind
        self.client_id = client_id
        self.active = active
        self.data = data
        self.sid = sid

    def check_client(self, client):
        return client.get_client_id() == self.client_id

    def is_expired(self):
        return False  # expiry is part of ``active``

    def is_revoked(self):
        return not self.active


def find_token(issuer, db, token_string: str, hint: str | None) -> StoredToken | None:
    """Look up an access token (JWT) or refresh token, following ``hint`` first."""
    order = ("refresh_token", "access_token") if hint == "refresh_token" else (
        "access_token", "refresh_token")
    now = utcnow()
    for kind in order:
        if kind == "access_token":
            claims = issuer.read_access_token(token_string)
            if claims is None:
                continue
            with db.read() as session:
                active = issuer.check_active(session, claims, now)
            return StoredToken("access_token", claims.get("client_id"), active, claims,
                               claims.get("sid"))
        with db.read() as session:
            family = issuer.find_refresh_family(session, token_string)
            if family is None:
                continue
            from ..storage.models import RefreshToken
            from ..domain.tokens import hash_token

            row = session.get(RefreshToken, hash_token(token_string))
            claims = {"sid": family.sid, "grant_id": family.grant_id}
            active = (row.rotated_at is None and row.expires_at > now
                      and issuer.check_active(session, claims, now))
            data = {
                "client_id": family.client_id, "sub": family.subject, "scope": family.scope,
                "tenant": family.tenant_id, "grant_id": family.grant_id, "sid": family.sid,
                "exp": int(row.expires_at.timestamp()), "iat": int(row.created_at.timestamp()),
                "iss": issuer.issuer,
            }
            return StoredToken("refresh_token", family.client_id, active, data, family.sid)
    return None


class BridgeIntrospectionEndpoint(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]

    def __init__(self, server, issuer, db):
        super().__init__(server)
        self.issuer = issuer
        self.db = db

    def check_params(self, request, client):
        check_token_type_hint(request, self.SUPPORTED_TOKEN_TYPES)
        super().check_params(request, client)

    def query_token(self, token_string, token_type_hint):
        return find_token(self.issuer, self.db, token_string, token_type_hint)

    def check_permission(self, token, client, request):
        return client.has_role("introspect") or token.check_client(client)

    def introspect_token(self, token):
        body = {key: token.data[key] for key in (
            "iss", "sub", "aud", "client_id", "scope", "tenant", "grant_id", "sid",
            "membership", "exp", "iat", "jti", "auth_time", "acr") if key in token.data}
        body["active"] = True
        body["token_type"] = "Bearer" if token.kind == "access_token" else "refresh_token"
        return body
