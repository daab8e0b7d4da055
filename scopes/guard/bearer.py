"""RFC 6750, framework-neutral: the Bearer errors, the ``Authorization`` header, the challenge.

- Errors (section 3.1): :class:`InvalidRequest` (400 ``invalid_request``),
  :class:`InvalidToken` (401 ``invalid_token``), :class:`InsufficientScope` (403
  ``insufficient_scope``), one family under :class:`GuardError`.
- :func:`bearer_token` reads the token from an ``Authorization: Bearer`` header (section 2.1;
  never from the query or the form).
- :func:`challenge` builds the ``WWW-Authenticate: Bearer`` value (section 3).

A web framework adapter (:mod:`scopes.guard.flask_adapter`) turns these into responses.
"""

from __future__ import annotations

__all__ = ["GuardError", "InsufficientScope", "InvalidRequest", "InvalidToken", "bearer_token",
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
              resource_metadata: str | None = None) -> str:
    """The ``WWW-Authenticate`` value for ``error`` (RFC 6750 section 3); ``None`` means no
    credentials were sent: a bare challenge without an error code (section 3.1).
    ``resource_metadata`` is the URL of the resource's RFC 9728 metadata (section 5.1)."""
    parts = [f'realm="{_quoted(realm)}"']
    if error is not None:
        parts.append(f'error="{error.error}"')
        parts.append(f'error_description="{_quoted(error.description)}"')
        scope = getattr(error, "scope", None)
        if scope:
            parts.append(f'scope="{_quoted(scope)}"')
        parts.extend(f'{name}="{_quoted(value)}"' for name, value in error.challenge_params)
    if resource_metadata:
        parts.append(f'resource_metadata="{_quoted(resource_metadata)}"')
    return "Bearer " + ", ".join(parts)


def _quoted(text: str) -> str:
    """``text`` restricted to what an RFC 6750 quoted attribute may hold (no '"' or '\\')."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in text)
