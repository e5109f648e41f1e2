"""SAP Business One Service Layer (OData v3, ``/b1s/v1``) simulator over a record store, and ``SANDBOX``.

What it serves, as SAP's "Working with SAP Business One Service Layer" guide describes it:

* **Session login**: ``POST /b1s/v1/Login`` with ``{"CompanyDB", "UserName", "Password"}`` answers
  ``{"odata.metadata", "SessionId", "Version", "SessionTimeout"}`` (minutes) and the cookies
  ``B1SESSION=<id>;HttpOnly;`` and ``ROUTEID=.node1; path=/b1s``. Every later call sends the
  ``B1SESSION`` cookie (``ROUTEID`` is optional stickiness). Wrong credentials: 401 code 100000027
  "Login failed"; a missing, logged-out or timed-out session: 401 code 301 "Invalid session or
  session already timeout."; ``POST /b1s/v1/Logout`` answers 204. The timeout is an idle timeout:
  each request extends the session (``token_ttl_seconds``, default 30 minutes).
* **Reads**: ``GET /b1s/v1/BusinessPartners`` and ``/SalesOpportunities`` with ``$select``,
  ``$filter``, ``$orderby``, ``$top``, ``$skip`` and ``$inlinecount=allpages`` (``"odata.count"``);
  ``/{set}/$count``; ``/{set}('C20000')`` and ``/{set}(7)``. Paging is server-driven: 20 per page by
  default, ``Prefer: odata.maxpagesize=N`` (answered with ``Preference-Applied``) or
  ``B1S-PageSize: N`` change it, 0 turns paging off; there is no documented maximum. Pages carry
  ``"odata.nextLink": "BusinessPartners?...&$skip=20"`` (relative, with the request's other options)
  until the last one. Without ``$select`` an entity has every property, a business partner its
  ``ContactEmployees`` collection included. Entities are ordered by key unless ``$orderby`` says
  otherwise (the key always breaks ties, so ``$skip`` pages are stable).
* **Contacts**: contact persons (``ContactEmployee``) are a collection inside ``BusinessPartner``,
  not an entity set. They are read flat through
  ``GET /b1s/v1/$crossjoin(BusinessPartners,BusinessPartners/ContactEmployees)`` with
  ``$expand=BusinessPartners($select=CardCode),BusinessPartners/ContactEmployees($select=...)`` and a
  ``$filter`` joining ``BusinessPartners/CardCode eq BusinessPartners/ContactEmployees/CardCode``;
  each result is ``{"BusinessPartners": {...}, "BusinessPartners/ContactEmployees": {...}}``.
  Contacts carry their own ``UpdateDate``/``UpdateTime``. The next link of a ``$crossjoin`` is
  written as an absolute path (``/b1s/v1/$crossjoin(...)?...&$skip=N``, the form of the guide's paging
  example): relative to a request URL with a "/" inside the parentheses it would resolve wrongly.
* **Dates**: ``CreateDate``/``UpdateDate`` are dates (``2026-11-25``) and ``CreateTime``/
  ``UpdateTime`` times of day (``10:15:30``); the simulator derives both from the store's canonical
  instants (the store's columns for them stay empty), so edits made with ``records.touch_records``
  move them. In ``$filter`` a date ignores its time part and a time counts hours and minutes only.
* **Deletes**: the Service Layer has no deleted-records feed and no deleted flag: a deleted business
  partner, contact or opportunity is simply gone, so deletes are found by comparing keys.
* **Metadata**: ``GET /b1s/v1/$metadata`` is the EDMX (OData v3, XML) with user-defined fields
  (``U_*``) added later as properties of their entity or complex type.
* **Limits**: Service Layer documents no request rate limit. A reverse proxy in front of it may;
  the optional sliding window (``rate_limit``) answers 429 with ``Retry-After`` and the proxy's HTML.
* **Writes**: ``POST /b1s/v1/BusinessPartners`` (201 with the entity), ``PATCH
  /b1s/v1/BusinessPartners('C20000')`` (204), ``DELETE`` (204), 404 code -2028 "No matching records
  found (ODBC -2028)" for an unknown key, 400 code -10 for business rule errors (missing name,
  duplicate code) and -1000 for unknown properties. There is no upsert: a client PATCHes by
  ``CardCode`` and POSTs on 404. ``$batch`` is not implemented (one request per record).
* Lookups: ``/Industries``, ``/SalesStages`` and ``POST /CompanyService_GetAdminInfo`` (local
  currency: opportunities hold amounts in it and have no currency of their own).

Docs relied on:
https://help.sap.com/doc/6ab840ef2e8140f3af9eeb7d8fef9f06/latest/en-US/Working_with_SAP_Business_One_Service_Layer.pdf
(3.1 Login, Logout and Sessions; 3.2 Metadata; 3.6 query options, 3.6.6 paging, 3.6.7 $inlinecount;
6.3 configuration by request; the SQLQueries chapter for the relative nextLink form)
https://support.huaweicloud.com/bestpractice-sparkpack/zh-cn_topic_0000002510618029.html (Login answer and
the 100000027 "Login failed" body)
https://wso2.com/integration-platform/docs/connectors/catalog/erp-business/sap.businessone.service/setup-guide
(``https://host:50000/b1s/v1``, BusinessPartners list sample with ``odata.nextLink``)
"""

from __future__ import annotations

import hmac
import math
import random
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import quote as url_quote
from urllib.parse import unquote, urlencode

import pycountry

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
    Stamped,
    StoreInfo,
    fetch_records,
    insert_rows,
    open_store,
    quote,
    store_info,
    update_rows,
)
from crm_pipelines_sandbox.simulators.sap_b1_odata import (
    Column,
    ODataError,
    compile_filter,
    compile_orderby,
    split_top_level,
)
from crm_pipelines_sandbox.simulators.sap_b1_schema import (
    CROSSJOIN_SETS,
    ENTITY_SETS,
    ENUMS,
    INDUSTRIES,
    INSTANTS,
    OBJECTS,
    READ_ONLY,
    SALES_STAGES,
    STAGE_VALUES,
    edmx,
)
from crm_pipelines_sandbox.systems import (
    STAGES,
    Kind,
    SandboxCrm,
    SeedAccount,
    SeedContact,
    SeedDeal,
    Started,
    UpdateCase,
    WriteCase,
)

PREFIX = "/b1s/v1"
VERSION = "1000250"  # what Login reports for 10.0 FP 2508; clients only display it
DEFAULT_SESSION_MINUTES = 30
DEFAULT_PAGE_SIZE = 20
DEFAULT_COMPANY = "SBODEMODE"
LOCAL_CURRENCY = "EUR"
INVALID_SESSION = "Invalid session or session already timeout."
NO_MATCH = "No matching records found (ODBC -2028)"


def sl_error(status: int, code: int, message: str) -> Response:
    """Service Layer v1's error body."""
    return Response.json(status, {"error": {"code": code, "message": {"lang": "en-us", "value": message}}})


def _proxy_page(status: int, headers: dict[str, str] | None = None) -> Response:
    """What the Apache load balancer in front of Service Layer answers by itself."""
    reason = {
        429: "Too Many Requests",
        502: "Proxy Error",
        503: "Service Unavailable",
        504: "Gateway Timeout",
    }[status]
    body = f'<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head><title>{status} {reason}</title></head><body><h1>{reason}</h1></body></html>\n'
    return Response(
        status, body.encode(), {"Content-Type": "text/html; charset=iso-8859-1", **(headers or {})}
    )


def _render(value: object, kind: str) -> object:
    if value is None:
        return None
    if kind == "number":
        return float(value)  # type: ignore[arg-type]
    if kind == "integer":
        return int(value)  # type: ignore[call-overload]
    return value


def _stamp(instant: str, kind: str) -> str:
    """A canonical instant's date (``2026-11-25``) or time of day (``10:15:30``)."""
    return instant[:10] if kind == "instant_date" else instant[11:19]


# --- the simulator ----------------------------------------------------------------------------------


@dataclass
class _Session:
    user: str
    expires: float


