"""People: who a subject is, in words a tenant reads.

A subject id (``8e3a2d1c-…``) is what the identity provider and the bridge agree on; a person
reads a name. The bridge keeps one row per person it learnt of (:class:`~idp_bridge.storage.
models.Person`), from two sources only, both the identity provider's word:

* a **sign-in**: the claims of a validated upstream token (``name``, ``given_name`` +
  ``family_name``, ``preferred_username``, ``email``, ``email_verified``) and its roles;
* the **directory** (:mod:`idp_bridge.upstream.directory`): Keycloak's admin API, asked when
  support assigns an advisor or a tenant admin invites one.

Never from free text a client sent (a support admin's "display name", a reason). Every page,
the access log, its CSV export, e-mails and webhooks name people through :meth:`People.labels`:
the name, with the e-mail address (else the username) added where two people share the name,
and the subject only where nobody could tell who it is.
"""

from __future__ import annotations

import threading
import time
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..storage.db import after_commit
from ..storage.models import Person
from .text import unsafe_characters

NAME_MAX = 255
EMAIL_MAX = 320
#: Search text: at least this many characters (no "list everyone" by an empty search) …
SEARCH_MIN = 2
#: … and at most this many.
SEARCH_MAX = 100
#: At most this many people per answer.
SEARCH_LIMIT_MAX = 20
#: A person's last sign-in is kept to this precision (a sign-in with unchanged claims
#: writes nothing when the stored time is more recent).
LAST_SEEN_PRECISION = timedelta(days=1)


@dataclass(frozen=True)
class PersonInfo:
    """One person as the identity provider describes them."""

    subject: str
    name: str | None = None
    username: str | None = None
    email: str | None = None
    email_verified: bool = False
    enabled: bool = True
    advisor: bool = False
    support_admin: bool = False
    #: ``sign_in`` or ``directory``.
    source: str = "sign_in"
    last_sign_in_at: datetime | None = None

    @property
    def display(self) -> str:
        """The name, else the username, else the e-mail address, else the subject."""
        return self.name or self.username or self.email or self.subject

    @classmethod
    def of(cls, row: Person) -> "PersonInfo":
        return cls(subject=row.subject, name=row.name, username=row.username, email=row.email,
                   email_verified=row.email_verified, enabled=row.enabled, advisor=row.advisor,
                   support_admin=row.support_admin, source=row.source,
                   last_sign_in_at=row.last_sign_in_at)


