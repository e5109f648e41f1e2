"""The raw layer: one source dataset's lake partition into ``raw.<source>__<dataset>``.

With the rows commit, in the caller's transaction, everything that describes them: the extract's
quarantined lines, the SFTP ledger rows of the file versions landed, the night's live rows
(``ops.source_volume``) and the pending watermark. A
run that fails before the commit leaves all of them where they were.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import duckdb

from crm_pipelines.files.landing import day_lock, landed_manifests
from crm_pipelines.lake import LakePath, has_parquet, parquet_glob, partition_dir
from crm_pipelines.mapping.spec import load_mappings
from crm_pipelines.privacy.suppression import suppress_raw_partition
from crm_pipelines.quality.volume import live_rows, record_volume
from crm_pipelines.warehouse.load import replace_partition
from crm_pipelines.warehouse.quarantine import replace_quarantine
from crm_pipelines.warehouse.watermarks import advance_watermark, read_pending

__all__ = ["RawLoad", "load_raw_dataset", "raw_table"]


def raw_table(source: str, dataset: str) -> str:
    """Name of a dataset's table in the ``raw`` schema."""
    return f"{source}__{dataset}"


@dataclass
class RawLoad:
    """What :func:`load_raw_dataset` did: rows loaded (None: nothing in the lake), files, watermark."""

    rows: int | None
    files: list[dict[str, Any]]
    watermark: str | None


def _record_sftp_files(
    con: duckdb.DuckDBPyConnection, source: str, dataset: str, folder: LakePath, partition: str, run_id: str
) -> list[dict[str, Any]]:
    """Insert the ledger rows of the partition's landed file versions (inside the load's transaction)."""
    files = landed_manifests(folder)
    for manifest in files:
        # The ledger row commits with the rows it describes: a file version is ingested once.
        con.execute(
            "INSERT INTO ops.file_ingest (source, dataset, path, sha256, size, partition, data_lines, "
            "rows_landed, rows_quarantined, run_id, new_columns, ingested_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now()) ON CONFLICT DO NOTHING",
            [
                source,
                dataset,
                manifest["path"],
                manifest["sha256"],
                manifest["size"],
                partition,
                manifest["data_lines"],
                manifest["rows_landed"],
                manifest["rows_quarantined"],
                run_id,
                manifest.get("new_columns", []),
            ],
        )
    return files


def load_raw_dataset(
    con: duckdb.DuckDBPyConnection,
    *,
    lake_dir: LakePath,
    source: str,
    dataset: str,
    kind: str,
    partition: str,
    run_id: str,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> RawLoad:
    """Land one dataset's lake partition in ``raw.<source>__<dataset>`` (inside the caller's transaction).

    Also its extract quarantine, its SFTP ledger rows and its pending watermark, so all of them
    commit with the rows or not at all.
    """
    folder = partition_dir(lake_dir, "raw", source, dataset, partition)
    # A drop's day folder changes while files land (a replacement swaps one version for another):
    # it is read under the lock the landing publishes under, so each file loads in one version, whole.
    with day_lock(folder) if kind == "sftp" else contextlib.nullcontext():
        # People erased on request stay out though the source still holds them (quarantined as 'erased').
        suppress_raw_partition(
            lake_dir=lake_dir,
            source_dir=source,
            dataset=dataset,
            partition=partition,
            mappings=load_mappings(),
        )
        # Extract-stage quarantine (file lines) is scoped to the dataset's entity, so one
        # dataset's replacement never wipes another's. It loads even when no row survived.
        replace_quarantine(
            con,
            folder=partition_dir(lake_dir, "quarantine", source, dataset, partition),
            partition=partition,
            stage="extract",
            source=source,
            entity=load_mappings().entity_of(f"{source}/{dataset}") or dataset,
            run_id=run_id,
        )
        files: list[dict[str, Any]] = []
        if kind == "sftp":
            # Ledger rows commit with the rows they describe, also for files rejected whole,
            # or those files would never reach the error folder.
            files = _record_sftp_files(con, source, dataset, folder, partition, run_id)
        if not has_parquet(folder):
            log.warning(f"{source}/{dataset}: nothing in the lake for {partition}")
            return RawLoad(rows=None, files=files, watermark=None)
        rows = replace_partition(
            con,
            schema="raw",
            table=raw_table(source, dataset),
            parquet_glob=parquet_glob(folder),
            partition=partition,
        )
        # The night's live rows, for the volume checks of later nights (crm_pipelines/quality/volume.py).
        record_volume(
            con,
            source=source,
            dataset=dataset,
            partition=partition,
            rows=live_rows(con, parquet_glob(folder)),
            run_id=run_id,
        )
        pending = read_pending(folder)
        reached = None
        if pending is not None and advance_watermark(
            con, pending=pending, partition=partition, run_id=run_id
        ):
            reached = pending.reached
        return RawLoad(rows=rows, files=files, watermark=reached)
