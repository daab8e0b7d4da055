"""HTTP routes of the protocol endpoints."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

bp = Blueprint("oauth", __name__)


def _services():
    return current_app.extensions["idp_bridge"]


@bp.post("/token")
def token():
    return _services().server.create_token_response()


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


@bp.get("/.well-known/oauth-authorization-server")
@bp.get("/.well-known/openid-configuration")
def metadata():
    response = jsonify(_services().metadata)
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response
