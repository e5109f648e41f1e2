"""SugarCRM REST API (v10 / v11_x) simulator over a record store, and the sandbox contract ``SANDBOX``.

What it serves, as SugarCRM's public documentation and source describe it:

* **Auth**: OAuth 2.0 password grant ``POST /rest/{v}/oauth2/token`` (JSON or form body with
  ``grant_type``, ``client_id`` (``sugar``), ``client_secret`` (empty), ``username``, ``password``,
  ``platform``) answering ``access_token``, ``expires_in`` (3600), ``token_type: bearer``,
  ``scope: null``, ``refresh_token``, ``refresh_expires_in``, ``download_token``;
  ``grant_type=refresh_token`` rotates both tokens (the old refresh token stops working). Data calls
  send ``OAuth-Token: <access_token>``. Wrong credentials: 401 ``need_login``; an unknown or expired
  access token: 401 ``invalid_grant`` "The access token provided is invalid."; a bad refresh token:
  400 ``invalid_grant``. Errors are ``{"error": <label>, "error_message": <text>}`` with the HTTP
  status of Sugar's ``SugarApiException`` classes (need_login 401, invalid_grant 401,
  not_authorized 403, no_method/not_found 404, missing_parameter/invalid_parameter 422,
  fatal_error 500, maintenance 503).
* **Lists**: ``GET /rest/{v}/{module}``, ``GET|POST /rest/{v}/{module}/filter`` with ``fields``
  (``id`` and ``date_modified`` always returned), ``max_num`` (default 20, capped at the instance's
  ``max_record_fetch_size``, 1000, silently), ``offset``, ``order_by`` (``date_modified:asc``;
  default ``date_modified:DESC``; ``id`` breaks ties so offset paging is stable), ``filter``
  (``filter[0][date_modified][$gte]=...`` or a JSON string; operators ``$equals $not_equals $gt $gte
  $lt $lte $in $not_in $is_null $not_null $starts $ends $contains $between $and $or``) and
  ``deleted=true`` (FilterApi then stops adding ``deleted = 0``: deleted rows come back with
  ``"deleted": true`` - that is how deletes are read). Pages are
  ``{"next_offset": N | -1, "records": [...]}``; records carry ``_acl`` and ``_module``; empty values
  are ``""`` as Sugar renders them, currency amounts are decimal strings.
* **Metadata**: ``GET /rest/{v}/metadata?type_filter=modules&module_filter=Accounts`` lists the
  module's field definitions, Studio fields added later (``*_c``) included.
* **Write side**: ``PATCH|PUT /rest/{v}/{module}/sync_key/{value}`` and
  ``/rest/{v}/integrate/{module}/sync_key/{value}`` (v11_10+, admin only) upsert by ``sync_key``:
  201 ``{"record": id}`` when created, 200 when updated (a deleted record with that key is restored);
  ``POST /rest/{v}/bulk`` runs ``{"requests": [{"url", "method", "data"}]}`` one after the other and
  answers ``[{"contents", "headers", "status"}]``. A create without a required field is refused
  per request with 422 ``missing_parameter``.
* **Limits**: SugarCRM documents no per-request rate-limit headers; SugarCloud blocks traffic above
  roughly 20 requests/s. The simulator enforces an optional sliding window (``rate_limit``) and
  answers 429 with ``Retry-After`` only.

Docs relied on:
https://support.sugarcrm.com/documentation/sugar_developer/sugar_developer_guide_25.1/integration/web_services/rest_api/endpoints/bulk_post
https://support.sugarcrm.com/documentation/sugar_developer/sugar_developer_guide_14.2/integration/web_services/rest_api/endpoints/integratemodulesync_key_field_namesync_key_field_value_patch
https://support.sugarcrm.com/Documentation/Sugar_Developer/Sugar_Developer_Guide_10.2/Integration/Web_Services/REST_API/Endpoints/modulesync_keysync_key_field_value_PATCH/
http://support.sugarcrm.com/Documentation/Sugar_Developer/Sugar_Developer_Guide_8.0/Integration/Web_Services/REST_API/Endpoints/module_GET/
https://support.sugarcrm.com/documentation/sugar_developer/sugar_developer_guide_14.1/cookbook/web_services/rest_api/bash/how_to_manipulate_records_crud
https://riptutorial.com/sugarcrm/example/30820/logging-in (token request and answer)
https://www.aurinko.io/blog/sugarcrm-invalid-refresh-token/ (refresh tokens rotate)
https://support.bedrockdata.com/hc/en-us/articles/360023730392-SugarCRM-Connector-Technical-Overview (20 req/s)
https://docs.zynk.com/workflow/documentation/sugarai/rest/connection.html (release -> REST version table)
SugarCRM's include/api/SugarApiException.php and clients/base/api/FilterApi.php (status codes, labels,
``deleted`` argument, mandatory fields).
"""

from __future__ import annotations

import hmac
import json
import random
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from crm_pipelines_sandbox.simulators.base import (
    Faults,
    RateLimit,
    Request,
    Response,
    Router,
    SimulatorServer,
)
from crm_pipelines_sandbox.simulators.records import (
    TIMESTAMP_FORMATS,
    ObjectDef,
    Stamped,
    StoreInfo,
    fetch_records,
    insert_rows,
    open_store,
    quote,
    store_info,
    update_rows,
)
from crm_pipelines_sandbox.simulators.sugarcrm_filter import FilterCompiler, FilterError, nest
from crm_pipelines_sandbox.simulators.sugarcrm_schema import (
    API_USER_ID,
    CASE_PRIORITY_VALUES,
    CASE_SOURCE_VALUES,
    CASE_STATUS_VALUES,
    CASE_TYPE_VALUES,
    CURRENCIES,
    LEAD_SOURCE_VALUES,
    LEAD_STATUS_VALUES,
    OBJECTS,
    PROBABILITY,
    READ_ONLY,
    STAGE_VALUES,
    STORE_TO_SUGAR,
    SUGAR_TYPES,
)
from crm_pipelines_sandbox.simulators.webhook_out import WebhookOutbox, standard_webhooks_signer
from crm_pipelines_sandbox.systems import (
    Kind,
    SandboxCrm,
    SeedAccount,
    SeedCase,
    SeedContact,
    SeedDeal,
    SeedLead,
    Started,
    UpdateCase,
    WriteCase,
)

