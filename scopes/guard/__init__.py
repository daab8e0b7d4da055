"""Resource-server side of idp-bridge: validate access tokens locally, learn revocations.

- Access tokens are RFC 9068 JWTs (``typ: at+jwt``); :meth:`TokenGuard.validate` checks the
  signature against the issuer's JWKS (found by RFC 8414 discovery), ``iss``, ``aud``,
  ``exp``/``nbf``/``iat``, the ``tenant`` and the ``scope`` (DESIGN.md sections 4 and 5).
- Errors follow RFC 6750 section 3.1: :class:`InvalidToken` (401 ``invalid_token``),
  :class:`InsufficientScope` (403 ``insufficient_scope``); :meth:`TokenGuard.require` turns
  them into responses with a ``WWW-Authenticate: Bearer`` challenge for Flask views.
- Step-up (RFC 9470): a route may require how (``acr``) and how recently (``auth_time``) the
  user authenticated: :class:`AuthenticationRequirement`, ``require(..., acr_values=,
  max_age=)``, 401 :class:`InsufficientUserAuthentication` with ``acr_values``/``max_age``.
- DPoP (RFC 9449): :meth:`TokenGuard.validate_request` accepts ``Authorization: DPoP`` with a
  proof of the key the token is bound to (``cnf.jkt``) and refuses such a token as Bearer.
- Discovery by clients (RFC 9728): :class:`ResourceMetadata` builds the protected resource
  metadata; a guard made with ``resource_metadata=`` names it in every challenge.
- Revocation (DESIGN.md section 8, docs/revocation-feed.md): a receiver of the bridge's Shared
  Signals stream, polling (RFC 8936) for CAEP ``session-revoked`` Security Event Tokens
  (RFC 8417) that name a revoked ``grant_id`` or ``sid``.

- Access records (issue 14): :meth:`TokenGuard.start_access_recording` records each request
  authorised with an advisor or guest token and ships the records to the bridge from a
  durable spool per process (:mod:`~scopes.guard.access_log`).

One job per module:

=====================  ======================================================================
``validation``         :class:`TokenGuard`: configuration and the checks of ``validate``
``jws``                compact JWS verification (ES256, RS256) with ``cryptography``
``discovery``          RFC 8414 metadata and the JWKS cache (key rotation, ``max-age``)
``revocation``         the revocation set (``grant_id`` and ``sid`` values, self-pruning)
``introspection``      the RFC 7662 fallback while the feed is unhealthy
``feed``               the SSF receiver thread (RFC 8936 poll, RFC 8417 SETs, CAEP)
``bearer``             RFC 6750: the errors, the ``Authorization`` header, the challenge
``dpop``               RFC 9449: proofs (header, key, signature, claims), replay cache, nonces
``step_up``            RFC 9470: ``acr``/``auth_time`` requirements, ``insufficient_user_authentication``
``resource_metadata``  RFC 9728: the protected resource metadata, its URL, ``resource_metadata``
``access_log``         access records of advisor requests: queue, spool, shipper (issue 14)
``metrics``            the recording's counters in the Prometheus text format (a full spool)
``flask_adapter``      ``require``, ``error_response``, the metadata routes (the only Flask import)
=====================  ======================================================================

This package imports nothing from ``idp_bridge`` and needs ``cryptography`` and ``requests``
(``pip install idp-bridge-guard``); Flask only for the adapter (``idp-bridge-guard[flask]``).
"""

from __future__ import annotations

from .access_log import ADVISOR_MEMBERSHIPS, AccessRecorder, RecordingUnavailable
from .bearer import (GuardError, InsufficientScope, InvalidDPoPProof, InvalidRequest, InvalidToken,
                     UseDPoPNonce, authorization_credentials, bearer_token)
from .feed import POLL_DELIVERY, SESSION_REVOKED, SET_TYPES
from .resource_metadata import WELL_KNOWN_PATH, ResourceMetadata
from .revocation import REVOCATION_KINDS
from .step_up import AuthenticationRequirement, InsufficientUserAuthentication
from .validation import ACCESS_TOKEN_TYPES, TokenGuard

__all__ = ["ACCESS_TOKEN_TYPES", "ADVISOR_MEMBERSHIPS", "AccessRecorder", "RecordingUnavailable",
           "POLL_DELIVERY", "REVOCATION_KINDS", "SESSION_REVOKED",
           "SET_TYPES", "WELL_KNOWN_PATH", "AuthenticationRequirement", "GuardError",
           "InsufficientScope", "InsufficientUserAuthentication", "InvalidRequest",
           "InvalidToken", "ResourceMetadata", "TokenGuard", "bearer_token",
           "InvalidDPoPProof", "UseDPoPNonce", "authorization_credentials"]
