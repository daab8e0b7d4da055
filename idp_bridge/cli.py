"""The ``idp-bridge`` command: serve, demo, database, keys, tenants and clients."""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import tempfile
import threading
from pathlib import Path

import click
from cryptography.fernet import Fernet

from .settings import DEMO_SECRET_PREFIX, Settings, SettingsError

DEMO_TENANT = ("10042", "Muster GmbH")
DEMO_CLIENT = "advisor-console"
DEMO_RS_CLIENT = "example-resource-server"


def _settings(ctx_overrides: dict) -> Settings:
    try:
        return Settings.load(ctx_overrides)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _database(settings: Settings):
    from .storage.db import Database

    return Database(settings.database_url)


@click.group()
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML settings file (default: $IDP_BRIDGE_CONFIG).")
@click.option("--database-url", help="SQLAlchemy database URL (default: $IDP_BRIDGE_DATABASE_URL).")
@click.option("--redis-url", help="Redis URL for shared rate limits and revocation wake-ups "
                                  "(default: $IDP_BRIDGE_REDIS_URL).")
@click.pass_context
def main(ctx, config_file, database_url, redis_url):
    """Advisor access for multi-tenant SaaS: the authorization server."""
    ctx.obj = {"config_file": config_file, "database_url": database_url, "redis_url": redis_url}


# --- serve ---
@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=None, type=int,
              help="Worker processes (default: 1 on SQLite, whose single writer several "
                   "processes would only queue for; 2 otherwise).")
@click.pass_obj
def serve(obj, host, port, workers):
    """Run the bridge with gunicorn (the database must be migrated: `idp-bridge db upgrade`)."""
    settings = _settings(obj)
    db = _database(settings)
    if not db.is_current():
        raise click.ClickException("the database is not migrated; run: idp-bridge db upgrade")
    from .ops import configure_logging
    from .wsgi import GunicornApplication

    configure_logging(settings.log_format)
    if workers is None:
        workers = 1 if settings.database_url.startswith("sqlite") else 2
    GunicornApplication(settings, gunicorn_options(f"{host}:{port}", workers)).run()


def gunicorn_options(bind: str, workers: int) -> dict:
    # Threads, because revocation-feed long polls hold a request open for up to 15 s.
    return {"bind": bind, "workers": workers, "worker_class": "gthread", "threads": 32,
            "keepalive": 5, "graceful_timeout": 20, "timeout": 60,
            "accesslog": None, "errorlog": "-"}


# --- database ---
@main.group()
def db():
    """Database schema."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(obj):
    """Apply all migrations."""
    settings = _settings(obj)
    _database(settings).upgrade()
    click.echo("database is at the latest schema")


# --- keys ---
@main.group()
def keys():
    """Token-signing keys."""


@keys.command("rotate")
@click.option("--alg", type=click.Choice(["ES256", "RS256"]), default=None,
              help="Algorithm of the new key (default: the signing_alg setting).")
@click.pass_obj
def keys_rotate(obj, alg):
    """Create a new signing key; the old one stays published until its tokens expired."""
    from .domain.keys import KeyRing
    from .services.operator import rotate_signing_key

    settings = _settings(obj)
    database = _database(settings)
    ring = KeyRing(database, settings.key_encryption_key, alg or settings.signing_alg,
                   settings.access_token_lifetime)
    kid = rotate_signing_key(database, ring, alg)
    click.echo(f"new signing key {kid} is active; running bridges pick it up within 10 s")


@keys.command("new-kek")
def keys_new_kek():
    """Print a new key-encryption key for IDP_BRIDGE_KEY_ENCRYPTION_KEY."""
    click.echo(Fernet.generate_key().decode())


# --- tenants and clients ---
@main.group()
def tenants():
    """Tenants (Mandanten)."""


@tenants.command("add")
@click.argument("tenant_id")
@click.argument("name")
@click.pass_obj
def tenants_add(obj, tenant_id, name):
    from .services.operator import add_tenant
    from .domain.errors import DomainError

    try:
        add_tenant(_database(_settings(obj)), tenant_id, name)
    except DomainError as exc:
        raise click.ClickException(exc.description) from None
    click.echo(f"tenant {tenant_id} ({name}) added")


@main.group()
def clients():
    """OAuth clients."""


@clients.command("add")
@click.argument("client_id")
@click.option("--role", "roles", multiple=True, default=["exchange"], show_default=True,
              type=click.Choice(["exchange", "introspect", "receiver"]))
@click.option("--jwks-file", type=click.Path(exists=True, dir_okay=False),
              help="Public JWK set: authenticate with private_key_jwt instead of a secret.")
@click.pass_obj
def clients_add(obj, client_id, roles, jwks_file):
    """Register a confidential client; prints its secret once."""
    from .services.operator import add_client
    from .domain.errors import DomainError

    jwks = json.loads(Path(jwks_file).read_text()) if jwks_file else None
    try:
        secret = add_client(_database(_settings(obj)), client_id, roles=roles, jwks=jwks,
                            auth_method="private_key_jwt" if jwks else "client_secret_basic")
    except DomainError as exc:
        raise click.ClickException(exc.description) from None
    click.echo(f"client {client_id} added")
    if secret:
        click.echo(f"client secret (shown once): {secret}")


@main.group()
def memberships():
    """Memberships (Zugriffe)."""


@memberships.command("expire")
@click.pass_obj
def memberships_expire(obj):
    """End temporary memberships past their maximum age (run periodically)."""
    from .app import create_app, services
    from .services.operator import expire_memberships

    # The app's wiring, so that the sweep queues the Keycloak mirror and the tenant admins'
    # notifications and wakes other processes (Redis) like the maintenance loop does.
    built = services(create_app(_settings(obj)))
    try:
        count = expire_memberships(built.db, built.memberships)
    finally:
        built.db.dispose()
    click.echo(f"{count} memberships expired")


# --- Keycloak ---
@main.group()
def keycloak():
    """The Keycloak realm behind the bridge."""


@keycloak.command("reconcile")
@click.pass_obj
def keycloak_reconcile(obj):
    """Bring Keycloak's advisor groups in line with the memberships, both ways."""
    from .app import create_app, services
    from .upstream.oidc import UpstreamUnavailable

    settings = _settings(obj)
    if not settings.keycloak_admin:
        raise click.ClickException("Keycloak admin is off; set IDP_BRIDGE_KEYCLOAK_ADMIN=true")
    mirror = services(create_app(settings)).mirror
    try:
        changes = mirror.reconcile()
    except UpstreamUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    for line in changes:
        click.echo(line)
    click.echo(f"{len(changes)} changes")


