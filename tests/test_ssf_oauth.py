"""OAuth 2.0 for the stream management API (CAEP interoperability profile 2.9): the client
credentials grant for receivers, ssf.read / ssf.manage, RFC 6750 bearer tokens in the
Authorization header only."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, update

from conftest import CLIENT_ID, RS_CLIENT_ID
from idp_bridge.storage.models import Client, SsfStream

POLL = "urn:ietf:rfc:8936"
SSF_AUDIENCE = "http://127.0.0.1:8000/ssf"


def token(bridge, scope=None, auth=None, **extra):
    data = {"grant_type": "client_credentials", **extra}
    if scope is not None:
        data["scope"] = scope
    return bridge.token(data, auth=auth or (RS_CLIENT_ID, bridge.rs_secret))


def bearer(value):
    return {"Authorization": f"Bearer {value}"}


def streams(bridge):
    with bridge.services.db.read() as session:
        return session.execute(select(func.count()).select_from(SsfStream)).scalar_one()


def test_a_receiver_gets_a_management_token(bridge):
    response = token(bridge)
    assert response.status_code == 200
    body = response.json
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "ssf.manage ssf.read"
    assert 0 < body["expires_in"] <= 3600  # short-lived (profile 2.9.1)
    assert "refresh_token" not in body
    assert response.headers["Cache-Control"] == "no-store"
    read_only = token(bridge, "ssf.read").json
    assert read_only["scope"] == "ssf.read"
    # Not an access token any resource server or the introspection endpoint takes.
    assert bridge.introspect(body["access_token"]).json == {"active": False}


@pytest.mark.parametrize("data,auth,status,error", [
    ({"scope": "ssf.admin"}, None, 400, "invalid_scope"),
    ({"scope": "evaluation:read"}, None, 400, "invalid_scope"),
    ({"resource": "https://api.konfipay.example/"}, None, 400, "invalid_target"),
    ({"audience": "konfipay-api"}, None, 400, "invalid_target"),
    ({}, "advisor-console", 400, "unauthorized_client"),
    ({}, ("example-resource-server", "wrong-" + "x" * 40), 401, "invalid_client"),
])
def test_client_credentials_refusals(bridge, data, auth, status, error):
    if auth == "advisor-console":
        auth = (CLIENT_ID, bridge.secret)
    response = token(bridge, auth=auth, **data)
    assert response.status_code == status
    assert response.json["error"] == error
    assert "access_token" not in response.json


def test_resource_may_name_the_management_api(bridge):
    response = token(bridge, resource=SSF_AUDIENCE)
    assert response.status_code == 200


def test_bearer_tokens_drive_the_api_by_scope(bridge):
    manage = token(bridge, "ssf.manage").json["access_token"]
    read = token(bridge, "ssf.read").json["access_token"]
    created = bridge.client.post("/ssf/stream", json={}, headers=bearer(manage))
    assert created.status_code == 201
    stream_id = created.json["stream_id"]
    assert created.json["aud"] == RS_CLIENT_ID
    for path in (f"/ssf/stream?stream_id={stream_id}", "/ssf/stream",
                 f"/ssf/status?stream_id={stream_id}"):
        assert bridge.client.get(path, headers=bearer(read)).status_code == 200
        assert bridge.client.get(path, headers=bearer(manage)).status_code == 200
    for method, path, body in (
            ("post", "/ssf/stream", {}),
            ("patch", "/ssf/stream", {"stream_id": stream_id, "description": "x"}),
            ("put", "/ssf/stream", {"stream_id": stream_id}),
            ("delete", f"/ssf/stream?stream_id={stream_id}", None),
            ("post", "/ssf/status", {"stream_id": stream_id, "status": "paused"}),
            ("post", "/ssf/verify", {"stream_id": stream_id}),
            ("post", "/ssf/subjects:remove",
             {"stream_id": stream_id, "subject": {"format": "opaque", "id": "g"}}),
            ("post", f"/ssf/poll/{stream_id}", {"returnImmediately": True})):
        response = getattr(bridge.client, method)(path, json=body, headers=bearer(read))
        assert response.status_code == 403
        assert response.json["error"] == "insufficient_scope"
        assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
        assert 'scope="ssf.manage"' in response.headers["WWW-Authenticate"]
    assert streams(bridge) == 1
    config = bridge.client.get(f"/ssf/stream?stream_id={stream_id}", headers=bearer(read)).json
    assert "description" not in config
    assert bridge.client.get(f"/ssf/status?stream_id={stream_id}",
                             headers=bearer(read)).json["status"] == "enabled"
    assert bridge.client.post(f"/ssf/poll/{stream_id}", json={"returnImmediately": True},
                              headers=bearer(manage)).json == {"sets": {}}


@pytest.mark.parametrize("where", ["query", "form"])
def test_tokens_are_never_taken_from_the_query_or_body(bridge, where):
    manage = token(bridge).json["access_token"]
    if where == "query":
        response = bridge.client.post(f"/ssf/stream?access_token={manage}", json={})
    else:
        response = bridge.client.post("/ssf/stream", data={"access_token": manage})
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    assert manage not in response.get_data(as_text=True)
    assert streams(bridge) == 0
    # Not even next to a valid header.
    response = bridge.client.get(f"/ssf/stream?access_token={manage}", headers=bearer(manage))
    assert response.status_code == 400 and response.json["error"] == "invalid_request"


def test_invalid_bearer_tokens(bridge):
    advisor_token = bridge.join("bob")["access_token"]
    manage = token(bridge).json["access_token"]
    header, payload, signature = manage.split(".")
    tampered = f"{header}.{payload}.{signature[:-4]}AAAA"
    for value in ("not-a-token", advisor_token, tampered, manage + "x"):
        response = bridge.client.post("/ssf/stream", json={}, headers=bearer(value))
        assert response.status_code == 401
        assert response.json["error"] == "invalid_token"
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert streams(bridge) == 0


def test_a_token_dies_with_its_clients_receiver_role(bridge):
    manage = token(bridge).json["access_token"]
    assert bridge.client.get("/ssf/stream", headers=bearer(manage)).status_code == 200
    with bridge.services.db.transaction() as session:
        session.execute(update(Client).where(Client.client_id == RS_CLIENT_ID)
                        .values(roles="introspect"))
    bridge.services.server._clients.clear()  # the 5 s client cache, as time would
    response = bridge.client.get("/ssf/stream", headers=bearer(manage))
    assert response.status_code == 401 and response.json["error"] == "invalid_token"


def test_no_credentials_are_challenged_for_both_schemes(bridge):
    response = bridge.client.get("/ssf/stream")
    assert response.status_code == 401
    assert response.json["error"] == "invalid_client"
    assert "Bearer" in response.headers["WWW-Authenticate"]
    assert "Basic" in response.headers["WWW-Authenticate"]
