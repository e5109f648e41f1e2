"""A page number query parameter; stops on a short page, a false "more" flag or the page count."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

from pydantic import Field

from crm_pipelines.connectors.paging.base import PageRequest, Paginator, as_int
from crm_pipelines.connectors.paths import resolve_path
from crm_pipelines.connectors.spec_base import SpecModel

__all__ = ["PageNumberPaginator", "PageNumberPaging"]


class PageNumberPaging(SpecModel):
    """A page number query parameter; stops on a short page, ``more_path`` false or the page count."""

    kind: Literal["page_number"]
    page_param: str = "page"
    size_param: str | None = Field(default=None, description="Query parameter for the page size, if any.")
    start: int = 1
    total_pages_path: str | None = None
    more_path: str | None = None
    concurrency: int = Field(default=1, ge=1, le=16, description="Page requests kept in flight.")


class PageNumberPaginator(Paginator):
    """A page number parameter starting at ``start`` (and the page size in ``size_param``, if any)."""

    def __init__(
        self,
        *,
        page_param: str = "page",
        start: int = 1,
        total_pages_path: str | None = None,
        size_param: str | None = None,
        more_path: str | None = None,
    ) -> None:
        self.page_param = page_param
        self.start = start
        self.total_pages_path = total_pages_path
        self.size_param = size_param
        self.more_path = more_path

    def first_request(self, *, request: PageRequest, page_size: int) -> PageRequest:
        params = {**request.params, self.page_param: str(self.start)}
        if self.size_param:
            params[self.size_param] = str(page_size)
        return replace(request, params=params)

    def next_request(
        self, *, previous: PageRequest, body: Any, records: Sequence[Any], page_size: int
    ) -> PageRequest | None:
        page = int(previous.params.get(self.page_param, self.start))
        if not records:
            return None
        if self.more_path is not None:
            if resolve_path(body, self.more_path) is not True:
                return None
        else:
            total_pages = as_int(resolve_path(body, self.total_pages_path)) if self.total_pages_path else None
            if total_pages is not None:
                if page - self.start + 1 >= total_pages:
                    return None
            elif len(records) < page_size:
                return None
        return replace(previous, params={**previous.params, self.page_param: str(page + 1)})
