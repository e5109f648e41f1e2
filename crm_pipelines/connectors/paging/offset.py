"""``offset``/``limit`` query parameters; stops on a short page or at the reported total."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

from pydantic import Field

from crm_pipelines.connectors.paging.base import (
    PAGING_KINDS,
    NumberedPaginator,
    PageRequest,
    PagingModel,
    as_int,
)
from crm_pipelines.connectors.paths import resolve_path

__all__ = ["OffsetPaginator", "OffsetPaging"]


@PAGING_KINDS.register("offset")
class OffsetPaging(PagingModel):
    """``offset``/``limit`` query parameters; stops on a short page or at the reported total."""

    kind: Literal["offset"] = "offset"
    offset_param: str = "offset"
    limit_param: str = "limit"
    start: int = Field(default=0, description="The first offset (1 for SData's 1-based startIndex).")
    total_path: str | None = None
    concurrency: int = Field(default=1, ge=1, le=16, description="Page requests kept in flight.")

    def paginator(self) -> OffsetPaginator:
        return OffsetPaginator(self)


class OffsetPaginator(NumberedPaginator[OffsetPaging]):
    """``offset``/``limit`` parameters; the offset advances by the records actually received."""

    def __init__(self, spec: OffsetPaging) -> None:
        super().__init__(spec)

    @property
    def concurrency(self) -> int:
        return self.spec.concurrency

    def nth_request(self, *, first: PageRequest, n: int, page_size: int) -> PageRequest:
        offset = int(first.params.get(self.spec.offset_param, self.spec.start)) + n * page_size
        return PageRequest(first.url, {**first.params, self.spec.offset_param: str(offset)}, first.headers)

    def page_count(self, *, body: Any, page_size: int) -> int | None:
        if not self.spec.total_path:
            return None
        try:
            total = int(str(resolve_path(body, self.spec.total_path)))
        except ValueError:
            return None
        return max(1, -(-total // page_size))

    def first_request(self, *, request: PageRequest, page_size: int) -> PageRequest:
        params = {
            **request.params,
            self.spec.offset_param: str(self.spec.start),
            self.spec.limit_param: str(page_size),
        }
        return replace(request, params=params)

    def next_request(
        self, *, previous: PageRequest, body: Any, records: Sequence[Any], page_size: int
    ) -> PageRequest | None:
        offset = int(previous.params.get(self.spec.offset_param, self.spec.start))
        received = len(records)
        if received == 0:
            return None
        next_offset = offset + received
        total = as_int(resolve_path(body, self.spec.total_path)) if self.spec.total_path else None
        if total is not None:
            # Offsets count from `start` (SData's startIndex is 1-based): records read so far are
            # next_offset - start, and only when those reach the total is the list done.
            if next_offset - self.spec.start >= total:
                return None
        elif received < page_size:
            return None
        return replace(previous, params={**previous.params, self.spec.offset_param: str(next_offset)})
