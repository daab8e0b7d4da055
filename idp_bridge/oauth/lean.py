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
import uuid

from werkzeug.wrappers import Request, Response

from ..http_errors import json_error, log_error
from ..metrics import TOKEN_REQUESTS
from ..ops import _REQUEST_ID
from ..request_guard import check_request

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
        except Exception as exc:  # the application's one mapping (http_errors.py)
            log_error(exc)
            response = json_error(exc)
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

