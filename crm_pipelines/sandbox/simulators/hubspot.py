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
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

from crm_pipelines.sandbox.simulators.base import (
    Faults,
    RateLimit,
    Request,
    Response,
    Router,
    SimulatorServer,
    SlidingWindow,
)
from crm_pipelines.sandbox.simulators.store import (
    HUBSPOT_MODIFIED_PROPERTY,
    HUBSPOT_SYSTEM_COLUMNS,
    table_columns,
)

DEFAULT_ACCESS_TOKEN = "pat-eu1-00000000-0000-4000-8000-crmpipelines"
DEFAULT_PORTAL_ID = 24_681_357
DEFAULT_DAILY_LIMIT = 500_000
# What HubSpot advertises for a Professional portal when no stricter limit is configured.
NOMINAL_RATE_LIMIT = RateLimit(190, 10.0)
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100

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
_SINGULAR = {"companies": "company", "contacts": "contact", "deals": "deal"}
_AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more "
    "details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)


def _error(status: int, message: str, category: str, **extra: object) -> Response:
    body: dict[str, object] = {"status": "error", "message": message, "correlationId": str(uuid.uuid4())}
    body.update(extra)
    body["category"] = category
    return Response.json(status, body)


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
    ) -> None:
        self.access_token = access_token
        self.portal_id = portal_id
        self.daily_limit = daily_limit
        self.daily_usage = 0
        self._nominal = SlidingWindow(NOMINAL_RATE_LIMIT)
        self._usage_lock = threading.Lock()
        super().__init__(store_path, host=host, port=port, rate_limit=rate_limit, faults=faults)

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
        router.add("GET", r"/crm/v3/objects/(?P<object_type>[\w-]+)/(?P<object_id>\d+)", self.read_object)
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
        row = conn.execute(
            f'SELECT * FROM "{table}" WHERE id = ? AND archived = ?', (int(object_id), int(archived))
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
