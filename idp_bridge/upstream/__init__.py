"""Clients of the upstream identity provider (Keycloak or any OpenID provider)."""

from .identity import RoleMapper, UpstreamIdentity
from .oidc import SubjectTokenError, SubjectTokenValidator, UpstreamUnavailable

__all__ = ["RoleMapper", "SubjectTokenError", "SubjectTokenValidator", "UpstreamIdentity",
           "UpstreamUnavailable"]
