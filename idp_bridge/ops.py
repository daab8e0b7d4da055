"""Operations endpoints: liveness, readiness (database, signing keys and Redis), Prometheus
metrics, request ids and structured JSON logs without secrets."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from flask import Blueprint, Response, current_app, g, has_request_context, jsonify, request
from sqlalchemy import text

from .metrics import render

bp = Blueprint("ops", __name__)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


#: Why a check is not ok, for the operator reading /readyz (never a value or a secret).
REASONS = {
    ("database", "unreachable"): "the database does not answer",
    ("signing_keys", "undecryptable"): "IDP_BRIDGE_KEY_ENCRYPTION_KEY does not decrypt the "
    "signing keys stored in the database: set the key they were made with",
    ("signing_keys", "missing"): "there is no active signing key: run idp-bridge keys rotate",
    ("redis", "unreachable"): "Redis (IDP_BRIDGE_REDIS_URL) does not answer",
}


@bp.get("/readyz")
def readyz():
    """Ready when this process can answer token requests: the database answers, the
    key-encryption key opens the active signing key and Redis (if configured) answers.
    Otherwise 503 with the failed checks and why (a load balancer takes the process out)."""
    from .domain.keys import KeyDecryptionFailed
    from .storage.db import StorageUnavailable

    s = current_app.extensions["idp_bridge"]
    checks = {}
    try:
        with s.db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:
        checks["database"] = "unreachable"
    if checks["database"] == "ok":
        try:
            s.keys.signing_key()  # cached; re-read when another process rotated
            checks["signing_keys"] = "ok"
        except KeyDecryptionFailed:
            checks["signing_keys"] = "undecryptable"
        except StorageUnavailable:
            checks["database"] = "unreachable"
        except RuntimeError:
            checks["signing_keys"] = "missing"
    if s.fanout is not None:
        checks["redis"] = "ok" if s.fanout.ping() else "unreachable"
    ready = all(value == "ok" for value in checks.values())
    body = {"status": "ready" if ready else "not_ready", "checks": checks}
    if not ready:
        body["reasons"] = {name: REASONS[(name, value)] for name, value in checks.items()
                           if value != "ok"}
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response, 200 if ready else 503


@bp.get("/metrics")
def metrics():
    return Response(render(), mimetype="text/plain; version=0.0.4")


def assign_request_id():
    supplied = request.headers.get("X-Request-ID", "")
    g.request_id = supplied if _REQUEST_ID.match(supplied) else uuid.uuid4().hex


def echo_request_id(response):
    if has_request_context() and "request_id" in g:
        response.headers["X-Request-ID"] = g.request_id
    return response


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id. Messages in
    this code base never contain tokens or secrets; exception traces are kept."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if has_request_context():
            entry["request_id"] = g.get("request_id")
            entry["path"] = request.path
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(fmt: str = "json", level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Werkzeug's request lines would repeat query strings; requests are logged by us if at all.
    logging.getLogger("werkzeug").setLevel("WARNING")
