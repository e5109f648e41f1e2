"""Updates of items that live in a collection inside a parent entity (SAP Business One ContactEmployees).

Some objects are no entity set of their own: a SAP Business One contact person is a line of its
business partner's ``ContactEmployees`` collection, read flat through ``$crossjoin`` but written by
updating the partner. ``PATCH /b1s/v1/BusinessPartners('C20000')`` with ``{"ContactEmployees":
[{"InternalCode": 7, "E_Mail": "..."}]}`` changes contact 7 and leaves the partner's other contacts
as they are (the Service Layer replaces a collection on PATCH only when asked to with
``B1S-ReplaceCollectionsOnPatch: true``). One request per item, because a parent answers for its
whole collection: a bad item must not sink its siblings.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal
from urllib.parse import quote

from pydantic import Field, field_validator

from crm_pipelines.connectors.limits import ApiRequestError, AuthenticationError
from crm_pipelines.connectors.paging import PageRequest
from crm_pipelines.connectors.paths import MISSING, resolve_path
from crm_pipelines.connectors.session import Session, decode_json, render_value
from crm_pipelines.connectors.spec_base import check_template
from crm_pipelines.connectors.writes.base import (
    UPSERT_STYLES,
    Batch,
    Outcome,
    UpsertModel,
    outcome_of,
    raise_for,
)

__all__ = ["CollectionItemUpdate"]

# The code of an item whose record does not say which parent holds it: nothing was sent.
PARENT_MISSING = "PARENT_KEY_MISSING"


@UPSERT_STYLES.register("collection_item")
class CollectionItemUpdate(UpsertModel):
    """Update an item of a parent's collection by sending the parent with that one item in it."""

    style: Literal["collection_item"] = "collection_item"
    path: str = Field(description="The parent's path; {parent} is its key (quoted as in an OData key).")
    method: Literal["PATCH", "PUT"] = "PATCH"
    collection: str = Field(description="The collection property of the parent, e.g. ContactEmployees.")
    record_path: str = Field(
        default="",
        description=(
            "Where the item's fields sit in a record: the member an extract reads them from "
            "(BusinessPartners/ContactEmployees), as a nested object or as keys prefixed with it and "
            "a dot; '' = the record itself. Fields outside it belong to the parent and are not sent."
        ),
    )
    item_key: str = Field(description="The item's key inside the collection, e.g. InternalCode.")
    integer_key: bool = Field(
        default=False,
        description="Send the item key as a JSON number (an Edm.Int32 key such as InternalCode).",
    )
    parent_field: str = Field(description="The item field naming its parent, e.g. CardCode; never sent.")
    concurrency: int = Field(default=1, ge=1, le=16)

    @field_validator("path")
    @classmethod
    def _path_template(cls, value: str) -> str:
        return check_template(value, frozenset({"object", "parent"}))

    def carried_fields(self) -> list[str]:
        return [self.parent_field]

    def upsert_batch(self, session: Session, batch: Batch) -> list[Outcome]:
        """One request per item, ``concurrency`` at a time; a 4xx is that item's rejection."""

        def one(record: dict[str, Any]) -> Outcome:
            try:
                return self._update_one(session, batch, record)
            except AuthenticationError:
                raise
            except ApiRequestError as exc:
                if exc.status is not None and 400 <= exc.status < 500:
                    return ("rejected", None, exc.code or f"HTTP_{exc.status}", exc.detail)
                raise

        with ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix=f"{batch.context.system_name}-writes"
        ) as pool:
            return list(pool.map(one, batch.records))

    def item_of(self, record: dict[str, Any]) -> dict[str, Any]:
        """The item's own fields in a record (nested under ``record_path`` or prefixed with it)."""
        if not self.record_path:
            return dict(record)
        nested = record.get(self.record_path)
        item = dict(nested) if isinstance(nested, dict) else {}
        prefix = self.record_path + "."
        item.update({k[len(prefix) :]: v for k, v in record.items() if k.startswith(prefix)})
        return item

    def _update_one(self, session: Session, batch: Batch, record: dict[str, Any]) -> Outcome:
        item = self.item_of(record)
        parent = item.pop(self.parent_field, MISSING)
        parent_key = render_value(parent) if parent is not MISSING else None
        key = resolve_path(item, self.item_key)
        if key is not MISSING and self.integer_key and str(key).lstrip("-").isdigit():
            item[self.item_key] = int(str(key))
        if not parent_key:
            return (
                "rejected",
                None,
                PARENT_MISSING,
                f"{batch.context.where}: the record carries no {self.parent_field} (the parent holding "
                f"item {render_value(key) if key is not MISSING else '?'}); nothing was sent",
            )
        odata_key = quote(parent_key.replace("'", "''"), safe="'")
        request = PageRequest(url=self.path.format(object=batch.object_name, parent=odata_key))
        response = session.send(
            self.method,
            request,
            context=batch.context,
            json_body={self.collection: [item]},
            raise_errors=False,
        )
        if response.status_code >= 500:
            raise_for(response, batch.context)
        parsed: Any = {}
        if response.content:
            try:
                parsed = decode_json(response.content)
            except (ValueError, UnicodeDecodeError):
                parsed = response.content
        status, _, code, reason = outcome_of(response.status_code, parsed, False, None, batch.context)
        record_id = render_value(key) if key is not MISSING else None
        return (status, record_id if status != "rejected" else None, code, reason)
