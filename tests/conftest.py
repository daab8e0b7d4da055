"""Shared fixtures: a real development OpenID provider on loopback, and a bridge app on a
fresh database per test (keys and secrets generated at test time).

Two loops (README "Tests"): ``pytest -m "not slow" -n auto`` is the inner loop, SQLite only, no
server or subprocess; plain ``pytest`` (CI) runs everything on SQLite and PostgreSQL. What makes a
test slow, and how a test that cannot depend on the database runs once, is below under
"backends" and "the slow marker".
"""

from __future__ import annotations

import itertools
import secrets
import shutil
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from werkzeug.serving import make_server

from idp_bridge.services.operator import add_client, add_tenant
from idp_bridge.app import create_app, services
from idp_bridge.devidp import DEMO_USERS, DevProvider
from idp_bridge.settings import Settings
from idp_bridge.domain.people import People, person_from_claims
from idp_bridge.storage.db import Database, utcnow

TENANT = "10042"
OTHER_TENANT = "20077"
CLIENT_ID = "advisor-console"
RS_CLIENT_ID = "example-resource-server"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"


class ServerThread:
    """A WSGI app served on 127.0.0.1 on a free port, in a thread."""

    def __init__(self, app):
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def _serve(self):
        # shutdown() waits for the loop to notice; the default 0.5 s poll made every
        # teardown of a served app cost half a second.
        self.server.serve_forever(poll_interval=0.02)

    def __exit__(self, *exc):
        self.server.shutdown()
        self.thread.join(5)


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.02,
               what="the condition"):
    """Poll ``predicate`` every ``interval`` seconds until it returns something true, and
    return that value; after ``timeout`` seconds raise AssertionError naming ``what`` (a
    text, or a function returning one, called only then: to add the state or logs of that
    moment). The tests' one polling helper: a deadline is generous, never a speed to assert."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout:g} s: "
                                 f"{what() if callable(what) else what}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def upstream():
    """The development OpenID provider, really served over HTTP on loopback."""
    holder = {}

    def app(environ, start_response):
        return holder["app"](environ, start_response)

    with ServerThread(app) as server:
        provider = DevProvider(f"http://127.0.0.1:{server.port}", mode="test")
        holder["app"] = provider.create_app()
        yield provider


# --- backends -------------------------------------------------------------------------------
# A test that uses a bridge (the fixtures app, client, bridge, settings, new_database_url) runs
# once per backend: on SQLite (the embedded default) and on PostgreSQL, which is slow (a real
# server). A test whose outcome cannot depend on the database -- a document built from the
# settings, a refusal before anything is read or stored -- says so with
# ``@pytest.mark.db_independent`` and runs on SQLite only.

BACKENDS = ("sqlite", "postgresql")
_built_apps: list = []
#: Databases handed out migrated and seeded (copies of a template): URL -> the seed's secrets.
_seeded: dict[str, "Seed"] = {}


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        once = metafunc.definition.get_closest_marker("db_independent") is not None
        metafunc.parametrize("backend", [
            pytest.param(name, marks=pytest.mark.slow) if name == "postgresql" else name
            for name in (BACKENDS[:1] if once else BACKENDS)], indirect=True)


class Seed:
    """What every test database starts with: the two test tenants, the two test clients, and
    the development provider's people as if each had signed in once (what the fallback
    directory knows; tests of unknown people use other subjects). The client secrets are
    generated when the session's template is made."""

    def __init__(self, db):
        add_tenant(db, TENANT, "Muster GmbH")
        add_tenant(db, OTHER_TENANT, "Beispiel AG")
        self.secret = add_client(db, CLIENT_ID)
        self.rs_secret = add_client(db, RS_CLIENT_ID, roles=("introspect", "receiver"))
        with db.transaction() as session:
            for username in DEMO_USERS:
                People().record(session, demo_person(username), utcnow(), signed_in=True)


def demo_person(username: str):
    """The person a sign-in of the development provider's ``username`` records."""
    user = DEMO_USERS[username]
    roles = user.get("realm_roles", [])
    return person_from_claims(user["sub"], {
        "preferred_username": username, "name": user["name"], "email": user["email"],
        }, advisor="advisor" in roles,
        support_admin="support-admin" in roles)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> tuple[Path, Seed]:
    """One migrated and seeded SQLite database per session; each test gets a copy of the
    file instead of running the migrations again."""
    path = tmp_path_factory.mktemp("template") / "bridge.sqlite"
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    seed = Seed(db)
    with db.engine.connect() as connection:
        # Everything into the main file, so that copying that one file copies the database.
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db.dispose()
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        assert not side.exists() or side.stat().st_size == 0, f"{side} left after checkpoint"
    return path, seed


