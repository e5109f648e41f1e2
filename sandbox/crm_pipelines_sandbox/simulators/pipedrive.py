"""Pipedrive API v2 simulator: API-token auth, cursor-paged lists, deleted deals, search-then-write.

It serves a record store (:mod:`.records`) the way Pipedrive's REST API does, from the public docs and
Pipedrive's own generated client (github.com/pipedrive/client-nodejs, ``src/versions/v2``):

* Auth: the company API token in the ``x-api-token`` header or the ``api_token`` query parameter. A
  missing or wrong token answers 401 ``{"success": false, "error": "unauthorized access",
  "errorCode": 401, "error_info": ...}``. API tokens do not expire (``expire_tokens`` is a no-op).
  https://pipedrive.readme.io/docs/core-api-concepts-authentication
* Lists: ``GET /api/v2/organizations|persons|deals`` with ``limit`` (default 100, at most 500; more
  answers 400), ``cursor`` (opaque; ``additional_data.next_cursor`` until the last page, then null),
  ``updated_since`` (inclusive) / ``updated_until`` (exclusive), RFC 3339, ``sort_by`` ``id`` (default)
  | ``update_time`` | ``add_time``, ``sort_direction`` ``asc`` (default) | ``desc``, ``custom_fields``
  (at most 15 keys; all custom fields when absent) and ``include_fields`` (optional extras). Custom
  fields sit under ``custom_fields`` keyed by their 40-character hash; ``emails``/``phones`` are lists
  of ``{value, primary, label}``; ``org_id``/``person_id`` reference other records.
  https://developers.pipedrive.com/docs/api/v1/Persons#getPersons (v2 tab), client-nodejs
  ``src/versions/v2/api/persons-api.ts``, ``deals-api.ts``, ``organizations-api.ts``
* Deletes: deals only, as documented: ``GET /api/v2/deals?status=deleted`` lists deals deleted in the
  last 30 days (``is_deleted: true``). Persons and organizations have no documented way to list
  deletions in v2: they disappear, and a sync detects them by comparing keys.
  https://developers.pipedrive.com/docs/api/v1/Deals#getDeals (``status``: "If set to deleted, deals
  that have been deleted up to 30 days ago will be included")
* Field metadata: ``GET /api/v2/organizationFields|personFields|dealFields`` (``field_code``,
  ``field_name``, ``field_type``, ``is_custom_field``, cursor paged) and the v1
  ``GET /api/v1/organizationFields|personFields|dealFields`` (``key``, ``name``, ``field_type``,
  ``edit_flag``); custom fields added later are listed. client-nodejs ``person-fields-api.ts``
* Limits: token-based rate limiting: a daily budget of API tokens per company (each request costs
  tokens; search costs more) and a burst limit per 2-second window per token. Every answer carries
  ``x-ratelimit-limit``, ``x-ratelimit-remaining``, ``x-ratelimit-reset`` and ``x-daily-requests-left``
  (POST/PATCH/PUT fair-use requests left today); a 429 also ``Retry-After``.
  https://pipedrive.readme.io/docs/core-api-concepts-rate-limiting,
  https://developers.pipedrive.com/changelog/post/daily-api-limit-for-postput-endpoints
* Leads (API v1 only): ``GET /api/v1/leads`` with ``limit`` (default 100, at most 500), ``start`` (offset;
  ``additional_data`` holds ``start``, ``limit`` and ``more_items_in_collection``), ``archived_status``
  ``archived`` | ``not_archived`` | ``all`` (the default), ``owner_id``/``person_id``/``organization_id``
  and ``sort`` (``field ASC|DESC``, first-level fields only); oldest first by ``add_time`` unless
  sorted. No ``updated_since``: a sync reads them all and keeps what changed. A lead's id is a UUID, its
  name and e-mail are its person's; ``value`` is ``{amount, currency}``; archived leads carry
  ``is_archived: true``; a deleted lead, or one converted into a deal, is gone (404 by id, listed
  nowhere). ``GET /api/v1/leadLabels`` lists the labels (Hot, Warm, Cold to start with).
  https://developers.pipedrive.com/docs/api/v1/Leads#getLeads, client-php ``docs/Api/LeadsApi.md``,
  ``docs/Model/LeadResponse.md``
* Write side: no upsert. ``GET /api/v2/{persons|organizations|deals}/search?term=..&fields=custom_fields
  &exact_match=true`` finds a record by an external-id custom field (limit at most 100), then
  ``POST /api/v2/{object}`` creates or ``PATCH /api/v2/{object}/{id}`` updates it; a create without its
  name/title answers 400 with a validation error. client-nodejs ``searchPersons``, ``addPerson``,
  ``updatePerson``; https://github.com/pipedrive/client-nodejs/issues/129 (error body)
"""

from __future__ import annotations

import binascii
import hmac
import itertools
import json
import math
import secrets
import sqlite3
import threading
import uuid
import weakref
from collections.abc import Mapping
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from crm_pipelines_sandbox.simulators.base import (
    Faults,
    RateLimit,
    Request,
    Response,
    Router,
    SimulatorServer,
    SlidingWindow,
)
from crm_pipelines_sandbox.simulators.pipedrive_schema import (
    CUSTOM_LABELS,
    DAILY_WRITE_REQUESTS,
    DEFAULT_DAILY_BUDGET,
    DEFAULT_LIMIT,
    DELETED_DEALS_DAYS,
    FIELD_TYPES,
    FIELDS_PATHS,
    INCLUDE_FIELDS,
    LEAD_LABELS,
    LEAD_SORTS,
    LEADS,
    LEADS_MAX_LIMIT,
    MAX_CUSTOM_FIELD_KEYS,
    MAX_LIMIT,
    NAME_FIELD,
    NOMINAL_BURST,
    OBJECTS,
    ORG_ANNUAL_REVENUE,
    ORG_ERP_CUSTOMER_NUMBER,
    ORG_INDUSTRY,
    ORG_PHONE,
    ORG_WEBSITE,
    OWNER_ID,
    PERSON_COUNTRY,
    PERSON_EXTERNAL_ID,
    SEARCH_MAX_LIMIT,
    SINGULAR,
    SORTS,
    STANDARD_NAMES,
    TOKEN_COSTS,
    decode_cursor,
    encode_cursor,
    json_value,
    parse_rfc3339,
    rfc3339,
    v1_error,
    v2_error,
)
from crm_pipelines_sandbox.simulators.pipedrive_write import body_values
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


