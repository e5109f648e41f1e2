"""Walking an API's pages: one request after another, several in flight, and cursor chain restarts.

:func:`walk_pages` yields ``(request, body, records)`` for every page of the declared paging, in order.
Offset and page-number paging with ``concurrency`` > 1 keep that many requests in flight
(:func:`_concurrent_pages`): the paginator knows the next offsets before the answers arrive, and the first
answer's total says where to stop. A cursor chain with a ``chain_limit`` (Zoho's page tokens) is
replaced by a new one from the highest cursor read before it passes the limit (:class:`CursorChain`).
:class:`PageCounter` counts the pages and reports each as a :class:`PageInfo`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crm_pipelines.connectors.collect import ExtractStats, path_resolver
from crm_pipelines.connectors.cursors import parse_cursor
from crm_pipelines.connectors.limits import ApiRequestError, ErrorContext
from crm_pipelines.connectors.paging import NumberedPaginator, PageRequest, PagingSpec, make_paginator
from crm_pipelines.connectors.paging.base import as_int
from crm_pipelines.connectors.paths import MISSING, resolve_path
from crm_pipelines.connectors.session import Session

__all__ = [
    "CursorChain",
    "PageCounter",
    "PageGuard",
    "PageInfo",
    "records_of",
    "walk_pages",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PageInfo:
    """Progress after each page, passed to ``on_page``."""

    system: str
    object_name: str
    page_number: int
    records: int  # records on this page as received
    rows: int  # rows kept from this page (after the window filter and de-duplication)
    total_rows: int  # rows kept so far in this extract
    deleted_pass: bool  # True for a separate pass that reads deleted records


class PageCounter:
    """Counts the pages of an extract and reports each to ``on_page`` as a :class:`PageInfo`."""

    def __init__(
        self, system: str, object_name: str, on_page: Callable[[PageInfo], None] | None, stats: ExtractStats
    ) -> None:
        self.system = system
        self.object_name = object_name
        self.on_page = on_page
        self.stats = stats
        self.number = 0

    def page(self, *, records: int, kept: int, deleted_pass: bool) -> None:
        self.number += 1
        self.stats.requests += 1
        if self.on_page is not None:
            self.on_page(
                PageInfo(
                    system=self.system,
                    object_name=self.object_name,
                    page_number=self.number,
                    records=records,
                    rows=kept,
                    total_rows=self.stats.rows,
                    deleted_pass=deleted_pass,
                )
            )


def records_of(body: Any, records_path: str, object_name: str, context: ErrorContext) -> list[Any]:
    """The records list at ``records_path`` of a page (none when absent); anything else is an error."""
    records = resolve_path(body, records_path)
    if records is MISSING or records is None:
        return []
    if not isinstance(records, list):
        raise ApiRequestError(
            f"{context.where}: '{records_path}' in the response is not a list.",
            fix=f"check records_path of {object_name} in {context.yaml_path}.",
        )
    return records


class PageGuard:
    """What a walk through pages must not take for data.

    - A page whose records (or keys) repeat the previous page's: a caching proxy or a shifting
      offset answered with the page before. Taken as data it hides the real page, whose records
      then look deleted. The page is asked for again up to ``retries`` times, then the read fails.
    - Fewer records than the listing's own total (``total_path``) when the walk ends: the read
      fails rather than report the missing records as gone.

    Args:
        context: Where the pages come from, for messages.
        total_path: Where a page reports the listing's total, or None.
        key_of: A record's key (compared instead of the whole record), or None.
        retries: Requests of a repeated page before the read fails.
    """

    def __init__(
        self,
        context: ErrorContext,
        *,
        total_path: str | None = None,
        key_of: Callable[[Any], Any] | None = None,
        retries: int = 3,
    ) -> None:
        self.context = context
        self.total_path = total_path
        self.key_of = key_of
        self.retries = retries
        self.received = 0
        self.repeats = 0  # repeated pages seen (each asked for again)
        self._previous: list[Any] | None = None
        self._totals: list[int] = []

    def _fingerprint(self, records: list[Any]) -> list[Any]:
        return [self.key_of(r) for r in records] if self.key_of is not None else records

    def repeated(self, records: list[Any]) -> bool:
        """Whether ``records`` repeat the previous page's (an empty page repeats nothing)."""
        return bool(records) and self._previous is not None and self._fingerprint(records) == self._previous

    def fetch(
        self, session: Session, request: PageRequest, records_path: str, object_name: str
    ) -> tuple[Any, list[Any]]:
        """The page ``request`` asks for, asked again while it repeats the previous page."""
        attempts = 0
        while True:
            body = session.get_json(request, context=self.context)
            records = records_of(body, records_path, object_name, self.context)
            if not self.repeated(records):
                return body, records
            attempts += 1
            self.repeats += 1
            if attempts > self.retries:
                raise ApiRequestError(
                    f"{self.context.where}: a page answered with the previous page's {len(records)} "
                    f"records {attempts} times in a row ({request.url}); the read stops so that the "
                    "records of the missing page are not taken for deleted.",
                    fix="check for a caching proxy between the pipeline and the API; the next run reads again.",
                )
            log.warning(
                "%s: a page repeated the previous page's records; asking for it again (%d of %d)",
                self.context.where,
                attempts,
                self.retries,
            )

    def accept(self, body: Any, records: list[Any]) -> None:
        """Count a page taken as data."""
        self.received += len(records)
        self._previous = self._fingerprint(records) if records else self._previous
        if self.total_path is not None:
            total = as_int(resolve_path(body, self.total_path))
            if total is not None:
                self._totals.append(total)

    def finish(self) -> None:
        """Fail when the walk read fewer records than the listing reported (its lowest report:
        records deleted during the walk lower the later ones)."""
        if self._totals and self.received < min(self._totals):
            raise ApiRequestError(
                f"{self.context.where}: the listing reported {min(self._totals)} records but "
                f"{self.received} arrived; the read stops so that the missing ones are not taken "
                "for deleted.",
                fix="run again; if it persists, the API's paging skips records (report it to the vendor).",
            )


