"""A page number query parameter; stops on a short page, a false "more" flag or the page count."""

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

__all__ = ["PageNumberPaginator", "PageNumberPaging"]


@PAGING_KINDS.register("page_number")
class PageNumberPaging(PagingModel):
    """A page number query parameter; stops on a short page, ``more_path`` false or the page count."""

    kind: Literal["page_number"] = "page_number"
    page_param: str = "page"
    size_param: str | None = Field(default=None, description="Query parameter for the page size, if any.")
    start: int = 1
    total_pages_path: str | None = None
    more_path: str | None = None
    concurrency: int = Field(default=1, ge=1, le=16, description="Page requests kept in flight.")

    def paginator(self) -> PageNumberPaginator:
        return PageNumberPaginator(self)


class PageNumberPaginator(NumberedPaginator[PageNumberPaging]):
    """A page number parameter starting at ``start`` (and the page size in ``size_param``, if any)."""

    def __init__(self, spec: PageNumberPaging) -> None:
        super().__init__(spec)

    @property
    def concurrency(self) -> int:
        return self.spec.concurrency

    def nth_request(self, *, first: PageRequest, n: int, page_size: int) -> PageRequest:
        page = int(first.params.get(self.spec.page_param, self.spec.start)) + n
        return PageRequest(first.url, {**first.params, self.spec.page_param: str(page)}, first.headers)

    def page_count(self, *, body: Any, page_size: int) -> int | None:
        if not self.spec.total_pages_path:
            return None
        try:
            total = int(str(resolve_path(body, self.spec.total_pages_path)))
        except ValueError:
            return None
        return max(1, total)

    def first_request(self, *, request: PageRequest, page_size: int) -> PageRequest:
        params = {**request.params, self.spec.page_param: str(self.spec.start)}
        if self.spec.size_param:
            params[self.spec.size_param] = str(page_size)
        return replace(request, params=params)

    def next_request(
        self, *, previous: PageRequest, body: Any, records: Sequence[Any], page_size: int
    ) -> PageRequest | None:
        page = int(previous.params.get(self.spec.page_param, self.spec.start))
        if not records:
            return None
        if self.spec.more_path is not None:
            if resolve_path(body, self.spec.more_path) is not True:
                return None
        else:
            total_pages = (
                as_int(resolve_path(body, self.spec.total_pages_path)) if self.spec.total_pages_path else None
            )
            if total_pages is not None:
                if page - self.spec.start + 1 >= total_pages:
                    return None
            elif len(records) < page_size:
                return None
        return replace(previous, params={**previous.params, self.spec.page_param: str(page + 1)})
