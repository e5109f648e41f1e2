"""The webhook receiver: a plain ASGI application served by uvicorn (``crm-pipelines webhooks``).

``POST /webhooks/<sender>`` takes one delivery of a registered sender (:mod:`.senders`):

- the body is read up to ``max_body`` bytes (default 1 MiB; larger: 413, before or while reading);
- the sender's signature and timestamp are checked (401), then the JSON and its events (400);
- the events are committed to the durable store before the answer (200 with how many were new
  and how many were redeliveries); a store that cannot commit answers 503, so the sender retries.

A refused request is stored nowhere. ``GET /healthz`` answers 200. No framework: the receiver has
two routes and must stream-limit the body itself, which a plain ASGI callable does with the least
overhead (``bench/webhooks.py`` compares it with a bare hello-world on the same server).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread

from crm_pipelines.webhooks.senders import Rejected, Request, parse_json, sender_for
from crm_pipelines.webhooks.store import EventStore

__all__ = ["DEFAULT_MAX_BODY", "PUBLIC_URL", "STORE_PATH", "Receiver", "default_store_path", "serve"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 1024 * 1024
# The URL the senders call, as they sign it (HubSpot signs the full URI): set it behind a proxy.
PUBLIC_URL = "CRM_WEBHOOK_PUBLIC_URL"
STORE_PATH = "CRM_WEBHOOK_STORE"
_ROUTE = re.compile(r"/webhooks/([a-z][a-z0-9_-]{0,63})")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def default_store_path() -> Path:
    return Path(os.environ.get(STORE_PATH, "data/webhooks.sqlite3"))


class Receiver:
    """ASGI application: verify, then store, then answer."""

    def __init__(
        self,
        store: EventStore,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.max_body = max_body
        self.environ = environ if environ is not None else os.environ
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        status, answer = await self._handle(scope, receive)
        if status >= 400:
            log.warning(f"webhook {scope.get('path')}: {status} {answer.get('error')}")
        body = json.dumps(answer).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        path, method = scope["path"], scope["method"]
        if path == "/healthz":
            return 200, {"status": "ok", "events": await anyio.to_thread.run_sync(self.store.count)}
        match = _ROUTE.fullmatch(path)
        if match is None:
            return 404, {"error": "no such route"}
        if method != "POST":
            return 405, {"error": "POST only"}
        sender = sender_for(match.group(1), self.environ)
        if sender is None:
            return 404, {"error": "unknown sender, or its secret is not configured"}
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            return 413, {"error": f"body over {self.max_body} bytes"}
        body = await self._body(receive)
        if body is None:
            return 413, {"error": f"body over {self.max_body} bytes"}
        request = Request(method, self._url(scope, headers), headers, body, self.clock())
        try:
            sender.verify(request)
            events = sender.events(request, parse_json(body))
        except Rejected as refused:
            return refused.status, {"error": refused.reason}
        try:
            stored, duplicates = await anyio.to_thread.run_sync(self.store.add, events)
        except Exception as error:  # the sender retries; nothing was acknowledged
            log.error(f"webhook store failed: {type(error).__name__}: {error}")
            return 503, {"error": "the event store is unavailable, retry"}
        return 200, {"stored": stored, "duplicates": duplicates}

    async def _body(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _url(self, scope: Scope, headers: Mapping[str, str]) -> str:
        """The URL as the sender called it (and signed it)."""
        query = scope.get("query_string", b"").decode("latin-1")
        path = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        public = self.environ.get(PUBLIC_URL, "").rstrip("/")
        base = public or f"{scope.get('scheme', 'http')}://{headers.get('host', 'localhost')}"
        return f"{base}{path}" + (f"?{query}" if query else "")


def serve(*, host: str, port: int, store_path: Path, max_body: int = DEFAULT_MAX_BODY) -> None:
    """Run the receiver until interrupted (uvicorn, one process)."""
    import uvicorn

    receiver = Receiver(EventStore(store_path), max_body=max_body)
    uvicorn.run(receiver, host=host, port=port, log_level="info", access_log=False, lifespan="on")
