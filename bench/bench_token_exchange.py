"""Token exchange and refresh throughput of the bridge served by gunicorn on loopback.

One run measures, on the same machine: raw ES256 sign/verify rates of ``cryptography``
(the reference), then token exchanges/s and refreshes/s with p50/p99 latency from a load
generator in separate processes, and the RSS of each bridge worker. Writes
``bench/results/token_exchange.json``. Bounded: each phase runs a fixed number of seconds
and requests. Usage: ``python -m bench.bench_token_exchange [--seconds 10] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

from cryptography.fernet import Fernet
from werkzeug.serving import make_server

from bench.common import free_port, wait_http, write_result
from bench.wrk import require_wrk, run_wrk
from bench.crypto_reference import es256_rates

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args(argv)
    require_wrk()

    from idp_bridge.admin import add_client, add_tenant
    from idp_bridge.devidp import DevProvider
    from idp_bridge.storage.db import Database

    reference = es256_rates()
    workdir = Path(tempfile.mkdtemp(prefix="idp-bridge-bench-"))
    idp_port, port = free_port(), free_port()
    idp_issuer = f"http://127.0.0.1:{idp_port}"
    provider = DevProvider(idp_issuer, mode="test", access_token_lifetime=3600)
    idp_server = make_server("127.0.0.1", idp_port, provider.create_app(), threaded=True)
    threading.Thread(target=idp_server.serve_forever, daemon=True).start()

    env = dict(os.environ)
    env.update({
        "IDP_BRIDGE_MODE": "test",
        "IDP_BRIDGE_ISSUER": f"http://127.0.0.1:{port}",
        "IDP_BRIDGE_DATABASE_URL": f"sqlite:///{workdir}/bench.sqlite",
        "IDP_BRIDGE_SECRET_KEY": secrets.token_urlsafe(32),
        "IDP_BRIDGE_KEY_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "IDP_BRIDGE_UPSTREAM_ISSUER": idp_issuer,
    })
    database = Database(env["IDP_BRIDGE_DATABASE_URL"])
    database.upgrade()
    add_tenant(database, "10042", "Muster GmbH")
    secret = add_client(database, "advisor-console")
    server = subprocess.Popen(
        [sys.executable, "-m", "idp_bridge.cli", "serve", "--port", str(port),
         "--workers", str(args.workers)], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_http("127.0.0.1", port, "/jwks")
        basic = base64.b64encode(f"advisor-console:{secret}".encode()).decode()
        headers = {"Authorization": f"Basic {basic}",
                   "Content-Type": "application/x-www-form-urlencoded"}

        def post(path, form, auth=True):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("POST", path, body=urlencode(form), headers=headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read())

        anna = provider.issue_tokens("anna", lifetime=3600)["access_token"]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/api/tenants/10042/access-code",
                     headers={"Authorization": f"Bearer {anna}"})
        code = json.loads(conn.getresponse().read())["code"]
        advisors = ("bob", "carol")
        subject_tokens = {u: provider.issue_tokens(u, lifetime=3600)["access_token"] for u in advisors}
        for user in advisors:  # join once; later exchanges need no code
            status, body = post("/token", {"grant_type": TOKEN_EXCHANGE, "tenant": "10042",
                                           "subject_token": subject_tokens[user],
                                           "subject_token_type": ACCESS_TOKEN_TYPE,
                                           "access_code": code})
            assert status == 200, body
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/api/tenants/10042/access-code",
                         headers={"Authorization": f"Bearer {anna}"})
            code = json.loads(conn.getresponse().read())["code"]
        exchange_bodies = [urlencode({"grant_type": TOKEN_EXCHANGE, "tenant": "10042",
                                      "subject_token": subject_tokens[u],
                                      "subject_token_type": ACCESS_TOKEN_TYPE})
                           for u in advisors] * 2
        url = f"http://127.0.0.1:{port}/token"
        run_wrk(url, exchange_bodies, headers["Authorization"], seconds=2)  # warm-up
        exchange = run_wrk(url, exchange_bodies, headers["Authorization"], seconds=args.seconds,
                           connections=args.connections)
        rss_after_exchange = {pid: _rss_mb(pid) for pid in _children(server.pid)}

        # Refresh: every request needs an unused refresh token, so mint them up front.
        expected = int(exchange["per_second"] * args.seconds * 3) + 2000
        refresh_bodies = []
        for i in range(4):
            status, body = post("/token", {"grant_type": TOKEN_EXCHANGE, "tenant": "10042",
                                           "subject_token": subject_tokens["bob"],
                                           "subject_token_type": ACCESS_TOKEN_TYPE})
            assert status == 200, body
            refresh_bodies.append(body["refresh_token"])
        refresh_bodies = _more_refresh_tokens(database, refresh_bodies, expected)
        refresh = run_wrk(url, [urlencode({"grant_type": "refresh_token", "refresh_token": t})
                                for t in refresh_bodies], headers["Authorization"],
                          seconds=args.seconds, connections=args.connections)
        rss = {pid: _rss_mb(pid) for pid in _children(server.pid)}
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        idp_server.shutdown()

    result = {
        "setup": {"server": f"gunicorn, {args.workers} sync workers, SQLite WAL",
                  "load": f"wrk, 2 threads, {args.connections} connections on loopback, {args.seconds} s per phase"},
        "reference": reference,
        "token_exchange": exchange,
        "refresh": refresh,
        "worker_rss_mb": {"after_exchange": list(rss_after_exchange.values()),
                          "after_refresh": list(rss.values())},
        "ratios": {
            "exchange_per_es256_sign": round(exchange["per_second"] / reference["es256_sign_per_second"], 4),
            "refresh_per_es256_sign": round(refresh["per_second"] / reference["es256_sign_per_second"], 4),
        },
    }
    path = write_result("token_exchange", result)
    print(json.dumps(result, indent=2))
    print(f"written to {path}")
    return result


def _more_refresh_tokens(database, tokens: list[str], wanted: int) -> list[str]:
    """Copy a family's refresh tokens in bulk (the bench needs many single-use tokens)."""
    from idp_bridge.domain.tokens import hash_token
    from idp_bridge.storage.db import utcnow
    from idp_bridge.storage.models import RefreshToken

    now = utcnow()
    with database.transaction() as session:
        sid = session.get(RefreshToken, hash_token(tokens[0])).sid
        extra = []
        for _ in range(max(0, wanted - len(tokens))):
            token = secrets.token_urlsafe(32)
            extra.append(token)
            session.add(RefreshToken(token_hash=hash_token(token), sid=sid, created_at=now,
                                     expires_at=now + timedelta(hours=1), rotated_at=None))
    return tokens + extra


if __name__ == "__main__":
    main()
