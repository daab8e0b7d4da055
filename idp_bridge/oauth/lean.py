"""The lean token endpoint: POST /token served straight from WSGI, without Flask's request
context, page hooks (CSRF, sessions, page headers) or dispatch.

It calls the same :class:`~idp_bridge.oauth.server.BridgeAuthorizationServer` (same grants,
client authentication, DPoP checks, error mapping, no-store headers, audit events through
the same TokenService) with a Werkzeug request; what the application's hooks do for a
machine endpoint is kept: the request id, :func:`~idp_bridge.request_guard.check_request`
(NUL characters), the body size and form parsing limits (413), the ``TOKEN_REQUESTS``
metric and the JSON answers of the error handlers.
"""

from __future__ import annotations

import json
import logging
import uuid

from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from ..domain.keys import KeyDecryptionFailed
from ..metrics import TOKEN_REQUESTS
from ..ops import _REQUEST_ID
from ..request_guard import check_request
from ..storage.db import StorageUnavailable
from ..upstream.oidc import UpstreamUnavailable

log = logging.getLogger(__name__)

_GRANT_LABELS = {"urn:ietf:params:oauth:grant-type:token-exchange": "token-exchange",
                 "refresh_token": "refresh_token", "client_credentials": "client_credentials"}
_HEADERS = (("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"),
            ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
            ("X-Frame-Options", "DENY"))


class LeanTokenEndpoint:
    """WSGI middleware: POST /token (exactly) here, everything else to ``app``."""

    def __init__(self, app, server, *, max_request_bytes: int):
        self.app = app
        self.server = server
        self.max_request_bytes = max_request_bytes

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != "/token" or environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        return self.token(environ)(environ, start_response)

    def token(self, environ) -> Response:
        request = Request(environ)
        request.max_content_length = self.max_request_bytes
        request.max_form_memory_size = self.max_request_bytes
        supplied = request.headers.get("X-Request-ID", "")
        request_id = supplied if _REQUEST_ID.match(supplied) else uuid.uuid4().hex
        grant = "other"
        try:
            check_request(request)
            grant = _GRANT_LABELS.get(request.form.get("grant_type"), "other")
            response = self.server.create_token_response(request)
        except HTTPException as exc:
            response = _json({"error": {400: "invalid_request", 413: "invalid_request",
                                        405: "method_not_allowed"}.get(exc.code, "error"),
                              "error_description": exc.description if exc.code != 413
                              else "the request is too large"}, exc.code)
        except StorageUnavailable:
            response = _json({"error": "temporarily_unavailable",
                              "error_description": "the database is unreachable"}, 503)
        except KeyDecryptionFailed as exc:
            log.error("%s", exc)
            response = _json({"error": "temporarily_unavailable",
                              "error_description": "the signing keys are unavailable"}, 503)
            response.headers["Retry-After"] = "5"
            response.headers["Cache-Control"] = "no-store"
        except UpstreamUnavailable as exc:
            log.warning("upstream unavailable: %s", exc)
            response = _json({"error": "temporarily_unavailable",
                              "error_description": "the identity provider is unreachable"}, 503)
        except Exception:
            log.exception("unhandled error")
            response = _json({"error": "server_error", "error_description": "internal error"}, 500)
        outcome = "ok"
        if response.status_code != 200:
            try:
                body = json.loads(response.get_data()) or {}
            except ValueError:
                body = {}
            outcome = str(body.get("error", response.status_code)
                          if isinstance(body, dict) else response.status_code)[:40]
        TOKEN_REQUESTS.labels(grant, outcome).inc()
        response.headers["X-Request-ID"] = request_id
        for name, value in _HEADERS:
            response.headers.setdefault(name, value)
        return response


def _json(body: dict, status: int) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")
