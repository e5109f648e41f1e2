"""One request answers everything."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from crm_pipelines.connectors.paging.base import PAGING_KINDS, PageRequest, Paginator, PagingModel

__all__ = ["SinglePaginator", "SinglePaging"]


@PAGING_KINDS.register("single")
class SinglePaging(PagingModel):
    """One request answers everything."""

    kind: Literal["single"] = "single"

    def paginator(self) -> SinglePaginator:
        return SinglePaginator(self)


class SinglePaginator(Paginator[SinglePaging]):
    """One request, no further pages."""

    def next_request(
        self, *, previous: PageRequest, body: Any, records: Sequence[Any], page_size: int
    ) -> PageRequest | None:
        return None
