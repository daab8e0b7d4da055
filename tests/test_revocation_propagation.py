"""End to end: the bridge's revocation feed and ``scopes.guard`` resource servers.

The bridge is served for real on loopback; resource servers run the guard with its
listener. Assertions are about correctness (every receiver rejects the token after the
removal), never about speed; waits are bounded and generous.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import RS_CLIENT_ID, TENANT, Bridge, ServerThread, build_app, wait_until
from scopes.guard import InvalidToken, TokenGuard

RECEIVER = Path(__file__).resolve().parents[1] / "bench" / "revocation_receiver.py"
EXAMPLE_RS = Path(__file__).resolve().parents[1] / "deploy" / "example-resource-server" / \
    "example_resource_server.py"


@pytest.fixture
def served(settings, upstream, tmp_path):
    """A bridge whose issuer is the URL it is really served at."""
    holder = {}

    def app(environ, start_response):
        return holder["app"](environ, start_response)

    with ServerThread(app) as server:
        issuer = f"http://127.0.0.1:{server.port}"
        flask_app = build_app(settings.replace(issuer=issuer, ssf_long_poll_seconds=10))
        holder["app"] = flask_app
        yield issuer, Bridge(flask_app, flask_app.test_client(), upstream)


def rejected(guard, token):
    try:
        guard.validate(token, tenant=TENANT, scope="payments:read")
    except InvalidToken as exc:
        return "revoked" in exc.description
    return False


def test_removal_reaches_a_listening_guard(served):
    issuer, bridge = served
    guard = TokenGuard(issuer, "konfipay-api")
    guard.start_revocation_listener(RS_CLIENT_ID, bridge.rs_secret)
    try:
        wait_until(lambda: guard.feed_healthy, timeout=20, what="a healthy feed")
        tokens = bridge.join("bob")
        claims = guard.validate(tokens["access_token"], tenant=TENANT, scope="payments:read")
        assert claims["membership"] == "temporary"
        mid = bridge.membership_id("bob")
        assert bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{mid}").status_code == 204
        wait_until(lambda: rejected(guard, tokens["access_token"]), timeout=20,
                   what="the guard rejecting the revoked token")
    finally:
        guard.stop_revocation_listener()


def test_refresh_reuse_reaches_the_guard_by_sid(served):
    issuer, bridge = served
    guard = TokenGuard(issuer, "konfipay-api")
    guard.start_revocation_listener(RS_CLIENT_ID, bridge.rs_secret)
    try:
        wait_until(lambda: guard.feed_healthy, timeout=20, what="a healthy feed")
        tokens = bridge.join("bob")
        bridge.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
        replay = bridge.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
        assert replay.json["error"] == "invalid_grant"
        wait_until(lambda: rejected(guard, tokens["access_token"]), timeout=20,
                   what="the guard rejecting the revoked token")
        # Another family of the same grant is untouched.
        other = bridge.exchange("bob").json["access_token"]
        assert guard.validate(other, tenant=TENANT, scope="payments:read")["sub"]
    finally:
        guard.stop_revocation_listener()


def test_example_resource_server(served):
    import importlib.util

    issuer, bridge = served
    spec = importlib.util.spec_from_file_location("example_rs", EXAMPLE_RS)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    guard = TokenGuard(issuer, "konfipay-api")
    guard.start_revocation_listener(RS_CLIENT_ID, bridge.rs_secret)
    try:
        wait_until(lambda: guard.feed_healthy, timeout=20, what="a healthy feed")
        rs = example.create_app(guard).test_client()
        # A multi-factor sign-in: writing a report steps up (RFC 9470, tests/test_step_up.py).
        tokens = bridge.join("bob", subject_token=bridge.upstream_token("bob", acr="2"))
        auth = {"Authorization": f"Bearer {tokens['access_token']}"}
        ebics = rs.get(f"/tenants/{TENANT}/ebics", headers=auth)
        assert ebics.status_code == 200
        assert ebics.json["items"] and all("ebics_private_key" not in i and "key_password" not in i
                                           for i in ebics.json["items"])
        api = rs.get(f"/tenants/{TENANT}/api", headers=auth).json["items"]
        assert all("client_secret" not in item for item in api)
        for area in example.CATALOG:
            assert rs.get(f"/tenants/{TENANT}/{area}", headers=auth).status_code == 200
        report = rs.post(f"/tenants/{TENANT}/evaluation/reports", headers=auth,
                         json={"title": "Monatsauswertung"})
        assert report.status_code == 201
        other = rs.get("/tenants/20077/payments", headers=auth)
        assert other.status_code == 401 and other.json["error"] == "invalid_token"
        narrow = bridge.exchange("bob", scope="payments:read").json["access_token"]
        denied = rs.post(f"/tenants/{TENANT}/evaluation/reports", json={"title": "x"},
                         headers={"Authorization": f"Bearer {narrow}"})
        assert denied.status_code == 403 and denied.json["error"] == "insufficient_scope"
        mid = bridge.membership_id("bob")
        bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{mid}")
        wait_until(lambda: rs.get(f"/tenants/{TENANT}/payments", headers=auth).status_code == 401,
                   timeout=20, what="the example resource server refusing the removed advisor")
    finally:
        guard.stop_revocation_listener()


def test_receiver_offline_during_removal_catches_up(served):
    issuer, bridge = served
    tokens = bridge.join("bob")
    mid = bridge.membership_id("bob")
    bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{mid}")
    guard = TokenGuard(issuer, "konfipay-api")  # starts after the removal
    guard.start_revocation_listener(RS_CLIENT_ID, bridge.rs_secret)
    try:
        wait_until(lambda: rejected(guard, tokens["access_token"]), timeout=20,
                   what="the guard rejecting the revoked token")
    finally:
        guard.stop_revocation_listener()


@pytest.mark.slow
def test_ten_receiver_processes_all_reject_after_one_removal(served):
    issuer, bridge = served
    receivers = [subprocess.Popen(
        [sys.executable, str(RECEIVER), issuer, "konfipay-api", RS_CLIENT_ID, bridge.rs_secret],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(10)]
    try:
        assert [r.stdout.readline().strip() for r in receivers] == ["READY"] * 10
        token = bridge.join("bob")["access_token"]
        for r in receivers:
            r.stdin.write(f"TOKEN {token}\n")
            r.stdin.flush()
        assert [r.stdout.readline().strip() for r in receivers] == ["OK"] * 10
        mid = bridge.membership_id("bob")
        assert bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{mid}").status_code == 204
        answers = [r.stdout.readline().split(" ")[0] for r in receivers]
        assert answers == ["REVOKED"] * 10
    finally:
        for r in receivers:
            try:
                r.stdin.write("QUIT\n")
                r.stdin.flush()
            except (BrokenPipeError, OSError):
                pass
        for r in receivers:
            try:
                r.wait(10)
            except subprocess.TimeoutExpired:
                r.kill()


def test_group_narrowing_reaches_a_listening_guard(served):
    from idp_bridge.devidp import DEMO_USERS

    issuer, bridge = served
    guard = TokenGuard(issuer, "konfipay-api")
    guard.start_revocation_listener(RS_CLIENT_ID, bridge.rs_secret)
    try:
        wait_until(lambda: guard.feed_healthy, timeout=20, what="a healthy feed")
        group = bridge.api("post", f"/api/tenants/{TENANT}/groups", json={
            "name": "Zahlungen", "permissions": ["payments:read", "payments:write"]}).json
        invitation = bridge.api("post", f"/api/tenants/{TENANT}/invitations", json={
            "group": group["id"], "subject": DEMO_USERS["bob"]["sub"]}).json
        assert bridge.api("post", f"/api/me/invitations/{invitation['id']}/accept",
                          user="bob").status_code == 201
        token = bridge.exchange("bob").json["access_token"]
        guard.validate(token, tenant=TENANT, scope="payments:write")
        bridge.api("patch", f"/api/tenants/{TENANT}/groups/{group['id']}",
                   json={"permissions": ["payments:read"]})
        wait_until(lambda: rejected(guard, token), timeout=20,
                   what="the guard rejecting the narrowed token")
        narrower = bridge.exchange("bob").json["access_token"]
        guard.validate(narrower, tenant=TENANT, scope="payments:read")
        with pytest.raises(Exception) as caught:
            guard.validate(narrower, tenant=TENANT, scope="payments:write")
        assert caught.value.error == "insufficient_scope"
    finally:
        guard.stop_revocation_listener()