def walk_pages(
    session: Session,
    paging: PagingSpec,
    first: PageRequest,
    size: int,
    records_path: str,
    object_name: str,
    context: ErrorContext,
    chain: CursorChain | None = None,
    one_at_a_time: bool = False,
    key_of: Callable[[Any], Any] | None = None,
    guard: PageGuard | None = None,
) -> Iterator[tuple[PageRequest, Any, list[Any]]]:
    """(request, body, records) of every page, in order.

    A paginator whose n-th request is known ahead (offsets, page numbers) with ``concurrency`` > 1
    keeps that many requests in flight (through the account's shared bucket), unless
    ``one_at_a_time``. With a ``chain``, a cursor chain about to pass its limit is replaced by a
    new one. Every page goes through a :class:`PageGuard` (repeated pages, the reported total);
    ``key_of`` gives it the records' keys.
    """
    paginator = make_paginator(spec=paging)
    own_guard = guard is None
    guard = guard or PageGuard(context, total_path=paging.total_path, key_of=key_of)
    request: PageRequest | None = paginator.first_request(request=first, page_size=size)
    if (
        isinstance(paginator, NumberedPaginator)
        and paginator.concurrency > 1
        and not one_at_a_time
        and request is not None
    ):
        yield from _concurrent_pages(
            session, paginator, request, size, records_path, object_name, context, guard
        )
        if own_guard:
            guard.finish()
        return
    while request is not None:
        body, records = guard.fetch(session, request, records_path, object_name)
        guard.accept(body, records)
        yield request, body, records
        next_request = paginator.next_request(previous=request, body=body, records=records, page_size=size)
        if chain is not None:
            chain.observe(records)
            if next_request is not None and chain.count + size > chain.limit:
                next_request = paginator.first_request(request=chain.restart(context), page_size=size)
        if next_request == request:
            raise ApiRequestError(
                f"{context.where}: paging did not advance (the same page was requested twice).",
                fix=f"check the paging declaration in {context.yaml_path}.",
            )
        request = next_request
    if own_guard:
        guard.finish()


