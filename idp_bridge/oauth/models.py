"""The client model Authlib asks for (``ClientMixin``), over a stored client row."""

from __future__ import annotations

import hashlib
import hmac

from authlib.oauth2.rfc6749 import ClientMixin

from .base import REFRESH_TOKEN, TOKEN_EXCHANGE


def hash_secret(secret: str) -> str:
    # Client secrets are generated with >= 256 bits of entropy, so a fast hash is enough
    # (a password KDF would cap the token endpoint near 20 requests/s, DESIGN.md 11).
    return hashlib.sha256(secret.encode()).hexdigest()


class OAuthClient(ClientMixin):
    def __init__(self, row):
        self.client_id = row.client_id
        self.secret_hash = row.secret_hash
        self.auth_method = row.auth_method
        self.jwks = row.jwks
        self.roles = frozenset(row.roles.split())
        #: RFC 9449: refuse this client's token requests without a DPoP proof.
        self.dpop_required = bool(getattr(row, "dpop_required", False))

    def get_client_id(self):
        return self.client_id

    def check_client_secret(self, client_secret):
        if not self.secret_hash or not isinstance(client_secret, str):
            return False
        return hmac.compare_digest(hash_secret(client_secret), self.secret_hash)

    def check_endpoint_auth_method(self, method, endpoint):
        if method == "client_secret_post":
            # Allowed wherever basic is: some resource-server libraries only post.
            return self.auth_method in ("client_secret_basic", "client_secret_post")
        return method == self.auth_method

    def check_grant_type(self, grant_type):
        return "exchange" in self.roles and grant_type in (TOKEN_EXCHANGE, REFRESH_TOKEN)

    def has_role(self, role: str) -> bool:
        return role in self.roles

    def get_allowed_scope(self, scope):
        return scope
