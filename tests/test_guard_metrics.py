"""The resource server's metrics of access recording (issue 14 item 1: a full spool "says so
in its logs and metrics"): scopes.guard.metrics and the example resource server's /metrics."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from scopes.guard.metrics import CONTENT_TYPE, access_recording_metrics
from test_access_recording import (TENANT, auth, fake, guard, loopback,  # noqa: F401 fixtures
                                   resource_app, start, wait_for)

ROOT = Path(__file__).resolve().parent.parent


def parse(text: str) -> dict[str, float]:
    """Samples of the Prometheus text format: {"name{labels}": value}; every sample line
    follows a HELP and a TYPE line of its metric."""
    samples, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
        elif line.startswith("# HELP "):
            continue
        else:
            match = re.fullmatch(r'([a-z_]+)(\{outcome="[a-z_]+"\})? (\d+)', line)
            assert match, line
            assert match.group(1) in typed, line
            samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples


def test_recording_off():
    samples = parse(access_recording_metrics(None))
    assert samples["scopes_guard_access_recording_enabled"] == 0
    assert samples["scopes_guard_access_spool_full"] == 0
    assert samples['scopes_guard_access_records_total{outcome="enqueued"}'] == 0


def test_a_full_spool_shows_in_the_metrics(fake, guard, tmp_path):
    fake.ingest.mode = "down"
    recorder = start(guard, tmp_path / "spool", max_spool_bytes=64 * 1024, when_full="refuse",
                     segment_bytes=16 * 1024, backoff_max=0.1)
    before = parse(access_recording_metrics(recorder))
    assert before["scopes_guard_access_recording_enabled"] == 1
    assert before["scopes_guard_access_spool_full"] == 0
    assert before["scopes_guard_access_spool_max_bytes"] == 64 * 1024
    claims = fake.claims()
    filled = 0
    while not recorder.full:
        assert filled < 1000, "the spool never became full"
        guard.record_access(claims, "evaluation:read", method="GET",
                            route="/tenants/<tenant>/evaluation", status=200)
        filled += 1
        spooled = filled
        wait_for(lambda: recorder.stats["spooled"] == spooled, message="the writer")
    client = resource_app(guard).test_client()
    response = client.post(f"/tenants/{TENANT}/evaluation", headers=auth(fake.mint()))
    assert response.status_code == 503
    assert response.get_json()["error"] == "temporarily_unavailable"
    full = parse(access_recording_metrics(recorder))
    assert full["scopes_guard_access_spool_full"] == 1
    assert full["scopes_guard_access_spool_bytes"] > 0
    assert full['scopes_guard_access_records_total{outcome="spooled"}'] == filled
    assert full["scopes_guard_access_refused_requests_total"] >= 1
    assert full["scopes_guard_access_ship_failures_total"] >= 1
    fake.ingest.mode = "up"
    wait_for(lambda: not recorder.full, timeout=15, message="room again")
    assert recorder.wait_idle(60)
    after = parse(access_recording_metrics(recorder))
    assert after["scopes_guard_access_spool_full"] == 0
    assert after['scopes_guard_access_records_total{outcome="accepted"}'] == filled


def _example_module():
    path = ROOT / "deploy" / "example-resource-server" / "example_resource_server.py"
    spec = importlib.util.spec_from_file_location("example_resource_server_metrics", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_resource_server_serves_them(fake, guard, tmp_path):
    example = _example_module()
    client = example.create_app(guard).test_client()
    off = client.get("/metrics")
    assert off.status_code == 200 and off.headers["Content-Type"] == CONTENT_TYPE
    assert parse(off.get_data(as_text=True))["scopes_guard_access_recording_enabled"] == 0
    start(guard, tmp_path / "spool")
    on = parse(client.get("/metrics").get_data(as_text=True))
    assert on["scopes_guard_access_recording_enabled"] == 1
