"""Our tokens (DESIGN.md section 5).

Access tokens are RFC 9068 JWTs (``typ: at+jwt``) signed with the active key, bound to a
DPoP key by ``cnf.jkt`` when the request had a proof (RFC 9449). Refresh tokens are opaque,
high-entropy, stored as SHA-256 and rotate on every use (not under ``profile = "fapi2"``,
where they are bound to the family's DPoP key instead): presenting a rotated one again
revokes its whole token family (``sid``), not the membership (the revocation itself is
:mod:`idp_bridge.domain.revocation`'s). An access token is active while it
verifies, has not expired, its family lives and its membership lives.

Signing is kept out of database transactions: :meth:`TokenIssuer.signing_key` is taken
before, :meth:`TokenIssuer.mint_access_token` runs after the commit, from committed values.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar

from joserfc import jwt
from joserfc.errors import JoseError
from sqlalchemy import bindparam, insert, select, update

from scopes.guard.jws import sign_compact, signing_header

from ..storage.models import Membership, RefreshToken, TokenFamily
from ..storage.plain import Plain
from .errors import DomainError


@functools.lru_cache(maxsize=16)
def _header_segment(alg: str, kid: str) -> str:
    """The protected header of our access tokens under key ``kid`` (RFC 9068: at+jwt)."""
    return signing_header(alg, kid, "at+jwt")


def _private_key(key):
    """The ``cryptography`` key inside a joserfc key (signing goes around joserfc's generic
    path: scopes/guard/jws.py)."""
    return key.private_key


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Family:
    """What a token of a family carries (a row of ``token_families``, minus bookkeeping)."""

    FIELDS: ClassVar[tuple[str, ...]] = (
        "sid", "membership_id", "grant_id", "client_id", "subject", "tenant_id", "scope",
        "audience", "auth_time", "acr", "amr", "dpop_jkt")

    sid: str
    membership_id: str
    grant_id: str
    client_id: str
    subject: str
    tenant_id: str
    scope: str
    audience: str
    auth_time: int | None
    acr: str | None
    amr: list | None
    #: RFC 9449: the thumbprint of the DPoP key the family is bound to (None: not bound).
    dpop_jkt: str | None = None


class RefreshRejected(DomainError):
    """A refresh token that gives nothing: unknown, another client's, expired, of an ended
    membership or a revoked family (``code`` says which)."""

    kind, code = "refused", "refresh_invalid"


class RefreshReused(RefreshRejected):
    """A rotated refresh token presented again: the caller revokes ``family``
    (:meth:`idp_bridge.domain.revocation.Revocations.revoke_family`) and commits."""

    code = "refresh_reused"

    def __init__(self, description: str, *, family: "Family"):
        super().__init__(description)
        self.family = family


@dataclass(frozen=True)
class IssuedAccessToken:
    token: str
    expires_in: int
    jti: str


class TokenIssuer:
    def __init__(self, keyring, *, issuer: str, access_lifetime: int, refresh_lifetime: int):
        self.keyring = keyring
        self.issuer = issuer
        self.access_lifetime = access_lifetime
        self.refresh_lifetime = refresh_lifetime

    # --- access tokens ---
    def signing_key(self):
        """(kid, alg, key) to sign with; taken before a transaction (it may read keys)."""
        return self.keyring.signing_key()

    def mint_access_token(self, family, membership_kind: str, *, signing_key=None,
                          dpop_jkt: str | None = None) -> IssuedAccessToken:
        """Sign an access token of ``family`` (pure: no storage), with ``signing_key`` from
        :meth:`signing_key` or else the active key; bound to the DPoP key whose thumbprint
        is ``dpop_jkt`` (RFC 9449 section 6: ``cnf.jkt``) when given."""
        kid, alg, key = signing_key or self.keyring.signing_key()
        now = int(time.time())
        jti = secrets.token_urlsafe(16)
        claims = {
            "iss": self.issuer,
            "sub": family.subject,
            "aud": family.audience,
            "client_id": family.client_id,
            "tenant": family.tenant_id,
            "scope": family.scope,
            "grant_id": family.grant_id,
            "sid": family.sid,
            "membership": membership_kind,
            "jti": jti,
            "iat": now,
            "exp": now + self.access_lifetime,
        }
        if family.auth_time is not None:
            claims["auth_time"] = family.auth_time
        if family.acr is not None:
            claims["acr"] = family.acr
        if family.amr:
            claims["amr"] = list(family.amr)
        if dpop_jkt is not None:
            claims["cnf"] = {"jkt": dpop_jkt}
        token = sign_compact(_header_segment(alg, kid), claims, alg, _private_key(key))
        return IssuedAccessToken(token=token, expires_in=self.access_lifetime, jti=jti)

    def read_access_token(self, token: str) -> dict | None:
        """Claims of one of our access tokens if it verifies and has not expired, else None."""
        claims = verify_own_jwt(self.keyring, token, max_length=8192)
        if claims is None:
            return None
        if claims.get("iss") != self.issuer or claims.get("exp", 0) <= time.time():
            return None
        return claims

    # --- families and refresh tokens ---
    # The hot path (exchange, refresh) runs Core statements on the driver's cursor
    # (storage/plain.py): the ORM's unit of work, and even Core's execution machinery, cost
    # several times the database work itself (DESIGN.md section 11).
    def new_family(self, session, membership, *, client_id: str, identity, scope: str,
                   audience: str, now: datetime, dpop_jkt: str | None = None) -> Family:
        """A new token family; ``dpop_jkt`` binds it (its refresh tokens) to a DPoP key."""
        family = Family(
            sid=str(uuid.uuid4()), membership_id=membership.id, grant_id=membership.grant_id,
            client_id=client_id, subject=membership.advisor_subject,
            tenant_id=membership.tenant_id, scope=scope, audience=audience,
            auth_time=identity.auth_time, acr=identity.acr, amr=identity.amr or None,
            dpop_jkt=dpop_jkt)
        values = {name: getattr(family, name) for name in Family.FIELDS}
        values.update(upstream_issuer=identity.issuer, upstream_sid=identity.session_id,
                      created_at=now, revoked_at=None, revoke_reason=None)
        _INSERT_FAMILY.run(session, values)
        return family

    def issue_refresh_token(self, session, family: Family, now: datetime) -> str:
        token = secrets.token_urlsafe(32)
        _INSERT_REFRESH.run(session, {
            "token_hash": hash_token(token), "sid": family.sid, "created_at": now,
            "expires_at": now + timedelta(seconds=self.refresh_lifetime), "rotated_at": None})
        return token

    def use_refresh_token(self, session, token: str, client_id: str, now: datetime, *,
                          rotate: bool = True):
        """Rotate ``token``: return (family, membership row) or raise :class:`RefreshRejected`
        (:class:`RefreshReused` for a replay).

        The rotation is a conditional update, so of two concurrent uses exactly one wins
        and the other is treated as replay. The caller commits even when this raises: a
        detected replay must revoke the family durably. With ``rotate=False`` (the fapi2
        profile: the token is bound to a DPoP key instead) the token stays usable until it
        expires, and a rotated one of an earlier rotating run is still refused.
        """
        if not token or len(token) > 512:
            raise RefreshRejected("refresh_token is invalid")
        token_hash = hash_token(token)
        row = _REFRESH_LOOKUP.first(session, {"token_hash": token_hash})
        if row is None:
            raise RefreshRejected("refresh_token is invalid")
        family = Family(**{name: getattr(row, name) for name in Family.FIELDS})
        if family.client_id != client_id:
            raise RefreshRejected("refresh_token was issued to another client",
                                  code="refresh_wrong_client")
        if rotate:
            won = _ROTATE_REFRESH.run(session, {"hash": token_hash, "now": now}) == 1
        else:
            won = row.rotated_at is None
        if not won:
            raise RefreshReused("refresh_token was already used; its token family is revoked",
                                family=family)
        if row.expires_at <= now:
            raise RefreshRejected("refresh_token has expired", code="refresh_expired")
        if row.ended_at is not None:
            raise RefreshRejected("the membership of this refresh_token has ended",
                                  code="membership_ended")
        if row.revoked_at is not None:
            raise RefreshRejected("the token family of this refresh_token is revoked",
                                  code="family_revoked")
        return family, row

    # --- introspection ---
    def check_active(self, session, claims: dict, now: datetime) -> bool:
        """Whether the grant and family of verified ``claims`` still live."""
        row = session.execute(
            select(TokenFamily.revoked_at, Membership.ended_at, Membership.expires_at)
            .join(Membership, Membership.id == TokenFamily.membership_id)
            .where(TokenFamily.sid == claims.get("sid"),
                   Membership.grant_id == claims.get("grant_id"))
        ).first()
        if row is None:
            return False
        revoked_at, ended_at, expires_at = row
        return revoked_at is None and ended_at is None and (expires_at is None or expires_at > now)

    def find_refresh_family(self, session, token: str) -> TokenFamily | None:
        row = session.get(RefreshToken, hash_token(token)) if token and len(token) <= 512 else None
        return session.get(TokenFamily, row.sid) if row is not None else None

    def refresh_token_owner(self, session, token: str):
        """(client_id, subject, dpop_jkt) of the family of a presented refresh token, or
        None: the token endpoint's first look, one prepared statement (no ORM)."""
        if not token or len(token) > 512:
            return None
        return _REFRESH_OWNER.first(session, {"token_hash": hash_token(token)})

    def refresh_token_state(self, session, token: str, now: datetime) -> "RefreshTokenState | None":
        """Whether a presented refresh token is active (not rotated, not expired, its family
        and grant live) and what introspection tells of it; None if it is not ours."""
        row = session.get(RefreshToken, hash_token(token)) if token and len(token) <= 512 else None
        family = session.get(TokenFamily, row.sid) if row is not None else None
        if family is None:
            return None
        claims = {"sid": family.sid, "grant_id": family.grant_id}
        active = (row.rotated_at is None and row.expires_at > now
                  and self.check_active(session, claims, now))
        data = {
            "client_id": family.client_id, "sub": family.subject, "scope": family.scope,
            "tenant": family.tenant_id, "grant_id": family.grant_id, "sid": family.sid,
            "exp": int(row.expires_at.timestamp()), "iat": int(row.created_at.timestamp()),
            "iss": self.issuer,
        }
        if family.dpop_jkt:
            data["cnf"] = {"jkt": family.dpop_jkt}
        return RefreshTokenState(active, data)


