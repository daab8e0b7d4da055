"""Prometheus metrics (served at ``/metrics``). Each process counts for itself; under
gunicorn set ``PROMETHEUS_MULTIPROC_DIR`` to aggregate workers (prometheus_client's
multiprocess mode)."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess

TOKEN_REQUESTS = Counter("idp_bridge_token_requests_total",
                         "Token endpoint requests by grant type and outcome",
                         ["grant_type", "outcome"])
CODE_GUESSES = Counter("idp_bridge_access_code_checks_total",
                       "Access-code checks by result (ok, wrong, rate_limited)", ["result"])
REVOCATIONS = Counter("idp_bridge_revocations_total",
                      "Revoked grants and token families by reason", ["kind", "reason"])
FEED_LAG = Histogram("idp_bridge_feed_delivery_lag_seconds",
                     "Time from a revocation to its first delivery to a receiver",
                     buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60))


def render() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()
