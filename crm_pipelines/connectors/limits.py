"""Talking to an API politely and failing clearly: pacing, retries, the URL policy and error messages.

* :class:`TokenBucket` paces requests; :func:`shared_bucket` hands every caller of the same account
  (base URL + credential) the same bucket, so parallel steps share one budget. Steps in other
  processes (Dagster runs each in its own) share the account's :class:`AccountWindow`, a SQLite
  file in ``settings.rate_limit_dir()`` (``CRM_PIPELINES_RATE_LIMIT_DIR``); workers on several
  hosts share it on a server (``CRM_PIPELINES_RATE_LIMIT_URL``, :mod:`.rate_windows`).
* :func:`send_request` retries 429/500/502/503/504, timeouts and connection errors with exponential
  backoff and full jitter (tenacity), honouring ``Retry-After`` (seconds or an HTTP date); a window
  the API reports used up (``rate_limit.remaining_header``) holds the account until it frees.
* :func:`raise_for_status` turns any other 4xx/5xx into an :class:`ApiRequestError`
  (:class:`AuthenticationError` for a 401 or a refused token request) naming the system, the object
  and what to fix, with the message and code :mod:`.error_bodies` finds in the answer.
* :func:`check_url_allowed` refuses plain http except to loopback hosts (the local simulators).

Secrets never reach an error message: every message goes through :func:`redact`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import hashlib
import importlib
import importlib.util
import ipaddress
import logging
import random
import re
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import httpx
from pydantic import Field
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from crm_pipelines.connectors.error_bodies import describe_error_body
from crm_pipelines.connectors.spec_base import SpecModel
from crm_pipelines.settings import RATE_LIMIT_URL, rate_limit_dir, rate_limit_url

__all__ = [
    "RETRY_STATUSES",
    "AccountWindow",
    "ApiRequestError",
    "AuthenticationError",
    "ConnectionFailedError",
    "ConnectorError",
    "ErrorContext",
    "InsecureURLError",
    "RateLimitSpec",
    "RetrySpec",
    "TokenBucket",
    "api_error",
    "check_url_allowed",
    "clear_buckets",
    "credential_fingerprint",
    "is_loopback_host",
    "parse_retry_after",
    "raise_for_status",
    "redact",
    "send_request",
    "shared_bucket",
    "suggest_fix",
]

log = logging.getLogger(__name__)

RETRY_STATUSES: frozenset[int] = frozenset({429, 500, 502, 503, 504})
_MASK = "***"


# --- declarations: rate_limit and retries ---------------------------------------------------------


class RateLimitSpec(SpecModel):
    """Client-side pacing and the headers the API uses to talk about its limits."""

    requests: int = Field(gt=0, description="Requests allowed per interval (token bucket capacity).")
    interval_seconds: float = Field(gt=0)
    retry_after_header: str = "Retry-After"
    remaining_header: str | None = Field(
        default=None, description="Header with the requests left in the current interval."
    )
    interval_ms_header: str | None = Field(
        default=None, description="Header with the server's window length in milliseconds."
    )
    reset_header: str | None = Field(
        default=None,
        description="Header with the seconds until the server's window resets (held when 0 left).",
    )
    usage_header: str | None = Field(default=None, description="Header reporting usage, logged only.")


class RetrySpec(SpecModel):
    max_attempts: int = Field(default=6, ge=1)
    backoff_initial_seconds: float = Field(default=0.5, gt=0)
    backoff_max_seconds: float = Field(default=30.0, gt=0)
    retry_after_max_seconds: float = Field(
        default=300.0, gt=0, description="Longest Retry-After we honour before giving up on that attempt."
    )
    timeout_seconds: float = Field(default=30.0, gt=0)


# --- errors ----------------------------------------------------------------------------------------


class ConnectorError(Exception):
    """Base of every connector failure; ``str()`` says what happened and what to fix."""

    def __init__(self, message: str, *, fix: str = "", status: int | None = None, code: str | None = None):
        self.detail = message
        self.fix = fix
        self.status = status
        self.code = code
        super().__init__(f"{message} Fix: {fix}" if fix else message)


class ApiRequestError(ConnectorError):
    """The API answered with an error status that retrying will not cure (or retries ran out)."""


class AuthenticationError(ApiRequestError):
    """The credential was rejected (token endpoint refused it, or 401 after one refresh)."""


class ConnectionFailedError(ConnectorError):
    """The API could not be reached (DNS, refused connection, TLS, timeouts) after retries."""


class InsecureURLError(ConnectorError):
    """A plain-http URL to a non-loopback host: credentials would travel unencrypted."""


@dataclass(frozen=True)
class ErrorContext:
    """What an error message needs to name: the system, the object and where settings live."""

    system_name: str
    system_title: str
    object_name: str | None = None
    base_url_variable: str = ""
    credential_variables: tuple[str, ...] = ()
    # Raw secret values to scrub from any message; never shown in repr.
    secrets: tuple[str, ...] = field(default=(), repr=False)
    # Where this system's error bodies put the message and the code (its YAML's error_body).
    message_paths: tuple[str, ...] = ()
    code_paths: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        return f"{self.system_title} {self.object_name}" if self.object_name else self.system_title

    @property
    def yaml_path(self) -> str:
        return f"crm_pipelines/connectors/systems/{self.system_name}.yaml"

    def for_object(self, object_name: str | None) -> ErrorContext:
        return dataclasses.replace(self, object_name=object_name)


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each secret in ``text`` by ``***``.

    Args:
        text: Any text that may end up in a log or an exception.
        secrets: Raw secret values (empty and very short values are ignored: masking them would
            shred ordinary words without protecting anything).

    Returns:
        The text with secrets masked.
    """
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, _MASK)
    return text