# v11_24 is Sugar 14.0; newer instances keep answering older version prefixes, so every version from
# v10 to v11_27 (Sugar 25.2/26.1) is served and unknown ones get Sugar's incorrect_version (301).
LATEST_VERSION = "v11_27"
API_VERSION = "v11_24"
_KNOWN_VERSIONS = frozenset({"v10", "v11", *(f"v11_{n}" for n in range(1, 28))})
_V = r"/rest/(?P<version>v1[01](?:_\d+)?)"
DEFAULT_CLIENT_ID = "sugar"
DEFAULT_PLATFORM = "api"
DEFAULT_TOKEN_TTL = 3600.0
REFRESH_TOKEN_TTL = 1_209_600.0  # two weeks, Sugar's default refresh token lifetime
DEFAULT_MAX_NUM = 20
MAX_NUM = 1000  # sugar_config max_record_fetch_size / max_list_limit on SugarCloud
# What SugarCloud lets through before it blocks (third-party documented; Sugar publishes no headers).
NOMINAL_RATE_LIMIT = RateLimit(20, 1.0)

_MESSAGES = {
    "need_login": "You need to be logged in to perform this action.",
    "invalid_grant": "The access token provided is invalid.",
    "not_authorized": "You are not authorized to perform this action. Contact your administrator if you need access.",
    "no_method": "Your request was not supported. Could not find the HTTP method of your request for this path.",
    "not_found": "Your requested resource was not found.  Could not find a handler for the path specified in the request.",
    "missing_parameter": "A required parameter in your request was missing.",
    "invalid_parameter": "A required parameter in your request was invalid.",
    "edit_conflict": "Your request conflicts with another edit of the same record.",
    "request_failure": "Your request failed to complete.",
    "fatal_error": "Your request failed to complete.  A fatal error occurred.  Check logs for more details.",
    "maintenance": "SugarCRM is in Maintenance Mode. Only Admins may login. Please contact your administrator for details.",
    "incorrect_version": "The version of the API you are using is not correct for the current request.",
    "too_many_requests": "Too many requests. Please retry later.",
}
# HTTP status of each SugarApiException label (and of the labels record_faults may inject).
_STATUS = {
    "incorrect_version": 301,
    "bad_request": 400,
    "need_login": 401,
    "invalid_grant": 401,
    "not_authorized": 403,
    "no_method": 404,
    "not_found": 404,
    "edit_conflict": 409,
    "request_too_large": 413,
    "missing_parameter": 422,
    "invalid_parameter": 422,
    "request_failure": 424,
    "too_many_requests": 429,
    "fatal_error": 500,
    "maintenance": 503,
    "service_unavailable": 503,
}


def sugar_error(label: str, message: str | None = None, status: int | None = None) -> Response:
    """Sugar's error body: ``{"error": label, "error_message": text}``."""
    body = {"error": label, "error_message": message or _MESSAGES.get(label, label)}
    return Response.json(status or _STATUS.get(label, 400), body)


# A case's status decides its state (Sugar's visibility dependency: Open holds New, Assigned and Pending
# Input); moving it to a closed status stamps Serve's resolved_datetime.
_CLOSED_CASE_STATUSES = frozenset({"Closed", "Rejected", "Duplicate"})


def _case_state(obj: ObjectDef, changes: dict[str, Any], at: datetime) -> dict[str, Any]:
    """The changes of a Cases write with the state (and resolved time) its status implies."""
    status = changes.get("status")
    if "state" not in obj.field_names or not isinstance(status, str) or not status:
        return changes
    closed = status in _CLOSED_CASE_STATUSES
    derived = {**changes, "state": "Closed" if closed else "Open"}
    if "resolved_datetime" in obj.field_names and "resolved_datetime" not in changes:
        derived["resolved_datetime"] = at.strftime("%Y-%m-%dT%H:%M:%S+00:00") if closed else None
    return derived


def _gateway_page(status: int) -> Response:
    """What the load balancer in front of SugarCloud answers when the web tier is gone."""
    reason = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Time-out"}[status]
    body = f"<html><head><title>{status} {reason}</title></head><body><h1>{reason}</h1></body></html>"
    return Response(status, body.encode(), {"Content-Type": "text/html"})


# --- the simulator ----------------------------------------------------------------------------------


@dataclass
class _Token:
    username: str
    expires: float


