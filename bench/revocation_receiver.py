"""One resource-server process for revocation tests and benchmarks (stdin/stdout protocol).

Usage: ``python bench/revocation_receiver.py ISSUER AUDIENCE CLIENT_ID CLIENT_SECRET``.
Prints ``READY`` once its revocation feed is healthy. Then, per input line ``TOKEN <jwt>``:
validates it (``OK``, or ``BAD <error>``), then validates it again at once whenever the feed
has applied a revocation, and every 10 ms besides, until the token is rejected and prints
``REVOKED <unix time> <unix time the feed applied it> <unix time the poll answer holding it
arrived> <stream id> <description>``, or ``TIMEOUT`` after 30 s. (It once
validated every millisecond: ten such loops took as much CPU as the bridge on a 2-core machine,
right while the bridge was answering; a rejection the feed causes is seen just as soon this way,
one from elsewhere within 10 ms.)
``QUIT`` stops the listener and exits. Bounded in time: nothing runs longer than 30 s.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scopes.guard import GuardError, TokenGuard  # noqa: E402


def main(issuer: str, audience: str, client_id: str, secret: str) -> None:
    guard = TokenGuard(issuer, audience)
    # Instrumentation for the benchmark: when the feed first applied a revocation (the
    # listener's thread), so the bench can split feed delivery from the validation loop.
    applied = []
    changed = threading.Event()
    revoke = guard.revocations.revoke

    def timed_revoke(*args, **kwargs):
        applied.append(time.time())
        try:
            return revoke(*args, **kwargs)
        finally:
            changed.set()  # after the revocation set holds it

    guard.revocations.revoke = timed_revoke
    guard.start_revocation_listener(client_id, secret)
    # When the poll answer carrying a SET arrived (before it is verified and applied).
    listener = guard._listener
    arrived = []
    process = listener._process

    def timed_process(jti, token):
        if not arrived:  # the request that returned this SET's poll answer
            arrived.append(timed_request.last)
        return process(jti, token)

    listener._process = timed_process
    request = listener._request

    def timed_request(*args, **kwargs):
        response = request(*args, **kwargs)
        timed_request.last = time.time()
        return response

    timed_request.last = 0.0
    listener._request = timed_request
    deadline = time.monotonic() + 30
    while not guard.feed_healthy and time.monotonic() < deadline:
        time.sleep(0.01)
    print("READY" if guard.feed_healthy else "FEED_DOWN", flush=True)
    try:
        for line in sys.stdin:
            command, _, token = line.strip().partition(" ")
            if command == "QUIT":
                break
            if command != "TOKEN":
                continue
            try:
                guard.validate(token, tenant="10042", scope="payments:read")
            except GuardError as exc:
                print(f"BAD {exc.error} {exc.description}", flush=True)
                continue
            print("OK", flush=True)
            applied.clear()
            arrived.clear()
            changed.clear()
            until = time.monotonic() + 30
            while time.monotonic() < until:
                try:
                    guard.validate(token, tenant="10042", scope="payments:read")
                except GuardError as exc:
                    now = time.time()
                    first = applied[0] if applied else now
                    came = arrived[0] if arrived else now
                    print(f"REVOKED {now:.6f} {first:.6f} {came:.6f} "
                          f"{(listener._stream_id or '-')[:8]} {exc.description}", flush=True)
                    break
                if changed.wait(0.01):
                    changed.clear()
            else:
                print("TIMEOUT", flush=True)
    finally:
        guard.stop_revocation_listener()


if __name__ == "__main__":
    main(*sys.argv[1:5])
