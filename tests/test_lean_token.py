"""POST /token is served by the lean WSGI adapter (idp_bridge/oauth/lean.py): no Flask
request context on its path, and hostile bodies get the same 4xx and ``error`` as before,
changing nothing."""

from __future__ import annotations

import flask
import pytest

from conftest import ACCESS_TOKEN_TYPE, TENANT, TOKEN_EXCHANGE, post_form
from test_hostile_input import assert_refused, unchanged  # noqa: F401 (fixture)


def test_token_requests_take_the_lean_path(bridge, monkeypatch):
    bridge.join("bob")
    server = bridge.services.server
    seen = []
    original = server.create_token_response

    def spy(request=None):
        seen.append(flask.has_request_context())
        return original(request)

    monkeypatch.setattr(server, "create_token_response", spy)
    response = post_form(bridge.client, "/token", [
        ("grant_type", TOKEN_EXCHANGE), ("subject_token", bridge.upstream_token("bob")),
        ("subject_token_type", ACCESS_TOKEN_TYPE), ("tenant", TENANT)], auth=bridge.auth())
    assert response.status_code == 200, response.get_data(True)
    assert seen == [False]
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    assert response.headers["X-Request-ID"]


def test_other_methods_on_token_stay_with_flask(bridge):
    response = bridge.client.get("/token")
    assert response.status_code == 405


def test_a_huge_token_body_is_refused(bridge, unchanged):  # noqa: F811
    unchanged()
    limit = bridge.services.settings.max_request_bytes
    response = bridge.client.post("/token", data=b"grant_type=" + b"x" * (limit + 10),
                                  content_type="application/x-www-form-urlencoded",
                                  auth=bridge.auth())
    assert_refused(response, 413, "invalid_request")


def test_a_repeated_credential_is_refused(bridge, unchanged):  # noqa: F811
    unchanged()
    client_id, secret = bridge.auth()
    response = post_form(bridge.client, "/token", [
        ("grant_type", "client_credentials"), ("client_id", client_id),
        ("client_secret", secret), ("client_secret", secret)])
    assert_refused(response, 401, "invalid_client")


def test_a_request_id_is_echoed(bridge):
    response = bridge.client.post("/token", data="grant_type=x",
                                  content_type="application/x-www-form-urlencoded",
                                  headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"
    assert response.get_json()["error"]
