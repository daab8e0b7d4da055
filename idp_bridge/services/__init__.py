"""The application services: one method per use case, between the entry points and the
domain.

Entry points — the management API (``idp_bridge/api/``), the web pages (``idp_bridge/web/``),
the token endpoint (``idp_bridge/oauth/``) and the CLI — parse a request, call one method
here and render its result; they open no transaction and query nothing. A method

1. authorises its caller (:class:`~idp_bridge.services.authorization.Authorizer`: the
   :class:`~idp_bridge.upstream.identity.RoleMapper` checks on the caller's
   :class:`~idp_bridge.upstream.identity.UpstreamIdentity`),
2. opens the unit of work (``db.transaction()`` / ``db.read()``),
3. lets the domain decide and record, and
4. returns plain values (:mod:`idp_bridge.services.values`) or raises a
   :class:`~idp_bridge.domain.errors.DomainError` with a stable ``code``.

Nothing here imports Flask (``tests/test_layering.py``).

=====================  ==========================================================
module                 use cases
=====================  ==========================================================
``tenant_admin``       tenant, settings (max age, ways in, four eyes), notification
                       e-mails, access code, help page state, memberships, remove,
                       audit events, access log
``callers``            the API's caller from its bearer token
``advisors``           my memberships, leave, my invitations, accept
``support``            permanent advisors: list, assign, remove; support page lists
``directory``          search advisors (support, tenant admins), resolve a chosen subject
``groups``             user groups CRUD, invitations: list, invite, withdraw
``web_sign_in``        the pages' server-side sessions: start, find, end
``access_records``     access records: a receiver's ingest; the access log's groups and
                       requests, who is active now, last activity
``access_requests``    an advisor's access requests: ask, list, withdraw; the tenant
                       admins': open requests, approve (four eyes), deny
``approvals``          four eyes: pending first approvals, complete as the second admin,
                       reject
``permanent_consent``  permanent advisors with the tenant's consent: support proposes or
                       withdraws; the tenant admins accept (four eyes), decline,
                       re-confirm; proposals and confirmation dates
``audit_chain``        the tenant's audit chain: export pages, the latest checkpoint,
                       the checkpoint keys
``evidence``           the evidence pack of a membership: signed download, printable
                       page, the verifier's verdict
``tokens``             exchange, refresh, redeem (join), open tenant, RFC 7009,
                       back-channel logout
=====================  ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from .access_records import AccessRecordsService
from .access_requests import AccessRequestsService
from .advisors import Advisors
from .audit_chain import AuditChains
from .approvals import Approvals
from .authorization import Authorizer
from .callers import Callers
from .directory import PeopleDirectory, SignIns
from .evidence import EvidencePacks
from .groups import Groups
from .permanent_consent import PermanentAdvisors
from .support import Support
from .tenant_admin import TenantAdmin
from .web_sign_in import WebSignIn

__all__ = ["AccessRecordsService", "AccessRequestsService", "Advisors", "Approvals", "Authorizer",
           "Callers", "Groups", "PeopleDirectory", "SignIns", "Support",
           "TenantAdmin", "UseCases", "WebSignIn", "build_use_cases"]


@dataclass(frozen=True)
class UseCases:
    """The management use cases of one app (the token use cases are ``TokenService``)."""

    authorize: Authorizer
    callers: Callers
    tenant_admin: TenantAdmin
    advisors: Advisors
    support: Support
    groups: Groups
    web_sign_in: WebSignIn
    directory: PeopleDirectory
    access_records: AccessRecordsService
    access_requests: AccessRequestsService
    approvals: Approvals
    #: The tenant's audit chain: export, checkpoints, their keys.
    audit_chains: AuditChains | None = None
    #: Permanent advisors with the tenant's consent, re-confirmation.
    permanent: PermanentAdvisors | None = None
    #: The evidence pack of a membership (signed with the audit checkpoint keys).
    evidence: EvidencePacks | None = None


def build_use_cases(*, db, roles, validator, session_has_ended, memberships, codes, guests,
                    web_sessions, people, directory, sign_ins: SignIns,
                    tenant_admin_group: str, timezone: str, access_requests, four_eyes,
                    tenant_settings, access_listeners=(), checkpoints=None,
                    permanent_consent=None) -> UseCases:
    authorize = Authorizer(roles, tenant_admin_group=tenant_admin_group)
    common = {"db": db, "authorize": authorize, "memberships": memberships}
    found = PeopleDirectory(**common, directory=directory, people=people)
    return UseCases(
        authorize=authorize,
        callers=Callers(db=db, validator=validator, session_has_ended=session_has_ended,
                        sign_ins=sign_ins),
        tenant_admin=TenantAdmin(**common, codes=codes, guests=guests, people=people,
                                 timezone=timezone, settings=tenant_settings),
        advisors=Advisors(**common, guests=guests),
        support=Support(**common, directory=found, people=people, consent=permanent_consent),
        groups=Groups(**common, guests=guests, directory=found, people=people),
        web_sign_in=WebSignIn(db=db, web_sessions=web_sessions, sign_ins=sign_ins),
        directory=found,
        access_records=AccessRecordsService(db=db, authorize=authorize, memberships=memberships,
                                            people=people, timezone=timezone,
                                            listeners=access_listeners),
        access_requests=AccessRequestsService(**common, requests=access_requests,
                                              four_eyes=four_eyes, people=people),
        approvals=Approvals(**common, four_eyes=four_eyes, people=people),
        audit_chains=AuditChains(**common, checkpoints=checkpoints)
        if checkpoints is not None else None,
        permanent=PermanentAdvisors(**common, consent=permanent_consent, directory=found,
                                    four_eyes=four_eyes, people=people)
        if permanent_consent is not None else None,
        evidence=EvidencePacks(**common, people=people, checkpoints=checkpoints)
        if checkpoints is not None else None)
