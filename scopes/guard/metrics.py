"""Prometheus text exposition of a resource server's access recording (issue 14 item 1:
"when the spool is full it says so in its logs and metrics").

:func:`access_recording_metrics` renders the counters of an :class:`AccessRecorder` (or that
recording is off) in the Prometheus text format 0.0.4, without a client library: a resource
server serves the text at its ``/metrics`` (the example resource server does). Each process
counts for itself, like the bridge's own ``/metrics``.

======================================================  ===========================================
``scopes_guard_access_recording_enabled``               1 while a recorder runs, else 0
``scopes_guard_access_spool_full``                      1 while the spool is full (writes refused
                                                        or reads dropping), else 0
``scopes_guard_access_spool_bytes``                     unshipped bytes in the spool
``scopes_guard_access_spool_max_bytes``                 the bound (``max_spool_bytes``)
``scopes_guard_access_records_total{outcome=…}``        records enqueued, spooled, shipped, accepted,
                                                        duplicates, refused_by_bridge, dropped,
                                                        dropped_queue, invalid, corrupt_lines
``scopes_guard_access_refused_requests_total``          advisor requests refused (503) because the
                                                        spool was full and ``when_full`` = refuse
``scopes_guard_access_ship_failures_total``             batches the bridge did not take (offline,
                                                        5xx); they are sent again
======================================================  ===========================================
"""

from __future__ import annotations

__all__ = ["CONTENT_TYPE", "access_recording_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: The record outcomes, in the order they are written (a fixed set: labels never come from
#: data).
OUTCOMES = ("enqueued", "spooled", "shipped", "accepted", "duplicates", "refused_by_bridge",
            "dropped", "dropped_queue", "invalid", "corrupt_lines")


def access_recording_metrics(recorder) -> str:
    """The metrics text of ``recorder`` (an :class:`~scopes.guard.AccessRecorder` or None
    when recording is off)."""
    stats = dict(recorder.stats) if recorder is not None else {}
    lines = []

    def metric(name: str, kind: str, text: str, samples) -> None:
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lines.append(f"{name}{labels} {_number(value)}")

    metric("scopes_guard_access_recording_enabled", "gauge",
           "1 while access records are being recorded and shipped",
           [("", 1 if recorder is not None and recorder.alive else 0)])
    metric("scopes_guard_access_spool_full", "gauge",
           "1 while the access-record spool is full", [("", 1 if stats.get("spool_full") else 0)])
    metric("scopes_guard_access_spool_bytes", "gauge", "unshipped bytes in the spool",
           [("", stats.get("spool_bytes", 0))])
    metric("scopes_guard_access_spool_max_bytes", "gauge", "the bound of the spool",
           [("", recorder.max_spool_bytes if recorder is not None else 0)])
    metric("scopes_guard_access_records_total", "counter", "access records by outcome",
           [(f'{{outcome="{outcome}"}}', stats.get(outcome, 0)) for outcome in OUTCOMES])
    metric("scopes_guard_access_refused_requests_total", "counter",
           "advisor requests refused because the spool was full",
           [("", stats.get("refused_requests", 0))])
    metric("scopes_guard_access_ship_failures_total", "counter",
           "batches the bridge did not take (sent again)", [("", stats.get("ship_failures", 0))])
    return "\n".join(lines) + "\n"


def _number(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return "0"
