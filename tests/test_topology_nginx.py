"""The production topology for real, without Docker (issue 12, item 13).

Two ``idp-bridge serve`` processes (two gunicorn workers each, as in deploy/compose.yaml) on
PostgreSQL and Redis, with Keycloak as the upstream identity provider and the Keycloak group
mirror on, behind Debian's nginx running the shipped ``deploy/nginx/bridge.conf``. Everything
listens on 127.0.0.1 only; nginx's pid, logs and temporary files live in a temporary folder.

The file under test is the shipped one: :func:`render_bridge_conf` applies the mechanical
mapping documented in its header (the two upstream addresses and the listen port, each
exactly once) and a generated main configuration ``include``s the result. The names of the
bridges' IDP_BRIDGE_* settings, their ``serve`` arguments and the nginx file are defined here
once (:func:`bridge_environment`, :func:`serve_arguments`, :data:`NGINX_CONFIG`);
tests/test_deploy_consistency.py checks that compose.yaml names the same.

Differences from compose.yaml, all in values: ``IDP_BRIDGE_MODE`` is ``test`` because
Keycloak on loopback speaks plain http and production mode insists on https issuers (TLS
termination is the one part not run here), ports are free loopback ports, and the feed's long
poll is 20 s (an idle poll longer than compose's 15 s must pass nginx too).

Nothing asserts timing: waits are bounded and generous, and which instance serves which
request is read from nginx's access log ($upstream_addr).
"""

from __future__ import annotations

import base64
import grp
import http.client
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography.fernet import Fernet

from conftest import (ACCESS_TOKEN_TYPE, CLIENT_ID, RS_CLIENT_ID, TENANT, TOKEN_EXCHANGE,
                      wait_until)
from test_keycloak_e2e import ADVISORS, kc, members  # noqa: F401  (kc: a fixture)

pytestmark = [pytest.mark.slow, pytest.mark.keycloak]

ROOT = Path(__file__).resolve().parent.parent
#: The nginx configuration under test: the file compose.yaml mounts into its nginx.
NGINX_CONFIG = ROOT / "deploy" / "nginx" / "bridge.conf"
#: The upstream addresses in NGINX_CONFIG (compose.yaml's services and their port), in order.
NGINX_UPSTREAMS = ("bridge-1:8000", "bridge-2:8000")
#: The listen directive in NGINX_CONFIG (compose.yaml publishes this container port).
NGINX_LISTEN = "listen 8080;"
#: Worker processes per bridge instance, here and in compose.yaml.
WORKERS = 2
#: The feed's long poll in these tests: longer than compose.yaml's 15 s, below the largest
#: value the settings allow (25 s) and nginx's proxy_read_timeout (30 s).
LONG_POLL_SECONDS = 20
SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"


def serve_arguments(host: str, port: int) -> list[str]:
    """The arguments of ``idp-bridge`` starting one bridge instance (compose.yaml: the same
    with host 0.0.0.0 and port 8000)."""
    return ["serve", "--host", host, "--port", str(port), "--workers", str(WORKERS)]


def bridge_environment(*, issuer: str, database_url: str, redis_url: str, secret_key: str,
                       key_encryption_key: str, upstream_issuer: str,
                       keycloak_client_secret: str) -> dict[str, str]:
    """The IDP_BRIDGE_* settings of each bridge instance: the names are compose.yaml's."""
    return {
        "IDP_BRIDGE_MODE": "test",  # compose: production (needs https issuers)
        "IDP_BRIDGE_ISSUER": issuer,
        "IDP_BRIDGE_DATABASE_URL": database_url,
        "IDP_BRIDGE_REDIS_URL": redis_url,
        "IDP_BRIDGE_SECRET_KEY": secret_key,
        "IDP_BRIDGE_KEY_ENCRYPTION_KEY": key_encryption_key,
        "IDP_BRIDGE_UPSTREAM_ISSUER": upstream_issuer,
        "IDP_BRIDGE_KEYCLOAK_ADMIN": "true",
        "IDP_BRIDGE_KEYCLOAK_CLIENT_SECRET": keycloak_client_secret,
        "IDP_BRIDGE_WEB_CLIENT_SECRET": keycloak_client_secret,
        "IDP_BRIDGE_SSF_LONG_POLL_SECONDS": str(LONG_POLL_SECONDS),
    }


