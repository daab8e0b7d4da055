"""Every fenced ``sh`` block of README.md runs as written.

The blocks are read from the README (never copied here) and run with bash, in a temporary
folder, against real services: the quick start's demo in a fresh virtual environment made by
the block itself (pip installs from the package index, as on a fresh machine), the curl story
against that demo, the production start with its settings, and the scale-out path on the
suite's own PostgreSQL and Redis servers (tests/services.py), followed by the curl story on
that backend.

What the test supplies, and nothing else (the mapping a reader follows too):

- a fresh shell: no ``IDP_BRIDGE_*`` variable from the test's environment; ``TMPDIR`` is a
  folder of the test, so that what the demo leaves behind there can be seen;
- ``idp-bridge`` on ``PATH``: outside the quick start, the one installed in the environment
  running the tests (the quick start uses the one its block installed);
- "the settings exported": the variables the production start's settings block exported, taken
  from the shell that ran it into the shells of the following blocks (as the same shell would
  keep them);
- ``DB`` and ``REDIS``, which the scale-out text asks the reader to set to their servers: the
  test's PostgreSQL (as a ``postgresql://`` URL) and Redis;
- "run the line the demo printed": ``IDP_BRIDGE_DEMO_CLIENT_SECRET`` from the demo's output.

A block whose last command runs until stopped (``serve``, ``demo``) is started in the
background in its own process group, is ready when ``/readyz`` on 127.0.0.1:8000 answers 200,
and is stopped with SIGTERM; the test waits until every process of the group has ended. The
blocks use the documented ports 8000 to 8002: the tests of this module hold a lock file while
they run, so that parallel workers (pytest-xdist) take turns.

The two blocks that run the test suite are not run inside it: CI runs the first one exactly
(``.ci/run``, checked here) and the second one is collected with its options.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.slow  # bash, pip, the demo and gunicorn in subprocesses

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PORTS = (8000, 8001, 8002)
BRIDGE = "http://127.0.0.1:8000"
RESOURCE_SERVER = "http://127.0.0.1:8002"
#: The last line the demo prints once everything runs.
DEMO_BANNER_END = "Upstream tokens for the demo users"
LOCK = Path(tempfile.gettempdir()) / "idp-bridge-readme-blocks.lock"


# --- the README's blocks ----------------------------------------------------------------------

def sh_blocks() -> dict[str, list[str]]:
    """The fenced ``sh`` blocks of the README by the ``##`` section they stand in."""
    blocks: dict[str, list[str]] = {}
    section, current = None, None
    for line in README.read_text(encoding="utf-8").splitlines():
        if current is not None:
            if line.strip() == "```":
                blocks.setdefault(section, []).append("\n".join(current) + "\n")
                current = None
            else:
                current.append(line)
        elif line.startswith("## "):
            section = line[3:].strip()
        elif line.strip() == "```sh":
            current = []
    assert current is None, "an unclosed ```sh block in README.md"
    return blocks


#: (section, number of its sh blocks) -> what each block is; a new block must be added here
#: (and run below).
KNOWN = {
    "Quick start": ["demo", "test suite", "inner loop"],
    "The story, with curl": ["curl story"],
    "Command line": ["production settings", "production start"],
    "Running it for real": ["scale-out serve", "scale-out demo"],
}


def block(name: str) -> str:
    blocks = sh_blocks()
    for section, names in KNOWN.items():
        if name in names:
            return blocks[section][names.index(name)]
    raise KeyError(name)


def test_every_shell_block_is_run_here():
    found = {section: len(texts) for section, texts in sh_blocks().items()}
    assert found == {section: len(names) for section, names in KNOWN.items()}, (
        "README.md's sh blocks changed: every block must be run by this module (KNOWN)")


