"""The one connector engine: runs any system declared in YAML and streams Arrow batches.

``extract_object`` renders the declared request (only the declared fields are asked for: the SOQL
SELECT list, HubSpot ``properties=``), follows the declared paging, and yields one
:class:`pyarrow.RecordBatch` per page (or per ``pages_per_batch`` pages) with every declared field as
a string column plus ``_extracted_at``. Nothing holds a whole object in memory.

This module runs an extract: it reads the field list if declared, plans the passes (the live
records, and a separate pass over deleted ones if declared) and reads each with the first read
method in :mod:`.reads` that takes it (a change-tracked read following a delta link, a Salesforce
Bulk API job, HubSpot search windows), else by walking its declared pages. It also streams the
live keys of an object for delete detection (:func:`extract_keys`) and checks a connection for
``doctor`` (:func:`check_connection`). The parts it runs live beside it:

- :mod:`.cursors`: cursor literals and the server-side window filter; parsing record cursors.
- :mod:`.collect`: the passes of an extract, request templates, and the collector that turns
  records into batches (exact window, de-duplication, ``_deleted``).
- :mod:`.pages`: walking an API's pages (in order, several in flight, cursor chain restarts).
- :mod:`.drift`: schema drift between the declaration and the records.
- :mod:`.describe`: the source's field list and the fields declared by display name.
- :mod:`.reads`: the other ways to read an object: Salesforce Bulk API 2.0 query jobs, HubSpot CRM
  search split into time windows under its result cap, and change tracking through delta links.

The names callers use are importable from here (see ``__all__``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from crm_pipelines.connectors.auth import ConnectionSettings, build_authenticator
from crm_pipelines.connectors.collect import (
    DELETED,
    EXTRACTED_AT,
    Collector,
    ExtractStats,
    Pass,
    output_schema,
    path_resolver,
    plan_passes,
    render_request,
    template_values,
)
from crm_pipelines.connectors.cursors import parse_cursor, render_where, utc
from crm_pipelines.connectors.describe import describe_object, resolved_object
from crm_pipelines.connectors.drift import DriftTracker, SchemaDrift
from crm_pipelines.connectors.limits import (
    ApiRequestError,
    AuthenticationError,
    ConnectionFailedError,
    ConnectorError,
    ErrorContext,
    InsecureURLError,
    check_url_allowed,
)
from crm_pipelines.connectors.pages import CursorChain, PageCounter, PageInfo, walk_pages
from crm_pipelines.connectors.paging import CursorPaging, PageRequest
from crm_pipelines.connectors.reads import ObjectRead, read_method_for
from crm_pipelines.connectors.session import Session, context_for, http_client, render_value
from crm_pipelines.connectors.spec import SystemSpec
from crm_pipelines.connectors.writes import UpsertResult, update_records, upsert_records

__all__ = [
    "DELETED",
    "EXTRACTED_AT",
    "ConnectionCheck",
    "ConnectionSettings",
    "ExtractStats",
    "PageInfo",
    "SchemaDrift",
    "UpsertResult",
    "check_connection",
    "extract_keys",
    "extract_object",
    "key_schema",
    "output_schema",
    "parse_cursor",
    "resolved_object",
    "update_records",
    "upsert_records",
]

log = logging.getLogger(__name__)


# --- extraction ------------------------------------------------------------------------------------


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
    if since is not None and until is not None and utc(since) >= utc(until):
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
        since=utc(since) if since is not None else None,
        until=utc(until) if until is not None else None,
        page_size=page_size,
        on_page=on_page,
        drift=drift if drift is not None else SchemaDrift(system.name, object_name),
        include_deleted=include_deleted,
        pages_per_batch=pages_per_batch,
        stats=stats if stats is not None else ExtractStats(),
        delta_link=delta_link,
    )


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
            obj = describe_object(session, obj, object_name, size, context, drift)
        incremental = obj.incremental
        where = render_where(incremental, since, until)
        values = template_values(obj, object_name, where=where, since=since, until=until, page_size=size)
        tracker = DriftTracker(obj, drift)
        collector = Collector(
            obj=obj,
            schema=schema,
            tracker=tracker,
            stats=stats,
            since=since,
            until=until,
            include_deleted=include_deleted,
        )
        pages = PageCounter(system.name, object_name, on_page, stats)
        read = ObjectRead(
            session=session,
            system=system,
            obj=obj,
            object_name=object_name,
            context=context,
            values=values,
            size=size,
            since=since,
            until=until,
            delta_link=delta_link,
            collector=collector,
            pages=pages,
            pages_per_batch=pages_per_batch,
        )
        for run in plan_passes(system, obj, object_name, values, include_deleted, since, until):
            collector.new_pass()
            chosen = read_method_for(read, run)
            if chosen is None:
                yield from _paged_extract(read, run)
                continue
            name, method = chosen
            stats.method = name
            yield from method.extract(read, run)
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


def _paged_extract(read: ObjectRead, run: Pass) -> Iterator[pa.RecordBatch]:
    """Walk the pass's declared pages (the read of every pass no read method takes)."""
    session, obj, collector, pages = read.session, read.obj, read.collector, read.pages
    size, context, pages_per_batch = read.size, read.context, read.pages_per_batch
    pages_in_batch = 0
    chain: CursorChain | None = None
    if isinstance(run.paging, CursorPaging) and run.paging.chain_limit and run.restart_from is not None:
        chain = CursorChain(
            limit=run.paging.chain_limit,
            cursor_path=run.cursor_path,
            fmt=obj.incremental.format,
            since=collector.since,
            restart_from=run.restart_from,
            stats=collector.stats,
            cursor_name=obj.incremental.cursor,
        )
    for _, _, records in walk_pages(
        session, run.paging, run.request, size, run.records_path, read.object_name, context, chain
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
    values = template_values(obj, object_name, page_size=size, fields=[pk_name] if pk_name else [])
    request = render_request(
        obj, obj.request.path, values, params={**obj.request.params, **obj.deletes.params}
    )
    counted = stats if stats is not None else ExtractStats()
    resolve = path_resolver(pk_path)

    def generate() -> Iterator[pa.RecordBatch]:
        with http_client(connection=connection, retry=system.retries) as client:
            session = Session(
                system=system, connection=connection, context=context, client=client, retry=system.retries
            )
            paging = system.paging_of(object_name)
            for _, _, records in walk_pages(
                session, paging, request, size, obj.records_path, object_name, context, key_of=resolve
            ):
                counted.requests += 1
                keys = [render_value(resolve(r)) for r in records]
                counted.rows += len(keys)
                if keys:
                    yield pa.RecordBatch.from_arrays([pa.array(keys, type=pa.string())], schema=schema)

    return generate()


# --- doctor ----------------------------------------------------------------------------------------


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
