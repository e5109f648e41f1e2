"""The record store behind the simulators of the systems declared after Salesforce and HubSpot.

One SQLite file per system. Each object (Dynamics ``accounts``, Zoho ``Accounts``, SAP Business One
``BusinessPartners`` ...) is a table whose columns are the API's own field names, so a simulator
serves a row as it is. Beside them every table carries what every CRM keeps internally and no API
shows directly:

* ``_created`` / ``_modified``: canonical UTC instants (``2026-11-25T10:00:00.000000+00:00``), which
  order as text. Simulators filter and sort on them whatever format the system writes its own
  created/modified fields in.
* ``_deleted_at``: set when the record is deleted. Deleted rows stay in the table (hidden from normal
  listings) so the deletion endpoints (Zoho ``/deleted``, Dynamics change tracking) can report them.
* ``_seq``: a change sequence number, raised on every insert, update and delete (store-wide). A
  delta token is "changes after sequence N".

The store records the system, its objects, their key, created/modified fields and the timestamp
format (``_meta``, ``_objects``, ``_fields``), so tests and the data generator change the data through
:func:`insert_records`, :func:`touch_records`, :func:`delete_records` and :func:`add_field` without
knowing the system, the way a user changes the real CRM between two syncs.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

FieldType = Literal["string", "number", "integer", "boolean", "date", "datetime", "json"]
_SQL_TYPES: dict[str, str] = {
    "string": "TEXT",
    "number": "REAL",
    "integer": "INTEGER",
    "boolean": "INTEGER",
    "date": "TEXT",
    "datetime": "TEXT",
    "json": "TEXT",
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
META_COLUMNS = ("_created", "_modified", "_deleted_at", "_seq")


# --- timestamp formats -----------------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso_z(value: datetime) -> str:
    return _utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso_ms_z(value: datetime) -> str:
    utc = _utc(value)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _iso_offset(value: datetime) -> str:
    return _utc(value).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _sql(value: datetime) -> str:
    return _utc(value).strftime("%Y-%m-%d %H:%M:%S")


def _epoch_ms_date(value: datetime) -> str:
    return f"/Date({int(_utc(value).timestamp() * 1000)})/"


# How each system writes an instant in its API. A simulator may render differently (SAP Business One
# splits date and time into two fields); this is how the store keeps the system's own columns.
TIMESTAMP_FORMATS: dict[str, Callable[[datetime], str]] = {
    "iso_z": _iso_z,  # 2026-11-25T10:00:00Z (Dynamics, Creatio, Pipedrive v2, SAP B1 v2)
    "iso_ms_z": _iso_ms_z,  # 2026-11-25T10:00:00.123Z
    "iso_offset": _iso_offset,  # 2026-11-25T10:00:00+00:00 (Zoho, SugarCRM)
    "sql": _sql,  # 2026-11-25 10:00:00 (Pipedrive v1, Sage CRM)
    "sdata": _epoch_ms_date,  # /Date(1764064800000)/ (SData JSON)
}


def canonical(value: datetime) -> str:
    """The store's own instant text: fixed width, UTC, microseconds, orders as time does."""
    return _utc(value).isoformat(timespec="microseconds")


