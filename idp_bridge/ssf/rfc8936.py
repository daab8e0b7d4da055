"""Poll-based delivery of SETs (RFC 8936), with long polling.

A poll first records the acknowledgements it carries, then answers with what is pending.
With ``returnImmediately: false`` and nothing pending it waits, and answers as soon as a
revocation is committed (same process: at once; other processes: within the notifier's
database check interval) or empty after ``long_poll_seconds``. The long polls one wake-up
answers read and sign one at a time, share one bookkeeping write, and go before the
acknowledgements arriving meanwhile (:class:`~.bookkeeping.DeliveriesFirst`).

The answer is ``{"sets": {...}}`` with ``"moreAvailable": true`` only when more SETs are
waiting: section 2.3 defines the member for that case, and strict receivers (SGNL's
caep.dev receiver) refuse a ``false`` one.
"""

from __future__ import annotations

import logging
import time

from ..domain.errors import InvalidInput, NotFound
from ..storage.db import utcnow

log = logging.getLogger(__name__)
MAX_EVENTS = 1000


def parse_poll(body) -> tuple[int, bool, list[str], dict]:
    if not isinstance(body, dict):
        raise InvalidInput("the poll request must be a JSON object")
    max_events = body.get("maxEvents", 100)
    if not isinstance(max_events, int) or isinstance(max_events, bool) or \
            not 0 <= max_events <= MAX_EVENTS:
        raise InvalidInput(f"maxEvents must be an integer from 0 to {MAX_EVENTS}")
    immediately = body.get("returnImmediately", False)
    if not isinstance(immediately, bool):
        raise InvalidInput("returnImmediately must be a boolean")
    acks = body.get("ack", [])
    if not isinstance(acks, list) or len(acks) > MAX_EVENTS or \
            not all(isinstance(a, str) and len(a) <= 100 for a in acks):
        raise InvalidInput("ack must be a list of at most 1000 jti strings")
    errors = body.get("setErrs", {})
    if not isinstance(errors, dict) or len(errors) > MAX_EVENTS:
        raise InvalidInput("setErrs must be an object keyed by jti")
    return max_events, immediately, acks, errors


def poll(transmitter, notifier, *, stream_id: str, client_id: str, body, long_poll_seconds: float,
         stop=None) -> dict:
    max_events, immediately, acks, errors = parse_poll(body)
    deliveries = transmitter.deliveries
    if acks or errors:
        # The long polls this process is answering after a wake-up go first (their
        # receivers are waiting for a revocation; this one has applied its events).
        deliveries.wait_for_deliveries()
    now = utcnow()
    # The poll marks its stream seen once, when it arrives: with its acknowledgements if
    # it carries any (one write), else with its first look at what is pending.
    touched = transmitter.acknowledge(stream_id, client_id, list(acks), now,
                                      errors=list(errors), touch=True)
    for jti, error in errors.items():
        # A receiver could not process a SET; it is acknowledged (no endless redelivery),
        # its receipt says so (never "confirmed") and it is logged for the operator.
        log.warning("receiver %s rejected SET %s: %s", client_id, jti[:100], str(error)[:200])
    if max_events == 0:
        _, more = transmitter.pending(stream_id, client_id, 0, now,
                                      touch=not touched)  # checks, marks it seen
        return _answer({}, more)
    deadline = time.monotonic() + long_poll_seconds
    touch = not touched  # not again on each wake-up
    found: list = []
    delivery = None  # after a wake-up, from the read to the answer (DeliveriesFirst)

    def check() -> bool:
        # The wait's check reads what is pending, which the poll then answers (one read
        # per wake-up, not a look and then the read).
        nonlocal delivery
        delivery = deliveries.start()
        delivery.compute()  # reads and signs one at a time (DeliveriesFirst)
        try:
            read = transmitter.read_pending(stream_id, client_id, max_events, utcnow())
        except NotFound:
            return True  # the next pending() reports it
        found[:] = [read]
        if not read.anything:
            delivery.done()
            delivery = None
        return read.anything

    woken = None
    try:
        while True:
            # Taken before the read: a revocation committed after it notifies, one before it
            # is in the read.
            since = notifier.generation()
            sets, more = transmitter.pending(stream_id, client_id, max_events, utcnow(),
                                             touch=touch, found=woken,
                                             company=delivery if woken is not None else None)
            touch = False
            remaining = deadline - time.monotonic()
            if sets or immediately or remaining <= 0 or (stop is not None and stop.is_set()):
                return _answer(sets, more)
            if delivery is not None:  # nothing to answer after all (dropped events only)
                delivery.done()
                delivery = None
            found.clear()
            if woken is not None:
                since = None  # that read was the wait's, made before the mark: look again
            woken = found[0] if notifier.wait(check, remaining, stop, since=since) and found \
                else None
    finally:
        if delivery is not None:
            delivery.done()


def _answer(sets: dict, more: bool) -> dict:
    return {"sets": sets, "moreAvailable": True} if more else {"sets": sets}
