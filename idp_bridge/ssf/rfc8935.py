"""Push-based delivery of SETs (RFC 8935).

A background thread posts pending SETs of push streams to their endpoints; a ``202``
acknowledges a SET. Failures back off per stream (up to a minute) and retry while the event
is still relevant. Every bridge process may run a pusher: delivery is at least once, and
receivers deduplicate by ``jti``.

Endpoints are receivers' input: each one is checked against the transmitter's
:class:`~.egress.PushPolicy` before a round and again, on the resolved address, by the HTTP
session's connections. Redirects are never followed (a 3xx is a failed delivery), a
response's body is never read (its status line and headers are all that counts, bounded by
http.client's limits) and connect and read timeouts are short.
"""

from __future__ import annotations

import logging
import time

import requests
from sqlalchemy import select

from ..background import Loop
from ..storage.db import utcnow
from ..storage.models import SsfStream
from .egress import PushTargetRefused
from .streams import PUSH

log = logging.getLogger(__name__)


class Pusher(Loop):
    name = "ssf-push"

    def __init__(self, transmitter, notifier, *, idle_wait: float = 5.0, policy=None):
        super().__init__()
        self.transmitter = transmitter
        self.notifier = notifier
        self.policy = policy or transmitter.push_policy
        self.idle_wait = idle_wait
        self._backoff: dict[str, tuple[float, float]] = {}  # stream -> (retry at, delay)
        self._http = self.policy.session()

    def step(self) -> float:
        if self.deliver_once() is None:
            return self.idle_wait  # no push streams: check again later
        # Woken at once by a local revocation, else every second.
        self.notifier.wait(self.stopping.is_set, 1.0, self.stopping)
        return 0.0

    def deliver_once(self) -> int | None:
        """Push what is pending on every push stream; returns the number of SETs accepted
        (None when there is no push stream at all)."""
        with self.transmitter.db.read() as session:
            streams = session.scalars(select(SsfStream).where(SsfStream.delivery_method == PUSH)).all()
        # Back-off state of streams that are gone (deleted, idle) goes with them.
        live = {stream.stream_id for stream in streams}
        for stream_id in [s for s in self._backoff if s not in live]:
            del self._backoff[stream_id]
        if not streams:
            return None
        accepted = 0
        now = time.monotonic()
        for stream in streams:
            retry_at, delay = self._backoff.get(stream.stream_id, (0.0, 0.0))
            if now < retry_at:
                continue
            try:
                # Streams stored before a policy change are held to today's policy; the
                # addresses are checked when connecting.
                self.policy.check_url(stream.endpoint_url)
            except PushTargetRefused as exc:
                log.warning("push endpoint of stream %s refused: %s", stream.stream_id, exc)
                self._back_off(stream.stream_id, delay)
                continue
            sets, _ = self.transmitter.pending(stream.stream_id, stream.client_id, 100, utcnow(),
                                               touch=True)
            headers = {"Content-Type": "application/secevent+jwt", "Accept": "application/json"}
            header = self.transmitter.push_header(stream)
            if header:
                headers["Authorization"] = header
            done = []
            for jti, token in sets.items():
                status = self._post(stream.endpoint_url, token, headers)
                if status == 202:
                    done.append(jti)
                elif status == 400:
                    # RFC 8935 2.3: the receiver refused this SET for good; do not resend it.
                    log.warning("push receiver of stream %s refused SET %s", stream.stream_id, jti)
                    done.append(jti)
                else:
                    if status is not None and 300 <= status < 400:
                        log.warning("push receiver of stream %s answered a redirect, which is "
                                    "not followed", stream.stream_id)
                    delay = self._back_off(stream.stream_id, delay)
                    break
            else:
                self._backoff.pop(stream.stream_id, None)
            if done:
                self.transmitter.acknowledge(stream.stream_id, stream.client_id, done, utcnow())
                accepted += len(done)
        return accepted

    def _post(self, url: str, token: str, headers: dict) -> int | None:
        """The status of one POST (None when it failed), without reading the body."""
        try:
            response = self._http.post(url, data=token, headers=headers,
                                       timeout=self.policy.timeout, allow_redirects=False,
                                       stream=True)
        except requests.RequestException:
            return None
        try:
            return response.status_code
        finally:
            response.close()

    def _back_off(self, stream_id: str, delay: float) -> float:
        delay = min(60.0, max(0.5, delay * 2))
        self._backoff[stream_id] = (time.monotonic() + delay, delay)
        return delay
