"""The client credentials grant (RFC 6749 section 4.4) for revocation-feed receivers.

Only clients with the ``receiver`` role may use it, and only for the stream management API
of the SSF transmitter (CAEP interoperability profile 2.9): the token's audience is
``<issuer>/ssf`` and its scopes are among ``ssf.manage`` and ``ssf.read`` (both when the
request names none; ``access.record``, for reporting access records, when asked for).
``resource`` / ``audience`` may name only that API. No refresh token is
issued (section 4.4.3). The token itself is :class:`idp_bridge.ssf.authorization.ManagementTokens`'.

Errors: a client without the role is ``unauthorized_client``; another scope
``invalid_scope``; another resource or audience ``invalid_target``.
"""

from __future__ import annotations

from authlib.oauth2.rfc6749 import BaseGrant, TokenEndpointMixin
from authlib.oauth2.rfc6749.errors import InvalidScopeError, UnauthorizedClientError

from ..ssf.authorization import GRANTABLE, SCOPES
from .base import CLIENT_AUTH_METHODS, check_single
from .errors import InvalidTargetError

CLIENT_CREDENTIALS = "client_credentials"
_SINGLE = ("grant_type", "scope")


class ClientCredentialsGrant(BaseGrant, TokenEndpointMixin):
    GRANT_TYPE = CLIENT_CREDENTIALS
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS

    def _tokens(self):
        """:class:`~idp_bridge.ssf.authorization.ManagementTokens`, set on the server by
        ``create_app``."""
        return self.server.management_tokens

    def validate_token_request(self):
        client = self.authenticate_token_endpoint_client()
        if not client.has_role("receiver"):
            raise UnauthorizedClientError(
                description="only revocation-feed receivers may use client_credentials")
        self.request.client = client
        check_single(self.request, _SINGLE)
        tokens = self._tokens()
        form = self.request.payload.datalist
        for value in [*form.get("resource", []), *form.get("audience", [])]:
            if value not in (tokens.audience, tokens.audience + "/"):
                raise InvalidTargetError(description="unknown resource")  # never echo input
        requested = (self.request.form.get("scope") or "").split()
        if any(scope not in GRANTABLE for scope in requested):
            raise InvalidScopeError(description="the scopes available are ssf.manage, ssf.read "
                                                "and access.record")
        self.scopes = [s for s in GRANTABLE if s in requested] or list(SCOPES)

    def create_token_response(self):
        token, expires_in = self._tokens().mint(self.client.get_client_id(), self.scopes)
        body = {"access_token": token, "token_type": "Bearer", "expires_in": expires_in,
                "scope": " ".join(self.scopes)}
        return 200, body, self.TOKEN_RESPONSE_HEADER


__all__ = ["CLIENT_CREDENTIALS", "ClientCredentialsGrant"]
