"""HubSpot CRM v3 simulator: private-app bearer auth, object list/read with cursor paging, account info.

It serves what is in a HubSpot store (see :mod:`.store`) the way ``/crm/v3/objects/{objectType}``
does: ``results`` with ``id``, ``properties`` (every value a string), ``createdAt``, ``updatedAt``
and ``archived``; ``paging.next.after`` and ``link`` until the last page; ``properties``,
``associations`` and ``archived`` parameters; HubSpot's error bodies (``status``, ``message``,
``correlationId``, ``category``) and its ``X-HubSpot-RateLimit-*`` headers on every answer.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import itertools
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Mapping
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

from crm_pipelines.webhooks.senders import sign_hubspot_v3
from crm_pipelines_sandbox.simulators.base import (
    Faults,
    RateLimit,
    Request,
    Response,
    Router,
    SimulatorServer,
    SlidingWindow,
)
from crm_pipelines_sandbox.simulators.store import (
    HUBSPOT_CUSTOM_PROPERTIES,
    HUBSPOT_MODIFIED_PROPERTY,
    HUBSPOT_SYSTEM_COLUMNS,
    hs_datetime,
    hubspot_modified_properties,
    open_store,
    table_columns,
)
from crm_pipelines_sandbox.simulators.webhook_out import Signer, WebhookOutbox

DEFAULT_ACCESS_TOKEN = "pat-eu1-00000000-0000-4000-8000-crmpipelines"
DEFAULT_PORTAL_ID = 24_681_357
WEBHOOK_APP_ID = 1_234_567  # the public app whose webhook subscriptions the simulator sends
DEFAULT_DAILY_LIMIT = 500_000
# What HubSpot advertises for a Professional portal when no stricter limit is configured.
NOMINAL_RATE_LIMIT = RateLimit(190, 10.0)
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100
# CRM search: at most 200 per page and 10,000 results per query (paging past it answers 400).
SEARCH_MAX_PAGE_SIZE = 200
SEARCH_MAX_RESULTS = 10_000
BATCH_MAX_INPUTS = 100
_SEARCH_OPERATORS = {"EQ": "=", "NEQ": "!=", "LT": "<", "LTE": "<=", "GT": ">", "GTE": ">="}
_DATE_PROPERTIES = frozenset(
    {
        "createdate",
        "lastmodifieddate",
        "hs_lastmodifieddate",
        "closedate",
        "hs_lifecyclestage_lead_date",
        "hs_lifecyclestage_marketingqualifiedlead_date",
        "hs_lifecyclestage_salesqualifiedlead_date",
    }
)

# Object type names and ids HubSpot accepts in the path, to the store table.
_OBJECT_TYPES = {
    "companies": "companies",
    "company": "companies",
    "0-2": "companies",
    "contacts": "contacts",
    "contact": "contacts",
    "0-1": "contacts",
    "deals": "deals",
    "deal": "deals",
    "0-3": "deals",
}
# Properties returned when a request names none.
_DEFAULT_PROPERTIES = {
    "companies": ("createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"),
    "contacts": ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"),
    "deals": (
        "amount",
        "closedate",
        "createdate",
        "dealname",
        "dealstage",
        "hs_lastmodifieddate",
        "hs_object_id",
        "pipeline",
    ),
}
_ASSOCIATION_COLUMNS = {"deals": "company_id"}
_ASSOCIATION_TARGETS = {"deals": "companies"}  # the object each association column points at
_SINGULAR = {"companies": "company", "contacts": "contact", "deals": "deal"}


def _v3_signer(secret: str) -> Signer:
    """HubSpot's v3 request signature (X-HubSpot-Signature-v3 over method, URL, body and timestamp)."""

    def sign(url: str, body: bytes) -> dict[str, str]:
        stamp = str(int(time.time() * 1000))
        return {
            "X-HubSpot-Signature-v3": sign_hubspot_v3(secret, "POST", url, body, stamp),
            "X-HubSpot-Request-Timestamp": stamp,
        }

    return sign


# Properties HubSpot sets itself: a write that sends one is refused with READ_ONLY_VALUE.
_READ_ONLY_PROPERTIES = frozenset({"hs_object_id", "createdate", "lastmodifieddate", "hs_lastmodifieddate"})
_AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more "
    "details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)


def _error(status: int, message: str, category: str, **extra: object) -> Response:
    body: dict[str, object] = {"status": "error", "message": message, "correlationId": str(uuid.uuid4())}
    body.update(extra)
    body["category"] = category
    return Response.json(status, body)


def _batch_error(category: str, message: str, ids: list[str]) -> dict[str, object]:
    """One entry of a batch answer's ``errors`` (HubSpot's StandardError: the SDKs need every key)."""
    return {
        "status": "error",
        "category": category,
        "message": message,
        "context": {"ids": ids},
        "links": {},
        "errors": [],
    }


def encode_after(next_id: int) -> str:
    """The opaque ``after`` cursor pointing at the record with this id."""
    return base64.urlsafe_b64encode(str(next_id).encode()).decode().rstrip("=")


