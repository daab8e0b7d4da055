"""Token use cases: exchange, refresh, redeem (join by code), open a tenant, RFC 7009
revocation and back-channel logout (DESIGN.md sections 5, 7 and 9).

Each method is one use case: checks that need no storage (role, MFA, reason, code format),
the upstream account check (a network call, before any transaction), one unit of work in
which the domain decides and records, and — for the token-issuing cases — the access token
signed *after* the commit, from the committed values. Entry points (the token endpoint, the
advisor's pages, the upstream's back-channel route) call these methods and nothing below.

Refusals are :class:`~idp_bridge.domain.errors.DomainError` errors with a stable ``code``:

==========================  ==========  ==================================================
code                        kind        when
==========================  ==========  ==================================================
``not_advisor``             forbidden   the identity lacks the advisor role
``mfa_required``            forbidden   MFA is required and the sign-in had no second factor
``account_inactive``        forbidden   the upstream account is disabled or deleted (its
                                        memberships have just been ended)
``upstream_session_ended``  forbidden   the subject token's upstream session was logged out
``reason_invalid`` …        invalid     the reason breaks the free-text rule (domain/text.py)
``code_malformed``          invalid     the access code cannot be a code
``unknown_tenant``          not_found   no such tenant
``not_member``              refused     no membership and no access code given
``code_rejected``           refused     wrong or expired access code
``code_rate_limited``       refused     too many wrong codes from this advisor
``already_member``          conflict    (redeem) the advisor already has access
``concurrent_change``       conflict    two first redemptions raced; retry
``no_permissions``          scope       a guest whose user group has no permissions
``unknown_scope``           scope       scope names scopes outside the catalog
``scope_refused``           scope       scope wider than the membership
``refresh_invalid``         refused     unknown or malformed refresh token
``refresh_wrong_client``    refused     refresh token of another client
``refresh_reused``          refused     refresh token presented twice (family now revoked)
``refresh_expired``         refused     refresh token past its lifetime
``membership_ended``        refused     the refresh token's membership has ended
``membership_expired``      refused     ... has just expired (and is ended now)
``family_revoked``          refused     the refresh token's family is revoked
``upstream_unavailable``    unavailable the upstream account check cannot be answered
``dpop_required``           forbidden   (open tenant) the application client requires DPoP
``logout_token_replayed``   invalid     (back-channel logout) the jti was already used
==========================  ==========  ==================================================

Signing after commit, and what a failure then leaves: the signing key is chosen *before*
the transaction (loading keys reads the database), the transaction stores the family, the
hashed refresh token and the audit event, and only then is the access token signed. If
signing fails nonetheless, the refresh token was never handed out (only its hash is
stored), so nothing usable exists; the orphan family is then revoked as
``issuance_failed`` (best effort, in its own transaction) so that the record says so, and
the error propagates (a 500: a bug, not a refusal).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError

from ..domain.errors import Forbidden, InvalidInput, NotFound, Unavailable
from ..domain.exchange import IssuedTokens, PendingTokens
from ..domain.memberships import plausible_id
from ..domain.tokens import RefreshRejected
from ..domain.upstream_sessions import record_logout
from ..storage.db import utcnow
from ..storage.models import Client, SeenJti, TokenFamily
from ..upstream.oidc import UpstreamUnavailable
from .units import unit_of_work

log = logging.getLogger(__name__)

__all__ = ["Admitted", "IssuedTokens", "Presented", "Redeemed", "TokenInfo", "TokenService"]


@dataclass(frozen=True)
class Admitted:
    """An exchange request that passed :meth:`TokenService.admit`."""

    identity: object
    tenant_id: str
    candidate: str | None  # the normalized access code, if one was given
    reason: str | None


@dataclass(frozen=True)
class Presented:
    """A refresh token that :meth:`TokenService.present_refresh_token` found, of the
    presenting client."""

    refresh_token: str
    client_id: str
    subject: str
    #: RFC 9449: the DPoP key the token's family is bound to (None: not bound).
    dpop_jkt: str | None = None


@dataclass(frozen=True)
class TokenInfo:
    """A presented token as introspection and revocation see it."""

    kind: str           # access_token | refresh_token
    client_id: str
    active: bool
    data: dict          # the claims (access token) or what introspection tells of it
    sid: str | None


@dataclass(frozen=True)
class Redeemed:
    """A code redeemed on the advisor's page: the new membership and its tenant."""

    membership_id: str
    tenant_id: str
    tenant_name: str


