"""Authorization Server Metadata (RFC 8414), also served as OpenID discovery.

With RFC 9449 section 5.1's ``dpop_signing_alg_values_supported``; under ``profile =
"fapi2"`` the token and revocation endpoints advertise ``private_key_jwt`` only and the
assertion algorithms ES256 and PS256 only (FAPI 2.0 Security Profile 5.3.2.1, 5.4.1).
"""

from __future__ import annotations

from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

from scopes.catalog import ALL_SCOPES

from .base import CLIENT_AUTH_METHODS as AUTH_METHODS
from .base import TOKEN_EXCHANGE


#: Client assertion algorithms advertised by default and under ``profile = "fapi2"``.
ASSERTION_ALGORITHMS = ["ES256", "RS256", "PS256", "EdDSA"]
FAPI2_ASSERTION_ALGORITHMS = ["ES256", "PS256"]


def server_metadata(issuer: str, signing_alg: str, *,
                    dpop_algorithms=("ES256", "ES384", "PS256", "RS256", "EdDSA"),
                    fapi2: bool = False) -> dict:
    base = issuer.rstrip("/")
    token_methods = ["private_key_jwt"] if fapi2 else AUTH_METHODS
    assertion_algs = FAPI2_ASSERTION_ALGORITHMS if fapi2 else ASSERTION_ALGORITHMS
    metadata = AuthorizationServerMetadata({
        "issuer": issuer,
        "token_endpoint": f"{base}/token",
        "jwks_uri": f"{base}/jwks",
        "introspection_endpoint": f"{base}/introspect",
        "revocation_endpoint": f"{base}/revoke",
        # client_credentials: receivers' tokens for the feed's management API (ssf.manage,
        # ssf.read); never advisor tokens.
        "grant_types_supported": [TOKEN_EXCHANGE, "refresh_token", "client_credentials"],
        "response_types_supported": [],
        "scopes_supported": list(ALL_SCOPES),
        "token_endpoint_auth_methods_supported": token_methods,
        "token_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "introspection_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint_auth_methods_supported": token_methods,
        "service_documentation": f"{base}/api/openapi.json",
    })
    metadata.validate_issuer()
    metadata.validate_token_endpoint()
    metadata.validate_jwks_uri()
    metadata.validate_grant_types_supported()
    body = dict(metadata)
    body["response_types_supported"] = []  # no authorization endpoint: token exchange only
    body["access_token_signing_alg_values_supported"] = [signing_alg]
    body["dpop_signing_alg_values_supported"] = list(dpop_algorithms)  # RFC 9449 5.1
    return body