class PipedriveSimulator(SimulatorServer):
    """One Pipedrive company over a record store.

    Args:
        store_path: The record store (``build_store(..., SANDBOX, ...)``).
        api_token: The company API token of the integration user.
        daily_budget: API tokens per day (UTC) for the company.
        rate_limit: The burst limit per 2-second window to enforce (None: report the plan's nominal
            limit in the headers without enforcing it).
        search_rate_limit: An extra window for the search endpoints (the docs list 10 per 2 s on the
            request-based plans); off by default.
        faults: Fault injection.
    """

    name = "pipedrive"

    def __init__(
        self,
        store_path: Path,
        *,
        api_token: str,
        daily_budget: int = DEFAULT_DAILY_BUDGET,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: RateLimit | None = None,
        search_rate_limit: RateLimit | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.api_token = api_token
        self.daily_budget = daily_budget
        self.search_rate_limit = search_rate_limit
        # Codes (HTTP statuses as text, or v2 error codes) to answer for a record's external id or
        # name on its next create/update attempts.
        self.record_faults: dict[str, list[str]] = {}
        self._day = ""
        self._tokens_used = 0
        self._writes_used = 0
        self._nominal = SlidingWindow(NOMINAL_BURST)
        self._search_window: SlidingWindow | None = None
        self._state_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._index_lock = threading.Lock()
        self._indexed: set[tuple[str, str]] = set()
        self._request_state = threading.local()
        super().__init__(store_path, host=host, port=port, rate_limit=rate_limit, faults=faults)

    # -- auth and limits -------------------------------------------------------------------------

    def expire_tokens(self) -> None:
        """No-op: Pipedrive API tokens are static and never expire (only a reset in settings revokes one)."""

    def authenticate(self, request: Request) -> tuple[str | None, Response | None]:
        token = request.header("x-api-token") or request.param("api_token") or ""
        if not token or not hmac.compare_digest(token, self.api_token):
            return None, v1_error(401, "unauthorized access")
        self._request_state.request = request
        return token, None

    @staticmethod
    def _cost(request: Request) -> tuple[int, bool]:
        """(API tokens the call costs, whether it counts against the daily POST/PUT fair use)."""
        if request.method in ("POST", "PATCH", "PUT", "DELETE"):
            return TOKEN_COSTS["write"], True
        if request.path.endswith("/search"):
            return TOKEN_COSTS["search"], False
        if "Fields" in request.path:
            return TOKEN_COSTS["fields"], False
        if request.path.rstrip("/").split("/")[-1].isdigit():
            return TOKEN_COSTS["get"], False
        return TOKEN_COSTS["list"], False

    def _roll_day(self) -> None:
        today = datetime.now(UTC).date().isoformat()
        if today != self._day:
            self._day, self._tokens_used, self._writes_used = today, 0, 0

    def count_usage(self, key: str) -> Response | None:
        request: Request | None = getattr(self._request_state, "request", None)
        cost, write = self._cost(request) if request is not None else (1, False)
        if request is not None and request.path.endswith("/search") and self.search_rate_limit is not None:
            if self._search_window is None or self._search_window.limit != self.search_rate_limit:
                self._search_window = SlidingWindow(self.search_rate_limit)
            allowed, _, retry_after = self._search_window.hit(key)
            if not allowed:
                return self.rate_limited(retry_after)
        with self._state_lock:
            self._roll_day()
            if self._tokens_used + cost > self.daily_budget:
                now = datetime.now(UTC)
                midnight = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
                response = v1_error(429, "Daily API token budget exhausted")
                response.headers["Retry-After"] = self.retry_after_header((midnight - now).total_seconds())
                return response
            self._tokens_used += cost
            if write:
                self._writes_used += 1
        if self.rate_limit is None:
            self._nominal.hit(key)  # only to report the plan's window in the headers
        return None

    def rate_limited(self, retry_after: float) -> Response:
        response = v1_error(429, "Request over limit")
        response.headers["Retry-After"] = self.retry_after_header(retry_after)
        return response

    def error_response(self, status: int) -> Response:
        if status == 429:
            return self.rate_limited(2.0)
        if status == 401:
            return v1_error(401, "unauthorized access")
        if status == 403:
            return v1_error(403, "You do not have permissions to access this resource")
        if status == 404:
            return v1_error(404, "Not found")
        if status == 400:
            return v1_error(400, "Bad request")
        if status in (502, 503, 504):
            return v1_error(status, "Service Unavailable")
        return v1_error(status, "Internal Server Error")

    def not_found(self, request: Request) -> Response:
        return v1_error(404, "Unknown method .")

    def method_not_allowed(self, request: Request) -> Response:
        return v1_error(405, f"Method {request.method} not allowed for {request.path}")

    def common_headers(self, request: Request, key: str | None) -> dict[str, str]:
        if key is None:
            return {}
        limit = self.rate_limit or NOMINAL_BURST
        window = self.limiter() or self._nominal
        with self._state_lock:
            self._roll_day()
            writes_left = max(0, DAILY_WRITE_REQUESTS - self._writes_used)
        return {
            "x-ratelimit-limit": str(limit.max_requests),
            "x-ratelimit-remaining": str(window.remaining(key)),
            "x-ratelimit-reset": str(math.ceil(limit.interval_seconds)),
            "x-daily-requests-left": str(writes_left),
        }

    def budget_left(self) -> int:
        """API tokens left today (the company's usage page shows it; no header does)."""
        with self._state_lock:
            self._roll_day()
            return max(0, self.daily_budget - self._tokens_used)

    # -- routes ----------------------------------------------------------------------------------

    def register_routes(self, router: Router) -> None:
        objects = "(?P<object_name>organizations|persons|deals)"
        fields = "(?P<fields_path>organizationFields|personFields|dealFields)"
        router.add("GET", rf"/api/v2/{fields}", self.fields_v2)
        router.add("GET", rf"/api/v1/{fields}", self.fields_v1)
        router.add("GET", rf"/api/v2/{objects}/search", self.search)
        router.add("GET", rf"/api/v2/{objects}/(?P<record_id>\d+)", self.get_one)
        router.add("PATCH", rf"/api/v2/{objects}/(?P<record_id>\d+)", self.update)
        router.add("GET", rf"/api/v2/{objects}", self.list_records)
        router.add("POST", rf"/api/v2/{objects}", self.create)
        router.add("GET", r"/api/v1/users/me", self.me)
        router.add("GET", r"/api/v1/leads", self.list_leads)
        router.add("GET", r"/api/v1/leads/(?P<lead_id>[0-9a-fA-F-]{36})", self.get_lead)
        router.add("GET", r"/api/v1/leadLabels", self.lead_labels)

    def _info(self) -> StoreInfo:
        return store_info(self.db())

    def me(self, request: Request) -> Response:
        return Response.json(
            200,
            {
                "success": True,
                "data": {
                    "id": OWNER_ID,
                    "name": "Sandbox Integration",
                    "email": "integration@example.com",
                    "company_id": 7_654_321,
                    "company_name": "Sandbox GmbH",
                    "company_domain": "sandbox",
                    "default_currency": "EUR",
                    "locale": "en_US",
                    "timezone_name": "Europe/Berlin",
                },
            },
        )

    def _ensure_index(self, table: str, column: str, *, nocase: bool = False) -> None:
        """Create an index the simulator's own queries need (once, on a writable connection)."""
        if (table, column) in self._indexed:
            return
        with self._index_lock:
            if (table, column) in self._indexed:
                return
            name = quote(f"{table}__pipedrive_{column.strip('_')[:48]}")
            collate = " COLLATE NOCASE" if nocase else ""
            with closing(open_store(self.store_path)) as conn, conn:
                conn.execute(
                    f"CREATE INDEX IF NOT EXISTS {name} ON {quote(table)} ({quote(column)}{collate})"
                )
            self._indexed.add((table, column))

    # -- field metadata --------------------------------------------------------------------------

    def _field_entries(self, object_name: str) -> list[tuple[FieldDef, bool]]:
        obj = self._info().objects[object_name]
        return [(f, f.name not in STANDARD_NAMES[object_name]) for f in obj.fields]

    @staticmethod
    def _label(field: FieldDef, custom: bool) -> tuple[str, str]:
        if custom:
            return CUSTOM_LABELS.get(field.name, (field.name.replace("_", " ").capitalize(), "varchar"))
        return field.name.replace("_", " ").capitalize(), FIELD_TYPES[field.type]

    def fields_v2(self, request: Request, fields_path: str) -> Response:
        page = self._limit_and_offset(request, MAX_LIMIT)
        if isinstance(page, Response):
            return page
        limit, offset = page
        entries = self._field_entries(FIELDS_PATHS[fields_path])
        chunk = entries[offset : offset + limit]
        data = []
        for field, custom in chunk:
            label, field_type = self._label(field, custom)
            data.append(
                {
                    "field_code": field.name,
                    "field_name": label,
                    "field_type": field_type,
                    "is_custom_field": custom,
                    "is_optional_response_field": False,
                }
            )
        more = offset + limit < len(entries)
        return Response.json(
            200,
            {
                "success": True,
                "data": data,
                "additional_data": {
                    "next_cursor": encode_cursor(["fields", offset + limit, 0, 0]) if more else None
                },
            },
        )

    def fields_v1(self, request: Request, fields_path: str) -> Response:
        entries = self._field_entries(FIELDS_PATHS[fields_path])
        data = []
        for position, (field, custom) in enumerate(entries, start=1):
            label, field_type = self._label(field, custom)
            data.append(
                {
                    "id": 9000 + position,
                    "key": field.name,
                    "name": label,
                    "field_type": field_type,
                    "edit_flag": custom,
                    "mandatory_flag": field.required,
                    "active_flag": True,
                    "add_visible_flag": True,
                }
            )
        return Response.json(
            200,
            {
                "success": True,
                "data": data,
                "additional_data": {
                    "pagination": {"start": 0, "limit": 500, "more_items_in_collection": False}
                },
            },
        )

    def _limit_and_offset(self, request: Request, maximum: int) -> tuple[int, int] | Response:
        limit = self._limit(request, maximum)
        if isinstance(limit, Response):
            return limit
        cursor = request.param("cursor")
        if not cursor:
            return limit, 0
        try:
            values = decode_cursor(cursor)
            return limit, int(str(values[1]))
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
            return v2_error(400, "Invalid cursor", "ERR_INVALID_CURSOR")

    @staticmethod
    def _limit(request: Request, maximum: int) -> int | Response:
        raw = request.param("limit")
        if raw is None:
            return DEFAULT_LIMIT
        try:
            limit = int(raw)
        except ValueError:
            return v2_error(
                400,
                "Validation failed: limit: Parameter 'limit' must be an integer",
                "ERR_SCHEMA_VALIDATION_FAILED",
            )
        if limit < 1 or limit > maximum:
            return v2_error(
                400,
                f"Validation failed: limit: Parameter 'limit' must be between 1 and {maximum}",
                "ERR_SCHEMA_VALIDATION_FAILED",
            )
        return limit

    # -- lists -----------------------------------------------------------------------------------

    def list_records(self, request: Request, object_name: str) -> Response:
        obj = self._info().objects[object_name]
        limit = self._limit(request, MAX_LIMIT)
        if isinstance(limit, Response):
            return limit
        sort_by = request.param("sort_by") or "id"
        direction = (request.param("sort_direction") or "asc").lower()
        if sort_by not in SORTS or direction not in ("asc", "desc"):
            bad = "sort_by" if sort_by not in SORTS else "sort_direction"
            return v2_error(400, f"Validation failed: {bad}: Invalid value", "ERR_SCHEMA_VALIDATION_FAILED")
        conditions: list[str] = []
        params: list[object] = []
        for name, operator in (("updated_since", ">="), ("updated_until", "<")):
            raw = request.param(name)
            if raw is None:
                continue
            instant = parse_rfc3339(raw)
            if instant is None:
                return v2_error(
                    400,
                    f"Validation failed: {name}: Parameter '{name}' must be in RFC3339 format",
                    "ERR_SCHEMA_VALIDATION_FAILED",
                )
            conditions.append(f"_modified {operator} ?")
            params.append(canonical(instant))
        deleted_window = self._status_filter(request, object_name, conditions, params)
        if isinstance(deleted_window, Response):
            return deleted_window
        for name in ("org_id", "person_id", "owner_id"):
            raw = request.param(name)
            if raw is not None and name in obj.field_names:
                if not raw.isdigit():
                    return v2_error(
                        400, f"Validation failed: {name}: must be an integer", "ERR_SCHEMA_VALIDATION_FAILED"
                    )
                conditions.append(f"{quote(name)} = ?")
                params.append(int(raw))
        custom_keys = self._custom_keys(request, object_name)
        if isinstance(custom_keys, Response):
            return custom_keys
        include = [n.strip() for n in (request.param("include_fields") or "").split(",") if n.strip()]
        unknown = [n for n in include if n not in INCLUDE_FIELDS[object_name]]
        if unknown:
            return v2_error(
                400,
                f"Validation failed: include_fields: Invalid value '{unknown[0]}'",
                "ERR_SCHEMA_VALIDATION_FAILED",
            )
        column = SORTS[sort_by]
        if column == "_created":
            self._ensure_index(object_name, "_created")
        sort = quote(column)
        order_dir = "ASC" if direction == "asc" else "DESC"
        cursor = request.param("cursor")
        if cursor:
            try:
                bound_sort, last_value, last_rowid, bound_direction = decode_cursor(cursor)
            except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
                return v2_error(400, "Invalid cursor", "ERR_INVALID_CURSOR")
            if bound_sort != sort_by or bound_direction != direction:
                return v2_error(400, "Invalid cursor", "ERR_INVALID_CURSOR")
            comparison = ">" if order_dir == "ASC" else "<"
            if column == "id":
                conditions.append(f"id {comparison} ?")
                params.append(last_value)
            else:
                conditions.append(f"({sort}, rowid) {comparison} (?, ?)")
                params.extend([last_value, last_rowid])
        order = f"id {order_dir}" if column == "id" else f"{sort} {order_dir}, rowid {order_dir}"
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        conn = self.db()
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            f"SELECT rowid AS __rowid, {sort} AS __sort, * FROM {quote(object_name)}{where} ORDER BY {order} LIMIT ?",
            [*params, limit + 1],
        ).fetchall()
        page, more = rows[:limit], len(rows) > limit
        next_cursor = None
        if more:
            last = page[-1]
            next_cursor = encode_cursor([sort_by, last["__sort"], last["__rowid"], direction])
        data = [self._render(obj, row, custom_keys) for row in page]
        if include:
            self._attach_counts(object_name, page, data, include)
        return Response.json(
            200, {"success": True, "data": data, "additional_data": {"next_cursor": next_cursor}}
        )

    def _status_filter(
        self, request: Request, object_name: str, conditions: list[str], params: list[object]
    ) -> Response | None:
        """Live records only, except deals asked for ``status=deleted`` (kept 30 days)."""
        raw = request.param("status") if object_name == "deals" else None
        if raw is None:
            conditions.append("_deleted_at IS NULL")
            return None
        statuses = {s.strip() for s in raw.split(",") if s.strip()}
        if not statuses or statuses - {"open", "won", "lost", "deleted"}:
            return v2_error(400, "Validation failed: status: Invalid value", "ERR_SCHEMA_VALIDATION_FAILED")
        parts = []
        live = sorted(statuses - {"deleted"})
        if live:
            parts.append(f"(_deleted_at IS NULL AND status IN ({', '.join('?' for _ in live)}))")
            params.extend(live)
        if "deleted" in statuses:
            parts.append("(_deleted_at IS NOT NULL AND _deleted_at >= ?)")
            params.append(canonical(datetime.now(UTC) - timedelta(days=DELETED_DEALS_DAYS)))
        conditions.append("(" + " OR ".join(parts) + ")")
        return None

    def _custom_keys(self, request: Request, object_name: str) -> list[str] | Response | None:
        raw = request.param("custom_fields")
        if raw is None:
            return None
        keys = [k.strip() for k in raw.split(",") if k.strip()]
        if len(keys) > MAX_CUSTOM_FIELD_KEYS:
            return v2_error(
                400,
                f"Validation failed: custom_fields: A maximum of {MAX_CUSTOM_FIELD_KEYS} keys is allowed",
                "ERR_SCHEMA_VALIDATION_FAILED",
            )
        return keys

    def _render(self, obj: ObjectDef, row: sqlite3.Row, custom_keys: list[str] | None) -> dict[str, object]:
        """A record as v2 shows it: standard fields at the top, custom fields under ``custom_fields``."""
        standard = STANDARD_NAMES[obj.name]
        record: dict[str, object] = {}
        custom: dict[str, object] = {}
        for field in obj.fields:
            value = json_value(field.type, row[field.name])
            if field.name in standard:
                record[field.name] = value
            elif custom_keys is None or field.name in custom_keys:
                custom[field.name] = value
        record["is_deleted"] = row["_deleted_at"] is not None
        record["custom_fields"] = custom
        return record

    def _attach_counts(
        self, object_name: str, rows: list[sqlite3.Row], data: list[dict[str, object]], include: list[str]
    ) -> None:
        if object_name == "deals":
            for record in data:
                for name in include:
                    record[name] = record.get("won_time") if name == "first_won_time" else 0
            return
        link = "org_id" if object_name == "organizations" else "person_id"
        self._ensure_index("deals", link)
        ids = [int(row["id"]) for row in rows]
        if not ids:
            return
        marks = ", ".join("?" for _ in ids)
        counts: dict[tuple[int, str], int] = {}
        for owner, status, count in self.db().execute(
            f"SELECT {quote(link)}, status, count(*) FROM deals WHERE {quote(link)} IN ({marks})"
            " AND _deleted_at IS NULL GROUP BY 1, 2",
            ids,
        ):
            counts[(int(owner), str(status))] = int(count)
        for record in data:
            key = int(str(record["id"]))
            won, lost, open_ = (counts.get((key, s), 0) for s in ("won", "lost", "open"))
            values = {
                "open_deals_count": open_,
                "closed_deals_count": won + lost,
                "won_deals_count": won,
                "lost_deals_count": lost,
            }
            for name in include:
                record[name] = values[name]

    def get_one(self, request: Request, object_name: str, record_id: str) -> Response:
        obj = self._info().objects[object_name]
        conn = self.db()
        conn.row_factory = sqlite3.Row
        row = conn.execute(
            f"SELECT * FROM {quote(object_name)} WHERE id = ? AND _deleted_at IS NULL", (int(record_id),)
        ).fetchone()
        if row is None:
            return v2_error(404, f"{SINGULAR[object_name]} not found", "ERR_NOT_FOUND")
        return Response.json(200, {"success": True, "data": self._render(obj, row, None)})

    # -- leads (v1) ------------------------------------------------------------------------------

    def list_leads(self, request: Request) -> Response:
        """``GET /v1/leads``: offset paged, oldest first, archived ones included unless filtered out."""
        numbers: dict[str, int] = {}
        for name, default, maximum in (("limit", DEFAULT_LIMIT, LEADS_MAX_LIMIT), ("start", 0, None)):
            raw = request.param(name)
            if raw is None:
                numbers[name] = default
                continue
            if not raw.isdigit() or (name == "limit" and not 1 <= int(raw) <= (maximum or 0)):
                return v1_error(400, f"Invalid value for parameter '{name}'")
            numbers[name] = int(raw)
        conditions, params = ["_deleted_at IS NULL"], []
        archived = request.param("archived_status") or "all"
        if archived not in ("archived", "not_archived", "all"):
            return v1_error(400, "archived_status must be one of archived, not_archived, all")
        if archived != "all":
            conditions.append("coalesce(is_archived, 0) = ?")
            params.append(1 if archived == "archived" else 0)
        for name in ("owner_id", "person_id", "organization_id"):
            raw = request.param(name)
            if raw is not None:
                if not raw.isdigit():
                    return v1_error(400, f"Invalid value for parameter '{name}'")
                conditions.append(f"{quote(name)} = ?")
                params.append(int(raw))
        order: list[str] = []
        for part in (request.param("sort") or "add_time ASC").split(","):
            words = part.split()
            if not words:
                continue
            direction = words[1].upper() if len(words) > 1 else "ASC"
            if words[0] not in LEAD_SORTS or direction not in ("ASC", "DESC") or len(words) > 2:
                return v1_error(400, f"Invalid sort field or direction: {part.strip()}")
            column = {"add_time": "_created", "update_time": "_modified"}.get(words[0], words[0])
            order.append(f"{quote(column)} {direction}")
        limit, start = numbers["limit"], numbers["start"]
        conn = self.db()
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            f"SELECT * FROM leads WHERE {' AND '.join(conditions)} ORDER BY {', '.join([*order, 'rowid'])}"
            " LIMIT ? OFFSET ?",
            [*params, limit + 1, start],
        ).fetchall()
        data = [self._render_lead(row) for row in rows[:limit]]
        additional = {"start": start, "limit": limit, "more_items_in_collection": len(rows) > limit}
        return Response.json(200, {"success": True, "data": data, "additional_data": additional})

    def get_lead(self, request: Request, lead_id: str) -> Response:
        conn = self.db()
        conn.row_factory = sqlite3.Row
        row = conn.execute(
            "SELECT * FROM leads WHERE id = ? AND _deleted_at IS NULL", (lead_id.lower(),)
        ).fetchone()
        if row is None:
            return v1_error(404, "Lead not found")
        return Response.json(200, {"success": True, "data": self._render_lead(row)})

    def lead_labels(self, request: Request) -> Response:
        add_time = "2026-01-05T09:00:00.000Z"
        labels = [{**label, "add_time": add_time, "update_time": add_time} for label in LEAD_LABELS.values()]
        return Response.json(200, {"success": True, "data": labels})

    @staticmethod
    def _render_lead(row: sqlite3.Row) -> dict[str, object]:
        """A lead as v1 shows it: custom fields (the deals') appear only once set; none are here."""
        return {f.name: json_value(f.type, row[f.name]) for f in LEADS.fields}

    # -- search ----------------------------------------------------------------------------------

    def search(self, request: Request, object_name: str) -> Response:
        obj = self._info().objects[object_name]
        term = (request.param("term") or "").strip()
        exact = (request.param("exact_match") or "false").lower() == "true"
        if len(term) < (1 if exact else 2):
            return v2_error(
                400,
                "Validation failed: term: Parameter 'term' must be at least 2 characters",
                "ERR_SCHEMA_VALIDATION_FAILED",
            )
        page = self._limit_and_offset(request, SEARCH_MAX_LIMIT)
        if isinstance(page, Response):
            return page
        limit, offset = page
        allowed = {"persons": {"custom_fields", "email", "notes", "phone", "name"}}.get(
            object_name,
            {"custom_fields", "notes", "name", "address"}
            if object_name == "organizations"
            else {"custom_fields", "notes", "title"},
        )
        wanted = [
            f.strip() for f in (request.param("fields") or ",".join(sorted(allowed))).split(",") if f.strip()
        ]
        if set(wanted) - allowed:
            return v2_error(400, "Validation failed: fields: Invalid value", "ERR_SCHEMA_VALIDATION_FAILED")
        clauses: list[str] = []
        params: list[object] = []

        def match(column: str) -> None:
            if exact:
                clauses.append(f"{quote(column)} = ? COLLATE NOCASE")
                params.append(term)
            else:
                clauses.append(f"{quote(column)} LIKE ?")
                params.append(f"%{term}%")

        for field in wanted:
            if field == "custom_fields":
                for f in obj.fields:
                    if f.name not in STANDARD_NAMES[object_name] and f.type in ("string", "number"):
                        if exact:
                            self._ensure_index(object_name, f.name, nocase=True)
                        match(f.name)
            elif field in ("name", "title"):
                match(NAME_FIELD[object_name])
            elif field in ("email", "phone"):
                # The values sit in a JSON list; match the value text inside it.
                clauses.append(f"{quote(field + 's')} LIKE ?")
                params.append(f'%"value":"{term}"%' if exact else f"%{term}%")
        if not clauses:
            return Response.json(
                200, {"success": True, "data": {"items": []}, "additional_data": {"next_cursor": None}}
            )
        conn = self.db()
        conn.row_factory = sqlite3.Row
        # One query per clause keeps each on its index; results merge in id order.
        found: dict[int, sqlite3.Row] = {}
        for clause, param in zip(clauses, params, strict=True):
            for row in conn.execute(
                f"SELECT * FROM {quote(object_name)} WHERE {clause} AND _deleted_at IS NULL ORDER BY id LIMIT ?",
                (param, offset + limit + 1),
            ):
                found.setdefault(int(row["id"]), row)
        ordered = [found[k] for k in sorted(found)]
        chunk = ordered[offset : offset + limit]
        more = len(ordered) > offset + limit
        items = [
            {"result_score": 1.0 if exact else 0.5, "item": self._search_item(obj, row)} for row in chunk
        ]
        return Response.json(
            200,
            {
                "success": True,
                "data": {"items": items},
                "additional_data": {
                    "next_cursor": encode_cursor(["search", offset + limit, 0, 0]) if more else None
                },
            },
        )

    def _search_item(self, obj: ObjectDef, row: sqlite3.Row) -> dict[str, object]:
        custom_values = [
            row[f.name]
            for f in obj.fields
            if f.name not in STANDARD_NAMES[obj.name] and row[f.name] is not None
        ]
        item: dict[str, object] = {
            "id": int(row["id"]),
            "type": obj.name[:-1] if obj.name != "persons" else "person",
            NAME_FIELD[obj.name]: row[NAME_FIELD[obj.name]],
            "visible_to": row["visible_to"],
            "owner": {"id": row["owner_id"]},
            "custom_fields": [str(v) for v in custom_values],
            "notes": [],
            "update_time": row["update_time"],
        }
        if obj.name == "persons":
            item["emails"] = [e["value"] for e in json.loads(row["emails"] or "[]")]
            item["phones"] = [p["value"] for p in json.loads(row["phones"] or "[]")]
        if "org_id" in row.keys() and obj.name != "organizations":  # noqa: SIM118
            item["organization"] = {"id": row["org_id"]} if row["org_id"] is not None else None
        return item

    # -- writes ----------------------------------------------------------------------------------

    def create(self, request: Request, object_name: str) -> Response:
        return self._write(request, object_name, None)

    def update(self, request: Request, object_name: str, record_id: str) -> Response:
        return self._write(request, object_name, int(record_id))

    def _write(self, request: Request, object_name: str, record_id: int | None) -> Response:
        try:
            body = request.json()
        except ValueError:
            return v2_error(400, "Invalid JSON body", "ERR_SCHEMA_VALIDATION_FAILED")
        if not isinstance(body, dict):
            return v2_error(400, "Validation failed: body must be an object", "ERR_SCHEMA_VALIDATION_FAILED")
        fault = self._fault_for(body)
        if fault is not None:
            return fault
        with self._write_lock, closing(open_store(self.store_path)) as conn, conn:
            info = store_info(conn)
            obj = info.objects[object_name]
            values = body_values(obj, body)
            if isinstance(values, Response):
                return values
            now = datetime.now(UTC)
            if record_id is None:
                name = NAME_FIELD[object_name]
                if values.get(name) in (None, ""):
                    return v2_error(
                        400,
                        f"Validation failed: {name}: Parameter '{name}' is required",
                        "ERR_SCHEMA_VALIDATION_FAILED",
                    )
                new_id = int(
                    conn.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {quote(object_name)}").fetchone()[0]
                )
                defaults: dict[str, object] = {"owner_id": OWNER_ID, "visible_to": 3, "label_ids": []}
                if object_name == "deals":
                    defaults.update({"status": "open", "pipeline_id": 1, "stage_id": 1, "currency": "EUR"})
                if object_name == "persons":
                    defaults.update({"emails": [], "phones": []})
                row = {**{k: v for k, v in defaults.items() if k in obj.field_names}, **values, "id": new_id}
                insert_rows(conn, info, object_name, [Stamped(row, now, now)])
                record_id = new_id
            else:
                found = conn.execute(
                    f"SELECT 1 FROM {quote(object_name)} WHERE id = ? AND _deleted_at IS NULL", (record_id,)
                ).fetchone()
                if found is None:
                    return v2_error(404, f"{SINGULAR[object_name]} not found", "ERR_NOT_FOUND")
                update_rows(conn, info, object_name, [record_id], at=now, changes=values)
            conn.row_factory = sqlite3.Row
            stored = conn.execute(f"SELECT * FROM {quote(object_name)} WHERE id = ?", (record_id,)).fetchone()
            return Response.json(200, {"success": True, "data": self._render(obj, stored, None)})

    def _fault_for(self, body: Mapping[str, object]) -> Response | None:
        candidates = [str(v) for v in dict(body.get("custom_fields") or {}).values() if v is not None]  # type: ignore[call-overload]
        candidates += [str(body[n]) for n in ("name", "title") if body.get(n)]
        for key in candidates:
            queued = self.record_faults.get(key)
            if queued:
                code = queued.pop(0)
                if code.isdigit():
                    return self.error_response(int(code))
                return v2_error(400, f"injected {code} for {key}", code)
        return None


