"""Extract assets for every CRM declared in sources.yaml: each object's snapshot as of the partition.

The first run (or one with no earlier snapshot in the lake) reads everything. Later runs read only
the records whose cursor moved since the committed watermark minus the declared lookback, deletes
included, into ``lake/increment/...`` and rebuild the raw snapshot from the latest earlier one
(:mod:`crm_pipelines.connectors.snapshot`). ``_watermark.json`` in the raw partition says what the
extract reached; the raw load advances ``ops.watermark`` in the transaction that commits the rows, so
a run that fails before that leaves the watermark where it was and the next run reads the window again.

Objects with change tracking (``incremental.delta``, Dynamics 365) follow the delta link their base
snapshot ended with instead of a time window; the link is the watermark. Systems without a deletion
feed (``deletes: key_compare``) read every live key after an incremental read; keys gone since the
base snapshot stay in it with ``_deleted`` true.
"""

import shutil
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg

from crm_pipelines.connectors.engine import ExtractStats, SchemaDrift, parse_cursor
from crm_pipelines.connectors.snapshot import latest_snapshot_before, live_rows, merge_snapshot
from crm_pipelines.lake import partition_dir, reset_dir, stream_to_parquet
from crm_pipelines.partitions import NIGHTLY_PARTITIONS, partition_window
from crm_pipelines.progress import ProgressLog
from crm_pipelines.settings import current_timezone
from crm_pipelines.sources import load_sources
from crm_pipelines.warehouse.watermarks import (
    PendingWatermark,
    committed_watermark,
    read_pending,
    write_pending,
)
from resources.crm_api import CrmApiResource
from resources.lake import LakeResource, WarehouseResource


def api_resource_key(source: str) -> str:
    return f"{source}_api"


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
        committed = committed_watermark(warehouse.url, source=source, dataset=dataset)
        tracked = obj.incremental.delta is not None
        watermark = None if tracked else (parse_cursor(value=committed, fmt="iso8601") if committed else None)
        pending = read_pending(base.folder) if base is not None else None
        since: datetime | None = None
        base_reached: datetime | None = None
        delta_link: str | None = None
        if (
            tracked
            and base is not None
            and committed is not None
            and pending
            and pending.kind == "delta_link"
        ):
            # The base snapshot holds everything up to its link: follow that link, not the newest
            # committed one (an older partition run again rebuilds from its own base).
            delta_link = pending.reached
        elif not tracked and base is not None and watermark is not None:
            base_reached = parse_cursor(value=pending.reached if pending else None, fmt="iso8601")
            # The base snapshot may be older than the watermark (an older partition run again): read
            # from whichever is earlier so nothing between them is skipped.
            start = min(watermark, base_reached) if base_reached is not None else watermark
            since = start - timedelta(seconds=obj.incremental.lookback_seconds)
            if since >= until:
                since = None  # nothing sensible to read incrementally: take everything
        incremental = since is not None or delta_link is not None
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
            include_deleted=incremental,
            delta_link=delta_link,
        )
        live_keys: int | None = None
        if not incremental:
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
            assert base is not None
            read = stream_to_parquet(
                reset_dir(increment) / "part-0000.parquet", progress.counted(batches), empty_schema=schema
            )
            folder = reset_dir(raw)
            if stats.full_read:
                # The delta link had expired: what was read is the whole object, not changes.
                mode = "full (delta link expired)"
                shutil.move(increment / "part-0000.parquet", folder / "part-0000.parquet")
                rows, deleted = read, stats.deleted_rows
            else:
                mode = "incremental"
                keys_dir: Path | None = None
                if obj.deletes.mode == "key_compare":
                    keys_dir, live_keys = _read_live_keys(api, object_name, increment, base.folder)
                rows, deleted = merge_snapshot(
                    previous=base.folder,
                    increment=increment,
                    output=folder / "part-0000.parquet",
                    primary_key=obj.primary_key,
                    columns=schema.names,
                    live_keys=keys_dir,
                )
        progress.done()
        if tracked:
            reached_text = stats.delta_link
            kind = "delta_link"
        else:
            candidates = [c for c in (stats.max_cursor, base_reached) if c is not None]
            reached_text = _iso(max(candidates)) if candidates else None
            kind = "timestamp"
        # Written last: its presence marks the snapshot complete (see latest_snapshot_before).
        write_pending(
            folder,
            PendingWatermark(
                source=source,
                dataset=dataset,
                since=_iso(since) if not tracked else delta_link,
                reached=reached_text,
                kind=kind,
            ),
        )
        metadata: dict[str, dg.RawMetadataValue] = {
            "mode": mode,
            "method": stats.method,
            "rows": dg.MetadataValue.int(rows),
            "rows_read": dg.MetadataValue.int(read),
            "rows_deleted": dg.MetadataValue.int(deleted),
            "requests": dg.MetadataValue.int(stats.requests),
            "cutoff_utc": until.isoformat(),
            "watermark_committed": _shown(committed),
            "watermark_reached": _shown(reached_text),
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
        if live_keys is not None:
            metadata["live_keys_read"] = dg.MetadataValue.int(live_keys)
        if drift.has_drift:
            context.log.warning(drift.describe())
        return dg.MaterializeResult(metadata=metadata)

    return _extract


def _shown(cursor: str | None) -> str:
    """A watermark for metadata: a delta link's token is an opaque credential-free URL, kept short."""
    if cursor is None:
        return ""
    return cursor if len(cursor) <= 80 else cursor[:77] + "..."


def _read_live_keys(api: CrmApiResource, object_name: str, increment: Path, base: Path) -> tuple[Path, int]:
    """Read every live key into ``increment/keys`` (``deletes: key_compare``).

    A keys read that finds nothing while the last snapshot had live records would mark everything
    deleted: far likelier a wrong declaration or permission than an emptied CRM, so it stops the run.
    """
    keys_dir = reset_dir(increment / "keys")
    count = stream_to_parquet(
        keys_dir / "part-0000.parquet",
        api.extract_keys(object_name=object_name),
        empty_schema=api.key_schema(object_name=object_name),
    )
    if count == 0 and live_rows(base) > 0:
        raise dg.Failure(
            description=(
                f"{api.system} {object_name}: the keys read for delete detection returned no records while "
                f"the last snapshot has {live_rows(base)} live ones; refusing to mark them all deleted."
            ),
            metadata={"fix": "check the user's read permission and the object's request in the system YAML"},
        )
    return keys_dir, count


def build_crm_api_assets() -> list[dg.AssetsDefinition]:
    """One extract asset per (CRM system, dataset) declared in sources.yaml."""
    assets = []
    for source, spec in load_sources().items():
        if spec.kind != "crm_api":
            continue
        for dataset, declared in spec.datasets.items():
            assets.append(_build_extract(source, spec.title, dataset, declared.object or dataset))
    return assets
