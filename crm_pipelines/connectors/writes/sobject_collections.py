"""Salesforce sObject Collections upsert by external id, ``allOrNone: false``."""

from __future__ import annotations

from typing import Any, Literal

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

__all__ = ["SObjectCollectionsUpsert"]


@UPSERT_STYLES.register("sobject_collections")
class SObjectCollectionsUpsert(UpsertModel):
    """Salesforce ``PATCH .../composite/sobjects/{SObject}/{ExternalIdField}``, ``allOrNone: false``."""

    style: Literal["sobject_collections"] = "sobject_collections"

    def upsert_batch(self, session: Session, batch: Batch) -> list[Outcome]:
        """One sObject Collections PATCH for the batch; its answer lists one result per record, in order."""
        body: Any = {
            "allOrNone": False,
            "records": [{"attributes": {"type": batch.object_name}, **record} for record in batch.records],
        }
        request = PageRequest(url=upsert_path(self.path, batch.object_name, batch.id_field))
        answer = session.post_json(request, body, context=batch.context, method="PATCH")
        outcomes: list[Outcome] = []
        rows = answer if isinstance(answer, list) else []
        for position in range(len(batch.records)):
            row = rows[position] if position < len(rows) and isinstance(rows[position], dict) else None
            if row is None:
                outcomes.append(NO_RESULT)
            elif row.get("success") is True:
                outcomes.append(
                    ("created" if row.get("created") else "updated", render_value(row.get("id")), None, None)
                )
            else:
                errors = row.get("errors") or [{}]
                first = errors[0] if isinstance(errors[0], dict) else {}
                outcomes.append(
                    (
                        "rejected",
                        None,
                        render_value(first.get("statusCode")),
                        render_value(first.get("message")),
                    )
                )
        return outcomes