class SugarSimulator(SimulatorServer):
    """A SugarCRM instance's REST API over a record store (see :mod:`.records`).

    Args:
        store_path: The SugarCRM store (``build_store(path, SANDBOX, seeds)``).
        username: The API user (an admin: the integrate endpoints require one).
        password: Its password.
        client_id: OAuth key (``sugar`` unless an admin created another).
        client_secret: Its secret (empty for ``sugar``).
        token_ttl_seconds: Access token lifetime (``expires_in``), default 3600.
        max_num_limit: Largest page the instance serves (``max_record_fetch_size``).
        rate_limit: Requests per window and user; None lets everything through.
        faults: Injected failures.
    """

    name = "sugarcrm"

    def __init__(
        self,
        store_path: Path,
        *,
        username: str = "admin",
        password: str = "sandbox-password",
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = "",
        token_ttl_seconds: float | None = None,
        max_num_limit: int = MAX_NUM,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: RateLimit | None = None,
        faults: Faults | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> None:
        self.username = username
        # Web Logic Hooks (Admin > Web Logic Hooks): Sugar posts a record after_save to a URL. Sugar
        # signs nothing, so a relay in front of the receiver signs them as Standard Webhooks (the
        # receiver's generic sender); the sandbox sends them signed, as such a relay would.
        self.webhooks = (
            WebhookOutbox(webhook_url, standard_webhooks_signer(webhook_secret), batch_max=1)
            if webhook_url and webhook_secret
            else None
        )
        self.password = password
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl = DEFAULT_TOKEN_TTL if token_ttl_seconds is None else float(token_ttl_seconds)
        self.max_num_limit = max_num_limit
        self._tokens: dict[str, _Token] = {}
        self._refresh_tokens: dict[str, tuple[str, float]] = {}
        self._state_lock = threading.Lock()
        self._write_lock = threading.Lock()
        # Sugar error labels to answer for a sync_key on its next upsert attempts (per-record faults).
        self.record_faults: dict[str, list[str]] = {}
        super().__init__(store_path, host=host, port=port, rate_limit=rate_limit, faults=faults)
        self._ensure_indexes()

    def stop(self) -> None:
        super().stop()
        if self.webhooks is not None:
            self.webhooks.flush(timeout=5)
            self.webhooks.close()
            self.webhooks = None

    def _hook(self, module: str, event: str, record_id: str, record: dict[str, Any], **args: Any) -> None:
        """A Web Logic Hook's delivery: the module's event and the saved record."""
        if self.webhooks is None:
            return
        payload = {
            "type": f"sugarcrm.{module}.{event}",
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "data": {
                **{k: v for k, v in record.items() if isinstance(v, str | int | float | None)},
                "id": record_id,
            },
            "arguments": args,
        }
        self.webhooks.emit([payload])

    def _ensure_indexes(self) -> None:
        """Indexes Sugar has and the generic store lacks: (date_modified, id) paging and sync_key lookups."""
        with closing(open_store(self.store_path)) as conn, conn:
            for obj in store_info(conn).objects.values():
                table = quote(obj.name)
                conn.execute(
                    f"CREATE INDEX IF NOT EXISTS {quote(obj.name + '__modified_key')}"
                    f" ON {table} (_modified, {quote(obj.key)})"
                )
                if "sync_key" in obj.field_names:
                    conn.execute(
                        f"CREATE INDEX IF NOT EXISTS {quote(obj.name + '__sync_key')} ON {table} (sync_key)"
                    )
                if "case_number" in obj.field_names:
                    self._number_cases(conn, table)

    @staticmethod
    def _number_cases(conn: sqlite3.Connection, table: str) -> None:
        """case_number is Sugar's auto-increment column: number the cases in the order they were entered,
        and every case inserted later (an API create, a test's insert) the next number."""
        (highest,) = conn.execute(f"SELECT coalesce(max(case_number), 0) FROM {table}").fetchone()
        unnumbered = conn.execute(
            f"SELECT rowid FROM {table} WHERE case_number IS NULL ORDER BY _created, id"
        ).fetchall()
        conn.executemany(
            f"UPDATE {table} SET case_number = ? WHERE rowid = ?",
            [(highest + n, rowid) for n, (rowid,) in enumerate(unnumbered, start=1)],
        )
        conn.execute(
            f"CREATE TRIGGER IF NOT EXISTS {quote('Cases__case_number')} AFTER INSERT ON {table}"
            f" WHEN NEW.case_number IS NULL BEGIN UPDATE {table} SET case_number ="
            f" (SELECT coalesce(max(case_number), 0) + 1 FROM {table}) WHERE rowid = NEW.rowid; END"
        )

    # -- tokens --------------------------------------------------------------------------------

    def _issue(self, username: str) -> dict[str, object]:
        access, refresh = str(uuid.uuid4()), str(uuid.uuid4())
        now = time.monotonic()
        with self._state_lock:
            self._tokens[access] = _Token(username, now + self.token_ttl)
            self._refresh_tokens[refresh] = (username, now + REFRESH_TOKEN_TTL)
        return {
            "access_token": access,
            "expires_in": int(self.token_ttl),
            "token_type": "bearer",
            "scope": None,
            "refresh_token": refresh,
            "refresh_expires_in": int(REFRESH_TOKEN_TTL),
            "download_token": str(uuid.uuid4()),
        }

    def expire_tokens(self) -> None:
        """Make every issued access token expire now (refresh tokens stay valid, as in Sugar)."""
        with self._state_lock:
            for token in self._tokens.values():
                token.expires = 0.0

    def authenticate(self, request: Request) -> tuple[str | None, Response | None]:
        token = request.header("OAuth-Token") or request.bearer_token() or request.param("oauth_token")
        now = time.monotonic()
        with self._state_lock:
            found = self._tokens.get(token or "")
            if token is None:
                return None, sugar_error("need_login", "No valid authentication for user.")
            if found is None or found.expires <= now:
                self._tokens.pop(token, None)
                return None, sugar_error("invalid_grant")
        return found.username, None

    def rate_limited(self, retry_after: float) -> Response:
        response = sugar_error("too_many_requests")
        response.headers["Retry-After"] = self.retry_after_header(retry_after)
        return response

    def error_response(self, status: int) -> Response:
        if status == 429:
            return self.rate_limited(1.0)
        if status in (502, 503, 504):
            return _gateway_page(status) if status != 503 else sugar_error("maintenance")
        label = {
            400: "bad_request",
            401: "invalid_grant",
            403: "not_authorized",
            404: "not_found",
            409: "edit_conflict",
            422: "invalid_parameter",
        }.get(status, "fatal_error")
        return sugar_error(label, status=status)

    def not_found(self, request: Request) -> Response:
        return sugar_error("no_method")

    def method_not_allowed(self, request: Request) -> Response:
        return sugar_error("no_method")

    # -- routes --------------------------------------------------------------------------------

    def register_routes(self, router: Router) -> None:
        module = r"(?P<module>[A-Za-z][A-Za-z0-9_]*)"
        router.add("POST", _V + r"/oauth2/token", self.token, auth=False)
        router.add("POST", _V + r"/oauth2/logout", self.logout)
        router.add("GET", _V + r"/ping", self.ping)
        router.add("GET", _V + r"/me", self.me)
        router.add("GET", _V + r"/metadata", self.metadata)
        router.add("POST", _V + r"/bulk", self.bulk)
        router.add("GET", _V + r"/Currencies", self.currencies)
        for method in ("PATCH", "PUT"):
            router.add(method, _V + rf"/{module}/sync_key/(?P<value>[^/]+)", self.upsert)
            router.add(method, _V + rf"/integrate/{module}/sync_key/(?P<value>[^/]+)", self.upsert)
            router.add(
                method, _V + rf"/integrate/{module}/(?P<field>\w+)/(?P<value>[^/]+)", self.upsert_by_field
            )
        router.add("GET", _V + rf"/{module}/?", self.list_records)
        router.add("GET", _V + rf"/{module}/filter", self.list_records)
        router.add("POST", _V + rf"/{module}/filter", self.filter_post)
        router.add("GET", _V + rf"/{module}/(?:filter/)?count", self.count)
        record = r"(?P<record>[0-9a-fA-F-]{36}|-?\d+)"
        router.add("GET", _V + rf"/{module}/{record}", self.get_record)
        router.add("PUT", _V + rf"/{module}/{record}", self.update_record)

    def _version(self, version: str) -> Response | None:
        if version not in _KNOWN_VERSIONS:
            return sugar_error("incorrect_version")
        return None

    def token(self, request: Request, version: str) -> Response:
        if (bad := self._version(version)) is not None:
            return bad
        try:
            # The docs send JSON; form bodies work too (it is an OAuth 2.0 token endpoint).
            args = request.json() if request.body.lstrip().startswith(b"{") else request.form()
        except ValueError:
            args = None
        if not isinstance(args, dict):
            return sugar_error("invalid_request", "Invalid JSON in request body", 400)
        client_id = str(args.get("client_id") or "")
        client_secret = str(args.get("client_secret") or "")
        if not hmac.compare_digest(client_id, self.client_id) or not hmac.compare_digest(
            client_secret, self.client_secret
        ):
            return sugar_error("invalid_client", "The client credentials are invalid", 400)
        grant = args.get("grant_type")
        if grant == "password":
            user, password = str(args.get("username") or ""), str(args.get("password") or "")
            if not (
                hmac.compare_digest(user, self.username) and hmac.compare_digest(password, self.password)
            ):
                return sugar_error("need_login", "You must specify a valid username and password.")
            return Response.json(200, self._issue(user))
        if grant == "refresh_token":
            refresh = str(args.get("refresh_token") or "")
            with self._state_lock:
                owner = self._refresh_tokens.pop(refresh, None)
                # Sugar keeps one refresh token per user and platform: refreshing retires the others.
                if owner is not None:
                    for other in [t for t, (u, _) in self._refresh_tokens.items() if u == owner[0]]:
                        del self._refresh_tokens[other]
            if owner is None or owner[1] <= time.monotonic():
                return sugar_error("invalid_grant", "Invalid refresh token", 400)
            return Response.json(200, self._issue(owner[0]))
        return sugar_error("unsupported_grant_type", "Grant type not supported", 400)

    def logout(self, request: Request, version: str) -> Response:
        token = request.header("OAuth-Token") or request.bearer_token() or ""
        with self._state_lock:
            self._tokens.pop(token, None)
        return Response.json(200, {"success": True})

    def ping(self, request: Request, version: str) -> Response:
        return Response.json(200, "pong")

    def me(self, request: Request, version: str) -> Response:
        return Response.json(
            200,
            {
                "current_user": {
                    "type": "admin",
                    "id": "1",
                    "user_name": self.username,
                    "full_name": "Sandbox Administrator",
                    "preferences": {"timezone": "UTC", "datepref": "Y-m-d", "timepref": "H:i"},
                }
            },
        )

    def currencies(self, request: Request, version: str) -> Response:
        records = [
            {
                "id": cid,
                "name": name,
                "symbol": symbol,
                "iso4217": iso,
                "conversion_rate": str(rate),
                "status": "Active",
                "_module": "Currencies",
            }
            for iso, (cid, name, symbol, rate) in CURRENCIES.items()
        ]
        return Response.json(200, {"next_offset": -1, "records": records})

    # -- reading -------------------------------------------------------------------------------

    def _object(self, module: str) -> tuple[StoreInfo, ObjectDef] | Response:
        info = store_info(self.db())
        obj = info.objects.get(module)
        if obj is None:
            return sugar_error("no_method")
        return info, obj

    def list_records(self, request: Request, version: str, module: str) -> Response:
        args = nest(request.query)
        return self._list(version, module, args)

    def filter_post(self, request: Request, version: str, module: str) -> Response:
        try:
            body = request.json() or {}
        except ValueError:
            return sugar_error("invalid_parameter", "Invalid JSON in request body")
        if not isinstance(body, dict):
            return sugar_error("invalid_parameter", "Invalid JSON in request body")
        return self._list(version, module, {**nest(request.query), **body})

    def count(self, request: Request, version: str, module: str) -> Response:
        if (bad := self._version(version)) is not None:
            return bad
        found = self._object(module)
        if isinstance(found, Response):
            return found
        _, obj = found
        args = nest(request.query)
        try:
            sql = FilterCompiler(obj).compile(args.get("filter"))
        except FilterError as exc:
            return sugar_error("invalid_parameter", exc.message)
        where = (
            sql.where if args.get("deleted") in ("1", "true", True) else ["_deleted_at IS NULL", *sql.where]
        )
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        total = self.db().execute(f"SELECT count(*) FROM {quote(obj.name)}{clause}", sql.params).fetchone()[0]
        return Response.json(200, {"record_count": int(total)})

    def _list(self, version: str, module: str, args: dict[str, Any]) -> Response:
        if (bad := self._version(version)) is not None:
            return bad
        found = self._object(module)
        if isinstance(found, Response):
            return found
        _, obj = found
        try:
            max_num = int(args.get("max_num") or DEFAULT_MAX_NUM)
            offset = int(args.get("offset") or 0)
        except (TypeError, ValueError):
            return sugar_error("invalid_parameter", "max_num and offset must be integers")
        # Sugar's checkMaxListLimit: anything past the limit (or below 1) becomes the limit.
        if max_num < 1 or max_num > self.max_num_limit:
            max_num = self.max_num_limit
        offset = max(0, offset)
        with_deleted = str(args.get("deleted", "")).lower() in ("1", "true")
        try:
            sql = FilterCompiler(obj).compile(args.get("filter"))
            order = self._order(obj, str(args.get("order_by") or "date_modified:DESC"))
        except FilterError as exc:
            return sugar_error("invalid_parameter", exc.message)
        where = sql.where if with_deleted else ["_deleted_at IS NULL", *sql.where]
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        conn = self.db()
        conn.row_factory = sqlite3.Row
        try:
            rows = conn.execute(
                f"SELECT * FROM {quote(obj.name)}{clause} ORDER BY {order} LIMIT ? OFFSET ?",
                [*sql.params, max_num + 1, offset],
            ).fetchall()
        finally:
            conn.row_factory = None
        page, more = rows[:max_num], len(rows) > max_num
        fields = self._fields(obj, args.get("fields"), with_deleted)
        records = [self._render(obj, row, fields) for row in page]
        return Response.json(200, {"next_offset": offset + len(page) if more else -1, "records": records})

    def _order(self, obj: ObjectDef, order_by: str) -> str:
        terms = []
        for term in (t.strip() for t in order_by.split(",") if t.strip()):
            name, _, direction = term.partition(":")
            column = {"date_modified": "_modified", "date_entered": "_created"}.get(name)
            if column is None:
                if name not in obj.field_names:
                    raise FilterError(f"Unknown field: {name}")
                column = quote(name)
            terms.append(f"{column} {'DESC' if direction.strip().lower() == 'desc' else 'ASC'}")
        # The key breaks ties so offset pages neither repeat nor skip rows with equal stamps.
        terms.append(f"{quote(obj.key)} ASC")
        return ", ".join(terms)

    @staticmethod
    def _fields(obj: ObjectDef, requested: Any, with_deleted: bool) -> list[str]:
        if requested in (None, "", []):
            # The whole record, "deleted": false included (as the docs' record samples show it).
            names = list(obj.field_names)
            if "email1" in names:
                names.append("email")
            return names
        raw = requested if isinstance(requested, list) else str(requested).split(",")
        wanted = {str(n).strip() for n in raw}
        # Fields Sugar does not know are dropped; id and date_modified always come back.
        names = [n for n in obj.field_names if n in wanted or n in ("id", "date_modified")]
        if "email" in wanted and "email1" in obj.field_names:
            names.append("email")
        # `deleted` is an ordinary vardef: it comes back when asked for, and always on a deleted=true read.
        names = [n for n in names if n != "deleted"]
        if with_deleted or "deleted" in wanted:
            names.append("deleted")
        return names

    def _render(self, obj: ObjectDef, row: sqlite3.Row, fields: list[str]) -> dict[str, object]:
        types = {f.name: f.type for f in obj.fields}
        record: dict[str, object] = {}
        for name in fields:
            if name == "email":
                address = row["email1"]
                record["email"] = (
                    [
                        {
                            "email_address": address,
                            "primary_address": True,
                            "reply_to_address": False,
                            "invalid_email": False,
                            "opt_out": False,
                        }
                    ]
                    if address
                    else []
                )
                continue
            value = row[name]
            kind = types.get(name, "string")
            if kind == "boolean":
                record[name] = bool(value)
            elif kind == "datetime":
                record[name] = value
            elif value is None:
                record[name] = ""
            elif kind == "number":
                record[name] = f"{float(value):.6f}"
            else:
                record[name] = str(value)
        record["_acl"] = {"fields": {}}
        record["_module"] = obj.name
        return record

    def get_record(self, request: Request, version: str, module: str, record: str) -> Response:
        if (bad := self._version(version)) is not None:
            return bad
        found = self._object(module)
        if isinstance(found, Response):
            return found
        _, obj = found
        conn = self.db()
        conn.row_factory = sqlite3.Row
        try:
            row = conn.execute(
                f"SELECT * FROM {quote(obj.name)} WHERE {quote(obj.key)} = ? AND _deleted_at IS NULL",
                (record,),
            ).fetchone()
        finally:
            conn.row_factory = None
        if row is None:
            return sugar_error("not_found", f"Could not find record: {record} in module: {module}")
        fields = self._fields(obj, request.param("fields"), False)
        return Response.json(200, self._render(obj, row, fields))

    def metadata(self, request: Request, version: str) -> Response:
        if (bad := self._version(version)) is not None:
            return bad
        info = store_info(self.db())
        wanted = {
            m.strip() for v in request.query.get("module_filter", []) for m in v.split(",") if m.strip()
        }
        modules: dict[str, object] = {}
        for obj in info.objects.values():
            if wanted and obj.name not in wanted:
                continue
            base = {f.name for f in next((o for o in OBJECTS if o.name == obj.name), obj).fields}
            fields: dict[str, object] = {}
            for f in obj.fields:
                definition: dict[str, object] = {
                    "name": f.name,
                    "vname": f"LBL_{f.name.upper()}",
                    "type": SUGAR_TYPES.get(f.name) or STORE_TO_SUGAR[f.type],
                    "required": f.required,
                }
                if f.name not in base or f.name.endswith("_c"):
                    definition.update({"source": "custom_fields", "custom_module": obj.name})
                fields[f.name] = definition
            modules[obj.name] = {"fields": fields, "_hash": secrets.token_hex(16)}
        return Response.json(200, {"modules": modules, "_hash": secrets.token_hex(16)})

    # -- writing -------------------------------------------------------------------------------

    def upsert_by_field(
        self, request: Request, version: str, module: str, field: str, value: str
    ) -> Response:
        if field != "sync_key":
            return sugar_error(
                "invalid_parameter", f"Field {field} is not marked as sync_key for module {module}"
            )
        return self.upsert(request, version, module, value)

    def upsert(self, request: Request, version: str, module: str, value: str) -> Response:
        if (bad := self._version(version)) is not None:
            return bad
        info = store_info(self.db())
        obj = info.objects.get(module)
        if obj is None or "sync_key" not in obj.field_names:
            return sugar_error("no_method")
        try:
            data = request.json() or {}
        except ValueError:
            return sugar_error("invalid_parameter", "Invalid JSON in request body")
        if not isinstance(data, dict):
            return sugar_error("invalid_parameter", "Invalid JSON in request body")
        queued = self.record_faults.get(value)
        if queued:
            label = queued.pop(0)
            return sugar_error(label, f"Injected {label} for sync_key {value}")
        data.pop("fields", None)  # the response field list; this simulator answers the id only
        # Sugar ignores what it has no field for and what the API may not set.
        changes = {k: v for k, v in data.items() if k in obj.field_names and k not in READ_ONLY}
        changes["sync_key"] = value
        changes["modified_user_id"] = API_USER_ID
        at = datetime.now(UTC).replace(microsecond=0)  # Sugar keeps whole seconds
        with self._write_lock, closing(open_store(self.store_path)) as conn, conn:
            info = store_info(conn)
            obj = info.objects[module]
            found = conn.execute(
                f"SELECT {quote(obj.key)}, _deleted_at FROM {quote(obj.name)} WHERE sync_key = ?", (value,)
            ).fetchall()
            if len(found) > 1:
                return sugar_error(
                    "invalid_parameter",
                    f"Found multiple database records for sync_key {value} on module {module}",
                )
            # A create needs every required field; an update may only not blank one out.
            missing = [
                f.name
                for f in obj.fields
                if f.required and (f.name in changes or not found) and changes.get(f.name) in (None, "")
            ]
            if missing:
                return sugar_error("missing_parameter", f"Missing required field: {', '.join(missing)}")
            changes = _case_state(obj, changes, at)
            if not found:
                record_id = str(uuid.uuid4())
                created = {**changes, "id": record_id, "deleted": 0, "created_by": API_USER_ID}
                insert_rows(conn, info, obj.name, [Stamped(created, at, at)])
                self._hook(module, "after_save", record_id, created, isUpdate=False)
                return Response.json(201, {"record": record_id})
            record_id = str(found[0][0])
            update_rows(conn, info, obj.name, [record_id], at=at, changes=changes)
            if found[0][1] is not None:
                conn.execute(
                    f"UPDATE {quote(obj.name)} SET _deleted_at = NULL, deleted = 0 WHERE {quote(obj.key)} = ?",
                    (record_id,),
                )
            return Response.json(200, {"record": record_id})

    def update_record(self, request: Request, version: str, module: str, record: str) -> Response:
        """``PUT /{module}/{id}``: change an existing record; the answer is the record (``fields`` applies).

        Only the fields sent change; fields Sugar has no vardef for, and those the API may not set,
        are ignored. An id that is not a live record is ``not_found`` (404): a PUT never creates.
        """
        if (bad := self._version(version)) is not None:
            return bad
        found = self._object(module)
        if isinstance(found, Response):
            return found
        try:
            data = request.json() or {}
        except ValueError:
            return sugar_error("invalid_parameter", "Invalid JSON in request body")
        if not isinstance(data, dict):
            return sugar_error("invalid_parameter", "Invalid JSON in request body")
        queued = self.record_faults.get(record)
        if queued:
            label = queued.pop(0)
            return sugar_error(label, f"Injected {label} for record {record}")
        at = datetime.now(UTC).replace(microsecond=0)  # Sugar keeps whole seconds
        with self._write_lock, closing(open_store(self.store_path)) as conn, conn:
            info = store_info(conn)
            obj = info.objects[module]
            exists = conn.execute(
                f"SELECT 1 FROM {quote(obj.name)} WHERE {quote(obj.key)} = ? AND _deleted_at IS NULL",
                (record,),
            ).fetchone()
            if exists is None:
                return sugar_error("not_found", f"Could not find record: {record} in module: {module}")
            changes = {k: v for k, v in data.items() if k in obj.field_names and k not in READ_ONLY}
            blanked = [
                f.name
                for f in obj.fields
                if f.required and f.name in changes and changes[f.name] in (None, "")
            ]
            if blanked:
                return sugar_error("missing_parameter", f"Missing required field: {', '.join(blanked)}")
            changes = _case_state(obj, changes, at)
            update_rows(
                conn, info, obj.name, [record], at=at, changes={**changes, "modified_user_id": API_USER_ID}
            )
            conn.row_factory = sqlite3.Row
            row = conn.execute(
                f"SELECT * FROM {quote(obj.name)} WHERE {quote(obj.key)} = ?", (record,)
            ).fetchone()
        return Response.json(200, self._render(obj, row, self._fields(obj, request.param("fields"), False)))

    def bulk(self, request: Request, version: str) -> Response:
        if (bad := self._version(version)) is not None:
            return bad
        try:
            body = request.json() or {}
        except ValueError:
            return sugar_error("invalid_parameter", "Invalid JSON in request body")
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list):
            return sugar_error("missing_parameter", "Missing parameter: requests")
        answers = [self._sub_request(request, item) for item in requests]
        return Response.json(200, answers)

    def _sub_request(self, outer: Request, item: Any) -> dict[str, object]:
        """One request of a bulk call, routed like a top-level one (same token, no separate limit)."""
        if not isinstance(item, dict) or not item.get("url"):
            response = sugar_error("missing_parameter", "Missing parameter: url")
        else:
            parts = urlsplit("/rest/" + str(item["url"]).lstrip("/"))
            data = item.get("data")
            raw = data.encode() if isinstance(data, str) else json.dumps(data or {}).encode()
            sub = Request(
                method=str(item.get("method") or "GET").upper(),
                path=parts.path,
                query=parse_qs(parts.query, keep_blank_values=True),
                headers={**outer.headers, "content-type": "application/json"},
                body=raw if data is not None else b"",
            )
            found = self.router.match(sub.method, sub.path)
            if found is None or found is False or isinstance(found, bool):
                response = sugar_error("no_method")
            elif found[0].handler == self.bulk:
                response = sugar_error("invalid_parameter", "Bulk requests cannot be nested")
            else:
                route, params = found
                try:
                    response = route.handler(sub, **params)
                except Exception:  # a sub-request failing must not fail its siblings
                    response = sugar_error("fatal_error")
        try:
            contents: object = json.loads(response.body) if response.body else ""
        except ValueError:
            contents = response.body.decode("utf-8", errors="replace")
        return {"contents": contents, "headers": [], "status": response.status}


