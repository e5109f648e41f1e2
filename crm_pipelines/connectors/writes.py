"""The write side: upserts by external id, batched the way each system allows, one result per record.

The styles a system can declare (``upsert.style`` in its YAML, see docs/connectors.md):

* ``sobject_collections``: Salesforce sObject Collections upsert, ``allOrNone: false``.
* ``hubspot_batch``: HubSpot batch upsert by ``idProperty``; results matched back by key.
* ``json_batch``: one JSON request per batch answered by a list of per-record results in order
  (Zoho ``/{module}/upsert``).
* ``odata_batch``: a multipart ``$batch`` of per-record requests with continue-on-error (Dynamics
  365 upserts by alternate key; SAP Business One).
* ``subrequests``: a JSON batch of sub-requests, one response each (SugarCRM ``/bulk``).
* ``per_record``: one request per record, after a lookup by external id where the system cannot
  upsert by it (Pipedrive, Infor CRM, Sage CRM), or an update by key that becomes a create when the
  key is not found (SAP Business One), several in flight.

Nothing is dropped: a record the system rejects with a retryable code is sent again, any other
rejection comes back with the system's code and message, and a batch refused as a whole (HTTP 400) is
split in halves until the offending records stand alone.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import json
import logging
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlencode

import httpx

from crm_pipelines.connectors.auth import ConnectionSettings
from crm_pipelines.connectors.limits import (
    ApiRequestError,
    AuthenticationError,
    ErrorContext,
    check_url_allowed,
    describe_error_body,
)
from crm_pipelines.connectors.paging import PageRequest
from crm_pipelines.connectors.paths import MISSING, resolve_path
from crm_pipelines.connectors.session import (
    Session,
    context_for,
    decode_json,
    http_client,
    render_value,
)
from crm_pipelines.connectors.spec import (
    HubSpotBatchUpsert,
    JsonBatchUpsert,
    LookupSpec,
    ODataBatchUpsert,
    PerRecordUpsert,
    SObjectCollectionsUpsert,
    SubrequestsUpsert,
    SystemSpec,
    UpsertSpec,
)
from crm_pipelines.connectors.spec_base import value_matches

log = logging.getLogger(__name__)

_NO_RESULT = ("rejected", None, "NO_RESULT", "the API returned no result for this record")


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
    context = context_for(system, connection, object_name)
    check_url_allowed(url=connection.base_url, context=context)
    items = [dict(r) for r in records]
    results: list[UpsertResult | None] = [None] * len(items)
    attempts = [0] * len(items)
    with http_client(connection=connection, retry=system.retries) as client:
        session = Session(
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
                    key = _external_id(items[index], external_id_field)
                    if status == "rejected" and code in spec.retryable_errors and attempt < spec.max_attempts:
                        retry_next.append(index)
                        continue
                    final: Literal["created", "updated", "rejected"] = (
                        "created" if status == "created" else "updated" if status == "updated" else "rejected"
                    )
                    results[index] = UpsertResult(key, final, record_id, code, reason, attempts[index])
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
    session: Session,
    spec: UpsertSpec,
    object_name: str,
    id_field: str,
    items: list[dict[str, Any]],
    chunk: list[int],
    context: ErrorContext,
) -> Iterator[tuple[int, _Outcome]]:
    batch = [items[i] for i in chunk]
    keys = [_external_id(record, id_field) for record in batch]
    try:
        if isinstance(spec, PerRecordUpsert):
            # Each record is its own request: nothing to split.
            yield from zip(
                chunk, _per_record(session, spec, object_name, id_field, batch, keys, context), strict=True
            )
            return
        if isinstance(spec, SObjectCollectionsUpsert):
            outcomes = _sobject_collections(session, spec, object_name, id_field, batch, context)
        elif isinstance(spec, HubSpotBatchUpsert):
            outcomes = _hubspot_batch(session, spec, object_name, id_field, batch, keys, context)
        elif isinstance(spec, JsonBatchUpsert):
            outcomes = _json_batch(session, spec, object_name, id_field, batch, context)
        elif isinstance(spec, ODataBatchUpsert):
            outcomes = _odata_batch(session, spec, object_name, id_field, batch, keys, context)
        else:
            outcomes = _subrequests(session, spec, object_name, id_field, batch, keys, context)
        yield from zip(chunk, outcomes, strict=True)
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


def _external_id(record: Mapping[str, Any], id_field: str) -> str:
    """The record's external id; a dotted field reaches into it (Pipedrive custom_fields.<key>)."""
    return render_value(resolve_path(record, id_field)) or ""


