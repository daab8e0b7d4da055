"""``POST /access-records``: a receiver client reports what its resource server authorised
with advisor and guest tokens (a machine endpoint, JSON).

Authenticated as the revocation feed's management API (:func:`idp_bridge.ssf.views.receiver`):
HTTP Basic with a client of the ``receiver`` role, or a client credentials token of such a
client with the scope ``access.record``. The body is ``{"records": [...]}``, at most 1,000
records in at most 1 MiB (this endpoint's own request limit; every other one keeps
``max_request_bytes``, 64 KiB by default: beyond it 413); the answer names each record ``accepted`` (stored now), a ``duplicate`` (stored
before: the record id is the idempotency key) or ``refused`` with its error (never stored,
audited). A malformed batch is 400 ``invalid_request`` and stores nothing.
"""

from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request

from ..domain.access_records import MAX_BATCH_BYTES
from ..domain.errors import DomainError
from ..ssf.authorization import ACCESS_RECORD
from ..ssf.views import receiver
from .openapi import openapi_document

bp = Blueprint("access_records", __name__)


def _error(status, error, description):
    response = jsonify(error=error, error_description=description)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(DomainError)
def domain_error(exc):
    return _error(400, "invalid_request", exc.description)


@bp.url_value_preprocessor
def batch_limit(endpoint, _values):
    """The ingest's own request limit (a batch of up to 1,000 records), set before any
    ``before_request`` hook reads the body (the app's ``check_request`` does, with the
    app-wide limit otherwise): Flask runs the URL value preprocessors first."""
    if endpoint == "access_records.ingest":
        request.max_content_length = MAX_BATCH_BYTES


@bp.after_request
def no_store(response):
    if request.endpoint != "access_records.openapi":
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/access-records/openapi.json")
def openapi():
    return jsonify(openapi_document(current_app.extensions["idp_bridge"].settings.issuer))


@bp.post("/access-records")
@receiver((ACCESS_RECORD,))
def ingest():
    body = request.get_json(silent=True)
    if body is None:
        return _error(400, "invalid_request", "the request body must be JSON")
    service = current_app.extensions["idp_bridge"].use_cases.access_records
    result = service.ingest(g.receiver_id, body)
    return jsonify(accepted=result.accepted, duplicates=result.duplicates,
                   refused=[{"id": record_id, "error": error}
                            for record_id, error in result.refused])
