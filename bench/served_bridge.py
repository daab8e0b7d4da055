"""A bridge served by gunicorn (``idp-bridge serve``) on loopback with a development OpenID
provider, seeded with tenant 10042, the client ``advisor-console`` and the receiver client
``example-resource-server`` — the setting of every benchmark."""

from __future__ import annotations

import base64
import http.client
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlencode

from cryptography.fernet import Fernet
from werkzeug.serving import make_server

from bench.common import free_port, wait_http

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


class ServedBridge:
    def __init__(self, *, workers: int = 2, database_url: str | None = None, extra_env=None,
                 prepare=None):
        from idp_bridge.devidp import DevProvider

        self.workers = workers
        self.workdir = Path(tempfile.mkdtemp(prefix="idp-bridge-bench-"))
        idp_port, self.port = free_port(), free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.provider = DevProvider(f"http://127.0.0.1:{idp_port}", mode="test",
                                    access_token_lifetime=3600)
        self._idp = make_server("127.0.0.1", idp_port, self.provider.create_app(), threaded=True)
        self.env = dict(os.environ)
        self.env.update({
            "IDP_BRIDGE_MODE": "test",
            "IDP_BRIDGE_ISSUER": self.issuer,
            "IDP_BRIDGE_DATABASE_URL": database_url or f"sqlite:///{self.workdir}/bench.sqlite",
            "IDP_BRIDGE_SECRET_KEY": secrets.token_urlsafe(32),
            "IDP_BRIDGE_KEY_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "IDP_BRIDGE_UPSTREAM_ISSUER": self.provider.issuer,
            **(extra_env or {}),
        })
        self.process = None
        #: Called with the bridge after its tenant and clients exist and before its server
        #: starts (a benchmark's bulk data: seeded before any worker's background loops run).
        self.prepare = prepare

    def __enter__(self) -> "ServedBridge":
        from idp_bridge.services.operator import add_client, add_tenant
        from idp_bridge.storage.db import Database

        threading.Thread(target=self._idp.serve_forever, daemon=True).start()
        self.database = Database(self.env["IDP_BRIDGE_DATABASE_URL"])
        self.database.upgrade()
        add_tenant(self.database, "10042", "Muster GmbH")
        self.secret = add_client(self.database, "advisor-console")
        self.rs_secret = add_client(self.database, "example-resource-server",
                                    roles=("receiver", "introspect"))
        if self.prepare is not None:
            self.prepare(self)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "idp_bridge.cli", "serve", "--port", str(self.port),
             "--workers", str(self.workers)], env=self.env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http("127.0.0.1", self.port, "/jwks")
        self.basic = "Basic " + base64.b64encode(f"advisor-console:{self.secret}".encode()).decode()
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._idp.shutdown()
        self.database.dispose()
        # The database goes with the bridge (bench_growth's is 3.3 GB at 10 M rows).
        shutil.rmtree(self.workdir, ignore_errors=True)

    # --- requests ---
    def request(self, method: str, path: str, *, form=None, bearer=None, basic=False):
        headers = {}
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        elif basic:
            headers["Authorization"] = self.basic
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        return response.status, (json.loads(raw) if raw else None)

    def upstream_token(self, user: str) -> str:
        return self.provider.issue_tokens(user, lifetime=3600)["access_token"]

    def exchange_form(self, user_token: str, **extra) -> dict:
        return {"grant_type": TOKEN_EXCHANGE, "tenant": "10042", "subject_token": user_token,
                "subject_token_type": ACCESS_TOKEN_TYPE, **extra}

    def join(self, user: str) -> dict:
        """``user`` redeems the current code (read as anna); returns the token response."""
        anna = self.upstream_token("anna")
        _, body = self.request("GET", "/api/tenants/10042/access-code", bearer=anna)
        status, tokens = self.request("POST", "/token", basic=True, form=self.exchange_form(
            self.upstream_token(user), access_code=body["code"]))
        assert status == 200, tokens
        return tokens

    def remove(self, user_sub: str) -> tuple[float, float]:
        """anna removes the advisor; returns (time the DELETE was sent, time it was answered)."""
        import time

        anna = self.upstream_token("anna")
        _, body = self.request("GET", "/api/tenants/10042/memberships", bearer=anna)
        mid = next(m["id"] for m in body["memberships"] if m["advisor"] == user_sub)
        sent = time.time()
        status, _ = self.request("DELETE", f"/api/tenants/10042/memberships/{mid}", bearer=anna)
        answered = time.time()
        assert status == 204
        return sent, answered

    def worker_rss_mb(self) -> list[float]:
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        result = []
        for pid in (path.read_text().split() if path.exists() else []):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    result.append(round(int(line.split()[1]) / 1024, 1))
        return result
