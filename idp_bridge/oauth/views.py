"""HTTP routes of the protocol endpoints."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from ..metrics import TOKEN_REQUESTS

bp = Blueprint("oauth", __name__)


def _services():
    return current_app.extensions["idp_bridge"]


_GRANT_LABELS = {"urn:ietf:params:oauth:grant-type:token-exchange": "token-exchange",
                 "refresh_token": "refresh_token", "client_credentials": "client_credentials"}


@bp.post("/token")
def token():
    response = _services().server.create_token_response()
    grant = _GRANT_LABELS.get(request.form.get("grant_type"), "other")
    outcome = "ok"
    if response.status_code != 200:
        body = response.get_json(silent=True) or {}
        outcome = str(body.get("error", response.status_code))[:40]
    TOKEN_REQUESTS.labels(grant, outcome).inc()
    return response


@bp.post("/introspect")
def introspect():
    return _services().server.create_endpoint_response("introspection")


@bp.post("/revoke")
def revoke():
    return _services().server.create_endpoint_response("revocation")


@bp.get("/jwks")
def jwks():
    response = jsonify(_services().keys.jwks())
    # Short enough that a rotation is seen promptly; resource servers refetch on unknown kid.
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.get("/audit/jwks")
def audit_jwks():
    """The keys of the audit chains' signed checkpoints (docs/audit-chain.md): apart from
    /jwks, so that none of them verifies an access token. Retired keys stay listed."""
    response = jsonify(_services().use_cases.audit_chains.jwks())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.get("/.well-known/oauth-authorization-server")
@bp.get("/.well-known/openid-configuration")
def metadata():
    response = jsonify(_services().metadata)
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response
