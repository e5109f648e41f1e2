"""Outbound webhooks of a simulator, delivered the way the vendors deliver theirs.

HubSpot and Zendesk send webhooks asynchronously, after the change is saved, signed with a shared
secret, and retry a delivery the receiver did not acknowledge with a 2xx (HubSpot up to 10 times,
Zendesk a few times on 5xx/timeouts): at least once, never blocking the API call that caused the
change. :class:`WebhookOutbox` does the same for a simulator: ``emit`` queues events and returns;
one thread sends them (HubSpot batches up to 100 events in one JSON array, Zendesk one event per
request), signs each request with the vendor's formula and retries with backoff. A delivery that
still fails is counted in ``failed``: the nightly run reconciles what a lost event would have told.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from crm_pipelines.webhooks.senders import sign_standard

__all__ = ["Signer", "WebhookOutbox", "standard_webhooks_signer"]

LOG = logging.getLogger(__name__)
# Headers for one request: the vendor's signature headers over (url, body).
Signer = Callable[[str, bytes], Mapping[str, str]]


def standard_webhooks_signer(secret: str) -> Signer:
    """Standard Webhooks headers (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``).

    The message id is the body's hash, so a retried delivery keeps its id (the receiver stores it once).
    """

    def sign(url: str, body: bytes) -> dict[str, str]:
        message_id = "msg_" + hashlib.sha256(body).hexdigest()[:32]
        stamp = str(int(time.time()))
        return {
            "webhook-id": message_id,
            "webhook-timestamp": stamp,
            "webhook-signature": sign_standard(secret, message_id, stamp, body),
        }

    return sign


class WebhookOutbox:
    """Queue events and deliver them from a background thread, signed, retried, at least once.

    Args:
        url: The receiver's URL (for the sandbox: ``<receiver>/webhooks/<sender>``).
        sign: The vendor's signature headers for (url, body).
        batch_max: Events per request: HubSpot sends up to 100 as a JSON array; 1 sends each event as
            its own JSON object (Zendesk).
        attempts: Tries per delivery before it counts as failed.
        backoff_seconds: First wait between tries (doubling).
        linger_seconds: How long the sender waits for more events to fill a batch.
    """

    def __init__(
        self,
        url: str,
        sign: Signer,
        *,
        batch_max: int = 100,
        attempts: int = 5,
        backoff_seconds: float = 0.2,
        linger_seconds: float = 0.05,
    ) -> None:
        self.url = url
        self._sign = sign
        self._batch_max = batch_max
        self._attempts = attempts
        self._backoff = backoff_seconds
        self._linger = linger_seconds
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._idle = threading.Condition()
        self._in_flight = 0
        self.delivered = 0  # events acknowledged with a 2xx
        self.failed = 0  # events given up on after every attempt
        self.paused = False  # tests: hold deliveries (as a receiver outage would) without losing them
        self._client = httpx.Client(timeout=10)
        self._thread = threading.Thread(target=self._run, name="webhook-outbox", daemon=True)
        self._thread.start()

    def emit(self, events: Sequence[dict[str, Any]]) -> None:
        """Queue events for delivery; returns at once."""
        with self._idle:
            self._in_flight += len(events)
        for event in events:
            self._queue.put(event)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event was delivered or given up on; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
        self._client.close()

    # -- the sending thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self._linger
            while len(batch) < self._batch_max:
                try:
                    more = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                batch.append(more)
            ok = self._deliver(batch)
            with self._idle:
                if ok:
                    self.delivered += len(batch)
                else:
                    self.failed += len(batch)
                self._in_flight -= len(batch)
                self._idle.notify_all()

    def _deliver(self, batch: list[dict[str, Any]]) -> bool:
        while self.paused:
            time.sleep(0.05)
        wait = self._backoff
        for attempt in range(1, self._attempts + 1):
            events = [{**e, "attemptNumber": attempt - 1} if "attemptNumber" in e else e for e in batch]
            body = json.dumps(events if self._batch_max > 1 else events[0]).encode()
            try:
                answer = self._client.post(
                    self.url,
                    content=body,
                    headers={"Content-Type": "application/json", **self._sign(self.url, body)},
                )
                if answer.status_code < 300:
                    return True
                if 400 <= answer.status_code < 500 and answer.status_code not in (408, 429):
                    # The receiver refused the request itself (a signature it does not accept): vendors
                    # do not retry those either.
                    LOG.warning("webhook refused with %s: %s", answer.status_code, answer.text[:200])
                    return False
            except httpx.TransportError as exc:
                LOG.info("webhook delivery attempt %s failed: %s", attempt, exc)
            time.sleep(wait)
            wait *= 2
        return False
