"""ops.quarantine: the rows that were held back, with file/line or record, rule and reason."""

from __future__ import annotations

import duckdb

from crm_pipelines.lake import LakePath, has_parquet, parquet_glob, scan_parquet


def replace_quarantine(
    con: duckdb.DuckDBPyConnection,
    *,
    folder: LakePath,
    partition: str,
    stage: str,
    run_id: str,
    source: str | None = None,
    entity: str | None = None,
) -> int:
    """Replace one partition's quarantine rows of a stage (and source or entity) with the lake's.

    Args:
        con: Connection inside the load's transaction.
        folder: Lake folder with quarantine Parquet (canonical.QUARANTINE schema); may be absent.
        partition: Partition key.
        stage: ``extract`` or ``quality``.
        run_id: The run that loads them.
        source: Scope the replacement to one source (extract stage).
        entity: Scope the replacement to one entity (quality stage).

    Returns:
        Quarantine rows inserted.
    """
    filters = {"partition": partition, "stage": stage}
    if source is not None:
        filters["source"] = source
    if entity is not None:
        filters["entity"] = entity
    condition = " AND ".join(f"{column} = ?" for column in filters)
    con.execute(f"DELETE FROM ops.quarantine WHERE {condition}", list(filters.values()))
    if not has_parquet(folder):
        return 0
    scan = scan_parquet(parquet_glob(folder))
    con.execute(
        "INSERT INTO ops.quarantine BY NAME "
        f"SELECT ? AS partition, ? AS stage, source, entity, record_id, record, rule, reason, ? AS run_id FROM {scan}",
        [partition, stage, run_id],
    )
    row = con.execute(f"SELECT count(*) FROM {scan}").fetchone()
    return int(row[0]) if row else 0
