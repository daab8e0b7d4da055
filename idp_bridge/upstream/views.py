"""Routes the upstream identity provider calls (back-channel logout)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from ..domain.errors import InvalidInput
from .backchannel import LogoutTokenError, validate_logout_token
from .oidc import UpstreamUnavailable

bp = Blueprint("upstream", __name__)


def _answer(body, status):
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/backchannel-logout")
def backchannel_logout():
    s = current_app.extensions["idp_bridge"]
    tokens = request.form.getlist("logout_token")
    if len(tokens) != 1:
        return _answer({"error": "invalid_request",
                        "error_description": "exactly one logout_token is required"}, 400)
    try:
        claims = validate_logout_token(s.validator, tokens[0])
        revoked = s.tokens.upstream_logout(claims)
    except LogoutTokenError as exc:
        return _answer({"error": "invalid_request", "error_description": str(exc)}, 400)
    except InvalidInput as exc:  # a replayed logout token
        return _answer({"error": "invalid_request", "error_description": exc.description}, 400)
    except UpstreamUnavailable as exc:
        return _answer({"error": "temporarily_unavailable", "error_description": str(exc)}, 503)
    return _answer({"revoked_token_families": revoked}, 200)