@dataclass(frozen=True)
class RefreshTokenState:
    active: bool
    data: dict


_REFRESH_LOOKUP = Plain(
    select(RefreshToken.expires_at, RefreshToken.rotated_at,
           *[getattr(TokenFamily, name) for name in Family.FIELDS],
           TokenFamily.revoked_at, Membership.ended_at, Membership.expires_at.label("membership_expires_at"),
           Membership.kind, Membership.group_id, Membership.last_token_at)
    .join(TokenFamily, TokenFamily.sid == RefreshToken.sid)
    .join(Membership, Membership.id == TokenFamily.membership_id)
    .where(RefreshToken.token_hash == bindparam("token_hash"))
)

_REFRESH_OWNER = Plain(
    select(TokenFamily.client_id, TokenFamily.subject, TokenFamily.dpop_jkt)
    .join(RefreshToken, RefreshToken.sid == TokenFamily.sid)
    .where(RefreshToken.token_hash == bindparam("token_hash"))
)

_INSERT_FAMILY = Plain(insert(TokenFamily.__table__))
_INSERT_REFRESH = Plain(insert(RefreshToken.__table__))
_ROTATE_REFRESH = Plain(
    update(RefreshToken.__table__)
    .where(RefreshToken.token_hash == bindparam("hash"), RefreshToken.rotated_at.is_(None))
    .values(rotated_at=bindparam("now"))
)


def verify_own_jwt(keyring, token, *, max_length: int) -> dict | None:
    """The claims of a JWT access token (``typ: at+jwt``) that one of ``keyring``'s keys
    signed, else None: the one signature check of the bridge's own tokens (access tokens,
    the feed's management tokens). Only our asymmetric algorithms: never "none", never HMAC
    with a public key. The caller checks issuer, audience and lifetime."""
    if not isinstance(token, str) or not token or len(token) > max_length \
            or token.count(".") != 2:
        return None
    try:
        from joserfc import jws

        header = jws.extract_compact(token.encode()).protected
        if header.get("typ") != "at+jwt" or header.get("alg") not in ("ES256", "RS256"):
            return None
        key = keyring.verification_key(header.get("kid", ""))
        if key is None:
            return None
        return jwt.decode(token, key, algorithms=[header["alg"]]).claims
    except (JoseError, ValueError, KeyError, TypeError):
        return None