def _path(template: str, object_name: str, id_field: str, key: str = "", record_id: str = "") -> str:
    # Keys go into OData key predicates ('...') and URL paths: quotes doubled, then percent-encoded.
    odata_key = quote(key.replace("'", "''"), safe="'")
    return template.format(object=object_name, id_field=id_field, key=odata_key, id=quote(record_id, safe=""))


# --- Salesforce and HubSpot ------------------------------------------------------------------------


def _sobject_collections(
    session: Session,
    spec: SObjectCollectionsUpsert,
    object_name: str,
    id_field: str,
    batch: list[dict[str, Any]],
    context: ErrorContext,
) -> list[_Outcome]:
    body: Any = {
        "allOrNone": False,
        "records": [{"attributes": {"type": object_name}, **record} for record in batch],
    }
    request = PageRequest(url=_path(spec.path, object_name, id_field))
    answer = session.post_json(request, body, context=context, method="PATCH")
    outcomes: list[_Outcome] = []
    rows = answer if isinstance(answer, list) else []
    for position in range(len(batch)):
        row = rows[position] if position < len(rows) and isinstance(rows[position], dict) else None
        if row is None:
            outcomes.append(_NO_RESULT)
        elif row.get("success") is True:
            outcomes.append(
                ("created" if row.get("created") else "updated", render_value(row.get("id")), None, None)
            )
        else:
            errors = row.get("errors") or [{}]
            first = errors[0] if isinstance(errors[0], dict) else {}
            outcomes.append(
                ("rejected", None, render_value(first.get("statusCode")), render_value(first.get("message")))
            )
    return outcomes


def _hubspot_batch(
    session: Session,
    spec: HubSpotBatchUpsert,
    object_name: str,
    id_field: str,
    batch: list[dict[str, Any]],
    keys: list[str],
    context: ErrorContext,
) -> list[_Outcome]:
    inputs = [
        {
            "idProperty": id_field,
            "id": key,
            "properties": {k: render_value(v) for k, v in record.items() if k != id_field},
        }
        for record, key in zip(batch, keys, strict=True)
    ]
    request = PageRequest(url=_path(spec.path, object_name, id_field))
    answer = session.post_json(request, {"inputs": inputs}, context=context)
    by_key: dict[str, _Outcome] = {}
    for result in answer.get("results") or []:
        props = result.get("properties") or {}
        key = render_value(props.get(id_field))
        if key is not None:
            by_key[key] = (
                "created" if result.get("new") else "updated",
                render_value(result.get("id")),
                None,
                None,
            )
    for error in answer.get("errors") or []:
        where = error.get("context") or {}
        for key in where.get("ids") or where.get("id") or []:
            by_key[str(key)] = (
                "rejected",
                None,
                render_value(error.get("category")),
                render_value(error.get("message")),
            )
    return [by_key.get(key, _NO_RESULT) for key in keys]


# --- a JSON batch with results in order (Zoho) -----------------------------------------------------


def _fill_body(template: Any, records: list[dict[str, Any]], id_field: str) -> Any:
    if template == "{records}":
        return records
    if isinstance(template, str):
        return template.replace("{id_field}", id_field)
    if isinstance(template, dict):
        return {k: _fill_body(v, records, id_field) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill_body(v, records, id_field) for v in template]
    return template