def copy_of_template(template: tuple[Path, Seed], target: Path) -> str:
    path, seed = template
    shutil.copyfile(path, target)
    url = f"sqlite:///{target}"
    _seeded[url] = seed
    return url


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session, with a migrated template database."""
    from services import PostgresServer

    server = PostgresServer()
    template = Database(server.create_database("bridge_template"))
    template.upgrade()
    template.dispose()
    yield server
    server.close()


@pytest.fixture(scope="session")
def postgres_seeded(postgres) -> tuple[str, Seed]:
    """A second PostgreSQL template: bridge_template (migrated) plus the seed.
    (bridge_template itself stays empty for the tests that seed their own.)"""
    db = Database(postgres.create_database("bridge_seeded", template="bridge_template"))
    seed = Seed(db)
    db.dispose()  # CREATE DATABASE ... TEMPLATE needs the template without connections
    return "bridge_seeded", seed


@pytest.fixture(scope="session")
def redis_server():
    from services import RedisServer

    server = RedisServer()
    yield server
    server.close()


@pytest.fixture
def backend(request):
    """The backend of this run of the test (parametrized by pytest_generate_tests above)."""
    return request.param


@pytest.fixture
def new_database_url(backend, tmp_path, request):
    """Factory of fresh databases of the current backend, migrated and seeded (Seed)."""
    count = itertools.count()

    def make() -> str:
        if backend == "sqlite":
            template = request.getfixturevalue("sqlite_template")
            return copy_of_template(template, tmp_path / f"bridge-{next(count)}.sqlite")
        server = request.getfixturevalue("postgres")
        template, seed = request.getfixturevalue("postgres_seeded")
        url = server.create_database(f"t_{uuid.uuid4().hex[:16]}", template=template)
        _seeded[url] = seed
        return url

    return make


@pytest.fixture(autouse=True)
def _dispose_built_apps():
    yield
    while _built_apps:
        services(_built_apps.pop()).db.dispose()


@pytest.fixture
def settings(new_database_url, upstream) -> Settings:
    return make_settings(new_database_url(), upstream)


def make_settings(database_url: str, upstream) -> Settings:
    return Settings.load({
        "mode": "test",
        "issuer": "http://127.0.0.1:8000",
        "database_url": database_url,
        "secret_key": secrets.token_urlsafe(32),
        "key_encryption_key": Fernet.generate_key().decode(),
        "upstream_issuer": upstream.issuer,
        "resources": "https://api.konfipay.example/=konfipay-api",
    }, environ={})


def _compile_url_builders_on_first_use() -> None:
    """Making an app compiles two URL-builder functions per route (werkzeug generates and
    compiles Python for each): about 70 ms for the bridge's routes, most of what a test spends
    outside its own requests, and nearly all of it for builders that no request of that test
    uses. In the tests each builder is compiled when first called, by werkzeug's own code, so
    URLs come out exactly as in production; only when the work is done changes."""
    from werkzeug.routing.rules import Rule

    compile_builder = Rule._compile_builder
    if getattr(compile_builder, "on_first_use", False):
        return

    def on_first_use(rule, append_unknown=True):
        compiled = []

        def builder(bound_rule, *args, **kwargs):
            if not compiled:
                compiled.append(compile_builder(bound_rule, append_unknown).__get__(bound_rule))
            return compiled[0](*args, **kwargs)

        return builder

    on_first_use.on_first_use = True
    Rule._compile_builder = on_first_use


_compile_url_builders_on_first_use()


def build_app(settings: Settings):
    """The bridge on ``settings.database_url``: migrated and seeded here unless the database
    is a copy of a template (new_database_url), which is both already."""
    db = Database(settings.database_url)
    seed = _seeded.get(settings.database_url)
    if seed is None:
        db.upgrade()
        seed = Seed(db)
    app = create_app(settings, database=db)
    _built_apps.append(app)
    app.config["TEST_CLIENT_SECRET"] = seed.secret
    app.config["TEST_RS_SECRET"] = seed.rs_secret
    return app


@pytest.fixture
def app(settings):
    app = build_app(settings)
    yield app
    services(app).db.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def bridge(app, client, upstream):
    return Bridge(app, client, upstream)


class Bridge:
    """Test helper speaking to the bridge as the demo roles would."""

    def __init__(self, app, client, upstream):
        self.app = app
        self.client = client
        self.upstream = upstream
        self.secret = app.config["TEST_CLIENT_SECRET"]
        self.rs_secret = app.config["TEST_RS_SECRET"]

    @property
    def services(self):
        return services(self.app)

    def upstream_token(self, user: str, **kwargs) -> str:
        return self.upstream.issue_tokens(user, **kwargs)["access_token"]

    def auth(self, client_id=CLIENT_ID, secret=None):
        return (client_id, self.secret if secret is None else secret)

    def token(self, data: dict, auth=None):
        return self.client.post("/token", data=data, auth=auth or self.auth())

    def exchange(self, user="bob", *, tenant=TENANT, code=None, subject_token=None, **extra):
        data = {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": subject_token or self.upstream_token(user),
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "tenant": tenant,
        }
        if code is not None:
            data["access_code"] = code
        data.update(extra)
        return self.token(data)

    def current_code(self, tenant=TENANT) -> str:
        response = self.api("get", f"/api/tenants/{tenant}/access-code", user="anna")
        assert response.status_code == 200, response.json
        return response.json["code"]

    def join(self, user="bob", tenant=TENANT, **extra):
        """Redeem the tenant's current code; returns the token response body."""
        code = self.current_code(tenant) if tenant == TENANT else self._code_direct(tenant)
        response = self.exchange(user, tenant=tenant, code=code, **extra)
        assert response.status_code == 200, response.json
        return response.json

    def _code_direct(self, tenant):
        from idp_bridge.storage.db import utcnow

        with self.services.db.transaction() as session:
            return self.services.codes.current(session, tenant, utcnow()).display

    def api(self, method: str, path: str, *, user="anna", token=None, **kwargs):
        token = token or self.upstream_token(user)
        headers = {"Authorization": f"Bearer {token}"}
        return getattr(self.client, method)(path, headers=headers, **kwargs)

    def introspect(self, token: str, hint=None, auth=None):
        data = {"token": token}
        if hint:
            data["token_type_hint"] = hint
        return self.client.post("/introspect", data=data,
                                auth=auth or (RS_CLIENT_ID, self.rs_secret))

    def membership_id(self, user="bob", tenant=TENANT) -> str:
        sub = DEMO_USERS[user]["sub"]
        items = self.api("get", f"/api/tenants/{tenant}/memberships").json["memberships"]
        return next(m["id"] for m in items if m["advisor"] == sub)


