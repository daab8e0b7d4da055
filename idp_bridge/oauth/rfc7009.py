"""Token Revocation (RFC 7009).

Revoking either token of a family revokes the family (``sid``): its refresh tokens stop
working and its access tokens become inactive. Authlib's JWT revocation endpoint refuses
JWT access tokens by design; ours accepts them and revokes their family. The membership
stays: ending it is the tenant's or the advisor's decision (management API).
"""

from __future__ import annotations

from authlib.oauth2.rfc7009 import RevocationEndpoint

from ..domain import audit
from ..storage.db import utcnow
from ..storage.models import TokenFamily
from .errors import check_token_type_hint
from .rfc7662 import find_token


class BridgeRevocationEndpoint(RevocationEndpoint):
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

    def revoke_token(self, token, request):
        now = utcnow()
        with self.db.transaction() as session:
            family = session.get(TokenFamily, token.sid)
            if family is None or family.revoked_at is not None:
                return
            self.issuer.revoke_family(session, family, "revoked_by_client", now)
            audit.record(session, "token.family_revoked", now, tenant_id=family.tenant_id,
                         actor=request.client.get_client_id(), actor_role="client",
                         membership_id=family.membership_id, client_id=family.client_id,
                         sid=family.sid, reason="revoked_by_client")
