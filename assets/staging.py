"""Staging: every source mapped onto the canonical entities, normalised and quality-checked.

Per entity, the declared mappings run as DuckDB SQL over the lake's raw Parquet; rows with the same
source key are collapsed to the newest; the Great Expectations suite of the entity splits the rest
into valid rows (lake ``staging``) and quarantined rows with rule and reason (lake ``quarantine``).
The suite's result is a blocking asset check: a broken feed stops the load.
"""

import tempfile
from pathlib import Path

import dagster as dg

from crm_pipelines.canonical import ENTITIES, QUARANTINE, descriptions
from crm_pipelines.lake import ParquetSink, partition_dir, reset_dir, scan_parquet
from crm_pipelines.mapping.build import mapping_connection, plan_entity
from crm_pipelines.mapping.spec import load_mappings
from crm_pipelines.partitions import NIGHTLY_PARTITIONS
from crm_pipelines.progress import ProgressLog
from crm_pipelines.quality.validate import validate_batches
from crm_pipelines.sql import quote_literal
from resources.lake import LakeResource

BATCH_ROWS = 100_000


def stage_entity(
    *, entity: str, lake_dir: Path, partition: str, log: dg.DagsterLogManager
) -> dict[str, dict[str, object]]:
    """Map, deduplicate by source key and validate one entity for one partition.

    Args:
        entity: Canonical entity.
        lake_dir: Lake root.
        partition: Partition key.
        log: Where progress goes.

    Returns:
        Per source: counts and the quality summary.
    """
    schema = ENTITIES[entity]
    staging = reset_dir(partition_dir(lake_dir, "staging", "canonical", entity, partition))
    quarantine = reset_dir(partition_dir(lake_dir, "quarantine", "quality", entity, partition))
    per_source: dict[str, dict[str, object]] = {}
    con = mapping_connection()
    try:
        for planned in plan_entity(
            entity=entity, mappings=load_mappings(), lake_dir=lake_dir, partition=partition
        ):
            if planned.sql is None:
                log.warning(
                    f"{entity} from {planned.source}: no data for {partition} in {list(planned.missing_inputs)}"
                )
                per_source[planned.source] = {"skipped": f"no input in {list(planned.missing_inputs)}"}
                continue
            progress = ProgressLog(log, f"{entity} from {planned.source}")
            with tempfile.TemporaryDirectory(dir=lake_dir) as scratch:
                # Materialise the mapping once: the normalising UDFs are the costly part.
                mapped = Path(scratch) / "mapped.parquet"
                con.execute(f"COPY ({planned.sql}) TO {quote_literal(str(mapped))} (FORMAT parquet)")
                scan = scan_parquet(mapped)
                row = con.execute(f"SELECT count(*), count(DISTINCT record_id) FROM {scan}").fetchone()
                mapped_rows, distinct = (int(row[0]), int(row[1])) if row else (0, 0)
                # Several rows with one source key (an overlapping page, a corrected line): keep the newest.
                reader = con.execute(
                    f"SELECT * FROM {scan} "
                    "QUALIFY row_number() OVER (PARTITION BY record_id ORDER BY updated_at DESC NULLS LAST, _raw) = 1"
                ).to_arrow_reader(BATCH_ROWS)
                run = validate_batches(entity=entity, batches=progress.counted(reader), source=planned.source)
                with (
                    ParquetSink(staging / f"{planned.source}.parquet", schema) as valid_sink,
                    ParquetSink(quarantine / f"{planned.source}.parquet", QUARANTINE) as quarantine_sink,
                ):
                    for result in run:
                        valid_sink.write(result.valid.select(schema.names))
                        quarantine_sink.write(result.quarantine)
            progress.done()
            summary = run.summary
            per_source[planned.source] = {
                "rows_mapped": mapped_rows,
                "duplicate_keys_collapsed": mapped_rows - distinct,
                "rows_valid": summary.rows_valid,
                "rows_quarantined": summary.rows_quarantined,
                "suite_success": summary.success,
                "failed_rules": summary.failed_rules,
                "quality": summary.to_dict(),
            }
    finally:
        con.close()
    return per_source


def _build_staging(entity: str, inputs: list[dg.AssetKey]) -> dg.AssetsDefinition:
    key = dg.AssetKey(["staging", entity])

    @dg.asset(
        key=key,
        deps=inputs,
        group_name="transform",
        partitions_def=NIGHTLY_PARTITIONS,
        kinds={"duckdb", "parquet"},
        description=f"Canonical {entity} rows from every source: mapped, normalised, deduplicated by key and checked.",
        metadata={
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(n, description=d) for n, d in descriptions(ENTITIES[entity]).items()]
            )
        },
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
    def _staging(context: dg.AssetExecutionContext, lake: LakeResource):  # type: ignore[no-untyped-def]
        per_source = stage_entity(
            entity=entity, lake_dir=lake.path, partition=context.partition_key, log=context.log
        )
        checked = {s: v for s, v in per_source.items() if "suite_success" in v}
        yield dg.MaterializeResult(
            metadata={
                "rows": dg.MetadataValue.int(sum(int(v["rows_valid"]) for v in checked.values())),  # type: ignore[call-overload]
                "rows_quarantined": dg.MetadataValue.int(
                    sum(int(v["rows_quarantined"]) for v in checked.values())
                ),  # type: ignore[call-overload]
                "duplicate_keys_collapsed": dg.MetadataValue.int(
                    sum(int(v["duplicate_keys_collapsed"]) for v in checked.values())  # type: ignore[call-overload]
                ),
                "per_source": dg.MetadataValue.json(
                    {s: {k: v for k, v in d.items() if k != "quality"} for s, d in per_source.items()}
                ),
            }
        )
        failed = {s: v["failed_rules"] for s, v in checked.items() if not v["suite_success"]}
        yield dg.AssetCheckResult(
            check_name="quality_suite",
            passed=not failed,
            severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(f"{s}: rules {r} below their 'mostly' threshold" for s, r in failed.items())
            or "every rule met its threshold; failing rows are in ops.quarantine",
            metadata={s: dg.MetadataValue.json(v["quality"]) for s, v in checked.items()},
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
