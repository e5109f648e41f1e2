"""Extract assets for every CRM declared in sources.yaml: each object's snapshot as of the partition.

What is read and how it is merged is :mod:`crm_pipelines.connectors.extract`; the raw load advances
``ops.watermark`` in the transaction that commits the rows.
"""

from datetime import datetime

import dagster as dg

from crm_pipelines.connectors.extract import ApiExtract, extract_api_object
from crm_pipelines.delete_guard import DeleteGuardTripped
from crm_pipelines.incremental import EmptyKeysRead
from crm_pipelines.partitions import NIGHTLY_PARTITIONS, partition_window
from crm_pipelines.retries import step_retry_policy
from crm_pipelines.settings import current_timezone
from crm_pipelines.sources import load_sources
from crm_pipelines.warehouse.watermarks import committed_watermark
from resources.crm_api import CrmApiResource
from resources.lake import LakeResource, WarehouseResource


def api_resource_key(source: str) -> str:
    return f"{source}_api"


def _build_extract(source: str, title: str, dataset: str, object_name: str) -> dg.AssetsDefinition:
    resource_key = api_resource_key(source)

    @dg.asset(
        key=[source, dataset],
        group_name=source,
        partitions_def=NIGHTLY_PARTITIONS,
        kinds={"api", "parquet"},
        required_resource_keys={resource_key, "lake", "warehouse"},
        description=f"{title} {object_name} records as of the end of the partition day, in the lake.",
        metadata={"source_object": object_name},
        retry_policy=step_retry_policy(),
    )
    def _extract(context: dg.AssetExecutionContext) -> dg.MaterializeResult[None]:
        api: CrmApiResource = getattr(context.resources, resource_key)
        lake: LakeResource = context.resources.lake
        warehouse: WarehouseResource = context.resources.warehouse
        _, until = partition_window(context.partition_key, current_timezone())
        try:
            result = extract_api_object(
                api,
                object_name=object_name,
                lake_dir=lake.path,
                dataset=dataset,
                partition=context.partition_key,
                until=until,
                committed=committed_watermark(warehouse.url, source=source, dataset=dataset),
                log=context.log,
            )
        except EmptyKeysRead as exc:
            raise dg.Failure(
                description=str(exc),
                metadata={
                    "fix": "check the user's read permission and the object's request in the system YAML"
                },
                allow_retries=False,
            ) from exc
        except DeleteGuardTripped as exc:
            # Stays failed until an operator confirms: retrying would only trip it again.
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        if result.drift is not None and result.drift.has_drift:
            context.log.warning(result.drift.describe())
        return dg.MaterializeResult(metadata=_metadata(result))

    return _extract


def _metadata(result: ApiExtract) -> "dict[str, dg.RawMetadataValue]":
    stats, drift, plan = result.stats, result.drift, result.plan
    metadata: dict[str, dg.RawMetadataValue] = {
        "mode": result.mode,
        "method": stats.method,
        "dagster/row_count": dg.MetadataValue.int(result.rows),
        "rows": dg.MetadataValue.int(result.rows),
        "rows_read": dg.MetadataValue.int(result.rows_read),
        "rows_deleted": dg.MetadataValue.int(result.rows_deleted),
        "requests": dg.MetadataValue.int(stats.requests),
        "cutoff_utc": result.cutoff.isoformat(),
        "watermark_committed": _shown(result.committed),
        "watermark_reached": _shown(result.reached),
        "seconds": round(result.seconds, 2),
        "rows_per_second": round(result.rows_per_second),
        # Fields the source has and the declaration does not (a custom field added in the CRM):
        # reported here and in the log, never a failure; declare them to extract them.
        "new_source_fields": sorted(drift.undeclared | drift.not_selected) if drift else [],
        "missing_declared_fields": sorted(drift.missing) if drift else [],
        "lake_path": dg.MetadataValue.path(str(result.folder)),
    }
    if isinstance(plan.since, datetime) and plan.base is not None:
        metadata["read_since"] = plan.since.isoformat()
        metadata["base_partition"] = plan.base.partition
    if stats.bulk_jobs:
        metadata["bulk_jobs"] = stats.bulk_jobs
    if stats.search_windows:
        metadata["search_windows"] = dg.MetadataValue.int(stats.search_windows)
    if result.live_keys_read is not None:
        metadata["live_keys_read"] = dg.MetadataValue.int(result.live_keys_read)
    return metadata


def _shown(cursor: str | None) -> str:
    """A watermark for metadata: a delta link's token is an opaque credential-free URL, kept short."""
    if cursor is None:
        return ""
    return cursor if len(cursor) <= 80 else cursor[:77] + "..."


def build_crm_api_assets() -> list[dg.AssetsDefinition]:
    """One extract asset per (CRM system, dataset) declared in sources.yaml."""
    assets = []
    for source, spec in load_sources().items():
        if spec.kind != "crm_api":
            continue
        for dataset, declared in spec.datasets.items():
            assets.append(_build_extract(source, spec.title, dataset, declared.object or dataset))
    return assets
