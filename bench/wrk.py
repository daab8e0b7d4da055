"""Run wrk (a C load generator, Debian package ``wrk``) and parse its report."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

SCRIPT = Path(__file__).parent / "wrk_bodies.lua"


def require_wrk() -> str:
    path = shutil.which("wrk")
    if not path:
        raise SystemExit("bench needs wrk: apt-get install wrk")
    return path


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(us|ms|s)", value).groups()
    return round(float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit], 3)


def run_wrk(url: str, bodies: list[str], authorization: str, *, seconds: float,
            threads: int = 2, connections: int = 8) -> dict:
    """POST ``bodies`` round-robin; time-bounded by ``seconds``."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write("\n".join(bodies) + "\n")
        body_file = fh.name
    out = subprocess.run(
        [require_wrk(), "-t", str(threads), "-c", str(connections), "-d", f"{int(seconds)}s",
         "--latency", "--timeout", "10s", "-s", str(SCRIPT), url, "--",
         body_file, str(threads), authorization],
        capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    Path(body_file).unlink()
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    failed = int(non_2xx.group(1)) if non_2xx else 0
    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M))
    return {
        "requests": total,
        "ok": total - failed,
        "non_2xx": failed,
        "socket_errors": errors.group(1).strip() if errors else None,
        "seconds": seconds,
        "per_second": round((total - failed) / seconds, 1),
        "p50_ms": _ms(latency["50"]),
        "p90_ms": _ms(latency["90"]),
        "p99_ms": _ms(latency["99"]),
    }
