"""Flask adapter: a view decorator, RFC 6750 error responses and RFC 9728 metadata routes.

The only module of :mod:`scopes` that imports Flask (``pip install 'idp-bridge-guard[flask]'``).
``TokenGuard.require`` and ``TokenGuard.error_response`` delegate here; a resource server on
another framework uses :meth:`TokenGuard.validate`,
:meth:`AuthenticationRequirement.validate <scopes.guard.AuthenticationRequirement.validate>`,
:func:`~scopes.guard.bearer.bearer_token` and :meth:`TokenGuard.challenge` the same way.

- :func:`require`: a Bearer token valid for the route's scope and tenant and, when the route
  asks for it, an authentication of the required kind and age (RFC 9470).
- :func:`error_response`: the JSON error with its ``WWW-Authenticate`` challenge; when the
  guard has ``resource_metadata``, the challenge names the metadata of the requested URL
  (RFC 9728 section 5.1).
- Access records (issue 14): with :meth:`TokenGuard.start_access_recording` running,
  :func:`require` records each request of an advisor or guest token after its view produced
  the response (route template, status, area and action of the scope), or answers 503
  ``temporarily_unavailable`` while a full spool refuses that action.
- :func:`publish_resource_metadata`: ``GET /.well-known/oauth-protected-resource[/<path>]``
  (RFC 9728 section 3) for the resource and for every URL of a route guarded by
  :func:`require`.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from urllib.parse import quote

import flask

from .access_log import RecordingUnavailable
from .bearer import GuardError, authorization_credentials
from .resource_metadata import WELL_KNOWN_PATH
from .step_up import AuthenticationRequirement

if TYPE_CHECKING:
    from .validation import TokenGuard

__all__ = ["error_response", "publish_resource_metadata", "require"]

#: Set on the views :func:`require` makes: which metadata routes describe (RFC 9728).
GUARDED_ATTRIBUTE = "scopes_guard_requirement"


def require(guard: TokenGuard, scope: str, tenant_arg: str = "tenant", *, acr_values=None,
            max_age: int | None = None):
    """View decorator: a Bearer token valid for ``scope`` on the view's tenant and, with
    ``acr_values`` and/or ``max_age``, whose user authentication was one of ``acr_values``
    at most ``max_age`` seconds ago (RFC 9470; else 401 ``insufficient_user_authentication``).

    The tenant is the view argument ``tenant_arg`` (a URL variable). On success the claims
    are on ``flask.g.token_claims`` and the tenant on ``flask.g.tenant``; otherwise the
    answer is ``{"error", "error_description"}`` with the RFC 6750 challenge. Only the
    ``Authorization`` header is read (RFC 6750 section 2.1), never query or form.
    """
    guard._compile_scope(scope)  # an unknown scope fails here, at import time
    step_up = None
    if acr_values is not None or max_age is not None:
        step_up = AuthenticationRequirement(acr_values, max_age)  # checked here too

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            if tenant_arg not in kwargs:
                raise TypeError(f"view {view.__name__} has no argument {tenant_arg!r} "
                                f"to take the tenant from")
            tenant = kwargs[tenant_arg]
            credentials = None
            try:
                # Bearer or DPoP (RFC 9449 section 7: the proof is checked with the request).
                credentials = authorization_credentials(flask.request.headers.get("Authorization"))
                if credentials is None:
                    return error_response(guard, None)
                claims = guard.validate_request(
                    *credentials, flask.request.headers.getlist("DPoP"),
                    method=flask.request.method, path=flask.request.path, tenant=tenant,
                    scope=scope)
                if step_up is not None:
                    step_up.validate(claims, leeway=guard.leeway)
            except GuardError as exc:
                if credentials is not None and credentials[0] == "DPoP":
                    exc.scheme = "DPoP"  # challenged in the scheme the request used
                return error_response(guard, exc)
            flask.g.token_claims = claims
            flask.g.tenant = claims["tenant"]
            if guard.access_recorder is None or claims.get("membership") is None:
                return view(*args, **kwargs)
            return _recorded(guard, scope, claims, view, args, kwargs)

        setattr(wrapper, GUARDED_ATTRIBUTE, (scope, step_up))
        return wrapper

    return decorator


def _recorded(guard: TokenGuard, scope: str, claims: dict, view, args, kwargs):
    """Run ``view`` for an advisor or guest token and record the request (issue 14): the
    route template (``url_rule.rule``, never the path with its values or the query) and the
    status of the response the view produced. A full spool with ``when_full="refuse"``
    answers 503 before the view runs. Memory only (scopes.guard.access_log)."""
    try:
        guard.check_access_recording(claims, scope)
    except RecordingUnavailable as exc:
        response = flask.jsonify({"error": exc.error, "error_description": exc.description})
        response.status_code = exc.status_code
        response.headers["Retry-After"] = str(exc.retry_after)
        response.headers["Cache-Control"] = "no-store"
        return response
    request = flask.request
    route = request.url_rule.rule if request.url_rule is not None else "?"
    try:
        response = flask.make_response(view(*args, **kwargs))
    except Exception as exc:
        # abort(404) and the like (werkzeug's HTTPException: an int ``code``) keep their
        # status; anything else becomes a 500.
        code = getattr(exc, "code", None)
        status = code if type(code) is int and 100 <= code <= 599 else 500
        guard.record_access(claims, scope, method=request.method, route=route, status=status)
        raise
    guard.record_access(claims, scope, method=request.method, route=route,
                        status=response.status_code)
    return response


def error_response(guard: TokenGuard, error: GuardError | None) -> flask.Response:
    """A Flask response for ``error``; ``None`` means no credentials were sent: 401 with a
    bare challenge and no error code (RFC 6750 section 3.1). With the guard's
    ``resource_metadata`` the challenge names the metadata of the requested URL."""
    if error is None:
        # No error code at all, in the challenge or the body (RFC 6750 section 3.1).
        response = flask.jsonify({"error_description": "a Bearer access token is required"})
        response.status_code = 401
    else:
        response = flask.jsonify({"error": error.error, "error_description": error.description})
        response.status_code = error.status_code
    resource = None
    if guard.resource_metadata is not None:
        # RFC 9728 section 3.3: the document a challenge points to must carry the very URL
        # the client requested as its resource.
        resource = guard.resource_metadata.resource_for(flask.request.path)
    for value in guard.challenges(error, resource):  # Bearer, and DPoP when accepted
        response.headers.add("WWW-Authenticate", value)
    nonce = getattr(error, "nonce", None)
    if nonce is not None:  # RFC 9449 section 9: use_dpop_nonce names the nonce to use
        response.headers["DPoP-Nonce"] = nonce
    response.headers["Cache-Control"] = "no-store"
    return response


def publish_resource_metadata(app: flask.Flask, guard: TokenGuard) -> None:
    """Serve the guard's RFC 9728 metadata (``guard.resource_metadata``) on ``app``: at the
    resource identifier's well-known URL (section 3.1; path-suffixed when the identifier has
    a path) and, for the challenges, at the well-known URL of every URL of a view guarded by
    :func:`require` (404 for any other path). ``app`` serves the resource identifier's path
    as its root; the well-known URLs are at the root of the host, so a proxy in front of a
    mounted application routes ``/.well-known/oauth-protected-resource/<path>`` to it."""
    metadata = guard.resource_metadata
    if metadata is None:
        raise ValueError("the guard has no resource_metadata to publish")
    # What the document promises must be what the guard does (ResourceMetadata.for_guard).
    if guard.issuer not in metadata.authorization_servers:
        raise ValueError("resource_metadata: authorization_servers must name the guard's issuer")
    if metadata.dpop_bound_access_tokens_required != guard.dpop_required:
        raise ValueError("resource_metadata: dpop_bound_access_tokens_required must be the "
                         "guard's dpop_required")
    accepted = guard.dpop_algorithms if guard._dpop is not None else ()
    if not set(metadata.dpop_signing_alg_values_supported) <= set(accepted):
        raise ValueError("resource_metadata: dpop_signing_alg_values_supported must be "
                         "algorithms the guard accepts in DPoP proofs")
    base = WELL_KNOWN_PATH + metadata.path

    def document(rest: str = ""):
        path = flask.request.path
        resource = metadata.resource_at(path)
        if resource is None or (rest and not _guarded(app, "/" + rest)):
            return flask.jsonify({"error": "not_found"}), 404
        response = flask.jsonify(metadata.document(resource))
        response.headers["Cache-Control"] = f"public, max-age={metadata.max_age}"
        response.headers["Access-Control-Allow-Origin"] = "*"  # public, for browser clients
        return response

    app.add_url_rule(base, "oauth_protected_resource", document, methods=["GET"])
    app.add_url_rule(f"{base}/<path:rest>", "oauth_protected_resource_path", document,
                     methods=["GET"])


def _guarded(app: flask.Flask, path: str) -> bool:
    """Whether ``path`` is the URL of a view made by :func:`require`, for any method.
    (Matched through Flask's own routing, so that nothing but Flask is imported.)"""
    methods = sorted({m for rule in app.url_map.iter_rules() for m in rule.methods or ()})
    for method in methods:
        with app.test_request_context(quote(path, safe="/:@!$&'()*+,;=-._~"), method=method):
            rule = flask.request.url_rule
        if rule is not None and hasattr(app.view_functions.get(rule.endpoint),
                                        GUARDED_ATTRIBUTE):
            return True
    return False
