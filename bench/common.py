"""Shared benchmark plumbing: ports, readiness, result files under bench/results/."""

from __future__ import annotations

import http.client
import json
import os
import platform
import socket
import sys
import time
from pathlib import Path

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
    """Nearest-rank percentile of ``values`` (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": sys.version.split()[0],
            "platform": platform.platform()}


def write_result(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(),
            # The 1, 5 and 15 minute load averages when the run ended: other work on the
            # machine during the run shows here (a quiet 2-core machine stays below ~1.5).
            "load_average": [round(x, 2) for x in os.getloadavg()], **data}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
