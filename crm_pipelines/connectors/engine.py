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

import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

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
)

__all__ = [
    "EXTRACTED_AT",
    "ConnectionCheck",
    "ConnectionSettings",
    "PageInfo",
    "SchemaDrift",
    "check_connection",
    "extract_object",
    "output_schema",
]

log = logging.getLogger(__name__)

EXTRACTED_AT = "_extracted_at"
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
    """

    system: str
    object_name: str
    undeclared: set[str] = field(default_factory=set)
    missing: set[str] = field(default_factory=set)
    records_seen: int = 0

    @property
    def has_drift(self) -> bool:
        return bool(self.undeclared or self.missing)

    def describe(self) -> str:
        """One line for logs and run metadata."""
        if not self.has_drift:
            return f"{self.system} {self.object_name}: no schema drift in {self.records_seen} records"
        parts = []
        if self.undeclared:
            parts.append(f"not declared: {', '.join(sorted(self.undeclared))}")
        if self.missing:
            parts.append(f"declared but absent: {', '.join(sorted(self.missing))}")
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
    """Arrow schema of an object's batches: declared fields as strings, then ``_extracted_at``.

    Args:
        system: The system declaration.
        object_name: A declared object.

    Returns:
        The schema.
    """
    obj = system.get_object(object_name)
    return pa.schema(
        [pa.field(f.name, pa.string()) for f in obj.fields] + [pa.field(EXTRACTED_AT, _EXTRACTED_AT_TYPE)]
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

    @staticmethod
    def _builder(url: str, page: PageRequest, token: AccessToken) -> Callable[[], httpx.Request]:
        headers = {
            **page.headers,
            "Accept": "application/json",
            "Authorization": f"Bearer {token.value.reveal()}",
        }
        params = dict(page.params) or None
        return lambda: httpx.Request("GET", url, params=params, headers=headers)

    def get_json(self, page: PageRequest, *, context: ErrorContext) -> Any:
        """GET a page with the current token; on a 401 refresh the token once and try again."""
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
            response = self._send(self._builder(url, page, token), context=context)
            if response.status_code == 401 and self.auth.refreshable and attempt == 0:
                log.info("%s: token rejected (401); fetching a new one and retrying once", context.where)
                response.read()
                self.auth.invalidate(token=token)
                continue
            raise_for_status(response=response, context=context)
            try:
                return _decode(response.content)
            except (ValueError, UnicodeDecodeError):
                raise ApiRequestError(
                    redact(
                        f"{context.where}: {target.path} answered HTTP {response.status_code} with a body "
                        f"that is not JSON ({response.headers.get('content-type', 'no content type')}).",
                        context.secrets,
                    ),
                    fix=f"check {context.base_url_variable}: it must point at the {self.system.title} API.",
                    status=response.status_code,
                ) from None
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover


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


class _DriftTracker:
    def __init__(self, obj: ObjectSpec, drift: SchemaDrift) -> None:
        self.drift = drift
        self.declared = [f.source_path for f in obj.fields]
        self.ignored = list(obj.ignore_undeclared)
        self.present: set[str] = set()
        self.names = {f.source_path: f.name for f in obj.fields}
        self._covered: dict[str, bool] = {}

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


def _render_request(obj: ObjectSpec, object_name: str, path: str, where: str, page_size: int) -> PageRequest:
    values = {
        "fields": ",".join(obj.selected_names()),
        "where": where,
        "page_size": page_size,
        "object": object_name,
    }
    params = {k: v.format(**values) for k, v in obj.request.params.items()}
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
) -> Iterator[pa.RecordBatch]:
    """Stream one declared object as Arrow batches.

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
            ``archived=true`` as a second pass, windowed on ``archivedAt``).
        pages_per_batch: Pages gathered into one batch (fewer, larger batches).

    Returns:
        An iterator of record batches with :func:`output_schema`'s schema. Salesforce batches come
        ordered by cursor then primary key (server-side ORDER BY); the HubSpot list endpoint cannot
        sort, so its records come in the API's order. Pages whose rows all fall outside the
        window yield nothing.

    Raises:
        ApiRequestError: The API refused a request (message names system, object and the fix).
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
) -> Iterator[pa.RecordBatch]:
    obj = system.get_object(object_name)
    schema = output_schema(system=system, object_name=object_name)
    size = system.page_size.clamp(page_size)
    incremental = obj.incremental
    window_since, window_until = since, until
    windowed = window_since is not None or window_until is not None
    where = _render_where(incremental, window_since, window_until)
    paginator = make_paginator(spec=system.paging)
    tracker = _DriftTracker(obj, drift)
    pk_path = obj.field(obj.primary_key).source_path
    field_paths = [(f.name, f.source_path) for f in obj.fields]

    total_rows = 0
    page_number = 0
    skipped_no_cursor = 0
    with _client(connection=connection, retry=system.retries) as client:
        session = _Session(
            system=system, connection=connection, context=context, client=client, retry=system.retries
        )
        for run in _passes(obj, object_name, where, size, include_deleted):
            seen: set[str] = set()  # primary keys of this pass: offset paging can repeat rows
            request: PageRequest | None = paginator.first_request(request=run.request, page_size=size)
            columns: dict[str, list[str | None]] = {name: [] for name, _ in field_paths}
            stamps: list[datetime] = []
            pages_in_batch = 0
            while request is not None:
                body = session.get_json(request, context=context)
                extracted_at = datetime.now(UTC)
                records = resolve_path(body, obj.records_path)
                if records is MISSING or records is None:
                    records = []
                if not isinstance(records, list):
                    raise ApiRequestError(
                        f"{context.where}: '{obj.records_path}' in the response is not a list.",
                        fix=f"check records_path of {object_name} in {context.yaml_path}.",
                    )
                page_number += 1
                kept = 0
                for record in records:
                    tracker.observe(record)
                    if windowed:
                        moment = parse_cursor(
                            value=resolve_path(record, run.cursor_path), fmt=incremental.format
                        )
                        if moment is None:
                            skipped_no_cursor += 1
                            continue
                        if (window_since is not None and moment < window_since) or (
                            window_until is not None and moment >= window_until
                        ):
                            continue
                    key = _render(resolve_path(record, pk_path))
                    if key is not None:
                        if key in seen:
                            continue
                        seen.add(key)
                    for name, path in field_paths:
                        value = resolve_path(record, path)
                        if value is not MISSING:
                            tracker.present.add(path)
                        columns[name].append(_render(value))
                    stamps.append(extracted_at)
                    kept += 1
                total_rows += kept
                pages_in_batch += 1
                if on_page is not None:
                    on_page(
                        PageInfo(
                            system=system.name,
                            object_name=object_name,
                            page_number=page_number,
                            records=len(records),
                            rows=kept,
                            total_rows=total_rows,
                            deleted_pass=run.deleted_only,
                        )
                    )
                next_request = paginator.next_request(
                    previous=request, body=body, records=records, page_size=size
                )
                if next_request == request:
                    raise ApiRequestError(
                        f"{context.where}: paging did not advance (the same page was requested twice).",
                        fix=f"check the paging declaration in {context.yaml_path}.",
                    )
                request = next_request
                if pages_in_batch >= pages_per_batch or request is None:
                    if stamps:
                        yield _batch(schema, columns, stamps)
                    columns = {name: [] for name, _ in field_paths}
                    stamps = []
                    pages_in_batch = 0
    tracker.finish()
    if skipped_no_cursor:
        log.warning(
            "%s: %d record(s) without a readable %s were left out of the window",
            context.where,
            skipped_no_cursor,
            incremental.cursor,
        )
    if tracker.drift.has_drift:
        log.warning("%s", tracker.drift.describe())
    log.info("%s: extracted %d rows in %d pages", context.where, total_rows, page_number)


def _batch(
    schema: pa.Schema, columns: dict[str, list[str | None]], stamps: Sequence[datetime]
) -> pa.RecordBatch:
    arrays = [pa.array(columns[name], type=pa.string()) for name in schema.names[:-1]]
    arrays.append(pa.array(stamps, type=_EXTRACTED_AT_TYPE))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


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
