"""Upserts by external id, batched the way the declared style allows, one result per record."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from crm_pipelines.connectors.auth import ConnectionSettings
from crm_pipelines.connectors.limits import (
    ApiRequestError,
    AuthenticationError,
    ErrorContext,
    check_url_allowed,
)
from crm_pipelines.connectors.session import Session, context_for, http_client
from crm_pipelines.connectors.writes.base import Batch, Outcome, UpsertModel, external_id

if TYPE_CHECKING:  # spec.py imports the write styles
    from crm_pipelines.connectors.spec import SystemSpec

__all__ = ["UpsertResult", "WriteStats", "update_records", "upsert_records"]

log = logging.getLogger(__name__)


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


@dataclass
class WriteStats:
    """What a write cost: requests sent (each retry and token request counts)."""

    requests: int = 0


def update_records(
    *,
    system: SystemSpec,
    object_name: str,
    connection: ConnectionSettings,
    records: Iterable[Mapping[str, Any]],
    stats: WriteStats | None = None,
) -> list[UpsertResult]:
    """Update existing records by their id, batched as the system allows; a result per record.

    The object's ``update`` declaration says how; each record carries the object's primary key (by
    its path in the API, e.g. ``Id``, ``id``, ``accountid``). Nothing is created: an id the system
    does not know comes back rejected with the system's code and message. Retries, batch splitting
    and the shared rate budget are those of :func:`upsert_records`.

    Args:
        system: The system declaration; the object must declare ``update``.
        object_name: A declared object.
        connection: Base URL and credentials.
        records: Field name to value per record, each with the primary key.
        stats: Filled with the requests sent.

    Returns:
        One :class:`UpsertResult` per record, in input order (``external_id`` holds the record id).
    """
    obj = system.get_object(object_name)
    if obj.update is None:
        raise ValueError(f"{system.title} {object_name} declares no update in {system.name}.yaml")
    key = obj.field(obj.primary_key)
    return _write(
        system, object_name, connection, obj.update, key.source_path, records, creates=False, stats=stats
    )


def upsert_records(
    *,
    system: SystemSpec,
    object_name: str,
    connection: ConnectionSettings,
    external_id_field: str,
    records: Iterable[Mapping[str, Any]],
    stats: WriteStats | None = None,
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
        stats: Filled with the requests sent.

    Returns:
        One :class:`UpsertResult` per record, in input order.
    """
    obj = system.get_object(object_name)
    if obj.upsert is None:
        raise ValueError(f"{system.title} {object_name} declares no upsert in {system.name}.yaml")
    return _write(
        system, object_name, connection, obj.upsert, external_id_field, records, creates=True, stats=stats
    )


def _write(
    system: SystemSpec,
    object_name: str,
    connection: ConnectionSettings,
    spec: UpsertModel,
    external_id_field: str,
    records: Iterable[Mapping[str, Any]],
    *,
    creates: bool,
    stats: WriteStats | None = None,
) -> list[UpsertResult]:
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
                    key = external_id(items[index], external_id_field)
                    if status == "rejected" and code in spec.retryable_errors and attempt < spec.max_attempts:
                        retry_next.append(index)
                        continue
                    final: Literal["created", "updated", "rejected"] = (
                        "created" if status == "created" else "updated" if status == "updated" else "rejected"
                    )
                    if final == "created" and not creates:
                        # An update that made a record: the declaration lets the system create on
                        # a missing id. Reported, never silently accepted.
                        final, code, reason = (
                            "rejected",
                            "CREATED_ON_UPDATE",
                            (
                                f"{context.where}: an update by id created record {record_id}; declare the "
                                "update so that a missing id is refused"
                            ),
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
        if stats is not None:
            stats.requests += session.requests
    missing = [i for i, r in enumerate(results) if r is None]
    assert not missing, f"upsert lost records {missing}"  # every path above sets a result
    return [r for r in results if r is not None]


def _upsert_chunk(
    session: Session,
    spec: UpsertModel,
    object_name: str,
    id_field: str,
    items: list[dict[str, Any]],
    chunk: list[int],
    context: ErrorContext,
) -> Iterator[tuple[int, Outcome]]:
    batch = [items[i] for i in chunk]
    keys = [external_id(record, id_field) for record in batch]
    try:
        # A style that sends each record on its own (per_record) answers refusals per record: no
        # 400 reaches the split below.
        outcomes = spec.upsert_batch(
            session,
            Batch(object_name=object_name, id_field=id_field, records=batch, keys=keys, context=context),
        )
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
