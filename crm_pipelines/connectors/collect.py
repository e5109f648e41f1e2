"""What one extract collects: its passes, the requests rendered for them, and the rows they yield.

An extract makes one or two passes (:class:`Pass`: the live records, and for ``deleted_pass``
deletes a separate walk through the deleted ones), each a request rendered from the declared
templates (``{fields}``, ``{where}``, ``{since}``, ``{until}``, ``{page_size}``, ``{object}``). The
:class:`Collector` turns the records of every page into string columns and an Arrow batch with
:func:`output_schema`'s schema: the window applied exactly (``since <= cursor < until``), one row per
key within a pass, ``_deleted`` set, the highest cursor kept in :class:`ExtractStats`.

Values land exactly as the API sent them: strings as-is, numbers as their JSON text (the body is
decoded with number hooks, so ``1.50`` stays ``1.50``), booleans ``true``/``false``, null as null,
nested objects/lists as compact JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from crm_pipelines.connectors.cursors import format_cursor, lower_literal, parse_cursor, render_where
from crm_pipelines.connectors.drift import DriftTracker
from crm_pipelines.connectors.paging import PageRequest, PagingSpec
from crm_pipelines.connectors.paths import MISSING, resolve_path
from crm_pipelines.connectors.session import render_value
from crm_pipelines.connectors.spec import ChildRecordsSpec, ObjectSpec, SystemSpec
from crm_pipelines.connectors.spec_base import value_matches
from crm_pipelines.lake import DELETED, EXTRACTED_AT

__all__ = [
    "DELETED",
    "EXTRACTED_AT",
    "Collector",
    "ExtractStats",
    "Pass",
    "child_records",
    "output_schema",
    "path_resolver",
    "plan_passes",
    "render_request",
    "render_templates",
    "template_values",
]

# The lake's columns (crm_pipelines/lake.py): a record the source has deleted (Salesforce IsDeleted,
# HubSpot archived) is kept as a soft delete.
_EXTRACTED_AT_TYPE = pa.timestamp("us", tz="UTC")


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


@dataclass
class Pass:
    """One walk through pages: the live records, or a separate pass over deleted ones."""

    request: PageRequest
    paging: PagingSpec
    records_path: str
    cursor_path: str  # record path windowing this pass
    deleted_only: bool  # every record of this pass is a deletion
    id_path: str | None = None  # where a deleted entry's key sits, when not where the key does
    includes_deleted: bool = False  # the live read also returns deleted rows (flagged, e.g. queryAll)
    # The same request with the window's lower bound moved (a new chain of cursors from there).
    restart_from: Callable[[datetime], PageRequest] | None = None


def template_values(
    obj: ObjectSpec,
    object_name: str,
    *,
    where: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
    page_size: int = 0,
    fields: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The values of the request placeholders (``{fields}``, ``{where}``, ``{since}``, ``{until}``, ...)."""
    fmt = obj.incremental.format
    return {
        "fields": ",".join(obj.selected_names() if fields is None else fields),
        "where": where,
        "since": (
            lower_literal(since, obj.incremental)
            if since is not None
            else (obj.incremental.full_read_since or "")
        ),
        "until": format_cursor(until, fmt, round_up=True) if until is not None else "",
        "page_size": page_size,
        "object": object_name,
    }


def render_templates(templates: Mapping[str, str], values: Mapping[str, Any]) -> dict[str, str]:
    """Render templates; one that renders empty is left out (a full read sends no `updated_since=`)."""
    rendered = {k: v.format(**values) for k, v in templates.items()}
    return {k: v for k, v in rendered.items() if v != ""}


def render_request(
    obj: ObjectSpec,
    path: str,
    values: Mapping[str, Any],
    *,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    query: str | None = None,
) -> PageRequest:
    """The request of ``path`` with the object's (or the given) parameters and headers rendered."""
    rendered = render_templates(obj.request.params if params is None else params, values)
    if query is not None:
        rendered = {"q": query.format(**values)}
    return PageRequest(
        url=path.format(**values),
        params=rendered,
        headers=render_templates(obj.request.headers if headers is None else headers, values),
    )


