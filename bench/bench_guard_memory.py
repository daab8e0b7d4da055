"""What a million revocations cost the guard's revocation set, and what pruning gives back.

Each measurement runs in a fresh Python process (so RSS starts from the same place): a
million ``session-revoked`` entries (half ``grant_id``, half ``sid``, UUID values, event
times spread over the last five minutes, delivered in order) go into
:class:`scopes.guard.revocation.RevocationSet` through ``revoke``; the clock then moves past
every entry's time and the set is pruned. Reported: RSS (``/proc/self/statm``) and the
memory tracemalloc traces (a second pass, since tracing slows the inserts), per entry, the
time per ``revoke`` and the time of the prune that empties the set, and the largest single
prune while time moves in 1 s steps through the entries' expiry (what a feed poll pays);
for the current set also two more rounds of a million (RSS must not grow round by round).

``--before REV`` also measures the revocation set of that git revision (its API: ``revoke``
and ``prune(now, force=True)``), for the before/after comparison in the README.

Usage: python -m bench.bench_guard_memory [--count N] [--before REV]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import write_result

ROOT = Path(__file__).resolve().parent.parent

CHILD = r'''
import gc, json, os, random, sys, time, tracemalloc, uuid
sys.path.insert(0, sys.argv[1])
import revocation_under_test as module

PAGE = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE

count, traced, new_api = int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4] == "1"
start = 1_800_000_000.0
now = [start]
KEEP = 300 + 2 * 30
rng = random.Random(16)
stamps = sorted(start - rng.random() * 300 for _ in range(count))
kinds = ("grant_id", "sid")
if new_api:
    rs = module.RevocationSet(KEEP, clock=lambda: now[0])
    prune = lambda t: rs.prune(t)
else:  # the old API read time.time(): feed it our clock
    module.time.time = lambda: now[0]
    rs = module.RevocationSet(KEEP - 30)  # it kept max_token_lifetime + leeway
    prune = lambda t: rs.prune(t, force=True)
gc.collect()
if traced:
    tracemalloc.start()
base_rss = rss()
base_traced = tracemalloc.get_traced_memory()[0] if traced else 0
t0 = time.perf_counter()
for i, stamp in enumerate(stamps):
    rs.revoke(kinds[i & 1], str(uuid.UUID(int=rng.getrandbits(128), version=4)), stamp)
insert_seconds = time.perf_counter() - t0
assert len(rs) == count, len(rs)
full_rss = rss()
full_traced = tracemalloc.get_traced_memory()[0] if traced else 0
result = {"entries": len(rs), "insert_seconds": insert_seconds}
if not traced:
    # Time moving in 1 s steps through the entries' expiry, a prune at each (a feed poll):
    # the largest single prune. The old set prunes with a full rebuild each time.
    worst = 0.0
    for step in range(int(KEEP - 300), int(KEEP) + 2):
        t = time.perf_counter()
        prune(start + step)
        worst = max(worst, time.perf_counter() - t)
    result["largest_prune_seconds_in_1s_steps"] = worst
    result["rss_base"] = base_rss
    result["rss_full"] = full_rss
else:
    t = time.perf_counter()
    prune(start + KEEP + 2)
    result["prune_all_seconds_traced"] = time.perf_counter() - t
assert len(rs) == 0, len(rs)
gc.collect()
if not traced and new_api:
    # Two more rounds of a million, each pruned: the process does not grow round by round.
    cycles = []
    for round_ in (1, 2):
        offset = round_ * 1000.0
        now[0] = start + offset
        for i, stamp in enumerate(stamps):
            rs.revoke(kinds[i & 1], str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                      stamp + offset)
        full = rss()
        prune(start + offset + KEEP + 2)
        assert len(rs) == 0
        gc.collect()
        cycles.append({"rss_with_entries": full, "rss_after_prune": rss()})
    result["more_rounds"] = cycles
if traced:
    result["traced_full"] = full_traced - base_traced
    result["traced_after_prune"] = tracemalloc.get_traced_memory()[0] - base_traced
else:
    result["rss_after_prune"] = rss()
print(json.dumps(result))
'''


def measure(source: str, count: int, traced: bool, new_api: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "revocation_under_test.py").write_text(source)
        child = Path(tmp, "child.py")
        child.write_text(CHILD)
        out = subprocess.run([sys.executable, str(child), tmp, str(count), str(int(traced)),
                              str(int(new_api))], check=True, capture_output=True, text=True)
        return json.loads(out.stdout)


def run(source: str, count: int, new_api: bool) -> dict:
    plain = measure(source, count, False, new_api)
    traced = measure(source, count, True, new_api)
    mib = 1024 * 1024
    return {
        "rss_mib": {"before_inserts": round(plain["rss_base"] / mib, 1),
                    "with_entries": round(plain["rss_full"] / mib, 1),
                    "after_prune": round(plain["rss_after_prune"] / mib, 1)},
        "rss_bytes_per_entry": round((plain["rss_full"] - plain["rss_base"]) / count),
        "traced_mib": {"with_entries": round(traced["traced_full"] / mib, 1),
                       "after_prune": round(traced["traced_after_prune"] / mib, 3)},
        "traced_bytes_per_entry": round(traced["traced_full"] / count),
        "revoke_microseconds": round(plain["insert_seconds"] / count * 1e6, 2),
        "largest_prune_ms_in_1s_steps": round(plain["largest_prune_seconds_in_1s_steps"]
                                              * 1000, 1),
        **({"rss_mib_next_rounds": [
            {"with_entries": round(c["rss_with_entries"] / mib, 1),
             "after_prune": round(c["rss_after_prune"] / mib, 1)}
            for c in plain["more_rounds"]]} if "more_rounds" in plain else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--before", help="a git revision whose revocation set to compare")
    args = parser.parse_args()
    load_start = [round(x, 2) for x in os.getloadavg()]
    data = {"setup": {
        "entries": args.count, "kinds": "half grant_id, half sid; UUID values",
        "event_times": "uniform over the last 300 s, delivered in order",
        "keep_for": "max_token_lifetime 300 + 2 x leeway 30",
        "rss": "/proc/self/statm of a fresh process per measurement",
        "traced": "tracemalloc, a second process"},
        "load_average_at_start": load_start}
    source = (ROOT / "scopes/guard/revocation.py").read_text()
    data["after"] = run(source, args.count, True)
    if args.before:
        old = subprocess.run(["git", "-C", str(ROOT), "show",
                              f"{args.before}:scopes/guard/revocation.py"],
                             check=True, capture_output=True, text=True).stdout
        data["before"] = {"revision": args.before, **run(old, args.count, False)}
    path = write_result("guard_memory", data)
    print(path.read_text())


if __name__ == "__main__":
    main()
