"""Staging assets: every source mapped onto the canonical entities, normalised and quality-checked.

The work is :func:`crm_pipelines.mapping.stage.stage_entity`, incremental by changed keys (each
source's ``staging_mode`` says whether it restaged everything and why, or which night it built on).
The quality suite's result, over the whole night's rows either way, is a blocking asset check: a
broken feed stops the load.
"""

from collections.abc import Iterator

import dagster as dg

from crm_pipelines.canonical import ENTITIES
from crm_pipelines.mapping.spec import load_mappings
from crm_pipelines.mapping.stage import stage_entity
from crm_pipelines.metadata import column_schema
from crm_pipelines.partitions import NIGHTLY_PARTITIONS
from resources.lake import LakeResource


def _build_staging(entity: str, inputs: list[dg.AssetKey]) -> dg.AssetsDefinition:
    key = dg.AssetKey(["staging", entity])

    @dg.asset(
        key=key,
        deps=inputs,
        group_name="transform",
        partitions_def=NIGHTLY_PARTITIONS,
        kinds={"duckdb", "parquet"},
        description=f"Canonical {entity} rows from every source: mapped, normalised, deduplicated by key and checked.",
        metadata={"dagster/column_schema": column_schema(ENTITIES[entity])},
        check_specs=[
            dg.AssetCheckSpec(
                "quality_suite",
                asset=key,
                blocking=True,
                description=f"Great Expectations suite for {entity} (crm_pipelines/quality/rules.yaml): "
                "failing rows are quarantined; too many failures stop the load.",
            )
        ],
    )
    def _staging(
        context: dg.AssetExecutionContext, lake: LakeResource
    ) -> "Iterator[dg.MaterializeResult[None] | dg.AssetCheckResult]":
        outcomes = stage_entity(
            entity=entity, lake_dir=lake.path, partition=context.partition_key, log=context.log
        )
        checked = [o for o in outcomes if o.skipped is None]
        rows = sum(o.rows_valid for o in checked)
        yield dg.MaterializeResult(
            metadata={
                "dagster/row_count": dg.MetadataValue.int(rows),
                "rows": dg.MetadataValue.int(rows),
                "rows_quarantined": dg.MetadataValue.int(sum(o.rows_quarantined for o in checked)),
                "duplicate_keys_collapsed": dg.MetadataValue.int(
                    sum(o.duplicate_keys_collapsed for o in checked)
                ),
                # Incremental staging: records mapped and validated tonight, and those whose outcome
                # was copied from an earlier night because their source rows did not change.
                "records_restaged": dg.MetadataValue.int(sum(o.records_restaged for o in checked)),
                "records_reused": dg.MetadataValue.int(sum(o.records_reused for o in checked)),
                "staging_mode": dg.MetadataValue.json(
                    {
                        o.source: o.mode if o.mode_reason is None else f"{o.mode}: {o.mode_reason}"
                        for o in checked
                    }
                ),
                "per_source": dg.MetadataValue.json({o.source: o.counts() for o in outcomes}),
            }
        )
        failed = [o for o in checked if not o.suite_success]
        yield dg.AssetCheckResult(
            check_name="quality_suite",
            passed=not failed,
            severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(
                f"{o.source}: rules {o.failed_rules} below their 'mostly' threshold" for o in failed
            )
            or "every rule met its threshold; failing rows are in ops.quarantine",
            metadata={o.source: dg.MetadataValue.json(o.quality) for o in checked},
        )

    return _staging


def build_staging_assets() -> list[dg.AssetsDefinition]:
    """One staging asset per entity that has mappings."""
    mappings = load_mappings()
    assets = []
    for entity, sources in mappings.entities.items():
        inputs = sorted({dg.AssetKey(d.split("/")) for m in sources for d in m.inputs.values()}, key=str)
        assets.append(_build_staging(entity, inputs))
    return assets
