"""Zoho CRM v8 in the sandbox: the upsert of one record (duplicate check, insert or update, per-record errors).

Split from :mod:`.zoho`, whose ``POST /crm/v8/{module}/upsert`` handler validates the request and
calls :func:`upsert_one` for each record inside one write transaction.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime

from crm_pipelines_sandbox.simulators.records import Stamped, StoreInfo, insert_rows, quote, update_rows
from crm_pipelines_sandbox.simulators.zoho_schema import (
    ID_PREFIX,
    LOOKUPS,
    MAX_TEXT_LENGTH,
    SYSTEM_USER_FIELDS,
    USER,
    record_error,
    time_text,
)


def upsert_one(
    conn: sqlite3.Connection,
    info: StoreInfo,
    module: str,
    check_fields: list[str],
    index: int,
    record: object,
    record_faults: dict[str, list[str]],
) -> dict[str, object]:
    """Upsert ``record`` (``data[index]`` of the request) on an open write transaction.

    Args:
        conn: Writable store connection (the caller holds the write lock and commits).
        info: The store's schema.
        module: Module API name.
        check_fields: Duplicate check fields, in the order they are tried.
        index: Position in the request (for ``json_path`` in errors).
        record: The record as sent.
        record_faults: Duplicate-check value -> error codes to answer on its next attempts.

    Returns:
        Zoho's per-record result: ``SUCCESS`` with ``action`` and ``details``, or an error body.
    """
    path = f"$.data[{index}]"
    if not isinstance(record, dict):
        return record_error("INVALID_DATA", "invalid data", {"api_name": "data", "json_path": path})
    obj = info.objects[module]
    types = {f.name: f.type for f in obj.fields}
    key_value = next((str(record[f]) for f in check_fields if record.get(f) not in (None, "")), None)
    queued = record_faults.get(key_value or "")
    if queued:
        code = queued.pop(0)
        return record_error(
            code, f"injected {code} for {key_value}", {"api_name": check_fields[0], "json_path": path}
        )
    values: dict[str, object] = {}
    for name, value in record.items():
        if name in ("id", "Created_Time", "Modified_Time", *SYSTEM_USER_FIELDS) or name.startswith("$"):
            continue  # system fields: read only, ignored on write
        if name not in types:
            return record_error(
                "INVALID_DATA", "invalid data", {"api_name": name, "json_path": f"{path}.{name}"}
            )
        converted = write_value(module, name, types[name], value)
        if isinstance(converted, dict) and converted.get("status") == "error":
            details = converted["details"]
            assert isinstance(details, dict)
            details["json_path"] = f"{path}.{name}"
            return converted
        values[name] = converted
    now = datetime.now(UTC)
    match: tuple[str, str] | None = None
    created_time = time_text(now)
    duplicate_field: str | None = None
    for name in check_fields:
        value = values.get(name)
        if value in (None, ""):
            continue
        found = conn.execute(
            f"SELECT {quote(obj.key)}, Created_Time FROM {quote(module)}"
            f" WHERE {quote(name)} = ? AND _deleted_at IS NULL ORDER BY rowid LIMIT 1",
            (value,),
        ).fetchone()
        if found is not None:
            match = (str(found[0]), name)
            created_time = str(found[1])
            break
    if match is not None:
        record_id, duplicate_field = match
        update_rows(conn, info, module, [record_id], at=now, changes=values)
        action, message = "update", "record updated"
    else:
        missing = [f.name for f in obj.fields if f.required and values.get(f.name) in (None, "")]
        if missing:
            return record_error(
                "MANDATORY_NOT_FOUND",
                "required field not found",
                {"api_name": missing[0], "json_path": f"{path}.{missing[0]}"},
            )
        record_id = next_id(conn)
        insert_rows(conn, info, module, [Stamped({**values, obj.key: record_id}, now, now)])
        action, message = "insert", "record added"
    user = {"name": USER["name"], "id": USER["id"]}
    return {
        "code": "SUCCESS",
        "duplicate_field": duplicate_field,
        "action": action,
        "details": {
            "Modified_Time": time_text(now),
            "Modified_By": dict(user),
            "Created_Time": created_time,
            "id": record_id,
            "Created_By": dict(user),
        },
        "message": message,
        "status": "success",
    }


def update_one(
    conn: sqlite3.Connection,
    info: StoreInfo,
    module: str,
    index: int,
    record: object,
    record_faults: dict[str, list[str]],
) -> dict[str, object]:
    """Update the record ``record["id"]`` (``data[index]`` of a PUT) on an open write transaction.

    An id the org does not know (or one in the recycle bin) is ``INVALID_DATA`` on ``id``: an update
    never creates.

    Returns:
        Zoho's per-record result: ``SUCCESS`` with ``details``, or an error body.
    """
    path = f"$.data[{index}]"
    if not isinstance(record, dict):
        return record_error("INVALID_DATA", "invalid data", {"api_name": "data", "json_path": path})
    record_id = record.get("id")
    if record_id in (None, ""):
        return record_error(
            "MANDATORY_NOT_FOUND", "required field not found", {"api_name": "id", "json_path": f"{path}.id"}
        )
    record_id = str(record_id)
    queued = record_faults.get(record_id)
    if queued:
        code = queued.pop(0)
        return record_error(code, f"injected {code} for {record_id}", {"api_name": "id", "json_path": path})
    obj = info.objects[module]
    types = {f.name: f.type for f in obj.fields}
    values: dict[str, object] = {}
    for name, value in record.items():
        if name in ("id", "Created_Time", "Modified_Time", *SYSTEM_USER_FIELDS) or name.startswith("$"):
            continue  # system fields: read only, ignored on write
        if name not in types:
            return record_error(
                "INVALID_DATA", "invalid data", {"api_name": name, "json_path": f"{path}.{name}"}
            )
        converted = write_value(module, name, types[name], value)
        if isinstance(converted, dict) and converted.get("status") == "error":
            details = converted["details"]
            assert isinstance(details, dict)
            details["json_path"] = f"{path}.{name}"
            return converted
        values[name] = converted
    emptied = [f.name for f in obj.fields if f.required and f.name in values and values[f.name] in (None, "")]
    if emptied:
        return record_error(
            "MANDATORY_NOT_FOUND",
            "required field not found",
            {"api_name": emptied[0], "json_path": f"{path}.{emptied[0]}"},
        )
    found = conn.execute(
        f"SELECT Created_Time FROM {quote(module)} WHERE {quote(obj.key)} = ? AND _deleted_at IS NULL",
        (record_id,),
    ).fetchone()
    if found is None:
        return record_error(
            "INVALID_DATA", "the id given seems to be invalid", {"api_name": "id", "json_path": f"{path}.id"}
        )
    now = datetime.now(UTC)
    update_rows(conn, info, module, [record_id], at=now, changes=values)
    user = {"name": USER["name"], "id": USER["id"]}
    return {
        "code": "SUCCESS",
        "details": {
            "Modified_Time": time_text(now),
            "Modified_By": dict(user),
            "Created_Time": str(found[0]),
            "id": record_id,
            "Created_By": dict(user),
        },
        "message": "record updated",
        "status": "success",
    }


def write_value(module: str, name: str, field_type: str, value: object) -> object:
    """A request value as the store keeps it, or a per-record error body."""
    if value is None:
        return None
    if name in LOOKUPS.get(module, {}):
        if isinstance(value, dict) and value.get("id"):
            return str(value["id"])
        if isinstance(value, str | int) and str(value).isdigit():
            return str(value)
        return record_error(
            "INVALID_DATA", "invalid data", {"api_name": name, "expected_data_type": "lookup"}
        )
    if field_type in ("number", "integer"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            expected = "double" if field_type == "number" else "integer"
            return record_error(
                "INVALID_DATA", "invalid data", {"api_name": name, "expected_data_type": expected}
            )
        return value
    if field_type == "boolean":
        if not isinstance(value, bool):
            return record_error(
                "INVALID_DATA", "invalid data", {"api_name": name, "expected_data_type": "boolean"}
            )
        return value
    if field_type == "date":
        try:
            return date.fromisoformat(str(value)).isoformat()
        except ValueError:
            return record_error(
                "INVALID_DATA", "invalid data", {"api_name": name, "expected_data_type": "date"}
            )
    if not isinstance(value, str):
        return record_error("INVALID_DATA", "invalid data", {"api_name": name, "expected_data_type": "text"})
    if len(value) > MAX_TEXT_LENGTH:
        return record_error(
            "INVALID_DATA", "invalid data", {"api_name": name, "maximum_length": MAX_TEXT_LENGTH}
        )
    return value


def next_id(conn: sqlite3.Connection) -> str:
    """The next record id of the org: ids are unique across modules and increase."""
    highest = 0
    for (table,) in conn.execute("SELECT name FROM _objects").fetchall():
        row = conn.execute(f"SELECT max({quote('id')}) FROM {quote(str(table))}").fetchone()
        if row and row[0]:
            highest = max(highest, int(str(row[0])))
    return str(max(highest + 1, int(f"{ID_PREFIX}000000000001")))
