"""Snapshots from increments: the raw partition of day D is the full state as of D's end.

Staging, identity and reconciliation read ``raw/<source>/<dataset>/dt=D/`` as a snapshot, so an
incremental extract cannot simply land its changes there. It writes them to
``increment/<source>/<dataset>/dt=D/`` and the snapshot is rebuilt as the latest earlier snapshot
with every key the increment holds replaced by its newest increment row. The merge is one DuckDB
``COPY`` over Parquet: an anti-join against the (small) increment streams the (big) previous
snapshot through, so memory stays flat with the snapshot's size.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb

from crm_pipelines.connectors.engine import DELETED, EXTRACTED_AT
from crm_pipelines.lake import has_parquet, parquet_glob, partition_dir, scan_parquet
from crm_pipelines.warehouse.watermarks import PENDING_FILE

_PARTITION = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True)
class Snapshot:
    """A complete earlier snapshot in the lake."""

    partition: str
    folder: Path


def latest_snapshot_before(*, lake_dir: Path, source: str, dataset: str, partition: str) -> Snapshot | None:
    """The newest raw partition before ``partition`` that an extract finished.

    Its ``_watermark.json`` is written last, after the Parquet is in place, so a folder without it
    is a run that died midway and is not trusted as a base.

    Args:
        lake_dir: Root of the lake.
        source: Source system, e.g. ``salesforce``.
        dataset: Dataset, e.g. ``contacts``.
        partition: The partition being built (``YYYY-MM-DD``).

    Returns:
        The snapshot, or None when there is no complete earlier one.
    """
    root = partition_dir(lake_dir, "raw", source, dataset, partition).parent
    if not root.is_dir():
        return None
    found: list[Snapshot] = []
    for folder in root.iterdir():
        match = _PARTITION.match(folder.name)
        if match and match.group(1) < partition and has_parquet(folder) and (folder / PENDING_FILE).exists():
            found.append(Snapshot(match.group(1), folder))
    return max(found, key=lambda s: s.partition, default=None)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def merge_snapshot(
    *,
    previous: Path,
    increment: Path,
    output: Path,
    primary_key: str,
    columns: list[str],
    live_keys: Path | None = None,
) -> tuple[int, int]:
    """Write ``output`` = ``previous`` snapshot overlaid with ``increment`` (newest row per key).

    Args:
        previous: Folder of the earlier snapshot's Parquet files.
        increment: Folder of the increment's Parquet files.
        output: Parquet file to write (appears atomically).
        primary_key: Column identifying a record.
        columns: Output columns in order (the object's output schema); a column the earlier snapshot
            lacks (a newly declared field, ``_deleted`` in an old lake) comes out null, ``_deleted``
            false.
        live_keys: Folder of a keys-only read of the source (``deletes: key_compare``): a record whose
            key is not there has been deleted and stays in the snapshot with ``_deleted`` true.

    Returns:
        (rows in the snapshot, rows marked deleted).
    """
    key = _quote(primary_key)
    deleted = _quote(DELETED)
    if live_keys is not None:
        flag = f"(coalesce(m.{deleted}, false) OR k.{key} IS NULL) AS {deleted}"
        keys_join = f"LEFT JOIN (SELECT DISTINCT {key} FROM {scan_parquet(parquet_glob(live_keys))}) AS k ON k.{key} = m.{key}"
    else:
        flag = f"coalesce(m.{deleted}, false) AS {deleted}"
        keys_join = ""
    select = ", ".join(flag if c == DELETED else f"m.{_quote(c)}" for c in columns)
    tmp = output.with_name(f".{output.name}.inprogress")
    # Within the increment a key repeats only across passes (live, then deleted): the later
    # extraction is the newer state.
    sql = f"""
        COPY (
            WITH increment AS (
                SELECT * FROM {scan_parquet(parquet_glob(increment))}
                QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {_quote(EXTRACTED_AT)} DESC) = 1
            )
            SELECT {select} FROM (
                SELECT * FROM {scan_parquet(parquet_glob(previous))} AS p
                WHERE NOT EXISTS (SELECT 1 FROM increment AS i WHERE i.{key} = p.{key})
                UNION ALL BY NAME
                SELECT * FROM increment
            ) AS m
            {keys_join}
        ) TO '{str(tmp).replace("'", "''")}'
        (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 122880)
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    try:
        con.execute("SET preserve_insertion_order = false")  # lets the COPY stream in parallel
        con.execute(sql)
        os.replace(tmp, output)
        row = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE {deleted}) FROM {scan_parquet(output)}"
        ).fetchone()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        con.close()
    assert row is not None
    return int(row[0]), int(row[1])


def live_rows(folder: Path) -> int:
    """Rows of a snapshot not marked deleted."""
    con = duckdb.connect()
    try:
        row = con.execute(
            f"SELECT count(*) FILTER (WHERE NOT coalesce({_quote(DELETED)}, false)) FROM {scan_parquet(parquet_glob(folder))}"
        ).fetchone()
    finally:
        con.close()
    return int(row[0]) if row else 0
