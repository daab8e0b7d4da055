"""Our signing keys: generation, encryption at rest, rotation and the published JWK set.

Rotation without downtime (DESIGN.md section 5): a new key signs from the moment it is
created; the previous key stays in the JWK set until every token it signed has expired.
Each process caches the keys and re-reads them at most every ``refresh_seconds``, so a
rotation done by one process (or the CLI) reaches the others promptly.

Each key has a ``purpose`` and every purpose is a ring of its own: ``token`` signs access
tokens (published at /jwks); the revocation feed signs its Security Event Tokens with
``set:RS256`` (a 2048-bit RSA key, CAEP interoperability profile) or ``set:ES256`` keys,
published at /ssf/jwks only, so that no SET key can ever verify an access token and no
access-token key a SET.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from datetime import datetime, timedelta

from cryptography.fernet import Fernet, InvalidToken
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import select, text

from ..storage.models import SigningKey


class KeyDecryptionFailed(RuntimeError):
    """The key-encryption key does not open the stored signing keys."""


def generate_key(alg: str):
    if alg == "ES256":
        return ECKey.generate_key("P-256", private=True)
    if alg == "RS256":
        return RSAKey.generate_key(2048, private=True)
    raise ValueError(f"unsupported signing algorithm {alg}")


class KeyRing:
    def __init__(self, db, key_encryption_key: str, alg: str, token_lifetime: int,
                 refresh_seconds: float = 10.0, purpose: str = "token"):
        self._db = db
        self.purpose = purpose
        self._fernet = Fernet(key_encryption_key.encode())
        self.alg = alg
        self.token_lifetime = token_lifetime
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._loaded_at = 0.0
        self._active = None  # (kid, joserfc key)
        self._public: dict = {"keys": []}
        self._verify_keys: dict = {}

    # --- storage ---
    def create(self, session, now: datetime, alg: str | None = None) -> str:
        """Make a new key the active one and retire the current one."""
        alg = alg or self.alg
        key = generate_key(alg)
        kid = uuid.uuid4().hex[:16]
        pem = key.as_pem(private=True)
        public = key.as_dict(private=False)
        public.update(kid=kid, alg=alg, use="sig")
        for row in session.scalars(select(SigningKey).where(
                SigningKey.retired_at.is_(None), SigningKey.purpose == self.purpose)):
            row.retired_at = now
        session.add(SigningKey(kid=kid, alg=alg, private_key=self._fernet.encrypt(pem),
                               public_jwk=public, created_at=now, retired_at=None,
                               purpose=self.purpose))
        session.flush()
        self._loaded_at = 0.0
        return kid

    def ensure(self, session, now: datetime) -> None:
        """Create a first key if there is none. Processes starting at once take turns (on
        PostgreSQL a transaction-level advisory lock per purpose; SQLite's write
        transactions are serial anyway): two first keys would leave a process publishing a
        key set without the key another one signs with."""
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                            {"key": _advisory_key(self.purpose)})
        if session.scalars(select(SigningKey.kid).where(
                SigningKey.retired_at.is_(None), SigningKey.purpose == self.purpose)).first() is None:
            self.create(session, now)

    def _load(self) -> None:
        from ..storage.db import utcnow

        now = utcnow()
        # Keys retired longer ago than a token lifetime (plus margin) signed nothing alive.
        horizon = now - timedelta(seconds=self.token_lifetime + 300)
        with self._db.read() as session:
            rows = session.scalars(
                select(SigningKey).where(
                    (SigningKey.retired_at.is_(None)) | (SigningKey.retired_at > horizon),
                    SigningKey.purpose == self.purpose,
                ).order_by(SigningKey.created_at)
            ).all()
        active = None
        public, verify = [], {}
        for row in rows:
            public.append(dict(row.public_jwk))
            verify[row.kid] = _import_public(row.public_jwk)
            if row.retired_at is None:
                active = row
        if active is not None:
            if self._active is None or self._active[0] != active.kid:
                try:
                    pem = self._fernet.decrypt(active.private_key)
                except InvalidToken:
                    raise KeyDecryptionFailed(
                        "IDP_BRIDGE_KEY_ENCRYPTION_KEY does not decrypt the stored signing keys"
                    ) from None
                key = _import_private(pem, active.alg)
                self._active = (active.kid, active.alg, key)
        else:
            self._active = None
        self._public = {"keys": public}
        self._verify_keys = verify
        self._loaded_at = time.monotonic()

    def _fresh(self) -> None:
        if time.monotonic() - self._loaded_at > self.refresh_seconds:
            with self._lock:
                if time.monotonic() - self._loaded_at > self.refresh_seconds:
                    self._load()

    # --- use ---
    def signing_key(self):
        """(kid, alg, key) of the active key."""
        self._fresh()
        if self._active is None:
            raise RuntimeError("no active signing key; run: idp-bridge keys rotate")
        return self._active

    def verification_key(self, kid: str):
        self._fresh()
        key = self._verify_keys.get(kid)
        if key is None and time.monotonic() - self._loaded_at > 1.0:
            with self._lock:
                self._load()
            key = self._verify_keys.get(kid)
        return key

    def jwks(self) -> dict:
        self._fresh()
        return self._public

    def invalidate(self) -> None:
        self._loaded_at = 0.0

    def check(self) -> None:
        """Read the keys now: KeyDecryptionFailed when the key-encryption key does not open
        the active signing key (start-up checks of the CLI, ``idp-bridge doctor``). Without
        any key there is nothing to open: the first one is made with this key."""
        with self._lock:
            self._load()


def _advisory_key(purpose: str) -> int:
    """A stable signed 64-bit number for ``purpose`` (PostgreSQL advisory locks)."""
    return int.from_bytes(hashlib.sha256(f"idp-bridge signing keys {purpose}".encode())
                          .digest()[:8], "big", signed=True)


def _import_private(pem: bytes, alg: str):
    return (ECKey if alg.startswith("ES") else RSAKey).import_key(pem)


def _import_public(jwk: dict):
    return (ECKey if jwk.get("kty") == "EC" else RSAKey).import_key(dict(jwk))
