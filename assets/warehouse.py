"""Load steps: the only assets that write the warehouse, one transaction each.

raw.<source>__<dataset>   the lake's raw partition, as extracted
staging.<entity>          valid canonical rows per partition (and staging.xref_identity)
core.*                    current state: golden records, crosswalk, facts
ops.quarantine            every row that did not make it, with the rule and reason
"""

import json
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb

from crm_pipelines.identity_paths import identity_files
from crm_pipelines.lake import has_parquet, parquet_glob, partition_dir, scan_parquet
from crm_pipelines.mapping.spec import load_mappings
from crm_pipelines.partitions import NIGHTLY_PARTITIONS
from crm_pipelines.sources import load_sources
from crm_pipelines.warehouse.deletes import load_deleted, soft_delete
from crm_pipelines.warehouse.load import (
    merge_by_key,
    newest_partition,
    record_load_state,
    replace_partition,
    replace_table,
)
from crm_pipelines.warehouse.quarantine import replace_quarantine
from crm_pipelines.warehouse.watermarks import advance_watermark, read_pending
from resources.lake import LakeResource, WarehouseResource

FACT_ENTITIES = ("opportunity", "sales_order", "invoice", "payment")
PARTY_ENTITIES = ("account", "contact")


def raw_table(source: str, dataset: str) -> str:
    return f"{source}__{dataset}"


def staging_folder(lake: LakeResource, entity: str, partition: str):  # type: ignore[no-untyped-def]
    return partition_dir(lake.path, "staging", "canonical", entity, partition)


def quality_quarantine_folder(lake: LakeResource, entity: str, partition: str):  # type: ignore[no-untyped-def]
    return partition_dir(lake.path, "quarantine", "quality", entity, partition)


def _record_sftp_files(
    con: duckdb.DuckDBPyConnection, source: str, dataset: str, folder: Path, partition: str, run_id: str
) -> list[dict[str, object]]:
    """Insert the ledger rows of the partition's landed file versions (inside the load's transaction)."""
    files = []
    for manifest_file in sorted(folder.glob("*.json")):
        manifest = json.loads(manifest_file.read_text())
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
        files.append(manifest)
    return files


@dataclass
class RawLoad:
    """What :func:`load_raw_dataset` did: rows loaded (None: nothing in the lake), files, watermark."""

    rows: int | None
    files: list[dict[str, object]]
    watermark: str | None


def load_raw_dataset(
    con: duckdb.DuckDBPyConnection,
    *,
    lake_dir: Path,
    source: str,
    dataset: str,
    kind: str,
    partition: str,
    run_id: str,
    log: dg.DagsterLogManager,
) -> RawLoad:
    """Land one dataset's lake partition in ``raw.<source>__<dataset>`` (inside the caller's transaction).

    Also its extract quarantine, its SFTP ledger rows and its pending watermark, so all of them
    commit with the rows or not at all.
    """
    folder = partition_dir(lake_dir, "raw", source, dataset, partition)
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
    files: list[dict[str, object]] = []
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
    pending = read_pending(folder)
    reached = None
    if pending is not None and advance_watermark(con, pending=pending, partition=partition, run_id=run_id):
        reached = pending.reached
    return RawLoad(rows=rows, files=files, watermark=reached)


