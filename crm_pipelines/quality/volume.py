"""Volume: a source dataset's live rows tonight against the median of its trailing nights.

The raw load records each night's live rows in ``ops.source_volume`` in the transaction that loads
them (:func:`record_volume`), so the history holds exactly the nights that were loaded. The extract's
checks compare the partition just written to the lake with that history (:func:`volume_verdict`):
a night that is blocked is never loaded, so it never drags the median down.

Live rows are the snapshot's rows without the soft-deleted ones (``_deleted``): records deleted in
the source stay one night in the snapshot, flagged, and must count as gone.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Literal

import duckdb

from crm_pipelines.lake import (
    DELETED,
    LakePath,
    has_parquet,
    parquet_glob,
    partition_dir,
    reader,
    scan_parquet,
)
from crm_pipelines.quality.monitoring import VolumePolicy
from crm_pipelines.warehouse.connection import table_exists

__all__ = ["DDL", "VolumeVerdict", "lake_live_rows", "live_rows", "record_volume", "volume_verdict"]

DDL = """
CREATE TABLE IF NOT EXISTS ops.source_volume (
    source VARCHAR NOT NULL,
    dataset VARCHAR NOT NULL,
    partition VARCHAR NOT NULL,
    live_rows BIGINT NOT NULL,       -- the snapshot's rows not deleted in the source
    run_id VARCHAR NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, dataset, partition)
)
"""

Level = Literal["ok", "warn", "block", "no_verdict"]


def live_rows(con: duckdb.DuckDBPyConnection, glob: str) -> int:
    """Rows of the Parquet files at ``glob`` that are not flagged deleted."""
    relation = scan_parquet(glob)
    columns = {str(row[0]) for row in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()}
    where = f"WHERE NOT coalesce({DELETED}, false)" if DELETED in columns else ""
    row = con.execute(f"SELECT count(*) FROM {relation} {where}").fetchone()
    return int(row[0]) if row else 0


def lake_live_rows(lake_dir: LakePath, *, source: str, dataset: str, partition: str) -> int | None:
    """Live rows of a dataset's lake partition, or None when nothing was extracted for it."""
    folder = partition_dir(lake_dir, "raw", source, dataset, partition)
    if not has_parquet(folder):
        return None
    with reader() as con:
        return live_rows(con, parquet_glob(folder))


def record_volume(
    con: duckdb.DuckDBPyConnection, *, source: str, dataset: str, partition: str, rows: int, run_id: str
) -> None:
    """Record a night's live rows (inside the load's transaction; a re-run replaces its night)."""
    con.execute(
        "INSERT OR REPLACE INTO ops.source_volume (source, dataset, partition, live_rows, run_id, recorded_at) "
        "VALUES (?, ?, ?, ?, ?, now())",
        [source, dataset, partition, rows, run_id],
    )


@dataclass(frozen=True)
class VolumeVerdict:
    """Tonight's live rows against the trailing median, and what the declared thresholds make of it.

    Attributes:
        rows: Tonight's live rows.
        history: The trailing nights' live rows, newest first (at most ``policy.nights``).
        median: Their median, or None without enough history.
        change: ``rows / median - 1`` (-0.6 is a 60 % fall), or None without a median.
        level: ``ok``, ``warn`` (at or below ``warn_below``), ``block`` (at or below
            ``block_below``) or ``no_verdict`` (fewer than ``min_nights`` of history).
        policy: The declared thresholds.
    """

    rows: int
    history: tuple[int, ...]
    median: float | None
    change: float | None
    level: Level
    policy: VolumePolicy

    def describe(self) -> str:
        if self.median is None or self.change is None:
            return (
                f"{self.rows} live rows; {len(self.history)} nights of history, "
                f"{self.policy.min_nights} needed for a verdict"
            )
        return (
            f"{self.rows} live rows, {self.change:+.0%} against the median {self.median:g} of the last "
            f"{len(self.history)} nights (warn at {self.policy.warn_below:+.0%}, "
            f"block at {self.policy.block_below:+.0%})"
        )


def trailing_nights(
    con: duckdb.DuckDBPyConnection, *, source: str, dataset: str, before: str, nights: int
) -> tuple[int, ...]:
    """The live rows of the last ``nights`` loaded nights before partition ``before``, newest first."""
    if not table_exists(con, "ops", "source_volume"):
        return ()
    found = con.execute(
        "SELECT live_rows FROM ops.source_volume WHERE source = ? AND dataset = ? AND partition < ? "
        "ORDER BY partition DESC LIMIT ?",
        [source, dataset, before, nights],
    ).fetchall()
    return tuple(int(r[0]) for r in found)


def volume_verdict(
    con: duckdb.DuckDBPyConnection,
    *,
    source: str,
    dataset: str,
    partition: str,
    rows: int,
    policy: VolumePolicy,
) -> VolumeVerdict:
    """Judge tonight's ``rows`` against the nights recorded before ``partition`` (works read-only).

    Only earlier partitions count, so running a night again (or an old night) judges it the same way.
    """
    history = trailing_nights(con, source=source, dataset=dataset, before=partition, nights=policy.nights)
    if len(history) < policy.min_nights:
        return VolumeVerdict(rows, history, None, None, "no_verdict", policy)
    median = float(statistics.median(history))
    if median == 0:
        # Nothing to fall from: an empty source that stays empty is not a drop.
        return VolumeVerdict(rows, history, median, None, "ok", policy)
    change = rows / median - 1
    level: Level = (
        "block" if change <= policy.block_below else "warn" if change <= policy.warn_below else "ok"
    )
    return VolumeVerdict(rows, history, median, change, level, policy)
