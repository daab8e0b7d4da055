"""``idp-bridge doctor``: is this installation able to serve, and if not, what to do.

One check per component the bridge depends on, in the order a start needs them: the
settings, the database (reachable, schema at the migrations' head), the signing keys (the
key-encryption key opens them), the audit chains (each stored chain still links up to its
head from its newest signed checkpoint, and that checkpoint names the stored event), the upstream provider (discovery and JWK set), Redis, the
Keycloak admin API and the push destinations of the revocation feed's streams. Each check
answers ``OK``, ``FAIL`` (with the fix) or ``SKIP`` (not configured, or a check it depends
on failed).

The checks read and never write: no file is created (an SQLite database that does not exist
is reported, not made), no key is made, nothing is migrated. Every outbound request has a
timeout, and no line repeats a secret: URLs are shown without passwords, query strings or
paths that could carry one, and errors by their kind rather than their text.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .settings import Settings, SettingsError, env_name

OK, FAIL, SKIP = "OK", "FAIL", "SKIP"
MIGRATIONS = Path(__file__).parent / "storage" / "migrations"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    #: What to do about a FAIL.
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<4}  {self.name}: {self.detail}"
        return f"{text}. Fix: {self.fix}" if self.fix else text


# --- the migration level (also used by ``idp-bridge serve``) ---------------------------------

@dataclass(frozen=True)
class MigrationLevel:
    #: The database's Alembic revision; None when it has none (never migrated).
    current: str | None
    #: The newest revision of this version of the bridge.
    head: str
    #: False for an SQLite file that does not exist.
    exists: bool = True

    @property
    def at_head(self) -> bool:
        return self.current == self.head

    def problem(self) -> str | None:
        """Why a bridge cannot start on this database, or None."""
        if not self.exists:
            return "the database does not exist"
        if self.current is None:
            return "the database is not migrated"
        if self.current != self.head:
            return (f"the database schema is at revision {self.current}, this version of "
                    f"idp-bridge needs {self.head}")
        return None


def head_revision(*, isolated: bool = False) -> str:
    """The newest migration's revision. ``isolated``: worked out by a child interpreter, so
    that this process never loads Alembic (with mako and pygments, about 9 MB that every
    worker forked from it would carry: ``serve``'s master)."""
    if isolated:
        import subprocess
        import sys

        found = subprocess.run(
            [sys.executable, "-c", "import sys; from alembic.script import ScriptDirectory; "
             "print(ScriptDirectory(sys.argv[1]).get_current_head())", str(MIGRATIONS)],
            capture_output=True, text=True, timeout=120, check=False)
        head = found.stdout.strip()
        if found.returncode != 0 or not head.isalnum():
            raise RuntimeError("the newest migration could not be determined: "
                               + found.stderr.strip()[-300:])
        return head
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def database_url(url: str):
    """``url`` as a SQLAlchemy URL with the driver the bridge uses (psycopg 3)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite URL (None for other backends and in-memory databases)."""
    parsed = database_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def migration_level(url: str, *, timeout: float = 5.0, isolated: bool = False) -> MigrationLevel:
    """The schema revision of the database at ``url``, read without changing anything: an
    SQLite file is opened read-only (and not created when missing). Raises the driver's
    error when the database cannot be reached. ``isolated``: see :func:`head_revision`."""
    import sqlite3

    head = head_revision(isolated=isolated)
    path = sqlite_path(url)
    if path is not None:
        if not path.is_file():
            return MigrationLevel(None, head, exists=False)
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                     timeout=timeout)
        try:
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            row = None
        finally:
            connection.close()
        return MigrationLevel(row[0] if row else None, head)
    from alembic.runtime.migration import MigrationContext

    engine = _engine(url, timeout)
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
    return MigrationLevel(current, head)


def _engine(url: str, timeout: float):
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    parsed = database_url(url)
    connect_args = {"connect_timeout": max(1, int(timeout))} \
        if parsed.get_backend_name() == "postgresql" else {}
    return create_engine(parsed, poolclass=NullPool, connect_args=connect_args)


# --- the checks ------------------------------------------------------------------------------

