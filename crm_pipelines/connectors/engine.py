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
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
import pyarrow as pa

from crm_pipelines.connectors.auth import (
    AccessToken,
    Authenticator,
    ConnectionSettings,
    build_authenticator,
)
from crm_pipelines.connectors.limits import (
    ApiRequestError,
    AuthenticationError,
    ConnectionFailedError,
    ConnectorError,
    ErrorContext,
    InsecureURLError,
    TokenBucket,
    check_url_allowed,
    raise_for_status,
    redact,
    send_request,
    shared_bucket,
)
from crm_pipelines.connectors.paging import MISSING, PageRequest, make_paginator, resolve_path
from crm_pipelines.connectors.spec import (
    BearerTokenAuth,
    IncrementalSpec,
    OAuth2ClientCredentialsAuth,
    ObjectSpec,
    RetrySpec,
    SystemSpec,
    UpsertSpec,
)

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
    "upsert_records",
]

log = logging.getLogger(__name__)

EXTRACTED_AT = "_extracted_at"
# True for a record the source has deleted (Salesforce IsDeleted, HubSpot archived): kept as a soft delete.
DELETED = "_deleted"
_EXTRACTED_AT_TYPE = pa.timestamp("us", tz="UTC")
_USER_AGENT = "crm-pipelines"


class _JsonNumber(str):
    """A JSON number kept as the exact text the API sent (no float rounding, no ``1.0`` vs ``1``)."""

    __slots__ = ()


def _decode(content: bytes) -> Any:
    return json.loads(content, parse_float=_JsonNumber, parse_int=_JsonNumber)


def _render(value: Any) -> str | None:
    if value is None or value is MISSING:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return str.__str__(value)
    return _dump(value)


