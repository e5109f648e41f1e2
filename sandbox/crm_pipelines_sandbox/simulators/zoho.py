"""Zoho CRM API v8 simulator: OAuth refresh-token grant, records with page tokens, deleted records, upsert.

It serves a record store (:mod:`.records`) the way Zoho CRM's v8 REST API does, from the public docs
and Zoho's own OpenAPI files (github.com/zoho/crm-oas, folder ``v8.0``):

* Auth: ``POST {accounts}/oauth/v2/token`` with ``grant_type=refresh_token`` (query parameters, as the
  docs show, or a form body) answers ``access_token``, ``api_domain``, ``token_type``, ``expires_in``.
  Wrong credentials answer **HTTP 200** with ``{"error": "invalid_client"}`` (client id/secret) or
  ``{"error": "invalid_code"}`` (refresh token), as Zoho's accounts server does. At most 10 access
  tokens live per refresh token; issuing an 11th deletes the oldest. Data calls send
  ``Authorization: Zoho-oauthtoken <token>``; an unknown or expired token answers 401
  ``INVALID_TOKEN``, a missing or malformed header 401 ``AUTHENTICATION_FAILURE``.
  https://www.zoho.com/crm/developer/docs/api/v8/refresh.html,
  https://www.zoho.com/assist/api/refresh-access-token.html (same accounts server),
  https://help.zoho.com/portal/en/kb/accounts/faqs-troubleshooting/faqs/oauth/articles/invalid-oauthtoken-on-api-access-30-5-2021
* Records: ``GET /crm/v8/{module}?fields=..&per_page=..&page=..|page_token=..&sort_by=..&sort_order=..``.
  ``fields`` is mandatory (400 ``REQUIRED_PARAM_MISSING``), at most 50 (400 ``LIMIT_EXCEEDED``);
  ``per_page`` 1..200 (default 200); ``page`` reaches the first 2,000 records only (400
  ``DISCRETE_PAGINATION_LIMIT_EXCEEDED``), beyond that ``page_token`` (from ``info.next_page_token``,
  bound to the sort and ``If-Modified-Since`` of the first request: 400 ``TOKEN_BOUND_DATA_MISMATCH``;
  valid 24 h: 400 ``EXPIRED_VALUE``) continues up to 100,000 records per token chain (400
  ``PAGINATION_LIMIT_EXCEEDED``). ``sort_by`` is ``id`` (default), ``Created_Time`` or
  ``Modified_Time``; ``sort_order`` ``desc`` (default) or ``asc``. ``If-Modified-Since`` (ISO 8601
  with offset) returns records modified **after** the instant (exclusive, to the second); nothing
  modified answers 304 with an empty body, an empty module 204.
  https://www.zoho.com/crm/developer/docs/api/v8/get-records.html, crm-oas
  ``v8.0/record/operations/getRecords``, https://www.zoho.com/crm/developer/docs/api/v8/status-codes.html
* Leads: ``GET /crm/v8/Leads`` answers the unconverted leads only; ``converted=true`` the converted
  ones, ``converted=both`` all (any other value 400 ``INVALID_DATA``). Converting a lead (which makes
  its Contact, Account and Deal) takes it out of the default list without deleting it: it is not in
  ``/Leads/deleted``, it keeps its fields and Modified_Time moves to the conversion; records carry
  ``$converted`` and ``$converted_detail`` (``contact``, ``account``, ``deal`` ids, ``convert_user``,
  ``converted_time``; ``{}`` while unconverted) when the ``fields`` ask for them.
  https://www.zoho.com/crm/developer/docs/api/v8/get-records.html, crm-oas ``v8.0/record`` (parameter
  ``converted``), https://www.zoho.com/crm/developer/docs/api/v8/convert-lead.html
* Deleted records: ``GET /crm/v8/{module}/deleted?type=all|recycle|permanent&page=..&per_page=..`` with
  ``If-Modified-Since``; records ``{deleted_by, id, display_name, type, created_by, deleted_time}``.
  Records stay in the recycle bin for 60 days, then are permanent (names and users null).
  https://www.zoho.com/crm/developer/docs/api/v8/get-deleted-records.html, crm-oas
  ``v8.0/record/operations/getDeletedRecords``
* Field metadata: ``GET /crm/v8/settings/fields?module=..`` lists every field's ``api_name`` (custom
  fields added later included, ``custom_field: true``). https://www.zoho.com/crm/developer/docs/api/v8/field-meta.html
* Limits: API credits per rolling 24 h (1 per read, 1 per 10 upserted records) and a concurrency limit
  per token (Enterprise: 20 in flight); both answer 429 ``TOO_MANY_REQUESTS``. Responses carry
  ``X-ACCESSTOKEN-RESET`` and the SDKs' ``X-RATELIMIT-DAY-LIMIT`` / ``X-RATELIMIT-DAY-REMAINING``
  (plus ``X-RATELIMIT-LIMIT`` / ``-REMAINING`` / ``-RESET`` when a window limit is configured) and a
  429 carries ``Retry-After``. https://www.zoho.com/crm/developer/docs/api/v8/api-limits.html,
  https://help.zoho.com/portal/en/community/topic/credit-calculation-and-concurrency-in-zoho-crm-apis
* Upsert: ``POST /crm/v8/{module}/upsert`` with ``{"data": [..100], "duplicate_check_fields": [..]}``;
  one result per record (``SUCCESS`` with ``action`` insert/update and ``duplicate_field``, or an
  error such as ``MANDATORY_NOT_FOUND`` / ``INVALID_DATA`` with ``api_name`` and ``json_path``); HTTP
  200 when all succeed, 207 for a mix, 400 when none does.
  https://www.zoho.com/crm/developer/docs/api/v8/upsert-records.html, crm-oas
  ``v8.0/record/operations/upsertRecords``
"""