def test_the_test_command_is_what_ci_runs():
    command = block("test suite").strip()
    assert command.splitlines()[-1] in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_inner_loop_command_collects(tmp_path):
    command = block("inner loop").strip()
    assert command.startswith(".venv/bin/python -m pytest ")
    args = command.split(" ", 3)[3]
    result = subprocess.run(f"{sys.executable} -m pytest {args} --collect-only -q "
                            "-p no:cacheprovider", shell=True, cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert re.search(r"^\d+(/\d+)? tests collected", result.stdout, re.MULTILINE), \
        result.stdout[-500:]


# --- running them -----------------------------------------------------------------------------

@pytest.fixture
def ports():
    """The documented ports, one module's tests at a time (xdist workers wait their turn)."""
    with open(LOCK, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        busy = [port for port in PORTS if _listening(port)]
        if busy:
            pytest.fail(f"ports {busy} are in use; the README's blocks need 8000-8002 free",
                        pytrace=False)
        yield
        fcntl.flock(handle, fcntl.LOCK_UN)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def fresh_shell_env(tmp_path: Path, *, installed: bool = True, **extra) -> dict:
    """A new shell's environment: no IDP_BRIDGE_* of the test run, TMPDIR of the test and,
    when ``installed``, the test environment's ``idp-bridge`` first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_BRIDGE_")}
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir(exist_ok=True)
    env["TMPDIR"] = str(tmpdir)
    if installed:
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(extra)
    return env


def run(script: str, cwd: Path, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, \
        f"{script}\nexit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def exported_by(script: str, cwd: Path, env: dict) -> dict:
    """The environment after ``script`` ran in a shell: what a later command of that shell
    sees."""
    result = run(script + "\nenv -0\n", cwd, env)
    pairs = (item.split("=", 1) for item in result.stdout.split("\0") if "=" in item)
    return {key: value for key, value in pairs}


class Background:
    """A block ending in a command that runs until stopped (serve, demo)."""

    def __init__(self, script: str, cwd: Path, env: dict):
        self.log = cwd / f"background-{time.monotonic_ns()}.log"
        self._log = open(self.log, "w")
        self.process = subprocess.Popen(["bash", "-e", "-c", script], cwd=cwd, env=env,
                                        stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def output(self) -> str:
        return self.log.read_text()

    def wait_ready(self, timeout: float, printed: str = "") -> dict:
        """/readyz answers 200 and (the demo, whose banner comes once every server runs)
        ``printed`` has been printed."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                ready = requests.get(f"{BRIDGE}/readyz", timeout=2)
                if ready.status_code == 200 and printed in self.output():
                    return ready.json()
            except requests.RequestException:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"not ready on {BRIDGE}:\n{self.output()[-4000:]}", pytrace=False)
            time.sleep(0.2)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to the whole group, then wait until none of its processes is left."""
        group = self.process.pid
        with _suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        self.process.wait(timeout)
        deadline = time.monotonic() + timeout
        while _group_alive(group):
            if time.monotonic() > deadline:
                os.killpg(group, signal.SIGKILL)
                pytest.fail("processes of the block did not stop on SIGTERM:\n"
                            + self.output()[-3000:])
            time.sleep(0.05)
        self._log.close()


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    # Zombies of the group (children of an ended parent) are not running any more.
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


@contextmanager
def _suppress(*errors):
    try:
        yield
    except errors:
        pass


def printed_secret(output: str) -> str:
    match = re.search(r"^\s*export IDP_BRIDGE_DEMO_CLIENT_SECRET=(\S+)$", output, re.MULTILINE)
    assert match, f"the demo did not print its client secret:\n{output[-3000:]}"
    return match.group(1)


def run_curl_story(cwd: Path, env: dict, demo_output: str) -> str:
    """The curl story as written, in a second shell of the reader who ran the line the demo
    printed; returns what it printed, after checking every step's answer."""
    if shutil.which("jq") is None:
        reason = "the README's curl story needs jq (Debian package jq)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must install it (.ci/run)", pytrace=False)
        pytest.skip(reason)
    env = {**env, "IDP_BRIDGE_DEMO_CLIENT_SECRET": printed_secret(demo_output)}
    out = run(block("curl story"), cwd, env).stdout
    # 1. the code, 2. the exchange's token (the fixed profile), 3. active, opens the APIs
    assert re.search(r'"code":"[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}"', out), out
    assert '"issued_token_type": "urn:ietf:params:oauth:token-type:access_token"' in out, out
    assert "evaluation:write" in out
    assert '"active": true' in out and '"tenant": "10042"' in out and \
        '"membership": "temporary"' in out, out
    assert '"id": "ebics-1"' in out, out
    # 4. bob listed with his reason, and what he read at the resource server: the records it
    # shipped, grouped (two EBICS reads, one of payments) and single
    assert '"reason": "Ticket 4711"' in out, out
    lines = [json.loads(line) for line in out.splitlines()
             if line.startswith(('{"advisor_name":', '{"at":', '{"kind":'))]
    groups = {g["area"]: g for g in lines if "advisor_name" in g}
    assert {area: (g["advisor_name"], g["action"], g["count"]) for area, g in groups.items()} == {
        "ebics": ("Bob Advisor", "read", 2), "payments": ("Bob Advisor", "read", 1)}, out
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", g[k])
               for g in groups.values() for k in ("first", "last")), out
    assert groups["ebics"]["first"] <= groups["ebics"]["last"]
    single = [x for x in lines if "route" in x]
    assert [(x["route"], x["status"], x["resource_server"]) for x in single] == \
        [("/tenants/<tenant>/ebics", 200, "example-resource-server")] * 2, out
    assert single[0]["at"] >= single[1]["at"]  # newest first
    # 5. removed: 204, and the receipt: every due resource server (the example) confirmed it
    assert re.search(r"^204$", out, re.MULTILINE), out
    (receipt,) = [x for x in lines if "within_ms" in x]
    assert receipt["kind"] == "grant" and receipt["confirmed"] == receipt["due"] >= 1, out
    assert "example-resource-server" in receipt["by"] and receipt["within_ms"] >= 0, out
    # 6. dead at the bridge, and the refresh refused
    assert '{"active":false}' in out.replace(" ", ""), out
    assert '"error":"invalid_grant"' in out.replace(" ", "") and \
        "the membership of this refresh_token has ended" in out, out
    # ... and at the resource server, which had confirmed the revocation (the receipt above)
    # before the block asked it; checked here once more outside the block.
    assert '{"error":"invalid_token","error_description":"token has been revoked"}' in out, out
    access_token = json.loads((cwd / "bob.json").read_text())["access_token"]
    deadline = time.monotonic() + 20
    while True:
        answer = requests.get(f"{RESOURCE_SERVER}/tenants/10042/ebics", timeout=5,
                              headers={"Authorization": f"Bearer {access_token}"})
        if answer.status_code == 401:
            break
        assert time.monotonic() < deadline, "the resource server still accepts a revoked token"
        time.sleep(0.05)
    assert answer.json() == {"error": "invalid_token",
                             "error_description": "token has been revoked"}
    # 7. the evidence pack verifies offline, and tells the story of the steps above
    assert re.search(r"OK: evidence pack of membership [0-9a-f-]{36} \(tenant 10042\)", out), out
    (story,) = [json.loads(line) for line in out.splitlines() if line.startswith('{"way":')]
    assert story == {"way": "access_code", "reason": "Ticket 4711", "tokens": 1, "recorded": 3,
                     "ended": "removed_by_tenant"}, out
    return out