def plain(value, max_length: int = NAME_MAX) -> str | None:
    """``value`` if it is a non-empty string of at most ``max_length`` characters without
    control, bidirectional-formatting or separator characters (stripped), else None: a
    name from a token that cannot be shown safely is not shown (the sign-in still works)."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not 0 < len(value) <= max_length or unsafe_characters(value):
        return None
    return value


def name_key(value: str | None) -> str | None:
    """A name as compared: NFKC, case-folded, inner spaces collapsed."""
    if not value:
        return None
    return " ".join(unicodedata.normalize("NFKC", value).casefold().split())[:300]


def person_from_claims(subject: str, claims: dict, *, advisor: bool,
                       support_admin: bool) -> PersonInfo:
    """A person from the claims of a validated upstream token (OpenID Connect Core 5.1)."""
    name = plain(claims.get("name"))
    if name is None:
        given, family = plain(claims.get("given_name")), plain(claims.get("family_name"))
        joined = " ".join(part for part in (given, family) if part)
        name = plain(joined) if joined else None
    email = plain(claims.get("email"), EMAIL_MAX)
    if email is not None and "@" not in email:
        email = None
    return PersonInfo(subject=subject, name=name, username=plain(claims.get("preferred_username")),
                      email=email.lower() if email else None,
                      email_verified=claims.get("email_verified") is True and email is not None,
                      advisor=advisor, support_admin=support_admin, source="sign_in")


def check_search(text) -> str | None:
    """The search text, stripped, or None when it cannot be searched for (too short, too
    long, not plain text): the caller answers with an empty list or an error."""
    value = plain(text, SEARCH_MAX)
    if value is None or len(value) < SEARCH_MIN:
        return None
    return value


class People:
    """The people rows: record what a sign-in or the directory said, read names back.

    ``record_every`` seconds: a sign-in of the same person with the same claims is written at
    most that often per process (the token path must not write a row per request)."""

    def __init__(self, *, record_every: float = 3600.0, remembered: int = 10000):
        self.record_every = record_every
        self._remembered = remembered
        self._recent: OrderedDict[str, tuple[PersonInfo, float]] = OrderedDict()
        self._lock = threading.Lock()

    # --- writing ---
    def seen(self, session, person: PersonInfo, now: datetime) -> None:
        """A validated sign-in of ``person``. Written only when the row is missing, says
        something else, or its sign-in time is older than :data:`LAST_SEEN_PRECISION`; and
        this process asks the database at most every ``record_every`` seconds per person
        while the claims stay the same (the token path reads nothing more)."""
        if not self.would_record(person):
            return
        tick = time.monotonic()
        row = session.get(Person, person.subject)
        current = PersonInfo.of(row) if row is not None else None
        fresh = row is not None and row.last_sign_in_at is not None and \
            now - row.last_sign_in_at < LAST_SEEN_PRECISION
        if current is None or not fresh or replace(
                current, source="sign_in", last_sign_in_at=None, enabled=True) != person:
            self.record(session, replace(person, source="sign_in"), now, signed_in=True)
        after_commit(session, _Remember(self, person, tick))

    def would_record(self, person: PersonInfo) -> bool:
        with self._lock:
            recent = self._recent.get(person.subject)
        return recent is None or recent[0] != person or \
            time.monotonic() - recent[1] >= self.record_every

    def _remember(self, person: PersonInfo, tick: float) -> None:
        with self._lock:
            self._recent[person.subject] = (person, tick)
            self._recent.move_to_end(person.subject)
            while len(self._recent) > self._remembered:
                self._recent.popitem(last=False)

    def record(self, session, person: PersonInfo, now: datetime, *,
               signed_in: bool = False) -> None:
        """Insert or update ``person``'s row with what its source said, in one statement
        (two processes recording one person at once do not collide). A directory answer
        keeps the sign-in time; a sign-in proves the account enabled."""
        values = {
            "name": person.name, "username": person.username, "email": person.email,
            "email_verified": person.email_verified,
            "enabled": True if signed_in else person.enabled,
            "advisor": person.advisor, "support_admin": person.support_admin,
            "source": person.source, "name_key": name_key(person.name),
            "search_key": "\n".join(name_key(v) or "" for v in (
                person.name, person.username, person.email))[:1000],
            "updated_at": now}
        if signed_in:
            values["last_sign_in_at"] = now
        dialect = session.get_bind().dialect.name
        upsert = (postgresql_insert if dialect == "postgresql" else sqlite_insert)(Person)
        statement = upsert.values(subject=person.subject, **values).on_conflict_do_update(
            index_elements=[Person.subject], set_=values)
        session.execute(statement)

    def forget_recent(self) -> None:
        with self._lock:
            self._recent.clear()

    # --- reading ---
    @staticmethod
    def get(session, subject: str) -> PersonInfo | None:
        row = session.get(Person, subject) if isinstance(subject, str) and \
            0 < len(subject) <= 255 else None
        return PersonInfo.of(row) if row is not None else None

    @staticmethod
    def get_many(session, subjects) -> dict[str, PersonInfo]:
        wanted = sorted({s for s in subjects if isinstance(s, str) and 0 < len(s) <= 255})
        found: dict[str, PersonInfo] = {}
        for start in range(0, len(wanted), 500):
            for row in session.scalars(select(Person).where(
                    Person.subject.in_(wanted[start:start + 500]))):
                found[row.subject] = PersonInfo.of(row)
        return found

    @staticmethod
    def labels(session, subjects, known: dict[str, PersonInfo] | None = None) -> dict[str, str]:
        """What to call each of ``subjects`` that the bridge knows: the name, and where
        another person (anyone the bridge knows) shares it, the e-mail address or username
        in parentheses. Unknown subjects are absent (the caller shows the subject).
        ``known``: the rows of ``subjects`` when the caller has read them already."""
        people = known if known is not None else People.get_many(session, subjects)
        keys = {name_key(p.name) for p in people.values() if p.name}
        shared = set()
        if keys:
            shared = {key for key, count in session.execute(
                select(Person.name_key, func.count()).where(Person.name_key.in_(sorted(keys)))
                .group_by(Person.name_key)).all() if count > 1}
        labels = {}
        for subject, person in people.items():
            label = person.display
            if person.name and name_key(person.name) in shared:
                extra = person.email or person.username
                if extra and extra != person.name:
                    label = f"{person.name} ({extra})"
            labels[subject] = label
        return labels

    @staticmethod
    def search(session, text: str, *, advisors_only: bool, limit: int) -> list[PersonInfo]:
        """People whose name, username or e-mail contains ``text`` (case-insensitive),
        enabled ones only, by name."""
        needle = name_key(text) or ""
        pattern = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        statement = select(Person).where(Person.enabled.is_(True),
                                         Person.search_key.like(pattern, escape="\\"))
        if advisors_only:
            statement = statement.where(Person.advisor.is_(True))
        statement = statement.order_by(Person.name_key, Person.subject).limit(
            max(1, min(limit, SEARCH_LIMIT_MAX)))
        return [PersonInfo.of(row) for row in session.scalars(statement)]

    @staticmethod
    def subjects_matching(session, text: str, limit: int = 200) -> list[str]:
        """Subjects whose name, username or e-mail contains ``text``: the access log's
        advisor filter reaches events that name the advisor only by subject."""
        needle = name_key(text) or ""
        if not needle:
            return []
        pattern = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return list(session.scalars(select(Person.subject).where(or_(
            Person.search_key.like(pattern, escape="\\"),
            Person.subject == text)).limit(limit)))



@dataclass(frozen=True)
class _Remember:
    """After the commit: this process recorded ``person`` (equal callbacks run once)."""

    book: People
    person: PersonInfo
    tick: float

    def __call__(self) -> None:
        self.book._remember(self.person, self.tick)