# --- helpers for the domain and storage tests (appended) ---

@pytest.fixture
def migrated_db(tmp_path, sqlite_template):
    """A fresh migrated SQLite database with the seed (Seed: tenants, clients), without an app."""
    db = Database(copy_of_template(sqlite_template, tmp_path / "domain.sqlite"))
    yield db
    db.dispose()


def dump_database(db) -> str:
    """Every row of every table as text: what a database dump would reveal."""
    from sqlalchemy import inspect, text

    lines = []
    with db.engine.connect() as connection:
        for table in inspect(connection).get_table_names():
            for row in connection.execute(text(f'SELECT * FROM "{table}"')):
                lines.append(f"{table}: " + " | ".join(
                    value.decode("latin-1") if isinstance(value, bytes) else str(value)
                    for value in row))
    return "\n".join(lines)


# --- helpers for the protocol tests: token endpoint, introspection, revocation (appended) ---

@pytest.fixture
def bridge_with(new_database_url, settings, upstream):
    """Factory of further bridges with changed settings, each on its own database file:
    ``bridge_with(mfa_required=True)`` returns a :class:`Bridge`."""
    made = []

    def make(**changes) -> Bridge:
        changes.setdefault("database_url", new_database_url())
        app = build_app(settings.replace(**changes))
        made.append(app)
        return Bridge(app, app.test_client(), upstream)

    yield make
    for made_app in made:
        services(made_app).db.dispose()


