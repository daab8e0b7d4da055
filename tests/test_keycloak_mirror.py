"""Keycloak admin adapter against a fake admin REST API: memberships mirrored into groups
through the outbox, Keycloak outages never delaying revocation, reconcile, account state."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from flask import Flask, jsonify, request
from sqlalchemy import select, update

from conftest import TENANT, Bridge, ServerThread, build_app
from idp_bridge.devidp import DEMO_USERS, DevProvider
from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import Membership, OutboxItem

BOB = DEMO_USERS["bob"]["sub"]
CAROL = DEMO_USERS["carol"]["sub"]
KC_SECRET = "kc-service-account-secret-" + "s" * 20


class FakeKeycloak:
    """The admin REST calls the bridge uses, with groups, users and an off switch."""

    def __init__(self):
        self.down = False
        self.groups = {}  # path -> {"id", "members": set()}
        self.users = {user["sub"]: {
            "enabled": True, "username": name, "firstName": user["name"].split()[0],
            "lastName": user["name"].split()[1], "email": user["email"], "emailVerified": True}
            for name, user in DEMO_USERS.items()}
        self.roles = {user["sub"]: set(user["realm_roles"]) for user in DEMO_USERS.values()}
        self.calls = []
        app = Flask("fake-keycloak")

        @app.before_request
        def outage():
            self.calls.append((request.method, request.path))
            if self.down:
                return "down", 503
            if request.path.startswith("/admin/") and \
                    request.headers.get("Authorization") != "Bearer admin-token":
                return "", 401

        @app.post("/realms/konfipay/protocol/openid-connect/token")
        def token():
            auth = request.authorization
            if not auth or auth.password != KC_SECRET or \
                    request.form.get("grant_type") != "client_credentials":
                return jsonify(error="unauthorized_client"), 401
            return jsonify(access_token="admin-token", expires_in=300)

        @app.get("/admin/realms/konfipay/group-by-path/<path:path>")
        def by_path(path):
            group = self.groups.get("/" + path)
            return (jsonify(id=group["id"], path="/" + path), 200) if group else ("", 404)

        def create(path):
            if path in self.groups:
                return "", 409
            self.groups[path] = {"id": str(uuid.uuid4()), "members": set()}
            return "", 201

        @app.post("/admin/realms/konfipay/groups")
        def top():
            return create("/" + request.json["name"])

        @app.post("/admin/realms/konfipay/groups/<gid>/children")
        def child(gid):
            parent = next(p for p, g in self.groups.items() if g["id"] == gid)
            return create(f"{parent}/{request.json['name']}")

        @app.get("/admin/realms/konfipay/groups/<gid>/members")
        def members(gid):
            group = next(g for g in self.groups.values() if g["id"] == gid)
            first, size = int(request.args["first"]), int(request.args["max"])
            return jsonify([{"id": m} for m in sorted(group["members"])][first:first + size])

        @app.route("/admin/realms/konfipay/users/<uid>/groups/<gid>", methods=["PUT", "DELETE"])
        def membership(uid, gid):
            if uid not in self.users:
                return "", 404
            group = next(g for g in self.groups.values() if g["id"] == gid)
            (group["members"].add if request.method == "PUT" else group["members"].discard)(uid)
            return "", 204

        @app.get("/admin/realms/konfipay/users/<uid>")
        def user(uid):
            if uid not in self.users:
                return "", 404
            return jsonify(id=uid, **self.users[uid])

        @app.get("/admin/realms/konfipay/users")
        def search():
            # Keycloak's search: a prefix of username, first or last name or e-mail.
            text = request.args.get("search", "").lower()
            size = int(request.args.get("max", 100))
            found = [{"id": uid, **u} for uid, u in sorted(self.users.items())
                     if any(str(u.get(k, "")).lower().startswith(text)
                            for k in ("username", "firstName", "lastName", "email"))]
            return jsonify(found[:size])

        @app.get("/admin/realms/konfipay/users/<uid>/role-mappings/realm/composite")
        def realm_roles(uid):
            if uid not in self.users:
                return "", 404
            return jsonify([{"name": r} for r in sorted(self.roles.get(uid, ()))])

        self.app = app

    def members(self, path):
        return self.groups.get(path, {}).get("members", set())


@pytest.fixture
def keycloak_env(tmp_path, settings, new_database_url):
    fake = FakeKeycloak()
    holder = {}

    def dispatch(environ, start_response):
        path = environ["PATH_INFO"]
        target = fake.app if path.startswith("/admin/") or path.endswith(
            "/protocol/openid-connect/token") else holder["provider"]
        return target(environ, start_response)

    with ServerThread(dispatch) as server:
        issuer = f"http://127.0.0.1:{server.port}/realms/konfipay"
        provider = DevProvider(issuer, mode="test")
        holder["provider"] = provider.create_app()
        app = build_app(settings.replace(
            upstream_issuer=issuer, keycloak_admin=True, keycloak_client_secret=KC_SECRET,
            database_url=new_database_url()))
        yield Bridge(app, app.test_client(), provider), fake


def work(bridge):
    return bridge.services.mirror.work_once()


def test_membership_is_mirrored_into_the_advisor_group(keycloak_env):
    bridge, fake = keycloak_env
    bridge.join("bob")
    assert work(bridge) == 1
    assert fake.members("/tenants/10042/advisors") == {BOB}
    mid = bridge.membership_id("bob")
    assert bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{mid}").status_code == 204
    assert work(bridge) == 1
    assert fake.members("/tenants/10042/advisors") == set()


def test_keycloak_down_never_delays_revocation(keycloak_env):
    bridge, fake = keycloak_env
    tokens = bridge.join("bob")
    work(bridge)
    fake.down = True
    mid = bridge.membership_id("bob")
    assert bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{mid}").status_code == 204
    assert bridge.introspect(tokens["access_token"]).json == {"active": False}
    assert work(bridge) == 0  # Keycloak down: the item waits with a backoff
    with bridge.services.db.read() as session:
        item = session.scalars(select(OutboxItem).where(OutboxItem.done_at.is_(None))).one()
    assert item.attempts == 1 and "503" in item.last_error
    assert fake.members("/tenants/10042/advisors") == {BOB}  # drift, for now
    fake.down = False
    assert work(bridge) == 0  # not due yet
    with bridge.services.db.transaction() as session:
        session.execute(update(OutboxItem).values(next_attempt_at=utcnow()))
    assert work(bridge) == 1
    assert fake.members("/tenants/10042/advisors") == set()


def test_outbox_items_are_idempotent_and_order_free(keycloak_env):
    bridge, fake = keycloak_env
    bridge.join("bob")
    mid = bridge.membership_id("bob")
    bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{mid}")
    bridge.join("bob")  # joined again: the desired state is "member"
    assert work(bridge) == 3
    assert fake.members("/tenants/10042/advisors") == {BOB}


def test_reconcile_repairs_drift_both_ways(keycloak_env):
    bridge, fake = keycloak_env
    bridge.join("bob")
    work(bridge)
    fake.members("/tenants/10042/advisors").add(CAROL)     # a stray member in Keycloak
    fake.members("/tenants/10042/advisors").discard(BOB)   # a lost one
    changes = bridge.services.mirror.reconcile()
    assert sorted(changes) == [f"added {BOB} to /tenants/10042/advisors",
                               f"removed {CAROL} from /tenants/10042/advisors"]
    assert fake.members("/tenants/10042/advisors") == {BOB}
    assert bridge.services.mirror.reconcile() == []


@pytest.mark.parametrize("change", ["disabled", "deleted"])
def test_ended_account_loses_memberships_at_next_exchange(keycloak_env, change):
    bridge, fake = keycloak_env
    tokens = bridge.join("bob")
    if change == "disabled":
        fake.users[BOB]["enabled"] = False
    else:
        del fake.users[BOB]
    bridge.services.mirror._active_seen.clear()  # as after the cache interval
    response = bridge.exchange("bob")
    assert response.status_code == 400
    assert response.json["error"] == "invalid_grant"
    assert change in response.json["error_description"]
    assert bridge.introspect(tokens["access_token"]).json == {"active": False}
    refresh = bridge.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 400 and refresh.json["error"] == "invalid_grant"
    with bridge.services.db.read() as session:
        ended = session.scalars(select(Membership.end_reason)).all()
    assert ended == ["upstream_account_ended"]


def test_ended_account_is_swept_without_any_request(keycloak_env):
    bridge, fake = keycloak_env
    tokens = bridge.join("bob")
    bridge.join("carol")
    fake.users[BOB]["enabled"] = False
    assert bridge.services.maintenance.run_once() == 1
    assert bridge.introspect(tokens["access_token"]).json == {"active": False}
    assert [m["advisor"] for m in bridge.api(
        "get", f"/api/tenants/{TENANT}/memberships").json["memberships"]] == [CAROL]


def test_refresh_checks_the_account(keycloak_env):
    bridge, fake = keycloak_env
    tokens = bridge.join("bob")
    fake.users[BOB]["enabled"] = False
    bridge.services.mirror._active_seen.clear()
    refresh = bridge.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 400
    assert refresh.json["error"] == "invalid_grant"
    assert "disabled" in refresh.json["error_description"]


def test_keycloak_down_fails_closed_without_a_recent_answer(keycloak_env):
    bridge, fake = keycloak_env
    fake.down = True
    code = bridge._code_direct(TENANT)
    response = bridge.exchange("bob", code=code)
    assert response.status_code == 503
    assert response.json["error"] == "temporarily_unavailable"
    with bridge.services.db.read() as session:
        assert session.scalars(select(Membership)).all() == []


def test_keycloak_down_with_a_recent_positive_answer_still_serves(keycloak_env):
    bridge, fake = keycloak_env
    bridge.join("bob")
    fake.down = True
    mirror = bridge.services.mirror
    mirror._active_seen[BOB] -= mirror.cache_seconds + 1  # cache expired, answer still recent
    assert bridge.exchange("bob").status_code == 200


def test_settings_need_a_keycloak_realm_and_secret(settings):
    from idp_bridge.settings import SettingsError

    with pytest.raises(SettingsError, match="keycloak_client_secret"):
        settings.replace(keycloak_admin=True, upstream_issuer="http://127.0.0.1:9/realms/x")
    with pytest.raises(SettingsError, match="Keycloak realm URL"):
        settings.replace(keycloak_admin=True, keycloak_client_secret="x" * 40)