def from_canonical(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- schema ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldDef:
    """One API field: its name exactly as the API spells it, and its type."""

    name: str
    type: FieldType = "string"
    required: bool = False  # the system refuses a create without it (for write-side simulations)


@dataclass(frozen=True)
class ObjectDef:
    """One object (entity set, module, resource) of a system.

    Attributes:
        name: The API name, also the table name (``accounts``, ``Accounts``, ``BusinessPartners``).
        key: The primary key field (set by the system on create).
        fields: Every API field, the key included, in the order the API lists them.
        created_field: Field holding the creation instant in the system's format, if any.
        modified_field: Field holding the last-modified instant in the system's format, if any.
        deleted_flag: A field the system itself sets to 1 on soft-deleted rows (Sage CRM
            ``comp_deleted``, SugarCRM ``deleted``), if any.
    """

    name: str
    key: str
    fields: tuple[FieldDef, ...]
    created_field: str | None = None
    modified_field: str | None = None
    deleted_flag: str | None = None

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        for name in (self.name, *names):
            if not _NAME.match(name) or name.startswith("_"):
                raise ValueError(f"invalid object or field name {name!r}")
        for role, named in (
            ("key", self.key),
            ("created_field", self.created_field),
            ("modified_field", self.modified_field),
            ("deleted_flag", self.deleted_flag),
        ):
            if named is not None and named not in names:
                raise ValueError(f"{self.name}: {role} {named!r} is not one of its fields")

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


@dataclass(frozen=True)
class StoreInfo:
    """What a store says about itself (read back from the file)."""

    system: str
    timestamp_format: str
    objects: dict[str, ObjectDef] = field(default_factory=dict)

    def format_time(self, value: datetime) -> str:
        return TIMESTAMP_FORMATS[self.timestamp_format](value)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def open_store(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open a store; read-only connections use SQLite's URI mode so a simulator's reads never write."""
    if readonly:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn
    return _connect(Path(path))


def quote(name: str) -> str:
    """Quote an identifier that was checked against the store's tables and columns."""
    return '"' + name.replace('"', '""') + '"'


def create_store(
    path: Path, *, system: str, objects: Iterable[ObjectDef], timestamp_format: str
) -> sqlite3.Connection:
    """Create an empty store and return it open (indexes included; the tables are small to mid-sized).

    Args:
        path: The SQLite file to create.
        system: System name (``dynamics``, ``zoho`` ...), as in ``connectors/systems/<system>.yaml``.
        objects: The objects the simulator serves.
        timestamp_format: A key of :data:`TIMESTAMP_FORMATS`: how the system writes instants.
    """
    if timestamp_format not in TIMESTAMP_FORMATS:
        raise ValueError(f"unknown timestamp format {timestamp_format!r}; known: {sorted(TIMESTAMP_FORMATS)}")
    conn = _connect(Path(path))
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE _meta (key TEXT PRIMARY KEY, value TEXT)")
    conn.executemany(
        "INSERT INTO _meta VALUES (?, ?)",
        [("system", system), ("timestamp_format", timestamp_format), ("seq", "0")],
    )
    conn.execute(
        "CREATE TABLE _objects (name TEXT PRIMARY KEY, key TEXT NOT NULL, created_field TEXT,"
        " modified_field TEXT, deleted_flag TEXT)"
    )
    conn.execute(
        "CREATE TABLE _fields (object TEXT NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL,"
        " required INTEGER NOT NULL, position INTEGER NOT NULL, PRIMARY KEY (object, name))"
    )
    for obj in objects:
        columns = [f"{quote(f.name)} {_SQL_TYPES[f.type]}" for f in obj.fields]
        columns += [
            "_created TEXT NOT NULL",
            "_modified TEXT NOT NULL",
            "_deleted_at TEXT",
            "_seq INTEGER NOT NULL",
        ]
        conn.execute(f"CREATE TABLE {quote(obj.name)} ({', '.join(columns)})")
        conn.execute(
            f"CREATE UNIQUE INDEX {quote(obj.name + '__key')} ON {quote(obj.name)} ({quote(obj.key)})"
        )
        conn.execute(f"CREATE INDEX {quote(obj.name + '__modified')} ON {quote(obj.name)} (_modified)")
        conn.execute(f"CREATE INDEX {quote(obj.name + '__seq')} ON {quote(obj.name)} (_seq)")
        conn.execute(
            "INSERT INTO _objects VALUES (?, ?, ?, ?, ?)",
            (obj.name, obj.key, obj.created_field, obj.modified_field, obj.deleted_flag),
        )
        conn.executemany(
            "INSERT INTO _fields VALUES (?, ?, ?, ?, ?)",
            [(obj.name, f.name, f.type, int(f.required), i) for i, f in enumerate(obj.fields)],
        )
    conn.commit()
    return conn


def store_info(conn: sqlite3.Connection) -> StoreInfo:
    """Read the system, timestamp format and objects (fields added later included) from a store."""
    meta = dict(conn.execute("SELECT key, value FROM _meta").fetchall())
    if "system" not in meta:
        raise ValueError("not a record store: no system in _meta")
    objects: dict[str, ObjectDef] = {}
    for name, key, created_field, modified_field, deleted_flag in conn.execute(
        "SELECT name, key, created_field, modified_field, deleted_flag FROM _objects ORDER BY rowid"
    ).fetchall():
        fields = tuple(
            FieldDef(str(n), t, bool(r))
            for n, t, r in conn.execute(
                "SELECT name, type, required FROM _fields WHERE object = ? ORDER BY position", (name,)
            )
        )
        objects[str(name)] = ObjectDef(
            str(name), str(key), fields, created_field, modified_field, deleted_flag
        )
    return StoreInfo(
        system=str(meta["system"]), timestamp_format=str(meta["timestamp_format"]), objects=objects
    )


def read_info(path: Path) -> StoreInfo:
    with closing(open_store(path, readonly=True)) as conn:
        return store_info(conn)


def current_seq(conn: sqlite3.Connection) -> int:
    """The sequence number of the latest change (0 for an empty store)."""
    row = conn.execute("SELECT value FROM _meta WHERE key = 'seq'").fetchone()
    return int(row[0]) if row else 0


def _next_seq(conn: sqlite3.Connection) -> int:
    value = current_seq(conn) + 1
    conn.execute("UPDATE _meta SET value = ? WHERE key = 'seq'", (str(value),))
    return value


def _object(info: StoreInfo, name: str) -> ObjectDef:
    try:
        return info.objects[name]
    except KeyError:
        raise KeyError(
            f"{info.system} store has no object {name!r}; objects: {sorted(info.objects)}"
        ) from None


def _checked(obj: ObjectDef, names: Iterable[str]) -> list[str]:
    names = list(names)
    unknown = [n for n in names if n not in obj.field_names]
    if unknown:
        raise KeyError(f"unknown field(s) {unknown} on {obj.name}")
    return names


def _stored(value: object) -> object:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, datetime):
        return canonical(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return value


# --- writes ----------------------------------------------------------------------------------------


class Stamped(NamedTuple):
    """A row to insert and its instants: created, last modified, deleted (None while it exists)."""

    values: Mapping[str, object]
    created: datetime
    modified: datetime
    deleted: datetime | None = None


def insert_rows(conn: sqlite3.Connection, info: StoreInfo, object_name: str, rows: Iterable[Stamped]) -> int:
    """Insert rows on an open connection (the caller commits): the data generator's fast path.

    Each row maps API field names to values. The object's created/modified fields are written in the
    system's format unless the row already carries them; a row deleted at insertion (history) is
    hidden like any deleted record.

    Returns:
        Rows inserted.
    """
    obj = _object(info, object_name)
    count = 0
    seq = current_seq(conn)
    for row in rows:
        seq += 1
        changed = row.deleted or row.modified
        values = dict(row.values)
        if obj.created_field and values.get(obj.created_field) is None:
            values[obj.created_field] = info.format_time(row.created)
        if obj.modified_field and values.get(obj.modified_field) is None:
            values[obj.modified_field] = info.format_time(changed)
        if row.deleted is not None and obj.deleted_flag:
            values[obj.deleted_flag] = 1
        names = _checked(obj, values)
        columns = ", ".join(quote(n) for n in [*names, *META_COLUMNS])
        marks = ", ".join("?" for _ in range(len(names) + len(META_COLUMNS)))
        conn.execute(
            f"INSERT INTO {quote(obj.name)} ({columns}) VALUES ({marks})",
            [
                *(_stored(values[n]) for n in names),
                canonical(row.created),
                canonical(changed),
                canonical(row.deleted) if row.deleted else None,
                seq,
            ],
        )
        count += 1
    conn.execute("UPDATE _meta SET value = ? WHERE key = 'seq'", (str(seq),))
    return count


def insert_records(
    path: Path, object_name: str, records: Iterable[Mapping[str, object]], *, at: datetime | None = None
) -> int:
    """Insert records created (and last modified) at ``at`` (default now). Returns the count."""
    stamp = at or datetime.now(UTC)
    with closing(open_store(path)) as conn, conn:
        return insert_rows(conn, store_info(conn), object_name, (Stamped(r, stamp, stamp) for r in records))


def update_rows(
    conn: sqlite3.Connection,
    info: StoreInfo,
    object_name: str,
    keys: Iterable[object],
    *,
    at: datetime,
    changes: Mapping[str, object] | None = None,
    delete: bool = False,
) -> int:
    """Apply ``changes`` to the rows with these keys as a user edit at ``at`` (the caller commits).

    The modified field and ``_modified`` move to ``at`` and ``_seq`` rises. ``delete`` marks the
    rows deleted (``_deleted_at``, and the object's ``deleted_flag`` when it has one).

    Returns:
        Rows changed.
    """
    obj = _object(info, object_name)
    stamped: dict[str, object] = dict(changes or {})
    if obj.modified_field:
        stamped[obj.modified_field] = info.format_time(at)
    if delete and obj.deleted_flag:
        stamped[obj.deleted_flag] = 1
    names = _checked(obj, stamped)
    changed = 0
    for key in keys:
        seq = _next_seq(conn)
        assignments = [f"{quote(n)} = ?" for n in names] + ["_modified = ?", "_seq = ?"]
        values: list[object] = [_stored(stamped[n]) for n in names] + [canonical(at), seq]
        if delete:
            assignments.append("_deleted_at = ?")
            values.append(canonical(at))
        cursor = conn.execute(
            f"UPDATE {quote(obj.name)} SET {', '.join(assignments)} WHERE {quote(obj.key)} = ?",
            [*values, key],
        )
        changed += cursor.rowcount
    return changed


def touch_records(
    path: Path,
    object_name: str,
    keys: Iterable[object],
    at: datetime,
    changes: Mapping[str, object] | None = None,
) -> int:
    """Modify records as a user edit at ``at`` does: apply ``changes``, move the modified stamps."""
    with closing(open_store(path)) as conn, conn:
        return update_rows(conn, store_info(conn), object_name, keys, at=at, changes=changes)


def delete_records(path: Path, object_name: str, keys: Iterable[object], at: datetime) -> int:
    """Delete records at ``at`` the way the system does (hidden from listings, known to its delete APIs)."""
    with closing(open_store(path)) as conn, conn:
        return update_rows(conn, store_info(conn), object_name, keys, at=at, delete=True)


def add_field(
    path: Path, object_name: str, name: str, field_type: FieldType = "string", default: object = None
) -> None:
    """Add a (custom) field to an object, as an admin does in the CRM's setup."""
    if not _NAME.match(name) or name.startswith("_"):
        raise ValueError(f"invalid field name {name!r}")
    with closing(open_store(path)) as conn, conn:
        obj = _object(store_info(conn), object_name)
        if name in obj.field_names:
            raise ValueError(f"{obj.name} already has a field {name!r}")
        conn.execute(f"ALTER TABLE {quote(obj.name)} ADD COLUMN {quote(name)} {_SQL_TYPES[field_type]}")
        if default is not None:
            conn.execute(f"UPDATE {quote(obj.name)} SET {quote(name)} = ?", (_stored(default),))
        conn.execute(
            "INSERT INTO _fields VALUES (?, ?, ?, 0, (SELECT COALESCE(MAX(position), -1) + 1 FROM _fields WHERE object = ?))",
            (obj.name, name, field_type, obj.name),
        )


# --- reads -----------------------------------------------------------------------------------------


def count_records(path: Path, object_name: str, *, include_deleted: bool = False) -> int:
    """Records of an object; deleted ones only with ``include_deleted``."""
    with closing(open_store(path, readonly=True)) as conn:
        obj = _object(store_info(conn), object_name)
        where = "" if include_deleted else " WHERE _deleted_at IS NULL"
        return int(conn.execute(f"SELECT count(*) FROM {quote(obj.name)}{where}").fetchone()[0])


def fetch_records(
    path: Path,
    object_name: str,
    keys: Sequence[object] | None = None,
    *,
    include_deleted: bool = False,
    with_meta: bool = False,
) -> list[dict[str, Any]]:
    """Rows as dicts of API fields (plus the meta columns with ``with_meta``), in insertion order."""
    with closing(open_store(path, readonly=True)) as conn:
        obj = _object(store_info(conn), object_name)
        conn.row_factory = sqlite3.Row
        conditions = [] if include_deleted else ["_deleted_at IS NULL"]
        params: list[object] = []
        if keys is not None:
            conditions.append(f"{quote(obj.key)} IN ({', '.join('?' for _ in keys)})")
            params.extend(keys)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = conn.execute(f"SELECT * FROM {quote(obj.name)}{where} ORDER BY rowid", params).fetchall()
    drop = () if with_meta else META_COLUMNS
    return [{k: row[k] for k in row.keys() if k not in drop} for row in rows]  # noqa: SIM118


def keys_of(path: Path, object_name: str, *, include_deleted: bool = False) -> list[Any]:
    """Primary keys of an object in insertion order."""
    return [
        row[_object(read_info(path), object_name).key]
        for row in fetch_records(path, object_name, include_deleted=include_deleted)
    ]
