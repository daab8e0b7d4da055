"""The ``idp-bridge`` command: serve, demo, doctor, database, keys, tenants and clients, the
audit chains (:mod:`idp_bridge.cli_audit`).

A command that cannot do its work stops before it changes anything, with one line naming
the setting or option to fix: ``serve`` creates no file when it refuses (no database file,
no ``instance/`` folder), and every command that uses the signing keys first checks that the
key-encryption key opens them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
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
#: The start-up error of a key-encryption key that does not open the stored signing keys.
KEK_MISMATCH = str(SettingsError(
    "key_encryption_key", "does not decrypt the signing keys stored in the database: set the "
    "key they were made with (only if it is lost: idp-bridge keys rotate --recover)"))


def _settings(ctx_overrides: dict) -> Settings:
    try:
        return Settings.load(ctx_overrides)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _database_url(obj: dict) -> str:
    """Only the database URL, for the commands that need nothing else."""
    try:
        return Settings.load_database_url(obj)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _database(settings: Settings):
    from .storage.db import Database

    return Database(settings.database_url)


def _migrated_database(url: str, *, isolated: bool = False):
    """The database at ``url`` if its schema is at the latest revision; otherwise a one-line
    error, and nothing is created (a missing SQLite file stays missing)."""
    from .doctor import migration_level, safe_database_url
    from .storage.db import Database

    try:
        level = migration_level(url, isolated=isolated)
    except Exception as exc:  # the driver's errors: refused, unknown host, authentication
        raise click.ClickException(
            f"the database {safe_database_url(url)} does not answer ({type(exc).__name__}); "
            "check IDP_BRIDGE_DATABASE_URL and the database server") from None
    problem = level.problem()
    if problem is not None:
        raise click.ClickException(f"{problem}; run: idp-bridge db upgrade")
    return Database(url)


def _key_ring(settings: Settings, database, *, create: bool = False):
    """The signing keys, checked: stops the command when the key-encryption key does not
    open them. ``create``: make the first key if there is none (one process, before any
    worker starts, so that workers never race to make it)."""
    from .domain.keys import KeyDecryptionFailed, KeyRing
    from .storage.db import utcnow

    ring = KeyRing(database, settings.key_encryption_key, settings.signing_alg,
                   settings.access_token_lifetime)
    try:
        if create:
            with database.transaction() as session:
                ring.ensure(session, utcnow())
        ring.check()
        if create:
            from .ssf.set_keys import SetKeys

            # The feed's SET keys too, once the key-encryption key is known to fit: no worker
            # then makes one on its first request.
            with database.transaction() as session:
                SetKeys(database, settings.key_encryption_key, lifetime_seconds=(
                    settings.access_token_lifetime + settings.upstream_leeway_seconds + 30)
                ).ensure(session, utcnow())
            from .domain.audit_checkpoints import CheckpointKeys

            # And the audit checkpoints' key (signed by the maintenance loop of any worker).
            with database.transaction() as session:
                CheckpointKeys(database, settings.key_encryption_key).ensure(session, utcnow())
    except KeyDecryptionFailed:
        raise click.ClickException(KEK_MISMATCH) from None
    return ring


def _port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host:port`` now (with address reuse, as servers
    bind, so that connections of a previous run in TIME_WAIT do not count)."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _port_in_use(port: int, server: str, flag: str) -> click.ClickException:
    return click.ClickException(f"port {port} is in use: the {server} cannot listen on it; "
                                f"choose another port with {flag}")


@click.group()
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML settings file (default: $IDP_BRIDGE_CONFIG).")
@click.option("--database-url", help="SQLAlchemy database URL (default: $IDP_BRIDGE_DATABASE_URL).")
@click.option("--redis-url", help="Redis URL for revocation wake-ups across processes "
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
              help="Worker processes (default: 2; on SQLite their writers take turns on a "
                   "lock file beside the database).")
@click.pass_obj
def serve(obj, host, port, workers):
    """Run the bridge with gunicorn (the database must be migrated: `idp-bridge db upgrade`)."""
    settings = _settings(obj)
    if not _port_is_free(port, host):
        raise _port_in_use(port, "bridge", "--port")
    # (the newest revision from a child interpreter: the workers forked from this process
    # then carry no Alembic)
    database = _migrated_database(settings.database_url, isolated=True)
    try:
        _key_ring(settings, database, create=True)
    finally:
        database.dispose()  # no connection may be shared with the forked workers
    from .ops import configure_logging
    from .wsgi import GunicornApplication

    configure_logging(settings.log_format)
    if workers is None:
        workers = 2
    GunicornApplication(settings, gunicorn_options(f"{host}:{port}", workers)).run()


def gunicorn_options(bind: str, workers: int) -> dict:
    # Threads, because revocation-feed long polls hold a request open for up to 15 s.
    return {"bind": bind, "workers": workers, "worker_class": "gthread", "threads": 32,
            "keepalive": 5, "graceful_timeout": 20, "timeout": 60,
            "accesslog": None, "errorlog": "-"}


# --- doctor ---
@main.command()
@click.option("--timeout", default=5.0, show_default=True, type=click.FloatRange(0.1, 60),
              help="Seconds each outbound check may take.")
@click.pass_obj
def doctor(obj, timeout):
    """Check this installation: settings, database schema, signing keys, upstream provider,
    Redis, Keycloak admin access, push destinations. One line each (OK, FAIL with the fix,
    SKIP); exits 1 if any check fails. Changes nothing and prints no secret."""
    from .doctor import FAIL, run_checks

    checks = run_checks(obj, timeout=timeout)
    for check in checks:
        click.echo(check.line())
    failed = sum(check.status == FAIL for check in checks)
    click.echo(f"{failed} of {len(checks)} checks failed" if failed
               else f"all {len(checks)} checks passed or were skipped")
    sys.exit(1 if failed else 0)


# --- database ---
@main.group()
def db():
    """Database schema."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(obj):
    """Apply all migrations (needs only the database URL)."""
    from .storage.db import Database

    Database(_database_url(obj)).upgrade()
    click.echo("database is at the latest schema")