def _dump(value: Any) -> str:
    """Compact JSON of a nested value, writing numbers with the text they arrived as."""
    if isinstance(value, _JsonNumber):
        return str.__str__(value)
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(f"{json.dumps(str(k), ensure_ascii=False)}:{_dump(v)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, list):
        return "[" + ",".join(_dump(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


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
    if fmt == "soql_datetime":
        # SOQL dateTime literals (YYYY-MM-DDThh:mm:ssZ) carry whole seconds.
        floored = value.replace(microsecond=0)
        if round_up and floored != value:
            floored += timedelta(seconds=1)
        return floored.strftime("%Y-%m-%dT%H:%M:%SZ")
    # iso8601 with milliseconds, as HubSpot writes its timestamps.
    ms_floor = value.replace(microsecond=value.microsecond // 1000 * 1000)
    if round_up and ms_floor != value:
        ms_floor += timedelta(milliseconds=1)
    return ms_floor.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms_floor.microsecond // 1000:03d}Z"


def parse_cursor(*, value: Any, fmt: str) -> datetime | None:
    """Parse a cursor value from a record into an aware UTC datetime.

    Args:
        value: The raw value (Salesforce ``2026-11-25T10:00:00.000+0000``, ISO 8601, epoch ms).
        fmt: The declared cursor format.

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
    try:
        return _utc(datetime.fromisoformat(text))
    except ValueError:
        return None


def _render_where(incremental: IncrementalSpec, since: datetime | None, until: datetime | None) -> str:
    server = incremental.server_filter
    if server is None or (since is None and until is None):
        return ""
    conditions = []
    if since is not None:
        conditions.append(
            server.lower.format(
                value=_format_cursor(since, incremental.format, round_up=False), cursor=incremental.cursor
            )
        )
    if until is not None:
        conditions.append(
            server.upper.format(
                value=_format_cursor(until, incremental.format, round_up=True), cursor=incremental.cursor
            )
        )
    return server.where.format(conditions=server.join.join(conditions), cursor=incremental.cursor)


# --- HTTP session ----------------------------------------------------------------------------------


def _context(system: SystemSpec, connection: ConnectionSettings, object_name: str | None) -> ErrorContext:
    auth = system.auth
    if isinstance(auth, OAuth2ClientCredentialsAuth):
        variables: tuple[str, ...] = (auth.client_id_variable, auth.client_secret_variable)
    elif isinstance(auth, BearerTokenAuth):
        variables = (auth.token_variable,)
    else:  # pragma: no cover - the spec union is closed
        variables = ()
    return ErrorContext(
        system_name=system.name,
        system_title=system.title,
        object_name=object_name,
        base_url_variable=system.base_url_variable,
        credential_variables=variables,
        secrets=connection.secret_values(),
    )


class _Session:
    """One HTTP client, the account's shared bucket and the authenticator, for one extract or check."""

    def __init__(
        self,
        *,
        system: SystemSpec,
        connection: ConnectionSettings,
        context: ErrorContext,
        client: httpx.Client,
        retry: RetrySpec,
    ) -> None:
        self.system = system
        self.context = context
        self.client = client
        self.retry = retry
        self.bucket: TokenBucket = shared_bucket(
            base_url=connection.base_url, fingerprint=connection.fingerprint, rate_limit=system.rate_limit
        )
        self.auth: Authenticator = build_authenticator(system=system, connection=connection, context=context)

    def _send(
        self, build: Callable[[], httpx.Request], *, context: ErrorContext, token_request: bool = False
    ) -> httpx.Response:
        return send_request(
            client=self.client,
            build=build,
            context=context,
            bucket=self.bucket,
            retry=self.retry,
            rate_limit=self.system.rate_limit,
            token_request=token_request,
        )

    def token(self) -> AccessToken:
        return self.auth.token(send=lambda build: self._send(build, context=self.context, token_request=True))

    @staticmethod
    def _absolute(url: str, api_base: str) -> str:
        if url.startswith(("http://", "https://")):
            return url
        base = httpx.URL(api_base)
        prefix = base.path.rstrip("/")
        if prefix and not url.startswith(prefix + "/"):
            return api_base.rstrip("/") + url
        return str(base.copy_with(path="/", query=None, fragment=None)).rstrip("/") + url

    def send(
        self,
        method: str,
        page: PageRequest,
        *,
        context: ErrorContext,
        json_body: Any = None,
        accept: str = "application/json",
    ) -> httpx.Response:
        """Send with the current token; on a 401 refresh the token once and try again.

        Returns:
            A 2xx response (207 included: batch endpoints report per-record errors with it).
        """
        content = None if json_body is None else json.dumps(json_body, ensure_ascii=False).encode("utf-8")
        for attempt in range(2):
            token = self.token()
            url = self._absolute(page.url, token.api_base_url)
            api_origin = httpx.URL(token.api_base_url)
            target = httpx.URL(url)
            if (target.scheme, target.host, target.port) != (
                api_origin.scheme,
                api_origin.host,
                api_origin.port,
            ):
                # A next-page link to another host would carry our token there.
                raise ApiRequestError(
                    f"{context.where}: refusing to follow a link to {target.scheme}://{target.host} "
                    f"(the API is at {api_origin.scheme}://{api_origin.host}).",
                    fix=f"check the paging declaration in {context.yaml_path}.",
                )
            headers = {
                **page.headers,
                "Accept": accept,
                "Authorization": f"Bearer {token.value.reveal()}",
            }
            if content is not None:
                headers["Content-Type"] = "application/json"
            params = dict(page.params) or None

            def build(
                url: str = url, headers: dict[str, str] = headers, params: dict[str, str] | None = params
            ) -> httpx.Request:
                return httpx.Request(method, url, params=params, headers=headers, content=content)

            response = self._send(build, context=context)
            if response.status_code == 401 and self.auth.refreshable and attempt == 0:
                log.info("%s: token rejected (401); fetching a new one and retrying once", context.where)
                response.read()
                self.auth.invalidate(token=token)
                continue
            raise_for_status(response=response, context=context)
            return response
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def decode(self, response: httpx.Response, *, context: ErrorContext) -> Any:
        try:
            return _decode(response.content)
        except (ValueError, UnicodeDecodeError):
            raise ApiRequestError(
                redact(
                    f"{context.where}: {response.request.url.path} answered HTTP {response.status_code} with "
                    f"a body that is not JSON ({response.headers.get('content-type', 'no content type')}).",
                    context.secrets,
                ),
                fix=f"check {context.base_url_variable}: it must point at the {self.system.title} API.",
                status=response.status_code,
            ) from None

    def get_json(self, page: PageRequest, *, context: ErrorContext) -> Any:
        """GET a page as JSON with the current token (401: refresh once and retry)."""
        return self.decode(self.send("GET", page, context=context), context=context)

    def post_json(self, page: PageRequest, body: Any, *, context: ErrorContext, method: str = "POST") -> Any:
        """POST (or PATCH) a JSON body and decode the JSON answer."""
        return self.decode(self.send(method, page, context=context, json_body=body), context=context)


def _client(*, connection: ConnectionSettings, retry: RetrySpec) -> httpx.Client:
    timeout = connection.timeout_seconds or retry.timeout_seconds
    return httpx.Client(
        timeout=httpx.Timeout(timeout),
        verify=connection.verify,  # certificate verification stays on unless a CA bundle is given
        follow_redirects=False,  # a redirect would re-send the bearer token elsewhere
        headers={"User-Agent": _USER_AGENT},
    )


# --- extraction ------------------------------------------------------------------------------------


@dataclass
class _Pass:
    request: PageRequest
    cursor_path: str  # record path windowing this pass
    deleted_only: bool


@dataclass
class ExtractStats:
    """What an extract did, filled in while it runs; read it after the iterator is exhausted.

    Attributes:
        method: ``rest``, ``bulk`` (Salesforce Bulk API 2.0 query job) or ``search``.
        rows: Rows yielded.
        deleted_rows: Rows yielded with ``_deleted`` true.
        max_cursor: Highest cursor among the rows yielded (the next watermark), or None.
        requests: Data requests made (pages, polls, job and count requests).
        bulk_jobs: Ids of the Bulk API query jobs run.
        search_windows: Time windows the search was split into to stay under its result cap.
    """

    method: str = "rest"
    rows: int = 0
    deleted_rows: int = 0
    max_cursor: datetime | None = None
    requests: int = 0
    bulk_jobs: list[str] = field(default_factory=list)
    search_windows: int = 0


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


def _render_request(
    obj: ObjectSpec, object_name: str, path: str, where: str, page_size: int, query: str | None = None
) -> PageRequest:
    values = {
        "fields": ",".join(obj.selected_names()),
        "where": where,
        "page_size": page_size,
        "object": object_name,
    }
    params = {k: v.format(**values) for k, v in obj.request.params.items()}
    if query is not None:
        params = {"q": query.format(**values)}
    headers = {k: v.format(**values) for k, v in obj.request.headers.items()}
    return PageRequest(url=path.format(**values), params=params, headers=headers)


def _passes(
    obj: ObjectSpec, object_name: str, where: str, page_size: int, include_deleted: bool
) -> list[_Pass]:
    cursor_path = obj.field(obj.incremental.cursor).source_path
    deletes = obj.deletes
    if include_deleted and deletes.mode == "query_all" and deletes.path:
        return [_Pass(_render_request(obj, object_name, deletes.path, where, page_size), cursor_path, False)]
    live = _Pass(_render_request(obj, object_name, obj.request.path, where, page_size), cursor_path, False)
    if include_deleted and deletes.mode == "archived_pass" and deletes.param and deletes.value:
        archived = PageRequest(
            url=live.request.url,
            params={**live.request.params, deletes.param: deletes.value},
            headers=live.request.headers,
        )
        return [live, _Pass(archived, deletes.cursor_path or cursor_path, True)]
    return [live]


def _resolver(path: str) -> Callable[[Any], Any]:
    """A resolver for one dotted path: plain dict lookups on the hot path, :func:`resolve_path` otherwise."""
    parts = tuple(path.split("."))
    if any(p.lstrip("-").isdigit() for p in parts):
        return lambda record: resolve_path(record, path)

    def resolve(record: Any) -> Any:
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
    """Turns records into column lists: drift, the exact window, de-duplication, ``_deleted``."""

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
        self.pk_path = obj.field(obj.primary_key).source_path
        self.flag_path = (
            obj.field(obj.deletes.flag_field).source_path
            if obj.deletes.mode == "query_all" and obj.deletes.flag_field
            else None
        )
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

    def add(self, records: Sequence[Any], *, cursor_path: str, deleted_pass: bool) -> int:
        extracted_at = datetime.now(UTC)
        kept = 0
        windowed = self.since is not None or self.until is not None
        cursor_of = self._cursor_of.get(cursor_path)
        if cursor_of is None:
            cursor_of = self._cursor_of[cursor_path] = _resolver(cursor_path)
        watermark_of = self._cursor_of.setdefault(self.cursor_field_path, _resolver(self.cursor_field_path))
        present, columns, seen = self.tracker.present, self.columns, self.seen
        for record in records:
            self.tracker.observe(record)
            moment = parse_cursor(value=cursor_of(record), fmt=self.fmt)
            if windowed:
                if moment is None:
                    self.skipped_no_cursor += 1
                    continue
                if (self.since is not None and moment < self.since) or (
                    self.until is not None and moment >= self.until
                ):
                    continue
            key = _render(self._pk(record))
            if key is not None:
                if key in seen:
                    continue
                seen.add(key)
            for name, path, resolve in self._fields:
                value = resolve(record)
                if value is MISSING:
                    columns[name].append(None)
                    continue
                if path not in present:
                    present.add(path)
                columns[name].append(value if type(value) is str else _render(value))
            deleted = deleted_pass or (self._flag is not None and _render(self._flag(record)) == "true")
            self.deleted.append(deleted)
            self.stamps.append(extracted_at)
            # The watermark follows the object's cursor field (archived passes window on archivedAt).
            stamp = moment if cursor_path == self.cursor_field_path else None
            if stamp is None:
                stamp = parse_cursor(value=watermark_of(record), fmt=self.fmt)
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
        stats: An :class:`ExtractStats` to fill in (method, rows, highest cursor, bulk jobs).

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
    context = _context(system, connection, object_name)
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
    )


def _records_of(body: Any, obj: ObjectSpec, object_name: str, context: ErrorContext) -> list[Any]:
    records = resolve_path(body, obj.records_path)
    if records is MISSING or records is None:
        return []
    if not isinstance(records, list):
        raise ApiRequestError(
            f"{context.where}: '{obj.records_path}' in the response is not a list.",
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
) -> Iterator[pa.RecordBatch]:
    obj = system.get_object(object_name)
    schema = output_schema(system=system, object_name=object_name)
    size = system.page_size.clamp(page_size)
    incremental = obj.incremental
    where = _render_where(incremental, since, until)
    tracker = _DriftTracker(obj, drift)
    collector = _Collector(obj=obj, schema=schema, tracker=tracker, stats=stats, since=since, until=until)
    pages = _PageCounter(system.name, object_name, on_page, stats)

    with _client(connection=connection, retry=system.retries) as client:
        session = _Session(
            system=system, connection=connection, context=context, client=client, retry=system.retries
        )
        if obj.describe is not None:
            _describe(session, obj, object_name, context, drift)
        passes = _passes(obj, object_name, where, size, include_deleted)
        if obj.bulk is not None and _use_bulk(session, obj, object_name, passes[0], where, context, stats):
            stats.method = "bulk"
            yield from _bulk_extract(session, obj, object_name, passes[0], where, context, collector, pages)
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
                    session, system, obj, object_name, run, size, context, collector, pages, pages_per_batch
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


def _describe(
    session: _Session, obj: ObjectSpec, object_name: str, context: ErrorContext, drift: SchemaDrift
) -> None:
    """Read the source's field list; a failure here is logged, never fatal (drift must not crash)."""
    assert obj.describe is not None
    try:
        body = session.get_json(
            PageRequest(url=obj.describe.path.format(object=object_name)), context=context
        )
    except AuthenticationError:
        raise
    except ConnectorError as exc:
        log.warning(
            "%s: could not read the field list (%s); drift is judged from records only", context.where, exc
        )
        return
    entries = resolve_path(body, obj.describe.names_path)
    if not isinstance(entries, list):
        return
    names = {str(e.get(obj.describe.name_key)) for e in entries if isinstance(e, dict)}
    prefix = obj.select_prefix or ""
    known = {
        f.source_path[len(prefix) :] if f.source_path.startswith(prefix) else f.source_path
        for f in obj.fields
    }
    ignored = {i[len(prefix) :] if prefix and i.startswith(prefix) else i for i in obj.ignore_undeclared}
    drift.source_fields = names
    drift.not_selected = names - known - ignored


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


def _paged_extract(
    session: _Session,
    system: SystemSpec,
    obj: ObjectSpec,
    object_name: str,
    run: _Pass,
    size: int,
    context: ErrorContext,
    collector: _Collector,
    pages: _PageCounter,
    pages_per_batch: int,
) -> Iterator[pa.RecordBatch]:
    paginator = make_paginator(spec=system.paging)
    request: PageRequest | None = paginator.first_request(request=run.request, page_size=size)
    pages_in_batch = 0
    while request is not None:
        body = session.get_json(request, context=context)
        records = _records_of(body, obj, object_name, context)
        kept = collector.add(records, cursor_path=run.cursor_path, deleted_pass=run.deleted_only)
        pages.page(records=len(records), kept=kept, deleted_pass=run.deleted_only)
        pages_in_batch += 1
        next_request = paginator.next_request(previous=request, body=body, records=records, page_size=size)
        if next_request == request:
            raise ApiRequestError(
                f"{context.where}: paging did not advance (the same page was requested twice).",
                fix=f"check the paging declaration in {context.yaml_path}.",
            )
        request = next_request
        if pages_in_batch >= pages_per_batch or request is None:
            batch = collector.flush()
            if batch is not None:
                yield batch
            pages_in_batch = 0


# --- Salesforce Bulk API 2.0 -----------------------------------------------------------------------


def _use_bulk(
    session: _Session,
    obj: ObjectSpec,
    object_name: str,
    run: _Pass,
    where: str,
    context: ErrorContext,
    stats: ExtractStats,
) -> bool:
    """Size the window with the declared COUNT() query through the same resource (query/queryAll)."""
    assert obj.bulk is not None
    if obj.bulk.threshold_records == 0:
        return True
    request = _render_request(obj, object_name, run.request.url, where, 0, query=obj.bulk.count_query)
    body = session.get_json(PageRequest(url=request.url, params=request.params), context=context)
    stats.requests += 1
    total = resolve_path(body, "totalSize")
    count = int(str(total)) if total not in (None, MISSING) else 0
    log.info("%s: %d records in the window (bulk from %d)", context.where, count, obj.bulk.threshold_records)
    return count >= obj.bulk.threshold_records


def _bulk_extract(
    session: _Session,
    obj: ObjectSpec,
    object_name: str,
    run: _Pass,
    where: str,
    context: ErrorContext,
    collector: _Collector,
    pages: _PageCounter,
) -> Iterator[pa.RecordBatch]:
    bulk = obj.bulk
    assert bulk is not None
    query = _render_request(obj, object_name, run.request.url, where, 0, query=bulk.query).params["q"]
    operation = (
        "queryAll" if obj.deletes.mode == "query_all" and run.request.url == obj.deletes.path else "query"
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
    locator: str | None = None
    while True:
        params = {"maxRecords": str(bulk.max_records_per_page)}
        if locator:
            params["locator"] = locator
        response = session.send(
            "GET", PageRequest(url=f"{job_url}/results", params=params), context=context, accept="text/csv"
        )
        records = _csv_records(response.content)
        kept = collector.add(records, cursor_path=collector.cursor_field_path, deleted_pass=False)
        pages.page(records=len(records), kept=kept, deleted_pass=False)
        batch = collector.flush()
        if batch is not None:
            yield batch
        locator = response.headers.get("Sforce-Locator")
        if not locator or locator == "null":
            break


def _csv_records(content: bytes) -> list[dict[str, str | None]]:
    """Bulk 2.0 CSV rows as records; an empty field is a null (Bulk writes nulls as nothing)."""
    reader = csv.DictReader(io.StringIO(content.decode("utf-8-sig")))
    return [{k: (v if v != "" else None) for k, v in row.items()} for row in reader]


# --- HubSpot search --------------------------------------------------------------------------------


def _ms(value: datetime, *, round_up: bool) -> int:
    ms = _utc(value).timestamp() * 1000
    return math.ceil(ms) if round_up else math.floor(ms)


def _search_extract(
    session: _Session,
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
            records = _records_of(answer, obj, str(search.path), context)
            kept = collector.add(records, cursor_path=cursor_path, deleted_pass=False)
            pages.page(records=len(records), kept=kept, deleted_pass=False)
            batch = collector.flush()
            if batch is not None:
                yield batch
            next_after = resolve_path(answer, search.after_path)
            if next_after in (None, MISSING) or not records:
                break
            after = _render(next_after)


# --- write side ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpsertResult:
    """The outcome of one record of :func:`upsert_records`.

    Attributes:
        external_id: The record's external id value.
        status: ``created``, ``updated`` or ``rejected``.
        record_id: The system's id of the record (None when rejected).
        error_code: The system's error code when rejected (``REQUIRED_FIELD_MISSING``, ``VALIDATION_ERROR``).
        reason: The system's message when rejected.
        attempts: Attempts made for this record.
    """

    external_id: str
    status: Literal["created", "updated", "rejected"]
    record_id: str | None = None
    error_code: str | None = None
    reason: str | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.status != "rejected"


_Outcome = tuple[str, str | None, str | None, str | None]  # status, record id, error code, reason


def upsert_records(
    *,
    system: SystemSpec,
    object_name: str,
    connection: ConnectionSettings,
    external_id_field: str,
    records: Iterable[Mapping[str, Any]],
) -> list[UpsertResult]:
    """Create or update records by external id, batched as the system allows; a result per record.

    Batches go through the account's shared token bucket and the usual retries (429, 5xx,
    connection resets). A record the system rejects with a retryable code (``upsert.retryable_errors``,
    e.g. Salesforce ``UNABLE_TO_LOCK_ROW``) is sent again, up to ``upsert.max_attempts``; any other
    rejection comes back with its code and reason. A batch refused as a whole (HTTP 400) is split in
    halves until the offending records are isolated, so one bad record never sinks its neighbours.
    Nothing is dropped: the result list has one entry per input record, in input order.

    Args:
        system: The system declaration; the object must declare ``upsert``.
        object_name: A declared object, e.g. ``"Account"`` or ``"contacts"``.
        connection: Base URL and credentials.
        external_id_field: Field (Salesforce external id field, HubSpot unique property) matched on.
        records: Field name to value per record; each must carry ``external_id_field``.

    Returns:
        One :class:`UpsertResult` per record, in input order.
    """
    obj = system.get_object(object_name)
    if obj.upsert is None:
        raise ValueError(f"{system.title} {object_name} declares no upsert in {system.name}.yaml")
    spec = obj.upsert
    context = _context(system, connection, object_name)
    check_url_allowed(url=connection.base_url, context=context)
    items = [dict(r) for r in records]
    results: list[UpsertResult | None] = [None] * len(items)
    attempts = [0] * len(items)
    with _client(connection=connection, retry=system.retries) as client:
        session = _Session(
            system=system, connection=connection, context=context, client=client, retry=system.retries
        )
        pending = list(range(len(items)))
        for attempt in range(1, spec.max_attempts + 1):
            retry_next: list[int] = []
            for start in range(0, len(pending), spec.batch_size):
                chunk = pending[start : start + spec.batch_size]
                for index, outcome in _upsert_chunk(
                    session, spec, object_name, external_id_field, items, chunk, context
                ):
                    attempts[index] += 1
                    status, record_id, code, reason = outcome
                    key = _render(items[index].get(external_id_field)) or ""
                    if status == "rejected" and code in spec.retryable_errors and attempt < spec.max_attempts:
                        retry_next.append(index)
                        continue
                    results[index] = UpsertResult(
                        key,
                        "created"
                        if status == "created"
                        else "updated"
                        if status == "updated"
                        else "rejected",
                        record_id,
                        code,
                        reason,
                        attempts[index],
                    )
            if not retry_next:
                break
            log.info(
                "%s: %d record(s) rejected with a retryable error; retrying", context.where, len(retry_next)
            )
            time.sleep(
                min(system.retries.backoff_max_seconds, system.retries.backoff_initial_seconds * attempt)
            )
            pending = retry_next
    missing = [i for i, r in enumerate(results) if r is None]
    assert not missing, f"upsert lost records {missing}"  # every path above sets a result
    return [r for r in results if r is not None]


def _upsert_chunk(
    session: _Session,
    spec: UpsertSpec,
    object_name: str,
    id_field: str,
    items: list[dict[str, Any]],
    chunk: list[int],
    context: ErrorContext,
) -> Iterator[tuple[int, _Outcome]]:
    request = PageRequest(url=spec.path.format(object=object_name, id_field=id_field))
    batch = [items[i] for i in chunk]
    try:
        if spec.style == "sobject_collections":
            body: Any = {
                "allOrNone": False,
                "records": [{"attributes": {"type": object_name}, **record} for record in batch],
            }
            answer = session.post_json(request, body, context=context, method="PATCH")
            yield from zip(chunk, _salesforce_outcomes(answer, len(batch)), strict=True)
        else:
            inputs = [
                {
                    "idProperty": id_field,
                    "id": _render(record.get(id_field)),
                    "properties": {
                        k: _render(v) if not isinstance(v, str) else v
                        for k, v in record.items()
                        if k != id_field
                    },
                }
                for record in batch
            ]
            answer = session.post_json(request, {"inputs": inputs}, context=context)
            keys = [str(i["id"]) for i in inputs]
            yield from zip(chunk, _hubspot_outcomes(answer, keys, id_field), strict=True)
    except AuthenticationError:
        raise
    except ApiRequestError as exc:
        if exc.status != 400:
            raise
        if len(chunk) > 1:
            # The batch was refused as a whole: halve it until the bad records stand alone.
            middle = len(chunk) // 2
            yield from _upsert_chunk(session, spec, object_name, id_field, items, chunk[:middle], context)
            yield from _upsert_chunk(session, spec, object_name, id_field, items, chunk[middle:], context)
        else:
            yield chunk[0], ("rejected", None, exc.code or "HTTP_400", exc.detail)


def _salesforce_outcomes(answer: Any, expected: int) -> list[_Outcome]:
    outcomes: list[_Outcome] = []
    rows = answer if isinstance(answer, list) else []
    for position in range(expected):
        row = rows[position] if position < len(rows) and isinstance(rows[position], dict) else None
        if row is None:
            outcomes.append(("rejected", None, "NO_RESULT", "the API returned no result for this record"))
        elif row.get("success") is True:
            outcomes.append(
                ("created" if row.get("created") else "updated", _render(row.get("id")), None, None)
            )
        else:
            errors = row.get("errors") or [{}]
            first = errors[0] if isinstance(errors[0], dict) else {}
            outcomes.append(
                ("rejected", None, _render(first.get("statusCode")), _render(first.get("message")))
            )
    return outcomes


def _hubspot_outcomes(answer: Any, keys: list[str], id_field: str) -> list[_Outcome]:
    by_key: dict[str, _Outcome] = {}
    for result in answer.get("results") or []:
        props = result.get("properties") or {}
        key = _render(props.get(id_field))
        if key is not None:
            status = "created" if result.get("new") else "updated"
            by_key[key] = (status, _render(result.get("id")), None, None)
    for error in answer.get("errors") or []:
        context = error.get("context") or {}
        for key in context.get("ids") or context.get("id") or []:
            by_key[str(key)] = (
                "rejected",
                None,
                _render(error.get("category")),
                _render(error.get("message")),
            )
    return [
        by_key.get(key, ("rejected", None, "NO_RESULT", "the API returned no result for this record"))
        for key in keys
    ]


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
    context = _context(system, connection, None)
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
    with _client(connection=connection, retry=retry) as client:
        try:
            session = _Session(
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
