"""The directory port: find people by name, username or e-mail, and resolve a subject to a
person (name, username, e-mail, enabled, roles).

Two implementations:

* :class:`KeycloakDirectory` — Keycloak's admin REST API (``GET /admin/realms/{realm}/users?
  search=…``, ``…/users/{id}`` and the user's effective role mappings) with the service
  account the group mirror already uses (``view-users``). It knows everyone of the realm,
  including people who never signed in here, and whether an account is disabled.
* :class:`SignInDirectory` — for any other OpenID provider: the people the bridge has seen
  signing in (pages, management API, token exchange), with the name, e-mail and roles of their
  last sign-in. It cannot know people who never signed in, nor a disabled account (one
  cannot sign in, so it only ages); the pages say so (:attr:`Directory.source`).

Both answer :class:`~idp_bridge.domain.people.PersonInfo` values; callers record what they
use (:meth:`~idp_bridge.domain.people.People.record`), so pages name people from local rows
and never wait for the identity provider.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Protocol

from ..domain.people import SEARCH_LIMIT_MAX, People, PersonInfo, plain
from .keycloak import KeycloakAdmin

#: Effective roles of a user, reused this long by searches (a search asks for each result);
#: resolving a subject before something is stored always asks.
ROLE_CACHE_SECONDS = 30.0
_RESOURCE_ACCESS = re.compile(r"^resource_access\.([^.]+)\.roles$")


class Directory(Protocol):
    #: ``keycloak`` or ``sign_ins``.
    source: str

    def search(self, text: str, *, advisors_only: bool, limit: int) -> list[PersonInfo]:
        """Enabled people matching ``text`` (checked by the caller:
        :func:`~idp_bridge.domain.people.check_search`), at most ``limit``."""

    def resolve(self, subject: str) -> PersonInfo | None:
        """The person of ``subject``, or None when the directory knows no such person.
        Raises :class:`~idp_bridge.upstream.oidc.UpstreamUnavailable` when it cannot tell."""


class SignInDirectory:
    """People who signed in here before (any OpenID provider)."""

    source = "sign_ins"

    def __init__(self, *, db, people: People):
        self.db = db
        self.people = people

    def search(self, text: str, *, advisors_only: bool, limit: int) -> list[PersonInfo]:
        with self.db.read() as session:
            return self.people.search(session, text, advisors_only=advisors_only, limit=limit)

    def resolve(self, subject: str) -> PersonInfo | None:
        with self.db.read() as session:
            return self.people.get(session, subject)


class KeycloakDirectory:
    """Keycloak's users, through the admin REST API."""

    source = "keycloak"

    def __init__(self, admin: KeycloakAdmin, *, roles_claim: str, advisor_role: str,
                 support_admin_role: str):
        self.admin = admin
        self.advisor_role = advisor_role
        self.support_admin_role = support_admin_role
        match = _RESOURCE_ACCESS.match(roles_claim)
        if roles_claim == "realm_access.roles":
            self._roles = admin.realm_roles
        elif match:
            client = match.group(1)
            self._roles = lambda subject: admin.client_roles(subject, client)
        else:
            raise ValueError("the Keycloak directory reads roles from realm_access.roles or "
                             "resource_access.<client>.roles (IDP_BRIDGE_ROLES_CLAIM)")
        self._role_cache: dict[str, tuple[set[str], float]] = {}
        self._lock = threading.Lock()

    def search(self, text: str, *, advisors_only: bool, limit: int) -> list[PersonInfo]:
        limit = max(1, min(limit, SEARCH_LIMIT_MAX))
        # ``*`` and ``"`` are operators of Keycloak's search (infix, exact): plain text only.
        query = text.replace("*", " ").replace('"', " ").strip()
        if not query:
            return []
        found = []
        for user in self.admin.search_users(query, limit=min(100, limit * 3)):
            person = self._person(user)
            if person is None or not person.enabled:
                continue
            if advisors_only and not person.advisor:
                continue
            found.append(person)
            if len(found) == limit:
                break
        return sorted(found, key=lambda p: (p.display.casefold(), p.subject))

    def resolve(self, subject: str) -> PersonInfo | None:
        if not isinstance(subject, str) or not 0 < len(subject) <= 255:
            return None
        user = self.admin.user(subject)
        if user is None or user.get("id") != subject:
            return None
        # What is stored follows from this answer: the roles as Keycloak has them now, never
        # a search's cached ones (a role taken away must not be assignable for a while).
        return self._person(user, fresh=True)

    def _person(self, user: dict, *, fresh: bool = False) -> PersonInfo | None:
        subject = user.get("id")
        if not isinstance(subject, str) or not 0 < len(subject) <= 255:
            return None
        roles = self._effective_roles(subject, fresh=fresh)
        given, family = plain(user.get("firstName")), plain(user.get("lastName"))
        name = plain(" ".join(part for part in (given, family) if part)) if (given or family) \
            else None
        email = plain(user.get("email"), 320)
        return PersonInfo(
            subject=subject, name=name, username=plain(user.get("username")),
            email=email.lower() if email and "@" in email else None,
            email_verified=user.get("emailVerified") is True and email is not None,
            enabled=user.get("enabled") is True, advisor=self.advisor_role in roles,
            support_admin=self.support_admin_role in roles, source="directory")

    def _effective_roles(self, subject: str, *, fresh: bool = False) -> set[str]:
        now = time.monotonic()
        with self._lock:
            cached = None if fresh else self._role_cache.get(subject)
            if cached is not None and now - cached[1] < ROLE_CACHE_SECONDS:
                return cached[0]
        roles = self._roles(subject)
        with self._lock:
            if len(self._role_cache) > 5000:
                self._role_cache.clear()
            self._role_cache[subject] = (roles, now)
        return roles
