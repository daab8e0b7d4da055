"""Refusals of the domain and the application services: one hierarchy, stable codes.

Every refusal is a :class:`DomainError` with

- a ``kind`` — the class of refusal, which alone decides the HTTP answer in the one mapping
  of each entry point (token endpoint: RFC 6749 ``error``; API: JSON problem; pages: a
  translated page), and
- a machine ``code`` (``not_member``, ``code_rejected``, ``scope_refused``,
  ``upstream_unavailable``, …) that is stable across releases: pages translate by code,
  clients and tests may match on it, and it is never derived from the message text;
- a ``description`` in English, safe to show the caller (it never repeats request input).

Grants, services and domain code only raise; the entry points alone turn errors into
answers (STYLE.md: grants only raise, the server answers).
"""

from __future__ import annotations

#: The kinds of refusal, and what each means for a caller.
KINDS = (
    "invalid",      # the request is malformed or names nothing valid (400)
    "not_found",    # what the request names does not exist here, for this caller (404)
    "forbidden",    # the caller may not do this (403; token endpoint: invalid_grant)
    "conflict",     # the state does not allow it now (409; token endpoint: invalid_grant)
    "refused",      # a grant is refused: wrong code, ended membership, reused token (400 invalid_grant)
    "scope",        # the scope asked for is not available (400 invalid_scope)
    "target",       # the audience/resource asked for is unknown (400 invalid_target)
    "unavailable",  # a dependency is down: fail closed (503 temporarily_unavailable)
)


class DomainError(Exception):
    kind = "invalid"
    code = "invalid_input"

    def __init__(self, description: str, *, code: str | None = None):
        super().__init__(description)
        self.description = description
        if code is not None:
            self.code = code


class InvalidInput(DomainError):
    kind, code = "invalid", "invalid_input"


class NotFound(DomainError):
    kind, code = "not_found", "not_found"


class Forbidden(DomainError):
    kind, code = "forbidden", "forbidden"


class Conflict(DomainError):
    kind, code = "conflict", "conflict"


class AccessCodeRejected(DomainError):
    """Wrong, expired or reused access code, or too many attempts."""

    kind, code = "refused", "code_rejected"


class ScopeRefused(DomainError):
    kind, code = "scope", "scope_refused"


class TargetRefused(DomainError):
    kind, code = "target", "target_refused"


class Unavailable(DomainError):
    """A dependency (database, upstream IdP, Keycloak admin API) cannot be reached: the
    request is refused, never granted (fail closed)."""

    kind, code = "unavailable", "unavailable"
