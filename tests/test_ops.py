"""Operations endpoints and logs: liveness, readiness, metrics, request ids, JSON lines."""

from __future__ import annotations

import json
import logging

from conftest import Bridge, active_memberships
from idp_bridge.ops import JsonFormatter


def test_health_and_readiness(client):
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json == {"status": "ready", "checks": {"database": "ok", "signing_keys": "ok"}}
    assert ready.headers["Cache-Control"] == "no-store"


def test_readiness_reports_an_unreachable_database(app, client, monkeypatch):
    from idp_bridge.app import services

    def broken():
        raise OSError("down")

    monkeypatch.setattr(services(app).db.engine, "connect", broken)
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json["checks"]["database"] == "unreachable"
    assert ready.json["reasons"] == {"database": "the database does not answer"}


def test_a_key_encryption_key_that_does_not_open_the_signing_keys(settings, bridge):
    """Another process started with another key-encryption key (a typo, a lost key): it
    cannot sign, so it is not ready, and nothing that needs the keys answers 500 or
    issues anything."""
    from cryptography.fernet import Fernet

    from conftest import build_app

    bridge.join("bob")  # the first app made the signing key and a membership
    members = len(active_memberships(bridge))
    other_kek = Fernet.generate_key().decode()
    locked = build_app(settings.replace(key_encryption_key=other_kek))
    client = locked.test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json["status"] == "not_ready"
    assert ready.json["checks"] == {"database": "ok", "signing_keys": "undecryptable"}
    assert "IDP_BRIDGE_KEY_ENCRYPTION_KEY does not decrypt" in ready.json["reasons"]["signing_keys"]
    jwks = client.get("/jwks")
    assert jwks.status_code == 503
    assert jwks.json == {"error": "temporarily_unavailable",
                         "error_description": "the signing keys are unavailable"}
    assert jwks.headers["Cache-Control"] == "no-store"
    exchange = Bridge(locked, client, bridge.upstream).exchange("carol", code=bridge.current_code())
    assert exchange.status_code == 503
    assert exchange.json["error"] == "temporarily_unavailable"
    assert "access_token" not in exchange.json
    assert len(active_memberships(bridge)) == members  # carol did not join
    for answer in (ready, jwks, exchange):
        assert other_kek not in answer.get_data(as_text=True)
        assert settings.key_encryption_key not in answer.get_data(as_text=True)
    # The right key opens them again: the same database is ready for the first app.
    assert bridge.client.get("/readyz").status_code == 200


def test_metrics_count_token_requests_and_revocations(bridge):
    tokens = bridge.join("bob")
    bridge.exchange("bob", code="0000-0000", tenant="20077")  # a wrong code elsewhere
    mid = bridge.membership_id("bob")
    bridge.api("delete", f"/api/tenants/10042/memberships/{mid}")
    bridge.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    text = bridge.client.get("/metrics").text
    assert 'idp_bridge_token_requests_total{grant_type="token-exchange",outcome="ok"}' in text
    assert 'idp_bridge_token_requests_total{grant_type="refresh_token",outcome="invalid_grant"}' in text
    assert 'idp_bridge_access_code_checks_total{result="wrong"}' in text
    assert 'idp_bridge_revocations_total{kind="grant",reason="removed_by_tenant"}' in text
    assert bridge.secret not in text


def test_request_id_is_echoed_or_made(client):
    given = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["X-Request-ID"] == "abc-123"
    made = client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert made.headers["X-Request-ID"] != "bad id with spaces"
    assert len(made.headers["X-Request-ID"]) == 32


def test_json_log_lines_carry_the_request_id(app):
    formatter = JsonFormatter()
    with app.test_request_context("/token", headers={"X-Request-ID": "req-1"}):
        from idp_bridge.ops import assign_request_id

        assign_request_id()
        record = logging.LogRecord("idp_bridge", logging.WARNING, __file__, 1,
                                   "refused %s", ("x",), None)
        line = json.loads(formatter.format(record))
    assert line["request_id"] == "req-1"
    assert line["message"] == "refused x"
    assert line["level"] == "warning"
    assert line["path"] == "/token"


def test_no_secret_in_logs_of_a_failed_exchange(bridge, caplog):
    caplog.set_level(logging.DEBUG)
    bridge.exchange("bob", code="0000-0000")
    bridge.token({"grant_type": "refresh_token", "refresh_token": "x" * 40},
                 auth=("advisor-console", "wrong-" + "s" * 40))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert bridge.secret not in logged
    assert "wrong-" + "s" * 40 not in logged
