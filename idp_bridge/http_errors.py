"""The JSON answer of every machine endpoint to an error that is not the request's fault or
that the framework raised (DESIGN.md section 6: never a stack trace). One home for the
mapping: the Flask error handlers (app.py) answer with it when the caller is not a page,
and the lean token endpoint (oauth/lean.py) answers with it directly."""

from __future__ import annotations

import json
import logging

from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from .domain.keys import KeyDecryptionFailed
from .storage.db import StorageUnavailable
from .upstream.oidc import UpstreamUnavailable

log = logging.getLogger("idp_bridge")

#: The ``error`` of an HTTP error the framework raised, by status.
HTTP_CODES = {400: "invalid_request", 401: "invalid_token", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 413: "invalid_request", 429: "rate_limited"}


def status_of(exc: BaseException) -> int:
    if isinstance(exc, HTTPException):
        return exc.code or 500
    if isinstance(exc, (StorageUnavailable, KeyDecryptionFailed, UpstreamUnavailable)):
        return 503
    return 500


def log_error(exc: BaseException) -> None:
    """What the operator needs in the log (never in the answer)."""
    if isinstance(exc, KeyDecryptionFailed):
        # The key-encryption key does not open the signing keys: nothing can be signed, and
        # /readyz says not ready. The answer names no key; the log names the setting.
        log.error("%s", exc)
    elif isinstance(exc, UpstreamUnavailable):
        # Fail closed: an upstream that cannot be asked (keys, account state) grants nothing.
        log.warning("upstream unavailable: %s", exc)
    elif not isinstance(exc, (HTTPException, StorageUnavailable)):
        log.error("unhandled error", exc_info=exc)


def json_error(exc: BaseException) -> Response:
    """The JSON response for ``exc`` (an HTTP error, an unreachable database or identity
    provider, signing keys that cannot be opened, or anything unexpected: 500). Logs
    nothing: the caller calls :func:`log_error`."""
    status, headers = status_of(exc), {}
    if isinstance(exc, HTTPException):
        body = {"error": HTTP_CODES.get(status, "error"),
                "error_description": exc.description if status != 413
                else "the request is too large"}
    elif isinstance(exc, StorageUnavailable):
        body = {"error": "temporarily_unavailable",
                "error_description": "the database is unreachable"}
    elif isinstance(exc, KeyDecryptionFailed):
        body = {"error": "temporarily_unavailable",
                "error_description": "the signing keys are unavailable"}
        headers = {"Retry-After": "5", "Cache-Control": "no-store"}
    elif isinstance(exc, UpstreamUnavailable):
        body = {"error": "temporarily_unavailable",
                "error_description": "the identity provider is unreachable"}
    else:
        body = {"error": "server_error", "error_description": "internal error"}
    return Response(json.dumps(body) + "\n", status=status, headers=headers,
                    mimetype="application/json")