# --- the sandbox contract --------------------------------------------------------------------------


class SugarSandbox(SandboxCrm):
    """SugarCRM in the sandbox: Accounts, Contacts, Opportunities, Cases, Leads keyed by UUIDs, upserts by
    sync_key."""

    system = "sugarcrm"
    # Web Logic Hooks relayed as Standard Webhooks (see SugarSimulator).
    webhook_sender = "generic"
    timestamp_format = "iso_offset"
    objects = OBJECTS
    kinds = MappingProxyType(
        {
            "account": "Accounts",
            "contact": "Contacts",
            "deal": "Opportunities",
            "lead": "Leads",
            "case": "Cases",
        }
    )
    stage_values = STAGE_VALUES

    def new_key(self, kind: Kind, rng: random.Random) -> Any:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    def row(self, kind: Kind, seed: Any, key: Any, refs: Mapping[str, Any]) -> dict[str, Any]:
        if kind == "account":
            assert isinstance(seed, SeedAccount)
            return {
                "id": key,
                "name": seed.name,
                "account_type": "Customer",
                "industry": seed.industry,
                "annual_revenue": seed.annual_revenue,
                "website": seed.website,
                "phone_office": seed.phone,
                "billing_address_street": seed.street,
                "billing_address_city": seed.city,
                "billing_address_postalcode": seed.postal_code,
                "billing_address_country": seed.country,
                "deleted": 0,
                "created_by": API_USER_ID,
                "modified_user_id": API_USER_ID,
            }
        if kind == "contact":
            assert isinstance(seed, SeedContact)
            return {
                "id": key,
                "first_name": seed.first_name,
                "last_name": seed.last_name,
                "title": seed.title,
                "phone_work": seed.phone,
                "email1": seed.email,
                "primary_address_street": seed.street,
                "primary_address_city": seed.city,
                "primary_address_postalcode": seed.postal_code,
                "primary_address_country": seed.country,
                "birthdate": seed.birth_date.isoformat() if seed.birth_date else None,
                "account_id": refs.get(seed.account_ref) if seed.account_ref else None,
                "deleted": 0,
                "created_by": API_USER_ID,
                "modified_user_id": API_USER_ID,
            }
        if kind == "case":
            assert isinstance(seed, SeedCase)
            status, state = CASE_STATUS_VALUES[seed.status]
            return {
                "id": key,
                "name": seed.subject,
                "description": seed.description,
                "status": status,
                "state": state,
                "priority": CASE_PRIORITY_VALUES.get(seed.priority or ""),
                "type": CASE_TYPE_VALUES.get(seed.case_type or ""),
                "source": CASE_SOURCE_VALUES.get(seed.origin or ""),
                "resolution": seed.resolution,
                "resolved_datetime": TIMESTAMP_FORMATS[self.timestamp_format](seed.resolved)
                if seed.resolved
                else None,
                "account_id": refs.get(seed.account_ref) if seed.account_ref else None,
                "primary_contact_id": refs.get(seed.contact_ref) if seed.contact_ref else None,
                "deleted": 0,
                "created_by": API_USER_ID,
                "modified_user_id": API_USER_ID,
            }
        if kind == "lead":
            assert isinstance(seed, SeedLead)
            return self._lead_row(seed, key, refs)
        assert isinstance(seed, SeedDeal)
        stage = STAGE_VALUES[seed.stage]
        currency = CURRENCIES.get((seed.currency or "USD").upper(), CURRENCIES["USD"])
        return {
            "id": key,
            "name": seed.name,
            "amount": float(seed.amount) if seed.amount else None,
            "currency_id": currency[0],
            "sales_stage": stage,
            "probability": PROBABILITY[stage],
            "date_closed": seed.close_date.isoformat() if isinstance(seed.close_date, date) else None,
            "account_id": refs.get(seed.account_ref) if seed.account_ref else None,
            "deleted": 0,
            "created_by": API_USER_ID,
            "modified_user_id": API_USER_ID,
        }

    @staticmethod
    def _lead_row(seed: SeedLead, key: Any, refs: Mapping[str, Any]) -> dict[str, Any]:
        """A lead: the canonical status in lead_status_dom; a converted one has converted 1 and the
        contact it became (Sugar keeps converted leads in the module, status Converted)."""
        if seed.status not in LEAD_STATUS_VALUES:
            raise ValueError(f"unknown lead status {seed.status!r}")
        # Converting makes (or links) the contact: a seed converted into no contact the store holds
        # stays a lead being worked on.
        contact = refs.get(seed.contact_ref) if seed.contact_ref else None
        converted = seed.status == "converted" and contact is not None
        choices = LEAD_STATUS_VALUES[
            "qualified" if seed.status == "converted" and not converted else seed.status
        ]
        source = None
        if seed.lead_source:
            source = LEAD_SOURCE_VALUES.get(seed.lead_source.lower(), "Other")
        return {
            "id": key,
            "first_name": seed.first_name,
            "last_name": seed.last_name,
            "title": seed.title,
            "phone_work": seed.phone,
            "email1": seed.email,
            "account_name": seed.company,
            "primary_address_country": seed.country,
            "status": choices[sum(map(ord, seed.ref)) % len(choices)],
            "lead_source": source,
            "converted": 1 if converted else 0,
            "contact_id": contact if converted else None,
            "deleted": 0,
            "created_by": API_USER_ID,
            "modified_user_id": API_USER_ID,
        }

    def start(
        self,
        store: Path,
        *,
        token_ttl_seconds: float | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> Started:
        username = f"sandbox.admin.{secrets.token_hex(3)}"
        password = secrets.token_urlsafe(18)
        simulator = SugarSimulator(
            store,
            username=username,
            password=password,
            client_id=DEFAULT_CLIENT_ID,
            client_secret="",
            token_ttl_seconds=token_ttl_seconds,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
        )
        base_url = simulator.start()
        return Started(
            simulator,
            {
                "SUGARCRM_BASE_URL": base_url,
                "SUGARCRM_USERNAME": username,
                "SUGARCRM_PASSWORD": password,
                "SUGARCRM_CLIENT_ID": DEFAULT_CLIENT_ID,
                "SUGARCRM_CLIENT_SECRET": "",
            },
        )

    def start_with_webhooks(self, store: Path, *, url: str, secret: str) -> Started:
        return self.start(store, webhook_url=url, webhook_secret=secret)

    def write_case(self, store: Path) -> WriteCase:
        accepted = [
            {
                "sync_key": f"erp-acct-{n:04d}",
                "name": name,
                "industry": industry,
                "billing_address_country": country,
                "website": f"https://www.{domain}",
            }
            for n, (name, industry, country, domain) in enumerate(
                [
                    ("Hafenkontor Bremen GmbH", "Transportation", "Germany", "hafenkontor.de"),
                    ("Lumen Optics SAS", "Technology", "France", "lumen-optics.fr"),
                    ("Northgate Retail Ltd", "Retail", "United Kingdom", "northgate.co.uk"),
                ],
                start=1,
            )
        ]
        rejected = [{"sync_key": "erp-acct-9001", "industry": "Retail", "billing_address_country": "Spain"}]
        return WriteCase(
            object_name="Accounts",
            external_id_field="sync_key",
            accepted=accepted,
            rejected=rejected,
            rejected_code="missing_parameter",
        )

    def update_case(self, store: Path) -> UpdateCase:
        accounts = sorted(fetch_records(store, "Accounts"), key=lambda r: str(r["id"]))[:3]
        changed = [
            {
                "id": r["id"],
                "erp_customer_number_c": f"K-{10_400 + n}",
                "phone_office": f"+49 30 5550 {n:04d}",
            }
            for n, r in enumerate(accounts, start=1)
        ]
        return UpdateCase(
            object_name="Accounts",
            changed=changed,
            field="erp_customer_number_c",
            expected={r["id"]: r["erp_customer_number_c"] for r in changed},
            # A well-formed id that is no record: Sugar answers 404 not_found, it never creates.
            unknown={"id": "5f0c2e1a-0000-4000-8000-00000000dead", "erp_customer_number_c": "K-19999"},
            unknown_code="not_found",
        )


SANDBOX = SugarSandbox()