from __future__ import annotations

import binascii
import hmac
import itertools
import math
import secrets
import sqlite3
import threading
import time
import weakref
from collections import OrderedDict, deque
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
)
from crm_pipelines_sandbox.simulators.records import (
    ObjectDef,
    StoreInfo,
    canonical,
    open_store,
    quote,
    store_info,
)
from crm_pipelines_sandbox.simulators.zoho_schema import (
    API,
    CURRENCY_SYMBOLS,
    DEFAULT_CONCURRENCY,
    DEFAULT_DAILY_CREDITS,
    DEFAULT_PER_PAGE,
    DEFAULT_TOKEN_TTL,
    DISCRETE_PAGE_LIMIT,
    DISPLAY_NAME,
    ID_PREFIX,
    JSON_TYPES,
    LEAD_SOURCES,
    LEAD_STATUSES,
    LOOKUPS,
    MAX_FIELDS,
    MAX_PER_PAGE,
    MAX_TOKENS_PER_REFRESH_TOKEN,
    OBJECTS,
    ORG_ID,
    PAGE_TOKEN_LIMIT,
    PAGE_TOKEN_TTL,
    RECORD_PROPERTIES,
    RECYCLE_BIN_DAYS,
    SORT_COLUMNS,
    STANDARD_FIELDS,
    SYSTEM_DUPLICATE_FIELDS,
    SYSTEM_USER_FIELDS,
    UNIQUE_FIELDS,
    UPSERT_MAX_RECORDS,
    USER,
    PageToken,
    json_value,
    parse_instant,
    time_text,
    zoho_error,
)
from crm_pipelines_sandbox.simulators.zoho_write import update_one, upsert_one
from crm_pipelines_sandbox.systems import Kind, SandboxCrm, Started, UpdateCase, WriteCase