def decode_after(after: str) -> int:
    padded = after + "=" * (-len(after) % 4)
    return int(base64.urlsafe_b64decode(padded.encode()).decode())


class HubSpotSimulator(SimulatorServer):
    """A HubSpot portal's CRM API over a HubSpot store."""

    name = "hubspot"

    def __init__(
        self,
        store_path: Path,
        *,
        access_token: str = DEFAULT_ACCESS_TOKEN,
        portal_id: int = DEFAULT_PORTAL_ID,
        daily_limit: int = DEFAULT_DAILY_LIMIT,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: RateLimit | None = None,
        faults: Faults | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> None:
        self.access_token = access_token
        self.portal_id = portal_id
        # The app's webhook subscriptions (Settings > Webhooks): every creation and property change of
        # companies, contacts and deals, sent to ``webhook_url`` and signed (v3) with the app's client
        # secret; None: the app has no webhooks.
        self.webhooks: WebhookOutbox | None = None
        if webhook_url and webhook_secret:
            self.webhooks = WebhookOutbox(webhook_url, _v3_signer(webhook_secret))
        self._event_ids = itertools.count(int(time.time() * 1000) % 10**9 * 1000)
        self.daily_limit = daily_limit
        self.daily_usage = 0
        self._nominal = SlidingWindow(NOMINAL_RATE_LIMIT)
        self._usage_lock = threading.Lock()
        self._write_lock = threading.Lock()
        # Error categories to answer for an input id on its next upsert attempts (tests' per-record faults).
        self.record_faults: dict[str, list[str]] = {}
        self.search_max_results = SEARCH_MAX_RESULTS  # tests lower it to exercise the cap cheaply
        super().__init__(store_path, host=host, port=port, rate_limit=rate_limit, faults=faults)

    def stop(self) -> None:
        super().stop()
        if self.webhooks is not None:
            self.webhooks.flush(timeout=5)
            self.webhooks.close()
            self.webhooks = None

    # -- auth, limits, errors ------------------------------------------------------------------

    def authenticate(self, request: Request) -> tuple[str | None, Response | None]:
        token = request.bearer_token()
        if token is None or not hmac.compare_digest(token, self.access_token):
            return None, _error(401, _AUTH_MESSAGE, "INVALID_AUTHENTICATION")
        return token, None

    def count_usage(self, key: str) -> Response | None:
        with self._usage_lock:
            if self.daily_usage >= self.daily_limit:
                return self._rate_limit_body("DAILY", "You have reached your daily limit.", 3600.0)
            self.daily_usage += 1
        if self.rate_limit is None:
            self._nominal.hit(key)  # only to report the advertised window in the headers
        return None

    def _rate_limit_body(self, policy: str, message: str, retry_after: float) -> Response:
        body = {
            "status": "error",
            "message": message,
            "errorType": "RATE_LIMIT",
            "correlationId": str(uuid.uuid4()),
            "policyName": policy,
            "requestId": str(uuid.uuid4()),
        }
        return Response.json(429, body, {"Retry-After": self.retry_after_header(retry_after)})

    def rate_limited(self, retry_after: float) -> Response:
        limit = self.rate_limit or NOMINAL_RATE_LIMIT
        if limit.interval_seconds <= 1:
            return self._rate_limit_body("SECONDLY", "You have reached your secondly limit.", retry_after)
        return self._rate_limit_body(
            "TEN_SECONDLY_ROLLING", "You have reached your ten_secondly_rolling limit.", retry_after
        )

    def error_response(self, status: int) -> Response:
        if status == 429:
            return self.rate_limited(1.0)
        if status == 401:
            return _error(401, _AUTH_MESSAGE, "INVALID_AUTHENTICATION")
        if status in (502, 503, 504):
            return _error(
                status, "The service is temporarily unavailable. Please try again.", "SERVICE_UNAVAILABLE"
            )
        return _error(status, "internal error", "INTERNAL_ERROR")

    def not_found(self, request: Request) -> Response:
        return _error(404, f"Unable to find a resource for {request.path}", "OBJECT_NOT_FOUND")

    def method_not_allowed(self, request: Request) -> Response:
        return _error(
            405, f"HTTP method {request.method} is not supported on {request.path}", "VALIDATION_ERROR"
        )

    def common_headers(self, request: Request, key: str | None) -> dict[str, str]:
        headers = {"X-HubSpot-Correlation-Id": str(uuid.uuid4())}
        if key is None:
            return headers
        limit = self.rate_limit or NOMINAL_RATE_LIMIT
        window = self.limiter() or self._nominal
        with self._usage_lock:
            used = self.daily_usage
        headers.update(
            {
                "X-HubSpot-RateLimit-Daily": str(self.daily_limit),
                "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, self.daily_limit - used)),
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(limit.interval_seconds * 1000)),
                "X-HubSpot-RateLimit-Max": str(limit.max_requests),
                "X-HubSpot-RateLimit-Remaining": str(window.remaining(key)),
            }
        )
        return headers

    # -- routes --------------------------------------------------------------------------------

    def register_routes(self, router: Router) -> None:
        router.add("GET", r"/crm/v3/objects/(?P<object_type>[\w-]+)/?", self.list_objects)
        router.add("POST", r"/crm/v3/objects/(?P<object_type>[\w-]+)/search", self.search_objects)
        router.add("POST", r"/crm/v3/objects/(?P<object_type>[\w-]+)/batch/upsert", self.batch_upsert)
        router.add("POST", r"/crm/v3/objects/(?P<object_type>[\w-]+)/batch/update", self.batch_update)
        router.add("GET", r"/crm/v3/objects/(?P<object_type>[\w-]+)/(?P<object_id>[^/]+)", self.read_object)
        router.add(
            "PATCH", r"/crm/v3/objects/(?P<object_type>[\w-]+)/(?P<object_id>[^/]+)", self.update_object
        )
        router.add("GET", r"/crm/v3/properties/(?P<object_type>[\w-]+)/?", self.list_properties)
        router.add(
            "POST",
            r"/crm/v4/associations/(?P<from_type>[\w-]+)/(?P<to_type>[\w-]+)/batch/associate/default",
            self.associate_default,
        )
        router.add("GET", r"/account-info/v3/details", self.account_details)
        router.add("GET", r"/account-info/v3/api-usage/daily/private-apps", self.api_usage)

    def account_details(self, request: Request) -> Response:
        return Response.json(
            200,
            {
                "portalId": self.portal_id,
                "accountType": "STANDARD",
                "timeZone": "Europe/Berlin",
                "companyCurrency": "EUR",
                "additionalCurrencies": ["USD", "GBP", "CHF", "SEK"],
                "utcOffset": "+01:00",
                "utcOffsetMilliseconds": 3_600_000,
                "uiDomain": "app-eu1.hubspot.com",
                "dataHostingLocation": "eu1",
            },
        )

    def api_usage(self, request: Request) -> Response:
        with self._usage_lock:
            used = self.daily_usage
        now_ms = int(time.time() * 1000)
        return Response.json(
            200,
            {
                "results": [
                    {
                        "name": "api-calls-daily",
                        "usageLimit": self.daily_limit,
                        "currentUsage": used,
                        "collectedAt": now_ms,
                        "fetchStatus": "SUCCESS",
                        "resetsAt": now_ms - now_ms % 86_400_000 + 86_400_000,
                    }
                ]
            },
        )

    # -- objects -------------------------------------------------------------------------------

    def _table(self, object_type: str) -> str | None:
        return _OBJECT_TYPES.get(object_type.lower())

    def _unknown_type(self, object_type: str) -> Response:
        return _error(400, f"Unable to infer object type from: {object_type}", "OBJECT_NOT_FOUND")

    def _requested_properties(self, request: Request, table: str, columns: list[str]) -> list[str]:
        raw = request.query.get("properties")
        if not raw:
            return list(_DEFAULT_PROPERTIES[table])
        available = set(columns) - set(HUBSPOT_SYSTEM_COLUMNS) - set(_ASSOCIATION_COLUMNS.values())
        available.add("hs_object_id")
        wanted = {"createdate", HUBSPOT_MODIFIED_PROPERTY[table], "hs_object_id"}
        for value in raw:
            wanted.update(name.strip() for name in value.split(",") if name.strip() in available)
        return sorted(wanted)  # unknown names are ignored, as HubSpot does

    def _requested_associations(self, request: Request, table: str) -> list[str]:
        out: list[str] = []
        for value in request.query.get("associations", []):
            for name in value.split(","):
                target = _OBJECT_TYPES.get(name.strip().lower())
                if target and target != table and target not in out:
                    out.append(target)
        return out

    def _archived(self, request: Request) -> bool | Response:
        value = (request.param("archived") or "false").lower()
        if value not in ("true", "false"):
            return _error(400, f"Invalid value for archived: {value}", "VALIDATION_ERROR")
        return value == "true"

    def list_objects(self, request: Request, object_type: str) -> Response:
        table = self._table(object_type)
        if table is None:
            return self._unknown_type(object_type)
        try:
            limit = int(request.param("limit") or DEFAULT_PAGE_SIZE)
        except ValueError:
            return _error(400, f"Invalid value for limit: {request.param('limit')}", "VALIDATION_ERROR")
        if limit < 1:
            return _error(400, "limit must be at least 1", "VALIDATION_ERROR")
        limit = min(limit, MAX_PAGE_SIZE)  # HubSpot caps list pages at 100
        after = request.param("after")
        start = 0
        if after:
            try:
                start = decode_after(after)
            except (ValueError, binascii.Error, UnicodeDecodeError):
                return _error(400, f"Invalid paging cursor: {after}", "VALIDATION_ERROR")
        archived = self._archived(request)
        if isinstance(archived, Response):
            return archived
        conn = self.db()
        columns = table_columns(conn, table)
        properties = self._requested_properties(request, table, columns)
        rows = conn.execute(
            f'SELECT * FROM "{table}" WHERE archived = ? AND id >= ? ORDER BY id LIMIT ?',
            (int(archived), start, limit + 1),
        ).fetchall()
        page, extra = rows[:limit], rows[limit:]
        results = [self._object(table, columns, row, properties) for row in page]
        self._attach_associations(table, columns, page, results, self._requested_associations(request, table))
        body: dict[str, object] = {"results": results}
        if extra:
            next_after = encode_after(int(extra[0][columns.index("id")]))
            params = [(k, v) for k, values in request.query.items() if k != "after" for v in values]
            params.append(("after", next_after))
            link = f"{self.base_url}/crm/v3/objects/{object_type}?{urlencode(params)}"
            body["paging"] = {"next": {"after": next_after, "link": link}}
        return Response.json(200, body)

    def read_object(self, request: Request, object_type: str, object_id: str) -> Response:
        table = self._table(object_type)
        if table is None:
            return self._unknown_type(object_type)
        archived = self._archived(request)
        if isinstance(archived, Response):
            return archived
        conn = self.db()
        columns = table_columns(conn, table)
        id_property = request.param("idProperty") or "hs_object_id"
        if id_property != "hs_object_id" and id_property not in columns:
            return _error(400, f"Property {id_property} does not exist or is not unique", "VALIDATION_ERROR")
        column = "id" if id_property == "hs_object_id" else id_property
        key: object = int(object_id) if column == "id" and object_id.isdigit() else object_id
        row = conn.execute(
            f'SELECT * FROM "{table}" WHERE "{column}" = ? AND archived = ?', (key, int(archived))
        ).fetchone()
        if row is None:
            return _error(
                404,
                "Object not found.  objectId are usually numeric.",
                "OBJECT_NOT_FOUND",
                context={"id": [object_id]},
            )
        result = self._object(table, columns, row, self._requested_properties(request, table, columns))
        self._attach_associations(
            table, columns, [row], [result], self._requested_associations(request, table)
        )
        return Response.json(200, result)

    @staticmethod
    def _object(
        table: str, columns: list[str], row: tuple[object, ...], properties: list[str]
    ) -> dict[str, object]:
        values = dict(zip(columns, row, strict=True))
        props: dict[str, str | None] = {}
        for name in properties:
            value = values["id"] if name == "hs_object_id" else values.get(name)
            props[name] = None if value is None else str(value)
        result: dict[str, object] = {
            "id": str(values["id"]),
            "properties": props,
            "createdAt": values["createdAt"],
            "updatedAt": values["updatedAt"],
            "archived": bool(values["archived"]),
        }
        if values["archived"]:
            result["archivedAt"] = values.get("archivedAt")
        return result

    def _attach_associations(
        self,
        table: str,
        columns: list[str],
        rows: list[tuple[object, ...]],
        results: list[dict[str, object]],
        targets: list[str],
    ) -> None:
        if not rows or not targets:
            return
        ids = [int(str(row[columns.index("id")])) for row in rows]
        for target in targets:
            links = self._links(table, columns, rows, ids, target)
            kind = f"{_SINGULAR[table]}_to_{_SINGULAR[target]}"
            for object_id, result in zip(ids, results, strict=True):
                found = links.get(object_id)
                if found:
                    associations = result.setdefault("associations", {})
                    assert isinstance(associations, dict)
                    associations[target] = {"results": [{"id": str(i), "type": kind} for i in found]}

    def _links(
        self, table: str, columns: list[str], rows: list[tuple[object, ...]], ids: list[int], target: str
    ) -> dict[int, list[int]]:
        """Associated record ids per record, from the link columns in either direction."""
        links: dict[int, list[int]] = {}
        if table == "deals" and target == "companies":
            at = columns.index("company_id")
            for object_id, row in zip(ids, rows, strict=True):
                if row[at] is not None:
                    links[object_id] = [int(str(row[at]))]
        elif table == "contacts" and target == "companies":
            at = columns.index("associatedcompanyid")
            for object_id, row in zip(ids, rows, strict=True):
                value = row[at]
                if value is not None and str(value).isdigit():
                    links[object_id] = [int(str(value))]
        elif table == "companies" and target in ("deals", "contacts"):
            column = "company_id" if target == "deals" else "associatedcompanyid"
            marks = ", ".join("?" for _ in ids)
            keys: list[object] = list(ids) if target == "deals" else [str(i) for i in ids]
            query = f'SELECT id, "{column}" FROM "{target}" WHERE "{column}" IN ({marks}) AND archived = 0 ORDER BY id'
            for linked_id, owner in self.db().execute(query, keys):
                links.setdefault(int(str(owner)), []).append(int(linked_id))
        return links

    # -- properties --------------------------------------------------------------------------

    def list_properties(self, request: Request, object_type: str) -> Response:
        """The object's property definitions (a property added in the store shows up here)."""
        table = self._table(object_type)
        if table is None:
            return self._unknown_type(object_type)
        columns = table_columns(self.db(), table)
        names = [
            c for c in columns if c not in HUBSPOT_SYSTEM_COLUMNS and c not in _ASSOCIATION_COLUMNS.values()
        ]
        custom = HUBSPOT_CUSTOM_PROPERTIES.get(table, {})
        return Response.json(
            200,
            {
                "results": [
                    {
                        "name": name,
                        "label": custom.get(name) or name.replace("_", " ").title(),
                        "hubspotDefined": name not in custom,
                        "modificationMetadata": {
                            "archivable": name in custom,
                            "readOnlyDefinition": name not in custom,
                            "readOnlyValue": name in _READ_ONLY_PROPERTIES,
                        },
                        "type": "datetime" if name in _DATE_PROPERTIES else "string",
                        "fieldType": "date" if name in _DATE_PROPERTIES else "text",
                        "groupName": f"{_SINGULAR[table]}information",
                        "hidden": False,
                        "calculated": False,
                    }
                    for name in ["hs_object_id", *names]
                ]
            },
        )

    # -- search --------------------------------------------------------------------------------

    def _search_value(self, name: str, value: object) -> str:
        """A filter value as the store holds it: date properties accept epoch milliseconds or ISO text."""
        text = str(value)
        if name in _DATE_PROPERTIES and text.lstrip("-").isdigit():
            return hs_datetime(datetime.fromtimestamp(int(text) / 1000, tz=UTC))
        return text

    def search_objects(self, request: Request, object_type: str) -> Response:
        table = self._table(object_type)
        if table is None:
            return self._unknown_type(object_type)
        try:
            body = json.loads(request.body or b"{}")
            limit = int(body.get("limit") or 10)
            after = int(body.get("after") or 0)
        except (ValueError, TypeError):
            return _error(400, "Invalid input JSON on line 1", "VALIDATION_ERROR")
        if limit < 1 or limit > SEARCH_MAX_PAGE_SIZE:
            return _error(400, f"limit must be between 1 and {SEARCH_MAX_PAGE_SIZE}", "VALIDATION_ERROR")
        cap = self.search_max_results
        if after >= cap:
            # What HubSpot answers when paging past the search's result cap.
            return _error(
                400,
                f"There was a problem with the request. The paging offset {after} is beyond the maximum "
                f"of {cap} results for a search.",
                "VALIDATION_ERROR",
            )
        conn = self.db()
        columns = table_columns(conn, table)
        known = set(columns) - {"id", "createdAt", "updatedAt", "archived", "archivedAt"}
        clauses: list[str] = []
        params: list[object] = []
        groups = []
        for group in body.get("filterGroups") or []:
            parts = []
            for flt in group.get("filters") or []:
                name, operator = str(flt.get("propertyName")), str(flt.get("operator"))
                column = "id" if name == "hs_object_id" else name
                if column != "id" and column not in known:
                    return _error(400, f"Property {name} does not exist", "VALIDATION_ERROR")
                if operator == "HAS_PROPERTY":
                    parts.append(f'"{column}" IS NOT NULL')
                elif operator in _SEARCH_OPERATORS:
                    parts.append(f'"{column}" {_SEARCH_OPERATORS[operator]} ?')
                    value = self._search_value(name, flt.get("value"))
                    params.append(int(value) if column == "id" else value)
                else:
                    return _error(400, f"Unsupported operator {operator}", "VALIDATION_ERROR")
            if parts:
                groups.append("(" + " AND ".join(parts) + ")")
        if groups:
            clauses.append("(" + " OR ".join(groups) + ")")
        clauses.append("archived = 0")  # search never returns archived records
        order = "id ASC"
        sorts = body.get("sorts") or []
        if sorts:
            sort = sorts[0]
            name = str(sort.get("propertyName")) if isinstance(sort, dict) else str(sort)
            direction = "DESC" if isinstance(sort, dict) and sort.get("direction") == "DESCENDING" else "ASC"
            column = "id" if name == "hs_object_id" else name
            if column != "id" and column not in known:
                return _error(400, f"Property {name} does not exist", "VALIDATION_ERROR")
            order = f'"{column}" {direction}, id ASC'
        where = " AND ".join(clauses)
        total = int(conn.execute(f'SELECT COUNT(*) FROM "{table}" WHERE {where}', params).fetchone()[0])
        take = min(limit, cap - after)
        rows = conn.execute(
            f'SELECT * FROM "{table}" WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?', [*params, take, after]
        ).fetchall()
        requested = body.get("properties") or []
        available = known - set(_ASSOCIATION_COLUMNS.values())
        properties = sorted(
            {"createdate", HUBSPOT_MODIFIED_PROPERTY[table], "hs_object_id"}
            | {str(p) for p in requested if str(p) in available}
        )
        results = [self._object(table, columns, row, properties) for row in rows]
        answer: dict[str, object] = {"total": total, "results": results}
        if after + len(rows) < total and rows:
            answer["paging"] = {"next": {"after": str(after + len(rows))}}
        return Response.json(200, answer)

    # -- batch upsert --------------------------------------------------------------------------

    def batch_upsert(self, request: Request, object_type: str) -> Response:
        table = self._table(object_type)
        if table is None:
            return self._unknown_type(object_type)
        try:
            inputs = json.loads(request.body or b"{}").get("inputs")
        except (ValueError, AttributeError):
            return _error(400, "Invalid input JSON on line 1", "VALIDATION_ERROR")
        if not isinstance(inputs, list) or not inputs:
            return _error(400, "inputs must be a non-empty list", "VALIDATION_ERROR")
        if len(inputs) > BATCH_MAX_INPUTS:
            return _error(
                400,
                f"Batch input is limited to {BATCH_MAX_INPUTS} inputs, got {len(inputs)}",
                "VALIDATION_ERROR",
            )
        started = hs_datetime(datetime.now(UTC))
        results: list[dict[str, object]] = []
        errors: list[dict[str, object]] = []
        with self._write_lock, closing(open_store(self.store_path)) as conn, conn:
            columns = table_columns(conn, table)
            writable = set(columns) - set(HUBSPOT_SYSTEM_COLUMNS) - set(_ASSOCIATION_COLUMNS.values())
            for item in inputs:
                id_property = str(item.get("idProperty") or "hs_object_id")
                key = str(item.get("id") or "")
                props = {str(k): v for k, v in (item.get("properties") or {}).items()}
                problem = self._upsert_problem(table, id_property, key, props, writable)
                if problem is not None:
                    category, message = problem
                    errors.append(_batch_error(category, message, [key]))
                    continue
                now = hs_datetime(datetime.now(UTC))
                stamped = {**{k: None if v is None else str(v) for k, v in props.items()}, id_property: key}
                for modified in hubspot_modified_properties(table):
                    if modified in columns:
                        stamped[modified] = now
                found = conn.execute(f'SELECT id FROM "{table}" WHERE "{id_property}" = ?', (key,)).fetchone()
                if found is None:
                    stamped.setdefault("createdate", now)
                    names = ["createdAt", "updatedAt", *stamped]
                    marks = ", ".join("?" for _ in names)
                    quoted = ", ".join(f'"{n}"' for n in names)
                    cursor = conn.execute(
                        f'INSERT INTO "{table}" ({quoted}) VALUES ({marks})', [now, now, *stamped.values()]
                    )
                    object_id, new = int(cursor.lastrowid or 0), True
                    self._announce(conn, table, object_id, {}, created=True)
                else:
                    object_id, new = int(found[0]), False
                    self._announce(conn, table, object_id, stamped, created=False)
                    assignments = ", ".join(f'"{n}" = ?' for n in stamped)
                    conn.execute(
                        f'UPDATE "{table}" SET "updatedAt" = ?, {assignments} WHERE id = ?',
                        [now, *stamped.values(), object_id],
                    )
                results.append(
                    {
                        "id": str(object_id),
                        "properties": {k: v for k, v in stamped.items()},
                        "createdAt": now,
                        "updatedAt": now,
                        "archived": False,
                        "new": new,
                    }
                )
        answer: dict[str, object] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": started,
            "completedAt": hs_datetime(datetime.now(UTC)),
        }
        if errors:
            answer["numErrors"] = len(errors)
            answer["errors"] = errors
            return Response.json(207, answer)
        return Response.json(200, answer)

    # -- webhooks --------------------------------------------------------------------------------

    def _announce(
        self,
        conn: sqlite3.Connection,
        table: str,
        object_id: int,
        values: Mapping[str, str | None],
        *,
        created: bool,
    ) -> None:
        """Queue the webhook events of one write, before it is applied: ``<object>.creation``, or one
        ``<object>.propertyChange`` per property whose value the write changes (HubSpot sends none for
        a property set to the value it already had)."""
        if self.webhooks is None:
            return
        kind = _SINGULAR[table]
        occurred = int(time.time() * 1000)
        base = {
            "subscriptionId": 1,
            "portalId": self.portal_id,
            "appId": WEBHOOK_APP_ID,
            "occurredAt": occurred,
            "attemptNumber": 0,
            "objectId": object_id,
            "changeSource": "INTEGRATION",
        }
        if created:
            events = [{"eventId": next(self._event_ids), "subscriptionType": f"{kind}.creation", **base}]
        else:
            names = [n for n in values if n not in hubspot_modified_properties(table)]
            if not names:
                return
            quoted = ", ".join(f'"{n}"' for n in names)
            row = conn.execute(f'SELECT {quoted} FROM "{table}" WHERE id = ?', (object_id,)).fetchone()
            before = dict(zip(names, row, strict=True)) if row else {}
            events = [
                {
                    "eventId": next(self._event_ids),
                    "subscriptionType": f"{kind}.propertyChange",
                    "propertyName": name,
                    "propertyValue": values[name] if values[name] is not None else "",
                    **base,
                }
                for name in names
                if (None if before.get(name) is None else str(before.get(name))) != values[name]
            ]
        if events:
            self.webhooks.emit(events)

    # -- associations ----------------------------------------------------------------------------

    def associate_default(self, request: Request, from_type: str, to_type: str) -> Response:
        """v4 ``batch/associate/default``: inputs ``{from: {id}, to: {id}}`` get the default association.

        The store keeps one company per deal (``company_id``): associating a deal with a company makes
        it the deal's company. An id the portal does not know is an error of a 207 answer.
        """
        table, target = self._table(from_type), self._table(to_type)
        if table is None or target is None:
            return self._unknown_type(from_type if table is None else to_type)
        column = _ASSOCIATION_COLUMNS.get(table)
        if column is None or _ASSOCIATION_TARGETS.get(table) != target:
            return _error(400, f"No default association from {from_type} to {to_type}", "VALIDATION_ERROR")
        try:
            inputs = json.loads(request.body or b"{}").get("inputs")
        except (ValueError, AttributeError):
            return _error(400, "Invalid input JSON on line 1", "VALIDATION_ERROR")
        if not isinstance(inputs, list) or not inputs or not all(isinstance(i, dict) for i in inputs):
            return _error(400, "inputs must be a non-empty list of objects", "VALIDATION_ERROR")
        started = hs_datetime(datetime.now(UTC))
        results: list[dict[str, object]] = []
        errors: list[dict[str, object]] = []
        with self._write_lock, closing(open_store(self.store_path)) as conn, conn:
            for item in inputs:
                source = str((item.get("from") or {}).get("id") or "")
                other = str((item.get("to") or {}).get("id") or "")
                found = [
                    key.isdigit()
                    and conn.execute(
                        f'SELECT 1 FROM "{name}" WHERE id = ? AND archived = 0', (int(key),)
                    ).fetchone()
                    is not None
                    for name, key in ((table, source), (target, other))
                ]
                if not all(found):
                    errors.append(
                        _batch_error(
                            "OBJECT_NOT_FOUND",
                            f"No {from_type if not found[0] else to_type} with id "
                            f"{source if not found[0] else other}",
                            [source],
                        )
                    )
                    continue
                conn.execute(f'UPDATE "{table}" SET "{column}" = ? WHERE id = ?', (int(other), int(source)))
                results.append({"from": {"id": source}, "to": {"id": other}, "associationSpec": []})
        answer: dict[str, object] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": started,
            "completedAt": hs_datetime(datetime.now(UTC)),
        }
        if errors:
            answer["numErrors"] = len(errors)
            answer["errors"] = errors
            return Response.json(207, answer)
        return Response.json(200, answer)

    # -- updates by id ---------------------------------------------------------------------------

    def batch_update(self, request: Request, object_type: str) -> Response:
        """``batch/update``: up to 100 inputs ``{id, properties}`` (``idProperty`` optional), by id.

        An id the portal does not know is an ``OBJECT_NOT_FOUND`` error of a 207 answer, never a
        create; the records found are updated and their last-modified properties move.
        """
        table = self._table(object_type)
        if table is None:
            return self._unknown_type(object_type)
        try:
            inputs = json.loads(request.body or b"{}").get("inputs")
        except (ValueError, AttributeError):
            return _error(400, "Invalid input JSON on line 1", "VALIDATION_ERROR")
        if not isinstance(inputs, list) or not inputs or not all(isinstance(i, dict) for i in inputs):
            return _error(400, "inputs must be a non-empty list of objects", "VALIDATION_ERROR")
        if len(inputs) > BATCH_MAX_INPUTS:
            return _error(
                400,
                f"Batch input is limited to {BATCH_MAX_INPUTS} inputs, got {len(inputs)}",
                "VALIDATION_ERROR",
            )
        ids = [str(item.get("id") or "") for item in inputs]
        if len(set(ids)) < len(ids):
            return _error(400, "Duplicate IDs found in batch input.", "VALIDATION_ERROR")
        started = hs_datetime(datetime.now(UTC))
        results: list[dict[str, object]] = []
        missing: list[str] = []
        errors: list[dict[str, object]] = []
        with self._write_lock, closing(open_store(self.store_path)) as conn, conn:
            for item, key in zip(inputs, ids, strict=True):
                outcome = self._update_one(
                    conn, table, key, item.get("idProperty"), item.get("properties") or {}
                )
                if isinstance(outcome, dict):
                    results.append(outcome)
                elif outcome[0] == "OBJECT_NOT_FOUND":
                    missing.append(key)
                else:
                    errors.append(_batch_error(outcome[0], outcome[1], [key]))
        if missing:
            # HubSpot reports the ids it could not find together, as one error.
            errors.insert(
                0,
                _batch_error(
                    "OBJECT_NOT_FOUND",
                    f"Could not get some {_SINGULAR[table].upper()} objects, they may be deleted or not "
                    "exist. Check that ids are valid.",
                    missing,
                ),
            )
        answer: dict[str, object] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": started,
            "completedAt": hs_datetime(datetime.now(UTC)),
        }
        if errors:
            answer["numErrors"] = len(missing) + len(errors) - (1 if missing else 0)
            answer["errors"] = errors
            return Response.json(207, answer)
        return Response.json(200, answer)

    def update_object(self, request: Request, object_type: str, object_id: str) -> Response:
        """``PATCH /crm/v3/objects/{objectType}/{id}``: one record's properties (``?idProperty=`` optional)."""
        table = self._table(object_type)
        if table is None:
            return self._unknown_type(object_type)
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return _error(400, "Invalid input JSON on line 1", "VALIDATION_ERROR")
        properties = body.get("properties") if isinstance(body, dict) else None
        if not isinstance(properties, dict):
            return _error(400, "properties must be an object", "VALIDATION_ERROR")
        with self._write_lock, closing(open_store(self.store_path)) as conn, conn:
            outcome = self._update_one(conn, table, object_id, request.param("idProperty"), properties)
        if isinstance(outcome, dict):
            return Response.json(200, outcome)
        category, message = outcome
        if category == "OBJECT_NOT_FOUND":
            return _error(404, "resource not found", category)
        return _error(400, message, category)

    def _update_one(
        self, conn: sqlite3.Connection, table: str, key: str, id_property: object, props: object
    ) -> dict[str, object] | tuple[str, str]:
        """Update one record on an open write transaction: the object as answered, or (category, message)."""
        columns = table_columns(conn, table)
        writable = set(columns) - set(HUBSPOT_SYSTEM_COLUMNS) - set(_ASSOCIATION_COLUMNS.values())
        queued = self.record_faults.get(key)
        if queued:
            return queued.pop(0), f"Injected failure for {key}"
        if not isinstance(props, dict):
            return "VALIDATION_ERROR", "properties must be an object"
        name = str(id_property or "hs_object_id")
        if name != "hs_object_id" and name not in writable:
            return "VALIDATION_ERROR", f"Property {name} does not exist or is not unique"
        column = "id" if name == "hs_object_id" else name
        if column == "id" and not key.isdigit():
            return "OBJECT_NOT_FOUND", f"Object not found. objectId are usually numeric: {key}"
        read_only = sorted(set(props) & _READ_ONLY_PROPERTIES)
        if read_only:
            return (
                "VALIDATION_ERROR",
                f"Property values were not valid: READ_ONLY_VALUE {read_only[0]} is a read only property; "
                "its value cannot be set.",
            )
        unknown = sorted(set(props) - writable)
        if unknown:
            return "VALIDATION_ERROR", f'Property values were not valid: PROPERTY_DOESNT_EXIST "{unknown[0]}"'
        email = props.get("email") if table == "contacts" else None
        if email is not None and "@" not in str(email):
            return "VALIDATION_ERROR", f"Property values were not valid: INVALID_EMAIL {email}"
        found = conn.execute(
            f'SELECT id, "createdAt" FROM "{table}" WHERE "{column}" = ? AND archived = 0',
            (int(key) if column == "id" else key,),
        ).fetchone()
        if found is None:
            return "OBJECT_NOT_FOUND", f"Object not found: {key}"
        now = hs_datetime(datetime.now(UTC))
        stamped: dict[str, str | None] = {k: None if v is None else str(v) for k, v in props.items()}
        self._announce(conn, table, int(found[0]), stamped, created=False)
        for modified in hubspot_modified_properties(table):
            if modified in columns:
                stamped[modified] = now
        assignments = ", ".join(f'"{n}" = ?' for n in stamped)
        conn.execute(
            f'UPDATE "{table}" SET "updatedAt" = ?, {assignments} WHERE id = ?',
            [now, *stamped.values(), found[0]],
        )
        return {
            "id": str(found[0]),
            "properties": {**stamped, "hs_object_id": str(found[0])},
            "createdAt": found[1],
            "updatedAt": now,
            "archived": False,
        }

    def _upsert_problem(
        self, table: str, id_property: str, key: str, props: dict[str, object], writable: set[str]
    ) -> tuple[str, str] | None:
        queued = self.record_faults.get(key)
        if queued:
            return queued.pop(0), f"Injected failure for {key}"
        if not key:
            return "VALIDATION_ERROR", "id is required for an upsert input"
        if id_property not in writable:
            return "VALIDATION_ERROR", f"Property {id_property} does not exist or is not unique"
        unknown = sorted(set(props) - writable)
        if unknown:
            return "VALIDATION_ERROR", f'Property "{unknown[0]}" does not exist'
        email = (key if id_property == "email" else props.get("email")) if table == "contacts" else None
        if email is not None and "@" not in str(email):
            return "VALIDATION_ERROR", f"Property values were not valid: INVALID_EMAIL {email}"
        return None
