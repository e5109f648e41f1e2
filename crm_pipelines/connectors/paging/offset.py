"""``offset``/``limit`` query parameters; stops on a short page or at the reported total."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

from pydantic import Field

from crm_pipelines.connectors.paging.base import PageRequest, Paginator, as_int
from crm_pipelines.connectors.paths import resolve_path
from crm_pipelines.connectors.spec_base import SpecModel

__all__ = ["OffsetPaginator", "OffsetPaging"]


class OffsetPaging(SpecModel):
    """``offset``/``limit`` query parameters; stops on a short page or at the reported total."""

    kind: Literal["offset"]
    offset_param: str = "offset"
    limit_param: str = "limit"
    start: int = Field(default=0, description="The first offset (1 for SData's 1-based startIndex).")
    total_path: str | None = None
    concurrency: int = Field(default=1, ge=1, le=16, description="Page requests kept in flight.")


class OffsetPaginator(Paginator):
    """``offset``/``limit`` parameters; the offset advances by the records actually received."""

    def __init__(
        self,
        *,
        offset_param: str = "offset",
        limit_param: str = "limit",
        start: int = 0,
        total_path: str | None = None,
    ) -> None:
        self.offset_param = offset_param
        self.limit_param = limit_param
        self.start = start
        self.total_path = total_path

    def first_request(self, *, request: PageRequest, page_size: int) -> PageRequest:
        params = {**request.params, self.offset_param: str(self.start), self.limit_param: str(page_size)}
        return replace(request, params=params)

    def next_request(
        self, *, previous: PageRequest, body: Any, records: Sequence[Any], page_size: int
    ) -> PageRequest | None:
        offset = int(previous.params.get(self.offset_param, self.start))
        received = len(records)
        if received == 0:
            return None
        next_offset = offset + received
        total = as_int(resolve_path(body, self.total_path)) if self.total_path else None
        if total is not None:
            # Offsets count from `start` (SData's startIndex is 1-based): records read so far are
            # next_offset - start, and only when those reach the total is the list done.
            if next_offset - self.start >= total:
                return None
        elif received < page_size:
            return None
        return replace(previous, params={**previous.params, self.offset_param: str(next_offset)})
