"""A real Keycloak 26 on loopback for the tests and the benchmark (DESIGN.md sections 3 and 11).

The distribution ``org.keycloak:keycloak-quarkus-dist`` (zip) is fetched once with Maven into
the git-ignored ``.cache/keycloak/`` and unpacked there. Each :func:`start_keycloak` runs
``kc.sh start-dev`` on a free 127.0.0.1 port with an in-memory database, imports the realm
template ``deploy/keycloak/konfipay-realm.json`` (client secrets generated for this run) and a
bootstrap admin with a generated password, and waits until the realm's discovery document
answers. When anything on that way fails, :class:`KeycloakUnavailable` says what and how to fix
it; the ``keycloak`` fixture in ``conftest.py`` turns it into a failure when ``CI`` is set.

Standard library only at import time, so that ``.ci/install-keycloak`` can run this file
before any virtual environment exists: ``python3 tests/keycloak_server.py install``.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from html.parser import HTMLParser
from pathlib import Path

#: The one place naming the Keycloak version the tests and the benchmark run.
KEYCLOAK_VERSION = "26.4.7"
ARTIFACT = f"org.keycloak:keycloak-quarkus-dist:{KEYCLOAK_VERSION}:zip"
ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "keycloak"
REALM_TEMPLATE = ROOT / "deploy" / "keycloak" / "konfipay-realm.json"
REALM = "konfipay"
#: Confidential clients of the template; their secrets are generated for each run.
CLIENTS = ("idp-bridge", "kc-exchange-initial", "kc-exchange-bench")
STARTUP_TIMEOUT = 180.0
STOP_TIMEOUT = 30.0
#: The machine has 2 cores and plenty of memory; Keycloak's default outside containers is 512m.
HEAP = "-Xms256m -Xmx768m"
MAVEN_TIMEOUT = 900.0
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class KeycloakUnavailable(RuntimeError):
    """Keycloak cannot be obtained or started here; the message names the cause and the fix."""


# --- the distribution ---------------------------------------------------------------------

@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive file lock: parallel test sessions share the cache and its import folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def java_command() -> str:
    """The ``java`` that ``kc.sh`` will run (``JAVA_HOME`` first, as kc.sh does), checked >= 17."""
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not os.access(java, os.X_OK):
        raise KeycloakUnavailable(
            "Keycloak needs Java 17, 21 or 25 and none was found (set JAVA_HOME or install "
            "openjdk-17-jre-headless)")
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KeycloakUnavailable(f"cannot run {java} -version: {exc}") from None
    match = re.search(r'version "(\d+)', out.stderr + out.stdout)
    if not match or int(match.group(1)) < 17:
        raise KeycloakUnavailable(f"Keycloak needs Java >= 17; {java} reports: "
                                  f"{(out.stderr or out.stdout).strip()[:200]}")
    return java


def _fetch_zip(zip_path: Path) -> None:
    mvn = shutil.which("mvn")
    if not mvn:
        raise KeycloakUnavailable(
            f"the Keycloak distribution {ARTIFACT} is not in {CACHE} and Maven (mvn) is not "
            "installed to fetch it; install maven or run .ci/install-keycloak where it is")
    download = Path(tempfile.mkdtemp(prefix=".download-", dir=CACHE))
    try:
        try:
            result = subprocess.run(
                [mvn, "-q", "-B", "-C", "dependency:copy", f"-Dartifact={ARTIFACT}",
                 f"-DoutputDirectory={download}"],
                capture_output=True, text=True, timeout=MAVEN_TIMEOUT, cwd=download)
        except subprocess.TimeoutExpired:
            raise KeycloakUnavailable(
                f"Maven did not fetch {ARTIFACT} within {MAVEN_TIMEOUT:.0f} s "
                "(is Maven Central reachable?)") from None
        fetched = download / zip_path.name
        if result.returncode != 0 or not fetched.exists():
            tail = (result.stdout + result.stderr).strip()[-1500:]
            raise KeycloakUnavailable(
                f"Maven could not fetch {ARTIFACT} (exit {result.returncode}; is Maven Central "
                f"reachable?):\n{tail}")
        fetched.replace(zip_path)  # atomic: a half-written zip never has the final name
    finally:
        shutil.rmtree(download, ignore_errors=True)


def _unpack(zip_path: Path, home: Path) -> None:
    target = Path(tempfile.mkdtemp(prefix=".unpack-", dir=CACHE))
    try:
        try:
            with zipfile.ZipFile(zip_path) as archive:
                archive.extractall(target)
                for info in archive.infolist():  # zipfile drops the executable bits of bin/*.sh
                    mode = (info.external_attr >> 16) & 0o777
                    if mode:
                        os.chmod(target / info.filename, mode)
        except zipfile.BadZipFile:
            zip_path.unlink()
            raise KeycloakUnavailable(f"{zip_path} was corrupt and has been removed; "
                                      "run again to fetch it anew") from None
        unpacked = target / home.name
        if not (unpacked / "bin" / "kc.sh").exists():
            raise KeycloakUnavailable(f"{zip_path} does not contain {home.name}/bin/kc.sh")
        unpacked.replace(home)
    finally:
        shutil.rmtree(target, ignore_errors=True)


def ensure_distribution() -> Path:
    """The unpacked Keycloak home in the cache, fetched and unpacked on first use."""
    home = CACHE / f"keycloak-{KEYCLOAK_VERSION}"
    if (home / "bin" / "kc.sh").exists():
        return home
    with _locked(CACHE / ".install.lock"):
        if (home / "bin" / "kc.sh").exists():  # another session was faster
            return home
        zip_path = CACHE / f"keycloak-quarkus-dist-{KEYCLOAK_VERSION}.zip"
        if not zip_path.exists():
            _fetch_zip(zip_path)
        _unpack(zip_path, home)
    return home


# --- the realm ----------------------------------------------------------------------------

def realm_template() -> dict:
    return json.loads(REALM_TEMPLATE.read_text())


def fixture_passwords(realm: dict | None = None) -> dict[str, str]:
    """The test users' passwords, as the template sets them (test fixtures, not secrets)."""
    realm = realm or realm_template()
    return {user["username"]: cred["value"]
            for user in realm.get("users", []) for cred in user.get("credentials", [])
            if cred.get("type") == "password"}