def _json_batch(
    session: Session,
    spec: JsonBatchUpsert,
    object_name: str,
    id_field: str,
    batch: list[dict[str, Any]],
    context: ErrorContext,
) -> list[_Outcome]:
    request = PageRequest(url=_path(spec.path, object_name, id_field))
    response = session.send(
        spec.method,
        request,
        context=context,
        json_body=_fill_body(spec.body, batch, id_field),
        raise_errors=False,
    )
    results = None
    if response.content:
        try:
            results = resolve_path(decode_json(response.content), spec.results_path)
        except (ValueError, UnicodeDecodeError):
            results = None
    if not isinstance(results, list) or len(results) != len(batch):
        # No per-record answer: a refusal of the whole batch (split on 400) or an API failure.
        _raise_for(response, context)
        results = results if isinstance(results, list) else []
    outcomes: list[_Outcome] = []
    for position in range(len(batch)):
        item = results[position] if position < len(results) else None
        if not isinstance(item, dict):
            outcomes.append(_NO_RESULT)
        elif value_matches(item, spec.success):
            created = spec.created is not None and value_matches(item, spec.created)
            outcomes.append(("created" if created else "updated", _found(item, spec.id_path), None, None))
        else:
            outcomes.append(
                ("rejected", None, _found(item, spec.error_code_path), _found(item, spec.error_message_path))
            )
    return outcomes


def _found(document: Any, path: str) -> str | None:
    value = resolve_path(document, path)
    return None if value is MISSING else render_value(value)


def _raise_for(response: httpx.Response, context: ErrorContext) -> None:
    if not response.is_success:
        message, code = describe_error_body(
            response=response, message_paths=context.message_paths, code_paths=context.code_paths
        )
        raise ApiRequestError(
            f"{context.where}: {response.request.method} {response.request.url.path} failed: HTTP "
            f"{response.status_code}{' ' + code if code else ''}: {message}.",
            fix=f"check the upsert declaration of {context.where} in {context.yaml_path}.",
            status=response.status_code,
            code=code,
        )


def _outcome_of(
    status: int, body: Any, created: bool, id_path: str | None, context: ErrorContext
) -> _Outcome:
    """One sub-response (a $batch part, a /bulk entry, a per-record answer) as an outcome."""
    if 200 <= status < 300:
        record_id = _found(body, id_path) if id_path and isinstance(body, dict | list) else None
        return ("created" if created or status == 201 else "updated", record_id, None, None)
    fake = httpx.Response(status, content=json.dumps(body).encode() if not isinstance(body, bytes) else body)
    message, code = describe_error_body(
        response=fake, message_paths=context.message_paths, code_paths=context.code_paths
    )
    return ("rejected", None, code or f"HTTP_{status}", message)


# --- OData $batch (Dynamics 365, SAP Business One) -------------------------------------------------

_STATUS_LINE = re.compile(rb"^HTTP/\d(?:\.\d)?\s+(\d{3})")


