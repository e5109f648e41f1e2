"""A JSON batch of sub-requests, one response each (SugarCRM ``/bulk``, Creatio's JSON ``$batch``)."""

from __future__ import annotations

import contextlib
import json
from typing import Any, Literal

from pydantic import Field

from crm_pipelines.connectors.limits import ErrorContext
from crm_pipelines.connectors.paging import PageRequest
from crm_pipelines.connectors.paths import MISSING, resolve_path
from crm_pipelines.connectors.session import Session, decode_json
from crm_pipelines.connectors.spec_base import SpecModel
from crm_pipelines.connectors.writes.base import (
    NO_RESULT,
    UPSERT_STYLES,
    Outcome,
    UpsertModel,
    outcome_of,
    upsert_path,
)

__all__ = ["SubrequestItem", "SubrequestsUpsert", "subrequests"]


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
    item: SubrequestItem
    responses_path: str = Field(default="", description="Where the responses list sits ('' = the body).")
    status_path: str = "status"
    body_path: str = "body"
    id_path: str = Field(default="id", description="The record id in a sub-response body.")

    def upsert_batch(
        self,
        session: Session,
        *,
        object_name: str,
        id_field: str,
        batch: list[dict[str, Any]],
        keys: list[str],
        context: ErrorContext,
    ) -> list[Outcome]:
        return subrequests(session, self, object_name, id_field, batch, keys, context)


def subrequests(
    session: Session,
    spec: SubrequestsUpsert,
    object_name: str,
    id_field: str,
    batch: list[dict[str, Any]],
    keys: list[str],
    context: ErrorContext,
) -> list[Outcome]:
    """One batch of sub-requests; each response is the outcome of its record."""
    items = []
    for position, (record, key) in enumerate(zip(batch, keys, strict=True)):
        data = json.dumps(record, ensure_ascii=False) if spec.item.body_as_string else record
        item: dict[str, Any] = {
            "method": spec.item.method,
            "url": upsert_path(spec.item.url, object_name, id_field, key),
            spec.item.body_key: data,
        }
        if spec.item.id_key:
            item[spec.item.id_key] = str(position)
        items.append(item)
    request = PageRequest(url=upsert_path(spec.path, object_name, id_field))
    answer = session.post_json(request, {spec.envelope: items}, context=context)
    responses = resolve_path(answer, spec.responses_path)
    responses = responses if isinstance(responses, list) else []
    if spec.item.id_key:
        # Answers may come in any order when they carry the request id (OData JSON batches).
        by_id = {str(r.get(spec.item.id_key)): r for r in responses if isinstance(r, dict)}
        responses = [by_id.get(str(position)) for position in range(len(batch))]
    outcomes: list[Outcome] = []
    for position in range(len(batch)):
        entry = responses[position] if position < len(responses) else None
        if not isinstance(entry, dict):
            outcomes.append(NO_RESULT)
            continue
        try:
            status = int(str(resolve_path(entry, spec.status_path)))
        except ValueError:
            outcomes.append(NO_RESULT)
            continue
        body = resolve_path(entry, spec.body_path)
        if isinstance(body, str):
            with contextlib.suppress(ValueError):
                body = decode_json(body.encode("utf-8"))
        outcomes.append(outcome_of(status, None if body is MISSING else body, False, spec.id_path, context))
    return outcomes
