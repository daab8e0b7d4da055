"""Who may do what: the one place where a use case authorises its caller.

The caller is the :class:`~idp_bridge.upstream.identity.UpstreamIdentity` of the request (a
validated upstream access token on the API, the signed-in web session on the pages); the
rights are the :class:`~idp_bridge.upstream.identity.RoleMapper` checks on it. Every
application service calls one of these first, before it opens a unit of work, so a caller
acting outside its rights is refused (403) before anything is read or changed.
"""

from __future__ import annotations

from ..domain.errors import Forbidden


class Authorizer:
    def __init__(self, roles, *, tenant_admin_group: str):
        self.roles = roles
        #: The group pattern of tenant admins, with ``{tenant}``
        #: (e.g. ``/tenants/{tenant}/admins``).
        self.tenant_admin_group = tenant_admin_group

    def tenant_admin(self, caller, tenant_id: str) -> None:
        if caller is None or not self.roles.check_tenant_admin(caller, tenant_id):
            raise Forbidden("only an admin of this tenant may do this", code="not_tenant_admin")

    def advisor(self, caller) -> None:
        if caller is None or not self.roles.check_advisor(caller):
            raise Forbidden("only advisors may do this", code="not_advisor")

    def support_admin(self, caller) -> None:
        if caller is None or not self.roles.check_support_admin(caller):
            raise Forbidden("only support admins may do this", code="not_support_admin")

    def is_advisor(self, caller) -> bool:
        return caller is not None and self.roles.check_advisor(caller)

    def is_support_admin(self, caller) -> bool:
        return caller is not None and self.roles.check_support_admin(caller)

    def administered_tenants(self, caller) -> list[str]:
        """Tenants whose admin group the caller is in (from the configured group pattern),
        sorted."""
        if caller is None:
            return []
        prefix, _sep, suffix = self.tenant_admin_group.partition("{tenant}")
        found = []
        for group in sorted(self.roles.groups(caller)):
            if group.startswith(prefix) and group.endswith(suffix) \
                    and len(group) > len(prefix + suffix):
                tenant_id = group[len(prefix):len(group) - len(suffix)]
                if "/" not in tenant_id and self.roles.check_tenant_admin(caller, tenant_id):
                    found.append(tenant_id)
        return found