def _concurrent_pages(
    session: Session,
    paginator: NumberedPaginator[Any],
    first: PageRequest,
    size: int,
    records_path: str,
    object_name: str,
    context: ErrorContext,
    guard: PageGuard,
) -> Iterator[tuple[PageRequest, Any, list[Any]]]:
    concurrency = paginator.concurrency
    executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"{context.system_name}-pages")
    in_flight: deque[tuple[PageRequest, Future[Any]]] = deque()
    submitted = 0
    # Pages that exist, once the first answer reports a total; until then the offsets are a guess.
    last_page: int | None = None

    def submit() -> None:
        nonlocal submitted
        if last_page is not None and submitted >= last_page:
            return
        request = paginator.nth_request(first=first, n=submitted, page_size=size)
        in_flight.append((request, executor.submit(session.get_json, request, context=context)))
        submitted += 1

    try:
        submit()
        first_answer = True
        while in_flight:
            request, future = in_flight.popleft()
            body = future.result()
            records = records_of(body, records_path, object_name, context)
            if guard.repeated(records):
                body, records = guard.fetch(session, request, records_path, object_name)
            guard.accept(body, records)
            if first_answer:
                first_answer = False
                last_page = paginator.page_count(body=body, page_size=size)
                for _ in range(concurrency - 1):
                    submit()
            yield request, body, records
            expected = paginator.next_request(previous=request, body=body, records=records, page_size=size)
            if expected is None:
                return
            if in_flight and expected != in_flight[0][0]:
                # A short page that is not the last (a server capping pages below our size): the
                # offsets run ahead of the data. Drop the speculative requests and walk on one by one.
                for _, pending in in_flight:
                    pending.cancel()
                in_flight.clear()
                yield from walk_pages(
                    session,
                    paginator.spec,
                    expected,
                    size,
                    records_path,
                    object_name,
                    context,
                    one_at_a_time=True,
                    guard=guard,
                )
                return
            submit()
    finally:
        for _, pending in in_flight:
            pending.cancel()
        executor.shutdown(wait=True, cancel_futures=True)


class CursorChain:
    """A chain of cursors that reaches at most ``limit`` records (Zoho: 100,000 per page_token chain).

    Before the next page would pass the limit, the read starts over from the highest cursor value
    read so far; the request sorts ascending by the cursor, so everything before it has been read,
    and records stamped exactly there are read again and de-duplicated on the key.
    """

    def __init__(
        self,
        *,
        limit: int,
        cursor_path: str,
        fmt: str,
        since: datetime | None,
        restart_from: Callable[[datetime], PageRequest],
        stats: ExtractStats,
        cursor_name: str,
    ) -> None:
        self.limit = limit
        self._cursor_of = path_resolver(cursor_path)
        self._fmt = fmt
        self._started_at = since
        self._restart_from = restart_from
        self._stats = stats
        self._cursor_name = cursor_name
        self.count = 0
        self._highest: datetime | None = None

    def observe(self, records: Sequence[Any]) -> None:
        self.count += len(records)
        for record in records:
            moment = parse_cursor(value=self._cursor_of(record), fmt=self._fmt)
            if moment is not None and (self._highest is None or moment > self._highest):
                self._highest = moment

    def restart(self, context: ErrorContext) -> PageRequest:
        highest = self._highest
        if highest is None or (self._started_at is not None and highest <= self._started_at):
            raise ApiRequestError(
                f"{context.where}: {self.count} records in a row share {self._cursor_name} "
                f"{highest.isoformat() if highest else '(none)'}; one chain of cursors reaches at most "
                f"{self.limit} records, so the read cannot go past them.",
                fix="read the object in a narrower window, or ask the vendor about the chain limit.",
            )
        log.info(
            "%s: %d records read in one cursor chain (limit %d); going on from %s %s",
            context.where,
            self.count,
            self.limit,
            self._cursor_name,
            highest.isoformat(),
        )
        self._started_at = highest
        self.count = 0
        self._stats.chain_restarts += 1
        return self._restart_from(highest)
