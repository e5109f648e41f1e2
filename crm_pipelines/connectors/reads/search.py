"""HubSpot CRM search: an incremental window read in time slices that stay under the result cap.

The search endpoint returns at most ``search.max_results`` records per query, however it is paged.
:func:`search_extract` asks for ``[since, until)`` sorted by the cursor; when the first page
reports a total over the cap, the window is split in two halves (earlier first, so records still
arrive in cursor order) until each fits.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from crm_pipelines.connectors.collect import Collector, Pass
from crm_pipelines.connectors.cursors import utc
from crm_pipelines.connectors.limits import ApiRequestError, ErrorContext
from crm_pipelines.connectors.pages import PageCounter, records_of
from crm_pipelines.connectors.paging import PageRequest
from crm_pipelines.connectors.paths import MISSING, resolve_path
from crm_pipelines.connectors.reads.base import READ_METHODS, ObjectRead, ReadMethod
from crm_pipelines.connectors.session import Session, render_value
from crm_pipelines.connectors.spec import ObjectSpec

__all__ = [
    "SearchWindows",
    "search_extract",
]


def _ms(value: datetime, *, round_up: bool) -> int:
    ms = utc(value).timestamp() * 1000
    return math.ceil(ms) if round_up else math.floor(ms)


def search_extract(
    session: Session,
    obj: ObjectSpec,
    since: datetime,
    until: datetime,
    context: ErrorContext,
    collector: Collector,
    pages: PageCounter,
) -> Iterator[pa.RecordBatch]:
    """Search ``[since, until)`` sorted by the cursor, splitting windows whose total is over the cap."""
    search = obj.search
    assert search is not None
    cursor_path = obj.field(obj.incremental.cursor).source_path
    prefix = obj.select_prefix or ""
    prop = cursor_path[len(prefix) :] if cursor_path.startswith(prefix) else cursor_path
    request = PageRequest(url=search.path)
    windows: deque[tuple[int, int]] = deque([(_ms(since, round_up=False), _ms(until, round_up=True))])
    while windows:
        low, high = windows.popleft()
        after: str | None = None
        first = True
        while True:
            body: dict[str, Any] = {
                "filterGroups": [
                    {
                        "filters": [
                            {"propertyName": prop, "operator": "GTE", "value": str(low)},
                            {"propertyName": prop, "operator": "LT", "value": str(high)},
                        ]
                    }
                ],
                "sorts": [{"propertyName": prop, "direction": "ASCENDING"}],
                "properties": obj.selected_names(),
                "limit": search.page_size,
            }
            if after is not None:
                body["after"] = after
            answer = session.post_json(request, body, context=context)
            total = resolve_path(answer, search.total_path)
            if first and total not in (None, MISSING) and int(str(total)) > search.max_results:
                pages.stats.requests += 1
                if high - low <= 1:
                    raise ApiRequestError(
                        f"{context.where}: {total} records share one millisecond of {prop}; the search "
                        f"returns at most {search.max_results} per query.",
                        fix="run a full extract (no earlier snapshot) for this object.",
                    )
                # Over the cap: two halves, earlier first, so records still arrive in cursor order.
                middle = (low + high) // 2
                windows.appendleft((middle, high))
                windows.appendleft((low, middle))
                break
            if first:
                pages.stats.search_windows += 1
            first = False
            records = records_of(answer, obj.records_path, str(search.path), context)
            kept = collector.add(records, cursor_path=cursor_path, deleted_pass=False)
            pages.page(records=len(records), kept=kept, deleted_pass=False)
            batch = collector.flush()
            if batch is not None:
                yield batch
            next_after = resolve_path(answer, search.after_path)
            if next_after in (None, MISSING) or not records:
                break
            after = render_value(next_after)


class SearchWindows(ReadMethod):
    """An object with ``search``: the live pass of an incremental read (``since`` given)."""

    precedence = 30

    def takes(self, read: ObjectRead, run: Pass) -> bool:
        return read.obj.search is not None and read.since is not None and not run.deleted_only

    def extract(self, read: ObjectRead, run: Pass) -> Iterator[pa.RecordBatch]:
        assert read.since is not None  # takes() checked
        until = read.until or datetime.now(UTC)
        return search_extract(
            read.session, read.obj, read.since, until, read.context, read.collector, read.pages
        )


READ_METHODS.add("search", SearchWindows())
