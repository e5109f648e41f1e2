"""Zendesk Support API v2 simulator: API-token auth, incremental exports, cursor lists, writes, webhooks.

It serves a record store (:mod:`.records`) the way Zendesk's REST API does, from the public docs
(https://developer.zendesk.com/api-reference/ticketing/introduction/):

* Auth: HTTP Basic with ``<agent email>/token`` and the API token as password; anything else answers
  401 ``{"error": "Couldn't authenticate you"}``. API tokens never expire.
  https://developer.zendesk.com/api-reference/introduction/security-and-auth/
* Incremental exports (``start_time`` in Unix seconds, required unless ``cursor`` is given; items
  changed in the last ``export_lag_seconds`` are held back, a minute on Zendesk):
  cursor-based ``/api/v2/incremental/{tickets|users}/cursor.json`` (``per_page`` up to 1000, answers
  ``after_cursor``, ``after_url``, ``end_of_stream``; deleted tickets come with status ``deleted``
  unless ``exclude_deleted=true``; deleted users with ``active: false``); time-based
  ``/api/v2/incremental/organizations.json`` (deleted organizations with ``deleted_at``) and
  ``/api/v2/incremental/ticket_events.json`` (``include=comment_events`` puts each comment among the
  event's ``child_events``), both up to 1000 items a page with ``next_page``, ``end_time``, ``count``
  and ``end_of_stream``. A page holds every item of its last second, so ``next_page`` starts one
  second later and nothing repeats. The exports allow 10 requests a minute (``export_rate_limit``).
  https://developer.zendesk.com/api-reference/ticketing/ticket-management/incremental_exports/
* Lists with cursor pagination: ``page[size]`` (at most 100, else 400), ``page[after]``; the answer
  has ``meta.has_more``, ``meta.after_cursor`` and ``links.next``: tickets (``external_id=`` filters),
  organizations, users, ticket metrics (``solved_at``), a ticket's comments.
  https://developer.zendesk.com/api-reference/introduction/pagination/
* Writes: ``POST /api/v2/tickets`` and ``PUT /api/v2/tickets/{id}`` with ``{"ticket": {...}}``:
  ``comment: {body, public}`` (the first one is the description), ``requester: {name, email}`` (the
  end user is found by e-mail or created), ``organization_id`` (must exist; a requester without an
  organization joins it), ``status`` new/open/pending/hold/solved/closed, ``priority``
  low/normal/high/urgent, ``type`` question/incident/problem/task, ``external_id``. A closed ticket
  cannot be updated. Organizations and users: POST/PUT with ``{"organization"|"user": {...}}`` and
  ``GET /api/v2/{organizations|users}/search?external_id=``. Refusals are 422 ``{"error":
  "RecordInvalid", "description": "Record validation errors", "details": {field: [{description,
  error}]}}``; an unknown id 404 ``{"error": "RecordNotFound", "description": "Not found"}``.
* Limits: every answer carries ``X-Rate-Limit`` and ``X-Rate-Limit-Remaining`` (700 a minute by
  default, enforced when ``rate_limit`` is given); a 429 carries ``Retry-After``.
  https://developer.zendesk.com/api-reference/introduction/rate-limits/
* Webhooks: with a URL and a signing secret, each ticket created, status changed and comment added
  through the API is posted as a Zendesk event (``zen:event-type:ticket.created``,
  ``...ticket.status_changed``, ``...ticket.comment_added``) signed with
  ``X-Zendesk-Webhook-Signature`` = base64(HMAC-SHA256(secret, timestamp + body)) and
  ``X-Zendesk-Webhook-Signature-Timestamp``, from a background thread, retried on 5xx and connection
  errors (:class:`WebhookSender`).
  https://developer.zendesk.com/documentation/webhooks/verifying/
  https://developer.zendesk.com/api-reference/webhooks/event-types/ticket-events/

The store keeps each ticket's solved time (``solved_at``, served as the ticket metric) and every
comment added through the API; seeded tickets have their description but no comment rows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import json
import logging
import os
import queue
import secrets
import sqlite3
import threading
import time
import urllib.error
import urllib.request
import uuid
import weakref
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlencode

from crm_pipelines_sandbox.simulators.base import (
    Faults,
    RateLimit,
    Request,
    Response,
    Router,
    SimulatorServer,
    SlidingWindow,
)
from crm_pipelines_sandbox.simulators.records import (
    FieldDef,
    ObjectDef,
    Stamped,
    StoreInfo,
    canonical,
    insert_rows,
    open_store,
    quote,
    store_info,
    update_rows,
)
from crm_pipelines_sandbox.systems import Kind, SandboxCrm, Started, UpdateCase, WriteCase

log = logging.getLogger(__name__)

STATUSES = ("new", "open", "pending", "hold", "solved", "closed")
PRIORITIES = ("low", "normal", "high", "urgent")
TYPES = ("question", "incident", "problem", "task")
# Canonical case status (systems.CASE_STATUSES) -> Zendesk's.
CASE_STATUS = MappingProxyType(
    {
        "new": "new",
        "open": "open",
        "pending": "pending",
        "on_hold": "hold",
        "solved": "solved",
        "closed": "closed",
    }
)
# A seed's origin -> the ticket's via.channel.
CHANNELS = MappingProxyType({"email": "email", "web": "web", "phone": "voice", "chat": "chat", "api": "api"})
DEFAULT_RATE = RateLimit(700, 60.0)  # Enterprise: 700 requests a minute per account
EXPORT_RATE = RateLimit(10, 60.0)  # the incremental exports: 10 a minute
MAX_PAGE_SIZE = 100
MAX_EXPORT_PAGE = 1000
AGENT_ID = 1_000_001  # the API token's agent: submitter of tickets created through the API
ACCOUNT_ID = 12_345_678

OBJECTS: tuple[ObjectDef, ...] = (
    ObjectDef(
        "organizations",
        "id",
        (
            FieldDef("id", "integer"),
            FieldDef("name", required=True),
            FieldDef("external_id"),
            FieldDef("domain_names", "json"),
            FieldDef("details"),
            FieldDef("notes"),
            FieldDef("group_id", "integer"),
            FieldDef("shared_tickets", "boolean"),
            FieldDef("shared_comments", "boolean"),
            FieldDef("tags", "json"),
            FieldDef("organization_fields", "json"),
            FieldDef("created_at", "datetime"),
            FieldDef("updated_at", "datetime"),
        ),
        created_field="created_at",
        modified_field="updated_at",
    ),
    ObjectDef(
        "users",
        "id",
        (
            FieldDef("id", "integer"),
            FieldDef("name", required=True),
            FieldDef("email"),
            FieldDef("phone"),
            FieldDef("role"),
            FieldDef("organization_id", "integer"),
            FieldDef("external_id"),
            FieldDef("verified", "boolean"),
            FieldDef("time_zone"),
            FieldDef("locale"),
            FieldDef("tags", "json"),
            FieldDef("user_fields", "json"),
            FieldDef("created_at", "datetime"),
            FieldDef("updated_at", "datetime"),
        ),
        created_field="created_at",
        modified_field="updated_at",
    ),
    ObjectDef(
        "tickets",
        "id",
        (
            FieldDef("id", "integer"),
            FieldDef("external_id"),
            FieldDef("type"),
            FieldDef("subject"),
            FieldDef("description", required=True),
            FieldDef("priority"),
            FieldDef("status"),
            FieldDef("requester_id", "integer"),
            FieldDef("submitter_id", "integer"),
            FieldDef("assignee_id", "integer"),
            FieldDef("organization_id", "integer"),
            FieldDef("group_id", "integer"),
            FieldDef("tags", "json"),
            FieldDef("via", "json"),
            FieldDef("created_at", "datetime"),
            FieldDef("updated_at", "datetime"),
            FieldDef("solved_at", "datetime"),  # served as the ticket metric, not in the ticket
        ),
        created_field="created_at",
        modified_field="updated_at",
    ),
    ObjectDef(
        "comments",
        "id",
        (
            FieldDef("id", "integer"),
            FieldDef("ticket_id", "integer"),
            FieldDef("audit_id", "integer"),
            FieldDef("author_id", "integer"),
            FieldDef("body"),
            FieldDef("public", "boolean"),
            FieldDef("created_at", "datetime"),
        ),
        created_field="created_at",
    ),
)
_TYPES: dict[str, dict[str, str]] = {o.name: {f.name: f.type for f in o.fields} for o in OBJECTS}
_HIDDEN = {"tickets": frozenset({"solved_at"})}
# Resources and their JSON names (a list's key, a single record's key).
_PLURAL = {"tickets": "tickets", "users": "users", "organizations": "organizations"}
_SINGULAR = {"tickets": "ticket", "users": "user", "organizations": "organization"}
_JSON = r"(?:\.json)?"


def zendesk_error(status: int, error: str, description: str | None = None, **extra: Any) -> Response:
    """A Zendesk error body: ``{"error": ..., "description": ...}`` (401 has the error alone)."""
    body: dict[str, Any] = {"error": error}
    if description is not None:
        body["description"] = description
    body.update(extra)
    return Response.json(status, body)


def record_invalid(field_errors: Mapping[str, tuple[str, str]]) -> Response:
    """422 RecordInvalid with ``details`` per field: (description, error code)."""
    details = {name: [{"description": text, "error": code}] for name, (text, code) in field_errors.items()}
    return zendesk_error(422, "RecordInvalid", "Record validation errors", details=details)


def iso(moment: datetime) -> str:
    """An instant as Zendesk writes it: ``2026-11-25T10:00:00Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