def _odata_batch(
    session: Session,
    spec: ODataBatchUpsert,
    object_name: str,
    id_field: str,
    batch: list[dict[str, Any]],
    keys: list[str],
    context: ErrorContext,
) -> list[_Outcome]:
    boundary = f"batch_{uuid.uuid4()}"
    base_path = httpx.URL(session.token().api_base_url).path.rstrip("/")
    names = {"object": object_name, "id_field": id_field}
    query = urlencode({k: v.format(**names) for k, v in spec.item_params.items()}, safe="$,()'")
    item_headers = "".join(f"{k}: {v.format(**names)}\r\n" for k, v in spec.item_headers.items())
    parts: list[bytes] = []
    for record, key in zip(batch, keys, strict=True):
        path = _path(spec.item_path, object_name, id_field, key)
        target = path if path.startswith(base_path + "/") or not base_path else base_path + path
        if query:
            target = f"{target}?{query}"
        payload = json.dumps({k: v for k, v in record.items()}, ensure_ascii=False).encode("utf-8")
        parts.append(
            f"--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
            f"{spec.item_method} {target} HTTP/1.1\r\nContent-Type: application/json\r\n"
            f"Accept: application/json\r\n{item_headers}\r\n".encode()
            + payload
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    headers = {"Prefer": "odata.continue-on-error"}
    if spec.odata_version == 4:
        headers.update({"OData-Version": "4.0", "OData-MaxVersion": "4.0"})
    request = PageRequest(url=_path(spec.path, object_name, id_field), headers=headers)
    response = session.send(
        "POST",
        request,
        context=context,
        content=body,
        content_type=f"multipart/mixed; boundary={boundary}",
        accept="multipart/mixed",
    )
    answers = _parse_multipart(response)
    outcomes: list[_Outcome] = []
    for position in range(len(batch)):
        if position >= len(answers):
            outcomes.append(_NO_RESULT)
            continue
        status, part_headers, content = answers[position]
        parsed: Any = {}
        if content.strip():
            try:
                parsed = decode_json(content)
            except (ValueError, UnicodeDecodeError):
                parsed = content
        outcome = _outcome_of(status, parsed, False, None, context)
        if outcome[0] != "rejected":
            record_id = _found(parsed, spec.id_path) if spec.id_path and isinstance(parsed, dict) else None
            if record_id is None:
                entity = part_headers.get("odata-entityid") or part_headers.get("location") or ""
                found = re.search(r"\(([^()]*)\)\s*$", entity)
                record_id = (
                    found.group(1).strip("'")
                    if found
                    else _found(parsed, "id")
                    if isinstance(parsed, dict)
                    else None
                )
            outcome = (outcome[0], record_id, None, None)
        outcomes.append(outcome)
    return outcomes


def _parse_multipart(response: httpx.Response) -> list[tuple[int, dict[str, str], bytes]]:
    """The (status, headers, body) of each HTTP response inside a multipart ``$batch`` answer.

    A changeset nested in the answer (multipart inside multipart) is flattened in order.
    """
    content_type = response.headers.get("content-type", "")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + response.content
    )
    out: list[tuple[int, dict[str, str], bytes]] = []

    def walk(part: Any) -> None:
        if part.is_multipart():
            for child in part.iter_parts():
                walk(child)
            return
        raw = part.get_payload(decode=True) or b""
        head, _, rest = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
        lines = head.split(b"\n")
        status = _STATUS_LINE.match(lines[0] if lines else b"")
        if status is None:
            return
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.decode("latin-1").partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        out.append((int(status.group(1)), headers, rest))

    walk(message)
    return out


# --- JSON sub-requests (SugarCRM /bulk) ------------------------------------------------------------


def _subrequests(
    session: Session,
    spec: SubrequestsUpsert,
    object_name: str,
    id_field: str,
    batch: list[dict[str, Any]],
    keys: list[str],
    context: ErrorContext,
) -> list[_Outcome]:
    items = []
    for position, (record, key) in enumerate(zip(batch, keys, strict=True)):
        data = json.dumps(record, ensure_ascii=False) if spec.item.body_as_string else record
        item: dict[str, Any] = {
            "method": spec.item.method,
            "url": _path(spec.item.url, object_name, id_field, key),
            spec.item.body_key: data,
        }
        if spec.item.id_key:
            item[spec.item.id_key] = str(position)
        items.append(item)
    request = PageRequest(url=_path(spec.path, object_name, id_field))
    answer = session.post_json(request, {spec.envelope: items}, context=context)
    responses = resolve_path(answer, spec.responses_path)
    responses = responses if isinstance(responses, list) else []
    if spec.item.id_key:
        # Answers may come in any order when they carry the request id (OData JSON batches).
        by_id = {str(r.get(spec.item.id_key)): r for r in responses if isinstance(r, dict)}
        responses = [by_id.get(str(position)) for position in range(len(batch))]
    outcomes: list[_Outcome] = []
    for position in range(len(batch)):
        entry = responses[position] if position < len(responses) else None
        if not isinstance(entry, dict):
            outcomes.append(_NO_RESULT)
            continue
        try:
            status = int(str(resolve_path(entry, spec.status_path)))
        except ValueError:
            outcomes.append(_NO_RESULT)
            continue
        body = resolve_path(entry, spec.body_path)
        if isinstance(body, str):
            with contextlib.suppress(ValueError):
                body = decode_json(body.encode("utf-8"))
        outcomes.append(_outcome_of(status, None if body is MISSING else body, False, spec.id_path, context))
    return outcomes


# --- one request per record (Pipedrive, Infor CRM, Sage CRM, SAP Business One) --------------------