# --- keys ---
@main.group()
def keys():
    """Token-signing keys."""


@keys.command("rotate")
@click.option("--alg", type=click.Choice(["ES256", "RS256"]), default=None,
              help="Algorithm of the new key (default: the signing_alg setting).")
@click.option("--recover", is_flag=True,
              help="The key-encryption key of the stored keys is lost: make a new key "
                   "encrypted with the configured one anyway (every bridge must use it then).")
@click.pass_obj
def keys_rotate(obj, alg, recover):
    """Create a new signing key; the old one stays published until its tokens expired."""
    from .domain.keys import KeyRing
    from .services.operator import rotate_signing_key

    settings = _settings(obj)
    database = _migrated_database(settings.database_url)
    if recover:
        ring = KeyRing(database, settings.key_encryption_key, alg or settings.signing_alg,
                       settings.access_token_lifetime)
    else:
        # A new key under another key-encryption key would be unreadable to the running
        # bridges: rotating is refused like a start.
        ring = _key_ring(settings, database)
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
    """Add a tenant (needs only the database URL)."""
    from .services.operator import add_tenant
    from .domain.errors import DomainError

    try:
        add_tenant(_migrated_database(_database_url(obj)), tenant_id, name)
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
@click.option("--dpop-required", is_flag=True,
              help="Refuse this client's token requests without a DPoP proof (RFC 9449).")
@click.pass_obj
def clients_add(obj, client_id, roles, jwks_file, dpop_required):
    """Register a confidential client; prints its secret once (needs only the database URL)."""
    from .services.operator import add_client
    from .domain.errors import DomainError

    jwks = json.loads(Path(jwks_file).read_text()) if jwks_file else None
    try:
        secret = add_client(_migrated_database(_database_url(obj)), client_id, roles=roles,
                            jwks=jwks, dpop_required=dpop_required,
                            auth_method="private_key_jwt" if jwks else "client_secret_basic")
    except DomainError as exc:
        raise click.ClickException(exc.description) from None
    click.echo(f"client {client_id} added" + (" (DPoP required)" if dpop_required else ""))
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

    settings = _settings(obj)
    # The app's wiring, so that the sweep queues the Keycloak mirror and the tenant admins'
    # notifications and wakes other processes (Redis) like the maintenance loop does.
    built = services(create_app(settings, database=_migrated_database(settings.database_url)))
    try:
        count = expire_memberships(built.db, built.memberships)
    finally:
        built.db.dispose()
    click.echo(f"{count} memberships expired")


# --- the revocation feed ---
@main.group()
def ssf():
    """The revocation feed's streams (SSF transmitter)."""


