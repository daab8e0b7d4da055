"""Real PostgreSQL and Redis servers for the tests, started in temporary folders on free
loopback ports and controllable (stop/start for the fault tests).

They come from Debian's packages (`postgresql`, `redis-server`), which `.ci/run` installs.
In CI (environment variable ``CI`` set) a missing or failing server fails the run with the
reason; elsewhere the tests that need it are skipped with the reason.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI needs it: see .ci/run)", pytrace=False)
    pytest.skip(reason)


def _as_postgres(args, **kwargs):
    # PostgreSQL refuses to run as root; CI and developer machines here run as root.
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--"] + args
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)


class PostgresServer:
    """A throw-away PostgreSQL on loopback. Tests run it with ``fsync=off`` (nothing they
    check needs durability against power loss); ``durable=True`` (benchmarks) keeps the
    server's defaults ``fsync=on``, ``synchronous_commit=on``. Command-line settings win over
    ``ALTER SYSTEM``, so this is the only way to turn fsync on for a started server."""

    def __init__(self, durable: bool = False):
        self.durable = durable
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            unavailable("PostgreSQL is not installed (Debian package postgresql)")
        self.bin = Path(bins[-1]).parent
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="idp-bridge-pg-"))
        self.data = self.dir / "data"
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        result = _as_postgres([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                               "--auth=trust", "-E", "UTF8", "--no-sync"])
        if result.returncode != 0:
            unavailable(f"initdb failed: {result.stderr.strip()[:500]}")
        self.start()

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                   f"-c unix_socket_directories={self.dir} -c max_connections=200")
        if not self.durable:
            options += " -c fsync=off"
        result = _as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options,
                               "-l", str(self.dir / "log"), "-w", "-t", "60", "start"])
        if result.returncode != 0:
            log = (self.dir / "log").read_text() if (self.dir / "log").exists() else ""
            unavailable(f"PostgreSQL did not start: {result.stderr.strip()[:300]} {log[-500:]}")

    def stop(self, mode: str = "fast") -> None:
        _as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def create_database(self, name: str, template: str | None = None) -> str:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.url(name)

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer:
    def __init__(self):
        binary = shutil.which("redis-server")
        if not binary:
            unavailable("Redis is not installed (Debian package redis-server)")
        self.binary = binary
        self.port = free_port()
        self.process = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        unavailable("Redis did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def close(self) -> None:
        self.stop()
