"""Operator use cases shared by the CLI, the demo and the tests: tenants, clients, signing
keys, the expiry sweep. Each opens its own unit of work; the CLI calls nothing below them."""

from __future__ import annotations

import secrets

from ..domain.errors import Conflict, InvalidInput
from ..oauth.models import hash_secret
from ..storage.db import utcnow
from ..storage.models import Client, Tenant

CLIENT_ROLES = ("exchange", "introspect", "receiver")
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt")


def add_tenant(db, tenant_id: str, name: str) -> None:
    if not tenant_id or len(tenant_id) > 64 or not tenant_id.replace("-", "").isalnum():
        raise InvalidInput("tenant ids are 1-64 letters, digits or dashes")
    with db.transaction() as session:
        if session.get(Tenant, tenant_id) is not None:
            raise Conflict(f"tenant {tenant_id} exists")
        session.add(Tenant(id=tenant_id, name=name, created_at=utcnow()))


def add_client(db, client_id: str, *, name: str | None = None, secret: str | None = None,
               roles=("exchange",), auth_method: str = "client_secret_basic",
               jwks: dict | None = None, dpop_required: bool = False) -> str | None:
    """Register a client; returns the secret (generated when not given) for secret methods.
    ``dpop_required``: its token requests must carry a DPoP proof (RFC 9449)."""
    roles = tuple(roles)
    bad = [r for r in roles if r not in CLIENT_ROLES]
    if bad or not roles:
        raise InvalidInput(f"client roles are {', '.join(CLIENT_ROLES)}")
    if auth_method not in AUTH_METHODS:
        raise InvalidInput(f"auth methods are {', '.join(AUTH_METHODS)}")
    if auth_method == "private_key_jwt":
        if not jwks or not jwks.get("keys"):
            raise InvalidInput("private_key_jwt needs the client's public keys (a JWK set)")
        if any("d" in key for key in jwks["keys"]):
            raise InvalidInput("the JWK set contains a private key; register public keys only")
        secret = None
    else:
        secret = secret or secrets.token_urlsafe(32)
        if len(secret) < 32:
            raise InvalidInput("client secrets must have at least 32 characters")
    with db.transaction() as session:
        if session.get(Client, client_id) is not None:
            raise Conflict(f"client {client_id} exists")
        session.add(Client(client_id=client_id, name=name or client_id,
                           secret_hash=hash_secret(secret) if secret else None,
                           auth_method=auth_method, jwks=jwks, roles=" ".join(roles),
                           created_at=utcnow(), disabled_at=None,
                           dpop_required=dpop_required))
    return secret


def rotate_signing_key(db, keyring, alg: str | None = None) -> str:
    """Create a new signing key (the old one stays published until its tokens expired);
    returns its ``kid``."""
    with db.transaction() as session:
        return keyring.create(session, utcnow(), alg)


def expire_memberships(db, memberships) -> int:
    """End every temporary membership past its maximum age, through the revocation path
    (feed event, audit, mirror and notification outboxes); returns how many ended."""
    with db.transaction() as session:
        return memberships.expire_due(session, utcnow())
