"""Policy of the token exchange and the refresh (DESIGN.md sections 5 and 7).

The protocol layer (``idp_bridge.oauth``) parses the request and validates the subject
token; this module decides whether this subject may get these tokens for this tenant, and
records what happened. Failures that must leave a trace (wrong codes, refresh-token replay)
are committed before the error is raised.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import timedelta

from limits import parse
from sqlalchemy import bindparam, or_, select, update

from scopes.catalog import ADVISOR_PROFILE, ProfileChangeRefused, UnknownScope, in_catalog_order, validate_scopes

from ..metrics import CODE_GUESSES
from ..storage.db import utcnow
from ..storage.models import Membership
from . import audit
from .access_codes import MalformedCode, normalize_code
from .guests import guest_scopes
from .errors import AccessCodeRejected, Conflict, Forbidden, InvalidInput, NotFound
from .tokens import RefreshRejected


class ScopeRefused(Exception):
    def __init__(self, description: str):
        super().__init__(description)
        self.description = description


class RateLimitUnavailable(RuntimeError):
    """The shared rate-limit store is unreachable; code redemption is refused."""


class GuessLimiter:
    """Wrong access-code guesses, limited per advisor and per tenant (a ``limits`` strategy,
    the engine under Flask-Limiter, sharing its storage)."""

    def __init__(self, strategy, advisor_limit: str, tenant_limit: str):
        self.strategy = strategy
        self.advisor_limit = parse(advisor_limit)
        self.tenant_limit = parse(tenant_limit)

    def _call(self, method, *args):
        try:
            return method(*args)
        except Exception as exc:  # storage errors differ per backend; fail closed on all
            raise RateLimitUnavailable("rate-limit storage is unreachable") from exc

    def allowed(self, advisor: str, tenant_id: str) -> bool:
        return (self._call(self.strategy.test, self.advisor_limit, "code-guess-advisor", advisor)
                and self._call(self.strategy.test, self.tenant_limit, "code-guess-tenant", tenant_id))

    def hit(self, advisor: str, tenant_id: str) -> None:
        self._call(self.strategy.hit, self.advisor_limit, "code-guess-advisor", advisor)
        self._call(self.strategy.hit, self.tenant_limit, "code-guess-tenant", tenant_id)


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    expires_in: int
    scope: str
    refresh_token: str
    membership_id: str
    grant_id: str
    sid: str


def membership_scopes(session, membership) -> frozenset[str]:
    """What a membership may carry: temporary and permanent advisors the fixed profile,
    guests their user group's permissions (read now, so changes apply at once)."""
    if membership.kind in ("temporary", "permanent"):
        return ADVISOR_PROFILE
    return guest_scopes(session, membership)


def narrow_scope(requested: list[str] | None, allowed: frozenset[str]) -> str:
    """The token's scope: everything allowed, or the requested subset of it."""
    if not allowed:
        raise ScopeRefused("this membership grants no scope (its user group has no permissions)")
    if not requested:
        return " ".join(in_catalog_order(allowed))
    try:
        validate_scopes(requested)
    except UnknownScope as exc:
        raise ScopeRefused(str(exc)) from None
    wider = [s for s in requested if s not in allowed]
    if wider:
        raise ScopeRefused(
            f"{ProfileChangeRefused.message} Not in this membership: {' '.join(wider)}. "
            "The scope parameter may only narrow a token."
        )
    return " ".join(in_catalog_order(requested))


class AdvisorExchange:
    def __init__(self, *, db, codes, memberships, issuer, roles, guesses: GuessLimiter,
                 mfa_required: bool, accounts=None, upstream_sessions=None):
        self.db = db
        self.codes = codes
        self.memberships = memberships
        self.issuer = issuer
        self.roles = roles
        self.guesses = guesses
        self.mfa_required = mfa_required
        #: Optional upstream account checker (``check_account(subject)`` -> state).
        self.accounts = accounts
        #: ``upstream_sessions(session, identity)`` -> True when the subject token's upstream
        #: session was logged out (back-channel logout): no new token family from it.
        self.upstream_sessions = upstream_sessions

    def exchange(self, *, identity, client_id: str, tenant_id: str, access_code: str | None,
                 scope: list[str] | None, audience: str, reason: str | None) -> IssuedTokens:
        reason, candidate = self._admit(identity, reason, access_code)
        now = utcnow()
        failure: Exception | None = None
        with self.db.transaction() as session:
            if self.upstream_sessions is not None and self.upstream_sessions(session, identity):
                raise Forbidden("the upstream session of this subject_token has ended "
                                "(signed out): sign in again")
            membership = session.connection().execute(
                _ACTIVE_MEMBERSHIP, {"key": f"{tenant_id}|{identity.subject}"}).first()
            if membership is not None and self.memberships.end_if_expired(session, membership, now):
                membership = None
            if membership is None:
                tenant = self.memberships.tenant(session, tenant_id)
                membership, failure = self._join(session, tenant, identity, client_id,
                                                 candidate, reason, now)
            if failure is None:
                allowed = membership_scopes(session, membership)
                token_scope = narrow_scope(scope, allowed)
                family = self.issuer.new_family(session, membership, client_id=client_id,
                                                identity=identity, scope=token_scope,
                                                audience=audience, now=now)
                refresh = self.issuer.issue_refresh_token(session, family, now)
                access = self.issuer.mint_access_token(family, membership.kind)
                _touch(session, membership, now)
                audit.record(session, "token.issued", now, tenant_id=membership.tenant_id,
                             actor=identity.subject, actor_role="advisor",
                             membership_id=membership.id, client_id=client_id, sid=family.sid,
                             scope=token_scope, audience=audience)
                result = IssuedTokens(access.token, access.expires_in, token_scope, refresh,
                                      membership.id, membership.grant_id, family.sid)
        if failure is not None:
            raise failure
        return result

    def join(self, *, identity, tenant_id: str, access_code: str | None, reason: str | None,
             via: str = "web") -> str:
        """Redeem a code without minting tokens (the advisor's web page); returns the new
        membership's id. Same checks, limits and audit as a redeeming exchange."""
        reason, candidate = self._admit(identity, reason, access_code)
        now = utcnow()
        failure: Exception | None = None
        with self.db.transaction() as session:
            tenant = self.memberships.tenant(session, tenant_id)
            existing = self.memberships.active(session, tenant.id, identity.subject)
            if existing is not None and not self.memberships.end_if_expired(session, existing, now):
                raise Conflict("you already have access to this tenant")
            membership, failure = self._join(session, tenant, identity, via, candidate, reason, now)
            result = membership.id if membership is not None else None
        if failure is not None:
            raise failure
        return result

    def _admit(self, identity, reason, access_code):
        """Checks before any transaction: role, MFA, reason, upstream account, code format."""
        if not self.roles.check_advisor(identity):
            raise Forbidden("the subject is not an advisor")
        if self.mfa_required and not self.roles.check_mfa(identity):
            raise Forbidden("multi-factor authentication is required: sign in again with a second factor")
        reason = self.memberships.check_reason(reason)
        self._check_account(identity.subject)
        candidate = None
        if access_code is not None:
            try:
                candidate = normalize_code(access_code)
            except MalformedCode as exc:
                raise InvalidInput(f"access_code is malformed: {exc}") from None
        return reason, candidate

    def _join(self, session, tenant, identity, client_id, candidate, reason, now):
        """First redemption: check the code and create a temporary membership."""
        if candidate is None:
            return None, AccessCodeRejected(
                "access_code is required: the advisor is not a member of this tenant")
        if not self.guesses.allowed(identity.subject, tenant.id):
            CODE_GUESSES.labels("rate_limited").inc()
            audit.record(session, "access_code.rate_limited", now, tenant_id=tenant.id,
                         actor=identity.subject, actor_role="advisor", client_id=client_id)
            return None, AccessCodeRejected("too many wrong access codes; try again later")
        result = self.codes.check(session, tenant.id, candidate, now)
        CODE_GUESSES.labels("ok" if result.ok else "wrong").inc()
        if not result.ok:
            self.guesses.hit(identity.subject, tenant.id)
            audit.record(session, "access_code.failed", now, tenant_id=tenant.id,
                         actor=identity.subject, actor_role="advisor", client_id=client_id,
                         advisor_name=identity.username, failures=result.failures)
            if result.rotated:
                audit.record(session, "access_code.rotated", now, tenant_id=tenant.id,
                             actor="system", actor_role="system", cause="too_many_failures")
            return None, AccessCodeRejected("access_code is wrong or has expired")
        audit.record(session, "access_code.rotated", now, tenant_id=tenant.id,
                     actor="system", actor_role="system", cause="redeemed")
        membership = self.memberships.create(
            session, tenant, subject=identity.subject, name=identity.username, kind="temporary",
            created_by=identity.subject, actor_role="advisor", now=now, reason=reason,
            client_id=client_id)
        return membership, None

    def _check_account(self, subject: str) -> None:
        """With an upstream account checker: a disabled or deleted account ends every
        membership of the advisor and gets nothing (network call outside any transaction)."""
        if self.accounts is None or subject is None:
            return
        state = self.accounts.check_account(subject)
        if state != "active":
            with self.db.transaction() as session:
                self.memberships.end_all_of_advisor(session, subject,
                                                    reason="upstream_account_ended", now=utcnow())
            raise Forbidden(f"the advisor's account is {state} at the identity provider")

    def refresh(self, *, refresh_token: str, client_id: str, scope: list[str] | None) -> IssuedTokens:
        if self.accounts is not None:
            with self.db.read() as session:
                family = self.issuer.find_refresh_family(session, refresh_token)
            self._check_account(family.subject if family is not None else None)
        now = utcnow()
        failure: Exception | None = None
        with self.db.transaction() as session:
            try:
                family, row = self.issuer.use_refresh_token(session, refresh_token, client_id, now)
                if row.membership_expires_at is not None and row.membership_expires_at <= now:
                    membership = session.get(Membership, family.membership_id)
                    self.memberships.end_if_expired(session, membership, now)
                    raise RefreshRejected("the membership of this refresh_token has expired")
            except RefreshRejected as exc:
                failure = exc
            if failure is None:
                allowed = frozenset(family.scope.split())
                if row.kind == "guest":  # the group may have been narrowed meanwhile
                    allowed &= membership_scopes(session, row)
                token_scope = narrow_scope(scope, allowed)
                refresh = self.issuer.issue_refresh_token(session, family, now)
                if token_scope != family.scope:
                    # A narrower token for this request only; the family keeps its scope.
                    family = dataclasses.replace(family, scope=token_scope)
                access = self.issuer.mint_access_token(family, row.kind)
                session.connection().execute(_TOUCH_STALE, {"membership_id": family.membership_id, "now": now,
                                               "stale": now - TOUCH_INTERVAL})
                result = IssuedTokens(access.token, access.expires_in, token_scope, refresh,
                                      family.membership_id, family.grant_id, family.sid)
        if failure is not None:
            raise failure
        return result


#: ``last_token_at`` is kept to this precision, sparing a write on most token requests.
TOUCH_INTERVAL = timedelta(seconds=60)

_ACTIVE_MEMBERSHIP = select(
    Membership.id, Membership.tenant_id, Membership.advisor_subject, Membership.advisor_name,
    Membership.kind, Membership.grant_id, Membership.expires_at, Membership.last_token_at,
    Membership.group_id,
).where(Membership.active_key == bindparam("key"))

_TOUCH_STALE = (
    update(Membership.__table__)
    .where(Membership.id == bindparam("membership_id"),
           or_(Membership.last_token_at.is_(None), Membership.last_token_at < bindparam("stale")))
    .values(last_token_at=bindparam("now"))
)


_TOUCH = (update(Membership.__table__).where(Membership.id == bindparam("membership_id"))
          .values(last_token_at=bindparam("now")))


def _touch(session, membership, now) -> None:
    if membership.last_token_at is None or membership.last_token_at < now - TOUCH_INTERVAL:
        session.connection().execute(_TOUCH, {"membership_id": membership.id, "now": now})
