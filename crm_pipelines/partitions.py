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


def file_versions_partitions(source: str, dataset: str) -> dg.DynamicPartitionsDefinition:
    """One partition per complete version of a drop's file, added by the drop's arrival sensor."""
    return dg.DynamicPartitionsDefinition(name=f"sftp_files__{source}__{dataset}")


# Characters Dagster refuses in a partition key (the range syntax uses "...").
_NOT_IN_KEYS = ("...", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0")
CHECKSUM_IN_KEY = 12


def file_version_key(name: str, sha256: str) -> str:
    """``invoices_2026-11-25.csv@1a2b3c4d5e6f``: the file's name and the start of its sha256.

    Drop names are plain (``unsafe_name_reason`` refuses ``..``, separators and control
    characters), so the key is valid for Dagster and can be read back by :func:`parse_file_version_key`.
    """
    if any(bad in name for bad in _NOT_IN_KEYS) or len(sha256) < CHECKSUM_IN_KEY:
        raise ValueError(f"cannot make a partition key of {name!r} and {sha256!r}")
    return f"{name}@{sha256[:CHECKSUM_IN_KEY]}"


def parse_file_version_key(key: str) -> tuple[str, str]:
    """(file name, first 12 hex digits of its sha256) of a :func:`file_version_key`."""
    name, at, checksum = key.rpartition("@")
    if not at or not name or len(checksum) != CHECKSUM_IN_KEY:
        raise ValueError(f"{key!r} is not a file version key (name@checksum)")
    return name, checksum
