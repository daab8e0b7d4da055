"""RFC 9470 (OAuth 2.0 Step Up Authentication Challenge): how and when the user authenticated.

A route may need more than a valid token with the right scope: an authentication of a certain
kind (``acr``, one of ``acr_values``) and no older than ``max_age`` seconds (``auth_time``).
:class:`AuthenticationRequirement` holds such a requirement, checked once when it is made;
:meth:`AuthenticationRequirement.validate` checks the claims of a token that
:meth:`~scopes.guard.TokenGuard.validate` already accepted and raises
:class:`InsufficientUserAuthentication`: 401 ``insufficient_user_authentication`` whose
challenge names the route's ``acr_values`` and ``max_age`` (section 3), so that the client can
ask the authorization server for them (section 4) and retry with the new token.

Choices where the RFC leaves one (section 9 and its silence):

- The requirement is checked only *after* the token was fully validated (signature, audience,
  revocation, tenant, scope): the challenge never tells an actor without a valid token what the
  route requires. A token that also lacks the scope gets 403 ``insufficient_scope`` first.
- The challenge always carries every part of the route's requirement (both ``acr_values`` and
  ``max_age`` when the route has both), whichever part failed, so that one step-up suffices.
- A missing ``acr`` (or ``auth_time``) fails like an unmet one, with the same challenge: a new
  authentication with the requested values gives the claims. An ill-typed one (``acr`` not a
  string, ``auth_time`` not a number or in the future beyond the clock leeway) makes the token
  malformed: 401 ``invalid_token``.
- ``max_age`` is compared without leeway (``now - auth_time <= max_age``): a requirement of
  300 seconds must not silently become 330. The leeway only lets ``auth_time`` be slightly in
  the future (another clock, the upstream identity provider's, set it).
- ``acr`` values are compared as exact strings; no hierarchy of levels is assumed (section 2).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

from .bearer import GuardError, InvalidToken

__all__ = ["INSUFFICIENT_USER_AUTHENTICATION", "AuthenticationRequirement",
           "InsufficientUserAuthentication"]

INSUFFICIENT_USER_AUTHENTICATION = "insufficient_user_authentication"  # RFC 9470 section 3

_MAX_ACR_LENGTH = 255


class InsufficientUserAuthentication(GuardError):
    """The authentication behind a valid token does not meet the route's requirement
    (RFC 9470 section 3): 401 with ``acr_values`` and/or ``max_age`` in the challenge."""

    error = INSUFFICIENT_USER_AUTHENTICATION
    status_code = 401

    def __init__(self, description: str, requirement: AuthenticationRequirement):
        super().__init__(description)
        self.requirement = requirement
        self.challenge_params = requirement.challenge_params


class AuthenticationRequirement:
    """``acr_values`` (the token's ``acr`` must be one of them, listed in order of preference)
    and/or ``max_age`` (seconds since ``auth_time``, a non-negative integer).

    Checked when made: a requirement that could not be expressed exactly in a challenge (an
    ``acr`` value with spaces, quotes or non-ASCII characters) or that requires nothing is a
    ValueError, at import time of the route that uses it.
    """

    __slots__ = ("acr_values", "max_age", "challenge_params", "_acr_set")

    def __init__(self, acr_values: Iterable[str] | None = None, max_age: int | None = None):
        if isinstance(acr_values, str):
            raise TypeError("acr_values must be a list of strings, not one string")
        values = tuple(acr_values or ())
        for value in values:
            if (not isinstance(value, str) or not 0 < len(value) <= _MAX_ACR_LENGTH
                    or not all("!" <= c <= "~" and c not in '"\\' for c in value)):
                raise ValueError("each acr value must be 1 to 255 printable ASCII characters "
                                 "without spaces, quotes or backslashes")
        if len(set(values)) != len(values):
            raise ValueError("acr_values must not repeat a value")
        if max_age is not None and (type(max_age) is not int or max_age < 0):
            raise ValueError("max_age must be a non-negative integer (seconds)")
        if not values and max_age is None:
            raise ValueError("an authentication requirement needs acr_values or max_age")
        self.acr_values = values
        self.max_age = max_age
        self._acr_set = frozenset(values)
        params = []
        if values:
            params.append(("acr_values", " ".join(values)))
        if max_age is not None:
            params.append(("max_age", str(max_age)))
        #: The auth-params of the challenge (RFC 9470 section 3), in this order.
        self.challenge_params = tuple(params)

    def __repr__(self) -> str:
        return f"AuthenticationRequirement(acr_values={list(self.acr_values)!r}, " \
               f"max_age={self.max_age!r})"

    def __eq__(self, other) -> bool:
        return (isinstance(other, AuthenticationRequirement)
                and (self.acr_values, self.max_age) == (other.acr_values, other.max_age))

    def __hash__(self) -> int:
        return hash((self.acr_values, self.max_age))

    def validate(self, claims: dict, *, leeway: float = 30, now: float | None = None) -> None:
        """Raise unless ``claims`` (of a token already validated) meet the requirement:
        :class:`InsufficientUserAuthentication` when the authentication is not the required
        kind or too old (or the claim saying so is missing), :class:`InvalidToken` when
        ``acr`` or ``auth_time`` is ill-typed."""
        if self._acr_set:
            acr = claims.get("acr")
            if acr is None:
                raise InsufficientUserAuthentication(
                    "the token does not say how the user authenticated (acr)", self)
            if type(acr) is not str:
                raise InvalidToken("token has a malformed acr claim")
            if acr not in self._acr_set:
                raise InsufficientUserAuthentication(
                    "a different authentication level is required", self)
        if self.max_age is not None:
            auth_time = claims.get("auth_time")
            if auth_time is None:
                raise InsufficientUserAuthentication(
                    "the token does not say when the user authenticated (auth_time)", self)
            if type(auth_time) not in (int, float) or not math.isfinite(auth_time) \
                    or auth_time < 0:
                raise InvalidToken("token has a malformed auth_time claim")
            if now is None:
                now = time.time()
            if auth_time > now + leeway:
                raise InvalidToken("token's auth_time is in the future")
            if now - auth_time > self.max_age:
                raise InsufficientUserAuthentication(
                    "more recent authentication is required", self)
