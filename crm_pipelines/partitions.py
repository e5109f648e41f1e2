"""The nightly partitioning: one partition per business day."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg

# end_offset=1 lets a schedule in a timezone ahead of UTC run "yesterday" in its own zone.
NIGHTLY_PARTITIONS = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=1)


def partition_window(partition_key: str, timezone: str) -> tuple[dt.datetime, dt.datetime]:
    """The business day of a partition as [start, end) instants in UTC, for the given timezone."""
    day = dt.date.fromisoformat(partition_key)
    zone = ZoneInfo(timezone)
    start = dt.datetime.combine(day, dt.time(), tzinfo=zone)
    end = start + dt.timedelta(days=1)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)
