"""Token Introspection (RFC 7662).

Access tokens are ours if they verify; they are active while they have not expired and
their grant (membership) and token family live. A client may introspect its own tokens;
resource servers need the ``introspect`` role to introspect any. The lookup is a use case
of :class:`idp_bridge.services.tokens.TokenService` (:meth:`~TokenService.inspect`).

A token bound to a DPoP key answers ``cnf`` (``{"jkt": ...}``, RFC 9449 section 6.2) and, for
an access token, ``token_type: DPoP``: a resource server introspecting it must then require a
proof of that key.
"""

from __future__ import annotations

from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from .base import CLIENT_AUTH_METHODS, StoredToken, check_token_type_hint


class BridgeIntrospectionEndpoint(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = CLIENT_AUTH_METHODS

    def __init__(self, server, tokens):
        super().__init__(server)
        self.tokens = tokens

    def check_params(self, request, client):
        check_token_type_hint(request, self.SUPPORTED_TOKEN_TYPES)
        super().check_params(request, client)

    def query_token(self, token_string, token_type_hint):
        info = self.tokens.inspect(token_string, token_type_hint)
        return StoredToken(info) if info is not None else None

    def check_permission(self, token, client, request):
        return client.has_role("introspect") or token.check_client(client)

    def introspect_token(self, token):
        body = {key: token.data[key] for key in (
            "iss", "sub", "aud", "client_id", "scope", "tenant", "grant_id", "sid",
            "membership", "exp", "iat", "jti", "auth_time", "acr", "cnf") if key in token.data}
        body["active"] = True
        if token.kind == "access_token":
            body["token_type"] = "DPoP" if "cnf" in token.data else "Bearer"
        else:
            body["token_type"] = "refresh_token"
        return body
