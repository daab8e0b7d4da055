"""``idp-bridge doctor`` (idp_bridge/doctor.py): every check passing and failing for real — a
migrated database and one that is not, the right and a wrong key-encryption key, the
development provider and a closed loopback port, Redis up and down, the real Keycloak with
the right and a wrong service-account secret, push endpoints inside and outside the egress
policy — with no secret in any line and every outbound request bounded by the timeout."""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
import subprocess
import sys
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from conftest import RS_CLIENT_ID, build_app
from idp_bridge.doctor import FAIL, OK, SKIP, Check, run_checks
from idp_bridge.storage.db import Database, utcnow
from idp_bridge.storage.models import SsfStream

CLI = [sys.executable, "-m", "idp_bridge.cli"]
NAMES = ["settings", "database", "signing keys", "audit chains", "upstream", "redis",
         "keycloak admin", "push destinations"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_overrides(settings, **changes) -> dict:
    """The settings as the CLI's overrides (what the environment would give)."""
    values = dataclasses.asdict(settings)
    values.update(changes)
    return values


def doctor(settings, timeout: float = 3.0, **changes) -> dict[str, Check]:
    checks = run_checks(as_overrides(settings, **changes), environ={}, timeout=timeout)
    return {check.name: check for check in checks}


def statuses(checks: dict[str, Check]) -> dict[str, str]:
    return {name: check.status for name, check in checks.items()}


def assert_no_secret(checks, *secrets_):
    text_ = "\n".join(check.line() for check in (checks.values() if isinstance(checks, dict)
                                                 else checks))
    for secret in secrets_:
        assert secret not in text_


# --- a healthy installation, then one thing wrong at a time ------------------------------------

def test_a_healthy_installation(settings):
    build_app(settings)  # makes the first signing key
    checks = doctor(settings)
    assert list(checks) == NAMES
    assert statuses(checks) == {"settings": OK, "database": OK, "signing keys": OK,
                                "audit chains": OK, "upstream": OK, "redis": SKIP,
                                "keycloak admin": SKIP, "push destinations": SKIP}
    assert "schema at the latest revision" in checks["database"].detail
    assert "opens the active key" in checks["signing keys"].detail
    assert "discovery and JWK set" in checks["upstream"].detail
    assert_no_secret(checks, settings.secret_key, settings.key_encryption_key)


def test_a_database_without_keys_yet_is_fine(settings):
    checks = doctor(settings)
    assert checks["signing keys"].status == OK
    assert "the first start makes one" in checks["signing keys"].detail


def test_a_wrong_key_encryption_key(settings):
    build_app(settings)
    wrong = Fernet.generate_key().decode()
    checks = doctor(settings, key_encryption_key=wrong)
    assert checks["signing keys"].status == FAIL
    assert "IDP_BRIDGE_KEY_ENCRYPTION_KEY does not decrypt" in checks["signing keys"].detail
    assert "keys rotate --recover" in checks["signing keys"].fix
    assert_no_secret(checks, wrong, settings.key_encryption_key, settings.secret_key)


def test_invalid_settings_fail_and_skip_what_needs_them(settings):
    checks = doctor(settings, secret_key="short")
    assert checks["settings"].status == FAIL
    assert "IDP_BRIDGE_SECRET_KEY" in checks["settings"].detail
    assert "correct or set IDP_BRIDGE_SECRET_KEY" in checks["settings"].fix
    # The database is still checked (it needs only its URL); the rest is skipped.
    assert checks["database"].status == OK
    assert {checks[name].status for name in NAMES[2:]} == {SKIP}
    assert_no_secret(checks, "short")


def test_a_missing_sqlite_database_is_reported_not_made(settings, tmp_path):
    path = tmp_path / "nothing-here" / "bridge.sqlite"
    checks = doctor(settings, database_url=f"sqlite:///{path}")
    assert checks["database"].status == FAIL
    assert "does not exist" in checks["database"].detail
    assert checks["database"].fix == "run idp-bridge db upgrade"
    assert checks["signing keys"].status == SKIP
    assert checks["push destinations"].status == SKIP
    assert not path.parent.exists()  # the doctor changes nothing


def test_a_schema_behind_the_migrations(settings):
    db = Database(settings.database_url)
    try:
        with db.engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '0003'"))
    finally:
        db.dispose()
    checks = doctor(settings)
    assert checks["database"].status == FAIL
    assert "schema is at revision 0003" in checks["database"].detail
    assert checks["database"].fix == "run idp-bridge db upgrade"


@pytest.mark.slow
def test_a_postgresql_database_not_migrated(settings, postgres):
    empty = postgres.create_database(f"empty_{secrets.token_hex(6)}")
    checks = doctor(settings, database_url=empty)
    assert checks["database"].status == FAIL
    assert "the database is not migrated" in checks["database"].detail


def test_an_unreachable_database_hides_its_password(settings):
    url = f"postgresql://bridge:pw-{'p' * 20}@127.0.0.1:{free_port()}/bridge"
    checks = doctor(settings, database_url=url, timeout=2)
    assert checks["database"].status == FAIL
    assert "does not answer" in checks["database"].detail
    assert "IDP_BRIDGE_DATABASE_URL" in checks["database"].fix
    assert_no_secret(checks, "pw-" + "p" * 20)


# --- the upstream provider ----------------------------------------------------------------

def test_an_upstream_on_a_closed_port(settings):
    issuer = f"http://127.0.0.1:{free_port()}/realms/konfipay"
    checks = doctor(settings, upstream_issuer=issuer)
    assert checks["upstream"].status == FAIL
    assert "unreachable (connection refused or host unknown)" in checks["upstream"].detail
    assert "IDP_BRIDGE_UPSTREAM_ISSUER" in checks["upstream"].fix


def test_an_upstream_naming_another_issuer(settings, upstream):
    checks = doctor(settings, upstream_issuer="http://127.0.0.1:1/other",
                    upstream_discovery_url=f"{upstream.issuer}/.well-known/openid-configuration")
    assert checks["upstream"].status == FAIL
    assert "names another issuer" in checks["upstream"].detail


def test_an_upstream_that_never_answers_is_bounded_by_the_timeout(settings):
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        issuer = f"http://127.0.0.1:{silent.getsockname()[1]}"
        checks = doctor(settings, upstream_issuer=issuer, timeout=0.5)
    assert checks["upstream"].status == FAIL
    assert "timed out" in checks["upstream"].detail


# --- Redis ---------------------------------------------------------------------------------

def test_redis_down_hides_its_password(settings):
    url = f"redis://:hunter2-{'r' * 20}@127.0.0.1:{free_port()}/0"
    checks = doctor(settings, redis_url=url, timeout=1)
    assert checks["redis"].status == FAIL
    assert "does not answer" in checks["redis"].detail
    assert_no_secret(checks, "hunter2-" + "r" * 20)


@pytest.mark.slow
def test_redis_up(settings, redis_server):
    checks = doctor(settings, redis_url=redis_server.url)
    assert checks["redis"].status == OK
    assert checks["redis"].detail == f"redis://127.0.0.1:{redis_server.port} answers"


# --- push destinations of the feed's streams ------------------------------------------------

def add_push_stream(database_url: str, stream_id: str, endpoint: str) -> None:
    db = Database(database_url)
    now = utcnow()
    try:
        with db.transaction() as session:
            session.add(SsfStream(
                stream_id=stream_id, client_id=RS_CLIENT_ID, delivery_method="urn:ietf:rfc:8935",
                endpoint_url=endpoint, authorization_header=None, events_requested=[],
                start_after_id=0, created_at=now - timedelta(minutes=1), last_seen_at=now))
    finally:
        db.dispose()


def test_push_destinations_against_the_egress_policy(settings):
    token = "receiver-path-token-" + "t" * 16
    add_push_stream(settings.database_url, "a" * 32, f"https://93.184.215.14/ssf/{token}")
    add_push_stream(settings.database_url, "b" * 32, "http://127.0.0.1:9/ssf/events")
    checks = run_checks(as_overrides(settings), environ={}, timeout=3)
    push = [check for check in checks if check.name.startswith("push destination")]
    assert [(check.name, check.status) for check in push] == [
        (f"push destination of stream {'a' * 32} ({RS_CLIENT_ID})", OK),
        (f"push destination of stream {'b' * 32} ({RS_CLIENT_ID})", FAIL)]
    assert push[0].detail == "https://93.184.215.14 allowed"
    assert "refused" in push[1].detail and RS_CLIENT_ID in push[1].fix
    assert_no_secret(checks, token)
    # An allow-list set after the stream was accepted refuses it now.
    later = run_checks(as_overrides(settings, ssf_push_allowed_hosts=("events.example.com",)),
                       environ={}, timeout=3)
    first = next(check for check in later if check.name.startswith("push destination"))
    assert first.status == FAIL and "not among the allowed push hosts" in first.detail
    # ... and loopback receivers pass where the settings admit them (tests, demos).
    loopback = run_checks(as_overrides(settings, ssf_push_allow_loopback=True), environ={},
                          timeout=3)
    assert all(check.status == OK for check in loopback
               if check.name.startswith("push destination"))


# --- Keycloak admin (real Keycloak) ----------------------------------------------------------

@pytest.mark.slow
@pytest.mark.keycloak
def test_keycloak_admin_access(settings, keycloak):
    secret = keycloak.client_secrets["idp-bridge"]
    good = doctor(settings, upstream_issuer=keycloak.issuer, keycloak_admin=True,
                  keycloak_client_secret=secret, timeout=10)
    assert good["keycloak admin"].status == OK, good["keycloak admin"].line()
    assert "reads users and groups" in good["keycloak admin"].detail
    assert good["upstream"].status == OK  # Keycloak's discovery and JWK set
    wrong = "wrong-" + "w" * 34
    bad = doctor(settings, upstream_issuer=keycloak.issuer, keycloak_admin=True,
                 keycloak_client_secret=wrong, timeout=10)
    assert bad["keycloak admin"].status == FAIL
    assert "refused the service account" in bad["keycloak admin"].detail
    assert "IDP_BRIDGE_KEYCLOAK_CLIENT_SECRET" in bad["keycloak admin"].fix
    assert_no_secret(good, secret)
    assert_no_secret(bad, wrong, secret)


# --- the command ---------------------------------------------------------------------------

def cli_env(settings, **changes) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_BRIDGE_")}
    for name, value in as_overrides(settings, **changes).items():
        if isinstance(value, tuple):
            value = ",".join(value)
        env["IDP_BRIDGE_" + name.upper()] = str(value)
    return env


@pytest.mark.slow
def test_the_command_exits_0_when_nothing_fails(settings):
    build_app(settings)
    result = subprocess.run(CLI + ["doctor"], env=cli_env(settings), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == [OK, OK, OK, OK, OK, SKIP, SKIP, SKIP]
    assert lines[-1] == "all 8 checks passed or were skipped"


@pytest.mark.slow
def test_the_command_exits_1_on_a_failure_and_prints_no_secret(settings):
    build_app(settings)
    wrong = Fernet.generate_key().decode()
    env = cli_env(settings, key_encryption_key=wrong,
                  upstream_issuer=f"http://127.0.0.1:{free_port()}")
    result = subprocess.run(CLI + ["doctor", "--timeout", "2"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[2].startswith("FAIL  signing keys: ") and lines[4].startswith("FAIL  upstream: ")
    assert all(". Fix: " in line for line in lines if line.startswith(FAIL))
    assert lines[-1] == "2 of 8 checks failed"
    for secret in (wrong, settings.key_encryption_key, settings.secret_key):
        assert secret not in result.stdout + result.stderr


@pytest.mark.slow
def test_the_checks_load_no_flask():
    """The checks are a plain module (no Flask), like the domain: the command stays usable
    where only the settings and the services it checks exist."""
    program = ("import sys, idp_bridge.doctor as d\n"
               "d.run_checks({}, environ={}, timeout=1)\n"
               "print(sorted(m for m in sys.modules if m.split('.')[0] in "
               "('flask', 'werkzeug', 'flask_babel', 'flask_wtf')))\n")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            timeout=60, env={k: v for k, v in os.environ.items()
                                             if not k.startswith("IDP_BRIDGE_")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --- the audit chains -------------------------------------------------------------------------

def chained(settings, count: int = 4, *, sign_after: int | None = None):
    """``count`` events of the tenant's chain (and one of the system chain), a checkpoint
    signed after the first ``sign_after``."""
    from idp_bridge.domain import audit

    app = build_app(settings)
    db, services = app.extensions["idp_bridge"].db, app.extensions["idp_bridge"]
    for i in range(count):
        with db.transaction() as session:
            audit.record(session, "access_code.failed", utcnow(), tenant_id="10042",
                         actor="probe", attempt=i)
        if sign_after is not None and i + 1 == sign_after:
            services.checkpoints.sign_due(utcnow(), every_moved=True)
    with db.transaction() as session:
        audit.record(session, "token.rejected", utcnow(), actor="system", actor_role="system")
    return db


def sql(db, statement: str) -> None:
    with db.engine.begin() as connection:
        connection.execute(text(statement))


def test_intact_chains_pass_and_nothing_is_written(settings):
    from conftest import dump_database

    db = chained(settings, sign_after=2)
    before = dump_database(db)
    check = doctor(settings)["audit chains"]
    assert check.status == OK, check.line()
    assert check.detail.startswith("2 chains link up to their heads")
    assert "(3 events after the newest checkpoints" in check.detail  # 2 + the system chain's
    assert dump_database(db) == before


@pytest.mark.parametrize("tamper, problem", [
    ("UPDATE audit_events SET actor = 'mallory' WHERE chain = 'tenant:10042' AND seq = 3",
     "at seq 3 (changed)"),
    ("DELETE FROM audit_events WHERE chain = 'tenant:10042' AND seq = 4",
     "at seq 4 (removed)"),
    ("DELETE FROM audit_events WHERE chain = 'tenant:10042' AND seq = 2",
     "at seq 2 (removed)"),
    ("UPDATE audit_events SET hash = '" + "1" * 64 + "' WHERE chain = 'tenant:10042' AND seq = 2",
     "at seq 2 (the signed checkpoint names another event)"),
    ("UPDATE audit_events SET actor = 'mallory' WHERE chain = 'system' AND seq = 1",
     "chain system does not verify at seq 1 (changed)"),
])
def test_a_tampered_chain_fails_with_how_to_find_out(settings, tamper, problem):
    db = chained(settings, sign_after=2)
    sql(db, tamper)
    check = doctor(settings)["audit chains"]
    assert check.status == FAIL and problem in check.detail, check.line()
    assert "idp-bridge audit export --" in check.fix and "idp-bridge audit verify" in check.fix


def test_a_chain_beyond_the_budget_is_named_not_read(settings):
    from idp_bridge.doctor import check_audit_chains

    chained(settings, count=6)
    check = check_audit_chains(settings.database_url, budget=3)
    assert check.status == OK
    assert check.detail.startswith("1 chain link up") and "1 more with over 3" in check.detail
