"""The keys that sign the feed's Security Event Tokens, apart from the access-token keys.

One key ring per algorithm (:class:`~idp_bridge.domain.keys.KeyRing` with purpose
``set:RS256``, a 2048-bit RSA key as the CAEP interoperability profile 2.7 requires, and
``set:ES256``), published together at ``/ssf/jwks``, the ``jwks_uri`` of the transmitter
configuration. ``/jwks`` (access tokens) never lists them: a key that signs SETs can never
verify an access token, and the other way round.

A ring's first key is made when the first SET of its algorithm is signed or the JWK set is
first asked for. SET keys are the transmitter's
own business: when the configured key-encryption key does not open the active one (after
``idp-bridge keys rotate --recover``), a new one is made, and receivers refetch the JWK set
for its unknown ``kid``.
"""

from __future__ import annotations

from ..domain.keys import KeyDecryptionFailed, KeyRing
from ..storage.db import utcnow

#: SET signing algorithms a stream may choose; the first is the default of new streams.
ALGORITHMS = ("RS256", "ES256")
DEFAULT_ALGORITHM = "RS256"


class SetKeys:
    def __init__(self, db, key_encryption_key: str, *, lifetime_seconds: int):
        self._db = db
        self._rings = {alg: KeyRing(db, key_encryption_key, alg, lifetime_seconds,
                                    purpose=f"set:{alg}") for alg in ALGORITHMS}

    def ensure(self, session, now) -> None:
        """Make the current key of each algorithm if missing (``serve`` and ``demo`` call it
        once before any worker starts, so that no request writes a key)."""
        for ring in self._rings.values():
            ring.ensure(session, now)

    def ring(self, alg: str) -> "_EnsuredRing":
        return _EnsuredRing(self._db, self._rings[alg])

    def jwks(self) -> dict:
        """Every SET key still verifying something; the current key of each algorithm is
        made here if no SET made it yet (the jwks_uri always provides it, SSF 7.1)."""
        keys = []
        for alg in ALGORITHMS:
            self.ring(alg).signing_key()
            keys.extend(self._rings[alg].jwks()["keys"])
        return {"keys": keys}

    def verification_key(self, kid: str):
        for ring in self._rings.values():
            key = ring.verification_key(kid)
            if key is not None:
                return key
        return None


class _EnsuredRing:
    """The ``signing_key()`` that :func:`~.rfc8417.sign_set` asks for, making the ring's key
    first when it has none (or none this bridge can open)."""

    def __init__(self, db, ring: KeyRing):
        self._db = db
        self._ring = ring

    def signing_key(self):
        try:
            return self._ring.signing_key()
        except (RuntimeError, KeyDecryptionFailed) as exc:
            recover = isinstance(exc, KeyDecryptionFailed)
        with self._db.transaction() as session:
            if recover:
                self._ring.create(session, utcnow())
            else:
                self._ring.ensure(session, utcnow())
        self._ring.invalidate()
        return self._ring.signing_key()


__all__ = ["ALGORITHMS", "DEFAULT_ALGORITHM", "SetKeys"]
