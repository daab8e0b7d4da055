"""RFC 6750, framework-neutral: the Bearer errors, the ``Authorization`` header, the challenge.

- Errors (section 3.1): :class:`InvalidRequest` (400 ``invalid_request``),
  :class:`InvalidToken` (401 ``invalid_token``), :class:`InsufficientScope` (403
  ``insufficient_scope``), one family under :class:`GuardError`.
- :func:`bearer_token` reads the token from an ``Authorization: Bearer`` header (section 2.1;
  never from the query or the form).
- :func:`challenge` builds the ``WWW-Authenticate: Bearer`` value (section 3), or with
  ``scheme="DPoP"`` the ``DPoP`` one with its ``algs`` (RFC 9449 section 7.1).
- RFC 9449's errors: :class:`InvalidDPoPProof` (401 ``invalid_dpop_proof``) and
  :class:`UseDPoPNonce` (401 ``use_dpop_nonce``, with the nonce for the ``DPoP-Nonce``
  header); :func:`authorization_credentials` reads either scheme (``Bearer`` or ``DPoP``).

A web framework adapter (:mod:`scopes.guard.flask_adapter`) turns these into responses.
"""

from __future__ import annotations

__all__ = ["GuardError", "InsufficientScope", "InvalidDPoPProof", "InvalidRequest",
           "InvalidToken", "UseDPoPNonce", "authorization_credentials", "bearer_token",
           "challenge"]


class GuardError(Exception):
    """A request the guard refuses; ``error`` is the RFC 6750 error code."""

    error = "invalid_request"
    status_code = 400
    #: Further auth-params of its challenge after ``error_description`` (``(name, value)``
    #: pairs, such as RFC 9470's ``acr_values`` and ``max_age``).
    challenge_params: tuple[tuple[str, str], ...] = ()

    def __init__(self, description: str):
        super().__init__(description)
        self.description = description


class InvalidRequest(GuardError):
    """The ``Authorization`` header is malformed (400 ``invalid_request``)."""


class InvalidToken(GuardError):
    """Expired, revoked, malformed, or not for this resource or tenant (401)."""

    error = "invalid_token"
    status_code = 401


class InsufficientScope(GuardError):
    """A valid token without the scope the request needs (403)."""

    error = "insufficient_scope"
    status_code = 403

    def __init__(self, description: str, scope: str | None = None):
        super().__init__(description)
        self.scope = scope


class InvalidDPoPProof(GuardError):
    """RFC 9449 section 7.1: the ``DPoP`` proof is missing, malformed or does not hold (401,
    challenged with the ``DPoP`` scheme)."""

    error = "invalid_dpop_proof"
    status_code = 401
    scheme = "DPoP"


class UseDPoPNonce(InvalidDPoPProof):
    """RFC 9449 section 9: the proof must carry the resource server's nonce, ``nonce``
    (sent in the ``DPoP-Nonce`` header of the answer)."""

    error = "use_dpop_nonce"

    def __init__(self, description: str, nonce: str):
        super().__init__(description)
        self.nonce = nonce


#: The two schemes of an ``Authorization`` header the guard reads.
SCHEMES = {"bearer": "Bearer", "dpop": "DPoP"}


def authorization_credentials(header: str | None) -> tuple[str, str] | None:
    """``(scheme, token)`` of an ``Authorization: Bearer`` or ``Authorization: DPoP`` header
    (RFC 6750 section 2.1, RFC 9449 section 7.1; schemes are case-insensitive); None when
    there is neither; :class:`InvalidRequest` when it is malformed."""
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    name = SCHEMES.get(scheme.lower())
    if name is None:
        return None
    token = rest.strip()
    if not token or " " in token:
        raise InvalidRequest(f"the Authorization header must be '{name} <token>'")
    return name, token


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header; None when there is no Bearer
    credential; :class:`InvalidRequest` when it is malformed (RFC 6750 section 2.1)."""
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = rest.strip()
    if not token or " " in token:
        raise InvalidRequest("the Authorization header must be 'Bearer <token>'")
    return token


def challenge(realm: str, error: GuardError | None = None, *,
              resource_metadata: str | None = None, scheme: str = "Bearer",
              algs=None) -> str:
    """The ``WWW-Authenticate`` value for ``error`` (RFC 6750 section 3); ``None`` means no
    credentials were sent: a bare challenge without an error code (section 3.1).
    ``resource_metadata`` is the URL of the resource's RFC 9728 metadata (section 5.1).
    ``scheme="DPoP"`` with ``algs`` (the accepted proof algorithms) is RFC 9449 section 7.1's
    challenge."""
    parts = [f'realm="{_quoted(realm)}"']
    if algs:
        parts.append(f'algs="{_quoted(" ".join(algs))}"')
    if error is not None:
        parts.append(f'error="{error.error}"')
        parts.append(f'error_description="{_quoted(error.description)}"')
        scope = getattr(error, "scope", None)
        if scope:
            parts.append(f'scope="{_quoted(scope)}"')
        parts.extend(f'{name}="{_quoted(value)}"' for name, value in error.challenge_params)
    if resource_metadata:
        parts.append(f'resource_metadata="{_quoted(resource_metadata)}"')
    return f"{scheme} " + ", ".join(parts)


def _quoted(text: str) -> str:
    """``text`` restricted to what an RFC 6750 quoted attribute may hold (no '"' or '\\')."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in text)
