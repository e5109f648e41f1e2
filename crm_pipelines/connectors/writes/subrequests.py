"""A JSON batch of sub-requests, one response each (SugarCRM ``/bulk``, Creatio's JSON ``$batch``)."""

from __future__ import annotations

import contextlib
import json
from typing import Any, Literal

from pydantic import Field

from crm_pipelines.connectors.paging import PageRequest
from crm_pipelines.connectors.paths import MISSING, resolve_path
from crm_pipelines.connectors.session import Session, decode_json
from crm_pipelines.connectors.spec_base import SpecModel
from crm_pipelines.connectors.writes.base import (
    NO_RESULT,
    UPSERT_STYLES,
    Batch,
    Outcome,
    UpsertModel,
    outcome_of,
    upsert_path,
)

__all__ = ["SubrequestItem", "SubrequestsUpsert"]


class SubrequestItem(SpecModel):
    method: Literal["POST", "PUT", "PATCH"]
    url: str = Field(description="Sub-request URL template: {object}, {id_field}, {key}.")
    body_key: str = "body"
    body_as_string: bool = Field(default=False, description="The body travels as a JSON string (SugarCRM).")
    id_key: str | None = Field(
        default=None, description="Key carrying a request id, when the batch wants one."
    )


@UPSERT_STYLES.register("subrequests")
class SubrequestsUpsert(UpsertModel):
    """A JSON batch of sub-requests answered one response each (SugarCRM ``/bulk``)."""

    style: Literal["subrequests"] = "subrequests"
    envelope: str = "requests"
    headers: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Headers of the batch request itself, e.g. Creatio's Prefer: continue-on-error (without "
            "it a JSON $batch stops at the first failing request)."
        ),
    )
    item: SubrequestItem
    responses_path: str = Field(default="", description="Where the responses list sits ('' = the body).")
    status_path: str = "status"
    body_path: str = "body"
    id_path: str = Field(default="id", description="The record id in a sub-response body.")

    def upsert_batch(self, session: Session, batch: Batch) -> list[Outcome]:
        """One batch of sub-requests; each response is the outcome of its record."""
        items = []
        for position, (record, key) in enumerate(zip(batch.records, batch.keys, strict=True)):
            data = json.dumps(record, ensure_ascii=False) if self.item.body_as_string else record
            item: dict[str, Any] = {
                "method": self.item.method,
                "url": upsert_path(self.item.url, batch.object_name, batch.id_field, key),
                self.item.body_key: data,
            }
            if self.item.id_key:
                item[self.item.id_key] = str(position)
            items.append(item)
        request = PageRequest(
            url=upsert_path(self.path, batch.object_name, batch.id_field), headers=self.headers
        )
        answer = session.post_json(request, {self.envelope: items}, context=batch.context)
        responses = resolve_path(answer, self.responses_path)
        responses = responses if isinstance(responses, list) else []
        if self.item.id_key:
            # Answers may come in any order when they carry the request id (OData JSON batches).
            by_id = {str(r.get(self.item.id_key)): r for r in responses if isinstance(r, dict)}
            responses = [by_id.get(str(position)) for position in range(len(batch.records))]
        outcomes: list[Outcome] = []
        for position in range(len(batch.records)):
            entry = responses[position] if position < len(responses) else None
            if not isinstance(entry, dict):
                outcomes.append(NO_RESULT)
                continue
            try:
                status = int(str(resolve_path(entry, self.status_path)))
            except ValueError:
                outcomes.append(NO_RESULT)
                continue
            body = resolve_path(entry, self.body_path)
            if isinstance(body, str):
                with contextlib.suppress(ValueError):
                    body = decode_json(body.encode("utf-8"))
            outcomes.append(
                outcome_of(status, None if body is MISSING else body, False, self.id_path, batch.context)
            )
        return outcomes
