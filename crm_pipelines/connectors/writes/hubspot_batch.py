"""HubSpot batch writes: upsert by ``idProperty``, or update by record id; results matched back by key."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from crm_pipelines.connectors.paging import PageRequest
from crm_pipelines.connectors.paths import MISSING, resolve_path
from crm_pipelines.connectors.session import Session, render_value
from crm_pipelines.connectors.spec_base import SpecModel
from crm_pipelines.connectors.writes.base import (
    NO_RESULT,
    UPSERT_STYLES,
    Batch,
    Outcome,
    UpsertModel,
    upsert_path,
)

__all__ = ["HubSpotAssociation", "HubSpotBatchUpsert"]


class HubSpotAssociation(SpecModel):
    """A field written as an association, not a property: the id of the record to associate with."""

    path: str = Field(
        description="The field's path, as declared (a deal's associations.companies.results.0.id)."
    )
    to: str = Field(min_length=1, description="The associated object type (companies).")
    request: str = Field(
        default="/crm/v4/associations/{object}/{to}/batch/associate/default",
        description="The v4 batch request giving each pair HubSpot's default association.",
    )


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

    associations: list[HubSpotAssociation] = Field(
        default_factory=list,
        description=(
            "Fields written as associations (batch upsert takes no associations): after the upsert, "
            "each record written with a value there is associated with that record (v4 default "
            "association); a refused association rejects the record with HubSpot's reason."
        ),
    )

    def upsert_batch(self, session: Session, batch: Batch) -> list[Outcome]:
        """One batch upsert request; results and errors matched back to the records by key."""
        # A record holds an association field nested by its path (associations.companies....).
        linked = {a.path.split(".")[0] for a in self.associations}
        inputs = [
            {
                **({"idProperty": batch.id_field} if self.id_property else {}),
                "id": key,
                "properties": {
                    k: render_value(v) for k, v in record.items() if k != batch.id_field and k not in linked
                },
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
        for association in self.associations:
            self._associate(session, batch, association, by_key)
        return [by_key.get(key, NO_RESULT) for key in batch.keys]

    def _associate(
        self, session: Session, batch: Batch, association: HubSpotAssociation, by_key: dict[str, Outcome]
    ) -> None:
        """Associate each written record with the record its association field names."""
        pairs: dict[str, tuple[str, str]] = {}  # written record id -> (key, associated id)
        for record, key in zip(batch.records, batch.keys, strict=True):
            outcome = by_key.get(key)
            value = record.get(association.path, resolve_path(record, association.path))
            other = None if value is MISSING else render_value(value)
            if outcome is not None and outcome[0] != "rejected" and outcome[1] and other:
                pairs[outcome[1]] = (key, other)
        if not pairs:
            return
        url = association.request.replace("{object}", batch.object_name).replace("{to}", association.to)
        answer = session.post_json(
            PageRequest(url=url),
            {"inputs": [{"from": {"id": i}, "to": {"id": other}} for i, (_, other) in pairs.items()]},
            context=batch.context,
        )
        for error in answer.get("errors") or []:
            for record_id in (error.get("context") or {}).get("ids") or []:
                if str(record_id) in pairs:
                    key = pairs[str(record_id)][0]
                    by_key[key] = (
                        "rejected",
                        by_key[key][1],
                        render_value(error.get("category")),
                        f"association to {association.to}: {render_value(error.get('message'))}",
                    )
