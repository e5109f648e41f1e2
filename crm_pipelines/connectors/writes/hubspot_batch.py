"""HubSpot batch writes: upsert by ``idProperty``, or update by record id; results matched back by key."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from crm_pipelines.connectors.paging import PageRequest
from crm_pipelines.connectors.session import Session, render_value
from crm_pipelines.connectors.writes.base import (
    NO_RESULT,
    UPSERT_STYLES,
    Batch,
    Outcome,
    UpsertModel,
    upsert_path,
)

__all__ = ["HubSpotBatchUpsert"]


@UPSERT_STYLES.register("hubspot_batch")
class HubSpotBatchUpsert(UpsertModel):
    """HubSpot ``POST /crm/v3/objects/{object}/batch/upsert`` with ``idProperty`` (or ``batch/update`` by id)."""

    style: Literal["hubspot_batch"] = "hubspot_batch"

    def field_key(self, path: str) -> str:
        # Records are given by property name; the style wraps them in `properties` itself.
        return path.removeprefix("properties.")

    id_property: bool = Field(
        default=True,
        description=(
            "Send the id field as each input's idProperty (an upsert by a unique property). False: "
            "inputs are addressed by the record id itself (batch/update), results matched on their id."
        ),
    )

    def upsert_batch(self, session: Session, batch: Batch) -> list[Outcome]:
        """One batch upsert request; results and errors matched back to the records by key."""
        inputs = [
            {
                **({"idProperty": batch.id_field} if self.id_property else {}),
                "id": key,
                "properties": {k: render_value(v) for k, v in record.items() if k != batch.id_field},
            }
            for record, key in zip(batch.records, batch.keys, strict=True)
        ]
        request = PageRequest(url=upsert_path(self.path, batch.object_name, batch.id_field))
        answer = session.post_json(request, {"inputs": inputs}, context=batch.context)
        by_key: dict[str, Outcome] = {}
        for result in answer.get("results") or []:
            props = result.get("properties") or {}
            key = render_value(props.get(batch.id_field) if self.id_property else result.get("id"))
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
        return [by_key.get(key, NO_RESULT) for key in batch.keys]
