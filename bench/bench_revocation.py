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
    parser.add_argument("--trace", action="store_true",
                        help="stage timestamps from the bridge's processes (bench/trace: "
                             "wake-ups, pending reads, bookkeeping writes, signing, answers), "
                             "printed per stage; costs the bridge a write per event")
    args = parser.parse_args(argv)
    from idp_bridge.devidp import DEMO_USERS

    latencies, failures, delete_ms = [], 0, []
    # Phases (timestamps in the bench and the receivers): DELETE answered, the feed applied
    # the revocation in each receiver (long poll answered, SET verified), guard rejected.
    applied_ms, after_delete_ms, rounds_detail = [], [], []
    arrived_ms, marks = [], []  # marks: (round, DELETE sent, answered, [(stream, arrived,
    redis = None                #   applied, rejected)]) for the trace
    extra_env = {}
    trace_file = None
    if args.trace:
        import tempfile

        trace_file = Path(tempfile.mkdtemp(prefix="bench-revocation-trace-")) / "trace.log"
        extra_env["BENCH_REVOCATION_TRACE"] = str(trace_file)
        extra_env["PYTHONPATH"] = str(Path(__file__).with_name("trace"))
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
                    arrived_ms, marks = [], []
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
                this_round, received = [], []
                for r in receivers:
                    answer = r.stdout.readline().split(" ")
                    if answer[0] == "REVOKED":
                        latencies.append(float(answer[1]) - started)
                        applied_ms.append((float(answer[2]) - started) * 1000)
                        arrived_ms.append((float(answer[3]) - started) * 1000)
                        received.append((answer[4], float(answer[3]), float(answer[2]),
                                         float(answer[1])))
                        after_delete_ms.append((float(answer[2]) - answered) * 1000)
                        this_round.append(round((float(answer[1]) - started) * 1000, 1))
                    else:
                        failures += 1
                marks.append((started, answered, received))
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
            "poll_answer_arrived_since_delete_sent_ms": {
                "p50": round(percentile(arrived_ms, 50), 1),
                "p99": round(percentile(arrived_ms, 99), 1)},
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
    if trace_file is not None:
        result["trace"] = stages(trace_file, marks)
        # The raw marks beside the trace, for a closer look at single rounds.
        trace_file.with_name("marks.json").write_text(json.dumps(marks))
    path = write_result("revocation", result)
    print(json.dumps(result, indent=2))
    print(f"written to {path}")
    return result


def stages(trace_file: Path, marks) -> dict:
    """Per stage, ms since the DELETE was sent (p50, p99 over receivers and rounds), from the
    bridge's trace (bench/trace/sitecustomize.py) and the receivers' timestamps: the
    wake-ups of each bridge process, then for each receiver's stream its long poll's pending
    read that found the revocation, its bookkeeping write, the SET signed, the poll answered
    (bridge side), the answer arrived, the SET applied, the token rejected (receiver side)."""
    events = []
    for line in trace_file.read_text().splitlines():
        parts = line.split(" ")
        events.append((float(parts[0]), parts[1], parts[2], parts[3], parts[4:]))
    events.sort()
    collected: dict[str, list] = {}

    def add(name, value):
        collected.setdefault(name, []).append(value * 1000)

    for index, (started, answered, received) in enumerate(marks):
        end = marks[index + 1][0] if index + 1 < len(marks) else float("inf")
        window = [e for e in events if started <= e[0] < end]
        first_notify = {}
        for t, pid, thread, event, _ in window:
            if event == "notify" and pid not in first_notify:
                first_notify[pid] = (t, thread)
        for t, thread in first_notify.values():
            add("wake_up_database_watch" if "wakeups" in thread else "wake_up_in_process",
                t - started)
        for stream, arrived, applied, rejected in received:
            mine = [e for e in window if e[4] and e[4][0] == stream]
            out = next((e for e in mine if e[3] == "poll_out" and e[4][1] != "sets=0"), None)
            if out is None:
                continue
            before = [e for e in mine if e[0] <= out[0]]
            found = next((e for e in before if e[3] == "read_out" and e[4][1] == "any=True"),
                         None)
            for name, event in (("read_found", found),
                                ("write_in", next((e for e in before if e[3] == "write_in"),
                                                  None)),
                                ("write_out", next((e for e in before if e[3] == "write_out"),
                                                   None)),
                                ("signed", next((e for e in before if e[3] == "sign_out"),
                                                None))):
                if event is not None:
                    add(name, event[0] - started)
            add("poll_answered", out[0] - started)
            add("answer_arrived", arrived - started)
            add("applied", applied - started)
            add("rejected", rejected - started)
    return {name: {"p50": round(percentile(values, 50), 1),
                   "p99": round(percentile(values, 99), 1), "n": len(values)}
            for name, values in collected.items()}


if __name__ == "__main__":
    main()
