"""Walking an API's pages (pages.py): a cursor chain restarts from the highest cursor read."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from crm_pipelines.connectors.engine import ExtractStats
from crm_pipelines.connectors.limits import ApiRequestError, ErrorContext
from crm_pipelines.connectors.pages import CursorChain
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