class ZohoSimulator(SimulatorServer):
    """One Zoho CRM org (and its accounts server) over a record store.

    Args:
        store_path: The record store (``build_store(..., SANDBOX, ...)``).
        client_id: OAuth client id of the self client.
        client_secret: Its secret.
        refresh_token: The refresh token the pipelines hold.
        token_ttl_seconds: Lifetime of issued access tokens (Zoho: 3600).
        daily_credits: API credits per rolling 24 hours.
        concurrency_limit: Requests in flight per access token before 429.
        rate_limit: An extra sliding-window limit per token (tests), off by default.
        faults: Fault injection.
    """

    name = "zoho"

    def __init__(
        self,
        store_path: Path,
        *,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        token_ttl_seconds: float = DEFAULT_TOKEN_TTL,
        daily_credits: int = DEFAULT_DAILY_CREDITS,
        concurrency_limit: int = DEFAULT_CONCURRENCY,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: RateLimit | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_token = refresh_token
        self.token_ttl_seconds = token_ttl_seconds
        self.daily_credits = daily_credits
        self.concurrency_limit = concurrency_limit
        self.page_token_limit = PAGE_TOKEN_LIMIT  # tests lower it to reach the cap cheaply
        self.page_token_ttl_seconds = PAGE_TOKEN_TTL
        # Error codes to answer for a duplicate-check value on its next upsert attempts.
        self.record_faults: dict[str, list[str]] = {}
        self._tokens: OrderedDict[str, float] = OrderedDict()  # token -> monotonic expiry
        self._token_wall_expiry: dict[str, float] = {}
        self._credits: deque[tuple[float, int]] = deque()  # (monotonic time, credits) in the last 24 h
        self._credits_used = 0
        self._in_flight: dict[str, int] = {}
        self._state_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._index_lock = threading.Lock()
        self._indexed: set[tuple[str, str]] = set()
        self._request_state = threading.local()
        super().__init__(store_path, host=host, port=port, rate_limit=rate_limit, faults=faults)

    # -- tokens ----------------------------------------------------------------------------------

    def issue_token(self) -> str:
        """A new access token valid for ``token_ttl_seconds``; the 11th live one evicts the oldest."""
        token = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
        with self._state_lock:
            self._tokens[token] = time.monotonic() + self.token_ttl_seconds
            self._token_wall_expiry[token] = time.time() + self.token_ttl_seconds
            while len(self._tokens) > MAX_TOKENS_PER_REFRESH_TOKEN:
                oldest, _ = self._tokens.popitem(last=False)
                self._token_wall_expiry.pop(oldest, None)
        return token

    def expire_tokens(self) -> None:
        """Make every issued access token expire now (the next data call gets 401 INVALID_TOKEN)."""
        with self._state_lock:
            for token in self._tokens:
                self._tokens[token] = 0.0

    def authenticate(self, request: Request) -> tuple[str | None, Response | None]:
        scheme, _, token = (request.header("Authorization") or "").strip().partition(" ")
        token = token.strip()
        if scheme != "Zoho-oauthtoken" or not token:
            return None, zoho_error(401, "AUTHENTICATION_FAILURE", "Authentication failed")
        with self._state_lock:
            expires = self._tokens.get(token)
            if expires is None or expires <= time.monotonic():
                return None, zoho_error(401, "INVALID_TOKEN", "invalid oauth token")
        self._request_state.cost = self._credit_cost(request)
        return token, None

    def token_endpoint(self, request: Request) -> Response:
        """``POST /oauth/v2/token``: the refresh-token grant; parameters in the query or a form body."""
        params = {k: v[0] for k, v in request.query.items() if v}
        params.update(request.form() if request.body else {})
        if params.get("grant_type") != "refresh_token":
            return Response.json(200, {"error": "unsupported_grant_type"})
        if not hmac.compare_digest(params.get("client_id", ""), self.client_id) or not hmac.compare_digest(
            params.get("client_secret", ""), self.client_secret
        ):
            return Response.json(200, {"error": "invalid_client"})
        if not hmac.compare_digest(params.get("refresh_token", ""), self.refresh_token):
            return Response.json(200, {"error": "invalid_code"})
        return Response.json(
            200,
            {
                "access_token": self.issue_token(),
                "scope": "ZohoCRM.modules.ALL ZohoCRM.settings.fields.READ ZohoCRM.org.READ",
                "api_domain": self.base_url,
                "token_type": "Bearer",
                "expires_in": int(self.token_ttl_seconds),
            },
        )

    # -- limits ----------------------------------------------------------------------------------

    @staticmethod
    def _credit_cost(request: Request) -> int:
        """Credits a call costs: upserts and updates 1 per 10 records, everything else 1."""
        if (request.method == "POST" and request.path.endswith("/upsert")) or request.method == "PUT":
            try:
                data = (request.json() or {}).get("data")
            except (ValueError, AttributeError):
                return 1
            return max(1, math.ceil(len(data) / 10)) if isinstance(data, list) else 1
        return 1

    def _credits_in_window(self, now: float) -> int:
        horizon = now - 86_400.0
        while self._credits and self._credits[0][0] <= horizon:
            self._credits_used -= self._credits.popleft()[1]
        return self._credits_used

    def count_usage(self, key: str) -> Response | None:
        cost = int(getattr(self._request_state, "cost", 1))
        now = time.monotonic()
        with self._state_lock:
            if self._credits_in_window(now) + cost > self.daily_credits:
                oldest = self._credits[0][0] if self._credits else now
                return self._too_many(
                    "API credits for the last 24 hours are exhausted", oldest + 86_400 - now
                )
            if self._in_flight.get(key, 0) >= self.concurrency_limit:
                return self._too_many("The concurrency limit for this user is exceeded", 1.0)
            self._credits.append((now, cost))
            self._credits_used += cost
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
        self._request_state.in_flight = key
        return None

    def dispatch(self, request: Request) -> Response:
        self._request_state.in_flight = None
        try:
            return super().dispatch(request)
        finally:
            key = getattr(self._request_state, "in_flight", None)
            if key is not None:
                with self._state_lock:
                    self._in_flight[key] = max(0, self._in_flight.get(key, 1) - 1)
                self._request_state.in_flight = None

    def _too_many(self, message: str, retry_after: float) -> Response:
        response = zoho_error(
            429, "TOO_MANY_REQUESTS", message, {"retry_after": max(1, math.ceil(retry_after))}
        )
        response.headers["Retry-After"] = self.retry_after_header(retry_after)
        return response

    def rate_limited(self, retry_after: float) -> Response:
        return self._too_many("Rate limit exceeded. Please retry after the specified time.", retry_after)

    def error_response(self, status: int) -> Response:
        if status == 429:
            return self.rate_limited(1.0)
        if status == 401:
            return zoho_error(401, "INVALID_TOKEN", "invalid oauth token")
        if status == 403:
            return zoho_error(
                403, "NO_PERMISSION", "permission denied", {"permissions": ["Crm_Implied_Api_Access"]}
            )
        if status == 404:
            return zoho_error(
                404, "INVALID_URL_PATTERN", "Please check if the URL trying to access is a correct one"
            )
        if status == 400:
            return zoho_error(
                400,
                "INVALID_REQUEST",
                "unable to process your request. please verify whether you have entered proper method name, parameter and parameter values.",
            )
        if status in (502, 503, 504):
            return zoho_error(
                status, "SERVICE_UNAVAILABLE", "service temporarily unavailable, try again later"
            )
        return zoho_error(status, "INTERNAL_ERROR", "Internal Server Error")

    def not_found(self, request: Request) -> Response:
        return self.error_response(404)

    def method_not_allowed(self, request: Request) -> Response:
        return zoho_error(
            405,
            "INVALID_REQUEST_METHOD",
            "The http request method type is not a valid one",
            {"resource_path_index": 1},
        )

    def common_headers(self, request: Request, key: str | None) -> dict[str, str]:
        if key is None:
            return {}
        with self._state_lock:
            used = self._credits_in_window(time.monotonic())
            wall = self._token_wall_expiry.get(key)
        headers = {
            "X-RATELIMIT-DAY-LIMIT": str(self.daily_credits),
            "X-RATELIMIT-DAY-REMAINING": str(max(0, self.daily_credits - used)),
        }
        if wall is not None:
            headers["X-ACCESSTOKEN-RESET"] = datetime.fromtimestamp(wall, tz=UTC).strftime(
                "%Y-%m-%dT%H:%M:%S+00:00"
            )
        window = self.limiter()
        if window is not None:
            limit = window.limit
            headers["X-RATELIMIT-LIMIT"] = str(limit.max_requests)
            headers["X-RATELIMIT-REMAINING"] = str(window.remaining(key))
            headers["X-RATELIMIT-RESET"] = str(math.ceil(limit.interval_seconds))
        return headers

    # -- routes ----------------------------------------------------------------------------------

    def register_routes(self, router: Router) -> None:
        router.add("POST", r"/oauth/v2/token", self.token_endpoint, auth=False)
        router.add("GET", rf"{API}/org", self.org)
        router.add("GET", rf"{API}/settings/fields", self.fields_metadata)
        router.add("GET", rf"{API}/(?P<module>\w+)/deleted", self.deleted_records)
        router.add("POST", rf"{API}/(?P<module>\w+)/upsert", self.upsert)
        router.add("PUT", rf"{API}/(?P<module>\w+)", self.update)
        router.add("GET", rf"{API}/(?P<module>\w+)", self.list_records)

    def _info(self) -> StoreInfo:
        return store_info(self.db())

    def _module(self, module: str) -> ObjectDef | Response:
        found = self._info().objects.get(module)
        if found is None:
            return zoho_error(
                400, "INVALID_MODULE", "the module name given seems to be invalid", {"resource_path_index": 0}
            )
        return found

    def org(self, request: Request) -> Response:
        return Response.json(
            200,
            {
                "org": [
                    {
                        "id": f"{ID_PREFIX}000000000001",
                        "company_name": "Sandbox GmbH",
                        "domain_name": f"org{ORG_ID}",
                        "zgid": ORG_ID,
                        "primary_email": USER["email"],
                        "currency": "Euro - EUR",
                        "iso_code": "EUR",
                        "time_zone": "Europe/Berlin",
                        "country_code": "DE",
                        "type": "production",
                    }
                ]
            },
        )

    # -- metadata --------------------------------------------------------------------------------

    def fields_metadata(self, request: Request) -> Response:
        module = request.param("module")
        if not module:
            return zoho_error(
                400, "REQUIRED_PARAM_MISSING", "required param is missing", {"param_name": "module"}
            )
        obj = self._module(module)
        if isinstance(obj, Response):
            return obj
        entries: list[dict[str, object]] = []
        stored_properties = set(RECORD_PROPERTIES.values())
        names = [*(n for n in obj.field_names if n not in stored_properties), *SYSTEM_USER_FIELDS]
        for position, name in enumerate(names):
            field = next((f for f in obj.fields if f.name == name), None)
            lookup = LOOKUPS.get(obj.name, {}).get(name)
            if name in SYSTEM_USER_FIELDS:
                data_type, json_type = "ownerlookup" if name == "Owner" else "lookup", "jsonobject"
            elif lookup is not None:
                data_type, json_type = "lookup", "jsonobject"
            else:
                assert field is not None
                data_type = {
                    "number": "currency",
                    "date": "date",
                    "datetime": "datetime",
                    "boolean": "boolean",
                }.get(field.type, "text")
                json_type = JSON_TYPES[field.type]
            entries.append(
                {
                    "api_name": name,
                    "id": f"{ID_PREFIX}{5_000_000 + position:012d}",
                    "field_label": name.replace("_", " "),
                    "display_label": name.replace("_", " "),
                    "data_type": data_type,
                    "json_type": json_type,
                    "custom_field": name not in STANDARD_FIELDS.get(obj.name, set())
                    and name not in SYSTEM_USER_FIELDS,
                    "system_mandatory": bool(field and field.required),
                    "read_only": name in ("id", "Created_Time", "Modified_Time", "Created_By", "Modified_By"),
                    "unique": {"casesensitive": "false"} if name in UNIQUE_FIELDS else {},
                    "lookup": {"module": {"api_name": lookup[0]}} if lookup else {},
                    "visible": True,
                    "sortable": name in SORT_COLUMNS,
                }
            )
        return Response.json(200, {"fields": entries})

    # -- reads -----------------------------------------------------------------------------------

    def _ensure_index(self, table: str, column: str, *, where: str = "") -> None:
        """Create an index the simulator's own queries need (once, on a writable connection)."""
        if (table, column) in self._indexed:
            return
        with self._index_lock:
            if (table, column) in self._indexed:
                return
            name = quote(f"{table}__zoho_{column.strip('_')}")
            with closing(open_store(self.store_path)) as conn, conn:
                conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {quote(table)} ({quote(column)}) {where}")
            self._indexed.add((table, column))

    def _since(self, request: Request) -> str | Response:
        """The exclusive If-Modified-Since bound as the store's canonical text ("" when absent)."""
        header = request.header("If-Modified-Since")
        if header is None:
            return ""
        instant = parse_instant(header)
        if instant is None:
            return zoho_error(
                400,
                "INVALID_DATA",
                "invalid data",
                {"api_name": "If-Modified-Since", "json_path": "$.headers"},
            )
        # Modified_Time has whole seconds: "modified after 10:00:00" starts at 10:00:01.
        start = instant.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
        return canonical(start)

    def _int_param(
        self, request: Request, name: str, default: int, low: int, high: int | None
    ) -> int | Response:
        raw = request.param(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            return zoho_error(400, "INVALID_DATA", "invalid data", {"param_name": name})
        if value < low or (high is not None and value > high):
            return zoho_error(400, "INVALID_DATA", "invalid data", {"param_name": name})
        return value

    def list_records(self, request: Request, module: str) -> Response:
        obj = self._module(module)
        if isinstance(obj, Response):
            return obj
        fields_param = request.param("fields")
        if not fields_param:
            return zoho_error(
                400, "REQUIRED_PARAM_MISSING", "required param is missing", {"param_name": "fields"}
            )
        wanted = [name.strip() for name in fields_param.split(",") if name.strip()]
        if len(wanted) > MAX_FIELDS:
            return zoho_error(
                400, "LIMIT_EXCEEDED", "limit exceeded", {"limit": MAX_FIELDS, "param_name": "fields"}
            )
        per_page = self._int_param(request, "per_page", DEFAULT_PER_PAGE, 1, MAX_PER_PAGE)
        if isinstance(per_page, Response):
            return per_page
        sort_by = request.param("sort_by") or "id"
        if sort_by not in SORT_COLUMNS:
            return zoho_error(
                400,
                "INVALID_DATA",
                "invalid data",
                {"param_name": "sort_by", "supported_values": list(SORT_COLUMNS)},
            )
        sort_order = request.param("sort_order") or "desc"
        if sort_order not in ("asc", "desc"):
            return zoho_error(
                400,
                "INVALID_DATA",
                "invalid data",
                {"param_name": "sort_order", "supported_values": ["asc", "desc"]},
            )
        since = self._since(request)
        if isinstance(since, Response):
            return since
        converted = request.param("converted") or "false"
        if converted not in ("false", "true", "both"):
            return zoho_error(
                400,
                "INVALID_DATA",
                "invalid data",
                {"param_name": "converted", "supported_values": ["false", "true", "both"]},
            )
        if RECORD_PROPERTIES["$converted"] not in obj.field_names:
            converted = "both"  # only Leads are converted; elsewhere the parameter changes nothing
        column = SORT_COLUMNS[sort_by] or obj.key
        if column == "_created":
            self._ensure_index(obj.name, "_created")
        token_text = request.param("page_token")
        token: PageToken | None = None
        page = 1
        if token_text:
            try:
                token = PageToken.decode(token_text)
            except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
                return zoho_error(400, "INVALID_DATA", "invalid data", {"param_name": "page_token"})
            if token.expires <= time.time():
                return zoho_error(
                    400,
                    "EXPIRED_VALUE",
                    "Page token expired",
                    {"api_name": "page_token", "json_path": "$.query.page_token"},
                )
            for name, bound, given in (
                ("module", token.module, obj.name),
                ("sort_by", token.sort_by, sort_by),
                ("sort_order", token.sort_order, sort_order),
                ("If-Modified-Since", token.since, since),
            ):
                if bound != given:
                    return zoho_error(
                        400, "TOKEN_BOUND_DATA_MISMATCH", "token bound data mismatch", {"param_name": name}
                    )
            if token.served >= self.page_token_limit:
                return zoho_error(
                    400,
                    "PAGINATION_LIMIT_EXCEEDED",
                    f"You can only get upto {self.page_token_limit} records using page_token param",
                    {"param_name": "page_token"},
                )
            page = token.served // per_page + 1
        else:
            page_value = self._int_param(request, "page", 1, 1, None)
            if isinstance(page_value, Response):
                return page_value
            page = page_value
            if page * per_page > DISCRETE_PAGE_LIMIT:
                return zoho_error(
                    400,
                    "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
                    f"You can only get the first {DISCRETE_PAGE_LIMIT} records without using page_token param",
                    {"limit": DISCRETE_PAGE_LIMIT},
                )
        rows, more = self._page(obj, column, sort_order, since, per_page, page, token, converted)
        if not rows:
            # Nothing modified since the header's instant is "not modified"; an empty list is "no content".
            return Response(304 if since else 204)
        served = (token.served if token else (page - 1) * per_page) + len(rows)
        next_token = None
        expiry = None
        if more:
            last = rows[-1]
            expires = time.time() + self.page_token_ttl_seconds
            next_token = PageToken(
                obj.name,
                sort_by,
                sort_order,
                since,
                str(last["__sort"]),
                int(last["__rowid"]),
                served,
                expires,
            ).encode()
            expiry = time_text(datetime.fromtimestamp(expires, tz=UTC))
        data = self._render(obj, wanted, rows)
        return Response.json(
            200,
            {
                "data": data,
                "info": {
                    "call": False,
                    "per_page": per_page,
                    "next_page_token": next_token,
                    "count": len(data),
                    "sort_by": sort_by,
                    "page": page,
                    "previous_page_token": token_text or None,
                    "page_token_expiry": expiry,
                    "sort_order": sort_order,
                    "email": False,
                    "more_records": more,
                },
            },
        )

    def _page(
        self,
        obj: ObjectDef,
        column: str,
        sort_order: str,
        since: str,
        per_page: int,
        page: int,
        token: PageToken | None,
        converted: str = "both",
    ) -> tuple[list[sqlite3.Row], bool]:
        """One page by keyset (after a token) or offset (page numbers, at most 2,000 deep)."""
        conditions = ["_deleted_at IS NULL"]
        params: list[object] = []
        if converted != "both":
            conditions.append(f"coalesce({quote(RECORD_PROPERTIES['$converted'])}, 0) = ?")
            params.append(1 if converted == "true" else 0)
        if since:
            conditions.append("_modified >= ?")
            params.append(since)
        direction = "ASC" if sort_order == "asc" else "DESC"
        sort = quote(column)
        if column == obj.key:
            order = f"{sort} {direction}"
            if token is not None:
                conditions.append(f"{sort} {'>' if direction == 'ASC' else '<'} ?")
                params.append(token.last_value)
        else:
            order = f"{sort} {direction}, rowid {direction}"
            if token is not None:
                conditions.append(f"({sort}, rowid) {'>' if direction == 'ASC' else '<'} (?, ?)")
                params.extend([token.last_value, token.last_rowid])
        offset = 0 if token is not None else (page - 1) * per_page
        conn = self.db()
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            f"SELECT rowid AS __rowid, {sort} AS __sort, * FROM {quote(obj.name)}"
            f" WHERE {' AND '.join(conditions)} ORDER BY {order} LIMIT ? OFFSET ?",
            [*params, per_page + 1, offset],
        ).fetchall()
        return rows[:per_page], len(rows) > per_page

    def _render(self, obj: ObjectDef, wanted: list[str], rows: list[sqlite3.Row]) -> list[dict[str, object]]:
        """Records as the API shows them: ``id`` plus the requested fields (unknown names are ignored)."""
        types = {f.name: f.type for f in obj.fields}
        lookups = LOOKUPS.get(obj.name, {})
        stored_properties = set(RECORD_PROPERTIES.values())
        names = [
            n
            for n in wanted
            if n != "id"
            and (
                (n in types and n not in stored_properties)
                or n in SYSTEM_USER_FIELDS
                or RECORD_PROPERTIES.get(n) in types
            )
        ]
        resolved: dict[str, dict[str, str | None]] = {}
        for name in names:
            if name in lookups:
                target, label = lookups[name]
                ids = sorted({str(row[name]) for row in rows if row[name] is not None})
                resolved[name] = self._names(target, label, ids)
        currency_field = next((n for n in names if types.get(n) == "number"), None)
        out: list[dict[str, object]] = []
        for row in rows:
            record: dict[str, object] = {}
            for name in names:
                if name in SYSTEM_USER_FIELDS:
                    record[name] = dict(USER)
                elif name in lookups:
                    value = row[name]
                    record[name] = (
                        None if value is None else {"name": resolved[name].get(str(value)), "id": str(value)}
                    )
                elif name in RECORD_PROPERTIES:
                    # An unconverted lead: $converted false, $converted_detail an empty object.
                    column = RECORD_PROPERTIES[name]
                    value = json_value(types[column], row[column])
                    record[name] = value if value is not None else ({} if types[column] == "json" else False)
                else:
                    record[name] = json_value(types[name], row[name])
            if currency_field is not None:
                code = row["Currency"] if "Currency" in types else "EUR"
                record["$currency_symbol"] = CURRENCY_SYMBOLS.get(str(code or "EUR"), str(code))
            record["id"] = str(row[obj.key])
            out.append(record)
        return out

    def _names(self, table: str, label: str, ids: list[str]) -> dict[str, str | None]:
        if not ids:
            return {}
        marks = ", ".join("?" for _ in ids)
        found = (
            self.db()
            .execute(f"SELECT id, {quote(label)} FROM {quote(table)} WHERE id IN ({marks})", ids)
            .fetchall()
        )
        return {str(row[0]): row[1] for row in found}

    def deleted_records(self, request: Request, module: str) -> Response:
        obj = self._module(module)
        if isinstance(obj, Response):
            return obj
        kind = request.param("type") or "all"
        if kind not in ("all", "recycle", "permanent"):
            return zoho_error(
                400,
                "PATTERN_NOT_MATCHED",
                "Please check whether the input values are correct",
                {"param_name": "type"},
            )
        per_page = self._int_param(request, "per_page", DEFAULT_PER_PAGE, 1, MAX_PER_PAGE)
        if isinstance(per_page, Response):
            return per_page
        page = self._int_param(request, "page", 1, 1, None)
        if isinstance(page, Response):
            return page
        since = self._since(request)
        if isinstance(since, Response):
            return since
        self._ensure_index(obj.name, "_deleted_at", where="WHERE _deleted_at IS NOT NULL")
        purge_line = canonical(datetime.now(UTC) - timedelta(days=RECYCLE_BIN_DAYS))
        conditions = ["_deleted_at IS NOT NULL"]
        params: list[object] = []
        if since:
            conditions.append("_deleted_at >= ?")
            params.append(since)
        if kind == "recycle":
            conditions.append("_deleted_at >= ?")
            params.append(purge_line)
        elif kind == "permanent":
            conditions.append("_deleted_at < ?")
            params.append(purge_line)
        conn = self.db()
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            f"SELECT * FROM {quote(obj.name)} WHERE {' AND '.join(conditions)}"
            " ORDER BY _deleted_at DESC, rowid DESC LIMIT ? OFFSET ?",
            [*params, per_page + 1, (page - 1) * per_page],
        ).fetchall()
        more = len(rows) > per_page
        rows = rows[:per_page]
        if not rows:
            return Response(304 if since else 204)
        data = []
        user = {"name": USER["name"], "id": USER["id"]}
        for row in rows:
            recycled = row["_deleted_at"] >= purge_line
            label = " ".join(str(row[n]) for n in DISPLAY_NAME[obj.name] if row[n]) if recycled else None
            data.append(
                {
                    "deleted_by": dict(user) if recycled else None,
                    "id": str(row[obj.key]),
                    "display_name": label or None,
                    "type": "recycle" if recycled else "permanent",
                    "created_by": dict(user) if recycled else None,
                    "deleted_time": time_text(datetime.fromisoformat(row["_deleted_at"])),
                }
            )
        return Response.json(
            200,
            {
                "data": data,
                "info": {"per_page": per_page, "count": len(data), "page": page, "more_records": more},
            },
        )

    # -- upsert ----------------------------------------------------------------------------------

    def upsert(self, request: Request, module: str) -> Response:
        obj = self._module(module)
        if isinstance(obj, Response):
            return obj
        try:
            body = request.json()
        except ValueError:
            return zoho_error(400, "INVALID_DATA", "body", {})
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not data:
            return zoho_error(
                400,
                "MANDATORY_NOT_FOUND",
                "required field not found",
                {"api_name": "data", "json_path": "$.data"},
            )
        if len(data) > UPSERT_MAX_RECORDS:
            return zoho_error(
                400,
                "LIMIT_EXCEEDED",
                "limit exceeded",
                {"limit": UPSERT_MAX_RECORDS, "api_name": "data", "json_path": "$.data"},
            )
        allowed = [
            *SYSTEM_DUPLICATE_FIELDS.get(obj.name, ()),
            *(f for f in UNIQUE_FIELDS if f in obj.field_names),
        ]
        check_fields = body.get("duplicate_check_fields") or allowed
        if not isinstance(check_fields, list) or any(f not in allowed for f in check_fields):
            return zoho_error(
                400,
                "INVALID_DATA",
                "invalid data",
                {
                    "api_name": "duplicate_check_fields",
                    "json_path": "$.duplicate_check_fields",
                    "supported_values": allowed,
                },
            )
        for name in check_fields:
            self._ensure_index(obj.name, name)
        results: list[dict[str, object]] = []
        with self._write_lock, closing(open_store(self.store_path)) as conn, conn:
            info = store_info(conn)
            for index, record in enumerate(data):
                results.append(
                    upsert_one(conn, info, obj.name, check_fields, index, record, self.record_faults)
                )
        succeeded = sum(1 for r in results if r["status"] == "success")
        status = 200 if succeeded == len(results) else 207 if succeeded else 400
        return Response.json(status, {"data": results})

    # -- update ----------------------------------------------------------------------------------

    def update(self, request: Request, module: str) -> Response:
        """``PUT /crm/v8/{module}``: up to 100 records by ``id``, one result per record, in order.

        HTTP 200 when every record was updated, 207 for a mix, 400 when none was (still one result
        each); an unknown id is that record's ``INVALID_DATA`` on ``id``.
        """
        obj = self._module(module)
        if isinstance(obj, Response):
            return obj
        try:
            body = request.json()
        except ValueError:
            return zoho_error(400, "INVALID_DATA", "body", {})
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not data:
            return zoho_error(
                400,
                "MANDATORY_NOT_FOUND",
                "required field not found",
                {"api_name": "data", "json_path": "$.data"},
            )
        if len(data) > UPSERT_MAX_RECORDS:
            return zoho_error(
                400,
                "LIMIT_EXCEEDED",
                "limit exceeded",
                {"limit": UPSERT_MAX_RECORDS, "api_name": "data", "json_path": "$.data"},
            )
        with self._write_lock, closing(open_store(self.store_path)) as conn, conn:
            info = store_info(conn)
            results = [
                update_one(conn, info, obj.name, index, record, self.record_faults)
                for index, record in enumerate(data)
            ]
        succeeded = sum(1 for r in results if r["status"] == "success")
        status = 200 if succeeded == len(results) else 207 if succeeded else 400
        return Response.json(status, {"data": results})


