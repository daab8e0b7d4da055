"""OAuth 2.0 Token Exchange (RFC 8693) for advisors.

Authlib has no RFC 8693 grant, so this is one on its ``BaseGrant`` and
``TokenEndpointMixin``. Mechanics only: parse and check the request (section 2.1), validate
the subject token, then hand the decision to :class:`idp_bridge.domain.exchange.AdvisorExchange`.

Error codes: a subject token that is invalid (forged, expired, wrong issuer or audience,
``alg: none``) is ``invalid_request`` as section 2.2.2 requires; a valid subject that may not
have the token (not an advisor, MFA missing, wrong access code) is ``invalid_grant``; an
unknown audience or resource is ``invalid_target``; a scope wider than the membership is
``invalid_scope``.
"""

from __future__ import annotations

from authlib.oauth2.rfc6749 import BaseGrant, TokenEndpointMixin
from authlib.oauth2.rfc6749.errors import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    UnauthorizedClientError,
)

from scopes.catalog import parse_scope

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
SUBJECT_TOKEN_TYPES = (ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE)

#: Parameters that may appear at most once (RFC 6749 section 3.2: no repeated parameters).
_SINGLE = ("grant_type", "subject_token", "subject_token_type", "tenant", "access_code",
           "scope", "reason", "requested_token_type", "resource")


class TokenExchangeGrant(BaseGrant, TokenEndpointMixin):
    GRANT_TYPE = TOKEN_EXCHANGE
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]

    def validate_token_request(self):
        client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError(
                description="this client may not use the token-exchange grant")
        self.request.client = client
        form = self.request.payload.datalist
        for name in _SINGLE:
            if len(form.get(name, [])) > 1:
                raise InvalidRequestError(description=f"parameter {name} is repeated")
        data = self.request.form
        if data.get("actor_token") or data.get("actor_token_type"):
            raise InvalidRequestError(description="actor_token is not supported")
        requested = data.get("requested_token_type")
        if requested and requested != ACCESS_TOKEN_TYPE:
            raise InvalidRequestError(
                description=f"requested_token_type must be {ACCESS_TOKEN_TYPE}")
        subject_token = data.get("subject_token")
        subject_token_type = data.get("subject_token_type")
        if not subject_token:
            raise InvalidRequestError(description="subject_token is required")
        if subject_token_type not in SUBJECT_TOKEN_TYPES:
            raise InvalidRequestError(
                description="subject_token_type must be an access_token or id_token type URI")
        tenant = data.get("tenant")
        if not tenant:
            raise InvalidRequestError(description="tenant is required")
        self.audience = self.server.resolve_audience(form.get("audience", []),
                                                     form.get("resource", []))
        self.identity = self.server.validate_subject_token(subject_token, subject_token_type)
        self.tenant = tenant
        self.access_code = data.get("access_code")
        self.reason = data.get("reason")
        self.scope = parse_scope(data.get("scope")) or None

    def create_token_response(self):
        issued = self.server.run_domain(
            self.server.exchange.exchange,
            identity=self.identity, client_id=self.client.get_client_id(), tenant_id=self.tenant,
            access_code=self.access_code, scope=self.scope, audience=self.audience,
            reason=self.reason,
        )
        return 200, token_response(issued, exchange=True), self.TOKEN_RESPONSE_HEADER


def token_response(issued, *, exchange: bool) -> dict:
    body = {
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": issued.scope,
        "refresh_token": issued.refresh_token,
    }
    if exchange:
        body["issued_token_type"] = ACCESS_TOKEN_TYPE
    return body


__all__ = ["InvalidGrantError", "InvalidScopeError", "TOKEN_EXCHANGE", "TokenExchangeGrant",
           "token_response"]