class TokenService:
    """The token use cases over one :class:`~idp_bridge.storage.db.Database`.

    ``policy`` is the domain's :class:`~idp_bridge.domain.exchange.AdvisorExchange`,
    ``accounts`` the optional upstream account checker (``check_account(subject)`` ->
    ``active``/``disabled``/``deleted``, may raise ``UpstreamUnavailable``), and
    ``app_client_id``/``default_audience`` what :meth:`open_tenant` mints for.
    """

    def __init__(self, *, db, policy, issuer, memberships, accounts=None,
                 app_client_id: str | None = None, default_audience: str | None = None,
                 sign_ins=None):
        self.db = db
        #: Records who signed in (:class:`~idp_bridge.services.directory.SignIns`).
        self.sign_ins = sign_ins
        self.policy = policy
        self.issuer = issuer
        self.memberships = memberships
        self.revocations = memberships.revocations
        self.accounts = accounts
        self.app_client_id = app_client_id
        self.default_audience = default_audience

    # --- clients (Authlib's query_client) ---
    def find_client(self, client_id: str):
        """The registered client ``client_id`` (its id, secret hash, auth method, JWK set,
        roles), or None when unknown or disabled. One prepared statement: the token
        endpoint caches the answer for a few seconds."""
        with self.db.read() as session:
            row = session.connection().execute(_CLIENT_LOOKUP, {"client_id": client_id}).first()
        return None if row is None or row.disabled_at is not None else row

    # --- the token endpoint ---
    def admit(self, *, identity, tenant_id: str, access_code: str | None,
              reason: str | None) -> Admitted:
        """The checks of an exchange that need no storage and no network (role, MFA,
        reason, code format, tenant id): the token endpoint runs them while validating the
        request (``validate_token_request``)."""
        reason, candidate = self.policy.admit(identity, reason, access_code)
        if not plausible_id(tenant_id):
            raise NotFound("unknown tenant", code="unknown_tenant")
        return Admitted(identity, tenant_id, candidate, reason)

    def issue(self, admitted: Admitted, *, client_id: str, scope: list[str] | None,
              audience: str, dpop_jkt: str | None = None) -> IssuedTokens:
        """The exchange of a request that passed :meth:`admit`: the upstream account check,
        then one unit of work (tenant, membership or first redemption, scope, family,
        refresh token, audit), then the access token signed after the commit. With
        ``dpop_jkt`` (RFC 9449) the family and the access token are bound to that key."""
        identity = admitted.identity
        self._check_account(identity.subject)
        signing_key = self.issuer.signing_key()
        now = utcnow()
        with self._unit_of_work() as session:
            self._seen(session, identity, now)
            pending, failure = self.policy.issue(
                session, identity=identity, client_id=client_id, tenant_id=admitted.tenant_id,
                candidate=admitted.candidate, reason=admitted.reason, scope=scope,
                audience=audience, now=now, dpop_jkt=dpop_jkt)
        if failure is not None:
            raise failure
        return self._sign(pending, signing_key, dpop_jkt)

    def exchange(self, *, identity, client_id: str, tenant_id: str, access_code: str | None,
                 scope: list[str] | None, audience: str, reason: str | None) -> IssuedTokens:
        """RFC 8693 for an advisor (:meth:`admit` then :meth:`issue`): tokens for
        ``tenant_id``, joining it first when ``access_code`` is given and the advisor is
        not a member. ``identity`` is the validated subject token
        (:class:`~idp_bridge.upstream.identity.UpstreamIdentity`), ``scope`` a parsed list
        (None: everything the membership grants)."""
        admitted = self.admit(identity=identity, tenant_id=tenant_id, access_code=access_code,
                              reason=reason)
        return self.issue(admitted, client_id=client_id, scope=scope, audience=audience)

    def present_refresh_token(self, *, refresh_token: str, client_id: str) -> Presented:
        """Look a presented refresh token up (a read): unknown or malformed
        (``refresh_invalid``) and another client's (``refresh_wrong_client``) are refused
        here, without a write; the token endpoint runs this while validating."""
        with self.db.read() as session:
            owner = self.issuer.refresh_token_owner(session, refresh_token)
        if owner is None:
            raise RefreshRejected("refresh_token is invalid")
        if owner.client_id != client_id:
            raise RefreshRejected("refresh_token was issued to another client",
                                  code="refresh_wrong_client")
        return Presented(refresh_token, client_id, owner.subject, owner.dpop_jkt)

    def rotate(self, presented: Presented, *, scope: list[str] | None,
               dpop_jkt: str | None = None) -> IssuedTokens:
        """The refresh of a token that passed :meth:`present_refresh_token`: the upstream account
        check, then the rotation in one unit of work, then the access token signed after
        the commit (bound to the DPoP key ``dpop_jkt`` when the request had a proof; the
        token endpoint has checked it is the family's key). A replayed refresh token revokes
        its family (committed) and is refused with ``refresh_reused``."""
        self._check_account(presented.subject)
        signing_key = self.issuer.signing_key()
        now = utcnow()
        with self.db.transaction() as session:
            pending, failure = self.policy.refresh(
                session, refresh_token=presented.refresh_token, client_id=presented.client_id,
                scope=scope, now=now)
        if failure is not None:
            raise failure
        return self._sign(pending, signing_key, dpop_jkt)

    def refresh(self, *, refresh_token: str, client_id: str,
                scope: list[str] | None) -> IssuedTokens:
        """RFC 6749 section 6 with rotation (:meth:`present_refresh_token` then
        :meth:`rotate`): a new refresh token and access token of the same family; ``scope``
        may narrow this one token."""
        presented = self.present_refresh_token(refresh_token=refresh_token, client_id=client_id)
        return self.rotate(presented, scope=scope)

    def inspect(self, token: str, hint: str | None) -> TokenInfo | None:
        """What introspection (RFC 7662) and revocation (RFC 7009) know of a presented
        access token (a JWT of ours that verifies) or refresh token, following ``hint``
        first; None if it is neither."""
        order = ("refresh_token", "access_token") if hint == "refresh_token" else (
            "access_token", "refresh_token")
        now = utcnow()
        for kind in order:
            if kind == "access_token":
                claims = self.issuer.read_access_token(token)
                if claims is None:
                    continue
                with self.db.read() as session:
                    active = self.issuer.check_active(session, claims, now)
                return TokenInfo("access_token", claims.get("client_id"), active, claims,
                                 claims.get("sid"))
            with self.db.read() as session:
                found = self.issuer.refresh_token_state(session, token, now)
            if found is not None:
                return TokenInfo("refresh_token", found.data["client_id"], found.active,
                                 found.data, found.data["sid"])
        return None

    # --- the advisor's pages ---
    def redeem(self, *, identity, tenant_id: str, access_code: str | None,
               reason: str | None, via: str = "web") -> Redeemed:
        """Join ``tenant_id`` with its access code without minting tokens (the advisor's
        page); same checks, guess limits and audit as a redeeming exchange (the audit's
        ``client_id`` is ``via``). ``already_member`` if the advisor has access."""
        reason, candidate = self.policy.admit(identity, reason, access_code)
        self._check_account(identity.subject)
        now = utcnow()
        with self._unit_of_work() as session:
            self._seen(session, identity, now)
            membership, tenant, failure = self.policy.join(
                session, identity=identity, tenant_id=tenant_id, candidate=candidate,
                reason=reason, via=via, now=now)
            result = None if failure is not None else \
                Redeemed(membership.id, tenant.id, tenant.name)
        if failure is not None:
            raise failure
        return result

    def open_tenant(self, *, identity, tenant_id: str) -> IssuedTokens:
        """Tokens for the configured application client (``app_client_id``, default
        audience) from a signed-in advisor's web identity, under an existing membership
        (no code): the exchange's policy, checks and audit.

        They are Bearer tokens (the page hands them over by a form post: there is no key of
        the application's to bind them to), so an application client registered with
        ``dpop_required`` is refused (``dpop_required``): it gets its tokens at the token
        endpoint, with its own proofs, instead."""
        client = self.find_client(self.app_client_id) if self.app_client_id else None
        if client is not None and client.dpop_required:
            raise Forbidden("the application requires DPoP-bound tokens, which a page cannot "
                            "hand over: open the tenant from the application itself",
                            code="dpop_required")
        return self.exchange(identity=identity, client_id=self.app_client_id,
                             tenant_id=tenant_id, access_code=None, scope=None,
                             audience=self.default_audience, reason=None)

    # --- revocation by the client and by the upstream ---
    def revoke_family(self, *, sid: str, client_id: str) -> bool:
        """RFC 7009: revoke the token family ``sid`` at the request of the (authenticated)
        client ``client_id``; the membership stays. False if it was unknown or already
        revoked (RFC 7009 answers 200 either way)."""
        now = utcnow()
        with self.db.transaction() as session:
            family = session.get(TokenFamily, sid) if plausible_id(sid) else None
            if family is None or family.revoked_at is not None:
                return False
            return self.revocations.revoke_family(session, family, reason="revoked_by_client",
                                                  actor=client_id, actor_role="client", now=now)

    def upstream_logout(self, claims: dict) -> int:
        """Back-channel logout with validated ``claims``
        (:func:`idp_bridge.upstream.backchannel.validate_logout_token`): revoke the token
        families born from the named upstream session (or subject), remember the session
        as ended, end the bridge's web sessions of it; returns the families revoked.
        A replayed ``jti`` is refused (``logout_token_replayed``), changing nothing."""
        now = utcnow()
        try:
            with self.db.transaction() as session:
                families = record_logout(session, claims, now)
                for row in families:
                    self.revocations.revoke_family(session, row, reason="upstream_logout",
                                                   actor=row.subject, actor_role="upstream",
                                                   now=now)
        except IntegrityError:  # a concurrent delivery of the same logout token
            raise InvalidInput("logout_token was already used (jti)",
                               code="logout_token_replayed") from None
        log.info("back-channel logout: %d token families revoked", len(families))
        return len(families)

    # --- client authentication ---
    def remember_assertion(self, key: str, until) -> bool:
        """Record the id of a client assertion (RFC 7523 section 3: an assertion is used
        once) until it could no longer be presented; False if it was seen already (also
        when a concurrent request recorded it first)."""
        try:
            with self.db.transaction() as session:
                if session.get(SeenJti, key) is not None:
                    return False
                session.add(SeenJti(key=key, expires_at=until))
        except IntegrityError:
            return False
        return True

    # --- helpers ---
    def _seen(self, session, identity, now) -> None:
        if self.sign_ins is not None:
            self.sign_ins.seen(session, identity, now)

    def _unit_of_work(self):
        """``db.transaction()`` where the one expected constraint violation — two
        concurrent first redemptions by one advisor meeting the unique active membership —
        becomes a :class:`Conflict` (``concurrent_change``): no SQLAlchemy error leaves."""
        return unit_of_work(self.db)

    def _check_account(self, subject: str | None) -> None:
        """With an upstream account checker: a disabled or deleted account ends every
        membership of the advisor and gets nothing. The network call runs before any
        transaction; an unanswerable check refuses (``upstream_unavailable``)."""
        if self.accounts is None or subject is None:
            return
        try:
            state = self.accounts.check_account(subject)
        except UpstreamUnavailable as exc:
            raise Unavailable(str(exc), code="upstream_unavailable") from None
        if state != "active":
            with self.db.transaction() as session:
                self.memberships.end_all_of_advisor(session, subject,
                                                    reason="upstream_account_ended", now=utcnow())
            raise Forbidden(f"the advisor's account is {state} at the identity provider",
                            code="account_inactive")

    def _sign(self, pending: PendingTokens, signing_key,
              dpop_jkt: str | None = None) -> IssuedTokens:
        """The access token of committed ``pending`` tokens (see the module docstring for
        what a failure here leaves), bound to the DPoP key ``dpop_jkt`` if given."""
        try:
            access = self.issuer.mint_access_token(pending.family, pending.membership_kind,
                                                   signing_key=signing_key, dpop_jkt=dpop_jkt)
        except Exception:
            self._close_unsigned(pending)
            raise
        return IssuedTokens(access.token, access.expires_in, pending.family.scope,
                            pending.refresh_token, pending.family.membership_id,
                            pending.family.grant_id, pending.family.sid, dpop_jkt)

    def _close_unsigned(self, pending: PendingTokens) -> None:
        try:
            with self.db.transaction() as session:
                self.revocations.revoke_family(session, pending.family, reason="issuance_failed",
                                               actor="system", actor_role="system", now=utcnow())
        except Exception:
            log.exception("could not revoke a token family whose access token was not signed")


_CLIENT_LOOKUP = select(
    Client.client_id, Client.secret_hash, Client.auth_method, Client.jwks, Client.roles,
    Client.disabled_at, Client.dpop_required,
).where(Client.client_id == bindparam("client_id"))
