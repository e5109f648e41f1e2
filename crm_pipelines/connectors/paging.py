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

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urljoin

from crm_pipelines.connectors.paths import MISSING, resolve_path
from crm_pipelines.connectors.spec import (
    CursorPaging,
    KeysetPaging,
    NextLinkPaging,
    OffsetPaging,
    PageNumberPaging,
    PagingSpec,
    SinglePaging,
)


@dataclass(frozen=True)
class PageRequest:
    """One GET: ``url`` is absolute or relative to the API base; params/headers already rendered."""

    url: str
    params: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)


class Paginator(ABC):
    """Turns a page's response into the next request, or ``None`` when there are no more pages."""

    def first_request(self, *, request: PageRequest, page_size: int) -> PageRequest:
        """Add the paging parameters the first request needs (most kinds need none).

        Args:
            request: The rendered first request.
            page_size: Records per page.

        Returns:
            The request to send first.
        """
        return request

    @abstractmethod
    def next_request(
        self, *, previous: PageRequest, body: Any, records: Sequence[Any], page_size: int
    ) -> PageRequest | None:
        """Return the request for the next page, or ``None`` after the last page.

        Args:
            previous: The request that produced ``body``.
            body: The decoded response body.
            records: The records found on that page.
            page_size: Records per page that were asked for.

        Returns:
            The next request or ``None``.
        """


class NextLinkPaginator(Paginator):
    """Follow a URL found in the body until a ``done`` flag is true or the link is absent.

    A relative link (SAP Business One's ``BusinessPartners?$skip=20``) resolves against the request
    that produced it. The link carries its own query (Salesforce, OData), so the first request's
    parameters are dropped unless ``keep_params``.
    """

    def __init__(self, *, next_path: str, done_path: str | None = None, keep_params: bool = False) -> None:
        self.next_path = next_path
        self.done_path = done_path
        self.keep_params = keep_params

    def next_request(
        self, *, previous: PageRequest, body: Any, records: Sequence[Any], page_size: int
    ) -> PageRequest | None:
        if self.done_path is not None and resolve_path(body, self.done_path) is True:
            return None
        link = resolve_path(body, self.next_path)
        if not isinstance(link, str) or not link:
            return None
        if not link.startswith(("/", "http://", "https://")):
            link = urljoin(previous.url, link)
        return PageRequest(
            url=link, params=previous.params if self.keep_params else {}, headers=previous.headers
        )


class CursorPaginator(Paginator):
    """Send the cursor found in the body back as a query parameter until there is none.

    ``more_path`` (Zoho ``info.more_records``) stops on false; ``stop_values`` are cursors meaning
    "done" (SugarCRM answers ``next_offset: -1`` on the last page).
    """

    def __init__(
        self,
        *,
        cursor_path: str,
        cursor_param: str,
        more_path: str | None = None,
        stop_values: Sequence[str] = (),
    ) -> None:
        self.cursor_path = cursor_path
        self.cursor_param = cursor_param
        self.more_path = more_path
        self.stop_values = frozenset(stop_values)

    def next_request(
        self, *, previous: PageRequest, body: Any, records: Sequence[Any], page_size: int
    ) -> PageRequest | None:
        if self.more_path is not None and resolve_path(body, self.more_path) is not True:
            return None
        cursor = resolve_path(body, self.cursor_path)
        if cursor is MISSING or cursor is None or cursor == "" or str(cursor) in self.stop_values:
            return None
        return replace(previous, params={**previous.params, self.cursor_param: str(cursor)})


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
        total = _as_int(resolve_path(body, self.total_path)) if self.total_path else None
        if total is not None:
            # Offsets count from `start` (SData's startIndex is 1-based): records read so far are
            # next_offset - start, and only when those reach the total is the list done.
            if next_offset - self.start >= total:
                return None
        elif received < page_size:
            return None
        return replace(previous, params={**previous.params, self.offset_param: str(next_offset)})


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
            total_pages = (
                _as_int(resolve_path(body, self.total_pages_path)) if self.total_pages_path else None
            )
            if total_pages is not None:
                if page - self.start + 1 >= total_pages:
                    return None
            elif len(records) < page_size:
                return None
        return replace(previous, params={**previous.params, self.page_param: str(page + 1)})


class KeysetPaginator(Paginator):
    """Rows after the last key read: ``({filter}) and Id gt <last>``; the request orders by the key.

    An offset counts rows, so a row deleted before the offset during the read shifts the rest and
    the next page skips one; the last key does not move. Stops on a short or empty page.
    """

    def __init__(
        self,
        *,
        key_path: str,
        filter_param: str,
        condition: str,
        join: str = " and ",
        limit_param: str | None = None,
    ) -> None:
        self.key_path = key_path
        self.filter_param = filter_param
        self.condition = condition
        self.join = join
        self.limit_param = limit_param
        self._base: str | None = None

    def first_request(self, *, request: PageRequest, page_size: int) -> PageRequest:
        # Every later page adds its condition to this filter (the window of an incremental read).
        self._base = request.params.get(self.filter_param, "")
        if self.limit_param is None:
            return request
        return replace(request, params={**request.params, self.limit_param: str(page_size)})

    def next_request(
        self, *, previous: PageRequest, body: Any, records: Sequence[Any], page_size: int
    ) -> PageRequest | None:
        if not records or len(records) < page_size:
            return None
        last = resolve_path(records[-1], self.key_path)
        if last is MISSING or last is None or isinstance(last, dict | list):
            raise ValueError(f"keyset paging: the last record of a page has no key at {self.key_path!r}")
        base = self._base if self._base is not None else previous.params.get(self.filter_param, "")
        after = self.condition.format(last=last)
        value = f"({base}){self.join}{after}" if base else after
        return replace(previous, params={**previous.params, self.filter_param: value})


class SinglePaginator(Paginator):
    """One request, no further pages."""

    def next_request(
        self, *, previous: PageRequest, body: Any, records: Sequence[Any], page_size: int
    ) -> PageRequest | None:
        return None


def _as_int(value: Any) -> int | None:
    if value is MISSING or value is None or isinstance(value, bool):
        return None
    try:
        return int(str(value))
    except ValueError:
        return None


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