def realm_for_run(client_secrets: dict[str, str], *, backchannel_logout_url: str | None = None
                  ) -> dict:
    """The template with this run's client secrets (and back-channel logout URL, if given)."""
    realm = copy.deepcopy(realm_template())
    for client in realm["clients"]:
        if client["clientId"] in client_secrets:
            client["secret"] = client_secrets[client["clientId"]]
        if backchannel_logout_url and "backchannel.logout.url" in client.get("attributes", {}):
            client["attributes"]["backchannel.logout.url"] = backchannel_logout_url
    missing = set(client_secrets) - {c["clientId"] for c in realm["clients"]}
    if missing:
        raise KeycloakUnavailable(f"the realm template lacks the clients {sorted(missing)}")
    return realm


# --- the server ---------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class KeycloakServer:
    """One running Keycloak with the ``konfipay`` realm, spoken to over its HTTP APIs."""

    def __init__(self, *, process: subprocess.Popen, port: int, admin_username: str,
                 admin_password: str, client_secrets: dict[str, str], workdir: Path):
        self.process = process
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.realm = REALM
        self.issuer = f"{self.base_url}/realms/{REALM}"
        self.admin_username = admin_username
        self._admin_password = admin_password
        self.client_secrets = dict(client_secrets)
        self.passwords = fixture_passwords()
        self.workdir = workdir
        self.log_path = workdir / "keycloak.log"
        import requests  # not at module level: see the module docstring

        self.http = requests.Session()

    def __repr__(self):
        return f"KeycloakServer({self.issuer!r})"

    # --- endpoints ---
    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/token"

    @property
    def introspection_endpoint(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/token/introspect"

    @property
    def revocation_endpoint(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/revoke"

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/auth"

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/certs"

    def client_auth(self, client_id: str = "idp-bridge") -> tuple[str, str]:
        return client_id, self.client_secrets[client_id]

    # --- tokens ---
    def admin_token(self) -> str:
        """An access token of the bootstrap admin (master realm, ``admin-cli``)."""
        response = self.http.post(
            f"{self.base_url}/realms/master/protocol/openid-connect/token", timeout=30,
            data={"grant_type": "password", "client_id": "admin-cli",
                  "username": self.admin_username, "password": self._admin_password})
        response.raise_for_status()
        return response.json()["access_token"]

    def password_token(self, user: str, password: str | None = None,
                       client_id: str = "idp-bridge", client_secret: str | None = None,
                       scope: str = "openid") -> dict:
        """The token response (access, refresh and ID token) of a direct grant for ``user``."""
        response = self.http.post(self.token_endpoint, timeout=30, data={
            "grant_type": "password", "username": user, "scope": scope,
            "password": self.passwords[user] if password is None else password,
        }, auth=(client_id, self.client_secrets[client_id] if client_secret is None
                 else client_secret))
        if response.status_code != 200:
            raise AssertionError(f"direct grant for {user} at {client_id}: "
                                 f"{response.status_code} {response.text}")
        return response.json()

    def introspect(self, token: str, client_id: str = "idp-bridge") -> dict:
        response = self.http.post(self.introspection_endpoint, data={"token": token},
                                  auth=self.client_auth(client_id), timeout=30)
        response.raise_for_status()
        return response.json()

    def revoke(self, token: str, hint: str, client_id: str) -> int:
        return self.http.post(self.revocation_endpoint, timeout=30,
                              data={"token": token, "token_type_hint": hint},
                              auth=self.client_auth(client_id)).status_code

    # --- the login page ---
    @staticmethod
    def browser():
        """A ``requests.Session`` keeping cookies as a browser does on loopback: Keycloak
        marks its login cookies ``Secure``, which browsers (not ``http.cookiejar``) also send
        to http://127.0.0.1, a potentially trustworthy origin."""
        import requests
        from requests.cookies import RequestsCookieJar

        class LoopbackCookieJar(RequestsCookieJar):
            # requests copies the session's cookies into a plain jar for every request, so
            # the Secure flag is dropped when a loopback cookie is stored, not when it is sent.
            def set_cookie(self, cookie, *args, **kwargs):
                host = cookie.domain.lstrip(".").removesuffix(".local")
                if cookie.secure and host in LOOPBACK_HOSTS:
                    cookie.secure = False
                return super().set_cookie(cookie, *args, **kwargs)

        session = requests.Session()
        session.cookies = LoopbackCookieJar()
        return session

    def submit_login_form(self, browser, page, user: str, password: str | None = None):
        """Fill in and post Keycloak's login form found in ``page`` (a response of
        ``browser``, from :meth:`browser`). Returns Keycloak's answer unfollowed: after a good
        login, a redirect to the client's ``redirect_uri``."""
        form = _LoginForm.parse(page.text)
        if form.action is None:
            raise AssertionError(f"no login form on {page.url}: {page.text[:500]}")
        fields = dict(form.hidden)
        fields.update(username=user,
                      password=self.passwords[user] if password is None else password)
        return browser.post(form.action, data=fields, allow_redirects=False, timeout=30)

    # --- admin REST (under /admin/realms/konfipay) ---
    def admin(self, method: str, path: str, **kwargs):
        headers = {"Authorization": f"Bearer {self.admin_token()}", **kwargs.pop("headers", {})}
        return self.http.request(method, f"{self.base_url}/admin/realms/{REALM}{path}",
                                 headers=headers, timeout=30, **kwargs)

    def user_id(self, username: str) -> str:
        users = self.admin("GET", "/users", params={"username": username, "exact": "true"}).json()
        return users[0]["id"]

    def logout_user(self, username: str) -> None:
        """Ends every session of ``username`` (admin "Sign out"; back-channel logout follows)."""
        response = self.admin("POST", f"/users/{self.user_id(username)}/logout")
        response.raise_for_status()

    def update_client(self, client_id: str, **changes) -> None:
        """Change a client, e.g. ``attributes={"backchannel.logout.url": url}`` (merged)."""
        found = self.admin("GET", "/clients", params={"clientId": client_id}).json()[0]
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(found.get(key), dict):
                found[key].update(value)
            else:
                found[key] = value
        self.admin("PUT", f"/clients/{found['id']}", json=found).raise_for_status()

    # --- lifecycle ---
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM to the process group we started (kc.sh forwards it to Java), then SIGKILL."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.http.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


class _LoginForm(HTMLParser):
    """The action and hidden fields of Keycloak's ``<form id="kc-form-login">``."""

    def __init__(self):
        super().__init__()
        self.action: str | None = None
        self.hidden: dict[str, str] = {}
        self._inside = False

    @classmethod
    def parse(cls, html: str) -> "_LoginForm":
        parser = cls()
        parser.feed(html)
        return parser

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and attrs.get("id") == "kc-form-login":
            self.action, self._inside = attrs.get("action"), True
        elif self._inside and tag == "input" and attrs.get("type") == "hidden":
            if attrs.get("name"):
                self.hidden[attrs["name"]] = attrs.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self._inside = False


def _wait_ready(process: subprocess.Popen, url: str, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise KeycloakUnavailable(
                f"Keycloak exited with status {process.returncode} while starting; "
                f"last lines of its log:\n{_log_tail(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1.0)
    raise KeycloakUnavailable(
        f"Keycloak did not answer {url} within {timeout:.0f} s; last lines of its log:\n"
        f"{_log_tail(log_path)}")


def start_keycloak(*, timeout: float = STARTUP_TIMEOUT,
                   backchannel_logout_url: str | None = None) -> KeycloakServer:
    """Start Keycloak with the realm template imported; raises :class:`KeycloakUnavailable`."""
    java_command()
    home = ensure_distribution()
    port = _free_port()
    admin_username = "bootstrap-admin"
    admin_password = secrets.token_urlsafe(24)
    client_secrets = {client: secrets.token_urlsafe(32) for client in CLIENTS}
    realm = realm_for_run(client_secrets, backchannel_logout_url=backchannel_logout_url)
    workdir = Path(tempfile.mkdtemp(prefix="idp-bridge-keycloak-"))
    log_path = workdir / "keycloak.log"
    env = dict(os.environ)
    env.update({
        "KC_BOOTSTRAP_ADMIN_USERNAME": admin_username,
        "KC_BOOTSTRAP_ADMIN_PASSWORD": admin_password,
        "JAVA_OPTS_KC_HEAP": HEAP,
        # Keycloak 26's default brute-force protector refuses a user's login while another
        # login of that user is still in progress ("Invalid user credentials" for a correct
        # password); on a loaded CI machine the tests' quick successive direct grants of
        # one user met it. The realm keeps brute-force protection; only this blocking of
        # concurrent logins is off for the tests.
        "KC_SPI_BRUTE_FORCE_PROTECTOR_DEFAULT_BRUTE_FORCE_DETECTOR_ALLOW_CONCURRENT_REQUESTS": "true",
    })
    command = [str(home / "bin" / "kc.sh"), "start-dev", f"--http-port={port}",
               "--http-host=127.0.0.1", "--db=dev-mem", "--import-realm"]
    import_dir = home / "data" / "import"
    # Keycloak imports every file of data/import/: while one session starts, no other may
    # have its realm (with other client secrets) lying there. Held until the import is done.
    with _locked(CACHE / ".start.lock"):
        shutil.rmtree(import_dir, ignore_errors=True)
        import_dir.mkdir(parents=True)
        (import_dir / f"{REALM}-realm.json").write_text(json.dumps(realm))
        with open(log_path, "wb") as log:
            try:
                process = subprocess.Popen(command, env=env, cwd=workdir, stdout=log,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True)
            except OSError as exc:
                raise KeycloakUnavailable(f"cannot run {command[0]}: {exc}") from None
        server = KeycloakServer(process=process, port=port, admin_username=admin_username,
                                admin_password=admin_password, client_secrets=client_secrets,
                                workdir=workdir)
        atexit.register(server.stop)  # also when a session ends without fixture teardown
        try:
            _wait_ready(process, f"{server.issuer}/.well-known/openid-configuration", log_path,
                        timeout)
        except BaseException:
            log_copy = _log_tail(log_path, 200)
            server.stop()
            (CACHE / "last-failed-start.log").write_text(log_copy)
            raise
        finally:
            shutil.rmtree(import_dir, ignore_errors=True)
    return server


def main(argv: list[str]) -> int:
    """``install``: fetch and unpack the distribution (for CI, before the tests run)."""
    if argv[:1] != ["install"]:
        print("usage: python3 tests/keycloak_server.py install", file=sys.stderr)
        return 2
    try:
        java = java_command()
        home = ensure_distribution()
    except KeycloakUnavailable as exc:
        print(f"install-keycloak: FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"Keycloak {KEYCLOAK_VERSION} ready in {home} (java: {java})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
