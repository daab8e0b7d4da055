"""Operations endpoints: liveness, readiness (database and Redis), Prometheus metrics,
request ids and structured JSON logs without secrets."""

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


@bp.get("/readyz")
def readyz():
    s = current_app.extensions["idp_bridge"]
    checks = {}
    try:
        with s.db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:
        checks["database"] = "unreachable"
    if s.fanout is not None:
        checks["redis"] = "ok" if s.fanout.ping() else "unreachable"
    ready = all(value == "ok" for value in checks.values())
    return jsonify(status="ready" if ready else "not_ready", checks=checks), 200 if ready else 503


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
