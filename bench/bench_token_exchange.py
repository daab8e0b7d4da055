"""Token exchange and refresh throughput of the bridge served by gunicorn on loopback.

One run measures, on the same machine: raw ES256 sign/verify rates of ``cryptography``
(the reference), then token exchanges/s and refreshes/s with p50/p99 latency from wrk (a
load generator in a separate process), and the RSS of each bridge worker. Writes
``bench/results/token_exchange.json``. Bounded: each phase runs a fixed number of seconds.
Usage: ``python -m bench.bench_token_exchange [--seconds 10] [--workers 2]`` (2: serve's default).
"""

from __future__ import annotations

import argparse
import json
import secrets
from datetime import timedelta
from urllib.parse import urlencode

from bench.common import write_result
from bench.crypto_reference import es256_rates
from bench.served_bridge import ServedBridge
from bench.wrk import require_wrk, run_wrk


def measure(bridge: ServedBridge, seconds: float, connections: int) -> dict:
    """Exchanges/s and refreshes/s of a running bridge (advisors bob and carol)."""
    subject = {user: bridge.upstream_token(user) for user in ("bob", "carol")}
    for user in subject:
        bridge.join(user)
    url = f"http://127.0.0.1:{bridge.port}/token"
    bodies = [urlencode(bridge.exchange_form(token)) for token in subject.values()] * 2
    run_wrk(url, bodies, bridge.basic, seconds=2)  # warm-up
    exchange = run_wrk(url, bodies, bridge.basic, seconds=seconds, connections=connections)
    rss_exchange = bridge.worker_rss_mb()
    # Every refresh needs an unused refresh token: mint enough of them up front.
    status, body = bridge.request("POST", "/token", basic=True,
                                  form=bridge.exchange_form(subject["bob"]))
    assert status == 200, body
    wanted = int(exchange["per_second"] * seconds * 3) + 2000
    tokens = _more_refresh_tokens(bridge.database, body["refresh_token"], wanted)
    refresh = run_wrk(url, [urlencode({"grant_type": "refresh_token", "refresh_token": t})
                            for t in tokens], bridge.basic, seconds=seconds,
                      connections=connections)
    return {"token_exchange": exchange, "refresh": refresh,
            "worker_rss_mb": {"after_exchange": rss_exchange,
                              "after_refresh": bridge.worker_rss_mb()}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)   # what `idp-bridge serve` starts
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args(argv)
    require_wrk()
    reference = es256_rates()
    with ServedBridge(workers=args.workers) as bridge:
        figures = measure(bridge, args.seconds, args.connections)
    result = {
        "setup": {"server": f"gunicorn, {args.workers} gthread workers, SQLite WAL, group "
                            "commit (each answer flushed), writers on one flock",
                  "load": f"wrk, 2 threads, {args.connections} connections on loopback, "
                          f"{args.seconds} s per phase"},
        "reference": reference,
        **figures,
        "ratios": {
            "exchange_per_es256_sign": round(figures["token_exchange"]["per_second"]
                                             / reference["es256_sign_per_second"], 4),
            "refresh_per_es256_sign": round(figures["refresh"]["per_second"]
                                            / reference["es256_sign_per_second"], 4),
        },
    }
    path = write_result("token_exchange", result)
    print(json.dumps(result, indent=2))
    print(f"written to {path}")
    return result


def _more_refresh_tokens(database, first: str, wanted: int) -> list[str]:
    """Add unused refresh tokens to ``first``'s family in bulk (single-use load material)."""
    from idp_bridge.domain.tokens import hash_token
    from idp_bridge.storage.db import utcnow
    from idp_bridge.storage.models import RefreshToken

    now = utcnow()
    tokens = [first]
    with database.transaction() as session:
        sid = session.get(RefreshToken, hash_token(first)).sid
        for _ in range(wanted):
            token = secrets.token_urlsafe(32)
            tokens.append(token)
            session.add(RefreshToken(token_hash=hash_token(token), sid=sid, created_at=now,
                                     expires_at=now + timedelta(hours=1), rotated_at=None))
    return tokens


if __name__ == "__main__":
    main()
