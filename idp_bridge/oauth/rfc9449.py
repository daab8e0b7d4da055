"""OAuth 2.0 Demonstrating Proof of Possession (RFC 9449) at the token endpoint.

A token request (exchange or refresh) may carry one ``DPoP`` proof (section 5); the proof is
checked by the same code the resource servers run (:class:`scopes.guard.dpop.ProofVerifier`,
section 4.3), against the token endpoint's URL *from the configured issuer* (``htu``; the
``Host`` header is never trusted), with its ``jti`` remembered in the database (the
``seen_jtis`` table the client assertions use), so that every bridge process refuses a
replay. With a proof, the access token is bound to its key (``cnf.jkt``, section 6) and
answered as ``token_type: DPoP``; the token family (and so its refresh tokens) is bound at
the exchange, and a refresh of a bound family needs a proof of the same key (section 5,
item "refresh tokens ... bound").

Server nonces (section 8), when required (``dpop_nonce_required``): stateless HMACs of a
time slot (:class:`~scopes.guard.dpop.NonceSource`), so any bridge process accepts any
other's; a proof without the current (or previous) nonce is answered ``400 use_dpop_nonce``
with the nonce in ``DPoP-Nonce``, and every token response carries the current one.

A client registered with ``dpop_required`` (``idp-bridge clients add --dpop-required``), or
every client under ``profile = "fapi2"``, must send a proof: ``invalid_dpop_proof``
otherwise.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

from scopes.guard.dpop import DPoPError, DPoPNonceRequired, NonceSource, Proof, ProofVerifier

from ..storage.db import StorageUnavailable
from .errors import InvalidDPoPProofError, TemporarilyUnavailableError, UseDPoPNonceError

__all__ = ["TokenEndpointDPoP"]


class _SeenProofs:
    """The proofs' ``jti`` values, in the database (shared by every process)."""

    def __init__(self, tokens, lifetime: float):
        self.tokens = tokens
        self.lifetime = lifetime

    def remember(self, jkt: str, jti: str, now: float) -> bool:
        # Structured, never joined: (kind, key thumbprint, jti) as a JSON array.
        key = hashlib.sha256(json.dumps(["dpop-proof", jkt, jti]).encode()).hexdigest()
        until = datetime.fromtimestamp(now + self.lifetime, timezone.utc)
        try:
            return self.tokens.remember_assertion(key, until)
        except StorageUnavailable:
            raise TemporarilyUnavailableError(description="the database is unreachable") from None


class TokenEndpointDPoP:
    """The token endpoint's DPoP checks (module docstring)."""

    def __init__(self, *, issuer: str, tokens, algorithms, nonce_secret: bytes | None,
                 nonce_required: bool, required_for_all: bool, max_age: float = 60.0,
                 leeway: float = 10.0):
        self.htu = issuer.rstrip("/") + "/token"
        self.algorithms = tuple(algorithms)
        self.required_for_all = required_for_all
        self.nonces = NonceSource(nonce_secret) if nonce_secret is not None else None
        self.verifier = ProofVerifier(
            self.algorithms, replay=_SeenProofs(tokens, max_age + leeway), max_age=max_age,
            leeway=leeway, nonces=self.nonces, nonce_required=nonce_required)

    def proof_of(self, request, client) -> Proof | None:
        """The verified proof of a token request by (authenticated) ``client``, or None when
        it sent none and may do so. Raises ``invalid_dpop_proof`` / ``use_dpop_nonce``."""
        headers = request.headers
        values = headers.getlist("DPoP") if hasattr(headers, "getlist") else (
            [headers["DPoP"]] if "DPoP" in headers else [])
        if not values:
            if self.required_for_all or getattr(client, "dpop_required", False):
                raise InvalidDPoPProofError(
                    description="this client must send a DPoP proof with its token requests")
            return None
        try:
            return self.verifier.verify(values, method=request.method, url=self.htu)
        except DPoPNonceRequired as exc:
            raise UseDPoPNonceError(description=exc.description, nonce=exc.nonce) from None
        except DPoPError as exc:
            raise InvalidDPoPProofError(description=exc.description) from None

    def response_headers(self) -> list[tuple[str, str]]:
        """Headers of a successful token response: the current nonce, when nonces are on
        (section 8.2: the client uses it for its next proof)."""
        return [("DPoP-Nonce", self.nonces.current())] if self.nonces is not None else []
