"""Flask adapter: a view decorator and RFC 6750 error responses for a :class:`TokenGuard`.

The only module of :mod:`scopes` that imports Flask (``pip install 'idp-bridge-guard[flask]'``).
``TokenGuard.require`` and ``TokenGuard.error_response`` delegate here; a resource server on
another framework uses :meth:`TokenGuard.validate`, :func:`~scopes.guard.bearer.bearer_token`
and :meth:`TokenGuard.challenge` the same way.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import flask

from .bearer import GuardError, bearer_token, challenge

if TYPE_CHECKING:
    from .validation import TokenGuard

__all__ = ["error_response", "require"]


def require(guard: TokenGuard, scope: str, tenant_arg: str = "tenant"):
    """View decorator: a Bearer token valid for ``scope`` on the view's tenant.

    The tenant is the view argument ``tenant_arg`` (a URL variable). On success the claims
    are on ``flask.g.token_claims`` and the tenant on ``flask.g.tenant``; otherwise the
    answer is ``{"error", "error_description"}`` with the RFC 6750 challenge. Only the
    ``Authorization`` header is read (RFC 6750 section 2.1), never query or form.
    """
    guard._compile_scope(scope)  # an unknown scope fails here, at import time

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            if tenant_arg not in kwargs:
                raise TypeError(f"view {view.__name__} has no argument {tenant_arg!r} "
                                f"to take the tenant from")
            tenant = kwargs[tenant_arg]
            try:
                token = bearer_token(flask.request.headers.get("Authorization"))
                if token is None:
                    return error_response(guard, None)
                claims = guard.validate(token, tenant=tenant, scope=scope)
            except GuardError as exc:
                return error_response(guard, exc)
            flask.g.token_claims = claims
            flask.g.tenant = claims["tenant"]
            return view(*args, **kwargs)

        return wrapper

    return decorator


def error_response(guard: TokenGuard, error: GuardError | None) -> flask.Response:
    """A Flask response for ``error``; ``None`` means no credentials were sent: 401 with a
    bare challenge and no error code (RFC 6750 section 3.1)."""
    if error is None:
        # No error code at all, in the challenge or the body (RFC 6750 section 3.1).
        response = flask.jsonify({"error_description": "a Bearer access token is required"})
        response.status_code = 401
    else:
        response = flask.jsonify({"error": error.error, "error_description": error.description})
        response.status_code = error.status_code
    response.headers["WWW-Authenticate"] = challenge(guard.realm, error)
    response.headers["Cache-Control"] = "no-store"
    return response