def run_checks(overrides: dict | None = None, environ=None, *,
               timeout: float = 5.0) -> list[Check]:
    """Every check, in order; later checks are skipped when what they need failed."""
    checks: list[Check] = []
    settings = None
    try:
        settings = Settings.load(overrides, environ)
        checks.append(Check("settings", OK, f"mode {settings.mode}, issuer {settings.issuer}"))
    except SettingsError as exc:
        checks.append(Check("settings", FAIL, str(exc), _settings_fix(exc)))
    timeout = min(timeout, settings.upstream_timeout_seconds) if settings else timeout

    database_ok = False
    try:
        url = settings.database_url if settings else Settings.load_database_url(overrides, environ)
    except SettingsError as exc:
        checks.append(Check("database", FAIL, str(exc), _settings_fix(exc)))
        url = None
    if url is not None:
        check = check_database(url, timeout=timeout)
        database_ok = check.status == OK
        checks.append(check)

    needs_settings = "skipped: the settings are invalid"
    if settings is None:
        checks.append(Check("signing keys", SKIP, needs_settings))
    elif not database_ok:
        checks.append(Check("signing keys", SKIP, "skipped: the database check failed"))
    else:
        checks.append(check_signing_keys(settings))
    if settings is None:
        checks.append(Check("audit chains", SKIP, needs_settings))
    elif not database_ok:
        checks.append(Check("audit chains", SKIP, "skipped: the database check failed"))
    else:
        checks.append(check_audit_chains(settings.database_url))
    checks.append(check_upstream(settings, timeout=timeout) if settings
                  else Check("upstream", SKIP, needs_settings))
    checks.append(check_redis(settings, timeout=timeout) if settings
                  else Check("redis", SKIP, needs_settings))
    checks.append(check_keycloak_admin(settings, timeout=timeout) if settings
                  else Check("keycloak admin", SKIP, needs_settings))
    if settings is None:
        checks.append(Check("push destinations", SKIP, needs_settings))
    elif not database_ok:
        checks.append(Check("push destinations", SKIP, "skipped: the database check failed"))
    else:
        checks.extend(check_push_destinations(settings, timeout=timeout))
    return checks


def _settings_fix(exc: SettingsError) -> str:
    if exc.key == "key_encryption_key":
        return "set the key the signing keys were made with (a new one: idp-bridge keys new-kek)"
    if exc.key == "config":
        return "check the path and TOML syntax of IDP_BRIDGE_CONFIG or --config"
    return f"correct or set {env_name(exc.key)} (README: Configuration)"


def check_database(url: str, *, timeout: float = 5.0) -> Check:
    shown = safe_database_url(url)
    try:
        level = migration_level(url, timeout=timeout)
    except Exception as exc:  # the driver's own errors: connection refused, auth, DNS, ...
        return Check("database", FAIL, f"{shown} does not answer ({type(exc).__name__})",
                     "check IDP_BRIDGE_DATABASE_URL (host, port, user, database) and that "
                     "the database server runs and admits this host")
    problem = level.problem()
    if problem is not None:
        return Check("database", FAIL, f"{shown}: {problem}", "run idp-bridge db upgrade")
    return Check("database", OK, f"{shown}, schema at the latest revision ({level.head})")


def check_signing_keys(settings: Settings) -> Check:
    from sqlalchemy import func, select

    from .domain.keys import KeyDecryptionFailed, KeyRing
    from .storage.db import Database
    from .storage.models import SigningKey

    database = Database(settings.database_url)
    try:
        ring = KeyRing(database, settings.key_encryption_key, settings.signing_alg,
                       settings.access_token_lifetime)
        try:
            ring.check()
        except KeyDecryptionFailed:
            return Check("signing keys", FAIL,
                         "IDP_BRIDGE_KEY_ENCRYPTION_KEY does not decrypt the active signing "
                         "key stored in the database",
                         "set the key-encryption key the keys were made with; only if it is "
                         "lost: idp-bridge keys rotate --recover (every bridge then needs the "
                         "new key)")
        with database.read() as session:
            count = session.scalar(select(func.count()).select_from(SigningKey))
        if not count:
            return Check("signing keys", OK, "none yet: the first start makes one with this "
                         "key-encryption key")
        kid, alg, _ = ring.signing_key()
        return Check("signing keys", OK, f"the key-encryption key opens the active key {kid} "
                     f"({alg})")
    except Exception as exc:
        return Check("signing keys", FAIL, f"cannot be read ({type(exc).__name__})",
                     "check the database (see the database check)")
    finally:
        database.dispose()


#: At most this many events recomputed by the audit-chain check (a bridge whose maintenance
#: loop signs checkpoints has only minutes of events after them).
CHAIN_CHECK_EVENTS = 200_000