def _per_record(
    session: Session,
    spec: PerRecordUpsert,
    object_name: str,
    id_field: str,
    batch: list[dict[str, Any]],
    keys: list[str],
    context: ErrorContext,
) -> list[_Outcome]:
    def one(record: dict[str, Any], key: str) -> _Outcome:
        try:
            return _upsert_one(session, spec, object_name, id_field, record, key, context)
        except AuthenticationError:
            raise
        except ApiRequestError as exc:
            if exc.status is not None and 400 <= exc.status < 500:
                return ("rejected", None, exc.code or f"HTTP_{exc.status}", exc.detail)
            raise

    with ThreadPoolExecutor(
        max_workers=spec.concurrency, thread_name_prefix=f"{context.system_name}-writes"
    ) as pool:
        return list(pool.map(one, batch, keys))


def _confirmed_match(
    session: Session,
    lookup: LookupSpec,
    object_name: str,
    id_field: str,
    key: str,
    matches: list[Any],
    context: ErrorContext,
) -> str | None:
    """The id of the first match that carries ``key``: a search can match on another field (Pipedrive's
    exact_match on custom_fields matches any of them), so with ``confirm`` each match is checked."""
    confirm = lookup.confirm
    for match in matches if confirm is not None else matches[:1]:
        candidate = _found(match, lookup.id_path)
        if confirm is None:
            return candidate
        if candidate is None:
            continue
        record: Any = match
        if confirm.path is not None:
            request = PageRequest(url=_path(confirm.path, object_name, id_field, key, candidate))
            try:
                record = resolve_path(session.get_json(request, context=context), confirm.record_path)
            except ApiRequestError as exc:
                if exc.status == 404:  # deleted since the search indexed it
                    continue
                raise
        if _found(record, confirm.value_path.replace("{id_field}", id_field)) == key:
            return candidate
    return None


def _upsert_one(
    session: Session,
    spec: PerRecordUpsert,
    object_name: str,
    id_field: str,
    record: dict[str, Any],
    key: str,
    context: ErrorContext,
) -> _Outcome:
    found_id: str | None = None
    if spec.lookup is not None:
        lookup = spec.lookup
        values = {"object": object_name, "id_field": id_field, "key": key.replace("'", "''")}
        request = PageRequest(
            url=_path(lookup.path, object_name, id_field, key),
            params={k: v.format(**values) for k, v in lookup.params.items()},
        )
        matches = resolve_path(session.get_json(request, context=context), lookup.records_path)
        if isinstance(matches, list):
            found_id = _confirmed_match(session, lookup, object_name, id_field, key, matches, context)
    creating = spec.lookup is not None and found_id is None
    status, parsed = _send_record(
        session, spec, object_name, id_field, record, key, found_id, creating, context
    )
    if not creating and spec.on_missing == "create" and status in spec.missing_statuses:
        # The update by key found nothing: the record is new.
        creating = True
        status, parsed = _send_record(session, spec, object_name, id_field, record, key, None, True, context)
    outcome = _outcome_of(
        status,
        parsed if parsed is not None else {},
        creating,
        spec.created_id_path if creating else None,
        context,
    )
    if outcome[0] != "rejected" and outcome[1] is None:
        outcome = (outcome[0], found_id, None, None)
    return outcome


def _send_record(
    session: Session,
    spec: PerRecordUpsert,
    object_name: str,
    id_field: str,
    record: dict[str, Any],
    key: str,
    found_id: str | None,
    creating: bool,
    context: ErrorContext,
) -> tuple[int, Any]:
    """Send one record's create or update; the status and the decoded answer (None when empty)."""
    target = spec.create if creating else spec.update
    assert target is not None  # validated: a lookup or on_missing 'create' comes with `create`
    body: Any = {target.wrap: record} if target.wrap else record
    request = PageRequest(url=_path(target.path, object_name, id_field, key, found_id or ""))
    response = session.send(target.method, request, context=context, json_body=body, raise_errors=False)
    parsed: Any = None
    if response.content:
        try:
            parsed = decode_json(response.content)
        except (ValueError, UnicodeDecodeError):
            parsed = None
    if response.status_code >= 500:
        _raise_for(response, context)
    return response.status_code, parsed
