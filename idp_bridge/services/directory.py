"""Use cases of the directory: find advisors by name or e-mail (support assigning a permanent
advisor, a tenant admin inviting a guest) and resolve the subject such a choice names.

The stored subject always comes from the directory (:mod:`idp_bridge.upstream.directory`):
an unknown subject (``person_unknown``, 404), a disabled account (``person_disabled``, 409) or
a person without the advisor role (``person_not_advisor``, 400) is refused before anything is
stored. The directory is asked before a unit of work opens (no transaction waits for the
identity provider); when it cannot answer, nothing is stored (``directory_unavailable``, 503).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..domain.errors import Conflict, InvalidInput, NotFound, Unavailable
from ..domain.people import (SEARCH_LIMIT_MAX, SEARCH_MAX, SEARCH_MIN, PersonInfo, check_search,
                             person_from_claims)
from ..storage.db import utcnow
from ..upstream.oidc import UpstreamUnavailable

SUBJECT_MAX = 255


@dataclass(frozen=True)
class SearchResult:
    #: ``keycloak`` (everyone of the realm) or ``sign_ins`` (people who signed in here).
    source: str
    people: tuple[PersonInfo, ...]


class PeopleDirectory:
    def __init__(self, *, db, authorize, memberships, directory, people):
        self.db = db
        self.authorize = authorize
        self.memberships = memberships
        self.directory = directory
        self.people = people

    @property
    def source(self) -> str:
        return self.directory.source

    # --- searching ---
    def advisors_for_support(self, caller, text, *, limit: int = 10) -> SearchResult:
        """Advisors matching ``text``, for a support admin assigning one."""
        self.authorize.support_admin(caller)
        return self._search(text, limit)

    def advisors_for_tenant(self, caller, tenant_id: str, text, *,
                            limit: int = 10) -> SearchResult:
        """Advisors matching ``text``, for a tenant admin inviting one as a guest."""
        self.authorize.tenant_admin(caller, tenant_id)
        with self.db.read() as session:
            self.memberships.tenant(session, tenant_id)
        return self._search(text, limit)

    def _search(self, text, limit) -> SearchResult:
        query = check_search(text)
        if query is None:
            raise InvalidInput(f"q must be {SEARCH_MIN} to {SEARCH_MAX} characters of plain text",
                               code="search_text_invalid")
        if isinstance(limit, bool) or not isinstance(limit, int) \
                or not 1 <= limit <= SEARCH_LIMIT_MAX:
            raise InvalidInput(f"limit must be 1 to {SEARCH_LIMIT_MAX}", code="limit_out_of_range")
        try:
            found = self.directory.search(query, advisors_only=True, limit=limit)
        except UpstreamUnavailable:
            raise _unavailable() from None
        return SearchResult(self.directory.source, tuple(found))

    # --- resolving ---
    def advisor(self, subject) -> PersonInfo:
        """The enabled advisor ``subject`` names, from the directory; refuses anything else."""
        if not isinstance(subject, str) or not 0 < len(subject) <= SUBJECT_MAX \
                or not subject.isprintable():
            raise InvalidInput(f"advisor subject must be 1 to {SUBJECT_MAX} printable characters",
                               code="advisor_subject_invalid")
        try:
            person = self.directory.resolve(subject)
        except UpstreamUnavailable:
            raise _unavailable() from None
        if person is None:
            raise NotFound("the directory knows no person with this subject",
                           code="person_unknown")
        if not person.enabled:
            raise Conflict("this person's account is disabled at the identity provider",
                           code="person_disabled")
        if not person.advisor:
            raise InvalidInput("this person does not hold the advisor role",
                               code="person_not_advisor")
        return person

    def remember(self, session, person: PersonInfo) -> None:
        """Record a resolved person in the caller's unit of work (pages name them from it)."""
        self.people.record(session, person, utcnow())


def _unavailable() -> Unavailable:
    return Unavailable("the directory of the identity provider cannot be reached",
                       code="directory_unavailable")


class SignIns:
    """Records the person behind a validated upstream token (a page sign-in, a management
    API call, a token exchange): the fallback directory and the names on every page."""

    def __init__(self, *, people, roles):
        self.people = people
        self.roles = roles

    def person(self, identity) -> PersonInfo:
        return person_from_claims(identity.subject, identity.claims,
                                  advisor=self.roles.check_advisor(identity),
                                  support_admin=self.roles.check_support_admin(identity))

    def seen(self, session, identity, now) -> None:
        """In the caller's unit of work; written at most hourly per person and process
        while the claims stay the same."""
        self.people.seen(session, self.person(identity), now)

    def seen_page_sign_in(self, session, subject: str, kept: dict, now) -> None:
        """A page sign-in: ``kept`` are the claims its session keeps (profile claims and
        the mapped ``roles``)."""
        roles = set(kept.get("roles") or ())
        self.people.seen(session, person_from_claims(
            subject, kept, advisor=self.roles.advisor_role in roles,
            support_admin=self.roles.support_admin_role in roles), now)

    def needs_recording(self, identity) -> bool:
        """Whether :meth:`seen` would write (callers without a unit of work open one only then)."""
        return self.people.would_record(self.person(identity))
