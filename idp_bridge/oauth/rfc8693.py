"""OAuth 2.0 Token Exchange (RFC 8693) for advisors.

Authlib has no RFC 8693 grant, so this is one on its ``BaseGrant`` and
``TokenEndpointMixin``. Mechanics only: parse and check the request (section 2.1), validate
the subject token, admit the request (role, MFA, reason, code format, tenant id: no storage)
in :meth:`validate_token_request`, then hand the decision to one use case,
:meth:`idp_bridge.services.tokens.TokenService.issue`, in :meth:`create_token_response`.

Error codes: a subject token that is invalid (forged, expired, wrong issuer or audience,
``alg: none``) is ``invalid_request`` as section 2.2.2 requires; a valid subject that may not
have the token (not an advisor, MFA missing, wrong access code) is ``invalid_grant``; an
unknown audience or resource is ``invalid_target``; a scope wider than the membership is
``invalid_scope``.
"""

from __future__ import annotations

from authlib.oauth2.rfc6749 import BaseGrant, TokenEndpointMixin
from authlib.oauth2.rfc6749.errors import InvalidRequestError

from scopes.catalog import parse_scope

from .base import (ACCESS_TOKEN_TYPE, CLIENT_AUTH_METHODS, ID_TOKEN_TYPE, TOKEN_EXCHANGE,
                   authenticate_for_grant, check_single, token_response)

SUBJECT_TOKEN_TYPES = (ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE)

#: Parameters that may appear at most once (RFC 6749 section 3.2: no repeated parameters).
_SINGLE = ("grant_type", "subject_token", "subject_token_type", "tenant", "access_code",
           "scope", "reason", "requested_token_type", "resource")


class TokenExchangeGrant(BaseGrant, TokenEndpointMixin):
    GRANT_TYPE = TOKEN_EXCHANGE
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS

    def validate_token_request(self):
        client = authenticate_for_grant(self, "this client may not use the token-exchange grant")
        check_single(self.request, _SINGLE)
        # RFC 9449 section 5: a proof binds the tokens to its key (required for some clients).
        self.proof = self.server.dpop.proof_of(self.request, client)
        form = self.request.payload.datalist
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
        identity = self.server.validate_subject_token(subject_token, subject_token_type)
        self.scope = parse_scope(data.get("scope")) or None
        self.admitted = self.server.run_domain(
            self.server.tokens.admit, identity=identity, tenant_id=tenant,
            access_code=data.get("access_code"), reason=data.get("reason"))

    def create_token_response(self):
        issued = self.server.run_domain(
            self.server.tokens.issue, self.admitted, client_id=self.client.get_client_id(),
            scope=self.scope, audience=self.audience,
            dpop_jkt=self.proof.jkt if self.proof is not None else None)
        return 200, token_response(issued, exchange=True), [
            *self.TOKEN_RESPONSE_HEADER, *self.server.dpop.response_headers()]


__all__ = ["SUBJECT_TOKEN_TYPES", "TOKEN_EXCHANGE", "TokenExchangeGrant"]