def check_audit_chains(url: str, *, budget: int = CHAIN_CHECK_EVENTS) -> Check:
    """Read-only: for every chain, the events after its newest checkpoint recomputed up to
    the stored head, and that checkpoint's hash found on the stored event at its position
    (an event before it edited, removed or reordered with its hashes recomputed shows
    there). The whole of a chain is checked by exporting and verifying it."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import aliased

    from .domain.audit_chain import GENESIS
    from .domain.audit_checkpoints import check_segment
    from .storage.db import Database
    from .storage.models import AuditChainHead, AuditCheckpoint, AuditEvent

    database = Database(url)
    try:
        with database.read() as session:
            inner, last = aliased(AuditCheckpoint), aliased(AuditCheckpoint)
            newest = (select(func.max(inner.seq)).where(inner.chain == AuditChainHead.chain)
                      .correlate(AuditChainHead).scalar_subquery())
            rows = session.execute(
                select(AuditChainHead.chain, AuditChainHead.seq, AuditChainHead.hash,
                       last.seq, last.hash, AuditEvent.hash)
                .select_from(AuditChainHead)
                .outerjoin(last, (last.chain == AuditChainHead.chain) & (last.seq == newest))
                .outerjoin(AuditEvent, (AuditEvent.chain == last.chain)
                           & (AuditEvent.seq == last.seq))
                .order_by(AuditChainHead.chain)).all()
            checked, events, unfinished = 0, 0, 0
            for chain, head_seq, head_hash, signed_seq, signed_hash, stored_hash in rows:
                if signed_seq is not None and stored_hash != signed_hash:
                    return _broken_chain(chain, signed_seq, "removed" if stored_hash is None
                                         else "the signed checkpoint names another event")
                after_seq = signed_seq or 0
                if events + head_seq - after_seq > budget:
                    unfinished += 1
                    continue
                problem = check_segment(session, chain, after_seq, signed_hash or GENESIS,
                                        head_seq, head_hash)
                if problem is not None:
                    return _broken_chain(chain, problem.seq, problem.problem)
                checked, events = checked + 1, events + head_seq - after_seq
    except Exception as exc:
        return Check("audit chains", FAIL, f"cannot be read ({type(exc).__name__})",
                     "check the database (see the database check)")
    finally:
        database.dispose()
    detail = (f"{checked} chain{'s' if checked != 1 else ''} link up to their heads "
              f"({events} event{'s' if events != 1 else ''} after the newest checkpoints "
              "recomputed)")
    if unfinished:
        detail += (f"; {unfinished} more with over {budget} unsigned events left unchecked "
                   "(is the maintenance loop running? idp-bridge audit checkpoint signs them)")
    return Check("audit chains", OK, detail)


def _broken_chain(chain: str, seq: int, problem: str) -> Check:
    which = "--system" if chain == "system" else f"--tenant {chain.split(':', 1)[1]}"
    return Check("audit chains", FAIL, f"chain {chain} does not verify at seq {seq} ({problem})",
                 f"export it (idp-bridge audit export {which} --output chain.json) and verify it "
                 "(idp-bridge audit verify chain.json) to see what changed; restore the events "
                 "from a backup (docs/audit-chain.md)")


def check_upstream(settings: Settings, *, timeout: float = 5.0) -> Check:
    import requests

    name = "upstream"
    where = safe_url(settings.discovery_url)
    http = requests.Session()
    try:
        try:
            response = http.get(settings.discovery_url, timeout=timeout)
        except requests.RequestException as exc:
            return Check(name, FAIL, f"discovery {where} unreachable ({_kind(exc)})",
                         "check IDP_BRIDGE_UPSTREAM_ISSUER (or IDP_BRIDGE_UPSTREAM_DISCOVERY_URL) "
                         "and that the provider is reachable from this host")
        metadata = _json_object(response)
        if response.status_code != 200 or metadata is None:
            return Check(name, FAIL, f"discovery {where} answered {response.status_code} "
                         "without a JSON document", "check IDP_BRIDGE_UPSTREAM_ISSUER: it must "
                         "be the provider's issuer (Keycloak: …/realms/<realm>)")
        if metadata.get("issuer") != settings.upstream_issuer:
            return Check(name, FAIL, f"discovery {where} names another issuer",
                         "set IDP_BRIDGE_UPSTREAM_ISSUER to exactly the issuer of the "
                         "provider's discovery document")
        jwks_uri = metadata.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            return Check(name, FAIL, f"discovery {where} has no jwks_uri",
                         "the provider must publish its signing keys (jwks_uri)")
        try:
            keys = http.get(jwks_uri, timeout=timeout)
        except requests.RequestException as exc:
            return Check(name, FAIL, f"JWK set {safe_url(jwks_uri)} unreachable ({_kind(exc)})",
                         "the provider's jwks_uri must be reachable from this host")
        body = _json_object(keys)
        listed = (body or {}).get("keys")
        usable = [k for k in listed if isinstance(k, dict) and k.get("use", "sig") == "sig"
                  and k.get("kty") in ("RSA", "EC", "OKP")] if isinstance(listed, list) else []
        if keys.status_code != 200 or not usable:
            return Check(name, FAIL, f"JWK set {safe_url(jwks_uri)} has no signing key "
                         f"(status {keys.status_code})",
                         "the provider must publish its token-signing keys")
        return Check(name, OK, f"{safe_url(settings.upstream_issuer)}: discovery and JWK set "
                     f"({len(usable)} signing keys)")
    finally:
        http.close()


def check_redis(settings: Settings, *, timeout: float = 5.0) -> Check:
    if not settings.redis_url:
        return Check("redis", SKIP, "IDP_BRIDGE_REDIS_URL is not set (revocation wake-ups "
                     "reach other processes through the database)")
    import redis

    where = safe_url(settings.redis_url)
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=timeout,
                                  socket_connect_timeout=timeout)
    try:
        client.ping()
    except redis.RedisError as exc:
        return Check("redis", FAIL, f"{where} does not answer ({type(exc).__name__})",
                     "check IDP_BRIDGE_REDIS_URL and that Redis runs and admits this host")
    finally:
        client.close()
    return Check("redis", OK, f"{where} answers")


def check_keycloak_admin(settings: Settings, *, timeout: float = 5.0) -> Check:
    if not settings.keycloak_admin:
        return Check("keycloak admin", SKIP, "IDP_BRIDGE_KEYCLOAK_ADMIN is off")
    from .upstream.keycloak import KeycloakAdmin, KeycloakUnavailable

    admin = KeycloakAdmin.from_issuer(settings.upstream_issuer,
                                      client_id=settings.keycloak_client_id,
                                      client_secret=settings.keycloak_client_secret,
                                      timeout=timeout)
    try:
        admin.search_users("", limit=1)  # view-users
        admin.group_id("/tenants", create=False)  # query-groups
    except KeycloakUnavailable as exc:
        return Check("keycloak admin", FAIL, f"realm {admin.realm} at "
                     f"{safe_url(admin.base_url)}: {exc}",
                     "check IDP_BRIDGE_KEYCLOAK_CLIENT_ID and IDP_BRIDGE_KEYCLOAK_CLIENT_SECRET, "
                     "and that the client's service account has the realm-management roles "
                     "view-users, query-groups and manage-users (deploy/keycloak/README.md)")
    return Check("keycloak admin", OK, f"service account {settings.keycloak_client_id} of "
                 f"realm {admin.realm} reads users and groups")


def check_push_destinations(settings: Settings, *, timeout: float = 5.0) -> list[Check]:
    """Every push stream's endpoint against the egress policy of these settings (the streams
    were accepted under the policy of their time; an allow-list set later may refuse them)."""
    from sqlalchemy import select

    from .ssf.egress import PushPolicy, PushTargetRefused
    from .ssf.streams import PUSH
    from .storage.db import Database
    from .storage.models import SsfStream

    database = Database(settings.database_url)
    try:
        with database.read() as session:
            streams = session.execute(
                select(SsfStream.stream_id, SsfStream.client_id, SsfStream.endpoint_url)
                .where(SsfStream.delivery_method == PUSH).order_by(SsfStream.stream_id)).all()
    except Exception as exc:
        return [Check("push destinations", FAIL, f"cannot be read ({type(exc).__name__})",
                      "check the database (see the database check)")]
    finally:
        database.dispose()
    if not streams:
        return [Check("push destinations", SKIP, "no stream uses push delivery")]
    policy = PushPolicy(https_only=settings.mode == "production",
                        allow_loopback=settings.ssf_push_allow_loopback,
                        allowed_hosts=settings.ssf_push_allowed_hosts,
                        own_url=settings.issuer)
    checks = []
    for stream_id, client_id, url in streams:
        name = f"push destination of stream {stream_id} ({client_id})"
        where = safe_url(url or "", path=False)  # a path may carry a receiver's token
        try:
            _within(timeout, policy.check_endpoint, url)
        except PushTargetRefused as exc:
            checks.append(Check(name, FAIL, f"{where} refused: {exc}",
                                f"receiver {client_id} must register a public push endpoint "
                                "(or the operator adjusts IDP_BRIDGE_SSF_PUSH_ALLOWED_HOSTS)"))
            continue
        except TimeoutError:
            checks.append(Check(name, FAIL, f"{where}: the host name did not resolve within "
                                f"{timeout:g} s", "check this host's DNS resolver"))
            continue
        checks.append(Check(name, OK, f"{where} allowed"))
    return checks


# --- helpers ---------------------------------------------------------------------------------

def _within(timeout: float, func, *args):
    """``func(*args)`` in a daemon thread, at most ``timeout`` seconds (name resolution has
    no timeout of its own); TimeoutError when it takes longer."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = func(*args)
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TimeoutError
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _json_object(response) -> dict | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _kind(exc: Exception) -> str:
    import requests

    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "connection refused or host unknown"
    return type(exc).__name__


def safe_url(url: str, *, path: bool = True) -> str:
    """scheme://host[:port] and (with ``path``) the path of an http(s) URL, never user
    information, query or fragment."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    shown = parts.path if path and parts.scheme in ("http", "https") else ""
    return f"{parts.scheme}://{host}{port}{shown}"


def safe_database_url(url: str) -> str:
    try:
        return database_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable URL)"

