"""Who a validated upstream token speaks for, and what that makes them here.

Which claims make a subject an advisor, a support admin or a tenant's admin is configurable;
the defaults read Keycloak tokens (realm roles in ``realm_access.roles``, group paths in
``groups`` such as ``/tenants/10042/admins``).
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field


@dataclass(frozen=True)
class UpstreamIdentity:
    issuer: str
    subject: str
    claims: dict = field(repr=False)
    token_type: str = "access_token"

    @property
    def username(self) -> str:
        """A display name: the first of ``preferred_username`` and ``email`` that is a plain
        string of at most 255 characters (what tenants are shown), else the subject."""
        for name in ("preferred_username", "email"):
            value = self.claims.get(name)
            if isinstance(value, str) and 0 < len(value) <= 255 and is_plain_text(value):
                return value
        return self.subject

    @property
    def session_id(self) -> str | None:
        sid = self.claims.get("sid") or self.claims.get("session_state")
        return sid if isinstance(sid, str) and sid else None

    @property
    def auth_time(self) -> int | None:
        value = self.claims.get("auth_time")
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            return None
        return int(value)

    @property
    def acr(self) -> str | None:
        value = self.claims.get("acr")
        return value if isinstance(value, str) else None

    @property
    def amr(self) -> list[str]:
        value = self.claims.get("amr")
        return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def claim_path(claims: dict, path: str):
    value = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


class RoleMapper:
    def __init__(self, *, roles_claim: str, groups_claim: str, advisor_role: str,
                 support_admin_role: str, tenant_admin_group: str,
                 mfa_acr_values=(), mfa_amr_values=()):
        self.roles_claim = roles_claim
        self.groups_claim = groups_claim
        self.advisor_role = advisor_role
        self.support_admin_role = support_admin_role
        self.tenant_admin_group = tenant_admin_group
        self.mfa_acr_values = frozenset(mfa_acr_values)
        self.mfa_amr_values = frozenset(mfa_amr_values)

    def roles(self, identity: UpstreamIdentity) -> set[str]:
        return _string_set(claim_path(identity.claims, self.roles_claim))

    def groups(self, identity: UpstreamIdentity) -> set[str]:
        return _string_set(claim_path(identity.claims, self.groups_claim))

    def check_advisor(self, identity: UpstreamIdentity) -> bool:
        return self.advisor_role in self.roles(identity)

    def check_support_admin(self, identity: UpstreamIdentity) -> bool:
        return self.support_admin_role in self.roles(identity)

    def check_tenant_admin(self, identity: UpstreamIdentity, tenant_id: str) -> bool:
        return self.tenant_admin_group.format(tenant=tenant_id) in self.groups(identity)

    def check_mfa(self, identity: UpstreamIdentity) -> bool:
        if identity.acr is not None and identity.acr in self.mfa_acr_values:
            return True
        return bool(self.mfa_amr_values.intersection(identity.amr))


def is_plain_text(value: str) -> bool:
    """No control, format (bidi overrides), private-use or separator characters."""
    if value.isascii():  # ASCII: only C0 controls and DEL are Cc; nothing else is excluded
        return value.isprintable()
    return not any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")
                   for c in value)


def _string_set(value) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, (list, tuple)):
        return {v for v in value if isinstance(v, str)}
    return set()
