"""Soft deletes: records a source deleted stay in the warehouse, flagged, with their history.

Staging writes the deleted records of each entity to the lake (``staging/deleted/<entity>``);
the core load lands them in ``staging.deleted`` and flags the matching core rows ``is_deleted``.
"""

from __future__ import annotations

import duckdb

from crm_pipelines.lake import LakePath, has_parquet, parquet_glob, partition_dir, scan_parquet
from crm_pipelines.sql import qualified
from crm_pipelines.warehouse.connection import table_exists

DELETED_DDL = """
CREATE TABLE IF NOT EXISTS staging.deleted (
    record_id VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    source_id VARCHAR,
    entity VARCHAR NOT NULL,
    _partition VARCHAR NOT NULL
)
"""


def deleted_folder(lake_dir: LakePath, entity: str, partition: str) -> LakePath:
    """Lake folder of the source records of ``entity`` that their system deleted."""
    return partition_dir(lake_dir, "staging", "deleted", entity, partition)


def load_deleted(con: duckdb.DuckDBPyConnection, *, lake_dir: LakePath, entity: str, partition: str) -> int:
    """Replace the partition's deleted records of ``entity`` in ``staging.deleted``; returns how many."""
    con.execute(DELETED_DDL)
    con.execute("DELETE FROM staging.deleted WHERE _partition = ? AND entity = ?", [partition, entity])
    folder = deleted_folder(lake_dir, entity, partition)
    if not has_parquet(folder):
        return 0
    con.execute(
        "INSERT INTO staging.deleted BY NAME "
        f"SELECT record_id, source, source_id, entity, ? AS _partition FROM {scan_parquet(parquet_glob(folder))}",
        [partition],
    )
    row = con.execute(
        "SELECT count(*) FROM staging.deleted WHERE _partition = ? AND entity = ?", [partition, entity]
    ).fetchone()
    return int(row[0]) if row else 0


def soft_delete(con: duckdb.DuckDBPyConnection, *, table: str, partition: str, live_glob: str | None) -> None:
    """Flag ``core.<table>`` rows whose source record was deleted; rows loaded live again are unflagged."""
    if not table_exists(con, "core", table):
        return
    target = qualified("core", table)
    con.execute(f"ALTER TABLE {target} ADD COLUMN IF NOT EXISTS is_deleted BOOLEAN DEFAULT false")
    if live_glob is not None:
        con.execute(
            f"UPDATE {target} SET is_deleted = false "
            f"WHERE record_id IN (SELECT record_id FROM {scan_parquet(live_glob)})"
        )
    con.execute(
        f"UPDATE {target} SET is_deleted = true "
        "WHERE record_id IN (SELECT record_id FROM staging.deleted WHERE _partition = ? AND entity = ?)",
        [partition, table],
    )