@ssf.command("status")
@click.argument("stream_id")
@click.argument("status", type=click.Choice(["enabled", "paused", "disabled"]))
@click.option("--reason", default=None, help="Told to the receiver (Stream Updated event).")
@click.pass_obj
def ssf_status(obj, stream_id, status, reason):
    """Pause, disable or enable a stream as the transmitter: a Stream Updated event reaches
    the receiver first (SSF 1.0 8.1.5); paused holds events in order, disabled drops them."""
    from .app import create_app, services
    from .domain.errors import DomainError
    from .storage.db import utcnow

    settings = _settings(obj)
    built = services(create_app(settings, database=_migrated_database(settings.database_url)))
    try:
        result = built.transmitter.change_status(stream_id, status, reason, utcnow())
    except DomainError as exc:
        raise click.ClickException(exc.description) from None
    finally:
        built.db.dispose()
    click.echo(f"stream {result['stream_id']}: {result['status']}"
               + (f" ({result['reason']})" if result.get("reason") else ""))


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
    built = services(create_app(settings, database=_migrated_database(settings.database_url)))
    try:
        changes = built.mirror.reconcile()
    except UpstreamUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        built.db.dispose()
    for line in changes:
        click.echo(line)
    click.echo(f"{len(changes)} changes")


# --- demo ---
EXAMPLE_RS = Path(__file__).resolve().parents[1] / "deploy" / "example-resource-server" / \
    "example_resource_server.py"
DEMO_SECRET_VARIABLES = ("IDP_BRIDGE_DEMO_CLIENT_SECRET", "IDP_BRIDGE_DEMO_RS_SECRET")
#: Set on a feed poll's environ by _FeedPollEvents: how many events the answer carried.
POLL_EVENTS = "idp_bridge.demo.poll_events"
log = logging.getLogger("idp_bridge.demo")


def _ensure_client(database, client_id: str, secret_variable: str, **kwargs):
    """Seed a demo client: (secret or None when unknown, whether the secret must be printed)."""
    from .services.operator import add_client
    from .domain.errors import Conflict

    secret = os.environ.get(secret_variable) or None
    try:
        return add_client(database, client_id, secret=secret, **kwargs), secret is None
    except Conflict:
        return secret, False  # an existing database keeps the client (and secret) it had


