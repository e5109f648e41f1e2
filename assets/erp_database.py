"""Extract assets for the ERP database: each table's snapshot as of the partition, in the lake.

Full reads, or incremental ones merged onto the previous snapshot (``crm_pipelines/databases/extract.py``);
the raw load advances the watermark in the transaction that commits the rows.
"""

import time

import dagster as dg

from crm_pipelines.databases.extract import extract_table
from crm_pipelines.lake import partition_dir
from crm_pipelines.partitions import NIGHTLY_PARTITIONS
from crm_pipelines.retries import step_retry_policy
from crm_pipelines.sources import Dataset, load_sources
from crm_pipelines.warehouse.watermarks import committed_watermark
from resources.erp_database import ErpDatabaseResource
from resources.lake import LakeResource, WarehouseResource


def _build_extract(source: str, dataset: str, declared: Dataset) -> dg.AssetsDefinition:
    table = declared.table or dataset

    @dg.asset(
        key=[source, dataset],
        group_name=source,
        partitions_def=NIGHTLY_PARTITIONS,
        kinds={"sql", "parquet"},
        description=f"ERP table {table}: its snapshot as of the partition, streamed into the lake.",
        metadata={"source_table": table, "incremental": declared.incremental is not None},
        retry_policy=step_retry_policy(),
    )
    def _extract(
        context: dg.AssetExecutionContext,
        erp_database: ErpDatabaseResource,
        lake: LakeResource,
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult[None]:
        watermark = None
        if declared.incremental is not None:
            watermark = committed_watermark(warehouse.url, source=source, dataset=dataset)
        started = time.monotonic()
        database = erp_database.source()
        try:
            report = extract_table(
                database,
                lake_dir=lake.path,
                source_name=source,
                dataset=dataset,
                declared=declared,
                partition=context.partition_key,
                watermark=watermark,
                chunk_rows=erp_database.chunk_rows,
            )
        finally:
            database.close()
        context.log.info(
            f"{source}/{dataset}: {report.mode} read of {report.rows_read} rows, "
            f"snapshot {report.snapshot_rows} rows ({report.deleted_rows} deleted)"
        )
        metadata: dict[str, dg.RawMetadataValue] = {
            "mode": report.mode,
            "rows_read": dg.MetadataValue.int(report.rows_read),
            "dagster/row_count": dg.MetadataValue.int(report.snapshot_rows),
            "rows": dg.MetadataValue.int(report.snapshot_rows),
            "rows_deleted": dg.MetadataValue.int(report.deleted_rows),
            "seconds": round(time.monotonic() - started, 2),
            "lake_path": dg.MetadataValue.path(
                str(partition_dir(lake.path, "raw", source, dataset, context.partition_key))
            ),
        }
        if report.reached is not None:
            metadata["watermark_reached"] = report.reached
        if report.since is not None:
            metadata["read_since"] = report.since
            metadata["base_partition"] = report.base_partition or ""
        return dg.MaterializeResult(metadata=metadata)

    return _extract


def build_erp_database_assets() -> list[dg.AssetsDefinition]:
    """One extract asset per ERP table declared in sources.yaml."""
    return [
        _build_extract(source, dataset, declared)
        for source, spec in load_sources().items()
        if spec.kind == "database"
        for dataset, declared in spec.datasets.items()
    ]