# --- the sandbox contract ----------------------------------------------------------------------------


class PipedriveSandbox(SandboxCrm):
    """Pipedrive in the sandbox: organizations, persons, deals with integer ids and hash-keyed custom
    fields, and leads (UUIDs, API v1) linked to their person."""

    system = "pipedrive"
    timestamp_format = "iso_z"
    objects = (*OBJECTS, LEADS)
    kinds = MappingProxyType(
        {"account": "organizations", "contact": "persons", "deal": "deals", "lead": "leads"}
    )
    # A lead is always linked to a person (or an organization); converting it into a deal deletes it.
    leads_of_contacts = True
    converted_leads_deleted = True
    # The default pipeline's stages by stage_id while a deal is open; a closed deal's stage is its
    # status (won / lost), whatever stage it was closed in.
    stage_values = MappingProxyType(
        {
            "prospecting": "1",
            "qualification": "2",
            "proposal": "3",
            "negotiation": "4",
            "closed_won": "won",
            "closed_lost": "lost",
        }
    )

    def __init__(self) -> None:
        # Pipedrive ids are sequential per object: one counter per object and generator.
        self._counters: weakref.WeakKeyDictionary[Any, dict[str, itertools.count[int]]] = (
            weakref.WeakKeyDictionary()
        )

    def new_key(self, kind: Kind, rng: Any) -> Any:
        if kind == "lead":
            return str(uuid.UUID(int=rng.getrandbits(128), version=4))
        counters = self._counters.setdefault(rng, {})
        if kind not in counters:
            # Sequential from where the generator puts it: another generator's ids do not collide
            # with this store's (a record added later by a test gets a fresh id).
            counters[kind] = itertools.count(rng.randrange(1, 100_000) * 1000 + 1)
        return next(counters[kind])

    def row(self, kind: Kind, seed: Any, key: Any, refs: Mapping[str, Any]) -> dict[str, Any]:
        common: dict[str, Any] = {"id": key, "owner_id": OWNER_ID, "visible_to": 3, "label_ids": []}
        if kind == "account":
            parts = [p for p in (seed.street, seed.postal_code, seed.city, seed.country) if p]
            address = {
                "value": ", ".join(parts) if parts else None,
                "route": seed.street,
                "locality": seed.city,
                "postal_code": seed.postal_code,
                "country": seed.country,
            }
            return {
                **common,
                "name": seed.name,
                "address": address,
                ORG_WEBSITE: seed.website,
                ORG_PHONE: seed.phone,
                ORG_INDUSTRY: seed.industry,
                ORG_ANNUAL_REVENUE: float(seed.annual_revenue) if seed.annual_revenue else None,
            }
        if kind == "lead":
            return self._lead_row(seed, key, refs)
        if kind == "contact":
            name = " ".join(p for p in (seed.first_name, seed.last_name) if p) or None
            return {
                **common,
                "name": name,
                "first_name": seed.first_name,
                "last_name": seed.last_name,
                "org_id": refs.get(seed.account_ref) if seed.account_ref else None,
                "emails": [{"value": seed.email, "primary": True, "label": "work"}] if seed.email else [],
                "phones": [{"value": seed.phone, "primary": True, "label": "work"}] if seed.phone else [],
                "job_title": seed.title,
                PERSON_COUNTRY: seed.country,
            }
        stage = self.stage_values[seed.stage]
        closed = stage in ("won", "lost")
        close_time = rfc3339(seed.modified) if closed else None
        return {
            **common,
            "title": seed.name,
            "org_id": refs.get(seed.account_ref) if seed.account_ref else None,
            "pipeline_id": 1,
            "stage_id": 4 if closed else int(stage),
            "value": float(seed.amount) if seed.amount else None,
            "currency": seed.currency,
            "status": stage if closed else "open",
            "probability": None,
            "close_time": close_time,
            "won_time": close_time if stage == "won" else None,
            "lost_time": close_time if stage == "lost" else None,
            "expected_close_date": seed.close_date.isoformat() if seed.close_date else None,
        }

    @staticmethod
    def _lead_row(seed: Any, key: Any, refs: Mapping[str, Any]) -> dict[str, Any]:
        """A lead in the Leads Inbox. Pipedrive has no lead status: a lead nobody opened yet is unseen
        (``was_seen`` false), one being worked on is seen, a disqualified one archived; a label says how
        warm it is (Hot when qualified, Cold when nurtured, Warm while worked on). A converted lead is
        a deal now and deleted from the leads (the seeder deletes it; a sample seed given live shows the
        lead as it was just before). The name and e-mail are the linked person's."""
        if seed.status not in ("new", "working", "nurturing", "qualified", "unqualified", "converted"):
            raise ValueError(f"unknown lead status {seed.status!r}")
        label = {"working": "Warm", "nurturing": "Cold", "qualified": "Hot", "converted": "Hot"}.get(
            seed.status
        )
        person = refs.get(seed.contact_ref) if seed.contact_ref else None
        name = " ".join(p for p in (seed.first_name, seed.last_name) if p) or seed.email
        return {
            "id": key,
            # The title Pipedrive suggests: the organization's (or the person's) name and "lead".
            "title": f"{seed.company or name} lead",
            "owner_id": OWNER_ID,
            "creator_id": OWNER_ID,
            "label_ids": [LEAD_LABELS[label]["id"]] if label else [],
            "person_id": person,
            "organization_id": None,
            # Where it came from: a web form, else typed in by a salesperson (the seed's finer source,
            # a trade show or a partner, is what a company tracks as its own marketing channel).
            "source_name": "Web forms" if seed.lead_source == "Web" else "Manually created",
            "origin": "WebForms" if seed.lead_source == "Web" else "ManuallyCreated",
            "channel": None,
            "is_archived": seed.status == "unqualified",
            "was_seen": seed.status != "new",
            # A salesperson working a lead puts a value on it (a whole-thousand estimate here).
            "value": (
                {"amount": float(1_000 * (1 + sum(map(ord, seed.ref)) % 40)), "currency": "EUR"}
                if seed.status in ("working", "qualified", "converted")
                else None
            ),
            "expected_close_date": None,
            "visible_to": "3",
            "cc_email": "sandbox@pipedrivemail.com",
        }

    def start(self, store: Path, *, token_ttl_seconds: float | None = None) -> Started:
        """Start with a fresh API token; ``token_ttl_seconds`` is ignored (API tokens never expire)."""
        simulator = PipedriveSimulator(store, api_token=secrets.token_hex(20))
        base_url = simulator.start()
        return Started(
            simulator, {"PIPEDRIVE_BASE_URL": base_url, "PIPEDRIVE_API_TOKEN": simulator.api_token}
        )

    def write_case(self, store: Path) -> WriteCase:
        with closing(open_store(store, readonly=True)) as conn:
            found = conn.execute(
                "SELECT id FROM organizations WHERE _deleted_at IS NULL ORDER BY id LIMIT 1"
            ).fetchone()
        org_id = int(found[0]) if found else None
        accepted: list[dict[str, Any]] = [
            {
                "name": "Lena Neumann",
                "emails": [{"value": "lena.neumann@nordwind-logistik.de", "primary": True, "label": "work"}],
                "org_id": org_id,
                "custom_fields": {PERSON_EXTERNAL_ID: "ERP-C-000001", PERSON_COUNTRY: "Germany"},
            },
            {
                "name": "Marco Bianchi",
                "phones": [{"value": "+39 02 8901 2345", "primary": True, "label": "work"}],
                "custom_fields": {PERSON_EXTERNAL_ID: "ERP-C-000002"},
            },
        ]
        rejected: list[dict[str, Any]] = [
            {
                "emails": [{"value": "no.name@example.com", "primary": True, "label": "work"}],
                "custom_fields": {PERSON_EXTERNAL_ID: "ERP-C-900001"},
            }
        ]
        return WriteCase(
            "persons",
            f"custom_fields.{PERSON_EXTERNAL_ID}",
            accepted,
            rejected,
            "ERR_SCHEMA_VALIDATION_FAILED",
        )

    def update_case(self, store: Path) -> UpdateCase:
        with closing(open_store(store, readonly=True)) as conn:
            live = [
                int(r[0])
                for r in conn.execute(
                    "SELECT id FROM organizations WHERE _deleted_at IS NULL ORDER BY id LIMIT 2"
                )
            ]
        # A custom field is written under custom_fields by its key, a standard one at the top level.
        changed: list[dict[str, Any]] = [
            {
                "id": org_id,
                "name": f"Nordwind Logistik GmbH ({n})",
                "custom_fields": {ORG_ERP_CUSTOMER_NUMBER: f"C-30{n:03d}"},
            }
            for n, org_id in enumerate(live, 1)
        ]
        return UpdateCase(
            object_name="organizations",
            changed=changed,
            field="erp_customer_number",
            expected={str(r["id"]): r["custom_fields"][ORG_ERP_CUSTOMER_NUMBER] for r in changed},
            unknown={"id": 999_999_999, "custom_fields": {ORG_ERP_CUSTOMER_NUMBER: "C-9"}},
            unknown_code="ERR_NOT_FOUND",
        )


SANDBOX = PipedriveSandbox()
