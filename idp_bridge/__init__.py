"""idp-bridge: advisor access for multi-tenant SaaS on a Keycloak-style identity provider.

The authorization server: RFC 8693 token exchange, access codes, memberships and their
revocation, upstream IdP clients, storage, management API and CLI (DESIGN.md section 3).
"""

__version__ = "0.1.0"
