"""The write side of the Dataverse simulator: upsert by alternate key and ``$batch``.

``PATCH /api/data/v9.2/<set>(<key>='<value>')`` creates or updates (204 either way, 201/200 with
``Prefer: return=representation``; ``If-Match: *`` refuses the create with 404, ``If-None-Match: *``
the update with 412). ``POST /api/data/v9.2/$batch`` runs up to 1000 such operations from a
``multipart/mixed`` body in order; a changeset is all or nothing; without
``Prefer: odata.continue-on-error`` the batch stops at the first failure and answers 400.
https://learn.microsoft.com/power-apps/developer/data-platform/use-upsert-insert-update-record
https://learn.microsoft.com/power-apps/developer/data-platform/webapi/execute-batch-operations-using-web-api
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import uuid
from collections.abc import Mapping
from contextlib import closing
from urllib.parse import unquote, urlsplit

from crm_pipelines_sandbox.simulators.base import Request, Response, SimulatorServer
from crm_pipelines_sandbox.simulators.dynamics_schema import (
    API,
    CURRENCIES,
    ENTITIES,
    JSON_TYPE,
    MAX_BATCH_OPERATIONS,
    READ_ONLY,
    Entity,
    Lookup,
    checked_value,
    derived_columns,
    error_json,
    first_param,
    key_condition,
    now_seconds,
    odata_error_json,
    part_error,
    record_json,
    required_error,
    select_names,
    to_response,
)
from crm_pipelines_sandbox.simulators.odata import (
    BatchRequest,
    BatchResponse,
    ChangeSet,
    ODataError,
    parse_batch,
    parse_prefer,
    split_list,
    write_batch,
)
from crm_pipelines_sandbox.simulators.records import (
    ObjectDef,
    Stamped,
    insert_rows,
    open_store,
    store_info,
    update_rows,
)
from crm_pipelines_sandbox.simulators.records import quote as quote_name


class DataverseWriter(SimulatorServer):
    """Upserts and batches against the store; :class:`.dynamics.DynamicsSimulator` adds the rest."""

    # external id -> error codes to answer on its next upsert attempts (a retryable per-record failure)
    record_faults: dict[str, list[str]]
    _write_lock: threading.Lock

    def upsert_record(self, request: Request, entity_set: str, keys: str) -> Response:
        with self._write_lock, closing(open_store(self.store_path)) as conn, conn:
            return to_response(
                self._upsert(
                    conn, request.method, entity_set, keys, request.headers, request.body, request.query
                )
            )

    def create_record(self, request: Request, entity_set: str) -> Response:
        with self._write_lock, closing(open_store(self.store_path)) as conn, conn:
            return to_response(
                self._upsert(conn, "POST", entity_set, None, request.headers, request.body, request.query)
            )

    def _upsert(
        self,
        conn: sqlite3.Connection,
        method: str,
        entity_set: str,
        keys: str | None,
        headers: Mapping[str, str],
        body: bytes,
        query: Mapping[str, list[str]],
    ) -> BatchResponse:
        """One create/update/upsert on ``conn`` (the caller commits or rolls back)."""
        try:
            entity = ENTITIES.get(entity_set)
            if entity is None:
                raise ODataError(
                    f"Resource not found for the segment '{entity_set}'.", status=404, code="0x8006088a"
                )
            info = store_info(conn)
            obj = info.objects[entity_set]
            try:
                payload = json.loads(body or b"{}")
            except ValueError as exc:
                raise ODataError("The request body is not valid JSON.", code="0x80040203") from exc
            if not isinstance(payload, dict):
                raise ODataError("The request body must be a JSON object.", code="0x80040203")
            found: tuple[object, ...] | None = None
            alternate: dict[str, str] = {}
            if keys is not None:
                condition, params, alternate = key_condition(entity, obj, keys)
                found = conn.execute(
                    f"SELECT {quote_name(obj.key)} FROM {quote_name(obj.name)} WHERE {condition} AND _deleted_at IS NULL",
                    params,
                ).fetchone()
            external = next(iter(alternate.values()), None) if alternate else None
            queued = self.record_faults.get(str(external)) if external is not None else None
            if queued:
                code = queued.pop(0)
                throttled = code in ("0x80072322", "0x80072321", "0x80072326")
                return part_error(429 if throttled else 500, code, f"Injected failure for {external}.")
            values = self._values(conn, entity, obj, payload)
            match_header = headers.get("if-match")
            none_match = headers.get("if-none-match")
            if found is not None and none_match == "*":
                return part_error(412, "", "A record with matching key values already exists.")
            if found is None and match_header == "*":
                if alternate and obj.key not in alternate:
                    return part_error(
                        404,
                        "0x80060891",
                        f"A record with the specified key values does not exist in {entity.logical} entity",
                    )
                return part_error(404, "0x80040217", f"{entity.logical} With Id = {keys} Does Not Exist")
            at = now_seconds()
            prefer = parse_prefer(headers.get("prefer"))
            if found is not None:
                record_id = str(found[0])
                changes = {k: v for k, v in values.items() if k not in alternate}
                missing = [f for f in entity.required if f in changes and changes[f] in (None, "")]
                if missing:
                    return required_error(entity, missing[0])
                update_rows(
                    conn,
                    info,
                    obj.name,
                    [record_id],
                    at=at,
                    changes=derived_columns(obj.name, conn, record_id, changes),
                )
                status = 200 if "return" in prefer else 204
            else:
                record = {**{k: v for k, v in alternate.items() if k != obj.key}, **values}
                missing = [f for f in entity.required if record.get(f) in (None, "")]
                if missing:
                    return required_error(entity, missing[0])
                record_id = alternate.get(obj.key) or str(uuid.uuid4())
                record[obj.key] = record_id
                record = derived_columns(obj.name, None, None, record)
                insert_rows(conn, info, obj.name, [Stamped(record, at, at)])
                status = 201 if "return" in prefer else 204
            location = f"{self.base_url}{API}/{entity_set}({record_id})"
            out_headers = {"OData-Version": "4.0", "OData-EntityId": location}
            if status in (200, 201):
                columns = select_names(entity, obj, query)
                if obj.key not in columns:
                    columns.append(obj.key)
                row = conn.execute(
                    f"SELECT _seq, {', '.join(quote_name(c) for c in columns)} FROM {quote_name(obj.name)}"
                    f" WHERE {quote_name(obj.key)} = ?",
                    (record_id,),
                ).fetchone()
                shape = (
                    f"({','.join(split_list(first_param(query, '$select')))})"
                    if first_param(query, "$select")
                    else ""
                )
                document = {
                    "@odata.context": f"{self.base_url}{API}/$metadata#{entity_set}{shape}/$entity",
                    **record_json(
                        entity, obj, columns, tuple(row[1:]), int(row[0]), expand={}, annotate=False
                    ),
                }
                out_headers.update(
                    {
                        "Content-Type": JSON_TYPE,
                        "ETag": f'W/"{row[0]}"',
                        "Preference-Applied": "return=representation",
                    }
                )
                return BatchResponse(
                    status, out_headers, json.dumps(document, ensure_ascii=False).encode("utf-8")
                )
            if method == "POST":
                out_headers["Location"] = location
            return BatchResponse(204, out_headers)
        except ODataError as exc:
            return part_error(exc.status, exc.code or "0x80060888", exc.message)

    def _values(
        self, conn: sqlite3.Connection, entity: Entity, obj: ObjectDef, payload: Mapping[str, object]
    ) -> dict[str, object]:
        """The request body as store columns: plain properties, and lookups set with ``@odata.bind``."""
        types = {f.name: f.type for f in obj.fields}
        binds = {lookup.bind: name for name, lookup in entity.lookups.items()}
        out: dict[str, object] = {}
        for name, value in payload.items():
            if name.startswith("@odata."):
                continue
            if name.endswith("@odata.bind"):
                nav = name[: -len("@odata.bind")]
                if nav not in binds:
                    raise ODataError(
                        f"An undeclared property '{nav}' which only has property annotations in the payload but "
                        "no property value was found in the payload.",
                        code="0x80060888",
                    )
                out[binds[nav]] = self._bound_id(conn, entity.lookups[binds[nav]], value)
                continue
            if name not in types or name in entity.lookups or name == obj.key:
                raise ODataError(
                    f"The property '{name}' does not exist on type '{entity.type_name}'. Make sure to only use "
                    "property names that are defined by the type.",
                    code="0x80060888",
                )
            if name in READ_ONLY:
                continue  # system columns: Dataverse ignores values sent for them
            out[name] = checked_value(entity, name, types[name], value)
        return out

    def _bound_id(self, conn: sqlite3.Connection, lookup: Lookup, value: object) -> str | None:
        if value is None:
            return None
        match = re.fullmatch(r"/?(\w+)\((.+)\)", str(value))
        if match is None or match.group(1) != lookup.target:
            raise ODataError(
                f"The reference '{value}' is not a {lookup.target_logical} record URI.", code="0x80060888"
            )
        if lookup.target == "transactioncurrencies":
            currency_id = match.group(2).lower()
            if currency_id not in CURRENCIES:
                raise ODataError(
                    f"transactioncurrency With Id = {currency_id} Does Not Exist",
                    status=404,
                    code="0x80040217",
                )
            return currency_id
        target = ENTITIES[lookup.target]
        target_obj = store_info(conn).objects[lookup.target]
        condition, params, _ = key_condition(target, target_obj, match.group(2))
        row = conn.execute(
            f"SELECT {quote_name(target_obj.key)} FROM {quote_name(target_obj.name)} WHERE {condition}"
            " AND _deleted_at IS NULL",
            params,
        ).fetchone()
        if row is None:
            raise ODataError(
                f"{target.logical} With Id = {match.group(2)} Does Not Exist", status=404, code="0x80040217"
            )
        return str(row[0])

    def batch(self, request: Request) -> Response:
        try:
            items = parse_batch(request.body, request.header("Content-Type"))
        except ODataError as exc:
            return odata_error_json(exc)
        total = sum(len(i.requests) if isinstance(i, ChangeSet) else 1 for i in items)
        if total > MAX_BATCH_OPERATIONS:
            return error_json(
                400,
                "0x8006088b",
                f"Number of requests in the batch ({total}) exceeds the limit of {MAX_BATCH_OPERATIONS}.",
            )
        continue_on_error = "odata.continue-on-error" in parse_prefer(request.header("Prefer"))
        answers: list[BatchResponse | list[BatchResponse]] = []
        failed = False
        with self._write_lock, closing(open_store(self.store_path)) as conn:
            for item in items:
                if isinstance(item, ChangeSet):
                    conn.execute("SAVEPOINT changeset")
                    results = [self._operation(conn, op) for op in item.requests]
                    bad = next((r for r in results if r.status >= 400), None)
                    if bad is not None:
                        conn.execute("ROLLBACK TO changeset")  # all or nothing
                        answers.append(bad)
                    else:
                        answers.append(results)
                    conn.execute("RELEASE changeset")
                    conn.commit()
                else:
                    result = self._operation(conn, item)
                    conn.commit()
                    answers.append(result)
                    bad = result if result.status >= 400 else None
                if bad is not None:
                    failed = True
                    if not continue_on_error:
                        break
        boundary = f"batchresponse_{uuid.uuid4()}"
        status = 400 if failed and not continue_on_error else 200
        return Response(
            status,
            write_batch(answers, boundary),
            {"Content-Type": f"multipart/mixed; boundary={boundary}", "OData-Version": "4.0"},
        )

    def _operation(self, conn: sqlite3.Connection, op: BatchRequest) -> BatchResponse:
        parts = urlsplit(op.url)
        path = unquote(parts.path)  # a key may be percent-encoded (emailaddress1='a%40b.example')
        if not path.startswith("/"):
            path = f"{API}/{path}"
        query: dict[str, list[str]] = {}
        for pair in parts.query.split("&") if parts.query else []:
            name, _, value = pair.partition("=")
            query.setdefault(unquote(name), []).append(unquote(value))
        match = re.fullmatch(API + r"/(?P<set>[a-z_]+)(?:\((?P<keys>[^)]*)\))?", path)
        if match is None:
            return part_error(
                404, "0x80060888", f"Resource not found for the segment '{path.rsplit('/', 1)[-1]}'."
            )
        response = BatchResponse(405, {}, b"")
        if op.method == "PATCH" and match.group("keys") is not None:
            response = self._upsert(
                conn, "PATCH", match.group("set"), match.group("keys"), op.headers, op.body, query
            )
        elif op.method == "POST" and match.group("keys") is None:
            response = self._upsert(conn, "POST", match.group("set"), None, op.headers, op.body, query)
        else:
            response = part_error(
                405, "0x80060888", f"The HTTP method '{op.method}' is not allowed in this batch."
            )
        response.content_id = op.content_id
        return response