# --- the sandbox contract ----------------------------------------------------------------------------


# Canonical lead status -> the Lead_Status values a rep would have picked (one chosen by the lead's ref).
# A converted lead keeps the status it had when it was converted; $converted tells it apart.
_LEAD_STATUS_VALUES: dict[str, tuple[str, ...]] = {
    "new": ("Not Contacted",),
    "working": ("Attempted to Contact", "Contacted"),
    "nurturing": ("Contact in Future",),
    "qualified": ("Pre-Qualified",),
    "unqualified": ("Junk Lead", "Lost Lead", "Not Qualified"),
    "converted": ("Contacted", "Pre-Qualified"),
}
# The seeds' lead sources in Lead_Source's picklist.
_LEAD_SOURCE_VALUES = {"web": "Web Research", "seminar": "Internal Seminar"}


class ZohoSandbox(SandboxCrm):
    """Zoho CRM in the sandbox: Accounts, Contacts, Deals, Leads with Zoho's field names and 19-digit ids."""

    system = "zoho"
    timestamp_format = "iso_offset"
    objects = OBJECTS
    kinds = MappingProxyType({"account": "Accounts", "contact": "Contacts", "deal": "Deals", "lead": "Leads"})
    # Zoho's standard sales pipeline.
    stage_values = MappingProxyType(
        {
            "prospecting": "Qualification",
            "qualification": "Needs Analysis",
            "proposal": "Proposal/Price Quote",
            "negotiation": "Negotiation/Review",
            "closed_won": "Closed Won",
            "closed_lost": "Closed Lost",
        }
    )

    def __init__(self) -> None:
        # Ids increase within one store; one counter per generator (build_store makes one per store).
        self._counters: weakref.WeakKeyDictionary[Any, itertools.count[int]] = weakref.WeakKeyDictionary()

    def new_key(self, kind: Kind, rng: Any) -> str:
        counter = self._counters.get(rng)
        if counter is None:
            # Ids are unique across an org's modules: kinds drawn from streams of their own (leads)
            # count in a range of their own, away from the accounts', contacts' and deals' counter.
            low = 300_000 if kind == "lead" else 100_000
            counter = itertools.count(rng.randrange(low, low + 100_000) * 1000)
            self._counters[rng] = counter
        return f"{ID_PREFIX}{next(counter):012d}"

    def row(self, kind: Kind, seed: Any, key: Any, refs: Mapping[str, Any]) -> dict[str, Any]:
        if kind == "account":
            return {
                "id": key,
                "Account_Name": seed.name,
                "Website": seed.website,
                "Phone": seed.phone,
                "Billing_Street": seed.street,
                "Billing_City": seed.city,
                "Billing_Code": seed.postal_code,
                "Billing_Country": seed.country,
                "Industry": seed.industry,
                "Annual_Revenue": float(seed.annual_revenue) if seed.annual_revenue else None,
            }
        if kind == "contact":
            return {
                "id": key,
                "First_Name": seed.first_name,
                "Last_Name": seed.last_name,
                "Email": seed.email,
                "Phone": seed.phone,
                "Title": seed.title,
                "Mailing_Street": seed.street,
                "Mailing_City": seed.city,
                "Mailing_Zip": seed.postal_code,
                "Mailing_Country": seed.country,
                "Date_of_Birth": seed.birth_date.isoformat() if seed.birth_date else None,
                "Account_Name": refs.get(seed.account_ref) if seed.account_ref else None,
            }
        if kind == "lead":
            return self._lead_row(seed, key, refs)
        return {
            "id": key,
            "Deal_Name": seed.name,
            "Amount": float(seed.amount) if seed.amount else None,
            "Currency": seed.currency,
            "Stage": self.stage_values[seed.stage],
            "Closing_Date": seed.close_date.isoformat() if seed.close_date else None,
            "Account_Name": refs.get(seed.account_ref) if seed.account_ref else None,
        }

    @staticmethod
    def _lead_row(seed: Any, key: Any, refs: Mapping[str, Any]) -> dict[str, Any]:
        """A lead: the canonical status as a Lead_Status (Zoho has no funnel stage); a converted lead
        keeps its last status and carries $converted and $converted_detail (the contact it became)."""
        if seed.status not in _LEAD_STATUS_VALUES:
            raise ValueError(f"unknown lead status {seed.status!r}")
        # Converting makes the contact: a seed converted into no contact the store holds stays a
        # qualified lead.
        contact = refs.get(seed.contact_ref) if seed.contact_ref else None
        converted = seed.status == "converted" and seed.converted is not None and contact is not None
        choices = _LEAD_STATUS_VALUES[
            "qualified" if seed.status == "converted" and not converted else seed.status
        ]
        status = choices[sum(map(ord, seed.ref)) % len(choices)]
        assert status in LEAD_STATUSES
        source = None
        if seed.lead_source:
            source = _LEAD_SOURCE_VALUES.get(seed.lead_source.lower(), seed.lead_source)
            source = source if source in LEAD_SOURCES else "Advertisement"
        detail: dict[str, Any] = {}
        if converted:
            assert seed.converted is not None
            detail = {
                "convert_user": {"name": USER["name"], "id": USER["id"]},
                "contact": contact,
                "account": None,
                "deal": None,
                "converted_time": time_text(seed.converted),
            }
        return {
            "id": key,
            "First_Name": seed.first_name,
            "Last_Name": seed.last_name,
            "Email": seed.email,
            "Phone": seed.phone,
            "Company": seed.company,
            "Designation": seed.title,
            "Country": seed.country,
            "Lead_Status": status,
            "Lead_Source": source,
            RECORD_PROPERTIES["$converted"]: converted,
            RECORD_PROPERTIES["$converted_detail"]: detail,
        }

    def start(self, store: Path, *, token_ttl_seconds: float | None = None) -> Started:
        simulator = ZohoSimulator(
            store,
            client_id=f"1000.{secrets.token_hex(15).upper()}",
            client_secret=secrets.token_hex(21),
            refresh_token=f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}",
            token_ttl_seconds=DEFAULT_TOKEN_TTL if token_ttl_seconds is None else token_ttl_seconds,
        )
        base_url = simulator.start()
        return Started(
            simulator,
            {
                "ZOHO_BASE_URL": base_url,
                "ZOHO_ACCOUNTS_URL": base_url,
                "ZOHO_CLIENT_ID": simulator.client_id,
                "ZOHO_CLIENT_SECRET": simulator.client_secret,
                "ZOHO_REFRESH_TOKEN": simulator.refresh_token,
            },
        )

    def write_case(self, store: Path) -> WriteCase:
        with closing(open_store(store, readonly=True)) as conn:
            found = conn.execute(
                "SELECT id FROM Accounts WHERE _deleted_at IS NULL ORDER BY rowid LIMIT 1"
            ).fetchone()
        account = {"id": str(found[0])} if found else None
        accepted: list[dict[str, Any]] = [
            {
                "External_Id": "ERP-C-000001",
                "First_Name": "Lena",
                "Last_Name": "Neumann",
                "Email": "lena.neumann@nordwind-logistik.de",
                "Title": "Head of Purchasing",
                "Account_Name": account,
            },
            {
                "External_Id": "ERP-C-000002",
                "First_Name": "Marco",
                "Last_Name": "Bianchi",
                "Email": "m.bianchi@ventoitalia.it",
            },
        ]
        rejected: list[dict[str, Any]] = [
            {"External_Id": "ERP-C-900001", "First_Name": "Nameless", "Email": "no.last.name@example.com"},
        ]
        return WriteCase("Contacts", "External_Id", accepted, rejected, "MANDATORY_NOT_FOUND")

    def update_case(self, store: Path) -> UpdateCase:
        with closing(open_store(store, readonly=True)) as conn:
            live = [
                str(r[0])
                for r in conn.execute(
                    "SELECT id FROM Accounts WHERE _deleted_at IS NULL ORDER BY rowid LIMIT 2"
                )
            ]
        changed: list[dict[str, Any]] = [
            {"id": account_id, "ERP_Customer_Number": f"C-20{n:03d}", "Phone": f"+49 89 555 02{n:02d}"}
            for n, account_id in enumerate(live, 1)
        ]
        return UpdateCase(
            object_name="Accounts",
            changed=changed,
            field="ERP_Customer_Number",
            expected={r["id"]: r["ERP_Customer_Number"] for r in changed},
            unknown={"id": f"{ID_PREFIX}999999999999", "ERP_Customer_Number": "C-9"},
            unknown_code="INVALID_DATA",
        )


SANDBOX = ZohoSandbox()