def render_bridge_conf(text: str, upstream_ports: tuple[int, int], listen_port: int) -> str:
    """NGINX_CONFIG with only the mapping of its header applied: the upstream addresses to
    loopback ports, the listen port to 127.0.0.1. Each must occur exactly once."""
    substitutions = [(f"server {name}", f"server 127.0.0.1:{port}")
                     for name, port in zip(NGINX_UPSTREAMS, upstream_ports)]
    substitutions.append((NGINX_LISTEN, f"listen 127.0.0.1:{listen_port};"))
    for old, new in substitutions:
        count = text.count(old)
        if count != 1:
            raise ValueError(f"{NGINX_CONFIG.name} must contain {old!r} exactly once, "
                             f"found {count}: update the mapping in its header and here")
        text = text.replace(old, new)
    return text


def nginx_binary() -> str | None:
    """Debian's nginx: /usr/sbin/nginx, which is not on every PATH."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def main_config(folder: Path, include: Path) -> str:
    """nginx's main configuration for a run in ``folder``: everything nginx writes goes
    there; the http block includes the rendered bridge.conf (compose: conf.d/default.conf)."""
    user = ""
    if os.geteuid() == 0:  # workers then drop to an unprivileged user, as in production
        nobody = pwd.getpwnam("nobody")
        user = f"user nobody {grp.getgrgid(nobody.pw_gid).gr_name};"
    return f"""{user}
daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log notice;
events {{ worker_connections 512; }}
http {{
    log_format topology '$request_method $request_uri $status "$upstream_addr" "$upstream_status"';
    access_log {folder}/access.log topology;
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    include {include};
}}
"""


@dataclass(frozen=True)
class Access:
    """One line of nginx's access log."""

    method: str
    uri: str
    status: int
    upstreams: tuple[str, ...]  # the instances tried, in order ($upstream_addr)


_ACCESS = re.compile(r'^(\S+) (\S+) (\d{3}) "([^"]*)" "([^"]*)"$')


