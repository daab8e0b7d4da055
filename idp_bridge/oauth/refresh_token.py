"""Refresh Token grant (RFC 6749 section 6) with rotation and replay detection.

Authlib's ``RefreshTokenGrant`` issues the new token and only then revokes the old one;
rotation here must be one conditional update so that two concurrent uses cannot both win
(DESIGN.md section 5), so the grant is written on ``BaseGrant`` like the exchange.
:meth:`validate_token_request` checks the parameters, parses the scope and looks the
refresh token up (unknown, or another client's: ``invalid_grant`` without a write);
:meth:`create_token_response` calls one use case,
:meth:`idp_bridge.services.tokens.TokenService.rotate`.

DPoP (RFC 9449 section 5): a refresh token of a family bound to a key works only with a
proof of that key (``invalid_grant`` otherwise, checked before anything is written); a proof
binds the new access token to its key. Under ``profile = "fapi2"`` refresh tokens do not
rotate (the answer carries none: the client keeps its refresh token).
"""

from __future__ import annotations

from authlib.oauth2.rfc6749 import BaseGrant, TokenEndpointMixin
from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidRequestError

from scopes.catalog import parse_scope

from .base import (CLIENT_AUTH_METHODS, REFRESH_TOKEN, authenticate_for_grant, check_single,
                   token_response)


class RefreshTokenGrant(BaseGrant, TokenEndpointMixin):
    GRANT_TYPE = REFRESH_TOKEN
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS

    def validate_token_request(self):
        client = authenticate_for_grant(self, "this client may not refresh tokens")
        check_single(self.request, ("refresh_token", "scope"))
        refresh_token = self.request.form.get("refresh_token")
        if not refresh_token:
            raise InvalidRequestError(description="refresh_token is required")
        self.scope = parse_scope(self.request.form.get("scope")) or None
        self.proof = self.server.dpop.proof_of(self.request, client)
        self.presented = self.server.run_domain(
            self.server.tokens.present_refresh_token, refresh_token=refresh_token,
            client_id=client.get_client_id())
        bound = self.presented.dpop_jkt
        if bound is not None and (self.proof is None or self.proof.jkt != bound):
            raise InvalidGrantError(description="the refresh_token is bound to a DPoP key: "
                                    "send a DPoP proof signed with that key")

    def create_token_response(self):
        issued = self.server.run_domain(
            self.server.tokens.rotate, self.presented, scope=self.scope,
            dpop_jkt=self.proof.jkt if self.proof is not None else None)
        return 200, token_response(issued, exchange=False), [
            *self.TOKEN_RESPONSE_HEADER, *self.server.dpop.response_headers()]
