"""A reverse proxy on loopback that breaks a share of a simulator's answers the way networks do.

The pipeline talks to the proxy as it would to the API (a real socket, a real HTTP exchange); the
proxy forwards each request to the simulator and, for a seeded ``rate`` of them, answers with one
:data:`FAULT_KINDS` fault instead:

- ``status_429``: Too Many Requests with ``Retry-After: 0``, not forwarded;
- ``status_503``: Service Unavailable with an empty body, not forwarded;
- ``html_500``: an HTML error page with status 500 (a load balancer's), not forwarded;
- ``truncated``: the answer cut in half, its ``Content-Length`` saying so (invalid JSON);
- ``closed_mid_body``: the full ``Content-Length`` announced, half the body sent, connection closed;
- ``empty_200``: status 200 with no body;
- ``previous_page``: a page of a listing answered with the body of the previous page of the same
  path (a caching proxy, or an offset that shifted under the reader), for as long as the fault lasts;
- ``dropped_record``: a JSON page with the last record of its first list left out (a record the
  API's paging skipped), the rest of the body (its totals) unchanged.

``previous_page`` only applies to a successful GET of a path the proxy has answered before with
another query string; the other kinds apply to any request.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = ["FAULT_KINDS", "FaultProxy"]

FAULT_KINDS = (
    "status_429",
    "status_503",
    "html_500",
    "truncated",
    "closed_mid_body",
    "empty_200",
    "previous_page",
    "dropped_record",
)

# Headers the proxy writes itself (send_response adds Server and Date).
_SET_HERE = {"content-length", "server", "date"}
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
}


@dataclass
class FaultProxy:
    """Forwards to ``upstream`` (``http://127.0.0.1:port``), faulting ``rate`` of the answers with ``kind``.

    Use as a context manager; :attr:`url` is the base URL to give the pipeline instead of the
    simulator's. :attr:`faults` counts the faults injected.
    """

    upstream: str
    kind: str
    rate: float = 0.2
    seed: int = 0
    faults: int = 0
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _last_page: dict[str, tuple[str, bytes]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; kinds: {', '.join(FAULT_KINDS)}")
        self._rng = random.Random(self.seed)
        parts = urlsplit(self.upstream)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"upstream needs a host and port: {self.upstream!r}")
        self._host, self._port = parts.hostname, parts.port

    @property
    def url(self) -> str:
        assert self._server is not None, "start the proxy first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def draw(self) -> bool:
        """Whether the current answer is faulted."""
        with self._lock:
            return self._rng.random() < self.rate

    def forward(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(self._host, self._port, timeout=60)
        try:
            sent = {k: v for k, v in headers if k.lower() not in _HOP_BY_HOP and k.lower() != "host"}
            sent["Host"] = f"{self._host}:{self._port}"
            connection.request(method, path, body=body or None, headers=sent)
            answer = connection.getresponse()
            data = answer.read()
            kept = [(k, v) for k, v in answer.getheaders() if k.lower() not in _HOP_BY_HOP]
            return answer.status, kept, data
        finally:
            connection.close()

    def previous_page(self, method: str, path: str, status: int) -> bytes | None:
        """The body last answered for another page of ``path``, to answer instead; or None."""
        if method != "GET" or status != 200:
            return None
        route, _, query = path.partition("?")
        with self._lock:
            earlier = self._last_page.get(route)
        if earlier is None or earlier[0] == query:
            return None
        return earlier[1]

    def remember(self, method: str, path: str, status: int, body: bytes) -> None:
        """Keep the body answered for ``path`` (a cache keeps what it served)."""
        if method == "GET" and status == 200:
            route, _, query = path.partition("?")
            with self._lock:
                self._last_page[route] = (query, body)


def _without_last_record(data: bytes) -> bytes | None:
    """``data`` (a JSON object) without the last item of its first non-empty list, or None."""
    try:
        body = json.loads(data)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    for key, value in body.items():
        if isinstance(value, list) and value:
            return json.dumps({**body, key: value[:-1]}).encode("utf-8")
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    owner: FaultProxy

    def _handle(self) -> None:
        proxy = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        fault = proxy.draw()
        kind = proxy.kind
        if fault and kind == "status_429":
            proxy.faults += 1
            return self._answer(
                429, [("Retry-After", "0"), ("Content-Type", "application/json")], b'{"error":"rate"}'
            )
        if fault and kind == "status_503":
            proxy.faults += 1
            return self._answer(503, [], b"")
        if fault and kind == "html_500":
            proxy.faults += 1
            page = b"<html><head><title>500 Internal Server Error</title></head><body>nginx</body></html>"
            return self._answer(500, [("Content-Type", "text/html")], page)
        status, headers, data = proxy.forward(self.command, self.path, list(self.headers.items()), body)
        if fault and kind == "previous_page":
            previous = proxy.previous_page(self.command, self.path, status)
            if previous is not None:
                # Like a stale cache: the previous page again, for as long as the fault lasts.
                proxy.faults += 1
                return self._answer(status, headers, previous)
            fault = False
        proxy.remember(self.command, self.path, status, data)
        if not fault:
            return self._answer(status, headers, data)
        if kind == "dropped_record":
            shorter = _without_last_record(data)
            if shorter is None:
                return self._answer(status, headers, data)
            proxy.faults += 1
            return self._answer(status, headers, shorter)
        proxy.faults += 1
        if kind == "truncated":
            return self._answer(status, headers, data[: len(data) // 2])
        if kind == "empty_200":
            return self._answer(200, [(k, v) for k, v in headers if k.lower() != "content-type"], b"")
        # closed_mid_body: the full length announced, half of it sent, then the connection ends.
        self.send_response(status)
        for key, value in headers:
            if key.lower() not in _SET_HERE:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True

    def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for key, value in headers:
            if key.lower() not in _SET_HERE:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass
