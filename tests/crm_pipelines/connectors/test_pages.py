"""Walking an API's pages (pages.py): a cursor chain restarts from the highest cursor read; a
walk that ends short of the listing's reported total fails."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from crm_pipelines.connectors.engine import ExtractStats
from crm_pipelines.connectors.limits import ApiRequestError, ErrorContext
from crm_pipelines.connectors.pages import CursorChain, PageGuard
from crm_pipelines.connectors.paging import PageRequest

CONTEXT = ErrorContext(system_name="salesforce", system_title="Salesforce", object_name="Contact")


def test_a_cursor_chain_goes_on_from_the_highest_cursor_read_and_never_in_place() -> None:
    stats = ExtractStats()
    moved: list[datetime] = []

    def restart_from(since: datetime) -> PageRequest:
        moved.append(since)
        return PageRequest(url="/items", headers={"If-Modified-Since": since.isoformat()})

    chain = CursorChain(
        limit=4,
        cursor_path="Modified_Time",
        fmt="iso8601_offset",
        since=None,
        restart_from=restart_from,
        stats=stats,
        cursor_name="Modified_Time",
    )
    chain.observe(
        [{"Modified_Time": "2026-11-25T10:00:00+00:00"}, {"Modified_Time": "2026-11-25T10:00:05+00:00"}]
    )
    chain.observe([{"Modified_Time": "2026-11-25T10:00:07+00:00"}, {"Modified_Time": None}])
    chain.restart(CONTEXT)
    assert moved == [datetime(2026, 11, 25, 10, 0, 7, tzinfo=UTC)]
    assert chain.count == 0
    assert stats.chain_restarts == 1
    # A chain whose records all share the value it started from cannot move on: it says so.
    chain.observe([{"Modified_Time": "2026-11-25T10:00:07+00:00"}] * 4)
    with pytest.raises(ApiRequestError, match="4 records in a row share Modified_Time 2026-11-25T10:00:07"):
        chain.restart(CONTEXT)


def test_a_walk_that_ends_short_of_the_reported_total_fails_instead_of_losing_records() -> None:
    # Salesforce repeats the query's totalSize on every page: 5 reported, 4 arrived.
    guard = PageGuard(CONTEXT, total_path="totalSize")
    guard.accept({"totalSize": 5, "records": [1, 2, 3]}, [1, 2, 3])
    guard.accept({"totalSize": 5, "records": [4]}, [4])
    with pytest.raises(ApiRequestError, match="the listing reported 5 records but 4 arrived"):
        guard.finish()


def test_records_deleted_during_the_walk_lower_the_total_and_are_no_fault() -> None:
    guard = PageGuard(CONTEXT, total_path="totalSize")
    guard.accept({"totalSize": 5, "records": [1, 2, 3]}, [1, 2, 3])
    guard.accept({"totalSize": 4, "records": [4]}, [4])
    guard.finish()


def test_a_page_repeating_the_previous_pages_keys_is_a_repeat() -> None:
    guard = PageGuard(CONTEXT, key_of=lambda r: r["id"])
    guard.accept({}, [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}])
    assert guard.repeated([{"id": 1, "v": "a2"}, {"id": 2, "v": "b"}])
    assert not guard.repeated([{"id": 3, "v": "a"}])
    assert not guard.repeated([])
