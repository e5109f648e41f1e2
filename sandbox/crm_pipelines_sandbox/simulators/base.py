"""The HTTP machinery the simulators share: a threaded HTTP/1.1 server, a router, rate limits, faults.

A simulator subclasses :class:`SimulatorServer`, registers its routes and says how it
authenticates and how its errors look. Each request runs on its server thread with its own
read-only SQLite connection to the store, so the data can be changed between (or during) runs
through :mod:`crm_pipelines_sandbox.simulators.store` without restarting the server.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import math
import random
import re
import sqlite3
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from crm_pipelines_sandbox.simulators.store import open_store

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
JSON_TYPE = "application/json;charset=UTF-8"


@dataclass
class Request:
    """One HTTP request as the handlers see it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]  # names in lower case: HTTP header names are case-insensitive
    body: bytes = b""

    def param(self, name: str) -> str | None:
        """First value of a query parameter, or None."""
        values = self.query.get(name)
        return values[0] if values else None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def bearer_token(self) -> str | None:
        """The token of an ``Authorization: Bearer <token>`` (or Salesforce's ``OAuth <token>``) header."""
        value = self.header("Authorization") or ""
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() in ("bearer", "oauth") and token.strip():
            return token.strip()
        return None

    def form(self) -> dict[str, str]:
        """The body as an ``application/x-www-form-urlencoded`` form (first value per key)."""
        parsed = parse_qs(self.body.decode("utf-8", errors="replace"), keep_blank_values=True)
        return {key: values[0] for key, values in parsed.items()}

    def json(self) -> Any:
        """The body decoded as JSON; raises ``ValueError`` when it is not JSON."""
        return json.loads(self.body.decode("utf-8")) if self.body else None

    def cookies(self) -> dict[str, str]:
        """The ``Cookie`` header's name/value pairs."""
        jar = SimpleCookie()
        with contextlib.suppress(CookieError):
            jar.load(self.header("Cookie") or "")
        return {name: morsel.value for name, morsel in jar.items()}

    def basic_auth(self) -> tuple[str, str] | None:
        """(user, password) of an ``Authorization: Basic`` header, or None."""
        scheme, _, encoded = (self.header("Authorization") or "").strip().partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = (
                base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            return None
        return (user, password) if sep else None


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # Each entry is sent as its own Set-Cookie header (a dict cannot hold the same name twice).
    set_cookies: list[str] = field(default_factory=list)

    @classmethod
    def json(cls, status: int, payload: object, headers: Mapping[str, str] | None = None) -> Response:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return cls(status, body, {"Content-Type": JSON_TYPE, **(headers or {})})

    def payload(self) -> Any:
        """The JSON body decoded (for tests and logs)."""
        return json.loads(self.body) if self.body else None


Handler = Callable[..., Response]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    auth: bool


class Router:
    """Routes by method and a full-match regular expression; named groups become keyword arguments."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, pattern: str, handler: Handler, *, auth: bool = True) -> None:
        self.routes.append(Route(method.upper(), re.compile(pattern), handler, auth))

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | bool | None:
        """The route and its path parameters; False when the path exists for another method only."""
        path_known = False
        for route in self.routes:
            found = route.pattern.fullmatch(path)
            if found is None:
                continue
            if route.method == method:
                return route, found.groupdict()
            path_known = True
        return False if path_known else None


@dataclass(frozen=True)
class RateLimit:
    """At most ``max_requests`` per ``interval_seconds`` and per token (a sliding window)."""

    max_requests: int
    interval_seconds: float

    def __post_init__(self) -> None:
        if self.max_requests < 1 or self.interval_seconds <= 0:
            raise ValueError("a rate limit needs max_requests >= 1 and interval_seconds > 0")


class SlidingWindow:
    """Request times per key within the last interval; thread-safe."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _trim(self, hits: deque[float], now: float) -> None:
        horizon = now - self.limit.interval_seconds
        while hits and hits[0] <= horizon:
            hits.popleft()

    def hit(self, key: str, now: float | None = None) -> tuple[bool, int, float]:
        """Count a request: (allowed, remaining in the window, seconds until one is allowed again)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            self._trim(hits, now)
            if len(hits) >= self.limit.max_requests:
                return False, 0, hits[0] + self.limit.interval_seconds - now
            hits.append(now)
            return True, self.limit.max_requests - len(hits), 0.0

    def remaining(self, key: str, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            self._trim(hits, now)
            return max(0, self.limit.max_requests - len(hits))


# Pseudo statuses for Faults: close the connection without an answer, or answer late.
DROP_CONNECTION = 0
SLOW_RESPONSE = 1


@dataclass
class Faults:
    """Fault injection, off by default.

    ``error_rate`` of the requests (drawn from a seeded generator) get one of ``statuses``;
    ``fail_next(...)`` queues exact statuses for the next requests; ``latency_seconds`` delays
    every request. Besides HTTP statuses, :data:`DROP_CONNECTION` closes the connection without an
    answer and :data:`SLOW_RESPONSE` answers normally after ``slow_seconds`` (past a client's
    timeout, that is a timeout). Connectivity endpoints (token, versions) are affected like any other.
    """

    error_rate: float = 0.0
    statuses: tuple[int, ...] = (429, 503, 500)
    latency_seconds: float = 0.0
    seed: int = 0
    slow_seconds: float = 2.0
    _queue: deque[int] = field(default_factory=deque, repr=False)
    _pass_before_failing: int | None = field(default=None, repr=False)
    _failing_status: int = field(default=503, repr=False)
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def fail_next(self, *statuses: int) -> None:
        """Answer the next requests with these statuses, in order."""
        with self._lock:
            self._queue.extend(statuses)

    def fail_after(self, requests: int, status: int) -> None:
        """Let ``requests`` more requests through, then answer every one with ``status`` (until cleared).

        A run that breaks midway: the first pages arrive, the rest never do.
        """
        with self._lock:
            self._pass_before_failing = requests
            self._failing_status = status

    def draw(self) -> int | None:
        """The status the current request must fail with, or None."""
        with self._lock:
            if self._pass_before_failing is not None:
                if self._pass_before_failing <= 0:
                    return self._failing_status
                self._pass_before_failing -= 1
            if self._queue:
                return self._queue.popleft()
            if self.error_rate > 0 and self.statuses and self._rng.random() < self.error_rate:
                return self.statuses[self._rng.randrange(len(self.statuses))]
        return None

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
            self._pass_before_failing = None
        self.error_rate = 0.0
        self.latency_seconds = 0.0


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    status: int


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    sim: SimulatorServer


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's delayed
    # ACK (~40 ms per request on Linux), which capped a keep-alive client at ~20 requests/s.
    disable_nagle_algorithm = True
    server: _Server

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        request = Request(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={key.lower(): value for key, value in self.headers.items()},
            body=body,
        )
        response = self.server.sim.dispatch(request)
        if response.status == DROP_CONNECTION:
            self.close_connection = True  # the client sees the connection end without an answer
            return
        self.send_response(response.status)
        for key, value in response.headers.items():
            self.send_header(key, value)
        for cookie in response.set_cookies:
            self.send_header("Set-Cookie", cookie)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.sim.close_thread_connection()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class SimulatorServer:
    """Base of the simulators: lifecycle, per-thread store connections, auth, limits and faults."""

    name = "simulator"

    def __init__(
        self,
        store_path: Path,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        rate_limit: RateLimit | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.store_path = Path(store_path)
        if not self.store_path.exists():
            raise FileNotFoundError(f"{self.name} store not found: {self.store_path}")
        self.host = host
        self.port = port
        self.rate_limit = rate_limit
        self.faults = faults or Faults()
        self.request_log: deque[LoggedRequest] = deque(maxlen=10_000)
        # Serve HTTPS with this context when set before start() (clients that only speak https).
        self.tls_context: ssl.SSLContext | None = None
        self.router = Router()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._local = threading.local()
        self._limiter: SlidingWindow | None = None
        self._limiter_for: RateLimit | None = None
        self._lock = threading.Lock()
        self.register_routes(self.router)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> str:
        """Start serving on a daemon thread; returns the base URL (``http://127.0.0.1:PORT``)."""
        if self._server is not None:
            return self.base_url
        server = _Server((self.host, self.port), _RequestHandler)
        if self.tls_context is not None:
            server.socket = self.tls_context.wrap_socket(server.socket, server_side=True)
        server.sim = self
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"{self.name}-http", daemon=True
        )
        self._thread.start()
        log.info("%s simulator on %s serving %s", self.name, self.base_url, self.store_path)
        return self.base_url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{self.name} simulator is not running")
        scheme = "https" if self.tls_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- store access --------------------------------------------------------------------------

    def db(self) -> sqlite3.Connection:
        """This thread's read-only connection to the store."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = open_store(self.store_path, readonly=True)
            self._local.conn = conn
        return conn

    def close_thread_connection(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            conn.close()

    # -- request flow --------------------------------------------------------------------------

    def dispatch(self, request: Request) -> Response:
        key: str | None = None
        try:
            response, key = self._dispatch(request)
        except Exception:
            log.exception("%s simulator failed on %s %s", self.name, request.method, request.path)
            response = self.error_response(500)
        response.headers.update(self.common_headers(request, key))
        self.request_log.append(LoggedRequest(request.method, request.path, response.status))
        return response

    def _dispatch(self, request: Request) -> tuple[Response, str | None]:
        found = self.router.match(request.method, request.path)
        if found is None:
            return self.not_found(request), None
        if found is False:
            return self.method_not_allowed(request), None
        assert not isinstance(found, bool)
        route, params = found
        if self.faults.latency_seconds > 0:
            time.sleep(self.faults.latency_seconds)
        status = self.faults.draw()
        if status == DROP_CONNECTION:
            return Response(DROP_CONNECTION), None
        if status == SLOW_RESPONSE:
            time.sleep(self.faults.slow_seconds)
        elif status is not None:
            return self.error_response(status), None
        key: str | None = None
        if route.auth:
            key, denied = self.authenticate(request)
            if denied is not None:
                return denied, None
            assert key is not None
            limiter = self.limiter()
            if limiter is not None:
                allowed, _, retry_after = limiter.hit(key)
                if not allowed:
                    return self.rate_limited(retry_after), key
            refused = self.count_usage(key)
            if refused is not None:
                return refused, key
        return route.handler(request, **params), key

    def limiter(self) -> SlidingWindow | None:
        """The window of the current ``rate_limit`` (which tests may change while running)."""
        with self._lock:
            if self.rate_limit is None:
                return None
            if self._limiter is None or self._limiter_for != self.rate_limit:
                self._limiter = SlidingWindow(self.rate_limit)
                self._limiter_for = self.rate_limit
            return self._limiter

    def retry_after_header(self, seconds: float) -> str:
        return str(max(1, math.ceil(seconds)))

    # -- what subclasses define ----------------------------------------------------------------

    def register_routes(self, router: Router) -> None:
        raise NotImplementedError

    def authenticate(self, request: Request) -> tuple[str | None, Response | None]:
        """(key the request is counted under, None) or (None, the refusal)."""
        raise NotImplementedError

    def count_usage(self, key: str) -> Response | None:
        """Count an authenticated request against daily quotas; a Response refuses it."""
        return None

    def rate_limited(self, retry_after: float) -> Response:
        raise NotImplementedError

    def error_response(self, status: int) -> Response:
        """The system's body for an injected or internal error with this status."""
        raise NotImplementedError

    def not_found(self, request: Request) -> Response:
        return Response.json(404, {"message": f"no such resource: {request.path}"})

    def method_not_allowed(self, request: Request) -> Response:
        return Response.json(405, {"message": f"method {request.method} not allowed on {request.path}"})

    def common_headers(self, request: Request, key: str | None) -> dict[str, str]:
        """Headers every response carries (rate-limit and usage headers)."""
        return {}
