"""Policy of the token exchange and the refresh (DESIGN.md sections 5 and 7).

The protocol layer (``idp_bridge.oauth``) parses the request and validates the subject
token; the use case (:mod:`idp_bridge.services.tokens`) opens the unit of work and signs the
access token after the commit; this module decides, in that unit of work, whether this
subject may get these tokens for this tenant, and records what happened. Failures that
must leave a trace (wrong codes, refresh-token replay) are committed before the error is
raised.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from scopes.catalog import ADVISOR_PROFILE, ProfileChangeRefused, UnknownScope, in_catalog_order, validate_scopes

from ..metrics import CODE_GUESSES
from ..storage.plain import Plain
from ..storage.models import CodeGuess, CodeGuesser, Membership, Tenant
from . import audit
from .access_codes import MalformedCode, normalize_code
from .access_requests import allows
from .guests import guest_scopes
from .errors import AccessCodeRejected, Conflict, Forbidden, InvalidInput, NotFound, ScopeRefused
from .tokens import Family, RefreshRejected, RefreshReused
from .upstream_sessions import ended_by, ended_columns, ended_key_params


class GuessLimiter:
    """Wrong access-code guesses, counted in the database (so every process of every
    bridge shares them) and limited per advisor only: another advisor's failures never
    refuse an advisor who holds the current code.

    - ``per_code``: wrong guesses an advisor may make for one code of one tenant; after
      them the advisor is refused for that tenant until its code changes (at the latest
      after the code's lifetime, or when it is redeemed or renewed).
    - ``window_count`` per ``window_seconds``: wrong guesses an advisor may make across
      all tenants in any sliding window of that length.

    The advisor's row in ``code_guessers`` is locked while a guess is checked, so that
    concurrent guesses of one advisor (from any process) are counted one after the other;
    it is taken before the tenant's code state (always in this order: no deadlock).
    """

    def __init__(self, *, per_code: int, window_count: int, window_seconds: int,
                 code_ttl_seconds: int):
        self.per_code = per_code
        self.window_count = window_count
        self.window = timedelta(seconds=window_seconds)
        #: Rows older than this count for no limit any more (a code lives at most its ttl).
        self.retention = max(self.window, timedelta(seconds=code_ttl_seconds))

    def max_guesses(self, seconds: int, *, tenants: int | None = None,
                    codes_per_tenant: int | None = None) -> int:
        """The most wrong guesses one advisor account can have checked in any period of
        ``seconds``: the sliding window allows ``window_count`` per ``window``, i.e. at most
        ``window_count * ceil(seconds / window)``; against ``tenants`` tenants whose codes
        take at most ``codes_per_tenant`` values in the period, also at most
        ``per_code * tenants * codes_per_tenant``. An attacker's chance to hit a live 40-bit
        code in that period is at most (accounts * this) / 2**40."""
        window = int(self.window.total_seconds())
        bound = self.window_count * -(-seconds // window)
        if tenants is not None and codes_per_tenant is not None:
            bound = min(bound, self.per_code * tenants * codes_per_tenant)
        return bound

    def lock(self, session, advisor: str, now: datetime) -> None:
        """Take (creating it if needed) the advisor's row lock for this transaction."""
        # One upsert: it creates the row or updates it, and either way holds its lock (on
        # PostgreSQL the conflict path locks the existing row) until the transaction ends.
        connection = session.connection()
        upsert = _UPSERT_GUESSER[connection.dialect.name == "postgresql"]
        connection.execute(upsert, {"advisor_subject": advisor, "last_guess_at": now})

    def refusal(self, session, advisor: str, tenant_id: str, counter: int,
                now: datetime) -> str | None:
        """Why this advisor may not guess this tenant's code ``counter`` now, else None.
        Call :meth:`lock` first."""
        for_code, recent = session.connection().execute(_COUNT_GUESSES, {
            "subject": advisor, "tenant_id": tenant_id, "counter": counter,
            "since": now - self.window}).one()
        if for_code >= self.per_code:
            return "code"
        if recent >= self.window_count:
            return "advisor"
        return None

    def record(self, session, advisor: str, tenant_id: str, counter: int, now: datetime) -> None:
        session.connection().execute(_INSERT_GUESS, {
            "advisor_subject": advisor, "tenant_id": tenant_id, "code_counter": counter,
            "at": now})

    def sweep(self, session, now: datetime) -> int:
        """Forget guesses that no limit counts any more (the maintenance loop)."""
        cutoff = now - self.retention
        gone = session.execute(delete(CodeGuess).where(CodeGuess.at < cutoff)).rowcount
        session.execute(delete(CodeGuesser).where(CodeGuesser.last_guess_at < cutoff))
        return gone


def _upsert_guesser(dialect):
    statement = dialect.insert(CodeGuesser.__table__)
    return statement.on_conflict_do_update(
        index_elements=["advisor_subject"],
        set_={"last_guess_at": statement.excluded.last_guess_at})


#: By "is the dialect PostgreSQL".
_UPSERT_GUESSER = (_upsert_guesser(sqlite), _upsert_guesser(postgresql))
#: Both limits' counts in one statement: the advisor's wrong guesses for this code of this
#: tenant, and within the sliding window (an advisor's rows are few: the sweep keeps only
#: what a limit still counts).
_COUNT_GUESSES = select(
    func.count().filter(and_(CodeGuess.tenant_id == bindparam("tenant_id"),
                             CodeGuess.code_counter == bindparam("counter"))),
    func.count().filter(CodeGuess.at > bindparam("since")),
).select_from(CodeGuess).where(CodeGuess.advisor_subject == bindparam("subject"))
_INSERT_GUESS = insert(CodeGuess.__table__)


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    expires_in: int
    scope: str
    refresh_token: str | None  # None: the presented refresh token stays (no rotation)
    membership_id: str
    grant_id: str
    sid: str
    #: RFC 9449: the DPoP key the access token is bound to (``cnf.jkt``), if any.
    dpop_jkt: str | None = None


def membership_scopes(session, membership) -> frozenset[str]:
    """What a membership may carry: temporary and permanent advisors the fixed profile,
    guests their user group's permissions (read now, so changes apply at once)."""
    if membership.kind in ("temporary", "permanent"):
        return ADVISOR_PROFILE
    return guest_scopes(session, membership)


def narrow_scope(requested: list[str] | None, allowed: frozenset[str]) -> str:
    """The token's scope: everything allowed, or the requested subset of it."""
    if not allowed:
        raise ScopeRefused("this membership grants no scope (its user group has no permissions)",
                           code="no_permissions")
    if not requested:
        return " ".join(in_catalog_order(allowed))
    try:
        validate_scopes(requested)
    except UnknownScope:  # the description names no value of the request
        raise ScopeRefused("unknown scope: the scope parameter names scopes not in the "
                           "catalog", code="unknown_scope") from None
    wider = [s for s in requested if s not in allowed]
    if wider:
        raise ScopeRefused(
            f"{ProfileChangeRefused.message} Not in this membership: {' '.join(wider)}. "
            "The scope parameter may only narrow a token."
        )
    return " ".join(in_catalog_order(requested))


@dataclass(frozen=True)
class PendingTokens:
    """Tokens decided and stored in a transaction, whose access token is signed after the
    commit: ``family`` carries this token's scope (a refresh may narrow it for one token),
    ``refresh_token`` is the new refresh token (stored only as its hash)."""

    family: Family
    membership_kind: str
    refresh_token: str | None


class AdvisorExchange:
    """The policy of the exchange, the refresh and the redemption of a code, on a session
    the caller's unit of work provides (:mod:`idp_bridge.services.tokens`).

    Failures that must leave a trace (wrong codes, refresh-token replay) are *returned*
    as ``(None, error)`` so that the caller commits what they recorded and raises after the
    commit; refusals that record nothing are raised (the transaction rolls back).
    """

    def __init__(self, *, codes, memberships, issuer, roles, guesses: GuessLimiter,
                 mfa_required: bool, upstream_sessions=None, rotate_refresh_tokens: bool = True):
        self.codes = codes
        self.memberships = memberships
        self.revocations = memberships.revocations
        self.issuer = issuer
        self.roles = roles
        self.guesses = guesses
        self.mfa_required = mfa_required
        #: True: no new token family from a subject token whose upstream session was logged
        #: out (back-channel logout; :func:`~idp_bridge.domain.upstream_sessions.ended_by`,
        #: read with the membership).
        self.upstream_sessions = bool(upstream_sessions)
        #: Refresh tokens rotate on every use (DESIGN.md 5); the fapi2 profile turns that off
        #: (FAPI 2.0 discourages rotation; its refresh tokens are bound to a DPoP key).
        self.rotate_refresh_tokens = rotate_refresh_tokens

    def admit(self, identity, reason, access_code) -> tuple[str | None, str | None]:
        """Checks that need no storage: role, MFA, reason, code format; returns the checked
        reason and the normalized code (or None)."""
        if not self.roles.check_advisor(identity):
            raise Forbidden("the subject is not an advisor", code="not_advisor")
        if self.mfa_required and not self.roles.check_mfa(identity):
            raise Forbidden("multi-factor authentication is required: sign in again with a second "
                            "factor", code="mfa_required")
        reason = self.memberships.check_reason(reason)
        candidate = None
        if access_code is not None:
            try:
                candidate = normalize_code(access_code)
            except MalformedCode as exc:
                raise InvalidInput(f"access_code is malformed: {exc}", code="code_malformed") from None
        return reason, candidate

    def issue(self, session, *, identity, client_id: str, tenant_id: str, candidate: str | None,
              reason: str | None, scope: list[str] | None, audience: str, now: datetime,
              dpop_jkt: str | None = None):
        """The exchange in ``session``: the tenant, the subject's membership (joining with
        ``candidate`` when there is none), the scope, a new family (bound to the DPoP key
        ``dpop_jkt``, if given) and refresh token, the audit. Returns
        ``(PendingTokens, None)`` or ``(None, failure)``."""
        # The tenant first, from the tenants table; the membership by both columns; and
        # whether the subject token's upstream session was logged out: one statement.
        row = _TENANT_AND_MEMBERSHIP.first(session, {
            "tenant_id": tenant_id, "subject": identity.subject, **ended_key_params(identity)})
        if row is None:
            raise NotFound("unknown tenant", code="unknown_tenant")
        if self.upstream_sessions and ended_by(identity, row.sid_ended_at, row.sub_ended_at):
            raise Forbidden("the upstream session of this subject_token has ended "
                            "(signed out): sign in again", code="upstream_session_ended")
        membership = row if row.id is not None else None
        if membership is not None and self.memberships.end_if_expired(session, membership, now):
            membership = None
        if membership is None:
            tenant = self.memberships.tenant(session, row.tenant)
            membership, failure = self._join(session, tenant, identity, client_id,
                                             candidate, reason, now)
            if failure is not None:
                return None, failure
        allowed = membership_scopes(session, membership)
        token_scope = narrow_scope(scope, allowed)
        family = self.issuer.new_family(session, membership, client_id=client_id,
                                        identity=identity, scope=token_scope,
                                        audience=audience, now=now, dpop_jkt=dpop_jkt)
        refresh = self.issuer.issue_refresh_token(session, family, now)
        _touch(session, membership, now)
        audit.record(session, "token.issued", now, tenant_id=membership.tenant_id,
                     actor=identity.subject, actor_role="advisor",
                     membership_id=membership.id, client_id=client_id, sid=family.sid,
                     scope=token_scope, audience=audience)
        return PendingTokens(family, membership.kind, refresh), None

    def join(self, session, *, identity, tenant_id: str, candidate: str | None,
             reason: str | None, via: str, now: datetime):
        """Redeem a code without minting tokens (the advisor's page): returns
        ``(membership, tenant, None)`` or ``(None, tenant, failure)``. Same checks, limits
        and audit as a redeeming exchange (``via`` is the audit's client)."""
        tenant = self.memberships.tenant(session, tenant_id)
        existing = self.memberships.active(session, tenant.id, identity.subject)
        if existing is not None and not self.memberships.end_if_expired(session, existing, now):
            raise Conflict("you already have access to this tenant", code="already_member")
        membership, failure = self._join(session, tenant, identity, via, candidate, reason, now)
        return membership, tenant, failure

    def _join(self, session, tenant, identity, client_id, candidate, reason, now):
        """First redemption: check the code and create a temporary membership."""
        if candidate is None:
            return None, AccessCodeRejected(
                "access_code is required: the advisor is not a member of this tenant",
                code="not_member")
        if not allows(tenant, "code"):
            # Before the code is looked at: no guess counted, the code does not rotate.
            raise Forbidden("this tenant allows access by request only: ask for access "
                            "instead of entering a code", code="codes_not_allowed")
        failure = self.redeem_code(session, tenant, identity, client_id, candidate, now)
        if failure is not None:
            return None, failure
        membership = self.memberships.create(
            session, tenant, subject=identity.subject, name=identity.username, kind="temporary",
            created_by=identity.subject, actor_role="advisor", now=now, reason=reason,
            client_id=client_id)
        return membership, None

    def redeem_code(self, session, tenant, identity, client_id, candidate: str,
                    now: datetime) -> AccessCodeRejected | None:
        """Check ``candidate`` against the tenant's code within this advisor's guess limits;
        None when it was right (the code then rotates), else the rejection to raise after
        commit (wrong guesses and refusals are recorded and audited in ``session``)."""
        # Lock order: the advisor's guess row, then the tenant's code state.
        self.guesses.lock(session, identity.subject, now)
        current = self.codes.lock_current(session, tenant.id, now)
        refused = self.guesses.refusal(session, identity.subject, tenant.id, current.counter, now)
        if refused is not None:
            CODE_GUESSES.labels("rate_limited").inc()
            audit.record(session, "access_code.rate_limited", now, tenant_id=tenant.id,
                         actor=identity.subject, actor_role="advisor", client_id=client_id,
                         advisor_name=identity.username, limit=refused)
            return AccessCodeRejected(self._refusal_text(refused), code="code_rate_limited")
        result = self.codes.check(session, tenant.id, candidate, now, locked=True)
        CODE_GUESSES.labels("ok" if result.ok else "wrong").inc()
        if not result.ok:
            self.guesses.record(session, identity.subject, tenant.id, current.counter, now)
            audit.record(session, "access_code.failed", now, tenant_id=tenant.id,
                         actor=identity.subject, actor_role="advisor", client_id=client_id,
                         advisor_name=identity.username, failures=result.failures)
            return AccessCodeRejected("access_code is wrong or has expired")
        audit.record(session, "access_code.rotated", now, tenant_id=tenant.id,
                     actor="system", actor_role="system", cause="redeemed")
        return None

    def _refusal_text(self, limit: str) -> str:
        if limit == "code":
            minutes = max(1, round(self.codes.ttl.total_seconds() / 60))
            return (f"too many wrong access codes from you for this tenant's current code; "
                    f"ask the tenant for its next code (a new one comes within {minutes} "
                    "minutes)")
        minutes = max(1, round(self.guesses.window.total_seconds() / 60))
        return (f"too many wrong access codes from you in {minutes} minutes; "
                "try again later")

    def refresh(self, session, *, refresh_token: str, client_id: str,
                scope: list[str] | None, now: datetime):
        """Rotate ``refresh_token`` in ``session``: ``(PendingTokens, None)`` or
        ``(None, failure)``. A replay revokes the family (``refresh_token_reuse``) in this
        transaction; an expired membership is ended in it."""
        try:
            family, row = self.issuer.use_refresh_token(
                session, refresh_token, client_id, now, rotate=self.rotate_refresh_tokens)
        except RefreshReused as exc:
            self.revocations.revoke_family(session, exc.family, reason="refresh_token_reuse",
                                           actor=exc.family.subject, actor_role="advisor",
                                           now=now)
            return None, exc
        except RefreshRejected as exc:
            return None, exc
        if row.membership_expires_at is not None and row.membership_expires_at <= now:
            membership = session.get(Membership, family.membership_id)
            self.memberships.end_if_expired(session, membership, now)
            return None, RefreshRejected("the membership of this refresh_token has expired",
                                         code="membership_expired")
        allowed = frozenset(family.scope.split())
        if row.kind == "guest":  # the group may have been narrowed meanwhile
            allowed &= membership_scopes(session, row)
        token_scope = narrow_scope(scope, allowed)
        refresh = (self.issuer.issue_refresh_token(session, family, now)
                   if self.rotate_refresh_tokens else None)
        if token_scope != family.scope:
            # A narrower token for this request only; the family keeps its scope.
            family = dataclasses.replace(family, scope=token_scope)
        if row.last_token_at is None or row.last_token_at < now - TOUCH_INTERVAL:
            # (conditional in SQL too: a concurrent refresh may have touched it meanwhile)
            _TOUCH_STALE.run(session, {
                "membership_id": family.membership_id, "now": now,
                "stale": now - TOUCH_INTERVAL})
        # Every issued token is accounted for: a refresh is audited like an exchange.
        audit.record(session, "token.refreshed", now, tenant_id=family.tenant_id,
                     actor=family.subject, actor_role="advisor",
                     membership_id=family.membership_id, client_id=client_id,
                     sid=family.sid, scope=token_scope, audience=family.audience)
        return PendingTokens(family, row.kind, refresh), None


#: ``last_token_at`` is kept to this precision, sparing a write on most token requests.
TOUCH_INTERVAL = timedelta(seconds=60)

#: The tenant (NULL row: unknown), when there is one the subject's active membership of it
#: (matched by the two columns), and the ended-session stamps of the subject token: one
#: round trip on the exchange's hot path.
_TENANT_AND_MEMBERSHIP = Plain(select(
    Tenant.id.label("tenant"),
    Membership.id, Membership.tenant_id, Membership.advisor_subject, Membership.advisor_name,
    Membership.kind, Membership.grant_id, Membership.expires_at, Membership.last_token_at,
    Membership.group_id, *ended_columns(),
).select_from(Tenant).outerjoin(Membership, and_(
    Membership.tenant_id == Tenant.id,
    Membership.advisor_subject == bindparam("subject"),
    Membership.ended_at.is_(None),
)).where(Tenant.id == bindparam("tenant_id")))

_TOUCH_STALE = Plain(
    update(Membership.__table__)
    .where(Membership.id == bindparam("membership_id"),
           or_(Membership.last_token_at.is_(None), Membership.last_token_at < bindparam("stale")))
    .values(last_token_at=bindparam("now"))
)


_TOUCH = Plain(update(Membership.__table__).where(Membership.id == bindparam("membership_id"))
               .values(last_token_at=bindparam("now")))


def _touch(session, membership, now) -> None:
    if membership.last_token_at is None or membership.last_token_at < now - TOUCH_INTERVAL:
        _TOUCH.run(session, {"membership_id": membership.id, "now": now})
