"""The README's two worlds: `idp-bridge demo` and the CLI, run as real processes."""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from cryptography.fernet import Fernet
from sqlalchemy import select

from conftest import wait_until
from idp_bridge.storage.db import Database
from idp_bridge.storage.models import AuditEvent, NotificationItem, Revocation

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
CLI = [sys.executable, "-m", "idp_bridge.cli"]
ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # every test runs the CLI in a subprocess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args, env=None, check=True):
    result = subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=60,
                            env={**os.environ, **(env or {})})
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def demo(tmp_path):
    port, idp_port, rs_port = free_port(), free_port(), free_port()
    secret = secrets.token_urlsafe(32)
    env = _demo_env(tmp_path, IDP_BRIDGE_DEMO_CLIENT_SECRET=secret)
    proc = subprocess.Popen(CLI + ["demo", "--port", str(port), "--idp-port", str(idp_port),
                                   "--rs-port", str(rs_port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(base + "/jwks", timeout=1)
            break
        except requests.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("demo did not start:\n" + proc.stdout.read())
            time.sleep(0.2)
    yield {"base": base, "idp_port": idp_port, "secret": secret, "proc": proc,
           "rs": f"http://127.0.0.1:{rs_port}"}
    proc.terminate()
    try:
        output, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    # The secret came from the environment, so the demo must not print it.
    assert secret not in output
    assert _demo_folders(tmp_path) == []  # its temporary folder went with it


def _web_sign_in(base: str, user: str, next_path: str) -> tuple[requests.Session, str]:
    """Sign ``user`` in on the bridge's pages through the development provider; returns the
    browser-like session and the page at ``next_path``."""
    browser = requests.Session()
    login = browser.get(f"{base}/login", params={"next": next_path}, allow_redirects=False)
    assert login.status_code == 302
    authorize = requests.get(login.headers["Location"], params={"login_hint": user, "auto": "1"},
                             allow_redirects=False, timeout=5)
    assert authorize.status_code in (302, 303), authorize.text
    page = browser.get(authorize.headers["Location"])
    assert page.status_code == 200 and page.url == base + next_path, page.text[:500]
    return browser, page.text


def test_open_tenant_hands_tokens_to_the_example_application(demo):
    import re
    from html import unescape

    base = demo["base"]
    anna = cli("demo-token", "anna", "--idp-port", str(demo["idp_port"])).stdout.strip()
    bob = cli("demo-token", "bob", "--idp-port", str(demo["idp_port"])).stdout.strip()
    code = requests.get(f"{base}/api/tenants/10042/access-code",
                        headers={"Authorization": f"Bearer {anna}"}).json()["code"]
    joined = requests.post(f"{base}/token", auth=("advisor-console", demo["secret"]), data={
        "grant_type": TOKEN_EXCHANGE, "subject_token": bob,
        "subject_token_type": ACCESS_TOKEN_TYPE, "tenant": "10042", "access_code": code})
    assert joined.status_code == 200, joined.text

    browser, page = _web_sign_in(base, "bob", "/advisor")
    assert 'action="/advisor/tenants/10042/open"' in page  # app_url is set by the demo
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    handoff = browser.post(f"{base}/advisor/tenants/10042/open", data={"csrf_token": csrf},
                           headers={"Referer": f"{base}/advisor"})
    assert handoff.status_code == 200, handoff.text[:500]
    target = re.search(r'<form id="handoff-form" method="post" action="([^"]+)"',
                       handoff.text).group(1)
    assert target == f"{demo['rs']}/tenants/10042/open"
    fields = {name: unescape(value) for name, value in re.findall(
        r'<input type="hidden" name="([^"]+)" value="([^"]*)">', handoff.text)}
    application = requests.post(target, data=fields)
    assert application.status_code == 200, application.text
    assert "ISO 20022 and SEPA payments" in application.text and "Evaluation" in application.text
    assert 'id="payments"' in application.text
    assert fields["access_token"] not in application.text
    assert application.headers["Cache-Control"] == "no-store"
    # The page is bound to its tenant, and a forged token shows nothing.
    other = requests.post(f"{demo['rs']}/tenants/20077/open", data=fields)
    assert other.status_code == 401 and "not issued for this tenant" in other.text
    assert 'id="payments"' not in other.text
    forged = requests.post(target, data={"access_token": "x.y.z"})
    assert forged.status_code == 401 and 'id="areas"' not in forged.text


def test_anna_sees_what_bob_read_and_which_servers_confirmed_his_removal(demo):
    """Issue 14 item 5: the demo's example resource server records bob's reads and ships them;
    anna's access log shows them; after the removal the receipt names the example server."""
    base, rs = demo["base"], demo["rs"]
    anna = cli("demo-token", "anna", "--idp-port", str(demo["idp_port"])).stdout.strip()
    bob = cli("demo-token", "bob", "--idp-port", str(demo["idp_port"])).stdout.strip()
    as_anna = {"Authorization": f"Bearer {anna}"}
    code = requests.get(f"{base}/api/tenants/10042/access-code", headers=as_anna).json()["code"]
    joined = requests.post(f"{base}/token", auth=("advisor-console", demo["secret"]), data={
        "grant_type": TOKEN_EXCHANGE, "subject_token": bob,
        "subject_token_type": ACCESS_TOKEN_TYPE, "tenant": "10042", "access_code": code})
    assert joined.status_code == 200, joined.text
    token = joined.json()["access_token"]
    assert requests.get(f"{base}/api/tenants/10042/access", headers=as_anna).json() == \
        {"groups": []}
    for _ in range(3):
        read = requests.get(f"{rs}/tenants/10042/ebics",
                            headers={"Authorization": f"Bearer {token}"})
        assert read.status_code == 200, read.text

    def ebics_group():
        groups = requests.get(f"{base}/api/tenants/10042/access", headers=as_anna).json()
        found = [x for x in groups["groups"] if x["area"] == "ebics"]
        return found if found and found[0]["count"] == 3 else None

    (group,) = wait_until(ebics_group, timeout=60, interval=0.2,
                          what="bob's three EBICS reads in anna's access log")
    assert group["action"] == "read" and group["statuses"] == {"200": 3}
    assert group["advisor_name"] and group["advisor"] != group["advisor_name"]
    single = requests.get(f"{base}/api/tenants/10042/access/requests", headers=as_anna).json()
    assert [r["route"] for r in single["requests"]] == ["/tenants/<tenant>/ebics"] * 3
    assert {r["resource_server"] for r in single["requests"]} == {"example-resource-server"}

    (membership,) = requests.get(f"{base}/api/tenants/10042/memberships",
                                 headers=as_anna).json()["memberships"]
    removed = requests.delete(f"{base}/api/tenants/10042/memberships/{membership['id']}",
                              headers=as_anna)
    assert removed.status_code == 204, removed.text

    def confirmed():
        detail = requests.get(f"{base}/api/tenants/10042/memberships/{membership['id']}",
                              headers=as_anna).json()
        receipts = detail["revocation_receipts"]
        return receipts if receipts and all(r["confirmed"] == r["due"] >= 1
                                            for r in receipts) else None

    receipts = wait_until(confirmed, timeout=60, interval=0.2,
                          what="the example resource server confirming bob's removal")
    assert any(x["client_id"] == "example-resource-server" and x["confirmed"]
               for r in receipts for x in r["receipts"])
    after = requests.get(f"{rs}/tenants/10042/ebics", headers={"Authorization": f"Bearer {token}"})
    assert after.status_code == 401


def test_demo_token_unknown_user(demo):
    result = cli("demo-token", "mallory", "--idp-port", str(demo["idp_port"]), check=False)
    assert result.returncode != 0
    assert "unknown demo user" in result.stderr


def test_demo_token_without_provider():
    result = cli("demo-token", "bob", "--idp-port", str(free_port()), check=False)
    assert result.returncode != 0
    assert "start `idp-bridge demo` first" in result.stderr


@pytest.fixture
def operator_env(tmp_path):
    return {
        "IDP_BRIDGE_MODE": "production",
        "IDP_BRIDGE_ISSUER": "https://bridge.example",
        "IDP_BRIDGE_UPSTREAM_ISSUER": "https://sso.example/realms/konfipay",
        "IDP_BRIDGE_DATABASE_URL": f"sqlite:///{tmp_path}/op.sqlite",
        "IDP_BRIDGE_SECRET_KEY": secrets.token_urlsafe(32),
        "IDP_BRIDGE_KEY_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    }


def _expired_membership(database_url: str, tenant_id: str) -> str:
    from datetime import timedelta

    from idp_bridge.domain.memberships import Memberships
    from idp_bridge.storage.db import utcnow
    from idp_bridge.storage.models import Tenant

    db = Database(database_url)
    try:
        with db.transaction() as session:
            created = utcnow() - timedelta(days=40)
            membership = Memberships(default_max_age_days=30, reason_max_length=200).create(
                session, session.get(Tenant, tenant_id), subject="bob", name="bob",
                kind="temporary", created_by="bob", actor_role="advisor", now=created)
            return membership.grant_id
    finally:
        db.dispose()


def test_operator_commands(operator_env):
    assert "latest schema" in cli("db", "upgrade", env=operator_env).stdout
    cli("db", "upgrade", env=operator_env)  # idempotent
    assert "added" in cli("tenants", "add", "10042", "Muster GmbH", env=operator_env).stdout
    again = cli("tenants", "add", "10042", "Muster GmbH", env=operator_env, check=False)
    assert again.returncode != 0 and "exists" in again.stderr
    out = cli("clients", "add", "console", env=operator_env).stdout
    assert "client secret (shown once)" in out
    first = cli("keys", "rotate", env=operator_env).stdout
    second = cli("keys", "rotate", env=operator_env).stdout
    assert first.split()[3] != second.split()[3]
    assert "0 memberships expired" in cli("memberships", "expire", env=operator_env).stdout
    # A temporary membership past its maximum age ends through the revocation path: the
    # grant on the feed, the audit event.
    grant_id = _expired_membership(operator_env["IDP_BRIDGE_DATABASE_URL"], "10042")
    webhook = {**operator_env, "IDP_BRIDGE_WEBHOOK_URL": "https://hooks.example/advisors",
               "IDP_BRIDGE_WEBHOOK_SECRET": secrets.token_urlsafe(32)}
    assert "1 memberships expired" in cli("memberships", "expire", env=webhook).stdout
    db = Database(operator_env["IDP_BRIDGE_DATABASE_URL"])
    try:
        with db.read() as session:
            [revocation] = session.scalars(select(Revocation)).all()
            assert (revocation.kind, revocation.value, revocation.reason) == (
                "grant", grant_id, "expired")
            assert session.scalars(select(AuditEvent).where(
                AuditEvent.event == "membership.ended")).one().detail["reason"] == "expired"
            # ... and the tenant admins' notification is queued like the maintenance loop's.
            [item] = session.scalars(select(NotificationItem)).all()
            assert (item.channel, item.event, item.tenant_id) == ("webhook", "advisor.expired", "10042")
    finally:
        db.dispose()
    assert "0 memberships expired" in cli("memberships", "expire", env=operator_env).stdout
    assert len(cli("keys", "new-kek").stdout.strip()) == 44


@pytest.mark.parametrize("key,value,message", [
    ("IDP_BRIDGE_SECRET_KEY", "demo-" + "x" * 40, "IDP_BRIDGE_SECRET_KEY"),
    ("IDP_BRIDGE_ISSUER", "http://bridge.example", "IDP_BRIDGE_ISSUER"),
    ("IDP_BRIDGE_KEY_ENCRYPTION_KEY", "short", "IDP_BRIDGE_KEY_ENCRYPTION_KEY"),
    ("IDP_BRIDGE_KEY_ENCRYPTION_KEY", "", "IDP_BRIDGE_KEY_ENCRYPTION_KEY"),  # missing
    ("IDP_BRIDGE_UPSTREAM_ALGORITHMS", "HS256", "IDP_BRIDGE_UPSTREAM_ALGORITHMS"),
])
def test_bad_settings_stop_the_start(operator_env, tmp_path, key, value, message):
    before = sorted(tmp_path.iterdir())
    result = cli("serve", "--port", str(free_port()), env={**operator_env, key: value},
                 check=False)
    assert result.returncode != 0
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert sorted(tmp_path.iterdir()) == before  # refusing to start creates nothing


def test_serve_refuses_unmigrated_database(operator_env, tmp_path):
    result = cli("serve", "--port", str(free_port()), env=operator_env, check=False)
    assert result.returncode != 0
    assert "idp-bridge db upgrade" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no database file was made


def test_serve_refusing_creates_no_files(operator_env, tmp_path):
    """The default database (sqlite:///instance/...) relative to the working folder: neither
    the folder nor the file appears when serve refuses."""
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in operator_env.items() if k != "IDP_BRIDGE_DATABASE_URL"}
    result = subprocess.run(CLI + ["serve", "--port", str(free_port())], cwd=work,
                            capture_output=True, text=True, timeout=60, env={
                                **{k: v for k, v in os.environ.items()
                                   if not k.startswith("IDP_BRIDGE_")}, **env,
                                "PYTHONPATH": str(ROOT)})
    assert result.returncode != 0
    assert result.stderr.strip() == ("Error: the database does not exist; run: "
                                     "idp-bridge db upgrade")
    assert list(work.iterdir()) == []


def test_serve_refuses_a_schema_behind_the_migrations(operator_env):
    from sqlalchemy import text

    cli("db", "upgrade", env=operator_env)
    db = Database(operator_env["IDP_BRIDGE_DATABASE_URL"])
    try:
        with db.engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    finally:
        db.dispose()
    result = cli("serve", "--port", str(free_port()), env=operator_env, check=False)
    assert result.returncode != 0
    assert "schema is at revision 0001" in result.stderr
    assert "run: idp-bridge db upgrade" in result.stderr


def test_db_upgrade_needs_only_the_database_url(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_BRIDGE_")}
    url = f"sqlite:///{tmp_path}/only.sqlite"
    result = subprocess.run(CLI + ["--database-url", url, "db", "upgrade"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for command in (["tenants", "add", "10042", "Muster GmbH"], ["clients", "add", "console"]):
        added = subprocess.run(CLI + ["--database-url", url] + command, env=env,
                               capture_output=True, text=True, timeout=60)
        assert added.returncode == 0, added.stderr
    # ... while a typo in a variable name is still refused.
    typo = subprocess.run(CLI + ["--database-url", url, "db", "upgrade"],
                          env={**env, "IDP_BRIDGE_DATABASE_ULR": url},
                          capture_output=True, text=True, timeout=60)
    assert typo.returncode != 0 and "IDP_BRIDGE_DATABASE_ULR" in typo.stderr


# --- a key-encryption key that does not open the signing keys ---

def _signing_keys(database_url: str) -> list[str]:
    from idp_bridge.storage.models import SigningKey

    db = Database(database_url)
    try:
        with db.read() as session:
            return sorted(session.scalars(select(SigningKey.kid)).all())
    finally:
        db.dispose()


def test_a_wrong_key_encryption_key_stops_every_command_that_needs_keys(operator_env):
    cli("db", "upgrade", env=operator_env)
    cli("keys", "rotate", env=operator_env)
    keys = _signing_keys(operator_env["IDP_BRIDGE_DATABASE_URL"])
    wrong = {**operator_env, "IDP_BRIDGE_KEY_ENCRYPTION_KEY": Fernet.generate_key().decode()}
    for command in (["serve", "--port", str(free_port())], ["keys", "rotate"]):
        result = cli(*command, env=wrong, check=False)
        assert result.returncode != 0, command
        assert result.stderr.startswith("Error: setting IDP_BRIDGE_KEY_ENCRYPTION_KEY "), \
            result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
        assert wrong["IDP_BRIDGE_KEY_ENCRYPTION_KEY"] not in result.stderr
    assert _signing_keys(operator_env["IDP_BRIDGE_DATABASE_URL"]) == keys  # nothing changed
    # The demo on that database (a key-encryption key of its own) stops the same way.
    demo = cli("--database-url", operator_env["IDP_BRIDGE_DATABASE_URL"], "demo",
               "--port", str(free_port()), "--idp-port", str(free_port()), "--rs-port", "0",
               env={k: v for k, v in operator_env.items() if k != "IDP_BRIDGE_KEY_ENCRYPTION_KEY"},
               check=False)
    assert demo.returncode != 0
    assert "Error: setting IDP_BRIDGE_KEY_ENCRYPTION_KEY " in demo.stderr
    assert "Traceback" not in demo.stderr
    # A lost key-encryption key: --recover makes a new active key under the new one.
    recovered = cli("keys", "rotate", "--recover", env=wrong)
    assert "is active" in recovered.stdout
    assert len(_signing_keys(operator_env["IDP_BRIDGE_DATABASE_URL"])) == len(keys) + 1
    assert cli("keys", "rotate", env=wrong).returncode == 0


# --- the demo: its folder, its errors, its log ---

def _demo_env(tmp_path, **extra):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir(exist_ok=True)
    return {**{k: v for k, v in os.environ.items() if not k.startswith("IDP_BRIDGE_")},
            "TMPDIR": str(tmpdir), **extra}


def _demo_folders(tmp_path):
    return sorted((tmp_path / "tmp").glob("idp-bridge-demo-*"))


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_the_demo_removes_its_folder_when_stopped(tmp_path, stop):
    port = free_port()
    proc = subprocess.Popen(CLI + ["demo", "--port", str(port), "--idp-port", str(free_port()),
                                   "--rs-port", str(free_port())],
                            env=_demo_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(f"http://127.0.0.1:{port}/readyz", proc)
        assert len(_demo_folders(tmp_path)) == 1
        proc.send_signal(stop)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert _demo_folders(tmp_path) == []
    assert "Traceback" not in output


def _wait_for(url, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("demo did not start:\n" + proc.stdout.read())
        time.sleep(0.1)


@pytest.mark.parametrize("taken,server,flag", [
    ("--port", "bridge", "--port"),
    ("--idp-port", "development OpenID provider", "--idp-port"),
    ("--rs-port", "example resource server", "--rs-port"),
])
def test_a_port_in_use_is_a_one_line_error_naming_server_and_flag(tmp_path, taken, server, flag):
    with socket.socket() as occupant:
        occupant.bind(("127.0.0.1", 0))
        occupant.listen()
        busy = occupant.getsockname()[1]
        ports = {"--port": free_port(), "--idp-port": free_port(), "--rs-port": free_port()}
        ports[taken] = busy
        result = subprocess.run(CLI + ["demo"] + [x for pair in ports.items() for x in
                                                  (pair[0], str(pair[1]))],
                                env=_demo_env(tmp_path), capture_output=True, text=True,
                                timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip() == (f"Error: port {busy} is in use: the {server} cannot listen "
                                     f"on it; choose another port with {flag}")
    assert _demo_folders(tmp_path) == []


@pytest.mark.parametrize("variable,value,message", [
    ("IDP_BRIDGE_DEMO_CLIENT_SECRET", "short", "IDP_BRIDGE_DEMO_CLIENT_SECRET must have at "
     "least 32 characters"),
    ("IDP_BRIDGE_DEMO_RS_SECRET", "x" * 31, "IDP_BRIDGE_DEMO_RS_SECRET must have at least 32"),
    ("IDP_BRIDGE_SECRET_KEY", "too-short", "setting IDP_BRIDGE_SECRET_KEY (secret_key): is "
     "required and must be at least 32 characters"),
])
def test_a_short_demo_secret_is_a_one_line_error(tmp_path, variable, value, message):
    result = subprocess.run(CLI + ["demo", "--port", str(free_port()), "--idp-port",
                                   str(free_port()), "--rs-port", str(free_port())],
                            env=_demo_env(tmp_path, **{variable: value}), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    error = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and message in error[0], result.stderr
    assert "Traceback" not in result.stderr and value not in result.stderr
    assert _demo_folders(tmp_path) == []


def test_the_demo_request_log(caplog):
    """One line per request: server, method, path without the query string, status; feed
    polls only when they carried events (a resource server repeats them every 15 s)."""
    import logging

    import threading

    from flask import Flask, jsonify
    from werkzeug.serving import make_server

    from idp_bridge import cli as cli_module

    app = Flask("feed")
    answers = iter([{"sets": {}}, {"sets": {"jti-1": "x.y.z", "jti-2": "x.y.z"}}])

    @app.post("/ssf/poll/<stream_id>")
    def poll(stream_id):
        return jsonify({**next(answers), "moreAvailable": False})

    @app.get("/auth/callback")
    def callback():
        return "signed in"

    server = make_server("127.0.0.1", 0, cli_module._FeedPollEvents(app), threaded=True,
                         request_handler=cli_module._request_handler("bridge"))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    caplog.set_level(logging.INFO, logger="idp_bridge.demo")
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        assert requests.post(f"{base}/ssf/poll/s1", json={}).json()["sets"] == {}
        assert len(requests.post(f"{base}/ssf/poll/s1", json={}).json()["sets"]) == 2
        assert requests.get(f"{base}/auth/callback?code=secret-code&state=s").text == "signed in"
    finally:
        server.shutdown()
        thread.join(5)
    lines = [r.getMessage() for r in caplog.records if r.name == "idp_bridge.demo"
             and r.levelno >= logging.INFO]
    assert lines == ["bridge: POST /ssf/poll/s1 200 (2 events)",
                     "bridge: GET /auth/callback 200"]


def _start_demo(args, env, log):
    """Start the demo, wait for the end of its banner (everything runs), stop it; its output."""
    with open(log, "w") as out:
        proc = subprocess.Popen(CLI + args + ["demo", "--port", str(free_port()), "--idp-port",
                                              str(free_port()), "--rs-port", str(free_port())],
                                env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while "Upstream tokens for the demo users" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("demo did not start:\n" + log.read_text())
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    output = log.read_text()
    assert proc.returncode == 0, output
    return output


def test_the_demo_on_a_kept_database_says_what_to_keep(tmp_path):
    """With --database-url the data stays (no temporary folder): the demo prints the
    key-encryption key it made, and a second run with that key finds its clients, whose
    secrets it cannot know."""
    url = f"sqlite:///{tmp_path}/kept.sqlite"
    first = _start_demo(["--database-url", url], _demo_env(tmp_path), tmp_path / "first.log")
    kek = re.search(r"^  export IDP_BRIDGE_KEY_ENCRYPTION_KEY=(\S+)$", first, re.MULTILINE)
    assert kek, first
    assert "export IDP_BRIDGE_DEMO_CLIENT_SECRET=" in first
    second = _start_demo(["--database-url", url], _demo_env(
        tmp_path, IDP_BRIDGE_KEY_ENCRYPTION_KEY=kek.group(1)), tmp_path / "second.log")
    assert "IDP_BRIDGE_KEY_ENCRYPTION_KEY=" not in second  # it was given this time
    assert ("client:            advisor-console, already in this database (its secret was "
            "printed when it was made: set IDP_BRIDGE_DEMO_CLIENT_SECRET)") in second
    assert "the resource server does not hear the revocation feed" in second
    assert _demo_folders(tmp_path) == []
