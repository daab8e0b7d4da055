"""Refresh Token grant (RFC 6749 section 6) with rotation and replay detection.

Authlib's ``RefreshTokenGrant`` issues the new token and only then revokes the old one;
rotation here must be one conditional update so that two concurrent uses cannot both win
(DESIGN.md section 5), so the grant is written on ``BaseGrant`` like the exchange.
"""

from __future__ import annotations

from authlib.oauth2.rfc6749 import BaseGrant, TokenEndpointMixin
from authlib.oauth2.rfc6749.errors import InvalidRequestError, UnauthorizedClientError

from scopes.catalog import parse_scope

from .rfc8693 import token_response


class RefreshTokenGrant(BaseGrant, TokenEndpointMixin):
    GRANT_TYPE = "refresh_token"
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]

    def validate_token_request(self):
        client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError(description="this client may not refresh tokens")
        self.request.client = client
        form = self.request.payload.datalist
        for name in ("refresh_token", "scope"):
            if len(form.get(name, [])) > 1:
                raise InvalidRequestError(description=f"parameter {name} is repeated")
        self.refresh_token = self.request.form.get("refresh_token")
        if not self.refresh_token:
            raise InvalidRequestError(description="refresh_token is required")
        self.scope = parse_scope(self.request.form.get("scope")) or None

    def create_token_response(self):
        issued = self.server.run_domain(
            self.server.exchange.refresh, refresh_token=self.refresh_token,
            client_id=self.client.get_client_id(), scope=self.scope)
        return 200, token_response(issued, exchange=False), self.TOKEN_RESPONSE_HEADER
