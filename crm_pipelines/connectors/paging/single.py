"""One request answers everything."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from crm_pipelines.connectors.paging.base import PageRequest, Paginator
from crm_pipelines.connectors.spec_base import SpecModel

__all__ = ["SinglePaginator", "SinglePaging"]


class SinglePaging(SpecModel):
    """One request answers everything."""

    kind: Literal["single"]


class SinglePaginator(Paginator):
    """One request, no further pages."""

    def next_request(
        self, *, previous: PageRequest, body: Any, records: Sequence[Any], page_size: int
    ) -> PageRequest | None:
        return None