def credential_fingerprint(*, parts: Iterable[str | None]) -> str:
    """A short one-way digest identifying an account without revealing its credential.

    Args:
        parts: Credential pieces (client id, secret or token); ``None`` counts as empty.

    Returns:
        16 hex characters.
    """
    digest = hashlib.sha256("\0".join(p or "" for p in parts).encode("utf-8"))
    return digest.hexdigest()[:16]


# --- URL policy ------------------------------------------------------------------------------------


def is_loopback_host(host: str) -> bool:
    if host.lower() in {"localhost", "localhost.localdomain"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url_allowed(*, url: httpx.URL | str, context: ErrorContext) -> None:
    """Refuse URLs a credential must not travel to.

    Args:
        url: The URL about to be requested.
        context: Names the system in the error.

    Raises:
        InsecureURLError: For anything but https, except plain http to a loopback host
            (127.0.0.0/8, ::1, localhost) so the local simulators work.
    """
    parsed = httpx.URL(str(url))
    if parsed.scheme == "https":
        return
    if parsed.scheme == "http" and is_loopback_host(parsed.host):
        return
    shown = f"{parsed.scheme}://{parsed.host}"
    raise InsecureURLError(
        f"{context.where}: refusing {shown}: only https is allowed (plain http only to localhost).",
        fix=f"set {context.base_url_variable or 'the base URL'} to an https:// URL.",
    )


# --- pacing ----------------------------------------------------------------------------------------


class SharedWindow(Protocol):
    """An account's window of sends and its pause, shared with other processes (and hosts)."""

    def try_send(self) -> float: ...

    def hold(self, seconds: float, *, until_window_frees: bool = False) -> None: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


def open_window(
    *, account: str, capacity: int, interval_seconds: float, margin_seconds: float
) -> SharedWindow:
    """The account's shared window: on the server ``CRM_PIPELINES_RATE_LIMIT_URL`` names (its scheme
    picks the module of :mod:`crm_pipelines.connectors.rate_windows`), else a SQLite file on this host."""
    url = rate_limit_url()
    if url is None:
        return AccountWindow(
            rate_limit_dir() / f"{account}.sqlite",
            capacity=capacity,
            interval_seconds=interval_seconds,
            margin_seconds=margin_seconds,
        )
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    if (
        not re.fullmatch(r"[a-z][a-z0-9_]*", scheme)
        or importlib.util.find_spec(f"crm_pipelines.connectors.rate_windows.{scheme}") is None
    ):
        raise ValueError(f"{RATE_LIMIT_URL}: no rate-limit window for {scheme!r} URLs (postgresql:// is one)")
    module = importlib.import_module(f"crm_pipelines.connectors.rate_windows.{scheme}")
    window: SharedWindow = module.Window(
        url,
        account=account,
        capacity=capacity,
        interval_seconds=interval_seconds,
        margin_seconds=margin_seconds,
    )
    return window


class AccountWindow:
    """An account's sliding window of sends and its pause, in SQLite, shared by every process on the host.

    Dagster runs each step in its own process; the three extract assets of one CRM account running
    side by side must still share the account's one budget. Each send is logged with its wall-clock
    time; a send is allowed when fewer than ``capacity`` lie within the last interval (plus a margin),
    and a pause (``Retry-After``, a used-up window) holds every process. The state is ephemeral (no
    fsync): losing it costs at most one window's pacing.

    Args:
        path: The SQLite file (created with its folder).
        capacity: Sends allowed per interval.
        interval_seconds: Length of the interval.
        margin_seconds: Extra time a send stays in the window (the server stamps arrivals later).
        clock: Wall clock (seconds since the epoch), injectable for tests.
    """

    def __init__(
        self,
        path: Path,
        *,
        capacity: int,
        interval_seconds: float,
        margin_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.capacity = capacity
        self.interval = interval_seconds
        self.margin = margin_seconds
        self._clock = clock
        self._conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = OFF")
        self._conn.execute("CREATE TABLE IF NOT EXISTS sent (at REAL NOT NULL)")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS pause (id INTEGER PRIMARY KEY CHECK (id = 1), until REAL)"
        )
        self._conn.execute("INSERT OR IGNORE INTO pause VALUES (1, 0)")
        self._lock = threading.Lock()

    def try_send(self) -> float:
        """Log a send now if the window allows it; else the seconds until it would."""
        with self._lock:
            now = self._clock()
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                (paused,) = self._conn.execute("SELECT until FROM pause WHERE id = 1").fetchone()
                if now < paused:
                    return float(paused - now)
                horizon = now - self.interval - self.margin
                self._conn.execute("DELETE FROM sent WHERE at <= ?", (horizon,))
                count, oldest = self._conn.execute("SELECT count(*), min(at) FROM sent").fetchone()
                if count >= self.capacity:
                    return float(oldest) + self.interval + self.margin - now
                self._conn.execute("INSERT INTO sent VALUES (?)", (now,))
                return 0.0
            finally:
                self._conn.execute("COMMIT")

    def hold(self, seconds: float, *, until_window_frees: bool = False) -> None:
        """Hold every process for ``seconds``; with ``until_window_frees``, until the oldest logged send
        leaves the window when the window is full of them (our own sends used it up)."""
        with self._lock:
            now = self._clock()
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                until = now + seconds
                if until_window_frees:
                    count, oldest = self._conn.execute("SELECT count(*), min(at) FROM sent").fetchone()
                    if count >= self.capacity:
                        until = max(float(oldest) + self.interval + self.margin, now + self.margin)
                self._conn.execute("UPDATE pause SET until = max(until, ?) WHERE id = 1", (until,))
            finally:
                self._conn.execute("COMMIT")

    def reset(self) -> None:
        """Forget the logged sends and the pause (a benchmark or test changing the declared limit)."""
        with self._lock:
            self._conn.execute("DELETE FROM sent")
            self._conn.execute("UPDATE pause SET until = 0 WHERE id = 1")

    def close(self) -> None:
        self._conn.close()


class TokenBucket:
    """Thread-safe token bucket: ``capacity`` requests per ``interval_seconds``, refilled smoothly.

    Tokens refill continuously, and in addition no more than ``capacity`` requests go out within
    any one interval: APIs count their limit in a sliding window (HubSpot's "100 per 10 seconds
    rolling"), and a plain bucket would allow a full burst plus the refill inside one window, which
    the server answers with 429s and the client with long pauses. With a ``window``
    (:class:`AccountWindow`) the interval's count and the pauses are shared with every other process
    calling the same account.

    Args:
        capacity: Requests allowed per interval (also the burst size).
        interval_seconds: Length of the interval.
        clock: Monotonic clock, injectable for tests.
        sleep: Sleep function, injectable for tests.
        window: The account's cross-process window, if any.
    """

    def __init__(
        self,
        *,
        capacity: int,
        interval_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        window: SharedWindow | None = None,
    ) -> None:
        if capacity <= 0 or interval_seconds <= 0:
            raise ValueError("capacity and interval_seconds must be positive")
        self.capacity = float(capacity)
        self.rate = capacity / interval_seconds
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(capacity)
        self._updated = clock()
        self._paused_until = 0.0
        self.interval = interval_seconds
        self._sent: deque[float] = deque(maxlen=capacity)
        self.window = window
        # The server stamps a request when it arrives, a little after we send it: keep a margin so
        # the oldest request has surely left the server's window before the next one goes out.
        self._margin = self.margin_for(interval_seconds)

    @staticmethod
    def margin_for(interval_seconds: float) -> float:
        return min(0.25, max(0.02, 0.01 * interval_seconds))

    def _refill(self, now: float) -> None:
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def acquire(self) -> float:
        """Take one token, sleeping (outside the lock) until one is available.

        Returns:
            Seconds spent waiting.
        """
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                self._refill(now)
                window_free_at = (
                    self._sent[0] + self.interval + self._margin
                    if len(self._sent) == self._sent.maxlen
                    else 0.0
                )
                if now < self._paused_until:
                    wait = self._paused_until - now
                elif now < window_free_at:
                    wait = window_free_at - now
                elif self._tokens >= 1:
                    # Other processes calling the account count too (their sends are in the window).
                    wait = self.window.try_send() if self.window is not None else 0.0
                    if wait <= 0:
                        self._tokens -= 1
                        self._sent.append(now)
                        return waited
                else:
                    wait = (1 - self._tokens) / self.rate
            self._sleep(wait)
            waited += wait

    def hold_for_window(self, interval_seconds: float) -> None:
        """The server says its window is used up: wait until a slot frees.

        When our own requests filled it, that is when our oldest one leaves the window (the server
        stamps arrivals a little later than we stamp sends, hence at least one margin from now);
        otherwise someone else shares the account and we wait the server's whole window.
        """
        with self._lock:
            now = self._clock()
            if len(self._sent) == self._sent.maxlen:
                until = max(self._sent[0] + self.interval + self._margin, now + self._margin)
            else:
                until = now + interval_seconds
            self._paused_until = max(self._paused_until, until)
        if self.window is not None:
            self.window.hold(interval_seconds, until_window_frees=True)

    def pause(self, seconds: float) -> None:
        """Hold every caller for ``seconds`` (the server said so, e.g. with ``Retry-After``)."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            self._paused_until = max(self._paused_until, now + seconds)
            self._tokens = 0.0
        if self.window is not None:
            self.window.hold(seconds)


_BUCKETS: dict[tuple[str, str], TokenBucket] = {}
_BUCKETS_LOCK = threading.Lock()


def clear_buckets() -> None:
    """Forget every account's bucket and its shared window (tests and benchmarks that change the
    declared limit)."""
    with _BUCKETS_LOCK:
        for bucket in _BUCKETS.values():
            if bucket.window is not None:
                bucket.window.reset()
                bucket.window.close()
        _BUCKETS.clear()


def shared_bucket(*, base_url: str, fingerprint: str, rate_limit: RateLimitSpec) -> TokenBucket:
    """The one bucket of an account: same base URL and credential means same budget.

    Within a process the callers share the bucket; across processes (Dagster's multiprocess
    executor runs each step in its own) they share the account's window (:func:`open_window`): a
    small SQLite file in :func:`rate_limit_dir` named by a digest of the account, or, with
    ``CRM_PIPELINES_RATE_LIMIT_URL``, rows on a server every host reaches.

    Args:
        base_url: The API base URL.
        fingerprint: :func:`credential_fingerprint` of the credential.
        rate_limit: The system's declared limits (used when the bucket is first created).

    Returns:
        The shared bucket.
    """
    key = (base_url.rstrip("/").lower(), fingerprint)
    with _BUCKETS_LOCK:
        bucket = _BUCKETS.get(key)
        if bucket is None:
            name = hashlib.sha256("\0".join(key).encode("utf-8")).hexdigest()[:24]
            window = open_window(
                account=name,
                capacity=rate_limit.requests,
                interval_seconds=rate_limit.interval_seconds,
                margin_seconds=TokenBucket.margin_for(rate_limit.interval_seconds),
            )
            bucket = TokenBucket(
                capacity=rate_limit.requests, interval_seconds=rate_limit.interval_seconds, window=window
            )
            _BUCKETS[key] = bucket
        return bucket


def parse_retry_after(*, value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date (RFC 9110).

    Args:
        value: The header value, or ``None``.
        now: Current time for HTTP dates (default: now, UTC).

    Returns:
        Non-negative seconds, or ``None`` when absent or unparseable.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


# --- fixes ------------------------------------------------------------------------------------------


def suggest_fix(*, status: int, code: str | None, context: ErrorContext, token_request: bool = False) -> str:
    """What the operator should change for an error status/code.

    Args:
        status: HTTP status.
        code: The API's error code or category, if any.
        context: Names variables and the system YAML.
        token_request: Whether the failing request was the OAuth token request.

    Returns:
        One sentence.
    """
    creds = " and ".join(context.credential_variables) or "the credentials"
    code_upper = (code or "").upper()
    if token_request and status in (400, 401, 403):
        return (
            f"check {creds}; the app must allow the OAuth client credentials flow "
            "(in Salesforce: a connected/external client app with a run-as user)."
        )
    if status == 401:
        return f"the credential was rejected: check {creds} (expired, revoked or for another account)."
    if status == 403:
        if code_upper == "REQUEST_LIMIT_EXCEEDED":
            return "the account's API request limit is used up: wait for it to reset or raise the limit."
        return f"grant the integration user/app read access (permissions or scopes) to {context.where}."
    if status == 404:
        return (
            f"check {context.base_url_variable or 'the base URL'} and the request path / API version of "
            f"{context.where} in {context.yaml_path}."
        )
    if status == 400 or code_upper in {"INVALID_FIELD", "MALFORMED_QUERY", "VALIDATION_ERROR"}:
        return (
            f"check the declared fields and request of {context.where} in {context.yaml_path} against "
            "the API (a field may be misspelled, removed, or hidden by field-level security)."
        )
    if status == 429:
        return "the API kept rate-limiting: lower the parallelism or the rate_limit in the system YAML."
    if status >= 500:
        return f"{context.system_title} kept failing on its side; retry later or check its status page."
    return f"check the request of {context.where} in {context.yaml_path}."


def api_error(
    *,
    response: httpx.Response,
    context: ErrorContext,
    token_request: bool = False,
    attempts: int = 1,
    fix: str | None = None,
) -> ApiRequestError:
    """Build the error for an unsuccessful response (secrets redacted).

    Args:
        response: The error response.
        context: Names the system and object.
        token_request: Whether this was the OAuth token request.
        attempts: How many attempts were made (mentioned when retries ran out).
        fix: Overrides the suggested fix.

    Returns:
        :class:`AuthenticationError` for 401 and refused token requests, else :class:`ApiRequestError`.
    """
    status = response.status_code
    message, code = describe_error_body(
        response=response, message_paths=context.message_paths, code_paths=context.code_paths
    )
    fix = fix or suggest_fix(status=status, code=code, context=context, token_request=token_request)
    what = "token request" if token_request else f"{response.request.method} {response.request.url.path}"
    tried = f" after {attempts} attempts" if attempts > 1 else ""
    code_part = f" {code}" if code else ""
    text = f"{context.where}: {what} failed{tried}: HTTP {status}{code_part}: {message}."
    cls = (
        AuthenticationError
        if status == 401 or (token_request and status in (400, 401, 403))
        else ApiRequestError
    )
    return cls(redact(text, context.secrets), fix=redact(fix, context.secrets), status=status, code=code)


def raise_for_status(*, response: httpx.Response, context: ErrorContext, token_request: bool = False) -> None:
    """Raise :func:`api_error` for any non-2xx response.

    Args:
        response: The response.
        context: Names the system and object.
        token_request: Whether this was the OAuth token request.
    """
    if not response.is_success:
        response.read()
        raise api_error(response=response, context=context, token_request=token_request)


# --- sending with retries --------------------------------------------------------------------------


class _Retryable(Exception):
    def __init__(
        self, reason: str, *, response: httpx.Response | None = None, retry_after: float | None = None
    ):
        super().__init__(reason)
        self.response = response
        self.retry_after = retry_after


def _make_wait(retry: RetrySpec) -> Callable[[RetryCallState], float]:
    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            # The server named the wait; a little jitter keeps parallel callers from re-colliding.
            return exc.retry_after + random.uniform(0, 0.1)
        # Full jitter (AWS architecture blog): uniform(0, min(cap, base * 2**n)).
        ceiling = min(
            retry.backoff_max_seconds, retry.backoff_initial_seconds * 2 ** (state.attempt_number - 1)
        )
        return random.uniform(0, ceiling)

    return wait


def _make_stop(retry: RetrySpec) -> Callable[[RetryCallState], bool]:
    attempts = stop_after_attempt(retry.max_attempts)

    def stop(state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        # A Retry-After beyond our patience fails now with a message instead of hanging the run.
        if isinstance(exc, _Retryable) and (exc.retry_after or 0) > retry.retry_after_max_seconds:
            return True
        return bool(attempts(state))

    return stop


def _observe_limits(*, response: httpx.Response, bucket: TokenBucket, rate_limit: RateLimitSpec) -> None:
    if rate_limit.usage_header and rate_limit.usage_header in response.headers:
        log.debug("%s: %s", rate_limit.usage_header, response.headers[rate_limit.usage_header])
    if rate_limit.remaining_header and rate_limit.remaining_header in response.headers:
        try:
            remaining = int(float(response.headers[rate_limit.remaining_header]))
        except ValueError:
            return
        if remaining <= 0:
            # The window is used up: wait for a slot rather than collect a 429. The server's own
            # window length (or the seconds until it resets) wins over the declared one.
            interval = rate_limit.interval_seconds
            if rate_limit.interval_ms_header:
                with contextlib.suppress(KeyError, ValueError):
                    interval = int(response.headers[rate_limit.interval_ms_header]) / 1000
            if rate_limit.reset_header:
                with contextlib.suppress(KeyError, ValueError):
                    interval = max(0.0, float(response.headers[rate_limit.reset_header]))
            bucket.hold_for_window(interval)


def send_request(
    *,
    client: httpx.Client,
    build: Callable[[], httpx.Request],
    context: ErrorContext,
    bucket: TokenBucket,
    retry: RetrySpec,
    rate_limit: RateLimitSpec,
    token_request: bool = False,
) -> httpx.Response:
    """Send a request, pacing it through ``bucket`` and retrying transient failures.

    Args:
        client: The HTTP client (TLS verification is httpx's default: on).
        build: Makes the request; called again for every attempt so a refreshed token is used.
        context: Names the system and object in errors.
        bucket: The account's shared token bucket.
        retry: Attempts, backoff and timeout settings.
        rate_limit: Header names the API uses for its limits.
        token_request: Whether this is the OAuth token request (changes the fix in errors).

    Returns:
        The response: 2xx, or a non-retryable error status for the caller to handle
        (see :func:`raise_for_status`).

    Raises:
        ApiRequestError: A retryable status persisted through every attempt.
        ConnectionFailedError: The host stayed unreachable through every attempt.
        InsecureURLError: The URL is plain http to a non-loopback host.
    """
    retrying = Retrying(
        stop=_make_stop(retry),
        wait=_make_wait(retry),
        retry=retry_if_exception_type(_Retryable),
        reraise=True,
        before_sleep=lambda state: log.warning(
            "%s: attempt %d failed (%s); retrying in %.1f s",
            context.where,
            state.attempt_number,
            redact(str(state.outcome.exception()) if state.outcome else "?", context.secrets),
            state.next_action.sleep if state.next_action else 0.0,
        ),
    )
    attempts = 0
    try:
        for attempt in retrying:
            with attempt:
                attempts = attempt.retry_state.attempt_number
                request = build()
                check_url_allowed(url=request.url, context=context)
                bucket.acquire()
                try:
                    response = client.send(request)
                except httpx.TransportError as exc:  # timeouts, refused connections, TLS, protocol
                    raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
                if response.status_code in RETRY_STATUSES:
                    response.read()
                    retry_after = parse_retry_after(value=response.headers.get(rate_limit.retry_after_header))
                    if (
                        response.status_code == 429
                        and retry_after is not None
                        and retry_after <= retry.retry_after_max_seconds
                    ):
                        # Hold every caller of this account, not just this one (a longer wait
                        # than we accept ends the run instead, see _make_stop).
                        bucket.pause(retry_after)
                    raise _Retryable(
                        f"HTTP {response.status_code}", response=response, retry_after=retry_after
                    )
                _observe_limits(response=response, bucket=bucket, rate_limit=rate_limit)
                return response
    except _Retryable as exc:
        if exc.response is not None:
            fix = None
            if exc.retry_after is not None and exc.retry_after > retry.retry_after_max_seconds:
                fix = (
                    f"the API asked to wait {exc.retry_after:.0f} s (more than retries.retry_after_max_seconds"
                    f" = {retry.retry_after_max_seconds:.0f}); run again later."
                )
            raise api_error(
                response=exc.response,
                context=context,
                token_request=token_request,
                attempts=attempts,
                fix=fix,
            ) from None
        cause = redact(str(exc), context.secrets)
        raise ConnectionFailedError(
            f"{context.where}: cannot reach the API after {attempts} attempts ({cause}).",
            fix=(
                f"check {context.base_url_variable or 'the base URL'}, DNS, proxy and firewall, and that "
                "the server's TLS certificate is valid for that host."
            ),
        ) from None
    raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover
