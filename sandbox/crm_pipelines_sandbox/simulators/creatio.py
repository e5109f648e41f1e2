"""Creatio (OData 4) simulator over a record store.

What it serves, each the way the Creatio Academy documents it:

* Auth: forms authentication. ``POST /ServiceModel/AuthService.svc/Login`` with JSON
  ``{"UserName", "UserPassword"}`` answers 200 and ``{"Code": 0, "Message": "", "Exception": null,
  "PasswordChangeUrl": null, "RedirectUrl": null}`` with the cookies ``BPMLOADER``, ``.ASPXAUTH``,
  ``BPMCSRF`` and ``UserName``; a wrong password is still HTTP 200, with ``Code: 1`` and a message.
  Every later request sends the cookies and the header ``BPMCSRF: <the BPMCSRF cookie>`` (CSRF
  protection, on by default since 7.10); without them, or after the session timed out, 401.
  ``POST /ServiceModel/AuthService.svc/Logout`` ends the session.
  https://academy.creatio.com/docs/8.x/dev/development-on-creatio-platform/integrations-and-api/authentication/authentication-basics/references/authservice-svc
  https://academy.creatio.com/documents/technic-sdk/7-15/protection-csrf-attacks-during-integration-creatio
* Data: ``GET /0/odata/<Collection>`` with ``$select``, ``$filter``, ``$orderby``, ``$top``, ``$skip``,
  ``$count=true`` (``@odata.count``), ``$expand`` of lookups; ``{"@odata.context", "value"}``.
  Paging is ``$top``/``$skip``: the service sends no next links and returns at most 20,000 rows per
  request (``MaxEntityRowCount``), so a reader that does not page silently gets the first 20,000.
  Lookups are GUID columns (``AccountId``, ``OwnerId``, ``CountryId``); ``Account/Id`` filters too.
  https://academy.creatio.com/docs/8.x/dev/development-on-creatio-platform/integrations-and-api/data-services/odata/basics/references/odata-odata-4
  https://academy.creatio.com/documents?id=15411 (DataService restrictions: 20,000 rows per request,
  the number of requests is unlimited)
* Deletes: none exposed. OData returns live records only and Creatio has no deleted-records
  endpoint: a deleted record simply disappears, so deletes are found by comparing keys.
* Metadata: ``GET /0/odata/$metadata`` (EDMX), columns added later included; ``GET /0/odata/`` lists
  the collections.
* Limits: Creatio documents none (DataService: "the number of requests is unlimited"); a
  ``rate_limit`` may be set for tests and then answers 429 with ``Retry-After``.
* Write: ``POST /0/odata/<Collection>`` (201 and the record), ``PATCH /0/odata/<Collection>(<Id>)`` (204),
  ``DELETE`` (204), and ``POST /0/odata/$batch`` with ``application/json``
  (``{"requests": [{"method", "url", "id", "body", "headers"}]}`` -> ``{"responses": [{"id", "status",
  "headers", "body"}]}``) or ``multipart/mixed``, at most 100 requests, stopping at the first 4xx/5xx
  unless ``Prefer: continue-on-error``. There is no upsert: an integration looks the external id up
  with ``$filter`` first, then creates or updates.
  https://academy.creatio.com/docs/8.x/dev/development-on-creatio-platform/integrations-and-api/data-services/odata/examples/batch-request-examples
Errors are OData 4 error bodies, ``{"error": {"code": "", "message": "..."}}``.
"""

from __future__ import annotations

import hmac
import json
import random
import re
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Mapping
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote, urlsplit

from crm_pipelines_sandbox.simulators.base import (
    Faults,
    RateLimit,
    Request,
    Response,
    Router,
    SimulatorServer,
)
from crm_pipelines_sandbox.simulators.creatio_schema import (
    DEFAULT_SESSION_TTL,
    EXTERNAL_IDS,
    LEAD_SOURCE_IDS,
    LOOKUPS,
    MAX_BATCH_REQUESTS,
    MAX_ROWS,
    NAMESPACE,
    OBJECTS,
    ODATA,
    QUALIFY_STATUS_IDS,
    STAGE_IDS,
    SUPERVISOR_ID,
    SYSTEM_COLUMNS,
    Session,
    country_id,
    currency_id,
    first,
    industry_id,
    json_value,
    metadata_xml,
    now_seconds,
    odata_error,
    reference_data,
    user_name_cookie,
)
from crm_pipelines_sandbox.simulators.odata import (
    BatchRequest,
    BatchResponse,
    ChangeSet,
    Column,
    ODataError,
    compile_filter,
    parse_batch,
    parse_orderby,
    parse_prefer,
    split_list,
    write_batch,
)
from crm_pipelines_sandbox.simulators.records import (
    ObjectDef,
    Stamped,
    fetch_records,
    insert_rows,
    open_store,
    store_info,
    update_rows,
)
from crm_pipelines_sandbox.simulators.records import quote as quote_name
from crm_pipelines_sandbox.systems import Kind, SandboxCrm, Started, UpdateCase, WriteCase

_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_LOGIN_FAILED = "Either user name or password specified incorrectly."
_JSON = "application/json; odata.metadata=minimal"


def _ok(status: int, body: Mapping[str, object], headers: Mapping[str, str] | None = None) -> Response:
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(status, payload, {"Content-Type": _JSON, "OData-Version": "4.0", **(headers or {})})


class CreatioSimulator(SimulatorServer):
    """A Creatio instance's AuthService and OData 4 service."""

    name = "creatio"

    def __init__(
        self,
        store_path: Path,
        *,
        username: str = "Supervisor",
        password: str | None = None,
        session_ttl_seconds: float = DEFAULT_SESSION_TTL,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: RateLimit | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.username = username
        self.password = password or secrets.token_urlsafe(12)
        self.session_ttl_seconds = session_ttl_seconds
        # external id (or Id) -> error codes to answer on its next writes (a retryable per-record failure)
        self.record_faults: dict[str, list[str]] = {}
        self._sessions: dict[str, Session] = {}
        self._state_lock = threading.Lock()
        self._write_lock = threading.Lock()
        super().__init__(store_path, host=host, port=port, rate_limit=rate_limit, faults=faults)
        _ensure_indexes(self.store_path)

    # -- sessions --------------------------------------------------------------------------------

    def expire_tokens(self) -> None:
        """Make every session time out now (the next request gets 401 and must log in again)."""
        with self._state_lock:
            for key, session in self._sessions.items():
                self._sessions[key] = Session(session.user, session.csrf, 0.0)

    def login(self, request: Request) -> Response:
        def answer(code: int, message: str) -> Response:
            body = {
                "Code": code,
                "Message": message,
                "Exception": None,
                "PasswordChangeUrl": None,
                "RedirectUrl": None,
            }
            return Response.json(200, body)

        try:
            credentials = request.json()
        except ValueError:
            return answer(1, _LOGIN_FAILED)
        if not isinstance(credentials, dict):
            return answer(1, _LOGIN_FAILED)
        user, password = str(credentials.get("UserName") or ""), str(credentials.get("UserPassword") or "")
        if not (hmac.compare_digest(user, self.username) and hmac.compare_digest(password, self.password)):
            return answer(1, _LOGIN_FAILED)
        auth, csrf = secrets.token_hex(64).upper(), secrets.token_urlsafe(16)
        with self._state_lock:
            self._sessions[auth] = Session(user, csrf, time.monotonic() + self.session_ttl_seconds)
        response = answer(0, "")
        expires = (datetime.now(UTC) + timedelta(days=1)).strftime("%a, %d %b %Y %H:%M:%S GMT")
        response.set_cookies = [
            f"BPMLOADER={secrets.token_hex(12)}; path=/; HttpOnly",
            f".ASPXAUTH={auth}; path=/; HttpOnly",
            f"BPMCSRF={csrf}; path=/",
            f"UserName={user_name_cookie(user)}; expires={expires}; path=/; HttpOnly",
        ]
        return response

    def logout(self, request: Request) -> Response:
        with self._state_lock:
            self._sessions.pop(request.cookies().get(".ASPXAUTH", ""), None)
        return Response(200, b"", {"Content-Type": "application/json"})

    def authenticate(self, request: Request) -> tuple[str | None, Response | None]:
        cookie = request.cookies().get(".ASPXAUTH", "")
        now = time.monotonic()
        with self._state_lock:
            session = self._sessions.get(cookie)
            if session is None or session.expires <= now:
                self._sessions.pop(cookie, None)
                return None, odata_error(401, "Authentication required.")
            header = request.header("BPMCSRF") or ""
            if not hmac.compare_digest(header, session.csrf):
                return None, odata_error(
                    401, "The BPMCSRF header is missing or does not match the BPMCSRF cookie."
                )
            # The timeout counts from the last request, as Creatio's session timeout does.
            self._sessions[cookie] = Session(session.user, session.csrf, now + self.session_ttl_seconds)
        return session.user, None

    def rate_limited(self, retry_after: float) -> Response:
        wait = self.retry_after_header(retry_after)
        return odata_error(
            429, f"Too many requests. Retry after {wait} seconds.", headers={"Retry-After": wait}
        )

    def error_response(self, status: int) -> Response:
        if status == 429:
            return self.rate_limited(1.0)
        messages = {
            400: "The request is invalid.",
            401: "Authentication required.",
            403: "Access denied.",
            404: "No HTTP resource was found that matches the request URI.",
            503: "Service Unavailable",
        }
        return odata_error(status, messages.get(status, "An error has occurred."))

    def not_found(self, request: Request) -> Response:
        return odata_error(404, f"No HTTP resource was found that matches the request URI '{request.path}'.")

    def method_not_allowed(self, request: Request) -> Response:
        return odata_error(405, f"The requested resource does not support http method '{request.method}'.")

    # -- routes ----------------------------------------------------------------------------------

    def register_routes(self, router: Router) -> None:
        router.add("POST", r"/ServiceModel/AuthService\.svc/Login", self.login, auth=False)
        router.add("POST", r"/ServiceModel/AuthService\.svc/Logout", self.logout, auth=False)
        router.add("GET", ODATA + r"/?", self.service_document)
        router.add("GET", ODATA + r"/\$metadata", self.metadata)
        router.add("POST", ODATA + r"/\$batch", self.batch)
        router.add("GET", ODATA + r"/(?P<collection>\w+)", self.list_records)
        router.add("POST", ODATA + r"/(?P<collection>\w+)", self.create_record)
        router.add("GET", ODATA + rf"/(?P<collection>\w+)\((?P<key>{_GUID})\)", self.read_record)
        router.add("PATCH", ODATA + rf"/(?P<collection>\w+)\((?P<key>{_GUID})\)", self.update_record)
        router.add("DELETE", ODATA + rf"/(?P<collection>\w+)\((?P<key>{_GUID})\)", self.delete_record)

    def _objects(self) -> dict[str, ObjectDef]:
        return store_info(self.db()).objects

    def service_document(self, request: Request) -> Response:
        names = [*self._objects(), *reference_data()]
        value = [{"name": n, "kind": "EntitySet", "url": n} for n in names]
        return _ok(200, {"@odata.context": f"{self.base_url}{ODATA}/$metadata", "value": value})

    def metadata(self, request: Request) -> Response:
        return Response(
            200, metadata_xml(self._objects()), {"Content-Type": "application/xml", "OData-Version": "4.0"}
        )

    # -- reads -----------------------------------------------------------------------------------

    def _column(self, obj: ObjectDef, name: str) -> Column | None:
        types = {f.name: f.type for f in obj.fields}
        nav = re.fullmatch(r"(\w+)/Id", name)
        if nav is not None:
            name = next((c for c, (n, _) in LOOKUPS.get(obj.name, {}).items() if n == nav.group(1)), "")
        if name == obj.modified_field:
            return Column("_modified", "datetime", canonical_time=True)
        if name == obj.created_field:
            return Column("_created", "datetime", canonical_time=True)
        if name == "Id" or name in LOOKUPS.get(obj.name, {}):
            return Column(quote_name(name), "guid")
        if name in types:
            return Column(quote_name(name), types[name])
        return None

    @staticmethod
    def _unknown(obj_name: str) -> Any:
        def build(name: str) -> ODataError:
            return ODataError(
                "The query specified in the URI is not valid. Could not find a property named "
                f"'{name}' on type '{NAMESPACE}.{obj_name}'."
            )

        return build

    def _expand(self, obj: ObjectDef, text: str | None) -> dict[str, tuple[str, str, list[str]]]:
        """``Country($select=Name),Account`` -> {nav: (lookup column, collection, columns)}."""
        navs = {nav: (column, target) for column, (nav, target) in LOOKUPS.get(obj.name, {}).items()}
        out: dict[str, tuple[str, str, list[str]]] = {}
        for part in re.split(r",(?![^()]*\))", text or ""):
            if not part.strip():
                continue
            match = re.fullmatch(r"\s*(\w+)(?:\(\$select=([\w,]+)\))?\s*", part)
            if match is None or match.group(1) not in navs:
                raise self._unknown(obj.name)(match.group(1) if match else part)
            column, target = navs[match.group(1)]
            out[match.group(1)] = (column, target, split_list(match.group(2)))
        return out

    def _expanded(self, target: str, key: object, wanted: list[str]) -> dict[str, object] | None:
        if key is None:
            return None
        reference = reference_data().get(target)
        if reference is not None:
            row = reference.get(str(key))
        else:
            obj = self._objects()[target]
            found = (
                self.db()
                .execute(f"SELECT * FROM {quote_name(target)} WHERE Id = ? AND _deleted_at IS NULL", (key,))
                .fetchone()
            )
            names = [
                d[0] for d in self.db().execute(f"SELECT * FROM {quote_name(target)} LIMIT 0").description
            ]
            row = dict(zip(names, found, strict=True)) if found else None
            if row is not None:
                row = {k: v for k, v in row.items() if k in obj.field_names}
        if row is None:
            return None
        return {k: v for k, v in row.items() if not wanted or k in wanted or k == "Id"}

    def list_records(self, request: Request, collection: str) -> Response:
        try:
            return self._list(request, collection)
        except ODataError as exc:
            return odata_error(exc.status, exc.message, exc.code)

    def _reference_list(self, request: Request, collection: str) -> Response:
        rows = list(reference_data()[collection].values())
        wanted = split_list(request.param("$select"))
        if wanted:
            rows = [{k: v for k, v in r.items() if k in wanted} for r in rows]
        return _ok(200, {"@odata.context": f"{self.base_url}{ODATA}/$metadata#{collection}", "value": rows})

    def _list(self, request: Request, collection: str) -> Response:
        if collection in reference_data():
            return self._reference_list(request, collection)
        objects = self._objects()
        obj = objects.get(collection)
        if obj is None:
            raise ODataError(f"The resource '{collection}' was not found.", status=404)
        types = {f.name: f.type for f in obj.fields}
        selected = split_list(request.param("$select"))
        for name in selected:
            if name not in types:
                raise self._unknown(obj.name)(name)
        columns = selected or list(obj.field_names)
        expand = self._expand(obj, request.param("$expand"))
        fetched = list(dict.fromkeys([*columns, *(column for column, _, _ in expand.values())]))
        where, params = ["_deleted_at IS NULL"], []
        if request.param("$filter") is not None:
            sql, filter_params = compile_filter(
                request.param("$filter") or "", lambda n: self._column(obj, n), self._unknown(obj.name)
            )
            where.append(f"({sql})")
            params.extend(filter_params)
        order = []
        for name, descending in parse_orderby(request.param("$orderby")):
            column = self._column(obj, name)
            if column is None:
                raise self._unknown(obj.name)(name)
            order.append(f"{column.sql} {'DESC' if descending else 'ASC'}")
        # Without $orderby the order is the table's; with one, Id breaks ties so $skip pages never overlap.
        order_sql = ", ".join([*order, '"Id" ASC']) if order else "rowid"
        top, skip = _non_negative(request, "$top"), _non_negative(request, "$skip") or 0
        limit = MAX_ROWS if top is None else min(top, MAX_ROWS)
        where_sql = " AND ".join(where)
        conn = self.db()
        rows = conn.execute(
            f"SELECT {', '.join(quote_name(c) for c in fetched)} FROM {quote_name(obj.name)} WHERE {where_sql}"
            f" ORDER BY {order_sql} LIMIT ? OFFSET ?",
            [*params, limit, skip],
        ).fetchall()
        ieee754 = "ieee754compatible=true" in (request.header("Accept") or "").lower().replace(" ", "")
        values = []
        for row in rows:
            by_name = dict(zip(fetched, row, strict=True))
            record = {c: json_value(types[c], by_name[c], ieee754=ieee754) for c in columns}
            for nav, (lookup, target, wanted) in expand.items():
                record[nav] = self._expanded(target, by_name[lookup], wanted)
            values.append(record)
        shape = f"({','.join(selected)})" if selected else ""
        body: dict[str, object] = {"@odata.context": f"{self.base_url}{ODATA}/$metadata#{collection}{shape}"}
        if (request.param("$count") or "").lower() == "true":
            body["@odata.count"] = conn.execute(
                f"SELECT count(*) FROM {quote_name(obj.name)} WHERE {where_sql}", params
            ).fetchone()[0]
        body["value"] = values
        return _ok(200, body)

    def read_record(self, request: Request, collection: str, key: str) -> Response:
        obj = self._objects().get(collection)
        if obj is None:
            return odata_error(404, f"The resource '{collection}' was not found.")
        row = _row(self.db(), obj, key.lower())
        if row is None:
            return odata_error(404, f"Item of type '{collection}' with id '{key}' was not found.")
        context = f"{self.base_url}{ODATA}/$metadata#{collection}/$entity"
        return _ok(200, {"@odata.context": context, **_render(obj, row)})

    # -- writes ----------------------------------------------------------------------------------

    def create_record(self, request: Request, collection: str) -> Response:
        with self._write_lock, closing(open_store(self.store_path)) as conn, conn:
            return _to_response(self._write(conn, "POST", collection, None, request.body))

    def update_record(self, request: Request, collection: str, key: str) -> Response:
        with self._write_lock, closing(open_store(self.store_path)) as conn, conn:
            return _to_response(self._write(conn, "PATCH", collection, key.lower(), request.body))

    def delete_record(self, request: Request, collection: str, key: str) -> Response:
        with self._write_lock, closing(open_store(self.store_path)) as conn, conn:
            return _to_response(self._write(conn, "DELETE", collection, key.lower(), b""))

    def _write(
        self, conn: sqlite3.Connection, method: str, collection: str, key: str | None, body: bytes
    ) -> BatchResponse:
        """One create, update or delete on ``conn`` (the caller commits or rolls back)."""
        info = store_info(conn)
        obj = info.objects.get(collection)
        if obj is None:
            return _part_error(404, f"The resource '{collection}' was not found.")
        try:
            payload = json.loads(body) if body.strip() else {}
        except ValueError:
            return _part_error(400, "The request body is not valid JSON.")
        if not isinstance(payload, dict):
            return _part_error(400, "The request body must be a JSON object.")
        existing = _row(conn, obj, key) if key is not None else None
        if key is not None and existing is None:
            return _part_error(404, f"Item of type '{collection}' with id '{key}' was not found.")
        external = first(payload, EXTERNAL_IDS.get(collection, "")) or key
        queued = self.record_faults.get(str(external)) if external is not None else None
        if queued:
            code = queued.pop(0)
            # Creatio's error bodies carry no code: "HTTP_503" (the engine's name for it) is a status.
            status = re.fullmatch(r"(?:HTTP_)?(\d{3})", code)
            if status is not None:
                return _part_error(int(status.group(1)), f"Injected failure for {external}.")
            return _part_error(500, f"Injected failure for {external}.", code)
        if method == "DELETE":
            update_rows(conn, info, obj.name, [key], at=now_seconds(), delete=True)
            return BatchResponse(204, {"OData-Version": "4.0"})
        types = {f.name: f.type for f in obj.fields}
        unknown = [name for name in payload if name not in types]
        if unknown:
            return _part_error(
                400,
                f"The property '{unknown[0]}' does not exist on type '{NAMESPACE}.{collection}'. Make sure to "
                "only use property names that are defined by the type.",
            )
        values = {
            k: v for k, v in payload.items() if k not in SYSTEM_COLUMNS or (k == "Id" and method == "POST")
        }
        merged = {**(existing or {}), **values}
        missing = [f.name for f in obj.fields if f.required and merged.get(f.name) in (None, "")]
        if missing:
            return _part_error(400, f'Column "{missing[0]}" of object "{collection}" must be filled in.')
        at = now_seconds()
        # Every session is the Supervisor's here: its contact is who created or changed the record.
        values["ModifiedById"] = SUPERVISOR_ID
        if method == "PATCH":
            update_rows(conn, info, obj.name, [key], at=at, changes=values)
            return BatchResponse(204, {"OData-Version": "4.0"})
        record_id = str(values.get("Id") or uuid.uuid4()).lower()
        if _row(conn, obj, record_id) is not None:
            return _part_error(400, f"A record with Id '{record_id}' already exists in '{collection}'.")
        values["Id"] = record_id
        values["CreatedById"] = SUPERVISOR_ID
        values.setdefault("OwnerId", SUPERVISOR_ID)
        insert_rows(conn, info, obj.name, [Stamped(values, at, at)])
        row = _row(conn, obj, record_id)
        assert row is not None
        document = {
            "@odata.context": f"{self.base_url}{ODATA}/$metadata#{collection}/$entity",
            **_render(obj, row),
        }
        headers = {
            "Content-Type": _JSON,
            "OData-Version": "4.0",
            "Location": f"{self.base_url}{ODATA}/{collection}({record_id})",
        }
        return BatchResponse(201, headers, json.dumps(document, ensure_ascii=False).encode("utf-8"))

    def batch(self, request: Request) -> Response:
        content_type = (request.header("Content-Type") or "").lower()
        continue_on_error = "continue-on-error" in " ".join(parse_prefer(request.header("Prefer")))
        if content_type.startswith("multipart/mixed"):
            return self._multipart_batch(request, continue_on_error)
        try:
            payload = request.json()
        except ValueError:
            return odata_error(400, "The batch request body is not valid JSON.")
        requests = payload.get("requests") if isinstance(payload, dict) else None
        if not isinstance(requests, list):
            return odata_error(400, "A JSON batch request needs a 'requests' array.")
        if len(requests) > MAX_BATCH_REQUESTS:
            return odata_error(
                400, f"The batch contains {len(requests)} requests; at most {MAX_BATCH_REQUESTS} are allowed."
            )
        responses: list[dict[str, object]] = []
        with self._write_lock, closing(open_store(self.store_path)) as conn:
            for item in requests:
                item = item if isinstance(item, dict) else {}
                headers = {str(k).lower(): str(v) for k, v in (item.get("headers") or {}).items()}
                body = item.get("body")
                op = BatchRequest(
                    str(item.get("method") or "").upper(),
                    str(item.get("url") or ""),
                    headers,
                    json.dumps(body).encode() if body is not None else b"",
                    str(item.get("id")) if item.get("id") is not None else None,
                )
                result = self._operation(conn, op)
                conn.commit()
                answer: dict[str, object] = {
                    "id": op.content_id,
                    "status": result.status,
                    "headers": result.headers,
                }
                answer["body"] = json.loads(result.body) if result.body else None
                responses.append(answer)
                per_request = "continue-on-error" in headers.get("prefer", "")
                if result.status >= 400 and not (continue_on_error or per_request):
                    break  # the following requests are not executed
        return _ok(200, {"responses": responses})

    def _multipart_batch(self, request: Request, continue_on_error: bool) -> Response:
        try:
            items = parse_batch(request.body, request.header("Content-Type"))
        except ODataError as exc:
            return odata_error(exc.status, exc.message)
        answers: list[BatchResponse | list[BatchResponse]] = []
        with self._write_lock, closing(open_store(self.store_path)) as conn:
            for item in items:
                if isinstance(item, ChangeSet):
                    conn.execute("SAVEPOINT changeset")
                    results = [self._operation(conn, op) for op in item.requests]
                    bad = next((r for r in results if r.status >= 400), None)
                    if bad is not None:
                        conn.execute("ROLLBACK TO changeset")
                    conn.execute("RELEASE changeset")
                    answers.append(bad if bad is not None else results)
                else:
                    result = self._operation(conn, item)
                    answers.append(result)
                    bad = result if result.status >= 400 else None
                conn.commit()
                if bad is not None and not continue_on_error:
                    break
        boundary = f"batchresponse_{uuid.uuid4()}"
        return Response(
            200, write_batch(answers, boundary), {"Content-Type": f"multipart/mixed; boundary={boundary}"}
        )

    def _operation(self, conn: sqlite3.Connection, op: BatchRequest) -> BatchResponse:
        path = unquote(urlsplit(op.url).path)
        path = path[len(ODATA) :] if path.startswith(ODATA) else path
        match = re.fullmatch(rf"/?(?P<collection>\w+)(?:\((?P<key>{_GUID})\))?", path)
        if match is None:
            result = _part_error(404, f"No HTTP resource was found that matches the request URI '{op.url}'.")
        elif op.method == "POST" and match.group("key") is None:
            result = self._write(conn, "POST", match.group("collection"), None, op.body)
        elif op.method in ("PATCH", "DELETE") and match.group("key") is not None:
            result = self._write(
                conn, op.method, match.group("collection"), match.group("key").lower(), op.body
            )
        else:
            result = _part_error(405, f"The requested resource does not support http method '{op.method}'.")
        result.content_id = op.content_id
        return result


# --- helpers ------------------------------------------------------------------------------------


def _non_negative(request: Request, name: str) -> int | None:
    raw = request.param(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise ODataError(
            f"Invalid value '{raw}' for {name} query option found. The {name} query option requires a non-negative integer value."
        )
    return int(raw)


def _row(conn: sqlite3.Connection, obj: ObjectDef, key: str | None) -> dict[str, object] | None:
    columns = ", ".join(quote_name(f.name) for f in obj.fields)
    found = conn.execute(
        f"SELECT {columns} FROM {quote_name(obj.name)} WHERE Id = ? AND _deleted_at IS NULL", (key,)
    ).fetchone()
    return None if found is None else dict(zip(obj.field_names, found, strict=True))


def _render(obj: ObjectDef, row: Mapping[str, object]) -> dict[str, object]:
    types = {f.name: f.type for f in obj.fields}
    return {name: json_value(types[name], value, ieee754=False) for name, value in row.items()}


def _part_error(status: int, message: str, code: str = "") -> BatchResponse:
    body = json.dumps({"error": {"code": code, "message": message}}, ensure_ascii=False).encode("utf-8")
    return BatchResponse(status, {"Content-Type": _JSON, "OData-Version": "4.0"}, body)


def _to_response(part: BatchResponse) -> Response:
    return Response(part.status, part.body, dict(part.headers))


def _ensure_indexes(path: Path) -> None:
    """Indexes for the orders a sync pages by (``ModifiedOn, Id`` and the external ids)."""
    with closing(open_store(path)) as conn, conn:
        for obj in store_info(conn).objects.values():
            conn.execute(
                f"CREATE INDEX IF NOT EXISTS {quote_name(obj.name + '__modified_id')} ON {quote_name(obj.name)} (_modified, Id)"
            )
            external = EXTERNAL_IDS.get(obj.name)
            if external in obj.field_names:
                conn.execute(
                    f"CREATE INDEX IF NOT EXISTS {quote_name(obj.name + '__external')} ON {quote_name(obj.name)} ({quote_name(external)})"
                )


# --- the sandbox contract -----------------------------------------------------------------------

# Canonical lead status -> the lead's stage (QualifyStatus). Creatio has no nurturing stage: a lead
# put aside stays in qualification. A converted lead is awaiting its sale or converted (sold).
_LEAD_STAGES = {
    "new": "Qualification",
    "working": "Distribution",
    "nurturing": "Qualification",
    "qualified": "Handoff to sales",
    "unqualified": "Disqualified",
}
# The seed's lead source -> the LeadSource record a user picks.
_LEAD_SOURCES = {
    "web": "Website",
    "trade show": "Event",
    "seminar": "Event",
    "partner": "Partner",
    "advertisement": "Advertising",
    "employee referral": "Recommendation",
}


def _lead_row(seed: Any, key: Any, refs: Mapping[str, Any]) -> dict[str, Any]:
    """A lead: the person and company as typed, its stage a QualifyStatus lookup; a converted one
    points at the contact it was qualified into (half of them still awaiting the sale)."""
    if seed.status == "converted":
        stage = "Converted" if sum(map(ord, seed.ref)) % 2 else "Awaiting sale"
    elif seed.status in _LEAD_STAGES:
        stage = _LEAD_STAGES[seed.status]
    else:
        raise ValueError(f"unknown lead status {seed.status!r}")
    contact = " ".join(p for p in (seed.first_name, seed.last_name) if p) or None
    source = _LEAD_SOURCES.get((seed.lead_source or "").lower())
    return {
        "Id": key,
        # Creatio names a lead after its contact and account.
        "LeadName": ", ".join(p for p in (contact, seed.company) if p) or seed.email,
        "Contact": contact,
        "Account": seed.company,
        "Email": seed.email,
        "MobilePhone": None,
        "BusinessPhone": seed.phone,
        "FullJobTitle": seed.title,
        # The country is a lookup: what a user typed becomes the record they picked.
        "CountryId": country_id(seed.country),
        "QualifyStatusId": QUALIFY_STATUS_IDS[stage],
        "LeadSourceId": LEAD_SOURCE_IDS[source] if source else None,
        "QualifiedContactId": refs.get(seed.contact_ref) if seed.contact_ref and seed.converted else None,
        "OwnerId": SUPERVISOR_ID,
        "CreatedById": SUPERVISOR_ID,
        "ModifiedById": SUPERVISOR_ID,
    }


class CreatioSandbox(SandboxCrm):
    """Creatio (Sales Creatio) as the sandbox runs it: Account, Contact, Opportunity and Lead over OData 4."""

    system = "creatio"
    timestamp_format = "iso_z"
    objects = OBJECTS
    kinds = MappingProxyType(
        {"account": "Account", "contact": "Contact", "deal": "Opportunity", "lead": "Lead"}
    )
    stage_values = STAGE_IDS

    def new_key(self, kind: Kind, rng: random.Random) -> Any:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    def row(self, kind: Kind, seed: Any, key: Any, refs: Mapping[str, Any]) -> dict[str, Any]:
        if kind == "account":
            return {
                "Id": key,
                "Name": seed.name,
                "Code": seed.ref,
                "Web": seed.website,
                "Phone": seed.phone,
                "Address": seed.street,
                "Zip": seed.postal_code,
                # Country and industry are lookups: what a user typed becomes the record they picked.
                "CountryId": country_id(seed.country),
                "IndustryId": industry_id(seed.industry),
                "UsrAnnualRevenue": float(seed.annual_revenue) if seed.annual_revenue else None,
                "OwnerId": SUPERVISOR_ID,
                "CreatedById": SUPERVISOR_ID,
                "ModifiedById": SUPERVISOR_ID,
            }
        if kind == "contact":
            return {
                "Id": key,
                # Creatio fills Name from the name parts; a contact without any is still saved by name.
                "Name": " ".join(p for p in (seed.first_name, seed.last_name) if p) or seed.email,
                "GivenName": seed.first_name,
                "Surname": seed.last_name,
                "Email": seed.email,
                "Phone": seed.phone,
                "JobTitle": seed.title,
                "AccountId": refs.get(seed.account_ref) if seed.account_ref else None,
                "Address": seed.street,
                "Zip": seed.postal_code,
                "CountryId": country_id(seed.country),
                "BirthDate": seed.birth_date,
                "OwnerId": SUPERVISOR_ID,
                "CreatedById": SUPERVISOR_ID,
                "ModifiedById": SUPERVISOR_ID,
            }
        if kind == "lead":
            return _lead_row(seed, key, refs)
        return {
            "Id": key,
            "Title": seed.name,
            "Amount": float(seed.amount) if seed.amount else None,
            "CurrencyId": currency_id(seed.currency),
            "StageId": STAGE_IDS[seed.stage],
            "DueDate": seed.close_date,
            "AccountId": refs.get(seed.account_ref) if seed.account_ref else None,
            "OwnerId": SUPERVISOR_ID,
            "CreatedById": SUPERVISOR_ID,
            "ModifiedById": SUPERVISOR_ID,
        }

    def start(self, store: Path, *, token_ttl_seconds: float | None = None) -> Started:
        simulator = CreatioSimulator(store, session_ttl_seconds=token_ttl_seconds or DEFAULT_SESSION_TTL)
        simulator.start()
        return Started(
            simulator,
            {
                "CREATIO_BASE_URL": simulator.base_url,
                "CREATIO_USERNAME": simulator.username,
                "CREATIO_PASSWORD": simulator.password,
            },
        )

    def write_case(self, store: Path) -> WriteCase:
        taken = {r["Code"] for r in fetch_records(store, "Account", include_deleted=True)}
        accepted: list[dict[str, Any]] = [
            {"Code": "WB-20001", "Name": "Fjord Maritime AS", "Phone": "+47 22 33 44 55"},
            {"Code": "WB-20002", "Name": "Tramontana Foods S.L.", "UsrAnnualRevenue": 2500000.0},
            {"Code": "WB-20004", "Name": "Kestrel Avionics Ltd", "Web": "https://kestrel.example"},
        ]
        if taken & {r["Code"] for r in accepted}:
            raise ValueError("write-case codes must be new to the store")
        return WriteCase(
            object_name="Account",
            external_id_field="Code",
            accepted=accepted,
            # An account needs a Name; Creatio's error bodies carry an empty code, so the HTTP status
            # is the category the engine reports.
            rejected=[{"Code": "WB-20003", "Web": "https://no-name.example"}],
            rejected_code="HTTP_400",
        )

    def update_case(self, store: Path) -> UpdateCase:
        accounts = sorted(fetch_records(store, "Account"), key=lambda r: str(r["Id"]))[:3]
        changed = [
            {"Id": r["Id"], "UsrErpCustomerNumber": f"K-{20_500 + n}", "Phone": f"+47 22 55 {n:02d} 00"}
            for n, r in enumerate(accounts, start=1)
        ]
        return UpdateCase(
            object_name="Account",
            changed=changed,
            field="UsrErpCustomerNumber",
            expected={str(r["Id"]): r["UsrErpCustomerNumber"] for r in changed},
            # A PATCH of an Id that is no record is 404; Creatio's error bodies carry an empty code.
            unknown={"Id": "0b4f7f0e-0000-4000-8000-00000000dead", "UsrErpCustomerNumber": "K-29999"},
            unknown_code="HTTP_404",
        )


SANDBOX = CreatioSandbox()
