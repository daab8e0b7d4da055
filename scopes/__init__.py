"""The permission catalog and the fixed advisor profile (DESIGN.md section 4).

A resource server installs this package alone: it imports nothing from ``idp_bridge``.
"""

from .catalog import (
    ADVISOR_PROFILE,
    AREAS,
    CATALOG,
    Area,
    ProfileChangeRefused,
    UnknownScope,
    advisor_scopes,
    parse_scope,
    validate_scopes,
)

__all__ = [
    "ADVISOR_PROFILE",
    "AREAS",
    "CATALOG",
    "Area",
    "ProfileChangeRefused",
    "UnknownScope",
    "advisor_scopes",
    "parse_scope",
    "validate_scopes",
]