def _live_processes_of_group(pgid: int) -> list[int]:
    """Processes of the process group that are not zombies (a zombie holds no sockets)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


class Topology:
    """nginx in front of two bridge processes; every request of the tests goes to nginx."""

    def __init__(self, folder: Path, keycloak, seed, database_url: str):
        self.folder = folder
        self.keycloak = keycloak
        self.secret = seed.secret
        self.rs_secret = seed.rs_secret
        self.database_url = database_url
        self.port = self.ports = None
        self.bridges: list[subprocess.Popen] = []
        self.nginx: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    issuer = base

    def upstream(self, index: int) -> str:
        """The address nginx logs for bridge process ``index``."""
        return f"127.0.0.1:{self.ports[index]}"

    # --- what the clients do, through nginx ---
    def get(self, path: str, **kwargs):
        return requests.get(self.base + path, timeout=60, **kwargs)

    def post(self, path: str, **kwargs):
        return requests.post(self.base + path, timeout=60, **kwargs)

    def bearer(self, user: str) -> dict:
        token = self.keycloak.password_token(user)["access_token"]
        return {"Authorization": f"Bearer {token}"}

    def access_code(self) -> str:
        response = self.get(f"/api/tenants/{TENANT}/access-code", headers=self.bearer("anna"))
        assert response.status_code == 200, response.text
        return response.json()["code"]

    def exchange(self, user: str, code: str | None = None):
        data = {"grant_type": TOKEN_EXCHANGE, "tenant": TENANT,
                "subject_token": self.keycloak.password_token(user)["access_token"],
                "subject_token_type": ACCESS_TOKEN_TYPE}
        if code is not None:
            data["access_code"] = code
        return self.post("/token", data=data, auth=(CLIENT_ID, self.secret))

    def introspect(self, token: str) -> dict:
        response = self.post("/introspect", data={"token": token},
                             auth=(RS_CLIENT_ID, self.rs_secret))
        assert response.status_code == 200, response.text
        return response.json()

    def memberships(self) -> dict[str, str]:
        """Active memberships of the tenant: advisor subject -> membership id."""
        response = self.get(f"/api/tenants/{TENANT}/memberships", headers=self.bearer("anna"))
        assert response.status_code == 200, response.text
        return {m["advisor"]: m["id"] for m in response.json()["memberships"]}

    def create_stream(self) -> str:
        response = self.post("/ssf/stream", json={}, auth=(RS_CLIENT_ID, self.rs_secret))
        assert response.status_code == 201, response.text
        return response.json()["stream_id"]

    def verify(self, token: str, keys_path: str = "/jwks") -> dict:
        """Claims of an access token (``/jwks``) or a SET (``/ssf/jwks``, the feed's own keys)."""
        from joserfc import jwt
        from joserfc.jwk import KeySet

        keys = KeySet.import_key_set(self.get(keys_path).json())
        return jwt.decode(token, keys, algorithms=["ES256", "RS256"]).claims

    # --- nginx's view ---
    def access_log(self) -> list[Access]:
        path = self.folder / "access.log"
        lines = path.read_text().splitlines() if path.exists() else []
        entries = []
        for line in lines:
            match = _ACCESS.match(line)
            assert match, f"unexpected access log line: {line!r}"
            upstreams = tuple(a.strip() for a in re.split(r"[,:] (?=\d)", match[4]) if a.strip()) \
                if match[4] not in ("", "-") else ()
            entries.append(Access(match[1], match[2], int(match[3]), upstreams))
        return entries

    def logged(self, predicate, what: str, timeout: float = 30) -> list[Access]:
        """The access log once ``predicate`` holds for it (nginx writes a line after the
        answer is sent, so a client can be faster than the log)."""
        return wait_until(lambda: (lambda e: e if predicate(e) else None)(self.access_log()),
                          timeout=timeout, interval=0.05,
                          what=lambda: f"access log: {what}: {self.access_log()}")

    def logs(self) -> str:
        """The tails of every log, for failure messages."""
        parts = []
        for name in ("error.log", "bridge-0.log", "bridge-1.log"):
            path = self.folder / name
            if path.exists():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text().splitlines()[-30:]))
        return "\n".join(parts)

    # --- processes ---
    def kill(self, index: int) -> None:
        """SIGKILL to bridge process ``index`` and its workers; returns once none of them
        holds a socket any more."""
        process = self.bridges[index]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
        wait_until(lambda: not _live_processes_of_group(process.pid), timeout=30,
                   interval=0.05, what="the killed bridge's workers to exit")

    def stop(self) -> None:
        for process in [*self.bridges, self.nginx]:
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in [*self.bridges, self.nginx]:
            if process is None:
                continue
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def _wait_ready(url: str, topology: Topology, what: str) -> None:
    def ready():
        try:
            return requests.get(url, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_until(ready, timeout=90, interval=0.1,
               what=lambda: f"{what} ready at {url}\n{topology.logs()}")


@pytest.fixture(scope="module")
def nginx() -> str:
    """Debian's nginx; without it the tests fail with the reason when CI is set, else skip."""
    from services import unavailable

    found = nginx_binary()
    if found is None:
        unavailable("nginx is not installed (Debian package nginx; .ci/run installs it)")
    return found


@pytest.fixture(scope="module")
def topology(nginx, keycloak, postgres, postgres_seeded, redis_server):
    from services import free_port

    template, seed = postgres_seeded
    database_url = postgres.create_database(f"topology_{uuid.uuid4().hex[:12]}", template=template)
    # nginx's workers run as nobody when the tests run as root: the folder must be readable.
    folder = Path(tempfile.mkdtemp(prefix="idp-bridge-topology-"))
    folder.chmod(0o755)
    topology = Topology(folder, keycloak, seed, database_url)
    topology.port = free_port()
    topology.ports = (free_port(), free_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_BRIDGE_")}
    env.update(bridge_environment(
        issuer=topology.issuer, database_url=database_url, redis_url=redis_server.url,
        secret_key=secrets.token_urlsafe(48), key_encryption_key=Fernet.generate_key().decode(),
        upstream_issuer=keycloak.issuer,
        keycloak_client_secret=keycloak.client_secrets["idp-bridge"]))
    try:
        for index, port in enumerate(topology.ports):
            with open(folder / f"bridge-{index}.log", "wb") as log:
                topology.bridges.append(subprocess.Popen(
                    [sys.executable, "-m", "idp_bridge.cli", *serve_arguments("127.0.0.1", port)],
                    env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        rendered = folder / "bridge.conf"
        rendered.write_text(render_bridge_conf(NGINX_CONFIG.read_text(), topology.ports,
                                               topology.port))
        (folder / "nginx.conf").write_text(main_config(folder, rendered))
        command = [nginx, "-p", str(folder), "-c", str(folder / "nginx.conf"),
                   "-e", str(folder / "error.log")]
        check = subprocess.run([*command, "-t", "-q"], capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, f"nginx refuses {NGINX_CONFIG}: {check.stderr}"
        topology.nginx = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True)
        for port in topology.ports:
            _wait_ready(f"http://127.0.0.1:{port}/readyz", topology, "a bridge process")
        _wait_ready(f"{topology.base}/readyz", topology, "nginx")
        yield topology
    finally:
        topology.stop()
        shutil.rmtree(folder, ignore_errors=True)


# --- the proxy's own behaviour ----------------------------------------------------------

def test_both_instances_answer_and_forwarded_headers_cannot_move_the_issuer(topology):
    t = topology
    spoofed = {"Host": "evil.example", "X-Forwarded-Host": "evil.example",
               "X-Forwarded-Proto": "https", "X-Forwarded-Prefix": "/evil",
               "Forwarded": "host=evil.example;proto=https"}
    for _ in range(4):  # round robin: every instance answers at least once
        metadata = t.get("/.well-known/oauth-authorization-server", headers=spoofed)
        assert metadata.status_code == 200
        assert metadata.json()["issuer"] == t.issuer
        assert metadata.json()["token_endpoint"] == f"{t.issuer}/token"
        feed = t.get("/.well-known/ssf-configuration", headers=spoofed).json()
        assert feed["issuer"] == t.issuer and feed["jwks_uri"] == f"{t.issuer}/ssf/jwks"
    entries = t.logged(lambda e: sum(a.uri.startswith("/.well-known/") for a in e) >= 8,
                       "the eight discovery requests")
    served = {a.upstreams for a in entries if a.uri.startswith("/.well-known/")}
    assert served == {(t.upstream(0),), (t.upstream(1),)}, t.logs()


def test_request_id_comes_from_the_proxy(topology):
    response = topology.get("/healthz", headers={"X-Request-ID": "chosen-by-the-client"})
    assert response.status_code == 200
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])  # nginx's $request_id


def test_body_limits_of_proxy_and_bridge(topology):
    t = topology
    form = {"grant_type": TOKEN_EXCHANGE, "subject_token": "x" * (100 * 1024)}
    over_bridge = t.post("/token", data=form, auth=(CLIENT_ID, t.secret))
    # Over max_request_bytes (64 KiB), under nginx's 128 KiB: the bridge's own answer.
    assert over_bridge.status_code == 413
    assert over_bridge.json() == {"error": "invalid_request",
                                  "error_description": "the request is too large"}
    form["subject_token"] = "x" * (200 * 1024)
    over_proxy = t.post("/token", data=form, auth=(CLIENT_ID, t.secret))
    assert over_proxy.status_code == 413
    assert "application/json" not in over_proxy.headers.get("Content-Type", "")  # nginx's page
    tokens = [a for a in t.logged(lambda e: sum(a.uri == "/token" for a in e) >= 2,
                                  "the two token requests") if a.uri == "/token"]
    assert tokens[-2].status == 413 and tokens[-2].upstreams in {(t.upstream(0),),
                                                                 (t.upstream(1),)}
    assert tokens[-1].status == 413 and tokens[-1].upstreams == ()  # never reached a bridge

    # POST /access-records takes batches up to 1 MiB: nginx lets them through to the
    # bridge (which answers an unauthenticated one 401 itself), and stops over 2 MiB.
    big = t.post("/access-records", data=b"{" + b" " * (600 * 1024) + b"}",
                 headers={"Content-Type": "application/json"})
    assert big.status_code == 401 and big.json()["error"] == "invalid_client", big.text
    huge = t.post("/access-records", data=b"{" + b" " * (3 * 1024 * 1024) + b"}",
                  headers={"Content-Type": "application/json"})
    assert huge.status_code == 413
    assert "application/json" not in huge.headers.get("Content-Type", "")  # nginx's page


def test_an_idle_long_poll_passes_the_proxy(topology):
    t = topology
    stream = t.create_stream()
    response = t.post(f"/ssf/poll/{stream}", json={"returnImmediately": False},
                      auth=(RS_CLIENT_ID, t.rs_secret))
    assert response.status_code == 200, response.text
    assert response.json() == {"sets": {}}  # SSF 1.0: moreAvailable only when true
    polls = t.logged(lambda e: any(a.uri == f"/ssf/poll/{stream}" for a in e), "the poll")
    assert [a.status for a in polls if a.uri == f"/ssf/poll/{stream}"] == [200]


# --- the story, and a killed instance ---------------------------------------------------

class Receiver:
    """A resource server's feed client: long polls through nginx; after a failed poll it
    polls again when the test lets it (``again``); stops at the first SETs."""

    def __init__(self, topology: Topology, stream_id: str):
        self.topology = topology
        self.stream_id = stream_id
        self.statuses: list[int] = []
        self.sets: dict[str, str] = {}
        self.again = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self._connection: http.client.HTTPConnection | None = None

    def send(self) -> None:
        """Write one long poll to nginx (returns once the request is sent)."""
        basic = base64.b64encode(f"{RS_CLIENT_ID}:{self.topology.rs_secret}".encode()).decode()
        self._connection = http.client.HTTPConnection("127.0.0.1", self.topology.port,
                                                      timeout=60)
        self._connection.request("POST", f"/ssf/poll/{self.stream_id}",
                                 body=json.dumps({"returnImmediately": False}),
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Basic {basic}"})

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            response = self._connection.getresponse()
            body = response.read()
            self._connection.close()
            self.statuses.append(response.status)
            if response.status == 200:
                self.sets = json.loads(body)["sets"]
                if self.sets:
                    return
            else:
                self.again.wait(60)
            self.send()


def _stream_seen_at(database, stream_id: str):
    from idp_bridge.storage.models import SsfStream

    with database.read() as session:
        return session.get(SsfStream, stream_id).last_seen_at


def test_story_through_nginx_survives_a_killed_instance(topology, kc):
    from idp_bridge.storage.db import Database

    t = topology
    database = Database(t.database_url)
    try:
        _story(t, kc, database)
    finally:
        database.dispose()


def _story(t: Topology, kc, database) -> None:
    # 1. The tenant admin reads the access code; bob redeems it with his Keycloak token.
    bob = t.exchange("bob", code=t.access_code())
    assert bob.status_code == 200, bob.text
    bob = bob.json()
    claims = t.verify(bob["access_token"])
    assert (claims["iss"], claims["sub"], claims["tenant"]) == \
        (t.issuer, kc.user_id("bob"), TENANT)
    bob_grant = t.introspect(bob["access_token"])["grant_id"]
    carol = t.exchange("carol", code=t.access_code())  # the code rotated: read it again
    assert carol.status_code == 200, carol.text
    carol = carol.json()
    # The mirror (background work of the instances) puts both into the Keycloak group.
    wait_until(lambda: members(kc, ADVISORS) == {"bob", "carol"}, timeout=60, interval=0.05,
               what=lambda: f"bob and carol in the advisors group (now {members(kc, ADVISORS)})")

    # 2. Two receivers long-poll, sent one right after the other: nginx's round robin puts
    #    one on each instance. Both are waiting inside their instance (the poll records
    #    its stream as seen before it waits) before anything else happens.
    receivers = [Receiver(t, t.create_stream()) for _ in range(2)]
    before = [_stream_seen_at(database, r.stream_id) for r in receivers]
    for receiver in receivers:
        receiver.send()
    wait_until(lambda: all(_stream_seen_at(database, r.stream_id) != seen
                           for r, seen in zip(receivers, before)), timeout=30, interval=0.05,
               what=lambda: f"both long polls waiting in their instance\n{t.logs()}")
    for receiver in receivers:
        receiver.start()

    # 3. Requests keep coming (a tenant admin's page reading the memberships) ...
    anna = t.bearer("anna")
    load_statuses: list[int] = []
    stop_load = threading.Event()

    def load():
        with requests.Session() as http:
            while not stop_load.is_set():
                load_statuses.append(http.get(f"{t.base}/api/tenants/{TENANT}/memberships",
                                              headers=anna, timeout=60).status_code)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    wait_until(lambda: len(load_statuses) >= 5, timeout=30, interval=0.05,
               what="five answers to the load")

    # 4. ... when the first instance dies (SIGKILL: no clean shutdown, sockets just close).
    t.kill(0)
    killed, survivor = t.upstream(0), t.upstream(1)
    after_kill = len(load_statuses)
    wait_until(lambda: len(load_statuses) >= after_kill + 10, timeout=30, interval=0.05,
               what=lambda: f"ten answers to the load after the kill\n{t.logs()}")

    # Nothing committed is lost: both memberships are there, read through the survivor.
    assert set(t.memberships()) == {kc.user_id("bob"), kc.user_id("carol")}

    # 5. anna removes bob, through nginx (the dead instance refuses the connection, so
    #    nginx passes the request on before it was sent anywhere).
    mid = t.memberships()[kc.user_id("bob")]
    removed = requests.delete(f"{t.base}/api/tenants/{TENANT}/memberships/{mid}",
                              headers=anna, timeout=60)
    assert removed.status_code == 204, removed.text
    for receiver in receivers:
        receiver.again.set()
    for receiver in receivers:
        receiver.thread.join(120)
        assert not receiver.thread.is_alive(), f"receiver saw {receiver.statuses}\n{t.logs()}"
    # Every request of the tenant admin's page is answered, also those that nginx sends to
    # the dead instance: a GET in flight there when it died, or the first one nginx tries on
    # it again once its fail_timeout (5 s) is over, is passed on to the survivor. The load
    # runs until one such GET is in the log (which of the two it is depends on timing, that
    # one comes is certain).
    t.logged(lambda e: any(a.method == "GET" and a.upstreams == (killed, survivor)
                           and a.status == 200 for a in e), "a GET passed on to the survivor",
             timeout=90)
    stop_load.set()
    loader.join(60)
    assert set(load_statuses) == {200}, sorted(set(load_statuses))

    # 6. The poll that waited on the killed instance failed with 502 -- nginx does not resend
    #    a POST that may have been processed -- and the receiver's next poll got the SET;
    #    the other receiver's poll was answered by the survivor.
    assert sorted(r.statuses[0] for r in receivers) == [200, 502], \
        [r.statuses for r in receivers]
    failed = [a for a in t.logged(lambda e: any(a.status == 502 for a in e), "the failed poll")
              if a.status == 502]
    assert all(a.uri.startswith("/ssf/poll/") and a.upstreams == (killed,) for a in failed), \
        failed
    for receiver in receivers:
        assert len(receiver.sets) == 1, receiver.sets
        jti, token = next(iter(receiver.sets.items()))
        event = t.verify(token, "/ssf/jwks")
        assert event["sub_id"] == {"format": "opaque", "id": bob_grant}
        assert event["events"][SESSION_REVOKED]["reason_admin"] == {"en": "removed_by_tenant"}
        acked = t.post(f"/ssf/poll/{receiver.stream_id}", auth=(RS_CLIENT_ID, t.rs_secret),
                       json={"returnImmediately": True, "ack": [jti]})
        assert acked.status_code == 200 and acked.json()["sets"] == {}

    # 7. The removal holds everywhere; carol is untouched.
    assert t.introspect(bob["access_token"]) == {"active": False}
    refresh = t.post("/token", auth=(CLIENT_ID, t.secret), data={
        "grant_type": "refresh_token", "refresh_token": bob["refresh_token"]})
    assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant"
    again = t.exchange("bob")
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert t.introspect(carol["access_token"])["active"] is True
    assert set(t.memberships()) == {kc.user_id("carol")}
    # The survivor's mirror takes bob out of the Keycloak group (the outbox item was
    # committed with the removal).
    wait_until(lambda: members(kc, ADVISORS) == {"carol"}, timeout=90, interval=0.05,
               what=lambda: f"only carol in the advisors group (now {members(kc, ADVISORS)})")
