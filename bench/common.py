"""Shared benchmark plumbing: a bridge under gunicorn on loopback, a load generator in other
processes, and result files under bench/results/. Every loop is bounded in time and count."""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

RESULTS = Path(__file__).parent / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url_host: str, port: int, path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection(url_host, port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status < 500:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing answers on {url_host}:{port}{path}")


def percentile(values, q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _load_worker(port, path, headers, bodies, duration, max_requests, queue):
    latencies, errors, statuses = [], 0, {}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    deadline = time.perf_counter() + duration
    i = 0
    while time.perf_counter() < deadline and i < max_requests:
        body = bodies[i % len(bodies)]
        start = time.perf_counter()
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            statuses[response.status] = statuses.get(response.status, 0) + 1
            if response.status != 200:
                errors += 1
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        latencies.append(time.perf_counter() - start)
        i += 1
    queue.put({"latencies": latencies, "errors": errors, "statuses": statuses})


def run_load(port: int, path: str, headers: dict, bodies: list[bytes], *, duration: float,
             connections: int, max_requests: int = 100_000) -> dict:
    """POST ``bodies`` round-robin from ``connections`` processes for ``duration`` seconds."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    per = max(1, len(bodies) // connections)
    procs = [ctx.Process(target=_load_worker,
                         args=(port, path, headers, bodies[i * per:(i + 1) * per] or bodies,
                               duration, max_requests // connections, queue))
             for i in range(connections)]
    started = time.perf_counter()
    for p in procs:
        p.start()
    results = [queue.get(timeout=duration + 60) for _ in procs]
    for p in procs:
        p.join(10)
    elapsed = time.perf_counter() - started
    latencies = [x for r in results for x in r["latencies"]]
    statuses: dict = {}
    for r in results:
        for k, v in r["statuses"].items():
            statuses[str(k)] = statuses.get(str(k), 0) + v
    ok = statuses.get("200", 0)
    return {
        "requests": len(latencies),
        "ok": ok,
        "errors": sum(r["errors"] for r in results),
        "statuses": statuses,
        "seconds": round(duration, 2),
        "per_second": round(ok / duration, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "wall_seconds": round(elapsed, 2),
    }


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": sys.version.split()[0],
            "platform": platform.platform()}


def write_result(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(), **data}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
