"""Token Revocation (RFC 7009).

Revoking either token of a family revokes the family (``sid``): its refresh tokens stop
working and its access tokens become inactive. Authlib's JWT revocation endpoint refuses
JWT access tokens by design; ours accepts them and revokes their family. The membership
stays: ending it is the tenant's or the advisor's decision (management API). The lookup and
the revocation are use cases of :class:`idp_bridge.services.tokens.TokenService`.
"""

from __future__ import annotations

from authlib.oauth2.rfc7009 import RevocationEndpoint

from .base import CLIENT_AUTH_METHODS, StoredToken, check_token_type_hint


class BridgeRevocationEndpoint(RevocationEndpoint):
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

    def revoke_token(self, token, request):
        if token.sid:
            self.tokens.revoke_family(sid=token.sid,
                                      client_id=request.client.get_client_id())
