"""Scale-out: token exchanges per second with 1, 2 and 4 bridge worker processes on
PostgreSQL (with Redis), and with one process on SQLite, in one run; p50/p99 for each and the
peak RSS of each worker (target < 150 MB). PostgreSQL and Redis are started for the run on
free loopback ports (Debian packages ``postgresql`` and ``redis-server``). Writes
``bench/results/scale_out.json``. Bounded: ``--seconds`` per configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path
from urllib.parse import urlencode

from bench.common import write_result
from bench.served_bridge import ServedBridge
from bench.wrk import require_wrk, run_wrk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def measure(bridge: ServedBridge, seconds: float, connections: int) -> dict:
    subject = {user: bridge.upstream_token(user) for user in ("bob", "carol")}
    for user in subject:
        bridge.join(user)
    url = f"http://127.0.0.1:{bridge.port}/token"
    bodies = [urlencode(bridge.exchange_form(token)) for token in subject.values()] * 2
    run_wrk(url, bodies, bridge.basic, seconds=2, connections=connections)  # warm-up
    result = run_wrk(url, bodies, bridge.basic, seconds=seconds, connections=connections)
    result["worker_rss_mb"] = bridge.worker_rss_mb()
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args(argv)
    require_wrk()
    from services import PostgresServer, RedisServer

    postgres, redis = PostgresServer(), RedisServer()
    runs = {}
    try:
        with ServedBridge(workers=1) as bridge:
            runs["sqlite_1_worker"] = measure(bridge, args.seconds, args.connections)
        for workers in (1, 2, 4):
            url = postgres.create_database(f"bench_{uuid.uuid4().hex[:12]}")
            with ServedBridge(workers=workers, database_url=url,
                              extra_env={"IDP_BRIDGE_REDIS_URL": redis.url}) as bridge:
                runs[f"postgresql_{workers}_workers"] = measure(bridge, args.seconds,
                                                                 args.connections)
    finally:
        postgres.close()
        redis.close()
    reference = runs["sqlite_1_worker"]["per_second"]
    rss = [mb for run in runs.values() for mb in run["worker_rss_mb"]]
    result = {
        "setup": {"server": "gunicorn gthread workers; PostgreSQL 15 + Redis for the scale-out "
                            "rows, SQLite WAL for the embedded default",
                  "load": f"wrk, 2 threads, {args.connections} connections, {args.seconds} s each",
                  "machine_note": "all on one 2-core machine: the load generator, PostgreSQL "
                                  "and Redis share the cores with the workers"},
        "runs": runs,
        "reference": {"sqlite_1_worker_per_second": reference},
        "ratios": {name: round(run["per_second"] / reference, 3) for name, run in runs.items()},
        "peak_worker_rss_mb": max(rss) if rss else None,
        "rss_target_mb": 150,
    }
    path = write_result("scale_out", result)
    print(json.dumps(result, indent=2))
    print(f"written to {path}")
    return result


if __name__ == "__main__":
    main()
