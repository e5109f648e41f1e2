"""Extract assets for every CRM declared in sources.yaml: API pages streamed into the lake."""

import dagster as dg

from crm_pipelines.connectors.engine import SchemaDrift
from crm_pipelines.lake import partition_dir, reset_dir, stream_to_parquet
from crm_pipelines.partitions import NIGHTLY_PARTITIONS, partition_window
from crm_pipelines.progress import ProgressLog
from crm_pipelines.settings import current_timezone
from crm_pipelines.sources import load_sources
from resources.lake import LakeResource


def api_resource_key(source: str) -> str:
    return f"{source}_api"


def _build_extract(source: str, title: str, dataset: str, object_name: str) -> dg.AssetsDefinition:
    resource_key = api_resource_key(source)

    @dg.asset(
        key=[source, dataset],
        group_name=source,
        partitions_def=NIGHTLY_PARTITIONS,
        kinds={"api", "parquet"},
        required_resource_keys={resource_key, "lake"},
        description=f"{title} {object_name} records as of the end of the partition day, in the lake.",
        metadata={"source_object": object_name},
    )
    def _extract(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        api = getattr(context.resources, resource_key)
        lake: LakeResource = context.resources.lake
        _, until = partition_window(context.partition_key, current_timezone())
        folder = reset_dir(partition_dir(lake.path, "raw", source, dataset, context.partition_key))
        progress = ProgressLog(context.log, f"{source}/{dataset}")
        drift = SchemaDrift(system=source, object_name=object_name)
        # A snapshot as of the partition's end; deleted records are not part of it (soft deletes
        # come with incremental extraction).
        result = api.extract(
            object_name=object_name, since=None, until=until, drift=drift, include_deleted=False
        )
        rows = stream_to_parquet(
            folder / "part-0000.parquet",
            progress.counted(result),
            empty_schema=api.output_schema(object_name=object_name),
        )
        progress.done()
        return dg.MaterializeResult(
            metadata={
                "rows": dg.MetadataValue.int(rows),
                "cutoff_utc": until.isoformat(),
                "seconds": round(progress.seconds, 2),
                "rows_per_second": round(progress.rate),
                "new_source_fields": sorted(drift.undeclared),
                "missing_declared_fields": sorted(drift.missing),
                "lake_path": dg.MetadataValue.path(str(folder)),
            }
        )

    return _extract


def build_crm_api_assets() -> list[dg.AssetsDefinition]:
    """One extract asset per (CRM system, dataset) declared in sources.yaml."""
    assets = []
    for source, spec in load_sources().items():
        if spec.kind != "crm_api":
            continue
        for dataset, declared in spec.datasets.items():
            assets.append(_build_extract(source, spec.title, dataset, declared.object or dataset))
    return assets
