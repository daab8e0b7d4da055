"""The protocol layer: Authlib authorization server, grants and endpoints.

One RFC, one module: ``rfc8693`` (token exchange), ``refresh_token`` (RFC 6749 section 6),
``rfc7662`` (introspection), ``rfc7009`` (revocation), ``rfc8414`` (metadata), ``rfc9449``
(DPoP proofs at the token endpoint).
Grants only raise; :class:`~idp_bridge.oauth.server.BridgeAuthorizationServer` answers.
"""
