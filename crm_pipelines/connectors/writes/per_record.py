"""One request per record: after a lookup by external id, or an update by key that may become a create."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from pydantic import Field, model_validator

from crm_pipelines.connectors.limits import ApiRequestError, AuthenticationError, ErrorContext
from crm_pipelines.connectors.paging import PageRequest
from crm_pipelines.connectors.paths import resolve_path
from crm_pipelines.connectors.session import Session, decode_json
from crm_pipelines.connectors.spec_base import SpecModel
from crm_pipelines.connectors.writes.base import (
    UPSERT_STYLES,
    Batch,
    Outcome,
    UpsertModel,
    outcome_of,
    raise_for,
    text_at,
    upsert_path,
)

__all__ = ["ConfirmSpec", "LookupSpec", "PerRecordUpsert", "RecordRequest", "confirmed_match"]


class RecordRequest(SpecModel):
    method: Literal["POST", "PUT", "PATCH"]
    path: str = Field(description="Template: {object}, {id_field}, {key}, and {id} (the looked-up id).")
    wrap: str | None = Field(default=None, description="Key the record is wrapped in, if the API wants one.")


class ConfirmSpec(SpecModel):
    """Check that a lookup's match really carries the external id (a search may match other fields)."""

    path: str | None = Field(
        default=None,
        description="GET path of the match ({id}: its id, {object}); absent: the match itself is checked.",
    )
    record_path: str = Field(default="", description="Where the record sits in that answer ('' = the body).")
    value_path: str = Field(
        default="{id_field}",
        description="Path of the external id in the record; {id_field} is the external id field's path.",
    )


class LookupSpec(SpecModel):
    """Find a record's system id by its external id."""

    path: str
    params: dict[str, str] = Field(
        default_factory=dict, description="Templates: {id_field}, {key}, {object}."
    )
    records_path: str = Field(description="Where the matches sit in the answer.")
    id_path: str = Field(description="The system id in a match.")
    confirm: ConfirmSpec | None = Field(
        default=None,
        description=(
            "Check each match for the external id before taking it (Pipedrive's search matches the "
            "term in any custom field); absent: the first match is taken."
        ),
    )


@UPSERT_STYLES.register("per_record")
class PerRecordUpsert(UpsertModel):
    """One request per record, after a lookup by external id where the system cannot upsert by it."""

    style: Literal["per_record"] = "per_record"
    path: str = "/"  # unused: the requests below carry their paths
    lookup: LookupSpec | None = Field(default=None, description="Absent: `update` upserts by key itself.")
    create: RecordRequest | None = None
    update: RecordRequest
    created_id_path: str | None = Field(default=None, description="The new record's id in a create answer.")
    concurrency: int = Field(default=4, ge=1, le=16)
    on_missing: Literal["reject", "create"] = Field(
        default="reject",
        description=(
            "Without a lookup, what an `update` answered with one of `missing_statuses` means: reject "
            "the record, or create it with `create` (SAP Business One: PATCH by CardCode, POST on "
            "404), which saves the lookup request of every record that exists."
        ),
    )
    missing_statuses: list[int] = Field(
        default_factory=lambda: [404], description="Statuses of an `update` meaning 'no such record'."
    )
    id_in_body: bool = Field(
        default=True,
        description=(
            "Send the id field in the body too. False: it is left out (an update by the record id "
            "names the record in the path; Pipedrive v2 refuses `id` as an unknown parameter)."
        ),
    )

    @model_validator(mode="after")
    def _complete(self) -> PerRecordUpsert:
        if self.lookup is not None and self.create is None:
            raise ValueError("per_record with a lookup needs 'create' for records not found")
        if self.on_missing == "create":
            if self.lookup is not None:
                raise ValueError("on_missing 'create' replaces the lookup; declare one or the other")
            if self.create is None:
                raise ValueError("on_missing 'create' needs 'create'")
        return self

    def upsert_batch(self, session: Session, batch: Batch) -> list[Outcome]:
        """One upsert per record, ``concurrency`` at a time; a 4xx is that record's rejection."""

        def one(record: dict[str, Any], key: str) -> Outcome:
            try:
                return _upsert_one(
                    session, self, batch.object_name, batch.id_field, record, key, batch.context
                )
            except AuthenticationError:
                raise
            except ApiRequestError as exc:
                if exc.status is not None and 400 <= exc.status < 500:
                    return ("rejected", None, exc.code or f"HTTP_{exc.status}", exc.detail)
                raise

        with ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix=f"{batch.context.system_name}-writes"
        ) as pool:
            return list(pool.map(one, batch.records, batch.keys))


def confirmed_match(
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
        candidate = text_at(match, lookup.id_path)
        if confirm is None:
            return candidate
        if candidate is None:
            continue
        record: Any = match
        if confirm.path is not None:
            request = PageRequest(url=upsert_path(confirm.path, object_name, id_field, key, candidate))
            try:
                record = resolve_path(session.get_json(request, context=context), confirm.record_path)
            except ApiRequestError as exc:
                if exc.status == 404:  # deleted since the search indexed it
                    continue
                raise
        if text_at(record, confirm.value_path.replace("{id_field}", id_field)) == key:
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
) -> Outcome:
    found_id: str | None = None
    if spec.lookup is not None:
        lookup = spec.lookup
        values = {"object": object_name, "id_field": id_field, "key": key.replace("'", "''")}
        request = PageRequest(
            url=upsert_path(lookup.path, object_name, id_field, key),
            params={k: v.format(**values) for k, v in lookup.params.items()},
        )
        matches = resolve_path(session.get_json(request, context=context), lookup.records_path)
        if isinstance(matches, list):
            found_id = confirmed_match(session, lookup, object_name, id_field, key, matches, context)
    creating = spec.lookup is not None and found_id is None
    status, parsed = _send_record(
        session, spec, object_name, id_field, record, key, found_id, creating, context
    )
    if not creating and spec.on_missing == "create" and status in spec.missing_statuses:
        # The update by key found nothing: the record is new.
        creating = True
        status, parsed = _send_record(session, spec, object_name, id_field, record, key, None, True, context)
    outcome = outcome_of(
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
    if not spec.id_in_body:
        record = {k: v for k, v in record.items() if k != id_field}
    body: Any = {target.wrap: record} if target.wrap else record
    request = PageRequest(url=upsert_path(target.path, object_name, id_field, key, found_id or ""))
    response = session.send(target.method, request, context=context, json_body=body, raise_errors=False)
    parsed: Any = None
    if response.content:
        try:
            parsed = decode_json(response.content)
        except (ValueError, UnicodeDecodeError):
            parsed = None
    if response.status_code >= 500:
        raise_for(response, context)
    return response.status_code, parsed
