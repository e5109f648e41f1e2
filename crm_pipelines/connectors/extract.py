"""One CRM object's snapshot as of a partition, in the lake: what to read, reading it, merging it.

The first run (or one with no complete earlier snapshot in the lake) reads everything. Later runs
read only the records whose cursor moved since the committed watermark minus the declared lookback,
deletes included, and merge them onto the latest earlier snapshot (:mod:`crm_pipelines.incremental`).
Objects with change tracking (``incremental.delta``, Dynamics 365) follow the delta link their base
snapshot ended with instead of a time window; the link is the watermark. Systems without a deletion
feed (``deletes: key_compare``) read every live key after an incremental read; keys gone since the
base snapshot stay in it with ``_deleted`` true.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import pyarrow as pa

from crm_pipelines.connectors.engine import ExtractStats, SchemaDrift, parse_cursor
from crm_pipelines.connectors.spec import SystemSpec
from crm_pipelines.delete_guard import check_deletions
from crm_pipelines.incremental import ReadPlan, SnapshotBuild, plan_read
from crm_pipelines.lake import LakePath
from crm_pipelines.progress import ProgressLog

__all__ = ["ApiExtract", "ObjectReader", "extract_api_object"]


class ObjectReader(Protocol):
    """What the extract needs of a CRM connection (``resources.crm_api.CrmApiResource`` is one)."""

    system: str

    def spec(self) -> SystemSpec: ...

    def output_schema(self, *, object_name: str) -> pa.Schema: ...

    def key_schema(self, *, object_name: str) -> pa.Schema: ...

    def extract(
        self,
        *,
        object_name: str,
        since: datetime | None,
        until: datetime | None,
        drift: SchemaDrift | None = None,
        on_page: Callable[[Any], None] | None = None,
        include_deleted: bool = True,
        stats: ExtractStats | None = None,
        delta_link: str | None = None,
    ) -> Iterator[pa.RecordBatch]: ...

    def extract_keys(
        self, *, object_name: str, stats: ExtractStats | None = None
    ) -> Iterator[pa.RecordBatch]: ...


@dataclass
class ApiExtract:
    """What one object's extract read and wrote (the asset's metadata)."""

    mode: str
    plan: ReadPlan
    folder: LakePath
    cutoff: datetime
    committed: str | None
    reached: str | None
    rows: int = 0
    rows_read: int = 0
    rows_deleted: int = 0
    live_keys_read: int | None = None
    seconds: float = 0.0
    rows_per_second: float = 0.0
    stats: ExtractStats = field(default_factory=ExtractStats)
    drift: SchemaDrift | None = None


def iso(value: datetime | None) -> str | None:
    """A timestamp watermark as stored: fixed width, so stored watermarks order as text as in time."""
    return value.isoformat(timespec="microseconds") if value is not None else None


def extract_api_object(
    api: ObjectReader,
    *,
    object_name: str,
    lake_dir: LakePath,
    dataset: str,
    partition: str,
    until: datetime,
    committed: str | None,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
) -> ApiExtract:
    """Land ``object_name``'s snapshot as of ``until`` in ``raw/<system>/<dataset>/dt=<partition>/``.

    Args:
        api: The CRM connection.
        object_name: A declared object of the system.
        lake_dir: Root of the lake.
        dataset: The dataset name in sources.yaml.
        partition: Partition key.
        until: The partition's cutoff (exclusive upper bound of the cursor).
        committed: The dataset's committed watermark (``ops.watermark``), None before the first load.
        log: Where progress goes (a logger or Dagster's log manager), or None.

    Returns:
        What was read and written.

    Raises:
        crm_pipelines.incremental.EmptyKeysRead: a keys read for delete detection found nothing.
        crm_pipelines.delete_guard.DeleteGuardTripped: the read would delete more than the object's
            ``deletes.max_share`` of its live records, unconfirmed.
    """
    source = api.system
    obj = api.spec().get_object(object_name)
    schema = api.output_schema(object_name=object_name)
    build = SnapshotBuild(lake_dir=lake_dir, source=source, dataset=dataset, partition=partition)
    base = build.base()
    tracked = obj.incremental.delta is not None
    plan = plan_read(
        base=base,
        # A change-tracked object's committed watermark is a link; its base's own link is followed.
        committed=None if tracked else _as_iso(committed),
        kind="delta_link" if tracked else "timestamp",
        lookback_seconds=obj.incremental.lookback_seconds,
        until=until,
    )
    since = plan.since if isinstance(plan.since, datetime) else None
    progress = ProgressLog(log, f"{source}/{dataset}")
    result = ApiExtract(
        mode=plan.mode, plan=plan, folder=build.raw, cutoff=until, committed=committed, reached=None
    )
    result.drift = SchemaDrift(system=source, object_name=object_name)
    # A full read is every live record as the system holds it now: deleted records are simply not
    # in it, and a record changed since the cutoff comes with its current values (leaving it out
    # would lose it from the snapshot; the next night reads it again, which changes nothing). An
    # incremental read stops at the cutoff and also fetches deletes, which stay in the snapshot
    # with _deleted = true.
    batches = progress.counted(
        api.extract(
            object_name=object_name,
            since=since,
            until=until if plan.incremental else None,
            drift=result.drift,
            stats=result.stats,
            include_deleted=plan.incremental,
            delta_link=plan.delta_link,
        )
    )
    stats = result.stats
    if not plan.incremental:
        result.rows = result.rows_read = build.write_full(batches, empty_schema=schema)
        result.rows_deleted = stats.deleted_rows
    else:
        assert plan.base is not None
        result.rows_read = build.write_increment(batches, empty_schema=schema)
        if stats.full_read:
            # The delta link had expired: what was read is the whole object, not changes.
            result.mode = "full (delta link expired)"
            build.adopt_increment()
            result.rows, result.rows_deleted = result.rows_read, stats.deleted_rows
        else:
            result.mode = "incremental"
            if obj.deletes.mode == "key_compare":
                result.live_keys_read = build.write_live_keys(
                    api.extract_keys(object_name=object_name),
                    schema=api.key_schema(object_name=object_name),
                    base=plan.base,
                    what=f"{source} {object_name}",
                )
            result.rows, result.rows_deleted = build.merge(
                base=plan.base, primary_key=[obj.primary_key], columns=schema.names
            )
    progress.done()
    if base is not None:
        # Before the snapshot counts as complete: a read that drops many live records stops here.
        check_deletions(
            lake_dir=lake_dir,
            source=source,
            dataset=dataset,
            previous=base.folder,
            new=build.snapshot_file,
            primary_key=[obj.primary_key],
            max_share=obj.deletes.max_share,
            min_rows=obj.deletes.min_rows,
        )
    if tracked:
        result.reached = stats.delta_link
        build.finish(since=plan.delta_link, reached=result.reached, kind="delta_link")
    else:
        base_reached = (
            parse_cursor(value=plan.base.pending.reached, fmt="iso8601") if plan.base is not None else None
        )
        candidates = [c for c in (stats.max_cursor, base_reached) if c is not None]
        result.reached = iso(max(candidates)) if candidates else None
        build.finish(since=iso(since), reached=result.reached, kind="timestamp")
    result.seconds, result.rows_per_second = progress.seconds, progress.rate
    return result


def _as_iso(committed: str | None) -> str | None:
    """The committed watermark as ISO text the planner reads (it is stored that way by this module)."""
    moment = parse_cursor(value=committed, fmt="iso8601") if committed else None
    return iso(moment)
