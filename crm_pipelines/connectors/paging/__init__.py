"""Paginators: given the request just made and its response, what is the next request?

Each paginator is a pure function of (previous request, response body, records on that page), so
it can be tested with a table of cases and no HTTP. The kinds follow dlt's REST client:

* :class:`NextLinkPaginator`: the body names the next page's URL (Salesforce ``nextRecordsUrl``,
  stop when ``done`` is true). Follow-up requests carry no query parameters, per Salesforce's docs.
* :class:`CursorPaginator`: the body carries an opaque cursor sent back as a parameter (HubSpot
  ``paging.next.after`` → ``?after=``).
* :class:`OffsetPaginator` and :class:`PageNumberPaginator`: stop at the reported total (or a
  "more" flag) when the API gives one, else at the first short or empty page. Their pages can be
  fetched concurrently: as :class:`NumberedPaginator` they know the n-th request ahead.
* :class:`KeysetPaginator`: each request asks for the rows after the last key read (``Id gt <last>``
  added to the request's own filter); exact when rows are deleted during the read. It remembers the
  first request's filter, so its ``first_request`` must be called before ``next_request``.
* :class:`SinglePaginator`: one request.

Each kind is one module here: its declaration model, registered in :data:`PAGING_KINDS` under its
``kind``, and its paginator, made from that model. A new kind is a new module imported below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crm_pipelines.connectors.paging.base import (
    PAGING_KINDS,
    NumberedPaginator,
    PageRequest,
    Paginator,
    PagingModel,
)
from crm_pipelines.connectors.paging.cursor import CursorPaginator, CursorPaging
from crm_pipelines.connectors.paging.keyset import KeysetPaginator, KeysetPaging
from crm_pipelines.connectors.paging.next_link import NextLinkPaginator, NextLinkPaging
from crm_pipelines.connectors.paging.offset import OffsetPaginator, OffsetPaging
from crm_pipelines.connectors.paging.page_number import PageNumberPaginator, PageNumberPaging
from crm_pipelines.connectors.paging.single import SinglePaginator, SinglePaging

__all__ = [
    "PAGING_KINDS",
    "CursorPaginator",
    "CursorPaging",
    "KeysetPaginator",
    "KeysetPaging",
    "NextLinkPaginator",
    "NextLinkPaging",
    "NumberedPaginator",
    "OffsetPaginator",
    "OffsetPaging",
    "PageNumberPaginator",
    "PageNumberPaging",
    "PageRequest",
    "Paginator",
    "PagingModel",
    "PagingSpec",
    "SinglePaginator",
    "SinglePaging",
    "make_paginator",
]

# The union a system's `paging:` validates against, built from every registered kind (the modules
# imported above); mypy sees the base model.
if TYPE_CHECKING:
    PagingSpec = PagingModel
else:
    PagingSpec = PAGING_KINDS.union()


def make_paginator(*, spec: PagingModel) -> Paginator[Any]:
    """Make the paginator a system declares (a new one per walk: a keyset paginator keeps state).

    Args:
        spec: The system's (or object's) paging declaration.

    Returns:
        A paginator.
    """
    return spec.paginator()
