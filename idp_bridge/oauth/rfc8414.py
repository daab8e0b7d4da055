"""Authorization Server Metadata (RFC 8414), also served as OpenID discovery."""

from __future__ import annotations

from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

from scopes.catalog import ALL_SCOPES

from .base import CLIENT_AUTH_METHODS as AUTH_METHODS
from .base import TOKEN_EXCHANGE


def server_metadata(issuer: str, signing_alg: str) -> dict:
    base = issuer.rstrip("/")
    metadata = AuthorizationServerMetadata({
        "issuer": issuer,
        "token_endpoint": f"{base}/token",
        "jwks_uri": f"{base}/jwks",
        "introspection_endpoint": f"{base}/introspect",
        "revocation_endpoint": f"{base}/revoke",
        "grant_types_supported": [TOKEN_EXCHANGE, "refresh_token"],
        "response_types_supported": [],
        "scopes_supported": list(ALL_SCOPES),
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "RS256", "PS256", "EdDSA"],
        "introspection_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "service_documentation": f"{base}/api/openapi.json",
    })
    metadata.validate_issuer()
    metadata.validate_token_endpoint()
    metadata.validate_jwks_uri()
    metadata.validate_grant_types_supported()
    body = dict(metadata)
    body["response_types_supported"] = []  # no authorization endpoint: token exchange only
    body["access_token_signing_alg_values_supported"] = [signing_alg]
    return body