def post_form(client, path: str, pairs, auth=None):
    """POST ``pairs`` form-encoded exactly as given (repeated names stay repeated)."""
    from urllib.parse import urlencode

    return client.post(path, data=urlencode(list(pairs)), auth=auth,
                       content_type="application/x-www-form-urlencoded")


def verify_access_token(bridge: Bridge, token: str) -> tuple[dict, dict]:
    """(header, claims) of one of the bridge's access tokens, verified with its /jwks."""
    from joserfc import jws, jwt
    from joserfc.jwk import KeySet

    keys = KeySet.import_key_set(bridge.client.get("/jwks").json)
    header = jws.extract_compact(token.encode()).protected
    claims = jwt.decode(token, keys, algorithms=[header["alg"]]).claims
    return header, claims


def wrong_code(code: str) -> str:
    """A well-formed access code that differs from ``code`` in its first character."""
    return ("1" if code[0] == "0" else "0") + code[1:]


def audit_events(bridge: Bridge, event: str, tenant: str = TENANT) -> list[dict]:
    response = bridge.api("get", f"/api/tenants/{tenant}/audit-events?event={event}&limit=500")
    assert response.status_code == 200, response.json
    return response.json["events"]


def active_memberships(bridge: Bridge, tenant: str = TENANT) -> list:
    """The tenant's active memberships, read from storage (works for any tenant)."""
    with bridge.services.db.read() as session:
        return bridge.services.memberships.list_for_tenant(session, tenant)


# --- a real Keycloak 26 for the tests marked keycloak (appended) ---

def pytest_configure(config):
    # Registered here rather than in pyproject.toml; --strict-markers needs it before collection.
    # (A conftest has one pytest_configure: extend this one rather than adding another.)
    config.addinivalue_line(
        "markers", "keycloak: runs against a real Keycloak 26 started once per session by the "
        "keycloak fixture (tests/keycloak_server.py)")
    sys.addaudithook(_refuse_processes_in_fast_tests)


# --- the slow marker ---------------------------------------------------------------------------
# ``slow`` marks every test that starts a server or a subprocess: PostgreSQL (the postgresql
# backend), Redis, Keycloak, oidc-provider, Chromium, gunicorn, the CLI, a Python child process.
# ``pytest -m "not slow"`` leaves them out; plain ``pytest`` runs them. So that the inner loop
# stays free of them, a test that is not marked slow and starts a process fails (threads serving
# a WSGI app on loopback, like ServerThread, are fine).

_PROCESS_EVENTS = frozenset({"subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn",
                             "os.spawn", "os.system", "os.exec"})
_fast_test: list = [None]  # node id of the running test when it is not marked slow


class StartsAProcess(BaseException):
    """Not an Exception, so that no ``except Exception`` turns it into a skip or a retry."""


def _refuse_processes_in_fast_tests(event, args):
    if event in _PROCESS_EVENTS and _fast_test[0] is not None:
        raise StartsAProcess(f"{_fast_test[0]} starts a process ({event} {args[0]!r}) "
                             "but is not marked slow (pytest.mark.slow)")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _fast_test[0] = None if item.get_closest_marker("slow") else item.nodeid


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item):
    _fast_test[0] = None  # session fixtures (servers of slow tests) may stop theirs here


@pytest.fixture(scope="session")
def keycloak():
    """A real Keycloak with the konfipay realm template on 127.0.0.1, started on first use and
    stopped at the end of the session. Outside CI a missing Java/Maven/Maven Central skips with
    the reason; with ``CI`` set it fails, so that these tests never vanish silently."""
    import os

    from keycloak_server import KeycloakUnavailable, start_keycloak

    try:
        server = start_keycloak()
    except KeycloakUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Keycloak is required when CI is set, and it is unavailable: {exc}",
                        pytrace=False)
        pytest.skip(f"Keycloak unavailable (set CI=1 to make this a failure): {exc}")
    yield server
    server.stop()


@pytest.fixture
def operator_env(bridge, monkeypatch):
    """``bridge``, with its settings in the environment as the operator's ``idp-bridge``
    commands (audit export, evidence, checkpoint) read them."""
    settings = bridge.services.settings
    for key in ("database_url", "secret_key", "key_encryption_key", "issuer", "upstream_issuer",
                "mode"):
        monkeypatch.setenv(f"IDP_BRIDGE_{key.upper()}", str(getattr(settings, key)))
    return bridge