def _build_raw_load(source: str, datasets: list[str], kind: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=["raw", source],
        deps=[dg.AssetKey([source, d]) for d in datasets],
        group_name="warehouse",
        partitions_def=NIGHTLY_PARTITIONS,
        kinds={"duckdb"},
        pool="warehouse",
        description=f"Lands the partition's {source} extracts in raw.{source}__<dataset>, in one transaction.",
    )
    def _load(
        context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        pk = context.partition_key
        loaded: dict[str, int] = {}
        files: list[dict[str, object]] = []
        watermarks: dict[str, str | None] = {}
        with warehouse.get().transaction() as con:
            for dataset in datasets:
                result = load_raw_dataset(
                    con,
                    lake_dir=lake.path,
                    source=source,
                    dataset=dataset,
                    kind=kind,
                    partition=pk,
                    run_id=context.run_id,
                    log=context.log,
                )
                files += result.files
                if result.rows is not None:
                    loaded[dataset] = result.rows
                if result.watermark is not None:
                    watermarks[dataset] = result.watermark
        metadata: dict[str, object] = {f"rows_{d}": dg.MetadataValue.int(n) for d, n in loaded.items()}
        if watermarks:
            metadata["watermarks_advanced"] = dg.MetadataValue.json(watermarks)
        if kind == "sftp":
            metadata["files"] = dg.MetadataValue.json(files)
        return dg.MaterializeResult(metadata=metadata)  # type: ignore[arg-type]

    return _load


def build_raw_load_assets() -> list[dg.AssetsDefinition]:
    """One raw load per source system."""
    return [
        _build_raw_load(source, list(spec.datasets), spec.kind) for source, spec in load_sources().items()
    ]


@dg.asset(
    key=["core", "identity"],
    deps=[dg.AssetKey(["identity", "resolution"])],
    group_name="warehouse",
    partitions_def=NIGHTLY_PARTITIONS,
    kinds={"duckdb"},
    pool="warehouse",
    description="Golden accounts and contacts with their crosswalk core.xref_identity, in one transaction.",
)
def core_identity(
    context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    pk = context.partition_key
    files = identity_files(lake.path, pk)
    counts: dict[str, int] = {}
    with warehouse.get().transaction() as con:
        for entity in PARTY_ENTITIES:
            folder = staging_folder(lake, entity, pk)
            if has_parquet(folder):
                counts[f"staging_{entity}"] = replace_partition(
                    con, schema="staging", table=entity, parquet_glob=parquet_glob(folder), partition=pk
                )
            load_deleted(con, lake_dir=lake.path, entity=entity, partition=pk)
            replace_quarantine(
                con,
                folder=quality_quarantine_folder(lake, entity, pk),
                partition=pk,
                stage="quality",
                entity=entity,
                run_id=context.run_id,
            )
        counts["staging_xref_identity"] = replace_partition(
            con, schema="staging", table="xref_identity", parquet_glob=str(files.xref), partition=pk
        )
        newest = newest_partition(con, "core.identity")
        if newest is not None and pk < newest:
            context.log.warning(f"core holds the newer partition {newest}; {pk} is kept in staging only")
        else:
            for name, path in (
                ("golden_account", files.golden_account),
                ("golden_contact", files.golden_contact),
                ("xref_identity", files.xref),
            ):
                counts[name] = replace_table(
                    con,
                    schema="core",
                    table=name,
                    select_sql=f"SELECT * FROM {scan_parquet(path)}",
                )
            record_load_state(con, target="core.identity", partition=pk, run_id=context.run_id)
    return dg.MaterializeResult(metadata={k: dg.MetadataValue.int(v) for k, v in counts.items()})


def _build_fact_load(entity: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=["core", entity],
        deps=[dg.AssetKey(["staging", entity])],
        group_name="warehouse",
        partitions_def=NIGHTLY_PARTITIONS,
        kinds={"duckdb"},
        pool="warehouse",
        description=f"Valid {entity} rows into staging.{entity} and merged into core.{entity}, in one transaction.",
    )
    def _load(
        context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        pk = context.partition_key
        folder = staging_folder(lake, entity, pk)
        staged = merged = 0
        with warehouse.get().transaction() as con:
            if has_parquet(folder):
                staged = replace_partition(
                    con, schema="staging", table=entity, parquet_glob=parquet_glob(folder), partition=pk
                )
                merged = merge_by_key(
                    con,
                    schema="core",
                    table=entity,
                    parquet_glob=parquet_glob(folder),
                    key="record_id",
                    partition=pk,
                    version_column="updated_at",
                )
            deleted = load_deleted(con, lake_dir=lake.path, entity=entity, partition=pk)
            soft_delete(con, table=entity, partition=pk, live_glob=parquet_glob(folder) if staged else None)
            quarantined = replace_quarantine(
                con,
                folder=quality_quarantine_folder(lake, entity, pk),
                partition=pk,
                stage="quality",
                entity=entity,
                run_id=context.run_id,
            )
        return dg.MaterializeResult(
            metadata={
                "staged_rows": dg.MetadataValue.int(staged),
                "core_rows_written": dg.MetadataValue.int(merged),
                "soft_deleted": dg.MetadataValue.int(deleted),
                "quarantine_rows": dg.MetadataValue.int(quarantined),
            }
        )

    return _load


def build_core_load_assets() -> list[dg.AssetsDefinition]:
    """The identity load and one load per fact entity that has mappings."""
    mapped = load_mappings().entities
    return [core_identity, *(_build_fact_load(e) for e in FACT_ENTITIES if e in mapped)]
