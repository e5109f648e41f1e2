"""Freshness and volume of every source, as declared in crm_pipelines/quality/monitoring.yaml.

- Every extract and mart carries its declared Dagster freshness policy (``FreshnessPolicy.time_window``,
  what Dagster 1.13 recommends over freshness checks): the UI and the freshness daemon show an asset
  the nightly run has not materialized in time.
- Each CRM and database extract has two checks, run after it in the same run: ``volume_drop_warn``
  (a warning: tonight's live rows fell past ``warn_below`` of the trailing median) and
  ``volume_drop_block`` (blocking: past ``block_below``, the raw load and the staging that read the
  extract do not run).
- Each such source's raw load has ``source_freshness``: a warning when nothing in the source changed
  within ``changed_within`` before the day's end.

The work is :mod:`crm_pipelines.quality.volume` and :mod:`crm_pipelines.quality.freshness`.
"""

from collections.abc import Iterator
from datetime import timedelta

import dagster as dg

from crm_pipelines.partitions import partition_window
from crm_pipelines.quality.freshness import shown_window, source_freshness
from crm_pipelines.quality.monitoring import Materialized, SourceMonitoring, load_monitoring
from crm_pipelines.quality.volume import VolumeVerdict, lake_live_rows, volume_verdict
from crm_pipelines.settings import current_timezone
from crm_pipelines.sources import load_sources
from resources.lake import LakeResource, WarehouseResource

FRESHNESS_CHECK = "source_freshness"
VOLUME_WARN_CHECK = "volume_drop_warn"
VOLUME_BLOCK_CHECK = "volume_drop_block"

# Extracts whose volume is a snapshot of the source: a night's rows can be compared with the last.
# A file drop's rows are that day's file, which rightly varies.
_SNAPSHOT_KINDS = ("crm_api", "database")


def _policy(materialized: Materialized) -> dg.FreshnessPolicy:
    return dg.FreshnessPolicy.time_window(
        fail_window=materialized.fail_after, warn_window=materialized.warn_after
    )


def with_declared_freshness(spec: dg.AssetSpec) -> dg.AssetSpec:
    """The spec with the freshness policy its source or mart declares (others unchanged)."""
    monitoring = load_monitoring()
    path = spec.key.path
    declared: Materialized | None = None
    if len(path) == 2 and path[0] == "marts" and path[1] in monitoring.marts:
        declared = monitoring.mart(path[1]).materialized
    elif len(path) == 2 and path[0] in monitoring.sources and path[1] in load_sources()[path[0]].datasets:
        declared = monitoring.source(path[0]).materialized
    return spec if declared is None else spec.replace_attributes(freshness_policy=_policy(declared))


def _volume_metadata(verdict: VolumeVerdict) -> "dict[str, dg.RawMetadataValue]":
    metadata: dict[str, dg.RawMetadataValue] = {
        "live_rows": dg.MetadataValue.int(verdict.rows),
        "nights_of_history": dg.MetadataValue.int(len(verdict.history)),
        "warn_below": f"{verdict.policy.warn_below:+.0%}",
        "block_below": f"{verdict.policy.block_below:+.0%}",
    }
    if verdict.median is not None:
        metadata["trailing_median"] = dg.MetadataValue.float(verdict.median)
    if verdict.change is not None:
        metadata["change"] = f"{verdict.change:+.1%}"
    return metadata


def _build_freshness_check(source: str, datasets: list[str], within: timedelta) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=dg.AssetKey(["raw", source]),
        name=FRESHNESS_CHECK,
        description=f"Warns when nothing in {source} changed within {shown_window(within)} before the "
        "day's end: the night ran, the source has stopped changing (crm_pipelines/quality/monitoring.yaml).",
    )
    def _check(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
        _, until = partition_window(context.partition_key, current_timezone())
        fresh = source_freshness(
            lake.path,
            source=source,
            datasets=datasets,
            partition=context.partition_key,
            until=until,
            allowed=within,
        )
        metadata: dict[str, dg.RawMetadataValue] = {}
        if fresh.last_change is not None:
            metadata["last_change"] = fresh.last_change.isoformat()
            metadata["last_changed_dataset"] = fresh.dataset or ""
        if fresh.age is not None:
            metadata["hours_since_last_change"] = round(fresh.age.total_seconds() / 3600, 1)
        return dg.AssetCheckResult(
            passed=fresh.level != "stale",
            severity=dg.AssetCheckSeverity.WARN,
            description=fresh.describe(),
            metadata=metadata,
        )

    return _check


def _build_volume_checks(source: str, dataset: str, declared: SourceMonitoring) -> dg.AssetChecksDefinition:
    key = dg.AssetKey([source, dataset])

    @dg.multi_asset_check(
        name=f"{source}__{dataset}__volume",
        specs=[
            dg.AssetCheckSpec(
                VOLUME_WARN_CHECK,
                asset=key,
                description=f"Warns when tonight's live {dataset} rows fall "
                f"{declared.volume.warn_below:+.0%} or more below the median of the last "
                f"{declared.volume.nights} nights.",
            ),
            dg.AssetCheckSpec(
                VOLUME_BLOCK_CHECK,
                asset=key,
                blocking=True,
                description=f"Stops the loads of {source}/{dataset} when its live rows fall "
                f"{declared.volume.block_below:+.0%} or more below the median of the last "
                f"{declared.volume.nights} nights.",
            ),
        ],
    )
    def _checks(
        context: dg.AssetCheckExecutionContext, lake: LakeResource, warehouse: WarehouseResource
    ) -> "Iterator[dg.AssetCheckResult]":
        partition = context.partition_key
        rows = lake_live_rows(lake.path, source=source, dataset=dataset, partition=partition)
        if rows is None:
            for name in (VOLUME_WARN_CHECK, VOLUME_BLOCK_CHECK):
                yield dg.AssetCheckResult(
                    check_name=name, asset_key=key, passed=True, description="nothing extracted: no verdict"
                )
            return
        with warehouse.get().connect(read_only=True) as con:
            verdict = volume_verdict(
                con, source=source, dataset=dataset, partition=partition, rows=rows, policy=declared.volume
            )
        metadata = _volume_metadata(verdict)
        yield dg.AssetCheckResult(
            check_name=VOLUME_WARN_CHECK,
            asset_key=key,
            passed=verdict.level not in ("warn", "block"),
            severity=dg.AssetCheckSeverity.WARN,
            description=verdict.describe(),
            metadata=metadata,
        )
        yield dg.AssetCheckResult(
            check_name=VOLUME_BLOCK_CHECK,
            asset_key=key,
            passed=verdict.level != "block",
            severity=dg.AssetCheckSeverity.ERROR,
            description=verdict.describe(),
            metadata=metadata,
        )

    return _checks


def build_source_checks() -> list[dg.AssetChecksDefinition]:
    """The volume checks of every CRM and database extract and the freshness check of every such source."""
    monitoring = load_monitoring()
    checks: list[dg.AssetChecksDefinition] = []
    for source, spec in load_sources().items():
        if spec.kind not in _SNAPSHOT_KINDS:
            continue
        declared = monitoring.source(source)
        checks += [_build_volume_checks(source, dataset, declared) for dataset in spec.datasets]
        if declared.changed_within is not None:
            checks.append(_build_freshness_check(source, list(spec.datasets), declared.changed_within))
    return checks