def leftovers(env: dict) -> list[str]:
    return sorted(p.name for p in Path(env["TMPDIR"]).glob("idp-bridge-demo-*"))


# --- the quick start and the curl story -------------------------------------------------------

@pytest.fixture
def checkout(tmp_path) -> Path:
    """The repository's files as a fresh clone has them (tracked and new, not ignored)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    target = tmp_path / "idp-bridge"
    for name in filter(None, listed):
        source = ROOT / name.decode()
        if source.is_file():
            destination = target / name.decode()
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(source.read_bytes())
    return target


def test_quick_start_demo_and_curl_story(ports, checkout, tmp_path):
    env = fresh_shell_env(tmp_path, installed=False)
    demo = Background(block("demo"), checkout, env)
    try:
        demo.wait_ready(timeout=600, printed=DEMO_BANNER_END)  # after making the venv
        assert (checkout / ".venv" / "bin" / "idp-bridge").exists()
        assert len(leftovers(env)) == 1  # the demo's data, while it runs
        run_curl_story(checkout, env, demo.output())
    finally:
        demo.stop()
    assert leftovers(env) == [], "the demo left its temporary folder behind"
    output = demo.output()
    assert "Traceback" not in output, output
    # One line per request at most; feed polls only when they carried events.
    assert not re.search(r"/ssf/poll/\S+ 200 \(no events\)", output)
    assert re.search(r"bridge: POST /ssf/poll/\S+ 200 \(1 event\)", output), output


# --- the production start ---------------------------------------------------------------------

def test_production_start(ports, tmp_path):
    work = tmp_path / "bridge"
    work.mkdir()
    env = exported_by(block("production settings"), work, fresh_shell_env(tmp_path))
    for name in ("IDP_BRIDGE_ISSUER", "IDP_BRIDGE_UPSTREAM_ISSUER", "IDP_BRIDGE_SECRET_KEY",
                 "IDP_BRIDGE_KEY_ENCRYPTION_KEY"):
        assert env.get(name), name
    serve = Background(block("production start"), work, env)
    try:
        ready = serve.wait_ready(timeout=60)
        assert ready["checks"] == {"database": "ok", "signing_keys": "ok"}
        metadata = requests.get(f"{BRIDGE}/.well-known/oauth-authorization-server", timeout=5)
        assert metadata.json()["issuer"] == "https://bridge.example"
    finally:
        serve.stop()
    output = serve.output()
    assert "tenant 10042 (Muster GmbH) added" in output
    assert "client secret (shown once): " in output
    assert (work / "instance" / "idp-bridge.sqlite").is_file()
    assert "Traceback" not in output, output


# --- the scale-out path: PostgreSQL and Redis -------------------------------------------------

def test_scale_out_serve_and_demo_story(ports, tmp_path, postgres, redis_server):
    work = tmp_path / "bridge"
    work.mkdir()
    database = postgres.create_database("readme_scale_out").replace(
        "postgresql+psycopg://", "postgresql://")
    env = exported_by(block("production settings"), work,
                      fresh_shell_env(tmp_path, DB=database, REDIS=redis_server.url))
    serve = Background(block("scale-out serve"), work, env)
    try:
        ready = serve.wait_ready(timeout=60)
        assert ready["checks"] == {"database": "ok", "signing_keys": "ok", "redis": "ok"}
    finally:
        serve.stop()
    assert "database is at the latest schema" in serve.output()

    # The demo story on that database, migrated by the block above and holding the signing
    # key that serve made (the same key-encryption key opens it).
    demo = Background(block("scale-out demo"), work, env)
    try:
        demo.wait_ready(timeout=60, printed=DEMO_BANNER_END)
        assert "2 processes" in demo.output() and "Redis redis://127.0.0.1:" in demo.output()
        run_curl_story(work, env, demo.output())
    finally:
        demo.stop()
    output = demo.output()
    assert "Traceback" not in output and " 500 " not in output, output
    assert leftovers(env) == []
