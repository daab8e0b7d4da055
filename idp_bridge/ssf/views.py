"""HTTP routes of the SSF transmitter (SSF 1.0 sections 7 and 8, RFC 8936 poll).

Receivers authenticate with an OAuth 2.0 access token (``Authorization: Bearer``, RFC 6750
section 2.1, from the client credentials grant: :mod:`.authorization`) or with HTTP Basic
(``client_id:client_secret``, as before). Tokens are never taken from the query or the body
(RFC 6750 section 2.3, CAEP interoperability profile 2.9.3): a request carrying
``access_token`` there is refused. Read endpoints need ``ssf.read`` or ``ssf.manage``;
everything else ``ssf.manage`` (RFC 6750 section 3.1 ``insufficient_scope`` otherwise).
"""

from __future__ import annotations

from functools import wraps

from flask import Blueprint, current_app, g, jsonify, request

from ..domain.errors import Conflict, DomainError, InvalidInput, NotFound
from ..storage.db import utcnow
from . import rfc8936
from .authorization import MANAGE, READ
from .set_keys import ALGORITHMS
from .streams import POLL, PUSH, TooManyRequests

bp = Blueprint("ssf", __name__)
_STATUS = {InvalidInput: (400, "invalid_request"), NotFound: (404, "not_found"),
           Conflict: (409, "conflict")}
_CHALLENGE = 'Bearer realm="idp-bridge ssf", Basic realm="idp-bridge ssf"'


def _services():
    return current_app.extensions["idp_bridge"]


def _error(status, error, description, headers=None):
    response = jsonify(error=error, error_description=description)
    response.status_code = status
    response.headers.update(headers or {})
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(DomainError)
def domain_error(exc):
    status, code = _STATUS.get(type(exc), (400, "invalid_request"))
    return _error(status, code, exc.description)


@bp.errorhandler(TooManyRequests)
def too_many(exc):
    return _error(429, "rate_limited", exc.description, {"Retry-After": str(exc.retry_after)})


@bp.after_request
def no_store(response):
    if request.endpoint not in ("ssf.configuration", "ssf.jwks"):
        response.headers["Cache-Control"] = "no-store"
    return response


def receiver(scopes):
    """The view needs a receiver client, authenticated by Basic or by a Bearer token with
    one of ``scopes``."""

    def decorate(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            if "access_token" in request.args or "access_token" in request.form:
                return _error(400, "invalid_request", "access tokens are accepted in the "
                              "Authorization header only")
            auth = request.authorization
            if auth is not None and auth.type == "bearer":
                return _bearer(view, scopes, auth.token, args, kwargs)
            client = None
            if auth is not None and auth.type == "basic" and auth.username and auth.password:
                client = _services().server.query_client(auth.username)
                if client is not None and not client.check_client_secret(auth.password):
                    client = None
            if client is None:
                return _error(401, "invalid_client", "receiver authentication failed",
                              {"WWW-Authenticate": _CHALLENGE})
            if not client.has_role("receiver"):
                return _error(403, "forbidden", "this client is not a revocation-feed receiver")
            g.receiver_id = client.get_client_id()
            return view(*args, **kwargs)

        return wrapper

    return decorate


def _bearer(view, scopes, token, args, kwargs):
    services = _services()
    claims = services.management_tokens.read(token or "")
    client = services.server.query_client(claims["client_id"]) if claims else None
    if client is None or not client.has_role("receiver"):
        # Invalid, expired, for another audience, or its client is gone or no receiver.
        return _error(401, "invalid_token", "the access token is not valid for this API",
                      {"WWW-Authenticate": 'Bearer realm="idp-bridge ssf", '
                                          'error="invalid_token"'})
    granted = set(claims["scope"].split())
    if not granted & set(scopes):
        return _error(403, "insufficient_scope", f"this request needs the scope {scopes[0]}",
                      {"WWW-Authenticate": f'Bearer realm="idp-bridge ssf", '
                                          f'error="insufficient_scope", scope="{scopes[0]}"'})
    g.receiver_id = client.get_client_id()
    return view(*args, **kwargs)


READING = (READ, MANAGE)
MANAGING = (MANAGE,)


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
        "jwks_uri": f"{issuer}/ssf/jwks",
        "delivery_methods_supported": [PUSH, POLL],
        "configuration_endpoint": f"{issuer}/ssf/stream",
        "status_endpoint": f"{issuer}/ssf/status",
        "add_subject_endpoint": f"{issuer}/ssf/subjects:add",
        "remove_subject_endpoint": f"{issuer}/ssf/subjects:remove",
        "verification_endpoint": f"{issuer}/ssf/verify",
        "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6749"},
                                  {"spec_urn": "urn:ietf:rfc:7617"}],
        "default_subjects": "ALL",
        # This transmitter's extension: what a stream's set_signing_alg may be.
        "set_signing_alg_values_supported": list(ALGORITHMS),
    })


@bp.get("/ssf/jwks")
def jwks():
    response = jsonify(_services().set_keys.jwks())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.post("/ssf/stream")
@receiver(MANAGING)
def stream_create():
    return jsonify(_services().transmitter.create_stream(g.receiver_id, _json(), utcnow())), 201


@bp.get("/ssf/stream")
@receiver(READING)
def stream_get():
    stream_id = request.args.get("stream_id")
    transmitter = _services().transmitter
    if stream_id is None:
        return jsonify(transmitter.list_streams(g.receiver_id))
    return jsonify(transmitter.get_stream(g.receiver_id, stream_id, utcnow()))


@bp.patch("/ssf/stream")
@receiver(MANAGING)
def stream_update():
    return jsonify(_services().transmitter.update_stream(g.receiver_id, _json(), utcnow()))


@bp.put("/ssf/stream")
@receiver(MANAGING)
def stream_replace():
    return jsonify(_services().transmitter.replace_stream(g.receiver_id, _json(), utcnow()))


@bp.delete("/ssf/stream")
@receiver(MANAGING)
def stream_delete():
    _services().transmitter.delete_stream(g.receiver_id, request.args.get("stream_id"))
    return "", 204


@bp.get("/ssf/status")
@receiver(READING)
def stream_status():
    return jsonify(_services().transmitter.get_status(
        g.receiver_id, request.args.get("stream_id"), utcnow()))


@bp.post("/ssf/status")
@receiver(MANAGING)
def stream_status_update():
    services = _services()
    status = services.transmitter.update_status(g.receiver_id, _json(), utcnow())
    services.notifier.notify()  # a re-enabled stream's long polls answer at once
    return jsonify(status)


@bp.post("/ssf/subjects:add")
@receiver(MANAGING)
def subject_add():
    _services().transmitter.add_subject(g.receiver_id, _json(), utcnow())
    return "", 200


@bp.post("/ssf/subjects:remove")
@receiver(MANAGING)
def subject_remove():
    _services().transmitter.remove_subject(g.receiver_id, _json(), utcnow())
    return "", 204


@bp.post("/ssf/verify")
@receiver(MANAGING)
def stream_verify():
    services = _services()
    services.transmitter.request_verification(g.receiver_id, _json(), utcnow())
    services.notifier.notify()
    return "", 204


@bp.post("/ssf/poll/<stream_id>")
@receiver(MANAGING)
def stream_poll(stream_id):
    s = _services()
    result = rfc8936.poll(s.transmitter, s.notifier, stream_id=stream_id,
                          client_id=g.receiver_id, body=_json(),
                          long_poll_seconds=s.settings.ssf_long_poll_seconds)
    return jsonify(result)