class SapB1Simulator(SimulatorServer):
    """A Service Layer node over a record store (see :mod:`.records`).

    Args:
        store_path: The SAP Business One store (``build_store(path, SANDBOX, seeds)``).
        company_db: The company database users log in to.
        username: The B1 user.
        password: Its password.
        token_ttl_seconds: Session idle timeout (``SessionTimeout`` is reported in minutes).
        rate_limit: A reverse proxy's window per user; None lets everything through.
        faults: Injected failures.
    """

    name = "sap_b1"

    def __init__(
        self,
        store_path: Path,
        *,
        company_db: str = DEFAULT_COMPANY,
        username: str = "manager",
        password: str = "sandbox-password",
        token_ttl_seconds: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: RateLimit | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.company_db = company_db
        self.username = username
        self.password = password
        self.session_ttl = DEFAULT_SESSION_MINUTES * 60.0 if token_ttl_seconds is None else token_ttl_seconds
        self._sessions: dict[str, _Session] = {}
        self._state_lock = threading.Lock()
        self._write_lock = threading.Lock()
        # Error codes (B1's, e.g. "-2039") to answer for a key on its next write attempts.
        self.record_faults: dict[str, list[str]] = {}
        # (query, $skip) -> the sort key the page before it ended on (see crossjoin).
        self._crossjoin_cursors: dict[tuple[object, int], tuple[object, ...]] = {}
        super().__init__(store_path, host=host, port=port, rate_limit=rate_limit, faults=faults)
        self._ensure_indexes()

    def _ensure_indexes(self) -> None:
        """Contacts are looked up by their business partner and paged by (stamp, key)."""
        with closing(open_store(self.store_path)) as conn, conn:
            conn.execute(
                'CREATE INDEX IF NOT EXISTS "ContactEmployees__card" ON "ContactEmployees" ("CardCode")'
            )
            for obj in OBJECTS:
                conn.execute(
                    f"CREATE INDEX IF NOT EXISTS {quote(obj.name + '__modified_key')}"
                    f" ON {quote(obj.name)} (_modified, {quote(obj.key)})"
                )

    # -- sessions ------------------------------------------------------------------------------

    def expire_tokens(self) -> None:
        """Time out every session now (the next call gets 401 code 301)."""
        with self._state_lock:
            for session in self._sessions.values():
                session.expires = 0.0

    def authenticate(self, request: Request) -> tuple[str | None, Response | None]:
        session_id = request.cookies().get("B1SESSION", "")
        now = time.monotonic()
        with self._state_lock:
            session = self._sessions.get(session_id)
            if session is None or session.expires <= now:
                self._sessions.pop(session_id, None)
                return None, sl_error(401, 301, INVALID_SESSION)
            session.expires = now + self.session_ttl  # an idle timeout: activity keeps it alive
            return session.user, None

    def rate_limited(self, retry_after: float) -> Response:
        return _proxy_page(429, {"Retry-After": self.retry_after_header(retry_after)})

    def error_response(self, status: int) -> Response:
        if status in (429, 502, 503, 504):
            return _proxy_page(status, {"Retry-After": "1"} if status == 429 else None)
        if status == 401:
            return sl_error(401, 301, INVALID_SESSION)
        if status == 404:
            return sl_error(404, -2028, NO_MATCH)
        if status == 403:
            return sl_error(403, -1, "Forbidden: the user has no authorization for this object")
        if status == 400:
            return sl_error(400, -1000, "Invalid request")
        return sl_error(status, -1, "Internal error")

    def not_found(self, request: Request) -> Response:
        segment = request.path.removeprefix(PREFIX).strip("/").split("/")[0] or request.path
        return sl_error(404, -1000, f"Resource not found for the segment '{unquote(segment)}'")

    def method_not_allowed(self, request: Request) -> Response:
        return sl_error(405, -1000, f"Method {request.method} is not allowed on {request.path}")

    # -- routes --------------------------------------------------------------------------------

    def register_routes(self, router: Router) -> None:
        entity = r"(?P<entity_set>BusinessPartners|SalesOpportunities)"
        key = r"\((?P<key>'(?:[^']|'')*'|\d+)\)"
        router.add("POST", PREFIX + "/Login", self.login, auth=False)
        router.add("POST", PREFIX + "/Logout", self.logout)
        router.add("GET", PREFIX + r"/\$metadata", self.metadata)
        router.add("GET", PREFIX + "/?", self.service_document)
        router.add("GET", PREFIX + r"/\$crossjoin\((?P<sets>[^)]*)\)", self.crossjoin)
        router.add("GET", PREFIX + "/Industries", self.industries)
        router.add("GET", PREFIX + "/SalesStages", self.sales_stages)
        router.add("POST", PREFIX + "/CompanyService_GetAdminInfo", self.admin_info)
        router.add("GET", PREFIX + f"/{entity}", self.list_entities)
        router.add("GET", PREFIX + rf"/{entity}/\$count", self.count_entities)
        router.add("POST", PREFIX + f"/{entity}", self.create_entity)
        router.add("GET", PREFIX + f"/{entity}{key}", self.get_entity)
        router.add("PATCH", PREFIX + f"/{entity}{key}", self.update_entity)
        router.add("DELETE", PREFIX + f"/{entity}{key}", self.delete_entity)

    def login(self, request: Request) -> Response:
        try:
            body = request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return sl_error(400, -1000, "Invalid JSON in the request body")
        given = (str(body.get("CompanyDB", "")), str(body.get("UserName", "")), str(body.get("Password", "")))
        expected = (self.company_db, self.username, self.password)
        if not all(hmac.compare_digest(a, b) for a, b in zip(given, expected, strict=True)):
            return sl_error(401, 100000027, "Login failed")
        session_id = str(uuid.uuid4())
        with self._state_lock:
            self._sessions[session_id] = _Session(self.username, time.monotonic() + self.session_ttl)
        response = Response.json(
            200,
            {
                "odata.metadata": f"{self.base_url}{PREFIX}/$metadata#B1Sessions/@Element",
                "SessionId": session_id,
                "Version": VERSION,
                "SessionTimeout": max(1, math.ceil(self.session_ttl / 60)),
            },
        )
        # Exactly as Service Layer and its Apache front send them (no Path on B1SESSION).
        response.set_cookies = [f"B1SESSION={session_id};HttpOnly;", "ROUTEID=.node1; path=/b1s"]
        return response

    def logout(self, request: Request) -> Response:
        with self._state_lock:
            self._sessions.pop(request.cookies().get("B1SESSION", ""), None)
        return Response(204)

    def service_document(self, request: Request) -> Response:
        names = [*ENTITY_SETS, "Industries", "SalesStages"]
        return Response.json(200, {"value": [{"name": n, "kind": "EntitySet", "url": n} for n in names]})

    def industries(self, request: Request) -> Response:
        value = [
            {"IndustryCode": code, "IndustryName": name, "IndustryDescription": name}
            for code, name in enumerate(INDUSTRIES, start=1)
        ]
        return self._collection("Industries", value)

    def sales_stages(self, request: Request) -> Response:
        value = [
            {
                "SequenceNo": number,
                "Name": name,
                "Stageno": number,
                "ClosingPercentage": percent,
                "Cancelled": "tNO",
                "IsSales": "tYES",
                "IsPurchasing": "tNO",
            }
            for number, name, percent in SALES_STAGES
        ]
        return self._collection("SalesStages", value)

    def admin_info(self, request: Request) -> Response:
        return Response.json(
            200,
            {
                "odata.metadata": f"{self.base_url}{PREFIX}/$metadata#AdminInfo/@Element",
                "CompanyName": "Crm Pipelines Sandbox GmbH",
                "Country": "DE",
                "LocalCurrency": LOCAL_CURRENCY,
                "SystemCurrency": LOCAL_CURRENCY,
            },
        )

    def _collection(self, name: str, value: list[dict[str, object]]) -> Response:
        return Response.json(
            200, {"odata.metadata": f"{self.base_url}{PREFIX}/$metadata#{name}", "value": value}
        )

    # -- query options -------------------------------------------------------------------------

    def _info(self) -> StoreInfo:
        return store_info(self.db())

    def _resolver(self, obj: ObjectDef, type_name: str, alias: str = "") -> Any:
        types = {f.name: f.type for f in obj.fields}
        prefix = f"{alias}." if alias else ""

        def resolve(name: str) -> Column:
            if name in INSTANTS and name in types:
                column, kind = INSTANTS[name]
                return Column(prefix + column, kind)  # type: ignore[arg-type]
            if name not in types or types[name] == "json":
                raise ODataError(f"Property '{name}' of '{type_name}' is invalid")
            kind = {"number": "number", "integer": "integer", "date": "date"}.get(types[name], "string")
            enum = ENUMS.get(name, (None, None))[1]
            return Column(prefix + quote(name), kind, enum)  # type: ignore[arg-type]

        return resolve

    @staticmethod
    def _page_size(request: Request) -> tuple[int, str | None]:
        """Prefer: odata.maxpagesize (answered in Preference-Applied) over B1S-PageSize over 20."""
        for preference in (request.header("Prefer") or "").split(","):
            name, _, value = preference.strip().partition("=")
            if name.strip() == "odata.maxpagesize" and value.strip().isdigit():
                return int(value), f"odata.maxpagesize={int(value)}"
        configured = (request.header("B1S-PageSize") or "").strip()
        return (int(configured) if configured.isdigit() else DEFAULT_PAGE_SIZE), None

    @staticmethod
    def _int_option(request: Request, name: str) -> int | None:
        raw = request.param(name)
        if raw is None:
            return None
        if not raw.strip().isdigit():
            raise ODataError(f"Invalid value '{raw}' for {name}")
        return int(raw)

    def _select(self, obj: ObjectDef, type_name: str, raw: str | None) -> list[str]:
        names = [n.strip() for n in (raw or "").split(",") if n.strip()]
        if not names or names == ["*"]:
            return list(obj.field_names)
        for name in names:
            if name not in obj.field_names and not (
                obj.name == "BusinessPartners" and name == "ContactEmployees"
            ):
                raise ODataError(f"Property '{name}' of '{type_name}' is invalid")
        return names

    def _next_link(self, path: str, request: Request, skip: int, top: int | None) -> str:
        params = [(k, v) for k, values in request.query.items() if k not in ("$skip", "$top") for v in values]
        if top is not None:
            params.append(("$top", str(top)))
        params.append(("$skip", str(skip)))
        # OData keeps $, =, quotes, parentheses and slashes readable in links; spaces become %20.
        query = urlencode(params, safe="$(),/'=", quote_via=url_quote)
        return f"{path}?{query}"

    # -- entity sets ---------------------------------------------------------------------------

    def list_entities(self, request: Request, entity_set: str) -> Response:
        es = ENTITY_SETS[entity_set]
        info = self._info()
        obj = info.objects[es.table]
        try:
            resolve = self._resolver(obj, es.type_name)
            selected = self._select(obj, es.type_name, request.param("$select"))
            where, params = self._where(request, resolve)
            order = compile_orderby(request.param("$orderby") or "", resolve)
            top, skip = self._int_option(request, "$top"), self._int_option(request, "$skip") or 0
            inline = (request.param("$inlinecount") or "none").lower()
            if inline not in ("allpages", "none"):
                raise ODataError("The $inlinecount query option must be 'allpages' or 'none'")
        except ODataError as exc:
            return sl_error(400, exc.code, exc.message)
        size, applied = self._page_size(request)
        take = top if size == 0 else (size if top is None else min(size, top))
        order.append(f"{quote(obj.key)} ASC")
        clause = f"WHERE {' AND '.join(where)}"
        conn = self.db()
        conn.row_factory = sqlite3.Row
        try:
            sql = f"SELECT * FROM {quote(obj.name)} {clause} ORDER BY {', '.join(order)}"
            rows = conn.execute(
                f"{sql} LIMIT ? OFFSET ?", [*params, -1 if take is None else take + 1, skip]
            ).fetchall()
            total = (
                conn.execute(f"SELECT count(*) FROM {quote(obj.name)} {clause}", params).fetchone()[0]
                if inline == "allpages"
                else None
            )
        finally:
            conn.row_factory = None
        page = rows if take is None else rows[:take]
        more = take is not None and len(rows) > take and (top is None or take < top)
        body: dict[str, object] = {"odata.metadata": f"{self.base_url}{PREFIX}/$metadata#{entity_set}"}
        if total is not None:
            body["odata.count"] = str(total)  # a string in OData v3 JSON
        body["value"] = self._entities(obj, page, selected)
        if more:
            remaining = None if top is None else top - len(page)
            body["odata.nextLink"] = self._next_link(entity_set, request, skip + len(page), remaining)
        headers = {"Preference-Applied": applied} if applied else None
        return Response.json(200, body, headers)

    def _where(
        self, request: Request, resolve: Any, aliases: tuple[str, ...] = ("",)
    ) -> tuple[list[str], list[object]]:
        where = [f"{a + '.' if a else ''}_deleted_at IS NULL" for a in aliases]
        params: list[object] = []
        text = request.param("$filter")
        if text:
            condition, params = compile_filter(text, resolve)
            where.append(condition)
        return where, params

    def _entities(
        self, obj: ObjectDef, rows: list[sqlite3.Row], selected: list[str]
    ) -> list[dict[str, object]]:
        contacts: dict[str, list[dict[str, object]]] = {}
        if "ContactEmployees" in selected or (
            obj.name == "BusinessPartners" and selected == list(obj.field_names)
        ):
            contacts = self._contacts([str(r["CardCode"]) for r in rows])
            if "ContactEmployees" not in selected:
                selected = [*selected, "ContactEmployees"]
        return [self._entity(obj, row, selected, contacts) for row in rows]

    def _entity(
        self,
        obj: ObjectDef,
        row: sqlite3.Row,
        selected: list[str],
        contacts: Mapping[str, list[dict[str, object]]] | None = None,
    ) -> dict[str, object]:
        types = {f.name: f.type for f in obj.fields}
        entity: dict[str, object] = {}
        for name in selected:
            if name == "ContactEmployees":
                entity[name] = list((contacts or {}).get(str(row["CardCode"]), []))
            elif name in INSTANTS:
                column, kind = INSTANTS[name]
                entity[name] = _stamp(row[column], kind)
            else:
                entity[name] = _render(row[name], types[name])
        return entity

    def _contacts(self, card_codes: list[str]) -> dict[str, list[dict[str, object]]]:
        if not card_codes:
            return {}
        info = self._info()
        obj = info.objects["ContactEmployees"]
        conn = self.db()
        conn.row_factory = sqlite3.Row
        try:
            marks = ", ".join("?" for _ in card_codes)
            rows = conn.execute(
                f'SELECT * FROM "ContactEmployees" WHERE "CardCode" IN ({marks}) AND _deleted_at IS NULL'
                ' ORDER BY "InternalCode"',
                card_codes,
            ).fetchall()
        finally:
            conn.row_factory = None
        out: dict[str, list[dict[str, object]]] = {}
        for row in rows:
            out.setdefault(str(row["CardCode"]), []).append(self._entity(obj, row, list(obj.field_names)))
        return out

    def count_entities(self, request: Request, entity_set: str) -> Response:
        es = ENTITY_SETS[entity_set]
        obj = self._info().objects[es.table]
        try:
            where, params = self._where(request, self._resolver(obj, es.type_name))
        except ODataError as exc:
            return sl_error(400, exc.code, exc.message)
        total = self.db().execute(
            f"SELECT count(*) FROM {quote(obj.name)} WHERE {' AND '.join(where)}", params
        )
        return Response(200, str(total.fetchone()[0]).encode(), {"Content-Type": "text/plain;charset=utf-8"})

    def _key(self, obj: ObjectDef, raw: str) -> object:
        if raw.startswith("'"):
            return raw[1:-1].replace("''", "'")
        return int(raw) if obj.key != "CardCode" else raw

    def get_entity(self, request: Request, entity_set: str, key: str) -> Response:
        es = ENTITY_SETS[entity_set]
        obj = self._info().objects[es.table]
        try:
            selected = self._select(obj, es.type_name, request.param("$select"))
        except ODataError as exc:
            return sl_error(400, exc.code, exc.message)
        row = self._row(obj, self._key(obj, unquote(key)))
        if row is None:
            return sl_error(404, -2028, NO_MATCH)
        entity = self._entities(obj, [row], selected)[0]
        return Response.json(
            200, {"odata.metadata": f"{self.base_url}{PREFIX}/$metadata#{entity_set}/@Element", **entity}
        )

    def _row(self, obj: ObjectDef, key: object, conn: sqlite3.Connection | None = None) -> sqlite3.Row | None:
        conn = conn or self.db()
        previous = conn.row_factory
        conn.row_factory = sqlite3.Row
        try:
            found: sqlite3.Row | None = conn.execute(
                f"SELECT * FROM {quote(obj.name)} WHERE {quote(obj.key)} = ? AND _deleted_at IS NULL", (key,)
            ).fetchone()
            return found
        finally:
            conn.row_factory = previous

    # -- $crossjoin ----------------------------------------------------------------------------

    def crossjoin(self, request: Request, sets: str) -> Response:
        members = [s.strip() for s in unquote(sets).split(",") if s.strip()]
        info = self._info()
        if not members or len(set(members)) != len(members) or any(m not in CROSSJOIN_SETS for m in members):
            return sl_error(400, -1000, f"Invalid $crossjoin member list '{sets}'")
        aliases = {m: f"t{i}" for i, m in enumerate(members)}
        objects = {m: info.objects[CROSSJOIN_SETS[m][0]] for m in members}

        def resolve(name: str) -> Column:
            path, _, prop = name.rpartition("/")
            if path not in aliases:
                raise ODataError(f"Property '{name}' is invalid in $crossjoin")
            return self._resolver(objects[path], CROSSJOIN_SETS[path][1], aliases[path])(prop)  # type: ignore[no-any-return]

        try:
            expand = self._expand(request.param("$expand") or "", objects)
            # A contact person the store holds is served even when its partner row is gone (B1
            # deletes them together; records.delete_records on a partner alone does not).
            visible = [a for m, a in aliases.items() if f"{m}/ContactEmployees" not in aliases]
            where, params = self._where(request, resolve, tuple(visible))
            order = compile_orderby(request.param("$orderby") or "", resolve)
            top, skip = self._int_option(request, "$top"), self._int_option(request, "$skip") or 0
        except ODataError as exc:
            return sl_error(400, exc.code, exc.message)
        size, applied = self._page_size(request)
        take = top if size == 0 else (size if top is None else min(size, top))
        order += [f"{aliases[m]}.{quote(objects[m].key)} ASC" for m in members]
        columns = ", ".join(
            f'{aliases[m]}.{quote(c)} AS "{aliases[m]}__{c}"'
            for m in expand
            for c in [*objects[m].field_names, "_created", "_modified"]
        )
        tables = ", ".join(f"{quote(objects[m].name)} {aliases[m]}" for m in members)
        expressions = [term.rsplit(" ", 1)[0] for term in order]
        columns += "".join(f', {e} AS "__o{i}"' for i, e in enumerate(expressions))
        # A join makes OFFSET cost the rows it skips; when this page continues one we served (the
        # client follows our nextLink), start after that page's last sort key instead.
        signature = (tuple(members), *(request.param(o) for o in ("$expand", "$filter", "$orderby")))
        resume = self._crossjoin_cursors.get((signature, skip)) if skip else None
        offset = skip
        if resume is not None and all(term.endswith(" ASC") for term in order):
            where = [*where, f"({', '.join(expressions)}) > ({', '.join('?' for _ in resume)})"]
            where.append(f"{expressions[0]} >= ?")  # lets the planner start from the index
            params = [*params, *resume, resume[0]]
            offset = 0
        sql = f"SELECT {columns} FROM {tables} WHERE {' AND '.join(where)} ORDER BY {', '.join(order)}"
        conn = self.db()
        conn.row_factory = sqlite3.Row
        try:
            rows = conn.execute(
                f"{sql} LIMIT ? OFFSET ?", [*params, -1 if take is None else take + 1, offset]
            ).fetchall()
        finally:
            conn.row_factory = None
        page = rows if take is None else rows[:take]
        if page and take is not None and len(rows) > take:
            last = tuple(page[-1][f"__o{i}"] for i in range(len(expressions)))
            with self._state_lock:
                self._crossjoin_cursors[(signature, skip + len(page))] = last
                while len(self._crossjoin_cursors) > 256:
                    self._crossjoin_cursors.pop(next(iter(self._crossjoin_cursors)))
        value = []
        for row in page:
            item: dict[str, object] = {}
            for member, selected in expand.items():
                alias, obj = aliases[member], objects[member]
                types = {f.name: f.type for f in obj.fields}
                entity: dict[str, object] = {}
                for name in selected:
                    if name in INSTANTS:
                        column, kind = INSTANTS[name]
                        entity[name] = _stamp(row[f"{alias}__{column}"], kind)
                    else:
                        entity[name] = _render(row[f"{alias}__{name}"], types[name])
                item[member] = entity
            value.append(item)
        body: dict[str, object] = {
            "odata.metadata": f"{self.base_url}{PREFIX}/$metadata#Collection(Edm.ComplexType)",
            "value": value,
        }
        if take is not None and len(rows) > take and (top is None or take < top):
            # Absolute-path form (as the guide's paging example writes links): relative to the
            # request URL, whose path has a "/" inside the parentheses, it would resolve wrongly.
            link = self._next_link(
                f"{PREFIX}/$crossjoin({','.join(members)})",
                request,
                skip + len(page),
                None if top is None else top - len(page),
            )
            body["odata.nextLink"] = link
        return Response.json(200, body, {"Preference-Applied": applied} if applied else None)

    def _expand(self, text: str, objects: Mapping[str, ObjectDef]) -> dict[str, list[str]]:
        """``A($select=x,y),B`` -> member -> selected properties (all of them without $select)."""
        out: dict[str, list[str]] = {}
        for part in split_top_level(text):
            name, _, options = part.partition("(")
            name = name.strip()
            if name not in objects:
                raise ODataError(f"Invalid $expand member '{name}'")
            select = None
            # Options inside an expansion are separated by semicolons: A($select=x,y;$filter=...).
            for option in options.rstrip(")").split(";"):
                key, _, val = option.partition("=")
                if key.strip() == "$select":
                    select = val
            out[name] = self._select(objects[name], CROSSJOIN_SETS[name][1], select)
        return out

    # -- metadata ------------------------------------------------------------------------------

    def metadata(self, request: Request) -> Response:
        body = edmx(self._info())
        return Response(200, body.encode(), {"Content-Type": "application/xml;charset=utf-8"})

    # -- writes --------------------------------------------------------------------------------

    def _payload(self, request: Request, obj: ObjectDef, type_name: str) -> dict[str, Any] | Response:
        try:
            body = request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return sl_error(400, -1000, "Invalid JSON in the request body")
        for name in body:
            if name not in obj.field_names and not (
                obj.name == "BusinessPartners" and name == "ContactEmployees"
            ):
                return sl_error(400, -1000, f"Property '{name}' of '{type_name}' is invalid")
        for name, (_, values) in ENUMS.items():
            if name in body and body[name] is not None:
                if str(body[name]) not in values:
                    return sl_error(400, -1000, f"Enumeration value '{body[name]}' of '{name}' is invalid")
                body[name] = values[str(body[name])]
        # Numbers are numbers: the Service Layer refuses text in an Edm.Int32 or Edm.Double property.
        kinds = {f.name: f.type for f in obj.fields}
        for name, value in body.items():
            if value is None or kinds.get(name) not in ("integer", "number") or isinstance(value, bool):
                continue
            if kinds[name] == "integer" and not (
                isinstance(value, int) or (isinstance(value, str) and value.lstrip("-").isdigit())
            ):
                return sl_error(400, -1000, f"Value '{value}' of property '{name}' is not a valid Edm.Int32")
            if kinds[name] == "number":
                try:
                    float(value)
                except (TypeError, ValueError):
                    return sl_error(
                        400, -1000, f"Value '{value}' of property '{name}' is not a valid Edm.Double"
                    )
        return {k: v for k, v in body.items() if k not in READ_ONLY}

    def _fault(self, key: object) -> Response | None:
        queued = self.record_faults.get(str(key))
        if not queued:
            return None
        code = queued.pop(0)
        return sl_error(
            400, int(code) if code.lstrip("-").isdigit() else -1, f"Injected error {code} for {key}"
        )

    def _missing(self, obj: ObjectDef, values: Mapping[str, Any], creating: bool) -> str | None:
        for f in obj.fields:
            if (
                f.required
                and f.name != obj.key
                and (f.name in values or creating)
                and values.get(f.name) in (None, "")
            ):
                label = {"CardName": "BP name", "CardCode": "BP code", "Name": "contact person name"}.get(
                    f.name, f.name
                )
                return f"Enter {label} [{obj.name}.{f.name}]"
        return None

    def create_entity(self, request: Request, entity_set: str) -> Response:
        es = ENTITY_SETS[entity_set]
        obj = self._info().objects[es.table]
        payload = self._payload(request, obj, es.type_name)
        if isinstance(payload, Response):
            return payload
        contacts = payload.pop("ContactEmployees", None) or []
        at = datetime.now(UTC).replace(microsecond=0)  # B1 stamps whole seconds
        with self._write_lock, closing(open_store(self.store_path)) as conn, conn:
            info = store_info(conn)
            if obj.key == "CardCode":
                key = payload.get("CardCode")
                if key in (None, ""):
                    return sl_error(400, -10, "Enter BP code [BusinessPartners.CardCode]")
            else:
                key = int(
                    conn.execute(
                        f"SELECT coalesce(max({quote(obj.key)}), 0) + 1 FROM {quote(obj.name)}"
                    ).fetchone()[0]
                )
                payload[obj.key] = key
            if (fault := self._fault(key)) is not None:
                return fault
            if (problem := self._missing(obj, payload, True)) is not None:
                return sl_error(400, -10, problem)
            exists = conn.execute(
                f"SELECT 1 FROM {quote(obj.name)} WHERE {quote(obj.key)} = ?", (key,)
            ).fetchone()
            if exists and obj.key == "CardCode":
                return sl_error(
                    400,
                    -10,
                    f"1320000140 - Business partner code '{key}' already assigned to a business partner;"
                    " enter a unique business partner code",
                )
            if obj.key == "CardCode":
                payload.setdefault("CardType", "cCustomer")
                payload.setdefault("Valid", "tYES")
                payload.setdefault("Frozen", "tNO")
            insert_rows(conn, info, obj.name, [Stamped(payload, at, at)])
            if contacts and (refused := self._save_contacts(conn, info, str(key), contacts, at)) is not None:
                conn.rollback()
                return refused
            row = self._row(obj, key, conn)
            assert row is not None
            entity = self._entity(obj, row, list(obj.field_names))
        if obj.name == "BusinessPartners":
            entity["ContactEmployees"] = self._contacts([str(key)]).get(str(key), [])
        location = f"{self.base_url}{PREFIX}/{entity_set}({self._key_literal(key)})"
        body = {"odata.metadata": f"{self.base_url}{PREFIX}/$metadata#{entity_set}/@Element", **entity}
        return Response.json(201, body, {"Location": location})

    @staticmethod
    def _key_literal(key: object) -> str:
        return f"'{str(key).replace(chr(39), chr(39) * 2)}'" if isinstance(key, str) else str(key)

    def _save_contacts(
        self, conn: sqlite3.Connection, info: StoreInfo, card_code: str, contacts: Any, at: datetime
    ) -> Response | None:
        """Contact persons sent inside a business partner: with InternalCode an update, else a new one."""
        obj = info.objects["ContactEmployees"]
        if not isinstance(contacts, list):
            return sl_error(400, -1000, "ContactEmployees must be a collection")
        for item in contacts:
            if not isinstance(item, dict):
                return sl_error(400, -1000, "Invalid ContactEmployee")
            unknown = [n for n in item if n not in obj.field_names]
            if unknown:
                return sl_error(400, -1000, f"Property '{unknown[0]}' of 'ContactEmployee' is invalid")
            values = {k: v for k, v in item.items() if k not in READ_ONLY and k != "InternalCode"}
            values["CardCode"] = card_code
            code = item.get("InternalCode")
            if code is not None:
                # Only a contact of this partner: another partner's contact is no match here.
                mine = conn.execute(
                    'SELECT 1 FROM "ContactEmployees" WHERE "InternalCode" = ? AND "CardCode" = ?'
                    " AND _deleted_at IS NULL",
                    (int(code), card_code),
                ).fetchone()
                if mine is None:
                    return sl_error(404, -2028, NO_MATCH)
                update_rows(conn, info, obj.name, [int(code)], at=at, changes=values)
                continue
            if (problem := self._missing(obj, values, True)) is not None:
                return sl_error(400, -10, problem)
            next_code = int(
                conn.execute(
                    'SELECT coalesce(max("InternalCode"), 0) + 1 FROM "ContactEmployees"'
                ).fetchone()[0]
            )
            insert_rows(conn, info, obj.name, [Stamped({**values, "InternalCode": next_code}, at, at)])
        return None

    def update_entity(self, request: Request, entity_set: str, key: str) -> Response:
        es = ENTITY_SETS[entity_set]
        obj = self._info().objects[es.table]
        record_key = self._key(obj, unquote(key))
        payload = self._payload(request, obj, es.type_name)
        if isinstance(payload, Response):
            return payload
        contacts = payload.pop("ContactEmployees", None)
        payload.pop(obj.key, None)  # the key of an existing entity cannot change
        at = datetime.now(UTC).replace(microsecond=0)
        with self._write_lock, closing(open_store(self.store_path)) as conn, conn:
            info = store_info(conn)
            if self._row(obj, record_key, conn) is None:
                return sl_error(404, -2028, NO_MATCH)
            if (fault := self._fault(record_key)) is not None:
                return fault
            if (problem := self._missing(obj, payload, False)) is not None:
                return sl_error(400, -10, problem)
            update_rows(conn, info, obj.name, [record_key], at=at, changes=payload)
            if (
                contacts
                and (refused := self._save_contacts(conn, info, str(record_key), contacts, at)) is not None
            ):
                conn.rollback()
                return refused
        return Response(204)

    def delete_entity(self, request: Request, entity_set: str, key: str) -> Response:
        es = ENTITY_SETS[entity_set]
        obj = self._info().objects[es.table]
        record_key = self._key(obj, unquote(key))
        at = datetime.now(UTC).replace(microsecond=0)
        with self._write_lock, closing(open_store(self.store_path)) as conn, conn:
            info = store_info(conn)
            if self._row(obj, record_key, conn) is None:
                return sl_error(404, -2028, NO_MATCH)
            update_rows(conn, info, obj.name, [record_key], at=at, delete=True)
            if obj.name == "BusinessPartners":  # contact persons go with their business partner
                codes = [
                    r[0]
                    for r in conn.execute(
                        'SELECT "InternalCode" FROM "ContactEmployees" WHERE "CardCode" = ? AND _deleted_at IS NULL',
                        (record_key,),
                    )
                ]
                update_rows(conn, info, "ContactEmployees", codes, at=at, delete=True)
        return Response(204)


# --- the sandbox contract --------------------------------------------------------------------------


def country_code(typed: str | None) -> str | None:
    """B1 keeps ISO 3166 codes (its country table refuses anything else): "Germany" -> "DE"."""
    if not typed:
        return None
    try:
        return str(pycountry.countries.lookup(typed.strip()).alpha_2)
    except LookupError:
        return None


class SapB1Sandbox(SandboxCrm):
    """SAP Business One in the sandbox: customers (CardCode C + digits), their contact persons, opportunities."""

    system = "sap_b1"
    timestamp_format = "iso_z"  # unused: B1's dates and times are derived from the canonical instants
    objects = OBJECTS
    kinds = MappingProxyType(
        {"account": "BusinessPartners", "contact": "ContactEmployees", "deal": "SalesOpportunities"}
    )
    stage_values = STAGE_VALUES
    contained = frozenset({"contact"})  # contact persons are lines of their business partner

    def __init__(self) -> None:
        self._rng: random.Random | None = None
        self._issued: dict[str, set[object]] = {}

    def new_key(self, kind: Kind, rng: random.Random) -> Any:
        # B1 draws these from numbering series; drawn at random here so that a key made later with
        # another generator (a record added between two runs) cannot meet one already in the store.
        if rng is not self._rng:
            self._rng, self._issued = rng, {"account": set(), "contact": set(), "deal": set()}
        issued = self._issued[kind]
        while True:
            key: object = (
                f"C{rng.randrange(10**7, 10**8)}" if kind == "account" else rng.randrange(1, 2**31 - 1)
            )
            if key not in issued:
                issued.add(key)
                return key

    def row(self, kind: Kind, seed: Any, key: Any, refs: Mapping[str, Any]) -> dict[str, Any]:
        if kind == "account":
            assert isinstance(seed, SeedAccount)
            industry = seed.industry if seed.industry in INDUSTRIES else None
            return {
                "CardCode": key,
                "CardName": seed.name,
                "CardType": "cCustomer",
                "GroupCode": 100,
                "Address": seed.street,
                "ZipCode": seed.postal_code,
                "City": seed.city,
                "Country": country_code(seed.country),
                "Phone1": seed.phone,
                "Website": seed.website,
                "Industry": INDUSTRIES.index(industry) + 1 if industry else None,
                "Currency": "##",  # all currencies
                "Valid": "tYES",
                "Frozen": "tNO",
                "U_AnnualRevenue": float(seed.annual_revenue) if seed.annual_revenue else None,
            }
        if kind == "contact":
            assert isinstance(seed, SeedContact)
            name = " ".join(p for p in (seed.first_name, seed.last_name) if p) or f"Contact {key}"
            return {
                "InternalCode": key,
                "CardCode": refs.get(seed.account_ref) if seed.account_ref else None,
                "Name": name,
                "FirstName": seed.first_name,
                "LastName": seed.last_name,
                "Position": seed.title,
                "Phone1": seed.phone,
                "E_Mail": seed.email,
                "Address": seed.street,
                "DateOfBirth": seed.birth_date.isoformat() if seed.birth_date else None,
                "Active": "tYES",
            }
        assert isinstance(seed, SeedDeal)
        stage = STAGES.index(seed.stage) + 1  # prospecting..negotiation are stages 1-4
        won, lost = seed.stage == "closed_won", seed.stage == "closed_lost"
        number = 5 if won else (4 if lost else stage)
        close = seed.close_date.isoformat() if seed.close_date else None
        return {
            "SequentialNo": key,
            "CardCode": refs.get(seed.account_ref) if seed.account_ref else None,
            "OpportunityName": seed.name,
            "StartDate": seed.created.date().isoformat(),
            "PredictedClosingDate": close,
            "ClosingDate": close if won or lost else None,
            "MaxLocalTotal": float(seed.amount) if seed.amount else None,
            "ClosingPercentage": SALES_STAGES[number - 1][2] if not lost else 0.0,
            "CurrentStageNo": number,
            "Status": "sos_Sold" if won else ("sos_Missed" if lost else "sos_Open"),
        }

    def start(self, store: Path, *, token_ttl_seconds: float | None = None) -> Started:
        company, user, password = DEFAULT_COMPANY, f"sbx{secrets.token_hex(3)}", secrets.token_urlsafe(18)
        simulator = SapB1Simulator(
            store, company_db=company, username=user, password=password, token_ttl_seconds=token_ttl_seconds
        )
        base_url = simulator.start()
        env = {
            "SAP_B1_BASE_URL": base_url,
            "SAP_B1_COMPANY_DB": company,
            "SAP_B1_USERNAME": user,
            "SAP_B1_PASSWORD": password,
        }
        return Started(simulator, env)

    def write_case(self, store: Path) -> WriteCase:
        accepted = [
            {"CardCode": code, "CardName": name, "City": city, "Country": country, "Phone1": phone}
            for code, name, city, country, phone in (
                ("C90001", "Hafenkontor Bremen GmbH", "Bremen", "DE", "+49 421 555 0101"),
                ("C90002", "Lumen Optics SAS", "Lyon", "FR", "+33 4 72 55 01 02"),
                ("C90003", "Northgate Retail Ltd", "Leeds", "GB", "+44 113 555 0103"),
            )
        ]
        rejected = [{"CardCode": "C90009", "City": "Madrid", "Country": "ES"}]  # no CardName
        return WriteCase(
            object_name="BusinessPartners",
            external_id_field="CardCode",
            accepted=accepted,
            rejected=rejected,
            rejected_code="-10",
        )

    def update_case(self, store: Path) -> UpdateCase:
        partners = sorted(fetch_records(store, "BusinessPartners"), key=lambda r: str(r["CardCode"]))[:3]
        changed = [
            {"CardCode": r["CardCode"], "U_ErpCustomerNo": f"K-{50_800 + n}", "Phone1": f"+49 40 555 {n:04d}"}
            for n, r in enumerate(partners, start=1)
        ]
        return UpdateCase(
            object_name="BusinessPartners",
            changed=changed,
            field="U_ErpCustomerNo",
            expected={str(r["CardCode"]): r["U_ErpCustomerNo"] for r in changed},
            # A PATCH of a CardCode B1 does not have: 404, code -2028 "No matching records found".
            unknown={"CardCode": "C00000000", "U_ErpCustomerNo": "K-59999"},
            unknown_code="-2028",
        )


SANDBOX = SapB1Sandbox()