def _load_example_resource_server():
    import importlib.util

    spec = importlib.util.spec_from_file_location("example_resource_server", EXAMPLE_RS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _development_provider():
    try:
        from .devidp import DevProvider
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.devidp":
            raise
        # The development OpenID provider is not part of the wheel (pyproject.toml).
        raise click.ClickException(
            "the demo runs from a source checkout only (pip install -e '.[bridge]'): the "
            "development OpenID provider is not part of the installed package") from None
    return DevProvider


def _request_handler(label: str):
    """Werkzeug's request handler with one short line per request: the server, method,
    path (never the query string, which may carry codes) and status. Feed polls, which a
    resource server repeats every 15 s, are logged only when they carried events."""
    from urllib.parse import urlsplit

    from werkzeug.serving import WSGIRequestHandler

    class DemoRequestHandler(WSGIRequestHandler):
        def log_request(self, code="-", size="-"):
            path = urlsplit(getattr(self, "path", "") or "").path
            path = path.translate(self._control_char_table)
            events = getattr(self, "environ", {}).get(POLL_EVENTS)
            if events is not None:
                if not events:
                    log.debug("%s: %s %s %s (no events)", label, self.command, path, code)
                    return
                log.info("%s: %s %s %s (%d event%s)", label, self.command, path, code, events,
                         "" if events == 1 else "s")
                return
            log.info("%s: %s %s %s", label, getattr(self, "command", "-"), path, code)

    return DemoRequestHandler


class _FeedPollEvents:
    """WSGI middleware of the demo's bridge: counts the events of each feed poll's answer
    (POST /ssf/poll/…) for the request log."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") != "POST" or \
                not environ.get("PATH_INFO", "").startswith("/ssf/poll/"):
            return self.app(environ, start_response)
        answer = self.app(environ, start_response)
        try:
            body = b"".join(answer)
        finally:
            if hasattr(answer, "close"):
                answer.close()
        try:
            sets = json.loads(body).get("sets")
            environ[POLL_EVENTS] = len(sets) if isinstance(sets, dict) else 0
        except (ValueError, AttributeError):
            pass
        return [body]


def _serve_in_thread(cleanup: contextlib.ExitStack, port: int, app, label: str,
                     server: str, flag: str):
    from werkzeug.serving import make_server

    try:
        httpd = make_server("127.0.0.1", port, app, threaded=True,
                            request_handler=_request_handler(label))
    except OSError:  # taken since the check at the start
        raise _port_in_use(port, server, flag) from None
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    cleanup.callback(httpd.server_close)
    cleanup.callback(httpd.shutdown)
    return httpd


def _remove_folder(path: str) -> None:
    """Remove the demo's temporary folder, the last step of its clean-up. A request thread
    still finishing (a feed long poll checks the database every 50 ms until its 15 s are up)
    may reopen the database meanwhile: retry until the folder is gone. Such a thread finds
    no database then, and the demo, which is ending, logs nothing more."""
    import time

    logging.disable(logging.CRITICAL)
    deadline = time.monotonic() + 5
    while os.path.exists(path) and time.monotonic() < deadline:
        shutil.rmtree(path, ignore_errors=True)
        if os.path.exists(path):
            time.sleep(0.02)


def _configure_demo_logging() -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel("INFO")
    for chatty in ("werkzeug", "alembic"):  # request lines are ours; migrations are quiet
        logging.getLogger(chatty).setLevel("WARNING")


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
    127.0.0.1 with demo data. Without --database-url the data lives in a temporary folder,
    removed when the demo stops (Ctrl-C, SIGTERM)."""
    provider_class = _development_provider()
    for variable in DEMO_SECRET_VARIABLES:
        if 0 < len(os.environ.get(variable, "")) < 32:
            raise click.ClickException(f"{variable} must have at least 32 characters (it is a "
                                       "client secret); unset it and the demo makes one")
    servers = [(port, "bridge", "--port"), (idp_port, "development OpenID provider", "--idp-port")]
    if rs_port:
        servers.append((rs_port, "example resource server", "--rs-port"))
    if len({number for number, _, _ in servers}) != len(servers):
        raise click.ClickException("--port, --idp-port and --rs-port must be different ports")
    for number, server, flag in servers:
        if not _port_is_free(number):
            raise _port_in_use(number, server, flag)
    _configure_demo_logging()

    # A signal only sets the flag: raising from the handler could land inside a start-up
    # step that catches it (a thread starting, a lock), and the demo would then wait forever
    # with the signal ignored. Start-up runs to its end; then the clean-up runs.
    stopping = threading.Event()

    def stop(_signum, _frame):
        stopping.set()

    numbers = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    previous = {number: signal.signal(number, stop) for number in numbers}
    try:
        with contextlib.ExitStack() as cleanup:
            _run_demo(obj, cleanup, provider_class, port, idp_port, rs_port, workers)
            while not stopping.wait(0.5):
                pass
            for number in numbers:  # a second signal must not cut the clean-up
                signal.signal(number, signal.SIG_IGN)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _run_demo(obj, cleanup: contextlib.ExitStack, provider_class, port, idp_port, rs_port,
              workers) -> None:
    """Start everything; each started part registers its stop on ``cleanup`` (which runs
    them in reverse on the way out, the temporary folder's removal last)."""
    from .services.operator import add_tenant
    from .app import create_app, services
    from .domain.errors import Conflict

    database_url = obj.get("database_url")
    workdir = None
    if not database_url:
        workdir = tempfile.mkdtemp(prefix="idp-bridge-demo-")
        cleanup.callback(_remove_folder, workdir)
        database_url = f"sqlite:///{workdir}/demo.sqlite"
    given_kek = os.environ.get("IDP_BRIDGE_KEY_ENCRYPTION_KEY")
    idp_issuer = f"http://127.0.0.1:{idp_port}"
    issuer = f"http://127.0.0.1:{port}"
    settings = _settings({
        "config_file": obj.get("config_file"),
        "mode": "demo",
        "issuer": issuer,
        "database_url": database_url,
        "secret_key": os.environ.get("IDP_BRIDGE_SECRET_KEY")
        or DEMO_SECRET_PREFIX + secrets.token_urlsafe(32),
        "key_encryption_key": given_kek or Fernet.generate_key().decode(),
        "upstream_issuer": idp_issuer,
        "redis_url": obj.get("redis_url"),
        "log_format": "text",
        # "Open" on the advisor page hands the tokens to the example resource server's
        # application page, issued to the demo's console client.
        **({"app_url": f"http://127.0.0.1:{rs_port}/tenants/{{tenant}}/open",
            "app_client_id": DEMO_CLIENT} if rs_port else {}),
    })
    database = _database(settings)
    cleanup.callback(database.dispose)
    database.upgrade()
    _key_ring(settings, database, create=True)  # a database with keys of another KEK stops here

    provider = provider_class(idp_issuer, mode="demo")
    _serve_in_thread(cleanup, idp_port, provider.create_app(), "openid-provider",
                     "development OpenID provider", "--idp-port")

    app = create_app(settings, database=database)
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
    if workers > 1:
        # Several processes, as in production: gunicorn in a child process.
        import multiprocessing

        from .wsgi import GunicornApplication

        options = gunicorn_options(f"127.0.0.1:{port}", workers)
        database.dispose()  # no connection may be shared across the fork
        bridge_process = multiprocessing.get_context("fork").Process(
            target=lambda: GunicornApplication(settings, options).run(), daemon=True)
        bridge_process.start()
        cleanup.callback(bridge_process.join, 20)
        cleanup.callback(bridge_process.terminate)
        _wait_for_port(port, bridge_process)
    else:
        services(app).start_background()
        cleanup.callback(services(app).stop_background)
        _serve_in_thread(cleanup, port, _FeedPollEvents(app), "bridge", "bridge", "--port")

    if rs_port:
        example = _load_example_resource_server()
        guard = example.TokenGuard(issuer, settings.default_audience)
        # RFC 9728: published by the example, named in its challenges.
        guard.resource_metadata = example.resource_metadata(guard, f"http://127.0.0.1:{rs_port}")
        if rs_secret:
            guard.start_revocation_listener(DEMO_RS_CLIENT, rs_secret)
            cleanup.callback(guard.stop_revocation_listener)
            # What advisors read there reaches the tenant's access log (POST /access-records),
            # from a spool of the demo's own (removed on the way out with what it holds).
            if workdir is not None:
                spool = os.path.join(workdir, "access-spool")
            else:
                spool = tempfile.mkdtemp(prefix="idp-bridge-demo-")
                cleanup.callback(_remove_folder, spool)
            guard.start_access_recording(DEMO_RS_CLIENT, rs_secret, spool,
                                         max_spool_bytes=16 * 1024 * 1024)
            cleanup.callback(guard.stop_access_recording)
        _serve_in_thread(cleanup, rs_port, example.create_app(guard), "resource-server",
                         "example resource server", "--rs-port")

    click.echo(f"idp-bridge demo (database {database.url.render_as_string(hide_password=True)}"
               + (f", Redis {settings.redis_url}" if settings.redis_url else "")
               + (f", {workers} processes" if workers > 1 else "") + ")")
    click.echo(f"  bridge:            {issuer}")
    click.echo(f"  OpenID provider:   {idp_issuer}  (development only)")
    if rs_port:
        click.echo(f"  resource server:   http://127.0.0.1:{rs_port}/tenants/10042/payments"
                   "  (example)")
        click.echo(f"  application:       {settings.app_url}  (\"Open\" on {issuer}/advisor)")
        if not rs_secret:
            click.echo("  (the resource server does not hear the revocation feed: its client "
                       "exists in this database; start the demo with IDP_BRIDGE_DEMO_RS_SECRET "
                       "set to the secret printed when it was made)")
    click.echo(f"  tenant:            {DEMO_TENANT[0]} ({DEMO_TENANT[1]}), admins: anna, dora")
    click.echo("  advisors:          bob, carol   support admin: sam")
    for client_id, secret, shown, variable in (
            (DEMO_CLIENT, client_secret, print_client, "IDP_BRIDGE_DEMO_CLIENT_SECRET"),
            (DEMO_RS_CLIENT, rs_secret, print_rs, "IDP_BRIDGE_DEMO_RS_SECRET")):
        if shown:
            click.echo(f"  client:            {client_id}, secret {secret}")
            click.echo(f"  export {variable}={secret}")
        elif secret:
            click.echo(f"  client:            {client_id}, secret from {variable}")
        else:
            click.echo(f"  client:            {client_id}, already in this database (its "
                       f"secret was printed when it was made: set {variable})")
    if obj.get("database_url") and not given_kek:
        # A kept database needs the same key next time, or its signing keys stay locked.
        click.echo("  to run the demo on this database again, keep its key-encryption key:")
        click.echo(f"  export IDP_BRIDGE_KEY_ENCRYPTION_KEY={settings.key_encryption_key}")
    click.echo("Upstream tokens for the demo users: idp-bridge demo-token bob")
    sys.stdout.flush()


def _wait_for_port(port: int, process=None, timeout: float = 30.0) -> None:
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not process.is_alive():
            raise click.ClickException(f"the bridge did not start on port {port} (its "
                                       "processes ended; see the lines above)")
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
        raise click.ClickException(f"unknown demo user {user!r} (anna, dora, bob, carol, sam, eve)")
    click.echo(response.json()["id_token" if id_token else "access_token"])


from .cli_audit import audit  # noqa: E402  (verify, checkpoint, rotate-key)

main.add_command(audit)

if __name__ == "__main__":
    main()