def plan_passes(
    system: SystemSpec,
    obj: ObjectSpec,
    object_name: str,
    values: Mapping[str, Any],
    include_deleted: bool,
    since: datetime | None,
    until: datetime | None,
) -> list[Pass]:
    """The walks an extract makes: the live records, and a separate pass over deleted ones if declared."""
    cursor_path = obj.field(obj.incremental.cursor).source_path
    paging = system.paging_of(object_name)
    deletes = obj.deletes

    def restarter(
        path: str, params: Mapping[str, str], headers: Mapping[str, str]
    ) -> Callable[[datetime], PageRequest]:
        def restart_from(moved: datetime) -> PageRequest:
            again = {
                **values,
                "since": lower_literal(moved, obj.incremental),
                "where": render_where(obj.incremental, moved, until),
            }
            return render_request(obj, path, again, params=params, headers=headers)

        return restart_from

    if include_deleted and deletes.mode == "flagged":
        path = deletes.path or obj.request.path
        params = {**obj.request.params, **deletes.params}
        headers = {**obj.request.headers, **deletes.headers}
        request = render_request(obj, path, values, params=params, headers=headers)
        return [
            Pass(
                request,
                paging,
                obj.records_path,
                cursor_path,
                False,
                includes_deleted=True,
                restart_from=restarter(path, params, headers),
            )
        ]
    live = Pass(
        render_request(obj, obj.request.path, values),
        paging,
        obj.records_path,
        cursor_path,
        False,
        restart_from=restarter(obj.request.path, obj.request.params, obj.request.headers),
    )
    if include_deleted and deletes.mode == "deleted_pass":
        if deletes.filter:
            values = {**values, "where": render_where(obj.incremental, since, until, deletes.filter)}
        if deletes.path:
            # Another endpoint (Zoho's /deleted): only its own parameters make sense there.
            request = render_request(
                obj, deletes.path, values, params=deletes.params, headers=deletes.headers
            )
        else:
            request = render_request(
                obj,
                obj.request.path,
                values,
                params={**obj.request.params, **deletes.params},
                headers={**obj.request.headers, **deletes.headers},
            )
        deleted = Pass(
            request,
            deletes.paging or paging,
            deletes.records_path if deletes.records_path is not None else obj.records_path,
            deletes.cursor_path or cursor_path,
            True,
            deletes.id_path,
        )
        return [live, deleted]
    return [live]


def child_records(items: Sequence[Any], spec: ChildRecordsSpec) -> list[Any]:
    """The records inside each listed item (``spec.path``), each with its parent under
    ``spec.parent_key`` (the parent without its children); children ``spec.where`` rejects are left out."""
    records: list[Any] = []
    for item in items:
        children = resolve_path(item, spec.path)
        if not isinstance(children, list):
            continue
        parent = {k: v for k, v in item.items() if k != spec.path} if isinstance(item, dict) else item
        for child in children:
            if not isinstance(child, dict) or (
                spec.where is not None and not value_matches(child, spec.where)
            ):
                continue
            records.append({**child, spec.parent_key: parent})
    return records


def path_resolver(path: str) -> Callable[[Any], Any]:
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


class Collector:
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
        tracker: DriftTracker,
        stats: ExtractStats,
        since: datetime | None,
        until: datetime | None,
        include_deleted: bool = True,
    ) -> None:
        self.schema = schema
        # A read that asked for no deletions leaves out rows the flag marks as deleted (an endpoint
        # that always returns them, e.g. Zendesk's exports: a full read is the live records only).
        self.keep_flagged = include_deleted
        self.tracker = tracker
        self.stats = stats
        self.since = since
        self.until = until
        self.fmt = obj.incremental.format
        self.cursor_field_path = obj.field(obj.incremental.cursor).source_path
        time_field = obj.incremental.time_field
        self._time_of = path_resolver(obj.field(time_field).source_path) if time_field else None
        self.pk_name = obj.primary_key
        self.pk_path = obj.field(obj.primary_key).source_path
        deletes = obj.deletes
        self.flag_path = (
            obj.field(deletes.flag_field).source_path
            if deletes.mode == "flagged" and deletes.flag_field
            else None
        )
        self.flag_values = frozenset(v.lower() for v in deletes.flag_values)
        self.flag_when_set = deletes.flag_when == "set"
        self.children = obj.children
        self.delta_match = deletes.match if deletes.mode == "delta" else None
        self.delta_id = (
            path_resolver(deletes.id_path) if deletes.mode == "delta" and deletes.id_path else None
        )
        self.field_paths = [(f.name, f.source_path) for f in obj.fields]
        self._fields = [(f.name, f.source_path, path_resolver(f.source_path)) for f in obj.fields]
        self._pk = path_resolver(self.pk_path)
        self._flag = path_resolver(self.flag_path) if self.flag_path else None
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
        if self.children is not None:
            records = child_records(records, self.children)
        windowed = windowed and (self.since is not None or self.until is not None)
        cursor_of = self._cursor_of.get(cursor_path)
        if cursor_of is None:
            cursor_of = self._cursor_of[cursor_path] = path_resolver(cursor_path)
        main_cursor = cursor_path == self.cursor_field_path
        watermark_of = self._cursor_of.get(self.cursor_field_path)
        if watermark_of is None:
            watermark_of = self._cursor_of[self.cursor_field_path] = path_resolver(self.cursor_field_path)
        key_of = path_resolver(id_path) if id_path else self._pk
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
            if not self.keep_flagged and not deletion and self._flagged(record):
                continue
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
            flagged = self._flagged(record)
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

    def _flagged(self, record: Any) -> bool:
        """Whether the declared flag marks the record as deleted."""
        if self._flag is None:
            return False
        flag = render_value(self._flag(record))
        if self.flag_when_set:
            return flag not in (None, "", "null")
        return (flag or "").lower() in self.flag_values

    def flush(self) -> pa.RecordBatch | None:
        if not self.stamps:
            return None
        arrays = [pa.array(self.columns[name], type=pa.string()) for name, _ in self.field_paths]
        arrays.append(pa.array(self.deleted, type=pa.bool_()))
        arrays.append(pa.array(self.stamps, type=_EXTRACTED_AT_TYPE))
        self.stats.deleted_rows += sum(self.deleted)
        self._reset()
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)
