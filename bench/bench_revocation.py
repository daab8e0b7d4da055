"""Revocation propagation: from the removal request to rejection at every resource server.

The bridge runs under gunicorn on loopback; ten resource-server processes
(``bench/revocation_receiver.py``) run ``scopes.guard`` with its feed listener and validate
the advisor's token continuously. Each round: bob joins, every receiver accepts his token,
anna removes him; the latency of a receiver is the time from sending the DELETE to its first
rejection. Reference in the same run: Keycloak-style offline JWT validation learns of a
revocation only at token expiry (the access-token lifetime, 300 s). Writes
``bench/results/revocation.json``. Bounded: ``--rounds`` rounds, 30 s per round at most.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.common import percentile, write_result
from bench.served_bridge import ServedBridge

RECEIVER = Path(__file__).with_name("revocation_receiver.py")


def cpu_seconds(pids) -> float:
    """User + system CPU time of the processes so far (Linux /proc), in seconds."""
    import os

    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def workers_of(process) -> list[int]:
    path = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--receivers", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1,
                        help="rounds run first and reported apart, not in the percentiles "
                             "(the first revocation after a start warms every process up)")
    parser.add_argument("--redis", action="store_true",
                        help="Redis wake-ups between workers (started for the run)")
    args = parser.parse_args(argv)
    from idp_bridge.devidp import DEMO_USERS

    latencies, failures, delete_ms = [], 0, []
    # Phases (timestamps in the bench and the receivers): DELETE answered, the feed applied
    # the revocation in each receiver (long poll answered, SET verified), guard rejected.
    applied_ms, after_delete_ms, rounds_detail = [], [], []
    redis = None
    extra_env = {}
    if args.redis:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from services import RedisServer

        redis = RedisServer()
        extra_env["IDP_BRIDGE_REDIS_URL"] = redis.url
    with ServedBridge(workers=args.workers, extra_env=extra_env) as bridge:
        receivers = [subprocess.Popen(
            [sys.executable, str(RECEIVER), bridge.issuer, "konfipay-api",
             "example-resource-server", bridge.rs_secret],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for _ in range(args.receivers)]
        try:
            ready = [r.stdout.readline().strip() for r in receivers]
            assert ready == ["READY"] * args.receivers, ready
            workers = workers_of(bridge.process)
            warmup_detail = []
            for number in range(args.warmup + args.rounds):
                if number == args.warmup:  # the measured rounds start: count from here
                    warmup_detail = rounds_detail
                    latencies, applied_ms, after_delete_ms, delete_ms = [], [], [], []
                    rounds_detail, failures = [], 0
                    server_cpu = cpu_seconds(workers)
                    receivers_cpu = cpu_seconds([r.pid for r in receivers])
                token = bridge.join("bob")["access_token"]
                for r in receivers:
                    r.stdin.write(f"TOKEN {token}\n")
                    r.stdin.flush()
                oks = [r.stdout.readline().strip() for r in receivers]
                assert oks == ["OK"] * args.receivers, oks
                started, answered = bridge.remove(DEMO_USERS["bob"]["sub"])
                delete_ms.append((answered - started) * 1000)
                this_round = []
                for r in receivers:
                    answer = r.stdout.readline().split(" ")
                    if answer[0] == "REVOKED":
                        latencies.append(float(answer[1]) - started)
                        applied_ms.append((float(answer[2]) - started) * 1000)
                        after_delete_ms.append((float(answer[2]) - answered) * 1000)
                        this_round.append(round((float(answer[1]) - started) * 1000, 1))
                    else:
                        failures += 1
                rounds_detail.append({"delete_ms": round((answered - started) * 1000, 1),
                                      "rejected_ms": sorted(this_round)})
            # CPU time of the bridge's workers per round (each round: a join, the DELETE,
            # the ten polls it wakes, their acknowledgements): a figure the machine's load
            # changes less than the latencies.
            server_cpu_ms = (cpu_seconds(workers) - server_cpu) * 1000 / args.rounds
            receivers_cpu_ms = (cpu_seconds([r.pid for r in receivers]) - receivers_cpu) \
                * 1000 / args.rounds
        finally:
            for r in receivers:
                try:
                    r.stdin.write("QUIT\n")
                    r.stdin.flush()
                except OSError:
                    pass
            for r in receivers:
                try:
                    r.wait(10)
                except subprocess.TimeoutExpired:
                    r.kill()
    if redis is not None:
        redis.close()
    ms = [x * 1000 for x in latencies]
    result = {
        "setup": {"bridge": f"gunicorn, {args.workers} gthread workers, SQLite WAL"
                            + (", Redis wake-ups" if args.redis else
                               ", wake-ups from the database (data_version), no broker"),
                  "receivers": f"{args.receivers} processes running scopes.guard, RFC 8936 long poll",
                  "rounds": args.rounds,
                  "warmup_rounds": args.warmup},
        "samples": len(ms),
        "not_revoked": failures,
        "p50_ms": round(percentile(ms, 50), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "max_ms": round(max(ms), 1) if ms else None,
        "delete_request_p50_ms": round(percentile(delete_ms, 50), 1),
        "bridge_cpu_ms_per_round": round(server_cpu_ms, 1),
        "receivers_cpu_ms_per_round": round(receivers_cpu_ms, 1),
        "phases": {
            "delete_request_ms": {"p50": round(percentile(delete_ms, 50), 1),
                                  "p99": round(percentile(delete_ms, 99), 1)},
            "feed_applied_after_delete_answer_ms": {
                "p50": round(percentile(after_delete_ms, 50), 1),
                "p99": round(percentile(after_delete_ms, 99), 1)},
            "feed_applied_since_delete_sent_ms": {"p50": round(percentile(applied_ms, 50), 1),
                                                  "p99": round(percentile(applied_ms, 99), 1)},
            "rounds": rounds_detail,
            "warmup_rounds": warmup_detail,
        },
        "reference": {"offline_jwt_validation_bound_ms": 300_000,
                      "note": "without a feed, a resource server validating JWTs locally accepts "
                              "a revoked token until it expires (access-token lifetime 300 s)"},
        "targets": {"p99_ms": 50},
        "met": {"p99": bool(ms) and percentile(ms, 99) <= 50 and failures == 0},
        "ratios": {"p99_vs_target_1s": round(percentile(ms, 99) / 1000, 4) if ms else None,
                   "p99_vs_target_50ms": round(percentile(ms, 99) / 50, 3) if ms else None,
                   "p99_vs_offline_bound": round(percentile(ms, 99) / 300_000, 6) if ms else None},
    }
    path = write_result("revocation", result)
    print(json.dumps(result, indent=2))
    print(f"written to {path}")
    return result


if __name__ == "__main__":
    main()
