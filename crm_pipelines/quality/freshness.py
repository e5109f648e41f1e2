"""Data freshness: when did the source last change, as of a night's extracts?

Dagster's freshness policy says whether the pipeline ran. This says whether the source still lives:
an extract that runs every night but finds nothing new (an integration user that lost its rights to
recent records, a system switched off and left answering) materializes happily with stale data.

The newest change is the incremental cursor the extract reached (the highest modification time it
has seen, kept with the snapshot in ``_watermark.json``), measured against the end of the partition
day, not the wall clock: a night run again later is judged the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from crm_pipelines.lake import LakePath, partition_dir
from crm_pipelines.warehouse.watermarks import read_pending

__all__ = ["DataFreshness", "data_freshness", "shown_window", "source_freshness"]


@dataclass(frozen=True)
class DataFreshness:
    """How old a source's newest change was at the end of a partition day.

    Attributes:
        last_change: The newest change the extract saw, or None when its cursor is not a time
            (a sequence number or a delta link) or it wrote none.
        age: ``until - last_change``.
        allowed: The declared ``changed_within``.
        level: ``fresh``, ``stale`` or ``no_verdict`` (no time to judge by, or nothing declared).
        dataset: Where the newest change was seen.
        untimed: Datasets extracted with no modification time to judge by (a delta link, a
            sequence, a full read): while one is there, an old change elsewhere is no verdict.
    """

    last_change: datetime | None
    age: timedelta | None
    allowed: timedelta | None
    level: Literal["fresh", "stale", "no_verdict"]
    dataset: str | None = None
    untimed: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.allowed is None:
            return "no freshness declared for this source"
        if self.last_change is None or self.age is None:
            return "the extract's cursor is not a modification time: freshness not judged"
        hours = self.age.total_seconds() / 3600
        verdict = "within" if self.age <= self.allowed else "beyond"
        text = (
            f"newest change {self.last_change.isoformat()}{f' (in {self.dataset})' if self.dataset else ''}, "
            f"{hours:.0f} h before the day's end, {verdict} the {shown_window(self.allowed)} allowed"
        )
        if self.level == "no_verdict" and self.untimed:
            text += f"; not judged: {', '.join(self.untimed)} may have changed and carry no time"
        return text


def shown_window(window: timedelta) -> str:
    """A window as declared: ``7d``, ``26h``."""
    hours = window.total_seconds() / 3600
    return f"{hours / 24:g}d" if hours % 24 == 0 else f"{hours:g}h"


def source_freshness(
    lake_dir: LakePath,
    *,
    source: str,
    datasets: Iterable[str],
    partition: str,
    until: datetime,
    allowed: timedelta | None,
) -> DataFreshness:
    """Judge a source by its newest change in any of its datasets' lake partitions.

    A source is stale when nothing in it changed: a reference table (currencies) or a slow object
    (accounts) may rest for months while its contacts change daily. Datasets not extracted for the
    partition are left out; one whose changes carry no time (a delta link) turns a stale verdict
    into none, since it may be where the source still changes.
    """
    timed: list[DataFreshness] = []
    untimed: list[str] = []
    for dataset in datasets:
        if read_pending(partition_dir(lake_dir, "raw", source, dataset, partition)) is None:
            continue
        judged = data_freshness(
            lake_dir, source=source, dataset=dataset, partition=partition, until=until, allowed=allowed
        )
        if judged.last_change is None:
            untimed.append(dataset)
        else:
            timed.append(judged)
    if allowed is None or not timed:
        return DataFreshness(None, None, allowed, "no_verdict", untimed=tuple(untimed))
    newest = min(timed, key=lambda j: j.age or timedelta.max)
    if newest.level == "stale" and untimed:
        return replace(newest, level="no_verdict", untimed=tuple(untimed))
    return newest


def data_freshness(
    lake_dir: LakePath,
    *,
    source: str,
    dataset: str,
    partition: str,
    until: datetime,
    allowed: timedelta | None,
) -> DataFreshness:
    """Judge a dataset's lake partition: did the source change within ``allowed`` before ``until``?"""
    pending = read_pending(partition_dir(lake_dir, "raw", source, dataset, partition))
    if allowed is None or pending is None or pending.kind != "timestamp" or not pending.reached:
        return DataFreshness(None, None, allowed, "no_verdict")
    last_change = datetime.fromisoformat(pending.reached)
    if last_change.tzinfo is None:  # a database's timestamp cursor without a zone is UTC (the extract's)
        last_change = last_change.replace(tzinfo=UTC)
    age = until - last_change
    return DataFreshness(last_change, age, allowed, "fresh" if age <= allowed else "stale", dataset)
