"""One JSON request per batch answered by per-record results in order (Zoho ``/{module}/upsert``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from crm_pipelines.connectors.paging import PageRequest
from crm_pipelines.connectors.paths import resolve_path
from crm_pipelines.connectors.session import Session, decode_json
from crm_pipelines.connectors.spec_base import ValueMatch, value_matches
from crm_pipelines.connectors.writes.base import (
    NO_RESULT,
    UPSERT_STYLES,
    Batch,
    Outcome,
    UpsertModel,
    raise_for,
    text_at,
    upsert_path,
)

__all__ = ["JsonBatchUpsert"]


@UPSERT_STYLES.register("json_batch")
class JsonBatchUpsert(UpsertModel):
    """One JSON request per batch whose answer lists one result per record, in order (Zoho upsert)."""

    style: Literal["json_batch"] = "json_batch"
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    body: dict[str, Any] = Field(
        description='Body template: the string "{records}" becomes the list, "{id_field}" the field name.'
    )
    results_path: str
    success: ValueMatch
    created: ValueMatch | None = None
    id_path: str
    error_code_path: str
    error_message_path: str

    def upsert_batch(self, session: Session, batch: Batch) -> list[Outcome]:
        """One JSON request for the batch; its answer lists one result per record, in order."""
        request = PageRequest(url=upsert_path(self.path, batch.object_name, batch.id_field))
        response = session.send(
            self.method,
            request,
            context=batch.context,
            json_body=_fill_body(self.body, batch.records, batch.id_field),
            raise_errors=False,
        )
        results = None
        if response.content:
            try:
                results = resolve_path(decode_json(response.content), self.results_path)
            except (ValueError, UnicodeDecodeError):
                results = None
        if not isinstance(results, list) or len(results) != len(batch.records):
            # No per-record answer: a refusal of the whole batch (split on 400) or an API failure.
            raise_for(response, batch.context)
            results = results if isinstance(results, list) else []
        outcomes: list[Outcome] = []
        for position in range(len(batch.records)):
            item = results[position] if position < len(results) else None
            if not isinstance(item, dict):
                outcomes.append(NO_RESULT)
            elif value_matches(item, self.success):
                created = self.created is not None and value_matches(item, self.created)
                outcomes.append(
                    ("created" if created else "updated", text_at(item, self.id_path), None, None)
                )
            else:
                outcomes.append(
                    (
                        "rejected",
                        None,
                        text_at(item, self.error_code_path),
                        text_at(item, self.error_message_path),
                    )
                )
        return outcomes


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
