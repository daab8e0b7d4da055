"""HTTP routes of the SSF transmitter. Receivers authenticate with HTTP Basic."""

from __future__ import annotations

from functools import wraps

from flask import Blueprint, current_app, g, jsonify, request

from ..domain.errors import Conflict, DomainError, InvalidInput, NotFound
from ..storage.db import utcnow
from . import rfc8936
from .streams import POLL, PUSH

bp = Blueprint("ssf", __name__)
_STATUS = {InvalidInput: (400, "invalid_request"), NotFound: (404, "not_found"),
           Conflict: (409, "conflict")}


def _services():
    return current_app.extensions["idp_bridge"]


def _error(status, error, description, headers=None):
    response = jsonify(error=error, error_description=description)
    response.status_code = status
    response.headers.update(headers or {})
    return response


@bp.errorhandler(DomainError)
def domain_error(exc):
    status, code = _STATUS.get(type(exc), (400, "invalid_request"))
    return _error(status, code, exc.description)


def receiver(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        auth = request.authorization
        client = None
        if auth is not None and auth.type == "basic" and auth.username and auth.password:
            client = _services().server.query_client(auth.username)
            if client is not None and not client.check_client_secret(auth.password):
                client = None
        if client is None:
            return _error(401, "invalid_client", "receiver authentication failed",
                          {"WWW-Authenticate": 'Basic realm="idp-bridge ssf"'})
        if not client.has_role("receiver"):
            return _error(403, "forbidden", "this client is not a revocation-feed receiver")
        g.receiver_id = client.get_client_id()
        return view(*args, **kwargs)

    return wrapper


def _json():
    body = request.get_json(silent=True) if request.data else {}
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    return body


@bp.get("/.well-known/ssf-configuration")
def configuration():
    issuer = _services().settings.issuer.rstrip("/")
    return jsonify({
        "spec_version": "1_0",
        "issuer": issuer,
        "jwks_uri": f"{issuer}/jwks",
        "delivery_methods_supported": [POLL, PUSH],
        "configuration_endpoint": f"{issuer}/ssf/stream",
        "status_endpoint": f"{issuer}/ssf/status",
        "verification_endpoint": f"{issuer}/ssf/verify",
        "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:7617"}],
        "default_subjects": "ALL",
    })


@bp.post("/ssf/stream")
@receiver
def stream_create():
    return jsonify(_services().transmitter.create_stream(g.receiver_id, _json(), utcnow())), 201


@bp.get("/ssf/stream")
@receiver
def stream_get():
    stream_id = request.args.get("stream_id")
    transmitter = _services().transmitter
    if stream_id is None:
        return jsonify(transmitter.list_streams(g.receiver_id))
    return jsonify(transmitter.get_stream(g.receiver_id, stream_id))


@bp.patch("/ssf/stream")
@receiver
def stream_update():
    return jsonify(_services().transmitter.update_stream(g.receiver_id, _json()))


@bp.delete("/ssf/stream")
@receiver
def stream_delete():
    _services().transmitter.delete_stream(g.receiver_id, request.args.get("stream_id"))
    return "", 204


@bp.get("/ssf/status")
@receiver
def stream_status():
    config = _services().transmitter.get_stream(g.receiver_id, request.args.get("stream_id"))
    return jsonify(stream_id=config["stream_id"], status="enabled")


@bp.post("/ssf/verify")
@receiver
def stream_verify():
    body = _json()
    _services().transmitter.request_verification(g.receiver_id, body.get("stream_id"),
                                                  body.get("state"), utcnow())
    services = _services()
    services.notifier.notify()
    return "", 204


@bp.post("/ssf/poll/<stream_id>")
@receiver
def stream_poll(stream_id):
    s = _services()
    result = rfc8936.poll(s.transmitter, s.notifier, stream_id=stream_id,
                          client_id=g.receiver_id, body=_json(),
                          long_poll_seconds=s.settings.ssf_long_poll_seconds)
    response = jsonify(result)
    response.headers["Cache-Control"] = "no-store"
    return response
