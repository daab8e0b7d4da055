"""Shared fixtures: a real development OpenID provider on loopback, and a bridge app on a
fresh SQLite database per test (keys and secrets generated at test time)."""

from __future__ import annotations

import itertools
import secrets
import threading
import uuid

import pytest
from cryptography.fernet import Fernet
from werkzeug.serving import make_server

from idp_bridge.admin import add_client, add_tenant
from idp_bridge.app import create_app, services
from idp_bridge.devidp import DEMO_USERS, DevProvider
from idp_bridge.settings import Settings
from idp_bridge.storage.db import Database

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
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.thread.join(5)


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


BACKENDS = ("sqlite", "postgresql")
_built_apps: list = []


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
def redis_server():
    from services import RedisServer

    server = RedisServer()
    yield server
    server.close()


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Every test using the bridge runs on the embedded default and on PostgreSQL."""
    return request.param


@pytest.fixture
def new_database_url(backend, tmp_path, request):
    """Factory of fresh, migrated databases of the current backend."""
    count = itertools.count()

    def make() -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp_path / f'bridge-{next(count)}.sqlite'}"
        server = request.getfixturevalue("postgres")
        return server.create_database(f"t_{uuid.uuid4().hex[:16]}", template="bridge_template")

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


def build_app(settings: Settings):
    db = Database(settings.database_url)
    db.upgrade()
    app = create_app(settings, database=db)
    _built_apps.append(app)
    add_tenant(db, TENANT, "Muster GmbH")
    add_tenant(db, OTHER_TENANT, "Beispiel AG")
    secret = add_client(db, CLIENT_ID)
    rs_secret = add_client(db, RS_CLIENT_ID, roles=("introspect", "receiver"))
    app.config["TEST_CLIENT_SECRET"] = secret
    app.config["TEST_RS_SECRET"] = rs_secret
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
def migrated_db(tmp_path):
    """A fresh migrated SQLite database with the two test tenants, without an app."""
    db = Database(f"sqlite:///{tmp_path / 'domain.sqlite'}")
    db.upgrade()
    add_tenant(db, TENANT, "Muster GmbH")
    add_tenant(db, OTHER_TENANT, "Beispiel AG")
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
