"""What the RFC modules share (so that none imports another): grant type and token type
URIs, the single-parameter rule (RFC 6749 section 3.2), the client's grant check, the token
response (RFC 6749 section 5.1), the ``token_type_hint`` check (RFC 7009 section 2.1,
RFC 7662 section 2.1) and the view of a presented token that introspection and revocation
ask Authlib's endpoints to work on.
"""

from __future__ import annotations

from authlib.oauth2.rfc6749.errors import InvalidRequestError, UnauthorizedClientError

from .errors import UnsupportedTokenTypeError

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
REFRESH_TOKEN = "refresh_token"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
#: Client authentication methods of every endpoint (token, introspection, revocation).
CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]


def check_single(request, names) -> None:
    """RFC 6749 section 3.2: request parameters must not be included more than once."""
    form = request.payload.datalist
    for name in names:
        if len(form.get(name, [])) > 1:
            raise InvalidRequestError(description=f"parameter {name} is repeated")


def authenticate_for_grant(grant, description: str):
    """The authenticated client of a token request, which must be allowed ``grant``'s
    grant type (``unauthorized_client`` otherwise)."""
    client = grant.authenticate_token_endpoint_client()
    if not client.check_grant_type(grant.GRANT_TYPE):
        raise UnauthorizedClientError(description=description)
    grant.request.client = client
    return client


def token_response(issued, *, exchange: bool) -> dict:
    """RFC 6749 section 5.1 (plus RFC 8693 section 2.2.1's ``issued_token_type``): a token
    bound to a DPoP key is of type ``DPoP`` (RFC 9449 section 5); a refresh that keeps its
    refresh token (``profile = "fapi2"``: no rotation) sends none (RFC 6749 section 6)."""
    body = {
        "access_token": issued.access_token,
        "token_type": "DPoP" if getattr(issued, "dpop_jkt", None) else "Bearer",
        "expires_in": issued.expires_in,
        "scope": issued.scope,
    }
    if issued.refresh_token is not None:
        body["refresh_token"] = issued.refresh_token
    if exchange:
        body["issued_token_type"] = ACCESS_TOKEN_TYPE
    return body


def check_token_type_hint(request, supported) -> None:
    hint = request.form.get("token_type_hint")
    if hint and hint not in supported:
        raise UnsupportedTokenTypeError(
            description=f"token_type_hint must be one of {', '.join(supported)}")


class StoredToken:
    """What introspection and revocation need to know about one presented token (from
    :meth:`idp_bridge.services.tokens.TokenService.inspect`)."""

    def __init__(self, info):
        self.kind = info.kind
        self.client_id = info.client_id
        self.active = info.active
        self.data = info.data
        self.sid = info.sid

    def check_client(self, client):
        return client.get_client_id() == self.client_id

    def is_expired(self):
        return False  # expiry is part of ``active``

    def is_revoked(self):
        return not self.active
