"""The one connector engine: runs any system declared in YAML and streams Arrow batches.

``extract_object`` renders the declared request (only the declared fields are asked for: the SOQL
SELECT list, HubSpot ``properties=``), follows the declared paging, and yields one
:class:`pyarrow.RecordBatch` per page (or per ``pages_per_batch`` pages) with every declared field as
a string column plus ``_extracted_at``. Nothing holds a whole object in memory.

Values land exactly as the API sent them: strings as-is, numbers as their JSON text (the body is
decoded with number hooks, so ``1.50`` stays ``1.50``), booleans ``true``/``false``, null as null,
nested objects/lists as compact JSON.

Incremental windows are ``since <= cursor < until``. Where the endpoint can filter (SOQL WHERE) the
window is pushed to the server, widened to the literal's precision, and then applied exactly on the
client too; where it cannot (the HubSpot list endpoint) it is applied on the client only.

Fields present in responses but not declared, and declared fields absent from every record, are
collected in a :class:`SchemaDrift` (pass one in to read it) and logged; drift never fails a run.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
from defusedxml import ElementTree as DefusedET
from defusedxml.common import DefusedXmlException

from crm_pipelines.connectors.auth import ConnectionSettings, build_authenticator, value_matches
from crm_pipelines.connectors.limits import (
    ApiRequestError,
    AuthenticationError,
    ConnectionFailedError,
    ConnectorError,
    ErrorContext,
    InsecureURLError,
    check_url_allowed,
)
from crm_pipelines.connectors.paging import MISSING, PageRequest, make_paginator, resolve_path
from crm_pipelines.connectors.session import (
    Session,
    context_for,
    http_client,
    render_value,
)
from crm_pipelines.connectors.spec import (
    CursorPaging,
    DescribeSpec,
    IncrementalSpec,
    ObjectSpec,
    OffsetPaging,
    PageNumberPaging,
    PagingSpec,
    SystemSpec,
)
from crm_pipelines.connectors.writes import UpsertResult, upsert_records

__all__ = [
    "DELETED",
    "EXTRACTED_AT",
    "ConnectionCheck",
    "ExtractStats",
    "UpsertResult",
    "ConnectionSettings",
    "PageInfo",
    "SchemaDrift",
    "check_connection",
    "extract_object",
    "output_schema",
    "resolved_object",
    "upsert_records",
]

log = logging.getLogger(__name__)

EXTRACTED_AT = "_extracted_at"
# True for a record the source has deleted (Salesforce IsDeleted, HubSpot archived): kept as a soft delete.
DELETED = "_deleted"
_EXTRACTED_AT_TYPE = pa.timestamp("us", tz="UTC")


# --- public result types ---------------------------------------------------------------------------


@dataclass
class SchemaDrift:
    """Differences between the declared fields and what the API actually returned.

    Attributes:
        system: System name.
        object_name: Object name.
        undeclared: Response paths present in records but not declared (nor ignored).
        missing: Declared field names whose path was absent from every record seen.
        records_seen: Records inspected.
        source_fields: Every field the source lists for the object (its describe), when declared.
        not_selected: Source fields neither declared nor ignored: what a new custom field looks like.
    """

    system: str
    object_name: str
    undeclared: set[str] = field(default_factory=set)
    missing: set[str] = field(default_factory=set)
    records_seen: int = 0
    source_fields: set[str] = field(default_factory=set)
    not_selected: set[str] = field(default_factory=set)

    @property
    def has_drift(self) -> bool:
        return bool(self.undeclared or self.missing or self.not_selected)

    def describe(self) -> str:
        """One line for logs and run metadata."""
        if not self.has_drift:
            return f"{self.system} {self.object_name}: no schema drift in {self.records_seen} records"
        parts = []
        if self.undeclared:
            parts.append(f"not declared: {', '.join(sorted(self.undeclared))}")
        if self.missing:
            parts.append(f"declared but absent: {', '.join(sorted(self.missing))}")
        if self.not_selected:
            parts.append(f"in the source, not declared: {', '.join(sorted(self.not_selected))}")
        return f"{self.system} {self.object_name}: schema drift in {self.records_seen} records ({'; '.join(parts)})"


@dataclass(frozen=True)
class PageInfo:
    """Progress after each page, passed to ``on_page``."""

    system: str
    object_name: str
    page_number: int
    records: int  # records on this page as received
    rows: int  # rows kept from this page (after the window filter and de-duplication)
    total_rows: int  # rows kept so far in this extract
    deleted_pass: bool  # True for a separate pass that reads deleted records


@dataclass(frozen=True)
class ConnectionCheck:
    """Outcome of :func:`check_connection` for ``doctor``."""

    reachable: bool
    authenticated: bool
    detail: str
    fix: str

    @property
    def ok(self) -> bool:
        return self.reachable and self.authenticated


def output_schema(*, system: SystemSpec, object_name: str) -> pa.Schema:
    """Arrow schema of an object's batches: declared fields as strings, ``_deleted``, ``_extracted_at``.

    Args:
        system: The system declaration.
        object_name: A declared object.

    Returns:
        The schema.
    """
    obj = system.get_object(object_name)
    return pa.schema(
        [pa.field(f.name, pa.string()) for f in obj.fields]
        + [pa.field(DELETED, pa.bool_(), nullable=False), pa.field(EXTRACTED_AT, _EXTRACTED_AT_TYPE)]
    )


# --- window and cursor -----------------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    # Naive datetimes are taken as UTC, the warehouse's convention.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _format_cursor(value: datetime, fmt: str, *, round_up: bool) -> str:
    """Render a bound in the literal format, widened outward to that format's precision."""
    value = _utc(value)
    if fmt == "epoch_ms":
        ms = value.timestamp() * 1000
        return str(math.ceil(ms) if round_up else math.floor(ms))
    if fmt == "date":
        day = value.replace(hour=0, minute=0, second=0, microsecond=0)
        if round_up and day != value:
            day += timedelta(days=1)
        return day.strftime("%Y-%m-%d")
    if fmt in ("soql_datetime", "iso8601_seconds", "iso8601_offset", "sql_datetime", "sdata"):
        floored = value.replace(microsecond=0)
        if round_up and floored != value:
            floored += timedelta(seconds=1)
        if fmt == "iso8601_offset":
            return floored.strftime("%Y-%m-%dT%H:%M:%S+00:00")
        if fmt == "sql_datetime":
            return floored.strftime("%Y-%m-%d %H:%M:%S")
        # SOQL and OData dateTime literals (YYYY-MM-DDThh:mm:ssZ) carry whole seconds.
        return floored.strftime("%Y-%m-%dT%H:%M:%SZ")
    # iso8601 with milliseconds, as HubSpot writes its timestamps.
    ms_floor = value.replace(microsecond=value.microsecond // 1000 * 1000)
    if round_up and ms_floor != value:
        ms_floor += timedelta(milliseconds=1)
    return ms_floor.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms_floor.microsecond // 1000:03d}Z"


def _precision(fmt: str) -> timedelta:
    """The smallest step a cursor literal of this format can express."""
    if fmt == "date":
        return timedelta(days=1)
    if fmt in ("iso8601", "epoch_ms"):
        return timedelta(milliseconds=1)
    return timedelta(seconds=1)


def _lower_literal(since: datetime, incremental: IncrementalSpec) -> str:
    """The window's lower bound as the server reads it: an exclusive bound ("modified after") is
    moved one literal step earlier, so a record stamped exactly at ``since`` is still returned."""
    fmt = incremental.format
    if incremental.lower_bound == "exclusive":
        # Floor first, then step back: the literal then lies strictly before every instant >= since.
        floored = parse_cursor(value=_format_cursor(since, fmt, round_up=False), fmt=fmt) or since
        return _format_cursor(floored - _precision(fmt), fmt, round_up=False)
    return _format_cursor(since, fmt, round_up=False)


_MS_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")


def parse_cursor(*, value: Any, fmt: str, time_of_day: Any = None) -> datetime | None:
    """Parse a cursor value from a record into an aware UTC datetime.

    Args:
        value: The raw value (Salesforce ``2026-11-25T10:00:00.000+0000``, ISO 8601 with or without an
            offset or time, ``2026-11-25 10:00:00``, epoch ms, SData/ASP.NET ``/Date(1764064800000)/``).
        fmt: The declared cursor format.
        time_of_day: A separate time of day (``10:15:00``, or seconds since midnight) for a date
            cursor (SAP Business One ``UpdateDate`` + ``UpdateTime``).

    Returns:
        The datetime, or ``None`` when null or unparseable.
    """
    if value is None or value is MISSING or isinstance(value, bool):
        return None
    text = str(value).strip()
    if not text:
        return None
    if fmt == "epoch_ms" or text.isdigit():
        try:
            return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
        except (ValueError, OverflowError):
            return None
    ms_date = _MS_DATE.match(text)
    if ms_date:
        return datetime.fromtimestamp(int(ms_date.group(1)) / 1000, tz=UTC)
    try:
        moment = _utc(datetime.fromisoformat(text))
    except ValueError:
        return None
    if time_of_day is not None and time_of_day is not MISSING:
        moment = _with_time(moment, time_of_day)
    return moment


def _with_time(day: datetime, time_of_day: Any) -> datetime:
    text = str(time_of_day).strip()
    if not text:
        return day
    midnight = day.replace(hour=0, minute=0, second=0, microsecond=0)
    if text.isdigit():
        # SAP Business One's DI API keeps times as HHMM or seconds; the Service Layer sends "10:15:00".
        number = int(text)
        seconds = number if number >= 2400 else (number // 100) * 3600 + (number % 100) * 60
        return midnight + timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(f"2000-01-01T{text}" if ":" in text and "T" not in text else text)
    except ValueError:
        return day
    return midnight + timedelta(
        hours=parsed.hour, minutes=parsed.minute, seconds=parsed.second, microseconds=parsed.microsecond
    )


def _render_where(
    incremental: IncrementalSpec, since: datetime | None, until: datetime | None, extra: str | None = None
) -> str:
    server = incremental.server_filter
    if server is None:
        return extra or ""
    conditions = [extra] if extra else []
    if since is not None:
        conditions.append(
            server.lower.format(value=_lower_literal(since, incremental), cursor=incremental.cursor)
        )
    if until is not None and server.upper is not None:
        conditions.append(
            server.upper.format(
                value=_format_cursor(until, incremental.format, round_up=True), cursor=incremental.cursor
            )
        )
    if not conditions:
        return ""  # nothing to filter on: no " WHERE " left dangling
    return server.where.format(conditions=server.join.join(conditions), cursor=incremental.cursor)


# --- extraction ------------------------------------------------------------------------------------


@dataclass
class _Pass:
    """One walk through pages: the live records, or a separate pass over deleted ones."""

    request: PageRequest
    paging: PagingSpec
    records_path: str
    cursor_path: str  # record path windowing this pass
    deleted_only: bool  # every record of this pass is a deletion
    id_path: str | None = None  # where a deleted entry's key sits, when not where the key does
    # The same request with the window's lower bound moved (a new chain of cursors from there).
    restart_from: Callable[[datetime], PageRequest] | None = None


@dataclass
class ExtractStats:
    """What an extract did, filled in while it runs; read it after the iterator is exhausted.

    Attributes:
        method: ``rest``, ``bulk`` (Salesforce Bulk API 2.0 query job), ``search`` or ``delta``.
        rows: Rows yielded.
        deleted_rows: Rows yielded with ``_deleted`` true.
        max_cursor: Highest cursor among the rows yielded (the next watermark), or None.
        requests: Data requests made (pages, polls, job and count requests).
        bulk_jobs: Ids of the Bulk API query jobs run.
        search_windows: Time windows the search was split into to stay under its result cap.
        delta_link: The delta link a change-tracked read ended with (the next read's watermark).
        full_read: A change-tracked read whose link had expired read everything instead: the rows
            are the whole object, not changes.
        chain_restarts: Times a cursor chain reached its ``chain_limit`` and the read went on from
            the highest cursor read (Zoho's 100,000 records per page_token chain).
    """

    method: str = "rest"
    rows: int = 0
    deleted_rows: int = 0
    max_cursor: datetime | None = None
    requests: int = 0
    bulk_jobs: list[str] = field(default_factory=list)
    search_windows: int = 0
    delta_link: str | None = None
    full_read: bool = False
    chain_restarts: int = 0


class _DriftTracker:
    def __init__(self, obj: ObjectSpec, drift: SchemaDrift) -> None:
        self.drift = drift
        self.declared = [f.source_path for f in obj.fields]
        self.ignored = list(obj.ignore_undeclared)
        self.present: set[str] = set()
        self.names = {f.source_path: f.name for f in obj.fields}
        self._covered: dict[str, bool] = {}
        self._shapes: set[tuple[object, ...]] = set()

    def _is_covered(self, path: str) -> bool:
        known = self._covered.get(path)
        if known is None:
            known = any(
                d == path or d.startswith(path + ".") or path.startswith(d + ".") for d in self.declared
            ) or any(path == i or path.startswith(i + ".") for i in self.ignored)
            self._covered[path] = known
        return known

    def observe(self, record: Any) -> None:
        self.drift.records_seen += 1
        if not isinstance(record, dict):
            return
        shape = _shape(record)
        if shape in self._shapes:
            return
        if len(self._shapes) < 10_000:  # bounded: pathological key churn must not grow memory
            self._shapes.add(shape)
        for path in _leaf_paths(record, ""):
            if not self._is_covered(path):
                self.drift.undeclared.add(path)

    def finish(self) -> None:
        if self.drift.records_seen:
            self.drift.missing |= {self.names[p] for p in self.declared if p not in self.present}


def _leaf_paths(data: dict[str, Any], prefix: str) -> Iterator[str]:
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _leaf_paths(value, path + ".")
        else:
            yield path


def _template_values(
    obj: ObjectSpec,
    object_name: str,
    *,
    where: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
    page_size: int = 0,
    fields: Sequence[str] | None = None,
) -> dict[str, Any]:
    fmt = obj.incremental.format
    return {
        "fields": ",".join(obj.selected_names() if fields is None else fields),
        "where": where,
        "since": _lower_literal(since, obj.incremental) if since is not None else "",
        "until": _format_cursor(until, fmt, round_up=True) if until is not None else "",
        "page_size": page_size,
        "object": object_name,
    }


def _fill(templates: Mapping[str, str], values: Mapping[str, Any]) -> dict[str, str]:
    """Render templates; one that renders empty is left out (a full read sends no `updated_since=`)."""
    rendered = {k: v.format(**values) for k, v in templates.items()}
    return {k: v for k, v in rendered.items() if v != ""}


def _render_request(
    obj: ObjectSpec,
    path: str,
    values: Mapping[str, Any],
    *,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    query: str | None = None,
) -> PageRequest:
    rendered = _fill(obj.request.params if params is None else params, values)
    if query is not None:
        rendered = {"q": query.format(**values)}
    return PageRequest(
        url=path.format(**values),
        params=rendered,
        headers=_fill(obj.request.headers if headers is None else headers, values),
    )


def _passes(
    system: SystemSpec,
    obj: ObjectSpec,
    object_name: str,
    values: Mapping[str, Any],
    include_deleted: bool,
    since: datetime | None,
    until: datetime | None,
) -> list[_Pass]:
    cursor_path = obj.field(obj.incremental.cursor).source_path
    paging = system.paging_of(object_name)
    deletes = obj.deletes

    def restarter(
        path: str, params: Mapping[str, str], headers: Mapping[str, str]
    ) -> Callable[[datetime], PageRequest]:
        def restart_from(moved: datetime) -> PageRequest:
            again = {
                **values,
                "since": _lower_literal(moved, obj.incremental),
                "where": _render_where(obj.incremental, moved, until),
            }
            return _render_request(obj, path, again, params=params, headers=headers)

        return restart_from

    if include_deleted and deletes.mode == "flagged":
        path = deletes.path or obj.request.path
        params = {**obj.request.params, **deletes.params}
        headers = {**obj.request.headers, **deletes.headers}
        request = _render_request(obj, path, values, params=params, headers=headers)
        return [
            _Pass(
                request,
                paging,
                obj.records_path,
                cursor_path,
                False,
                restart_from=restarter(path, params, headers),
            )
        ]
    live = _Pass(
        _render_request(obj, obj.request.path, values),
        paging,
        obj.records_path,
        cursor_path,
        False,
        restart_from=restarter(obj.request.path, obj.request.params, obj.request.headers),
    )
    if include_deleted and deletes.mode == "deleted_pass":
        if deletes.filter:
            values = {**values, "where": _render_where(obj.incremental, since, until, deletes.filter)}
        if deletes.path:
            # Another endpoint (Zoho's /deleted): only its own parameters make sense there.
            request = _render_request(
                obj, deletes.path, values, params=deletes.params, headers=deletes.headers
            )
        else:
            request = _render_request(
                obj,
                obj.request.path,
                values,
                params={**obj.request.params, **deletes.params},
                headers={**obj.request.headers, **deletes.headers},
            )
        deleted = _Pass(
            request,
            deletes.paging or paging,
            deletes.records_path if deletes.records_path is not None else obj.records_path,
            deletes.cursor_path or cursor_path,
            True,
            deletes.id_path,
        )
        return [live, deleted]
    return [live]


def _resolver(path: str) -> Callable[[Any], Any]:
    """A resolver for one dotted path: plain dict lookups on the hot path, :func:`resolve_path` otherwise."""
    parts = tuple(path.split("."))
    if any(p.lstrip("-").isdigit() for p in parts):
        return lambda record: resolve_path(record, path)
    dotted = len(parts) > 1

    def resolve(record: Any) -> Any:
        if dotted and type(record) is dict and path in record:
            return record[path]  # a key that contains dots (OData annotations)
        current = record
        for part in parts:
            if type(current) is not dict:
                return resolve_path(current, part) if current is not MISSING else MISSING
            current = current.get(part, MISSING)
            if current is MISSING:
                return MISSING
        return current

    return resolve


def _shape(record: dict[str, Any]) -> tuple[object, ...]:
    """The keys of a record and of its nested objects, one level down: records of one shape have the
    same leaf paths, so drift is only walked once per shape."""
    return tuple((k, tuple(v) if type(v) is dict else None) for k, v in record.items())


class _Collector:
    """Turns records into column lists: drift, the exact window, de-duplication, ``_deleted``.

    A record is a deletion when its pass returns only deletions, when the ``flagged`` field says
    so, or when it matches the delta declaration (Dynamics ``$deletedEntity``). A deletion whose
    key sits elsewhere than the live key (``id_path``) keeps only its key: the snapshot merge keeps
    the rest of the last known record.
    """

    def __init__(
        self,
        *,
        obj: ObjectSpec,
        schema: pa.Schema,
        tracker: _DriftTracker,
        stats: ExtractStats,
        since: datetime | None,
        until: datetime | None,
    ) -> None:
        self.schema = schema
        self.tracker = tracker
        self.stats = stats
        self.since = since
        self.until = until
        self.fmt = obj.incremental.format
        self.cursor_field_path = obj.field(obj.incremental.cursor).source_path
        time_field = obj.incremental.time_field
        self._time_of = _resolver(obj.field(time_field).source_path) if time_field else None
        self.pk_name = obj.primary_key
        self.pk_path = obj.field(obj.primary_key).source_path
        deletes = obj.deletes
        self.flag_path = (
            obj.field(deletes.flag_field).source_path
            if deletes.mode == "flagged" and deletes.flag_field
            else None
        )
        self.flag_values = frozenset(v.lower() for v in deletes.flag_values)
        self.delta_match = deletes.match if deletes.mode == "delta" else None
        self.delta_id = _resolver(deletes.id_path) if deletes.mode == "delta" and deletes.id_path else None
        self.field_paths = [(f.name, f.source_path) for f in obj.fields]
        self._fields = [(f.name, f.source_path, _resolver(f.source_path)) for f in obj.fields]
        self._pk = _resolver(self.pk_path)
        self._flag = _resolver(self.flag_path) if self.flag_path else None
        self._cursor_of: dict[str, Callable[[Any], Any]] = {}
        self.skipped_no_cursor = 0
        self.seen: set[str] = set()
        self._reset()

    def _reset(self) -> None:
        self.columns: dict[str, list[str | None]] = {name: [] for name, _ in self.field_paths}
        self.deleted: list[bool] = []
        self.stamps: list[datetime] = []

    def new_pass(self) -> None:
        # Keys repeat across passes only when a record changed in between; each pass de-duplicates
        # itself (offset paging, search windows and lookbacks can repeat a row).
        self.seen = set()

    def _moment(self, record: Any, cursor_of: Callable[[Any], Any], main_cursor: bool) -> datetime | None:
        time_of_day = self._time_of(record) if (main_cursor and self._time_of is not None) else None
        return parse_cursor(value=cursor_of(record), fmt=self.fmt, time_of_day=time_of_day)

    def add(
        self,
        records: Sequence[Any],
        *,
        cursor_path: str,
        deleted_pass: bool,
        id_path: str | None = None,
        windowed: bool = True,
    ) -> int:
        extracted_at = datetime.now(UTC)
        kept = 0
        windowed = windowed and (self.since is not None or self.until is not None)
        cursor_of = self._cursor_of.get(cursor_path)
        if cursor_of is None:
            cursor_of = self._cursor_of[cursor_path] = _resolver(cursor_path)
        main_cursor = cursor_path == self.cursor_field_path
        watermark_of = self._cursor_of.setdefault(self.cursor_field_path, _resolver(self.cursor_field_path))
        key_of = _resolver(id_path) if id_path else self._pk
        present, columns, seen = self.tracker.present, self.columns, self.seen
        for record in records:
            tombstone = self.delta_match is not None and value_matches(record, self.delta_match)
            deletion = deleted_pass or tombstone
            if not deletion:
                self.tracker.observe(record)
            moment = self._moment(record, cursor_of, main_cursor)
            if windowed:
                if moment is None:
                    self.skipped_no_cursor += 1
                    continue
                if (self.since is not None and moment < self.since) or (
                    self.until is not None and moment >= self.until
                ):
                    continue
            if tombstone and self.delta_id is not None:
                key = render_value(self.delta_id(record))
            else:
                key = render_value(key_of(record))
            if key is not None:
                if key in seen:
                    continue
                seen.add(key)
            key_only = deletion and (tombstone or id_path is not None)
            for name, path, resolve in self._fields:
                if key_only:
                    columns[name].append(key if name == self.pk_name else None)
                    continue
                value = resolve(record)
                if value is MISSING:
                    columns[name].append(None)
                    continue
                if not deletion and path not in present:
                    present.add(path)
                columns[name].append(value if type(value) is str else render_value(value))
            flagged = (
                self._flag is not None
                and (render_value(self._flag(record)) or "").lower() in self.flag_values
            )
            self.deleted.append(deletion or flagged)
            self.stamps.append(extracted_at)
            # The watermark follows the object's cursor field (a deleted pass may window on archivedAt).
            stamp = moment if main_cursor else None
            if stamp is None and not key_only:
                stamp = self._moment(record, watermark_of, True)
            if stamp is not None and (self.stats.max_cursor is None or stamp > self.stats.max_cursor):
                self.stats.max_cursor = stamp
            kept += 1
        self.stats.rows += kept
        return kept

    def flush(self) -> pa.RecordBatch | None:
        if not self.stamps:
            return None
        arrays = [pa.array(self.columns[name], type=pa.string()) for name, _ in self.field_paths]
        arrays.append(pa.array(self.deleted, type=pa.bool_()))
        arrays.append(pa.array(self.stamps, type=_EXTRACTED_AT_TYPE))
        self.stats.deleted_rows += sum(self.deleted)
        self._reset()
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


def extract_object(
    *,
    system: SystemSpec,
    object_name: str,
    connection: ConnectionSettings,
    since: datetime | None = None,
    until: datetime | None = None,
    page_size: int | None = None,
    on_page: Callable[[PageInfo], None] | None = None,
    drift: SchemaDrift | None = None,
    include_deleted: bool = True,
    pages_per_batch: int = 1,
    stats: ExtractStats | None = None,
    delta_link: str | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream one declared object as Arrow batches.

    The method follows the declaration: a Salesforce object with ``bulk`` runs a Bulk API 2.0 query
    job when a ``COUNT()`` of the window reaches ``bulk.threshold_records``; an object with
    ``search`` reads incremental windows (``since`` given) through the search endpoint, split by
    time under its result cap; everything else pages through the declared request.

    Args:
        system: The system declaration (see :func:`spec.load_system`).
        object_name: A declared object, e.g. ``"Contact"`` or ``"deals"``.
        connection: Base URL and credentials.
        since: Inclusive lower bound of the cursor window (naive = UTC); ``None`` = from the start.
        until: Exclusive upper bound of the cursor window; ``None`` = up to now.
        page_size: Records per page; clamped to the system's accepted range; default the system's.
        on_page: Called after every page with a :class:`PageInfo` (progress, heartbeats).
        drift: A :class:`SchemaDrift` to fill in; read it after the iterator is exhausted.
        include_deleted: Also read deleted records (Salesforce ``queryAll``; HubSpot
            ``archived=true`` as a second pass, windowed on ``archivedAt``); they come with
            ``_deleted`` true.
        pages_per_batch: Pages gathered into one batch (fewer, larger batches).
        stats: An :class:`ExtractStats` to fill in (method, rows, highest cursor, bulk jobs, the
            delta link a change-tracked read ended with).
        delta_link: For an object with ``incremental.delta``: the link the last read ended with
            (changes and deletions since), or None to start tracking with a full read.

    Returns:
        An iterator of record batches with :func:`output_schema`'s schema. Pages whose rows all
        fall outside the window yield nothing.

    Raises:
        ApiRequestError: The API refused a request, or a Bulk job ended Failed or Aborted (the
            message names system, object, the job's error and the fix).
        AuthenticationError: Credentials missing or rejected.
        ConnectionFailedError: The API stayed unreachable through the retries.
        InsecureURLError: A plain-http base URL to a non-loopback host.
    """
    # Everything that can be checked without the network fails here, at the call, rather than at
    # the first next() of the iterator.
    if pages_per_batch < 1:
        raise ValueError("pages_per_batch must be at least 1")
    if since is not None and until is not None and _utc(since) >= _utc(until):
        raise ValueError(f"empty window: since ({since}) must be before until ({until})")
    system.get_object(object_name)
    context = context_for(system, connection, object_name)
    check_url_allowed(url=connection.base_url, context=context)
    build_authenticator(system=system, connection=connection, context=context)
    return _extract(
        system=system,
        object_name=object_name,
        connection=connection,
        context=context,
        since=_utc(since) if since is not None else None,
        until=_utc(until) if until is not None else None,
        page_size=page_size,
        on_page=on_page,
        drift=drift if drift is not None else SchemaDrift(system.name, object_name),
        include_deleted=include_deleted,
        pages_per_batch=pages_per_batch,
        stats=stats if stats is not None else ExtractStats(),
        delta_link=delta_link,
    )


def resolved_object(*, system: SystemSpec, object_name: str, connection: ConnectionSettings) -> ObjectSpec:
    """The object with every field declared by ``label`` given its path in this account.

    Pipedrive keys custom fields by a hash that differs per company; a writer needs the key of, say,
    the external id field (``custom_fields.<hash>``) to address it. Objects without labels come back
    as declared, without a request.

    Args:
        system: The system declaration.
        object_name: A declared object.
        connection: Base URL and credentials.

    Returns:
        The object declaration with concrete paths.
    """
    obj = system.get_object(object_name)
    if not obj.labelled():
        return obj
    context = context_for(system, connection, object_name)
    check_url_allowed(url=connection.base_url, context=context)
    with http_client(connection=connection, retry=system.retries) as client:
        session = Session(
            system=system, connection=connection, context=context, client=client, retry=system.retries
        )
        return _describe(
            session,
            obj,
            object_name,
            system.page_size.default,
            context,
            SchemaDrift(system.name, object_name),
        )


def _records_of(body: Any, records_path: str, object_name: str, context: ErrorContext) -> list[Any]:
    records = resolve_path(body, records_path)
    if records is MISSING or records is None:
        return []
    if not isinstance(records, list):
        raise ApiRequestError(
            f"{context.where}: '{records_path}' in the response is not a list.",
            fix=f"check records_path of {object_name} in {context.yaml_path}.",
        )
    return records


def _extract(
    *,
    system: SystemSpec,
    object_name: str,
    connection: ConnectionSettings,
    context: ErrorContext,
    since: datetime | None,
    until: datetime | None,
    page_size: int | None,
    on_page: Callable[[PageInfo], None] | None,
    drift: SchemaDrift,
    include_deleted: bool,
    pages_per_batch: int,
    stats: ExtractStats,
    delta_link: str | None,
) -> Iterator[pa.RecordBatch]:
    schema = output_schema(system=system, object_name=object_name)
    size = system.page_size.clamp(page_size)
    with http_client(connection=connection, retry=system.retries) as client:
        session = Session(
            system=system, connection=connection, context=context, client=client, retry=system.retries
        )
        obj = system.get_object(object_name)
        if obj.describe is not None:
            # First: fields declared by their display name only get their paths from the field list.
            obj = _describe(session, obj, object_name, size, context, drift)
        incremental = obj.incremental
        where = _render_where(incremental, since, until)
        values = _template_values(obj, object_name, where=where, since=since, until=until, page_size=size)
        tracker = _DriftTracker(obj, drift)
        # A change-tracked read is not a window: the link says where the last read ended.
        windowed_since, windowed_until = (None, None) if incremental.delta is not None else (since, until)
        collector = _Collector(
            obj=obj, schema=schema, tracker=tracker, stats=stats, since=windowed_since, until=windowed_until
        )
        pages = _PageCounter(system.name, object_name, on_page, stats)
        if incremental.delta is not None:
            stats.method = "delta"
            yield from _delta_extract(
                session,
                system,
                obj,
                object_name,
                values,
                delta_link,
                context,
                collector,
                pages,
                pages_per_batch,
            )
        else:
            passes = _passes(system, obj, object_name, values, include_deleted, since, until)
            if obj.bulk is not None and _use_bulk(session, obj, passes[0], values, context, stats):
                stats.method = "bulk"
                yield from _bulk_extract(
                    session, obj, object_name, passes[0], values, context, collector, pages
                )
            else:
                for run in passes:
                    collector.new_pass()
                    if obj.search is not None and since is not None and not run.deleted_only:
                        stats.method = "search"
                        yield from _search_extract(
                            session, obj, since, until or datetime.now(UTC), context, collector, pages
                        )
                        continue
                    yield from _paged_extract(
                        session, obj, object_name, run, size, context, collector, pages, pages_per_batch
                    )
    tracker.finish()
    if collector.skipped_no_cursor:
        log.warning(
            "%s: %d record(s) without a readable %s were left out of the window",
            context.where,
            collector.skipped_no_cursor,
            incremental.cursor,
        )
    if tracker.drift.has_drift:
        log.warning("%s", tracker.drift.describe())
    log.info(
        "%s: extracted %d rows (%d deleted) in %d pages via %s",
        context.where,
        stats.rows,
        stats.deleted_rows,
        pages.number,
        stats.method,
    )


@dataclass(frozen=True)
class _FieldList:
    """An object's field list as the source describes it."""

    names: set[str]  # what records call the fields (describe.name_key, or the keys)
    entries: list[Any]  # the JSON entries of a list (empty for keys and for XML)


def _describe(
    session: Session,
    obj: ObjectSpec,
    object_name: str,
    size: int,
    context: ErrorContext,
    drift: SchemaDrift,
) -> ObjectSpec:
    """Read the source's field list: fields declared by ``label`` get their paths from it, and the
    fields neither declared nor ignored are noted as drift.

    Returns:
        The object with every ``label`` resolved. A failed read is logged and drift judged from
        records only, unless a label needs the list: then it fails, naming the field list.
    """
    listing = _read_field_list(session, obj, object_name, size, context, required=obj.labelled())
    if listing is None:
        return obj
    obj = _resolve_labels(obj, listing, context)
    drift.source_fields = listing.names
    drift.not_selected = listing.names - _described_names(obj)
    return obj


def _read_field_list(
    session: Session, obj: ObjectSpec, object_name: str, size: int, context: ErrorContext, *, required: bool
) -> _FieldList | None:
    describe = obj.describe
    assert describe is not None
    values = {"object": object_name, "page_size": size}
    request = PageRequest(url=describe.path.format(**values), params=_fill(describe.params, values))
    names_path = describe.names_path.format(**values)
    body: Any = None
    entries: list[Any] = []
    try:
        if describe.format == "xsd":
            body = session.send("GET", request, context=context, accept="application/xml").content
        elif describe.paging is not None:
            # A JSON list over pages (validated): the entries of every page, in order.
            for _, _, page in _pages(
                session, describe.paging, request, size, names_path, object_name, context
            ):
                entries.extend(page)
        else:
            body = session.get_json(request, context=context)
            found = resolve_path(body, names_path)
            entries = found if isinstance(found, list) and describe.names_from == "entries" else []
    except AuthenticationError:
        raise
    except ConnectorError as exc:
        if required:
            raise
        log.warning(
            "%s: could not read the field list (%s); drift is judged from records only", context.where, exc
        )
        return None
    if describe.paging is not None:
        paged = {
            _record_name(e.get(describe.name_key), e, describe)
            for e in entries
            if isinstance(e, dict) and e.get(describe.name_key) not in (None, "")
        }
        return _FieldList(paged, entries)
    names: set[str] | None
    try:
        names = _field_names(body, describe, object_name)
    except (SyntaxError, ValueError, KeyError, TypeError) as exc:  # a path the answer does not fit
        names = None
        log.warning("%s: could not read the field list (%s)", context.where, exc)
    if names is None:
        if required:
            raise ApiRequestError(
                f"{context.where}: the field list {describe.path} did not parse; fields declared by label "
                "cannot be found in it.",
                fix=f"check describe.names_path of {object_name} in {context.yaml_path}.",
            )
        log.warning("%s: the field list did not parse; drift is judged from records only", context.where)
        return None
    return _FieldList(names, entries)


def _resolve_labels(obj: ObjectSpec, listing: _FieldList, context: ErrorContext) -> ObjectSpec:
    """Fill ``{key}`` of each field declared by ``label`` with the key the field list gives that name."""
    describe = obj.describe
    if not obj.labelled() or describe is None or describe.label_key is None:
        return obj
    keys_by_label: dict[str, list[str]] = {}
    for entry in listing.entries:
        if not isinstance(entry, dict):
            continue
        if describe.label_where is not None and not value_matches(entry, describe.label_where):
            continue
        label, key = entry.get(describe.label_key), entry.get(describe.name_key)
        if label is not None and key not in (None, ""):
            keys_by_label.setdefault(str(label).strip(), []).append(_record_name(key, entry, describe))
    fields = []
    for f in obj.fields:
        if f.label is None:
            fields.append(f)
            continue
        keys = keys_by_label.get(f.label.strip())
        if keys is None:
            # Display names are typed by people: "External id" is meant as "External ID".
            folded = [
                k for label, ks in keys_by_label.items() if label.casefold() == f.label.casefold() for k in ks
            ]
            keys = folded or None
        if not keys:
            raise ApiRequestError(
                f"{context.where}: the field list {describe.path} has no field named {f.label!r} "
                f"(declared as {f.name}).",
                fix=(
                    f"create a field named {f.label!r} in {context.system_title}, or change the label of "
                    f"{f.name} in {context.yaml_path} to the name the field has there."
                ),
            )
        if len(keys) > 1:
            raise ApiRequestError(
                f"{context.where}: {len(keys)} fields are named {f.label!r} in {describe.path} "
                f"({', '.join(keys)}); {f.name} cannot tell which one is meant.",
                fix=f"rename all but one of them in {context.system_title}.",
            )
        update: dict[str, Any] = {"label": None}
        for attribute in ("path", "select"):
            template = getattr(f, attribute)
            if isinstance(template, str):
                update[attribute] = template.replace("{key}", keys[0])
        fields.append(f.model_copy(update=update))
    return obj.model_copy(update={"fields": fields})


def _described_names(obj: ObjectSpec) -> set[str]:
    """The field-list names the declaration covers: requested names, paths and the objects they sit
    in (``address.value`` reads part of ``address``), names under a container, ignored paths."""
    prefix = obj.select_prefix or ""
    containers = obj.describe.containers if obj.describe is not None else []
    known: set[str] = set()
    for f in obj.fields:
        name = obj.requested_name(f)
        if name:
            known.add(name)
        path = f.source_path[len(prefix) :] if f.source_path.startswith(prefix) else f.source_path
        parts = path.split(".")
        known.update(".".join(parts[:end]) for end in range(1, len(parts) + 1))
        for container in containers:
            if path.startswith(container + "."):
                known.add(path[len(container) + 1 :])
    known |= {i[len(prefix) :] if prefix and i.startswith(prefix) else i for i in obj.ignore_undeclared}
    return known


_XSD = "http://www.w3.org/2001/XMLSchema"


def _xml_steps(names_path: str) -> list[str]:
    """The steps of an element path: split on '/' and on '.' (the dotted form), never inside a
    predicate, whose quoted values may hold either (``[@Name='SAPB1.Country']``)."""
    steps: list[str] = []
    current = ""
    depth = 0
    for char in names_path:
        if char == "[":
            depth += 1
        elif char == "]":
            depth = max(0, depth - 1)
        if char in "/." and depth == 0:
            if current:
                steps.append(current)
            current = ""
            continue
        current += char
    if current:
        steps.append(current)
    return steps


def _field_names(body: Any, describe: DescribeSpec, object_name: str) -> set[str] | None:
    """Field names from a describe answer: entries of a JSON list, keys of a JSON object, or
    elements of an XML document (an XSD, an OData EDMX) found by a namespaced element path.

    Each name is paired with its entry (an XML element's attributes keyed ``@name``), so a declared
    rename can test it: a Dataverse lookup listed as ``parentcustomerid`` is read as
    ``_parentcustomerid_value``.
    """
    names_path = describe.names_path.format(object=object_name)
    found: list[tuple[Any, Any]]  # (name, entry)
    if describe.format == "xsd":
        try:
            root = DefusedET.fromstring(body)
        except (DefusedET.ParseError, ValueError, DefusedXmlException):
            return None
        steps = _xml_steps(names_path)
        root_tag = root.tag.rsplit("}", 1)[-1]
        # The path may name the root itself (SData schemas: 'xs:schema/xs:complexType/...').
        if steps and steps[0].split("[", 1)[0].split(":")[-1] == root_tag:
            steps = steps[1:]
        path = "/".join(steps) or "."
        attribute = describe.name_key.lstrip("@")
        namespaces = {"xs": _XSD, **describe.namespaces}
        found = [
            (e.get(attribute), {f"@{name}": value for name, value in e.attrib.items()})
            for e in root.findall(path, namespaces)
        ]
    else:
        entries = resolve_path(body, names_path)
        if describe.names_from == "keys":
            if not isinstance(entries, dict):
                return None
            # Field definitions are objects; a sibling such as Sugar's "_hash" string is not a field.
            found = [(k, v) for k, v in entries.items() if isinstance(v, dict)]
        elif isinstance(entries, list):
            found = [(e.get(describe.name_key), e) for e in entries if isinstance(e, dict)]
        else:
            return None
    return {_record_name(name, entry, describe) for name, entry in found if name not in (None, "")}


def _record_name(name: Any, entry: Any, describe: DescribeSpec) -> str:
    """A listed field's name as records carry it: the first matching rename applies."""
    rename = next((r for r in describe.renames if value_matches(entry, r.match)), None)
    return rename.to.format(name=name) if rename is not None else str(name)


class _PageCounter:
    def __init__(
        self, system: str, object_name: str, on_page: Callable[[PageInfo], None] | None, stats: ExtractStats
    ) -> None:
        self.system = system
        self.object_name = object_name
        self.on_page = on_page
        self.stats = stats
        self.number = 0

    def page(self, *, records: int, kept: int, deleted_pass: bool) -> None:
        self.number += 1
        self.stats.requests += 1
        if self.on_page is not None:
            self.on_page(
                PageInfo(
                    system=self.system,
                    object_name=self.object_name,
                    page_number=self.number,
                    records=records,
                    rows=kept,
                    total_rows=self.stats.rows,
                    deleted_pass=deleted_pass,
                )
            )


class _Chain:
    """A chain of cursors that reaches at most ``limit`` records (Zoho: 100,000 per page_token chain).

    Before the next page would pass the limit, the read starts over from the highest cursor value
    read so far; the request sorts ascending by the cursor, so everything before it has been read,
    and records stamped exactly there are read again and de-duplicated on the key.
    """

    def __init__(
        self,
        *,
        limit: int,
        cursor_path: str,
        fmt: str,
        since: datetime | None,
        restart_from: Callable[[datetime], PageRequest],
        stats: ExtractStats,
        cursor_name: str,
    ) -> None:
        self.limit = limit
        self._cursor_of = _resolver(cursor_path)
        self._fmt = fmt
        self._started_at = since
        self._restart_from = restart_from
        self._stats = stats
        self._cursor_name = cursor_name
        self.count = 0
        self._highest: datetime | None = None

    def observe(self, records: Sequence[Any]) -> None:
        self.count += len(records)
        for record in records:
            moment = parse_cursor(value=self._cursor_of(record), fmt=self._fmt)
            if moment is not None and (self._highest is None or moment > self._highest):
                self._highest = moment

    def restart(self, context: ErrorContext) -> PageRequest:
        highest = self._highest
        if highest is None or (self._started_at is not None and highest <= self._started_at):
            raise ApiRequestError(
                f"{context.where}: {self.count} records in a row share {self._cursor_name} "
                f"{highest.isoformat() if highest else '(none)'}; one chain of cursors reaches at most "
                f"{self.limit} records, so the read cannot go past them.",
                fix="read the object in a narrower window, or ask the vendor about the chain limit.",
            )
        log.info(
            "%s: %d records read in one cursor chain (limit %d); going on from %s %s",
            context.where,
            self.count,
            self.limit,
            self._cursor_name,
            highest.isoformat(),
        )
        self._started_at = highest
        self.count = 0
        self._stats.chain_restarts += 1
        return self._restart_from(highest)


def _pages(
    session: Session,
    paging: PagingSpec,
    first: PageRequest,
    size: int,
    records_path: str,
    object_name: str,
    context: ErrorContext,
    chain: _Chain | None = None,
) -> Iterator[tuple[PageRequest, Any, list[Any]]]:
    """(request, body, records) of every page, in order.

    Offset and page-number paging with ``concurrency`` > 1 keep that many requests in flight
    (through the account's shared bucket): the next offsets are known before the answers arrive.
    With a ``chain``, a cursor chain about to pass its limit is replaced by a new one.
    """
    paginator = make_paginator(spec=paging)
    request: PageRequest | None = paginator.first_request(request=first, page_size=size)
    if isinstance(paging, OffsetPaging | PageNumberPaging) and paging.concurrency > 1 and request is not None:
        yield from _concurrent_pages(
            session, paging, request, size, records_path, object_name, context, paging.concurrency
        )
        return
    while request is not None:
        body = session.get_json(request, context=context)
        records = _records_of(body, records_path, object_name, context)
        yield request, body, records
        next_request = paginator.next_request(previous=request, body=body, records=records, page_size=size)
        if chain is not None:
            chain.observe(records)
            if next_request is not None and chain.count + size > chain.limit:
                next_request = paginator.first_request(request=chain.restart(context), page_size=size)
        if next_request == request:
            raise ApiRequestError(
                f"{context.where}: paging did not advance (the same page was requested twice).",
                fix=f"check the paging declaration in {context.yaml_path}.",
            )
        request = next_request


def _nth_page(paging: OffsetPaging | PageNumberPaging, first: PageRequest, n: int, size: int) -> PageRequest:
    if isinstance(paging, OffsetPaging):
        offset = int(first.params.get(paging.offset_param, paging.start)) + n * size
        return PageRequest(first.url, {**first.params, paging.offset_param: str(offset)}, first.headers)
    page = int(first.params.get(paging.page_param, paging.start)) + n
    return PageRequest(first.url, {**first.params, paging.page_param: str(page)}, first.headers)


def _concurrent_pages(
    session: Session,
    paging: OffsetPaging | PageNumberPaging,
    first: PageRequest,
    size: int,
    records_path: str,
    object_name: str,
    context: ErrorContext,
    concurrency: int,
) -> Iterator[tuple[PageRequest, Any, list[Any]]]:
    paginator = make_paginator(spec=paging)
    executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"{context.system_name}-pages")
    in_flight: deque[tuple[PageRequest, Future[Any]]] = deque()
    submitted = 0
    # Pages that exist, once the first answer reports a total; until then the offsets are a guess.
    last_page: int | None = None

    def submit() -> None:
        nonlocal submitted
        if last_page is not None and submitted >= last_page:
            return
        request = _nth_page(paging, first, submitted, size)
        in_flight.append((request, executor.submit(session.get_json, request, context=context)))
        submitted += 1

    try:
        submit()
        first_answer = True
        while in_flight:
            request, future = in_flight.popleft()
            body = future.result()
            records = _records_of(body, records_path, object_name, context)
            if first_answer:
                first_answer = False
                last_page = _page_count(paging, body, size)
                for _ in range(concurrency - 1):
                    submit()
            yield request, body, records
            expected = paginator.next_request(previous=request, body=body, records=records, page_size=size)
            if expected is None:
                return
            if in_flight and expected != in_flight[0][0]:
                # A short page that is not the last (a server capping pages below our size): the
                # offsets run ahead of the data. Drop the speculative requests and walk on one by one.
                for _, pending in in_flight:
                    pending.cancel()
                in_flight.clear()
                yield from _pages(
                    session,
                    paging.model_copy(update={"concurrency": 1}),
                    expected,
                    size,
                    records_path,
                    object_name,
                    context,
                )
                return
            submit()
    finally:
        for _, pending in in_flight:
            pending.cancel()
        executor.shutdown(wait=True, cancel_futures=True)


def _page_count(paging: OffsetPaging | PageNumberPaging, body: Any, size: int) -> int | None:
    """How many pages the first answer says there are (its total), or None when it does not say."""
    path = paging.total_path if isinstance(paging, OffsetPaging) else paging.total_pages_path
    if not path:
        return None
    found = resolve_path(body, path)
    try:
        total = int(str(found))
    except ValueError:
        return None
    if isinstance(paging, PageNumberPaging):
        return max(1, total)
    return max(1, -(-total // size))


def _paged_extract(
    session: Session,
    obj: ObjectSpec,
    object_name: str,
    run: _Pass,
    size: int,
    context: ErrorContext,
    collector: _Collector,
    pages: _PageCounter,
    pages_per_batch: int,
) -> Iterator[pa.RecordBatch]:
    pages_in_batch = 0
    chain: _Chain | None = None
    if isinstance(run.paging, CursorPaging) and run.paging.chain_limit and run.restart_from is not None:
        chain = _Chain(
            limit=run.paging.chain_limit,
            cursor_path=run.cursor_path,
            fmt=obj.incremental.format,
            since=collector.since,
            restart_from=run.restart_from,
            stats=collector.stats,
            cursor_name=obj.incremental.cursor,
        )
    for _, _, records in _pages(
        session, run.paging, run.request, size, run.records_path, object_name, context, chain
    ):
        kept = collector.add(
            records, cursor_path=run.cursor_path, deleted_pass=run.deleted_only, id_path=run.id_path
        )
        pages.page(records=len(records), kept=kept, deleted_pass=run.deleted_only)
        pages_in_batch += 1
        if pages_in_batch >= pages_per_batch:
            batch = collector.flush()
            if batch is not None:
                yield batch
            pages_in_batch = 0
    batch = collector.flush()
    if batch is not None:
        yield batch


# --- change tracking (delta links) -----------------------------------------------------------------


def _delta_extract(
    session: Session,
    system: SystemSpec,
    obj: ObjectSpec,
    object_name: str,
    values: Mapping[str, Any],
    delta_link: str | None,
    context: ErrorContext,
    collector: _Collector,
    pages: _PageCounter,
    pages_per_batch: int,
) -> Iterator[pa.RecordBatch]:
    """Follow ``delta_link`` (changes and deletions since), or start tracking with a full read.

    An expired link (declared statuses or codes) falls back to a full tracked read; the stats then
    say ``full_read`` so the caller writes a whole snapshot instead of merging changes.
    """
    delta = obj.incremental.delta
    assert delta is not None
    headers = {**obj.request.headers, **delta.headers}
    if delta_link is not None:
        first = PageRequest(url=delta_link, params={}, headers=_fill(headers, values))
    else:
        collector.stats.full_read = True
        first = _render_request(obj, obj.request.path, values, params=delta.params or None, headers=headers)
    size = int(values["page_size"])
    paging = system.paging_of(object_name)
    link: str | None = None
    pages_in_batch = 0
    try:
        for _, body, records in _pages(session, paging, first, size, obj.records_path, object_name, context):
            kept = collector.add(records, cursor_path=collector.cursor_field_path, deleted_pass=False)
            pages.page(records=len(records), kept=kept, deleted_pass=False)
            found = resolve_path(body, delta.link_path)
            if isinstance(found, str) and found:
                link = found
            pages_in_batch += 1
            if pages_in_batch >= pages_per_batch:
                batch = collector.flush()
                if batch is not None:
                    yield batch
                pages_in_batch = 0
    except ApiRequestError as exc:
        expired = exc.status in delta.expired_statuses or (
            exc.code is not None and exc.code in delta.expired_codes
        )
        if delta_link is None or not expired or pages.number > 0:
            raise
        log.warning("%s: the delta link expired (%s); reading everything again", context.where, exc.detail)
        yield from _delta_extract(
            session, system, obj, object_name, values, None, context, collector, pages, pages_per_batch
        )
        return
    batch = collector.flush()
    if batch is not None:
        yield batch
    if link is None:
        raise ApiRequestError(
            f"{context.where}: the change-tracked read ended without a delta link ({delta.link_path}).",
            fix=f"check incremental.delta of {object_name} in {context.yaml_path} and that change tracking "
            "is enabled for the table in the system.",
        )
    collector.stats.delta_link = link


# --- keys for delete detection ---------------------------------------------------------------------


def key_schema(*, system: SystemSpec, object_name: str) -> pa.Schema:
    """Arrow schema of :func:`extract_keys` batches: the primary key column only."""
    return pa.schema([pa.field(system.get_object(object_name).primary_key, pa.string())])


def extract_keys(
    *,
    system: SystemSpec,
    object_name: str,
    connection: ConnectionSettings,
    page_size: int | None = None,
    stats: ExtractStats | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream every live key of an object (``deletes: key_compare``): keys gone since are deletions.

    Only the key field is requested; no window applies. One batch per page.

    Args:
        system: The system declaration.
        object_name: A declared object.
        connection: Base URL and credentials.
        page_size: Records per page (clamped); default the system's.
        stats: Filled with the requests made.

    Returns:
        Batches with :func:`key_schema`.
    """
    obj = system.get_object(object_name)
    context = context_for(system, connection, object_name)
    check_url_allowed(url=connection.base_url, context=context)
    build_authenticator(system=system, connection=connection, context=context)
    schema = key_schema(system=system, object_name=object_name)
    size = system.page_size.clamp(page_size)
    pk_field = obj.field(obj.primary_key)
    pk_path = pk_field.source_path
    under_prefix = obj.select_prefix is not None and pk_path.startswith(obj.select_prefix)
    # A key the API returns unasked (SData $key) leaves {fields} empty: deletes.params says how to
    # keep the payload small instead (SData precedence=0).
    if isinstance(pk_field.select, str):
        pk_name: str | None = pk_field.select
    else:
        pk_name = obj.select_name(pk_path) if under_prefix else pk_path
    values = _template_values(obj, object_name, page_size=size, fields=[pk_name] if pk_name else [])
    request = _render_request(
        obj, obj.request.path, values, params={**obj.request.params, **obj.deletes.params}
    )
    counted = stats if stats is not None else ExtractStats()
    resolve = _resolver(pk_path)

    def generate() -> Iterator[pa.RecordBatch]:
        with http_client(connection=connection, retry=system.retries) as client:
            session = Session(
                system=system, connection=connection, context=context, client=client, retry=system.retries
            )
            paging = system.paging_of(object_name)
            for _, _, records in _pages(
                session, paging, request, size, obj.records_path, object_name, context
            ):
                counted.requests += 1
                keys = [render_value(resolve(r)) for r in records]
                counted.rows += len(keys)
                if keys:
                    yield pa.RecordBatch.from_arrays([pa.array(keys, type=pa.string())], schema=schema)

    return generate()


# --- Salesforce Bulk API 2.0 -----------------------------------------------------------------------


def _use_bulk(
    session: Session,
    obj: ObjectSpec,
    run: _Pass,
    values: Mapping[str, Any],
    context: ErrorContext,
    stats: ExtractStats,
) -> bool:
    """Size the window with the declared COUNT() query through the same resource (query/queryAll)."""
    assert obj.bulk is not None
    if obj.bulk.threshold_records == 0:
        return True
    request = _render_request(obj, run.request.url, values, query=obj.bulk.count_query)
    body = session.get_json(PageRequest(url=request.url, params=request.params), context=context)
    stats.requests += 1
    total = resolve_path(body, "totalSize")
    count = int(str(total)) if total not in (None, MISSING) else 0
    log.info("%s: %d records in the window (bulk from %d)", context.where, count, obj.bulk.threshold_records)
    return count >= obj.bulk.threshold_records


def _bulk_extract(
    session: Session,
    obj: ObjectSpec,
    object_name: str,
    run: _Pass,
    values: Mapping[str, Any],
    context: ErrorContext,
    collector: _Collector,
    pages: _PageCounter,
) -> Iterator[pa.RecordBatch]:
    bulk = obj.bulk
    assert bulk is not None
    query = _render_request(obj, run.request.url, values, query=bulk.query).params["q"]
    operation = (
        "queryAll" if obj.deletes.mode == "flagged" and run.request.url == obj.deletes.path else "query"
    )
    jobs = PageRequest(url=bulk.jobs_path.format(object=object_name))
    job = session.post_json(
        jobs,
        {"operation": operation, "query": query, "contentType": "CSV", "columnDelimiter": "COMMA"},
        context=context,
    )
    job_id = str(job["id"])
    collector.stats.bulk_jobs.append(job_id)
    collector.stats.requests += 1
    job_url = f"{jobs.url.rstrip('/')}/{job_id}"
    started = time.monotonic()
    wait = bulk.poll_initial_seconds
    while True:
        state = session.get_json(PageRequest(url=job_url), context=context)
        collector.stats.requests += 1
        status = str(state.get("state"))
        if status == "JobComplete":
            break
        if status in ("Failed", "Aborted"):
            message = state.get("errorMessage") or "no error message"
            raise ApiRequestError(
                f"{context.where}: Bulk API query job {job_id} ended {status}: {message}.",
                fix=(
                    "check the job in Setup > Bulk Data Load Jobs; a query Bulk 2.0 cannot run (e.g. an "
                    f"unsupported clause) must be changed in bulk.query of {object_name} in {context.yaml_path}."
                ),
                code=f"BULK_JOB_{status.upper()}",
            )
        if time.monotonic() - started > bulk.timeout_seconds:
            raise ApiRequestError(
                f"{context.where}: Bulk API query job {job_id} still {status} after {bulk.timeout_seconds:.0f} s.",
                fix=f"raise bulk.timeout_seconds of {object_name} in {context.yaml_path} or run again later.",
            )
        time.sleep(wait)
        wait = min(bulk.poll_max_seconds, wait * 2)
    if bulk.parallel_results:
        contents = _parallel_results(session, job_url, bulk.parallel_results, context, collector.stats)
    else:
        contents = _sequential_results(session, job_url, bulk.max_records_per_page, context)
    for content in contents:
        records = _csv_records(content)
        kept = collector.add(records, cursor_path=collector.cursor_field_path, deleted_pass=False)
        pages.page(records=len(records), kept=kept, deleted_pass=False)
        batch = collector.flush()
        if batch is not None:
            yield batch


def _sequential_results(
    session: Session, job_url: str, page_records: int, context: ErrorContext
) -> Iterator[bytes]:
    """Result pages one after another, each naming the next in its Sforce-Locator header."""
    locator: str | None = None
    while True:
        params = {"maxRecords": str(page_records)}
        if locator:
            params["locator"] = locator
        response = session.send(
            "GET", PageRequest(url=f"{job_url}/results", params=params), context=context, accept="text/csv"
        )
        yield response.content
        locator = response.headers.get("Sforce-Locator")
        if not locator or locator == "null":
            return


def _parallel_results(
    session: Session, job_url: str, parallel: int, context: ErrorContext, stats: ExtractStats
) -> Iterator[bytes]:
    """Result pages fetched ``parallel`` at a time from the URLs 'Get Parallel Results' lists, in order.

    Pages are held only while earlier ones are still in flight: at most ``parallel`` in memory.
    """

    def links() -> Iterator[str]:
        request: PageRequest | None = PageRequest(url=f"{job_url}/resultPages")
        while request is not None:
            answer = session.get_json(request, context=context)
            stats.requests += 1
            for page in answer.get("resultPages") or []:
                if isinstance(page, dict) and page.get("resultUrl"):
                    yield str(page["resultUrl"])
            following = answer.get("nextRecordsUrl")
            request = None if answer.get("done") or not following else PageRequest(url=str(following))

    def fetch(url: str) -> bytes:
        return session.send("GET", PageRequest(url=url), context=context, accept="text/csv").content

    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix=f"{context.system_name}-bulk") as pool:
        in_flight: deque[Future[bytes]] = deque()
        for url in links():
            in_flight.append(pool.submit(fetch, url))
            if len(in_flight) >= parallel:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()


def _csv_records(content: bytes) -> list[dict[str, str | None]]:
    """Bulk 2.0 CSV rows as records; an empty field is a null (Bulk writes nulls as nothing)."""
    reader = csv.DictReader(io.StringIO(content.decode("utf-8-sig")))
    return [{k: (v if v != "" else None) for k, v in row.items()} for row in reader]


# --- HubSpot search --------------------------------------------------------------------------------


def _ms(value: datetime, *, round_up: bool) -> int:
    ms = _utc(value).timestamp() * 1000
    return math.ceil(ms) if round_up else math.floor(ms)


def _search_extract(
    session: Session,
    obj: ObjectSpec,
    since: datetime,
    until: datetime,
    context: ErrorContext,
    collector: _Collector,
    pages: _PageCounter,
) -> Iterator[pa.RecordBatch]:
    """Search ``[since, until)`` sorted by the cursor, splitting windows whose total is over the cap."""
    search = obj.search
    assert search is not None
    cursor_path = obj.field(obj.incremental.cursor).source_path
    prefix = obj.select_prefix or ""
    prop = cursor_path[len(prefix) :] if cursor_path.startswith(prefix) else cursor_path
    request = PageRequest(url=search.path)
    windows: deque[tuple[int, int]] = deque([(_ms(since, round_up=False), _ms(until, round_up=True))])
    while windows:
        low, high = windows.popleft()
        after: str | None = None
        first = True
        while True:
            body: dict[str, Any] = {
                "filterGroups": [
                    {
                        "filters": [
                            {"propertyName": prop, "operator": "GTE", "value": str(low)},
                            {"propertyName": prop, "operator": "LT", "value": str(high)},
                        ]
                    }
                ],
                "sorts": [{"propertyName": prop, "direction": "ASCENDING"}],
                "properties": obj.selected_names(),
                "limit": search.page_size,
            }
            if after is not None:
                body["after"] = after
            answer = session.post_json(request, body, context=context)
            total = resolve_path(answer, search.total_path)
            if first and total not in (None, MISSING) and int(str(total)) > search.max_results:
                pages.stats.requests += 1
                if high - low <= 1:
                    raise ApiRequestError(
                        f"{context.where}: {total} records share one millisecond of {prop}; the search "
                        f"returns at most {search.max_results} per query.",
                        fix="run a full extract (no earlier snapshot) for this object.",
                    )
                # Over the cap: two halves, earlier first, so records still arrive in cursor order.
                middle = (low + high) // 2
                windows.appendleft((middle, high))
                windows.appendleft((low, middle))
                break
            if first:
                pages.stats.search_windows += 1
            first = False
            records = _records_of(answer, obj.records_path, str(search.path), context)
            kept = collector.add(records, cursor_path=cursor_path, deleted_pass=False)
            pages.page(records=len(records), kept=kept, deleted_pass=False)
            batch = collector.flush()
            if batch is not None:
                yield batch
            next_after = resolve_path(answer, search.after_path)
            if next_after in (None, MISSING) or not records:
                break
            after = render_value(next_after)


# --- doctor ----------------------------------------------------------------------------------------


def check_connection(*, system: SystemSpec, connection: ConnectionSettings) -> ConnectionCheck:
    """Can we reach the API and does it accept our credential? Never raises for API trouble.

    The system declares the requests (``check.paths``). Salesforce: fetch a token, then
    ``GET /services/data/v62.0/`` (unlike ``/services/data/`` it needs the token, so it proves the
    token works). HubSpot: ``GET /account-info/v3/details``, falling back to a one-record list when
    that is not available (404).

    Args:
        system: The system declaration.
        connection: Base URL and credentials.

    Returns:
        The outcome with a detail line and, when something is wrong, what to fix.
    """
    context = context_for(system, connection, None)
    # doctor should answer in seconds, not sit through a full backoff schedule.
    retry = system.retries.model_copy(
        update={
            "max_attempts": 2,
            "backoff_max_seconds": 2.0,
            "timeout_seconds": min(10.0, system.retries.timeout_seconds),
        }
    )
    try:
        check_url_allowed(url=connection.base_url, context=context)
    except InsecureURLError as exc:
        return ConnectionCheck(False, False, exc.detail, exc.fix)
    with http_client(connection=connection, retry=retry) as client:
        try:
            session = Session(
                system=system, connection=connection, context=context, client=client, retry=retry
            )
        except AuthenticationError as exc:  # a credential is not set at all
            return ConnectionCheck(False, False, exc.detail, exc.fix)
        last: ConnectionCheck | None = None
        for path in system.check.paths:
            try:
                session.get_json(PageRequest(url=path), context=context)
            except ConnectionFailedError as exc:
                return ConnectionCheck(False, False, exc.detail, exc.fix)
            except AuthenticationError as exc:
                return ConnectionCheck(True, False, exc.detail, exc.fix)
            except ApiRequestError as exc:
                if exc.status == 404:
                    last = ConnectionCheck(True, False, exc.detail, exc.fix)
                    continue
                # 403 and the like: the credential works but lacks access.
                return ConnectionCheck(True, exc.status == 403, exc.detail, exc.fix)
            except ConnectorError as exc:
                return ConnectionCheck(False, False, exc.detail, exc.fix)
            api_base = session.token().api_base_url
            return ConnectionCheck(
                True, True, f"{system.title}: connected to {api_base} ({path} answered).", ""
            )
        assert last is not None
        return last