def _encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def _decode_cursor(text: str) -> list[Any] | None:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error):
        return None
    return decoded if isinstance(decoded, list) else None


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``X-Zendesk-Webhook-Signature``: base64(HMAC-SHA256(secret, timestamp + body))."""
    digest = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


# --- webhooks ------------------------------------------------------------------------------------


@dataclass
class Delivery:
    """One event posted (or being posted) to the webhook URL, and what came of it."""

    event: dict[str, Any]
    attempts: int = 0
    status: int | None = None  # the last HTTP status, None after a connection error
    delivered: bool = False


@dataclass
class WebhookSender:
    """Posts signed Zendesk events to ``url`` from one background thread, at least once.

    A delivery answered 5xx, 429 or not at all is tried again (``max_attempts`` in all, waiting
    ``backoff_seconds`` doubled each time); a 2xx or another 4xx ends it. Nothing here blocks or fails
    the API call that produced the event.

    Args:
        url: The webhook's endpoint URL.
        secret: The webhook's signing secret.
        webhook_id: Sent as ``X-Zendesk-Webhook-Id``.
        max_attempts: Attempts per event.
        backoff_seconds: Wait before the second attempt.
    """

    url: str
    secret: str
    webhook_id: str = field(default_factory=lambda: f"01{secrets.token_hex(12).upper()}")
    max_attempts: int = 5
    backoff_seconds: float = 0.2
    timeout_seconds: float = 5.0
    deliveries: list[Delivery] = field(default_factory=list)
    _queue: queue.Queue[Delivery | None] = field(default_factory=queue.Queue, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _pending: int = field(default=0, repr=False)
    _idle: threading.Condition = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._idle = threading.Condition(self._lock)

    def send(self, event: dict[str, Any]) -> Delivery:
        """Queue ``event`` for delivery; returns its :class:`Delivery` (filled in as it goes)."""
        delivery = Delivery(event)
        with self._lock:
            self.deliveries.append(delivery)
            self._pending += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="zendesk-webhooks", daemon=True)
                self._thread.start()
        self._queue.put(delivery)
        return delivery

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event is delivered or given up; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout=timeout)

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            delivery = self._queue.get()
            if delivery is None:
                return
            try:
                self._deliver(delivery)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _deliver(self, delivery: Delivery) -> None:
        body = json.dumps(delivery.event, separators=(",", ":")).encode("utf-8")
        wait = self.backoff_seconds
        for attempt in range(1, self.max_attempts + 1):
            delivery.attempts = attempt
            stamp = iso(datetime.now(UTC))
            request = urllib.request.Request(
                self.url,
                data=body,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    "User-Agent": "Zendesk Webhook",
                    "X-Zendesk-Account-Id": str(ACCOUNT_ID),
                    "X-Zendesk-Webhook-Id": self.webhook_id,
                    "X-Zendesk-Webhook-Invocation-Id": str(uuid.uuid4().int)[:19],
                    "X-Zendesk-Webhook-Signature-Timestamp": stamp,
                    "X-Zendesk-Webhook-Signature": sign(self.secret, stamp, body),
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_seconds) as answer:
                    delivery.status = answer.status
            except urllib.error.HTTPError as exc:
                delivery.status = exc.code
            except (urllib.error.URLError, OSError):
                delivery.status = None
            status = delivery.status
            if status is not None and 200 <= status < 300:
                delivery.delivered = True
                return
            if status is not None and status < 500 and status != 429:
                log.warning(
                    "zendesk webhook: %s refused event %s with %s", self.url, delivery.event["id"], status
                )
                return
            if attempt < self.max_attempts:
                time.sleep(wait)
                wait *= 2
        log.warning(
            "zendesk webhook: gave up on event %s after %d attempts", delivery.event["id"], self.max_attempts
        )


# --- the simulator -------------------------------------------------------------------------------


class ZendeskSimulator(SimulatorServer):
    """One Zendesk Support account over a record store.

    Args:
        store_path: The record store (``build_store(..., SANDBOX, ...)``).
        email: The agent's e-mail the API token belongs to.
        api_token: The API token.
        rate_limit: The account's requests per minute to enforce (None: report 700 a minute in the
            headers without enforcing it).
        export_rate_limit: The incremental exports' own limit (Zendesk: 10 a minute); off by default.
        export_lag_seconds: Items changed this recently are held back from the exports (Zendesk: 60).
        time_export_page: Items per page of the time-based exports (Zendesk: 1000).
        webhook_url: Where ticket events are posted (with ``webhook_secret``); None: no webhooks.
        webhook_secret: The webhook's signing secret.
        faults: Fault injection.
    """

    name = "zendesk"

    def __init__(
        self,
        store_path: Path,
        *,
        email: str,
        api_token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: RateLimit | None = None,
        export_rate_limit: RateLimit | None = None,
        export_lag_seconds: float = 60.0,
        time_export_page: int = MAX_EXPORT_PAGE,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.email = email
        self.api_token = api_token
        self.export_rate_limit = export_rate_limit
        self.export_lag_seconds = export_lag_seconds
        self.time_export_page = time_export_page
        self.webhooks: WebhookSender | None = None
        if webhook_url and webhook_secret:
            self.webhooks = WebhookSender(webhook_url, webhook_secret)
        self._nominal = SlidingWindow(DEFAULT_RATE)
        self._export_window: SlidingWindow | None = None
        self._write_lock = threading.Lock()
        self._request_state = threading.local()
        super().__init__(store_path, host=host, port=port, rate_limit=rate_limit, faults=faults)

    def stop(self) -> None:
        super().stop()
        if self.webhooks is not None:
            self.webhooks.stop()

    # -- auth, limits, errors --------------------------------------------------------------------

    def expire_tokens(self) -> None:
        """No-op: Zendesk API tokens do not expire (an admin deletes one to revoke it)."""

    def authenticate(self, request: Request) -> tuple[str | None, Response | None]:
        credentials = request.basic_auth()
        if credentials is None:
            return None, zendesk_error(401, "Couldn't authenticate you")
        user, password = credentials
        if not (
            hmac.compare_digest(user.encode(), f"{self.email}/token".encode())
            and hmac.compare_digest(password.encode(), self.api_token.encode())
        ):
            return None, zendesk_error(401, "Couldn't authenticate you")
        self._request_state.request = request
        return "account", None

    def count_usage(self, key: str) -> Response | None:
        request: Request | None = getattr(self._request_state, "request", None)
        self._nominal.hit(key)
        if request is not None and "/incremental/" in request.path and self.export_rate_limit is not None:
            if self._export_window is None or self._export_window.limit != self.export_rate_limit:
                self._export_window = SlidingWindow(self.export_rate_limit)
            allowed, _, retry_after = self._export_window.hit(key)
            if not allowed:
                return self.rate_limited(retry_after)
        return None

    def rate_limited(self, retry_after: float) -> Response:
        response = zendesk_error(
            429, "APIRateLimitExceeded", "Number of allowed API requests per minute exceeded"
        )
        response.headers["Retry-After"] = self.retry_after_header(retry_after)
        return response

    def error_response(self, status: int) -> Response:
        if status == 429:
            return self.rate_limited(1.0)
        if status == 401:
            return zendesk_error(401, "Couldn't authenticate you")
        if status == 404:
            return zendesk_error(404, "RecordNotFound", "Not found")
        if status == 503:
            response = zendesk_error(503, "ServiceUnavailable", "Zendesk is temporarily unavailable")
            response.headers["Retry-After"] = "1"
            return response
        return zendesk_error(status, "InternalError", "Something went wrong")

    def not_found(self, request: Request) -> Response:
        return zendesk_error(404, "InvalidEndpoint", "Not found")

    def method_not_allowed(self, request: Request) -> Response:
        return zendesk_error(404, "InvalidEndpoint", "Not found")

    def common_headers(self, request: Request, key: str | None) -> dict[str, str]:
        if key is None:
            return {}
        limit = self.rate_limit or DEFAULT_RATE
        window = self.limiter() or self._nominal
        return {"X-Rate-Limit": str(limit.max_requests), "X-Rate-Limit-Remaining": str(window.remaining(key))}

    # -- routes ----------------------------------------------------------------------------------

    def register_routes(self, router: Router) -> None:
        router.add("GET", rf"/api/v2/users/me{_JSON}", self.me)
        router.add(
            "GET", rf"/api/v2/incremental/(?P<resource>tickets|users)/cursor{_JSON}", self.cursor_export
        )
        router.add("GET", rf"/api/v2/incremental/organizations{_JSON}", self.organizations_export)
        router.add("GET", rf"/api/v2/incremental/ticket_events{_JSON}", self.ticket_events_export)
        router.add("GET", rf"/api/v2/(?P<resource>organizations|users)/search{_JSON}", self.search)
        router.add("GET", rf"/api/v2/ticket_metrics{_JSON}", self.ticket_metrics)
        router.add("GET", rf"/api/v2/tickets/(?P<ticket_id>\d+)/metrics{_JSON}", self.ticket_metric)
        router.add("GET", rf"/api/v2/tickets/(?P<ticket_id>\d+)/comments{_JSON}", self.ticket_comments)
        for resource in ("tickets", "users", "organizations"):
            router.add("GET", rf"/api/v2/(?P<resource>{resource}){_JSON}", self.list_records)
            router.add("GET", rf"/api/v2/(?P<resource>{resource})/(?P<record_id>\d+){_JSON}", self.show)
            router.add("POST", rf"/api/v2/(?P<resource>{resource}){_JSON}", self.create)
            router.add("PUT", rf"/api/v2/(?P<resource>{resource})/(?P<record_id>\d+){_JSON}", self.update)

    def me(self, request: Request) -> Response:
        user = {"id": AGENT_ID, "name": "Sandbox Integration", "email": self.email, "role": "admin"}
        return Response.json(200, {"user": user})

    # -- rendering -------------------------------------------------------------------------------

    def _info(self) -> StoreInfo:
        return store_info(self.db())

    def render(self, resource: str, row: sqlite3.Row) -> dict[str, Any]:
        """A stored row as the API shows it (JSON types, deletion, the resource's URL)."""
        types = _TYPES[resource]
        hidden = _HIDDEN.get(resource, frozenset())
        record: dict[str, Any] = {}
        for name in row.keys():  # noqa: SIM118 - sqlite3.Row
            if name.startswith("_") or name in hidden:
                continue
            value = row[name]
            kind = types.get(name, "string")
            if value is not None and kind == "json":
                value = json.loads(value)
            elif value is not None and kind == "boolean":
                value = bool(value)
            record[name] = value
        deleted = row["_deleted_at"] is not None
        if resource in _SINGULAR:
            record["url"] = f"{self.base_url}/api/v2/{resource}/{record['id']}.json"
        if resource == "tickets":
            record["raw_subject"] = record.get("subject")
            if deleted:
                record["status"] = "deleted"
        elif resource == "users":
            record["active"] = not deleted
        elif resource == "organizations":
            record["deleted_at"] = iso(datetime.fromisoformat(row["_deleted_at"])) if deleted else None
        return record

    def _row(self, resource: str, record_id: int, *, live: bool = True) -> sqlite3.Row | None:
        conn = self.db()
        conn.row_factory = sqlite3.Row
        clause = " AND _deleted_at IS NULL" if live else ""
        found: sqlite3.Row | None = conn.execute(
            f"SELECT * FROM {quote(resource)} WHERE id = ?{clause}", (record_id,)
        ).fetchone()
        return found

    def show(self, request: Request, resource: str, record_id: str) -> Response:
        row = self._row(resource, int(record_id))
        if row is None:
            return zendesk_error(404, "RecordNotFound", "Not found")
        return Response.json(200, {_SINGULAR[resource]: self.render(resource, row)})

    # -- cursor-paginated lists ------------------------------------------------------------------

    def _page(
        self,
        request: Request,
        table: str,
        where: str,
        params: list[Any],
        key: str,
        render: Any,
    ) -> Response:
        size_text = request.param("page[size]") or str(MAX_PAGE_SIZE)
        if not size_text.isdigit() or int(size_text) < 1:
            return zendesk_error(400, "InvalidPaginationParameter", "page[size] must be a positive integer")
        size = int(size_text)
        if size > MAX_PAGE_SIZE:
            return zendesk_error(
                400, "InvalidPaginationParameter", f"page[size] must be less than or equal to {MAX_PAGE_SIZE}"
            )
        after = request.param("page[after]")
        conditions = [where] if where else []
        values = list(params)
        if after:
            decoded = _decode_cursor(after)
            if not decoded or not isinstance(decoded[0], int):
                return zendesk_error(400, "InvalidPaginationParameter", "page[after] is not a valid cursor")
            conditions.append("id > ?")
            values.append(decoded[0])
        conn = self.db()
        conn.row_factory = sqlite3.Row
        clause = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = conn.execute(
            f"SELECT * FROM {quote(table)}{clause} ORDER BY id LIMIT ?", [*values, size + 1]
        ).fetchall()
        more = len(rows) > size
        rows = rows[:size]
        after_cursor = _encode_cursor([int(rows[-1]["id"])]) if rows else None
        before_cursor = _encode_cursor([int(rows[0]["id"])]) if rows else None
        query = {k: v[0] for k, v in request.query.items() if k not in ("page[after]", "page[before]")}
        next_link = (
            f"{self.base_url}{request.path}?{urlencode({**query, 'page[after]': after_cursor})}"
            if more and after_cursor
            else None
        )
        return Response.json(
            200,
            {
                key: [render(row) for row in rows],
                "meta": {"has_more": more, "after_cursor": after_cursor, "before_cursor": before_cursor},
                "links": {"next": next_link, "prev": None},
            },
        )

    def list_records(self, request: Request, resource: str) -> Response:
        where, params = "_deleted_at IS NULL", []
        external_id = request.param("external_id")
        if resource == "tickets" and external_id is not None:
            where += " AND external_id = ?"
            params.append(external_id)
        return self._page(
            request, resource, where, params, _PLURAL[resource], lambda r: self.render(resource, r)
        )

    def search(self, request: Request, resource: str) -> Response:
        external_id = request.param("external_id")
        if external_id is None:
            return zendesk_error(400, "InvalidParameter", "external_id or name is required")
        conn = self.db()
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            f"SELECT * FROM {quote(resource)} WHERE external_id = ? AND _deleted_at IS NULL ORDER BY id",
            (external_id,),
        ).fetchall()
        return Response.json(
            200,
            {
                _PLURAL[resource]: [self.render(resource, r) for r in rows],
                "count": len(rows),
                "next_page": None,
            },
        )

    def _metric(self, row: sqlite3.Row) -> dict[str, Any]:
        solved = row["solved_at"]
        return {
            "id": int(row["id"]) + 500_000_000,
            "url": f"{self.base_url}/api/v2/ticket_metrics/{int(row['id']) + 500_000_000}.json",
            "ticket_id": int(row["id"]),
            "solved_at": iso(datetime.fromisoformat(solved)) if solved else None,
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
            "reopens": 0,
            "replies": 0,
        }

    def ticket_metrics(self, request: Request) -> Response:
        return self._page(request, "tickets", "_deleted_at IS NULL", [], "ticket_metrics", self._metric)

    def ticket_metric(self, request: Request, ticket_id: str) -> Response:
        row = self._row("tickets", int(ticket_id))
        if row is None:
            return zendesk_error(404, "RecordNotFound", "Not found")
        return Response.json(200, {"ticket_metric": self._metric(row)})

    def _comment(self, row: sqlite3.Row) -> dict[str, Any]:
        body = row["body"] or ""
        return {
            "id": int(row["id"]),
            "type": "Comment",
            "author_id": row["author_id"],
            "body": body,
            "html_body": f'<div class="zd-comment"><p>{body}</p></div>',
            "plain_body": body,
            "public": bool(row["public"]),
            "attachments": [],
            "audit_id": row["audit_id"],
            "via": {"channel": "api"},
            "created_at": row["created_at"],
        }

    def ticket_comments(self, request: Request, ticket_id: str) -> Response:
        if self._row("tickets", int(ticket_id)) is None:
            return zendesk_error(404, "RecordNotFound", "Not found")
        return self._page(
            request,
            "comments",
            "ticket_id = ? AND _deleted_at IS NULL",
            [int(ticket_id)],
            "comments",
            self._comment,
        )

    # -- incremental exports ---------------------------------------------------------------------

    def _start_time(self, request: Request) -> datetime | Response:
        text = request.param("start_time")
        if text is None or not text.lstrip("-").isdigit():
            return zendesk_error(
                400, "InvalidValue", "start_time is required and must be a Unix time in seconds"
            )
        moment = datetime.fromtimestamp(max(0, int(text)), tz=UTC)
        if moment > datetime.now(UTC):
            return zendesk_error(400, "InvalidValue", "start_time is in the future")
        return moment

    def _horizon(self) -> str:
        """Items changed after this are held back (the export's last minute)."""
        return canonical(datetime.now(UTC) - timedelta(seconds=self.export_lag_seconds))

    def cursor_export(self, request: Request, resource: str) -> Response:
        per_page_text = request.param("per_page") or str(MAX_EXPORT_PAGE)
        if not per_page_text.isdigit() or not 1 <= int(per_page_text) <= MAX_EXPORT_PAGE:
            return zendesk_error(400, "InvalidValue", f"per_page must be between 1 and {MAX_EXPORT_PAGE}")
        per_page = int(per_page_text)
        cursor = request.param("cursor")
        conditions = ["_modified <= ?"]
        values: list[Any] = [self._horizon()]
        if cursor:
            decoded = _decode_cursor(cursor)
            if not decoded or len(decoded) != 2:
                return zendesk_error(400, "InvalidValue", "cursor is not valid")
            conditions.append("(_modified > ? OR (_modified = ? AND id > ?))")
            values += [decoded[0], decoded[0], decoded[1]]
        else:
            start = self._start_time(request)
            if isinstance(start, Response):
                return start
            conditions.append("_modified >= ?")
            values.append(canonical(start))
        exclude_deleted = resource == "tickets" and (request.param("exclude_deleted") or "").lower() == "true"
        if exclude_deleted:
            conditions.append("_deleted_at IS NULL")
        conn = self.db()
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            f"SELECT * FROM {quote(resource)} WHERE {' AND '.join(conditions)} ORDER BY _modified, id LIMIT ?",
            [*values, per_page + 1],
        ).fetchall()
        end_of_stream = len(rows) <= per_page
        rows = rows[:per_page]
        if rows:
            after = _encode_cursor([rows[-1]["_modified"], int(rows[-1]["id"])])
        else:
            # An empty page keeps the place it was asked for: the next call resumes from there.
            after = cursor or _encode_cursor([values[-1], 0])
        query = {"cursor": after, "per_page": str(per_page)}
        if exclude_deleted:
            query["exclude_deleted"] = "true"
        after_url = f"{self.base_url}{request.path}?{urlencode(query)}"
        return Response.json(
            200,
            {
                resource: [self.render(resource, r) for r in rows],
                "after_cursor": after,
                "before_cursor": None,
                "after_url": after_url,
                "before_url": None,
                "end_of_stream": end_of_stream,
            },
        )

    def _time_page(self, table: str, start: datetime, moment_column: str) -> tuple[list[sqlite3.Row], bool]:
        """Up to ``time_export_page`` rows from ``start`` on, plus every row of the last one's second."""
        conn = self.db()
        conn.row_factory = sqlite3.Row
        limit = self.time_export_page
        rows = conn.execute(
            f"SELECT * FROM {quote(table)} WHERE {moment_column} >= ? AND {moment_column} <= ?"
            f" ORDER BY {moment_column}, id LIMIT ?",
            (canonical(start), self._horizon(), limit + 1),
        ).fetchall()
        if len(rows) <= limit:
            return rows, True
        rows = rows[:limit]
        last_second = datetime.fromisoformat(rows[-1][moment_column]).replace(microsecond=0)
        next_second = canonical(last_second + timedelta(seconds=1))
        rest = conn.execute(
            f"SELECT * FROM {quote(table)} WHERE {moment_column} > ? AND {moment_column} < ?"
            f" ORDER BY {moment_column}, id",
            (rows[-1][moment_column], next_second),
        ).fetchall()
        rows += rest
        more = conn.execute(
            f"SELECT 1 FROM {quote(table)} WHERE {moment_column} >= ? AND {moment_column} <= ? LIMIT 1",
            (next_second, self._horizon()),
        ).fetchone()
        return rows, more is None

    def _time_answer(
        self,
        request: Request,
        key: str,
        items: list[dict[str, Any]],
        rows: list[sqlite3.Row],
        start: datetime,
        end_of_stream: bool,
        moment_column: str,
    ) -> Response:
        end_time = (
            int(datetime.fromisoformat(rows[-1][moment_column]).timestamp()) + 1
            if rows
            else int(start.timestamp())
        )
        query = {k: v[0] for k, v in request.query.items()}
        query["start_time"] = str(end_time)
        return Response.json(
            200,
            {
                key: items,
                "next_page": f"{self.base_url}{request.path}?{urlencode(query)}",
                "count": len(items),
                "end_time": end_time,
                "end_of_stream": end_of_stream,
            },
        )

    def organizations_export(self, request: Request) -> Response:
        start = self._start_time(request)
        if isinstance(start, Response):
            return start
        rows, end = self._time_page("organizations", start, "_modified")
        items = [self.render("organizations", r) for r in rows]
        return self._time_answer(request, "organizations", items, rows, start, end, "_modified")

    def ticket_events_export(self, request: Request) -> Response:
        start = self._start_time(request)
        if isinstance(start, Response):
            return start
        rows, end = self._time_page("comments", start, "_created")
        with_comments = "comment_events" in (request.param("include") or "").split(",")
        items = []
        for row in rows:
            created = datetime.fromisoformat(row["_created"])
            event: dict[str, Any] = {
                "id": row["audit_id"],
                "ticket_id": row["ticket_id"],
                "timestamp": int(created.timestamp()),
                "created_at": iso(created),
                "updater_id": row["author_id"],
                "via": {"channel": "api", "source": {"from": {}, "to": {}, "rel": None}},
                "system": {},
                "metadata": {},
                "event_type": "Audit",
                "child_events": [],
            }
            if with_comments:
                comment = self._comment(row)
                event["child_events"].append(
                    {
                        "id": comment["id"],
                        "event_type": "Comment",
                        "body": comment["body"],
                        "html_body": comment["html_body"],
                        "public": comment["public"],
                        "author_id": comment["author_id"],
                        "attachments": [],
                        "audit_id": row["audit_id"],
                        "via": comment["via"],
                    }
                )
            items.append(event)
        return self._time_answer(request, "ticket_events", items, rows, start, end, "_created")

    # -- writes ----------------------------------------------------------------------------------

    def _body(self, request: Request, resource: str) -> dict[str, Any] | Response:
        try:
            body = request.json()
        except (ValueError, UnicodeDecodeError):
            return zendesk_error(400, "InvalidJSON", "The request body is not valid JSON")
        wrapped = body.get(_SINGULAR[resource]) if isinstance(body, dict) else None
        if not isinstance(wrapped, dict):
            return zendesk_error(
                400, "InvalidParameter", f"Parameter {_SINGULAR[resource]} is required and must be an object"
            )
        return wrapped

    def create(self, request: Request, resource: str) -> Response:
        return self._write(request, resource, None)

    def update(self, request: Request, resource: str, record_id: str) -> Response:
        return self._write(request, resource, int(record_id))

    def _write(self, request: Request, resource: str, record_id: int | None) -> Response:
        body = self._body(request, resource)
        if isinstance(body, Response):
            return body
        events: list[dict[str, Any]] = []
        with self._write_lock, closing(open_store(self.store_path)) as conn, conn:
            conn.row_factory = sqlite3.Row
            info = store_info(conn)
            now = datetime.now(UTC)
            current: sqlite3.Row | None = None
            if record_id is not None:
                current = conn.execute(
                    f"SELECT * FROM {quote(resource)} WHERE id = ? AND _deleted_at IS NULL", (record_id,)
                ).fetchone()
                if current is None:
                    return zendesk_error(404, "RecordNotFound", "Not found")
            if resource == "tickets":
                outcome = self._write_ticket(conn, info, body, current, now, events)
            else:
                outcome = self._write_party(conn, info, resource, body, current, now)
            if isinstance(outcome, Response):
                conn.rollback()
                return outcome
            stored = conn.execute(f"SELECT * FROM {quote(resource)} WHERE id = ?", (outcome,)).fetchone()
            answer = {_SINGULAR[resource]: self.render(resource, stored)}
        if self.webhooks is not None:
            for event in events:
                event["detail"] = self._event_detail(answer[_SINGULAR[resource]])
                self.webhooks.send(event)
        return Response.json(201 if record_id is None else 200, answer)

    def _next_id(self, conn: sqlite3.Connection, table: str) -> int:
        return int(conn.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {quote(table)}").fetchone()[0])

    def _write_party(
        self,
        conn: sqlite3.Connection,
        info: StoreInfo,
        resource: str,
        body: Mapping[str, Any],
        current: sqlite3.Row | None,
        now: datetime,
    ) -> int | Response:
        """An organization or a user: name required on create, unknown attributes ignored as Zendesk does."""
        obj = info.objects[resource]
        writable = set(obj.field_names) - {"id", "created_at", "updated_at"}
        values = {k: v for k, v in body.items() if k in writable}
        if current is None and not str(values.get("name") or "").strip():
            return record_invalid({"name": ("Name: cannot be blank", "BlankValue")})
        if resource == "organizations" and values.get("name"):
            taken = conn.execute(
                "SELECT 1 FROM organizations WHERE name = ? COLLATE NOCASE AND _deleted_at IS NULL AND id != ?",
                (values["name"], current["id"] if current is not None else -1),
            ).fetchone()
            if taken:
                return record_invalid({"name": ("Name: has already been taken", "DuplicateValue")})
        if values.get("organization_id") is not None and not self._live(
            conn, "organizations", values["organization_id"]
        ):
            return record_invalid({"organization_id": ("Organization: is invalid", "InvalidValue")})
        if current is None:
            new_id = self._next_id(conn, resource)
            defaults: dict[str, Any] = (
                {"role": "end-user", "verified": False, "tags": [], "user_fields": {}}
                if resource == "users"
                else {"domain_names": [], "tags": [], "organization_fields": {}, "shared_tickets": False}
            )
            insert_rows(conn, info, resource, [Stamped({**defaults, **values, "id": new_id}, now, now)])
            return new_id
        update_rows(conn, info, resource, [current["id"]], at=now, changes=values)
        return int(current["id"])

    @staticmethod
    def _live(conn: sqlite3.Connection, table: str, record_id: Any) -> bool:
        try:
            key = int(record_id)
        except (TypeError, ValueError):
            return False
        return (
            conn.execute(
                f"SELECT 1 FROM {quote(table)} WHERE id = ? AND _deleted_at IS NULL", (key,)
            ).fetchone()
            is not None
        )

    def _write_ticket(
        self,
        conn: sqlite3.Connection,
        info: StoreInfo,
        body: Mapping[str, Any],
        current: sqlite3.Row | None,
        now: datetime,
        events: list[dict[str, Any]],
    ) -> int | Response:
        errors: dict[str, tuple[str, str]] = {}
        if current is not None and current["status"] == "closed":
            return record_invalid(
                {"status": ("Status: closed prevents ticket update", "ClosedPreventsUpdate")}
            )
        comment = body.get("comment")
        if comment is not None and not isinstance(comment, dict):
            comment = {"body": str(comment)}
        comment_body = str((comment or {}).get("body") or (comment or {}).get("html_body") or "").strip()
        for name, allowed in (("status", STATUSES), ("priority", PRIORITIES), ("type", TYPES)):
            value = body.get(name)
            if value is not None and value not in allowed:
                errors[name] = (f"{name.capitalize()}: {value} is not valid", "InvalidValue")
        if current is None and not comment_body:
            errors["description"] = ("Description: cannot be blank", "BlankValue")
        if body.get("organization_id") is not None and not self._live(
            conn, "organizations", body["organization_id"]
        ):
            errors["organization_id"] = ("Organization: is invalid", "InvalidValue")
        if body.get("requester_id") is not None and not self._live(conn, "users", body["requester_id"]):
            errors["requester_id"] = ("Requester: is invalid", "InvalidValue")
        requester = body.get("requester")
        if requester is not None and (
            not isinstance(requester, dict) or not (requester.get("email") or requester.get("name"))
        ):
            errors["requester"] = ("Requester: needs an email or a name", "InvalidValue")
        if errors:
            return record_invalid(errors)
        changes: dict[str, Any] = {
            k: body[k]
            for k in (
                "subject",
                "status",
                "priority",
                "type",
                "external_id",
                "assignee_id",
                "group_id",
                "tags",
                "organization_id",
            )
            if k in body
        }
        if isinstance(requester, dict):
            changes["requester_id"] = self._find_or_create_requester(conn, info, requester, now)
        elif body.get("requester_id") is not None:
            changes["requester_id"] = int(body["requester_id"])
        if changes.get("organization_id") is not None and changes.get("requester_id") is not None:
            # A requester without an organization joins the ticket's.
            conn.execute(
                "UPDATE users SET organization_id = ? WHERE id = ? AND organization_id IS NULL",
                (int(changes["organization_id"]), int(changes["requester_id"])),
            )
        status_before = current["status"] if current is not None else None
        if current is None:
            ticket_id = self._next_id(conn, "tickets")
            changes.setdefault("status", "open" if changes.get("assignee_id") else "new")
            changes.setdefault("subject", comment_body[:80])
            changes.setdefault("requester_id", AGENT_ID)
            if changes.get("organization_id") is None:
                found = conn.execute(
                    "SELECT organization_id FROM users WHERE id = ?", (changes["requester_id"],)
                ).fetchone()
                changes["organization_id"] = found[0] if found else None
            row = {
                **changes,
                "id": ticket_id,
                "description": comment_body,
                "submitter_id": AGENT_ID,
                "via": {"channel": "api", "source": {"from": {}, "to": {}, "rel": None}},
                "tags": changes.get("tags") or [],
            }
            if row["status"] in ("solved", "closed"):
                row["solved_at"] = now
            insert_rows(conn, info, "tickets", [Stamped(row, now, now)])
            events.append(self._event("ticket.created", ticket_id, {"meta": {"sequence": {"id": ticket_id}}}))
        else:
            ticket_id = int(current["id"])
            if changes.get("status") in ("solved", "closed") and current["solved_at"] is None:
                changes["solved_at"] = now
            if changes.get("status") in ("new", "open", "pending", "hold"):
                changes["solved_at"] = None
            update_rows(conn, info, "tickets", [ticket_id], at=now, changes=changes)
        if comment_body:
            comment_id = self._next_id(conn, "comments")
            public = comment.get("public", True) if isinstance(comment, dict) else True
            insert_rows(
                conn,
                info,
                "comments",
                [
                    Stamped(
                        {
                            "id": comment_id,
                            "ticket_id": ticket_id,
                            "audit_id": comment_id + 900_000_000,
                            "author_id": (comment or {}).get("author_id") or AGENT_ID,
                            "body": comment_body,
                            "public": bool(public)
                            if not isinstance(public, str)
                            else public.lower() == "true",
                        },
                        now,
                        now,
                    )
                ],
            )
            if current is not None:
                events.append(
                    self._event(
                        "ticket.comment_added",
                        ticket_id,
                        {
                            "comment": {
                                "id": comment_id,
                                "body": comment_body,
                                "is_public": bool(public),
                                "author": {"id": AGENT_ID, "is_staff": True},
                            }
                        },
                    )
                )
        new_status = changes.get("status")
        if current is not None and new_status is not None and new_status != status_before:
            events.append(
                self._event(
                    "ticket.status_changed",
                    ticket_id,
                    {"previous": str(status_before).upper(), "current": str(new_status).upper()},
                )
            )
        return ticket_id

    def _find_or_create_requester(
        self, conn: sqlite3.Connection, info: StoreInfo, requester: Mapping[str, Any], now: datetime
    ) -> int:
        email = str(requester.get("email") or "").strip()
        if email:
            found = conn.execute(
                "SELECT id FROM users WHERE email = ? COLLATE NOCASE AND _deleted_at IS NULL", (email,)
            ).fetchone()
            if found:
                return int(found[0])
        user_id = self._next_id(conn, "users")
        name = str(requester.get("name") or email.partition("@")[0])
        row: dict[str, Any] = {
            "id": user_id,
            "name": name,
            "email": email or None,
            "role": "end-user",
            "verified": False,
            "tags": [],
            "user_fields": {},
            "locale": requester.get("locale"),
        }
        insert_rows(conn, info, "users", [Stamped(row, now, now)])
        return user_id

    # -- webhook events --------------------------------------------------------------------------

    @staticmethod
    def _event(kind: str, ticket_id: int, event: dict[str, Any]) -> dict[str, Any]:
        """A Zendesk ticket event (its ``detail`` is filled in with the ticket as saved)."""
        return {
            "type": f"zen:event-type:{kind}",
            "account_id": ACCOUNT_ID,
            "id": str(uuid.uuid4()),
            "time": iso(datetime.now(UTC)),
            "zendesk_event_version": "2022-11-06",
            "subject": f"zen:ticket:{ticket_id}",
            "detail": {},
            "event": event,
        }

    @staticmethod
    def _event_detail(ticket: Mapping[str, Any]) -> dict[str, Any]:
        """The ticket as Zendesk's ticket events describe it (ids as text, enums upper case)."""

        def text(value: Any) -> str | None:
            return None if value is None else str(value)

        def upper(value: Any) -> str | None:
            return None if value is None else str(value).upper()

        return {
            "id": text(ticket.get("id")),
            "actor_id": text(AGENT_ID),
            "assignee_id": text(ticket.get("assignee_id")),
            "brand_id": None,
            "created_at": ticket.get("created_at"),
            "description": ticket.get("description"),
            "external_id": ticket.get("external_id"),
            "form_id": None,
            "group_id": text(ticket.get("group_id")),
            "organization_id": text(ticket.get("organization_id")),
            "priority": upper(ticket.get("priority")),
            "requester_id": text(ticket.get("requester_id")),
            "status": upper(ticket.get("status")),
            "subject": ticket.get("subject"),
            "submitter_id": text(ticket.get("submitter_id")),
            "tags": ticket.get("tags") or [],
            "type": upper(ticket.get("type")),
            "updated_at": ticket.get("updated_at"),
            "via": {"channel": (ticket.get("via") or {}).get("channel")},
        }

    def send_event(self, kind: str, ticket_id: int, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Post a ticket event for ``ticket_id`` now (e.g. ``ticket.status_changed``): what the
        tests call to (re)send one. Returns the event queued.

        Raises:
            RuntimeError: No webhook is configured.
            KeyError: No such ticket.
        """
        if self.webhooks is None:
            raise RuntimeError("zendesk simulator: no webhook URL and secret were given")
        with closing(open_store(self.store_path, readonly=True)) as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute("SELECT * FROM tickets WHERE id = ?", (ticket_id,)).fetchone()
            if row is None:
                raise KeyError(f"no ticket {ticket_id}")
            ticket = self.render("tickets", row)
        payload = self._event(kind, ticket_id, event or {})
        payload["detail"] = self._event_detail(ticket)
        self.webhooks.send(payload)
        return payload

    def resend(self, payload: dict[str, Any]) -> None:
        """Post an event again as it was (same id): a redelivery the receiver must take once."""
        if self.webhooks is None:
            raise RuntimeError("zendesk simulator: no webhook URL and secret were given")
        self.webhooks.send(payload)


# --- the sandbox contract ------------------------------------------------------------------------


class ZendeskSandbox(SandboxCrm):
    """Zendesk in the sandbox: organizations (accounts), end users (contacts), tickets (cases)."""

    system = "zendesk"
    timestamp_format = "iso_z"
    objects = OBJECTS
    kinds = MappingProxyType({"account": "organizations", "contact": "users", "case": "tickets"})
    webhook_sender = "zendesk"
    stage_values: Mapping[str, str] = MappingProxyType({})

    def __init__(self) -> None:
        # Zendesk ids are sequential per resource: one counter per resource and generator.
        self._counters: weakref.WeakKeyDictionary[Any, dict[str, itertools.count[int]]] = (
            weakref.WeakKeyDictionary()
        )

    def new_key(self, kind: Kind, rng: Any) -> int:
        counters = self._counters.setdefault(rng, {})
        if kind not in counters:
            counters[kind] = itertools.count(rng.randrange(1, 100_000) * 10_000 + 1)
        return next(counters[kind])

    def row(self, kind: Kind, seed: Any, key: Any, refs: Mapping[str, Any]) -> dict[str, Any]:
        if kind == "account":
            website = (
                (seed.website or "").removeprefix("https://").removeprefix("http://").removeprefix("www.")
            )
            address = ", ".join(p for p in (seed.street, seed.postal_code, seed.city, seed.country) if p)
            return {
                "id": key,
                "name": seed.name,
                "domain_names": [website.rstrip("/")] if website else [],
                "details": address or None,
                "notes": None,
                "shared_tickets": False,
                "shared_comments": False,
                "tags": [],
                "organization_fields": {
                    "phone": seed.phone,
                    "city": seed.city,
                    "country": seed.country,
                    "industry": seed.industry,
                },
            }
        if kind == "contact":
            return {
                "id": key,
                "name": " ".join(p for p in (seed.first_name, seed.last_name) if p) or None,
                "email": seed.email,
                "phone": seed.phone,
                "role": "end-user",
                "organization_id": refs.get(seed.account_ref) if seed.account_ref else None,
                "verified": True,
                "time_zone": None,
                "locale": "en-US",
                "tags": [],
                "user_fields": {"job_title": seed.title, "country": seed.country},
            }
        if kind == "case":
            status = CASE_STATUS.get(seed.status, "open")
            return {
                "id": key,
                "subject": seed.subject,
                "description": seed.description or seed.subject or "",
                "status": status,
                "priority": seed.priority if seed.priority in PRIORITIES else None,
                "type": seed.case_type if seed.case_type in TYPES else None,
                "requester_id": refs.get(seed.contact_ref) if seed.contact_ref else None,
                "submitter_id": refs.get(seed.contact_ref) if seed.contact_ref else AGENT_ID,
                "organization_id": refs.get(seed.account_ref) if seed.account_ref else None,
                "tags": [],
                "via": {"channel": CHANNELS.get(seed.origin or "", "web")},
                "solved_at": seed.resolved if status in ("solved", "closed") else None,
            }
        raise ValueError(f"zendesk has no {kind}s")

    def start(
        self,
        store: Path,
        *,
        token_ttl_seconds: float | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> Started:
        """Start with a fresh API token; ``token_ttl_seconds`` is ignored (API tokens never expire).

        Webhooks go to ``webhook_url`` (else ``ZENDESK_WEBHOOK_URL``) signed with ``webhook_secret``
        (else ``ZENDESK_WEBHOOK_SECRET``) when both are known. The exports hold nothing back here:
        the sandbox edits and reads back within seconds.
        """
        url = webhook_url or os.environ.get("ZENDESK_WEBHOOK_URL")
        secret = webhook_secret or os.environ.get("ZENDESK_WEBHOOK_SECRET")
        simulator = ZendeskSimulator(
            store,
            email="integration@sandbox.example.com",
            api_token=secrets.token_urlsafe(30),
            export_lag_seconds=0.0,
            webhook_url=url,
            webhook_secret=secret,
        )
        base_url = simulator.start()
        env = {
            "ZENDESK_BASE_URL": base_url,
            "ZENDESK_EMAIL": simulator.email,
            "ZENDESK_API_TOKEN": simulator.api_token,
        }
        return Started(simulator, env)

    def start_with_webhooks(self, store: Path, *, url: str, secret: str) -> Started:
        return self.start(store, webhook_url=url, webhook_secret=secret)

    def write_case(self, store: Path) -> WriteCase:
        with closing(open_store(store, readonly=True)) as conn:
            found = conn.execute(
                "SELECT id FROM organizations WHERE _deleted_at IS NULL ORDER BY id LIMIT 1"
            ).fetchone()
        org_id = int(found[0]) if found else None
        accepted: list[dict[str, Any]] = [
            {
                "external_id": "sugarcrm:6f1c0a52-0001-4d3e-9b1a-000000000001",
                "subject": "Delivery arrived damaged",
                "comment": {"body": "Two pallets arrived with broken wrapping.", "public": True},
                "requester": {"name": "Lena Neumann", "email": "lena.neumann@nordwind-logistik.de"},
                "organization_id": org_id,
                "priority": "high",
                "type": "incident",
                "status": "open",
            },
            {
                "external_id": "sugarcrm:6f1c0a52-0002-4d3e-9b1a-000000000002",
                "subject": "Invoice copy",
                "comment": {"body": "Please send a copy of invoice 2026-0042.", "public": True},
                "requester": {"name": "Marco Bianchi", "email": "marco.bianchi@ventoitalia.it"},
                "priority": "low",
                "type": "question",
            },
        ]
        rejected: list[dict[str, Any]] = [
            {
                "external_id": "sugarcrm:6f1c0a52-0003-4d3e-9b1a-000000000003",
                "subject": "Urgent, really",
                "comment": {"body": "Priority nobody has heard of.", "public": True},
                "requester": {"name": "Anna Schmidt", "email": "anna.schmidt@nordwind-logistik.de"},
                "priority": "critical",
            }
        ]
        return WriteCase("tickets", "external_id", accepted, rejected, "RecordInvalid")

    def update_case(self, store: Path) -> UpdateCase:
        with closing(open_store(store, readonly=True)) as conn:
            live = [
                int(r[0])
                for r in conn.execute(
                    "SELECT id FROM tickets WHERE _deleted_at IS NULL AND status != 'closed' ORDER BY id LIMIT 2"
                )
            ]
        changed: list[dict[str, Any]] = [
            {"id": ticket_id, "status": "pending", "comment": {"body": "We are on it.", "public": True}}
            for ticket_id in live
        ]
        return UpdateCase(
            object_name="tickets",
            changed=changed,
            field="status",
            expected={str(t): "pending" for t in live},
            unknown={"id": 999_999_999, "status": "open"},
            unknown_code="RecordNotFound",
        )


SANDBOX = ZendeskSandbox()
