"""Access recording (issue 14 item 6, guard side): its cost on the request path, its memory.

1. Rate: ``TokenGuard.validate`` plus what :func:`scopes.guard.flask_adapter.require` adds
   for an advisor token while recording (``check_access_recording`` and ``record_access``:
   an enqueue), against ``validate`` alone, in one run, short alternating slices; the writer
   and shipper threads run meanwhile and ship to an ingest in another process (stdlib HTTP,
   answering like the bridge), so their CPU and GIL time count. Target: ratio >= 0.95.
2. RSS: a process whose spool is full (``max_spool_bytes`` 64 MiB, the bridge unreachable)
   against one with an empty spool, after the same start. Target: within 10 MB.

Results in ``bench/results/access_recording.json``.

    python -m bench.bench_access_recording [--seconds 4] [--slices 16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

if __package__ in (None, ""):  # python bench/bench_access_recording.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from joserfc.jwk import ECKey  # noqa: E402

from bench.bench_guard import AUDIENCE, ISSUER, TENANT, StaticHTTP, realistic_token  # noqa: E402
from bench.common import free_port, write_result  # noqa: E402
from scopes.guard import TokenGuard  # noqa: E402
from scopes.guard.access_log import AccessRecorder  # noqa: E402

SCOPE = "evaluation:read"
ROUTE = "/tenants/<tenant>/evaluation"
RATE_TARGET = 0.95
RSS_TARGET_MB = 10.0
ROOT = Path(__file__).resolve().parent.parent


class _Ingest(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        answer = json.dumps({"accepted": [r["id"] for r in body["records"]],
                             "duplicates": [], "refused": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def serve_ingest(port: int) -> None:
    ThreadingHTTPServer(("127.0.0.1", port), _Ingest).serve_forever()


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def measure_rss(kind: str) -> dict:
    """In a process of its own: start a recorder (bridge unreachable), fill its spool for
    ``full``, then report VmRSS."""
    spool = tempfile.mkdtemp(prefix="bench-spool-")
    recorder = AccessRecorder(f"http://127.0.0.1:{free_port()}/access-records", "rs",
                              "secret", spool, max_spool_bytes=64 << 20,
                              when_full="refuse", backoff_max=1.0)
    recorder.start()
    claims = {"tenant": TENANT, "grant_id": "7f0c6a52-3c2e-4df1-9a44-1c1f0e3c9b10",
              "sid": "0b7d2c1e-6a4f-4f8e-8d3b-2a9c5e7f1d20",
              "sub": "4e1f9a2b-7c3d-4b5e-9f6a-8d2c1b0e3f47"}
    recorded = 0
    if kind == "full":
        while not recorder.full:
            for _ in range(1000):
                recorder.record(claims, "evaluation", "read", "GET", ROUTE, 200)
            recorded += 1000
            while recorder._queue.qsize() > 2000:
                time.sleep(0.005)
    deadline = time.monotonic() + 30
    while not recorder._queue.empty() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)
    result = {"kind": kind, "rss_kib": rss_kib(), "recorded": recorded,
              "spool_bytes": recorder.stats["spool_bytes"], "full": recorder.full}
    recorder.stop(1)
    return result


def rate(call, seconds: float) -> float:
    n, deadline = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        call()
        n += 1
    return n / (time.perf_counter() - start)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="total per side")
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--ingest", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rss", choices=("full", "empty"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ingest:
        serve_ingest(args.ingest)
        return {}
    if args.rss:
        print(json.dumps(measure_rss(args.rss)))
        return {}

    key = ECKey.generate_key("P-256")
    kid = "ae0fd1c0ae3647c3"
    jwks = {"keys": [{**key.as_dict(private=False), "kid": kid, "alg": "ES256", "use": "sig"}]}
    token = realistic_token(key, kid)
    plain = TokenGuard(ISSUER, AUDIENCE, http=StaticHTTP(jwks))
    recording = TokenGuard(ISSUER, AUDIENCE, http=StaticHTTP(jwks))
    port = free_port()
    ingest = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--ingest",
                               str(port)], cwd=ROOT)
    spool = tempfile.mkdtemp(prefix="bench-spool-")
    try:
        recorder = AccessRecorder(f"http://127.0.0.1:{port}/access-records", "rs", "secret",
                                  spool, max_spool_bytes=256 << 20)
        recorder.start()
        recording.access_recorder = recorder

        def without():
            plain.validate(token, tenant=TENANT, scope=SCOPE)

        def with_recording():
            claims = recording.validate(token, tenant=TENANT, scope=SCOPE)
            recording.check_access_recording(claims, SCOPE)
            recording.record_access(claims, SCOPE, method="GET", route=ROUTE, status=200)

        without(), with_recording()
        slice_seconds = max(args.seconds, 2.0) / args.slices
        off, on = [], []
        for _ in range(args.slices):
            off.append(rate(without, slice_seconds))
            on.append(rate(with_recording, slice_seconds))
        shipped_in_time = recorder.wait_idle(60)
        stats = dict(recorder.stats)
        recording.stop_access_recording(5)
    finally:
        ingest.kill()
        ingest.wait(5)
    paired = [b / a for a, b in zip(off, on)]
    ratio = statistics.median(paired)

    rss = {}
    for kind in ("empty", "full"):
        out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--rss", kind],
                             cwd=ROOT, capture_output=True, text=True, timeout=600, check=True)
        rss[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    rss_delta_mb = (rss["full"]["rss_kib"] - rss["empty"]["rss_kib"]) / 1024

    result = {
        "validate_per_second_off": round(statistics.fmean(off)),
        "validate_per_second_on": round(statistics.fmean(on)),
        "ratio_median_paired": round(ratio, 4),
        "ratio_aggregate": round(statistics.fmean(on) / statistics.fmean(off), 4),
        "rate_target": RATE_TARGET, "rate_ok": ratio >= RATE_TARGET,
        "records_shipped": stats["shipped"], "records_spooled": stats["spooled"],
        "all_shipped_after_run": shipped_in_time,
        "rss_empty_kib": rss["empty"]["rss_kib"], "rss_full_kib": rss["full"]["rss_kib"],
        "full_spool_bytes": rss["full"]["spool_bytes"],
        "full_spool_records": rss["full"]["recorded"],
        "rss_delta_mb": round(rss_delta_mb, 2), "rss_target_mb": RSS_TARGET_MB,
        "rss_ok": abs(rss_delta_mb) <= RSS_TARGET_MB,
        "slices": args.slices, "slice_seconds": round(slice_seconds, 3),
    }
    path = write_result("access_recording", result)
    print(json.dumps(result, indent=2))
    print(f"written to {path}")
    return result


if __name__ == "__main__":
    main()
