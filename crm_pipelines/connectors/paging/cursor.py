"""An opaque cursor in the body, sent back as a query parameter (HubSpot ``after``, Zoho ``page_token``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

from pydantic import Field

from crm_pipelines.connectors.paging.base import PAGING_KINDS, PageRequest, Paginator, PagingModel
from crm_pipelines.connectors.paths import MISSING, resolve_path

__all__ = ["CursorPaginator", "CursorPaging"]


@PAGING_KINDS.register("cursor")
class CursorPaging(PagingModel):
    """The response carries an opaque cursor sent back as a query parameter (HubSpot ``after``)."""

    kind: Literal["cursor"] = "cursor"
    cursor_path: str = Field(description="Dotted path of the next cursor in the response body.")
    cursor_param: str = Field(description="Query parameter that carries the cursor.")
    more_path: str | None = Field(default=None, description="Dotted path of a boolean 'more pages follow'.")
    stop_values: list[str] = Field(
        default_factory=list, description="Cursor values meaning 'no more pages' (SugarCRM next_offset -1)."
    )
    chain_limit: int | None = Field(
        default=None,
        gt=0,
        description=(
            "Records one chain of cursors reaches (Zoho page_token: 100,000). Before the next page "
            "would pass it, the read starts a new chain from the highest incremental cursor read so "
            "far; needs a request ordered ascending by the cursor (incremental.server_order) whose "
            "lower bound is in the request ({since} or {where})."
        ),
    )

    def paginator(self) -> CursorPaginator:
        return CursorPaginator(self)


class CursorPaginator(Paginator[CursorPaging]):
    """Send the cursor found in the body back as a query parameter until there is none.

    ``more_path`` (Zoho ``info.more_records``) stops on false; ``stop_values`` are cursors meaning
    "done" (SugarCRM answers ``next_offset: -1`` on the last page).
    """

    def __init__(self, spec: CursorPaging) -> None:
        super().__init__(spec)
        self.stop_values = frozenset(spec.stop_values)

    def next_request(
        self, *, previous: PageRequest, body: Any, records: Sequence[Any], page_size: int
    ) -> PageRequest | None:
        if self.spec.more_path is not None and resolve_path(body, self.spec.more_path) is not True:
            return None
        cursor = resolve_path(body, self.spec.cursor_path)
        if cursor is MISSING or cursor is None or cursor == "" or str(cursor) in self.stop_values:
            return None
        return replace(previous, params={**previous.params, self.spec.cursor_param: str(cursor)})
