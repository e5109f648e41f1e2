"""Extract assets for the ERP database: tables streamed in chunks into the lake."""

import itertools

import dagster as dg

from crm_pipelines.lake import partition_dir, reset_dir, write_batches
from crm_pipelines.partitions import NIGHTLY_PARTITIONS
from crm_pipelines.progress import ProgressLog
from crm_pipelines.sources import Dataset, load_sources
from resources.erp_database import ErpDatabaseResource
from resources.lake import LakeResource


def _build_extract(source: str, dataset: str, declared: Dataset) -> dg.AssetsDefinition:
    table = declared.table or dataset

    @dg.asset(
        key=[source, dataset],
        group_name=source,
        partitions_def=NIGHTLY_PARTITIONS,
        kinds={"sql", "parquet"},
        description=f"ERP table {table}, streamed in chunks into the lake.",
        metadata={"source_table": table},
    )
    def _extract(
        context: dg.AssetExecutionContext, erp_database: ErpDatabaseResource, lake: LakeResource
    ) -> dg.MaterializeResult:
        folder = reset_dir(partition_dir(lake.path, "raw", source, dataset, context.partition_key))
        progress = ProgressLog(context.log, f"{source}/{dataset}")
        batches = erp_database.read_table(table=table, order_by=declared.order_by)
        # The first batch always exists (an empty table yields one empty batch) and fixes the schema.
        first = next(batches)
        rows = write_batches(
            folder / "part-0000.parquet", first.schema, progress.counted(itertools.chain([first], batches))
        )
        progress.done()
        return dg.MaterializeResult(
            metadata={
                "rows": dg.MetadataValue.int(rows),
                "seconds": round(progress.seconds, 2),
                "rows_per_second": round(progress.rate),
                "lake_path": dg.MetadataValue.path(str(folder)),
            }
        )

    return _extract


def build_erp_database_assets() -> list[dg.AssetsDefinition]:
    """One extract asset per ERP table declared in sources.yaml."""
    return [
        _build_extract(source, dataset, declared)
        for source, spec in load_sources().items()
        if spec.kind == "database"
        for dataset, declared in spec.datasets.items()
    ]
