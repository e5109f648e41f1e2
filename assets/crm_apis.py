"""Extract assets for every CRM declared in sources.yaml: each object's snapshot as of the partition.

The first run (or one with no earlier snapshot in the lake) reads everything. Later runs read only
the records whose cursor moved since the committed watermark minus the declared lookback, deletes
included, into ``lake/increment/...`` and rebuild the raw snapshot from the latest earlier one
(:mod:`crm_pipelines.connectors.snapshot`). ``_watermark.json`` in the raw partition says what the
extract reached; the raw load advances ``ops.watermark`` in the transaction that commits the rows, so
a run that fails before that leaves the watermark where it was and the next run reads the window again.
"""

import shutil
from datetime import datetime, timedelta

import dagster as dg

from crm_pipelines.connectors.engine import ExtractStats, SchemaDrift, parse_cursor
from crm_pipelines.connectors.snapshot import latest_snapshot_before, merge_snapshot
from crm_pipelines.lake import partition_dir, reset_dir, stream_to_parquet
from crm_pipelines.partitions import NIGHTLY_PARTITIONS, partition_window
from crm_pipelines.progress import ProgressLog
from crm_pipelines.settings import current_timezone
from crm_pipelines.sources import load_sources
from crm_pipelines.warehouse.connection import Warehouse
from crm_pipelines.warehouse.watermarks import PendingWatermark, read_pending, read_watermark, write_pending
from resources.crm_api import CrmApiResource
from resources.lake import LakeResource, WarehouseResource


def api_resource_key(source: str) -> str:
    return f"{source}_api"


def committed_watermark(warehouse_url: str, *, source: str, dataset: str) -> datetime | None:
    """The dataset's committed watermark, read without taking a write connection."""
    with Warehouse(warehouse_url).connect(read_only=True) as con:
        value = read_watermark(con, source=source, dataset=dataset)
    return parse_cursor(value=value, fmt="iso8601") if value is not None else None


def _iso(value: datetime | None) -> str | None:
    # Fixed width, so the stored watermarks order as text the way they order in time.
    return value.isoformat(timespec="microseconds") if value is not None else None


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
    )
    def _extract(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        api: CrmApiResource = getattr(context.resources, resource_key)
        lake: LakeResource = context.resources.lake
        warehouse: WarehouseResource = context.resources.warehouse
        partition = context.partition_key
        obj = api.spec().get_object(object_name)
        schema = api.output_schema(object_name=object_name)
        _, until = partition_window(partition, current_timezone())
        raw = partition_dir(lake.path, "raw", source, dataset, partition)
        increment = partition_dir(lake.path, "increment", source, dataset, partition)

        base = latest_snapshot_before(lake_dir=lake.path, source=source, dataset=dataset, partition=partition)
        watermark = committed_watermark(warehouse.url, source=source, dataset=dataset)
        since: datetime | None = None
        base_reached: datetime | None = None
        if base is not None and watermark is not None:
            pending = read_pending(base.folder)
            base_reached = parse_cursor(value=pending.reached if pending else None, fmt="iso8601")
            # The base snapshot may be older than the watermark (an older partition run again): read
            # from whichever is earlier so nothing between them is skipped.
            start = min(watermark, base_reached) if base_reached is not None else watermark
            since = start - timedelta(seconds=obj.incremental.lookback_seconds)
            if since >= until:
                since = None  # nothing sensible to read incrementally: take everything
        progress = ProgressLog(context.log, f"{source}/{dataset}")
        drift = SchemaDrift(system=source, object_name=object_name)
        stats = ExtractStats()
        # A full read is the snapshot as of the cutoff: deleted records are simply not in it. An
        # incremental read also fetches deletes, which stay in the snapshot with _deleted = true.
        batches = api.extract(
            object_name=object_name,
            since=since,
            until=until,
            drift=drift,
            stats=stats,
            include_deleted=since is not None,
        )
        if since is None:
            mode = "full"
            if increment.exists():
                shutil.rmtree(increment)  # a stale increment of an earlier run must not be read
            folder = reset_dir(raw)
            rows = stream_to_parquet(
                folder / "part-0000.parquet", progress.counted(batches), empty_schema=schema
            )
            deleted = stats.deleted_rows
            read = rows
        else:
            mode = "incremental"
            assert base is not None
            read = stream_to_parquet(
                reset_dir(increment) / "part-0000.parquet", progress.counted(batches), empty_schema=schema
            )
            folder = reset_dir(raw)
            rows, deleted = merge_snapshot(
                previous=base.folder,
                increment=increment,
                output=folder / "part-0000.parquet",
                primary_key=obj.primary_key,
                columns=schema.names,
            )
        progress.done()
        candidates = [c for c in (stats.max_cursor, base_reached) if c is not None]
        reached = max(candidates) if candidates else None
        # Written last: its presence marks the snapshot complete (see latest_snapshot_before).
        write_pending(
            folder,
            PendingWatermark(source=source, dataset=dataset, since=_iso(since), reached=_iso(reached)),
        )
        metadata: dict[str, dg.RawMetadataValue] = {
            "mode": mode,
            "method": stats.method,
            "rows": dg.MetadataValue.int(rows),
            "rows_read": dg.MetadataValue.int(read),
            "rows_deleted": dg.MetadataValue.int(deleted),
            "requests": dg.MetadataValue.int(stats.requests),
            "cutoff_utc": until.isoformat(),
            "watermark_committed": _iso(watermark) or "",
            "watermark_reached": _iso(reached) or "",
            "seconds": round(progress.seconds, 2),
            "rows_per_second": round(progress.rate),
            # Fields the source has and the declaration does not (a custom field added in the CRM):
            # reported here and in the log, never a failure; declare them to extract them.
            "new_source_fields": sorted(drift.undeclared | drift.not_selected),
            "missing_declared_fields": sorted(drift.missing),
            "lake_path": dg.MetadataValue.path(str(folder)),
        }
        if since is not None and base is not None:
            metadata["read_since"] = since.isoformat()
            metadata["base_partition"] = base.partition
        if stats.bulk_jobs:
            metadata["bulk_jobs"] = stats.bulk_jobs
        if stats.search_windows:
            metadata["search_windows"] = dg.MetadataValue.int(stats.search_windows)
        if drift.has_drift:
            context.log.warning(drift.describe())
        return dg.MaterializeResult(metadata=metadata)

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
