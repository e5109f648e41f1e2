"""Paginators: given the request just made and its response, what is the next request?

Each paginator is a pure function of (previous request, response body, records on that page), so
it can be tested with a table of cases and no HTTP. The kinds follow dlt's REST client:

* :class:`NextLinkPaginator`: the body names the next page's URL (Salesforce ``nextRecordsUrl``,
  stop when ``done`` is true). Follow-up requests carry no query parameters, per Salesforce's docs.
* :class:`CursorPaginator`: the body carries an opaque cursor sent back as a parameter (HubSpot
  ``paging.next.after`` → ``?after=``).
* :class:`OffsetPaginator` and :class:`PageNumberPaginator`: stop at the reported total (or a
  "more" flag) when the API gives one, else at the first short or empty page. Their pages can be
  fetched concurrently (the engine computes the next offsets ahead; see ``pages._concurrent_pages``).
* :class:`KeysetPaginator`: each request asks for the rows after the last key read (``Id gt <last>``
  added to the request's own filter); exact when rows are deleted during the read. It remembers the
  first request's filter, so its ``first_request`` must be called before ``next_request``.
* :class:`SinglePaginator`: one request.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from crm_pipelines.connectors.paging.base import PageRequest, Paginator
from crm_pipelines.connectors.paging.cursor import CursorPaginator, CursorPaging
from crm_pipelines.connectors.paging.keyset import KeysetPaginator, KeysetPaging
from crm_pipelines.connectors.paging.next_link import NextLinkPaginator, NextLinkPaging
from crm_pipelines.connectors.paging.offset import OffsetPaginator, OffsetPaging
from crm_pipelines.connectors.paging.page_number import PageNumberPaginator, PageNumberPaging
from crm_pipelines.connectors.paging.single import SinglePaginator, SinglePaging

__all__ = [
    "CursorPaginator",
    "CursorPaging",
    "KeysetPaginator",
    "KeysetPaging",
    "NextLinkPaginator",
    "NextLinkPaging",
    "OffsetPaginator",
    "OffsetPaging",
    "PageNumberPaginator",
    "PageNumberPaging",
    "PageRequest",
    "Paginator",
    "PagingSpec",
    "SinglePaginator",
    "SinglePaging",
    "make_paginator",
]

PagingSpec = Annotated[
    NextLinkPaging | CursorPaging | OffsetPaging | PageNumberPaging | KeysetPaging | SinglePaging,
    Field(discriminator="kind"),
]


def make_paginator(*, spec: PagingSpec) -> Paginator:
    """Build the paginator a system declares.

    Args:
        spec: The system's (or object's) paging declaration.

    Returns:
        A paginator.
    """
    if isinstance(spec, NextLinkPaging):
        return NextLinkPaginator(
            next_path=spec.next_path, done_path=spec.done_path, keep_params=spec.keep_params
        )
    if isinstance(spec, CursorPaging):
        return CursorPaginator(
            cursor_path=spec.cursor_path,
            cursor_param=spec.cursor_param,
            more_path=spec.more_path,
            stop_values=spec.stop_values,
        )
    if isinstance(spec, OffsetPaging):
        return OffsetPaginator(
            offset_param=spec.offset_param,
            limit_param=spec.limit_param,
            start=spec.start,
            total_path=spec.total_path,
        )
    if isinstance(spec, PageNumberPaging):
        return PageNumberPaginator(
            page_param=spec.page_param,
            start=spec.start,
            total_pages_path=spec.total_pages_path,
            size_param=spec.size_param,
            more_path=spec.more_path,
        )
    if isinstance(spec, KeysetPaging):
        return KeysetPaginator(
            key_path=spec.key_path,
            filter_param=spec.filter_param,
            condition=spec.condition,
            join=spec.join,
            limit_param=spec.limit_param,
        )
    if isinstance(spec, SinglePaging):
        return SinglePaginator()
    raise TypeError(f"unsupported paging kind {spec!r}")  # pragma: no cover - the spec union is closed