# --- demo ---
EXAMPLE_RS = Path(__file__).resolve().parents[1] / "deploy" / "example-resource-server" / \
    "example_resource_server.py"


def _ensure_client(database, client_id: str, secret_variable: str, **kwargs):
    """Seed a demo client; returns (secret, whether the secret must be printed)."""
    from .services.operator import add_client
    from .domain.errors import Conflict

    secret = os.environ.get(secret_variable)
    try:
        return add_client(database, client_id, secret=secret, **kwargs), secret is None
    except Conflict:
        return secret, False  # an existing database keeps the client it had


def _load_example_resource_server():
    import importlib.util

    spec = importlib.util.spec_from_file_location("example_resource_server", EXAMPLE_RS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@main.command()
@click.option("--port", default=8000, show_default=True, type=int, help="Bridge port.")
@click.option("--idp-port", default=8001, show_default=True, type=int,
              help="Port of the development OpenID provider.")
@click.option("--rs-port", default=8002, show_default=True, type=int,
              help="Port of the example resource server (0: do not start it).")
@click.option("--workers", default=1, show_default=True, type=int,
              help="Bridge processes (more than 1: gunicorn, as in production).")
@click.pass_obj
def demo(obj, port, idp_port, rs_port, workers):
    """Run the bridge, a development OpenID provider and the example resource server on
    127.0.0.1 with demo data."""
    from werkzeug.serving import make_server

    from .services.operator import add_tenant
    from .app import create_app, services
    from .domain.errors import Conflict

    try:
        from .devidp import DevProvider
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.devidp":
            raise
        # The development OpenID provider is not part of the wheel (pyproject.toml).
        raise click.ClickException(
            "the demo runs from a source checkout only (pip install -e '.[bridge]'): the "
            "development OpenID provider is not part of the installed package") from None

    database_url = obj.get("database_url")
    if not database_url:
        workdir = tempfile.mkdtemp(prefix="idp-bridge-demo-")
        database_url = f"sqlite:///{workdir}/demo.sqlite"
    idp_issuer = f"http://127.0.0.1:{idp_port}"
    issuer = f"http://127.0.0.1:{port}"
    settings = _settings({
        "config_file": obj.get("config_file"),
        "mode": "demo",
        "issuer": issuer,
        "database_url": database_url,
        "secret_key": os.environ.get("IDP_BRIDGE_SECRET_KEY")
        or DEMO_SECRET_PREFIX + secrets.token_urlsafe(32),
        "key_encryption_key": os.environ.get("IDP_BRIDGE_KEY_ENCRYPTION_KEY")
        or Fernet.generate_key().decode(),
        "upstream_issuer": idp_issuer,
        "redis_url": obj.get("redis_url"),
        "log_format": "text",
        # "Open" on the advisor page hands the tokens to the example resource server's
        # application page, issued to the demo's console client.
        **({"app_url": f"http://127.0.0.1:{rs_port}/tenants/{{tenant}}/open",
            "app_client_id": DEMO_CLIENT} if rs_port else {}),
    })
    database = _database(settings)
    database.upgrade()

    provider = DevProvider(idp_issuer, mode="demo")
    servers = [make_server("127.0.0.1", idp_port, provider.create_app(), threaded=True)]
    threading.Thread(target=servers[0].serve_forever, daemon=True).start()

    app = create_app(settings, database=database)  # also makes the first signing key
    try:
        add_tenant(database, *DEMO_TENANT)
    except Conflict:
        pass
    client_secret, print_client = _ensure_client(database, DEMO_CLIENT,
                                                 "IDP_BRIDGE_DEMO_CLIENT_SECRET",
                                                 name="Advisor console")
    rs_secret, print_rs = _ensure_client(database, DEMO_RS_CLIENT, "IDP_BRIDGE_DEMO_RS_SECRET",
                                         name="Example resource server",
                                         roles=("receiver", "introspect"))
    bridge_process = None
    if workers > 1:
        # Several processes, as in production: gunicorn in a child process.
        import multiprocessing

        from .wsgi import GunicornApplication

        options = gunicorn_options(f"127.0.0.1:{port}", workers)
        database.dispose()  # no connection may be shared across the fork
        bridge_process = multiprocessing.get_context("fork").Process(
            target=lambda: GunicornApplication(settings, options).run(), daemon=True)
        bridge_process.start()
        _wait_for_port(port)
    else:
        services(app).start_background()
        bridge_server = make_server("127.0.0.1", port, app, threaded=True)
        threading.Thread(target=bridge_server.serve_forever, daemon=True).start()
        servers.append(bridge_server)

    guard = None
    if rs_port:
        example = _load_example_resource_server()
        guard = example.TokenGuard(issuer, settings.default_audience)
        if rs_secret:
            guard.start_revocation_listener(DEMO_RS_CLIENT, rs_secret)
        rs_server = make_server("127.0.0.1", rs_port, example.create_app(guard), threaded=True)
        threading.Thread(target=rs_server.serve_forever, daemon=True).start()
        servers.append(rs_server)

    click.echo(f"idp-bridge demo (database {database.url.render_as_string(hide_password=True)}"
               + (f", Redis {settings.redis_url}" if settings.redis_url else "")
               + (f", {workers} processes" if workers > 1 else "") + ")")
    click.echo(f"  bridge:            {issuer}")
    click.echo(f"  OpenID provider:   {idp_issuer}  (development only)")
    if rs_port:
        click.echo(f"  resource server:   http://127.0.0.1:{rs_port}/tenants/10042/payments  (example)")
        click.echo(f"  application:       {settings.app_url}  (\"Open\" on {issuer}/advisor)")
    click.echo(f"  tenant:            {DEMO_TENANT[0]} ({DEMO_TENANT[1]}), admin: anna")
    click.echo("  advisors:          bob, carol   support admin: sam")
    for client_id, secret, shown, variable in (
            (DEMO_CLIENT, client_secret, print_client, "IDP_BRIDGE_DEMO_CLIENT_SECRET"),
            (DEMO_RS_CLIENT, rs_secret, print_rs, "IDP_BRIDGE_DEMO_RS_SECRET")):
        if shown:
            click.echo(f"  client:            {client_id}, secret {secret}")
            click.echo(f"  export {variable}={secret}")
        else:
            click.echo(f"  client:            {client_id}, secret from {variable}")
    click.echo("Upstream tokens for the demo users: idp-bridge demo-token bob")
    sys.stdout.flush()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if guard is not None:
            guard.stop_revocation_listener()
        if bridge_process is None:
            services(app).stop_background()
        for server in servers:
            server.shutdown()
        if bridge_process is not None:
            bridge_process.terminate()
            bridge_process.join(20)


def _wait_for_port(port: int, timeout: float = 30.0) -> None:
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise click.ClickException(f"the bridge did not start on port {port}")


@main.command("demo-token")
@click.argument("user")
@click.option("--idp-port", default=8001, show_default=True, type=int)
@click.option("--id-token", is_flag=True, help="Print the ID token instead of the access token.")
@click.option("--acr", default=None, help="Authentication context class (e.g. 2 for MFA).")
def demo_token(user, idp_port, id_token, acr):
    """Print an upstream access token for a demo user from the running development provider."""
    import requests

    data = {"username": user}
    if acr:
        data["acr"] = acr
    try:
        response = requests.post(f"http://127.0.0.1:{idp_port}/dev/token", data=data, timeout=5)
    except requests.RequestException:
        raise click.ClickException(
            f"no development provider on 127.0.0.1:{idp_port}; start `idp-bridge demo` first"
        ) from None
    if response.status_code != 200:
        raise click.ClickException(f"unknown demo user {user!r} (anna, bob, carol, sam, eve)")
    click.echo(response.json()["id_token" if id_token else "access_token"])


if __name__ == "__main__":
    main()
