"""Staging: one entity's rows from every source, mapped, normalised, deduplicated by key and checked.

Per source, the declared mapping runs as DuckDB SQL over the lake's raw Parquet and is materialised
once; rows with the same source key collapse to the newest; rows the source deleted go to the
entity's soft-delete log; the Great Expectations suite of the entity splits the rest into valid
rows (lake ``staging``) and quarantined rows with rule and reason (lake ``quarantine``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from crm_pipelines.canonical import ENTITIES, QUARANTINE
from crm_pipelines.lake import (
    LakePath,
    ParquetSink,
    partition_dir,
    publish,
    reset_dir,
    scan_parquet,
    scratch_dir,
    spill_dir,
)
from crm_pipelines.mapping.build import mapping_connection, plan_entity
from crm_pipelines.mapping.spec import load_mappings
from crm_pipelines.privacy.suppression import suppress_raw_partition
from crm_pipelines.progress import ProgressLog
from crm_pipelines.quality.validate import validate_batches
from crm_pipelines.sql import quote_literal
from crm_pipelines.warehouse.deletes import deleted_folder

__all__ = ["SourceStaging", "quality_quarantine_folder", "stage_entity", "staging_folder"]

BATCH_ROWS = 100_000


def staging_folder(lake_dir: LakePath, entity: str, partition: str) -> LakePath:
    """Lake folder of an entity's valid canonical rows, one Parquet file per source."""
    return partition_dir(lake_dir, "staging", "canonical", entity, partition)


def quality_quarantine_folder(lake_dir: LakePath, entity: str, partition: str) -> LakePath:
    """Lake folder of an entity's rows the quality suite quarantined, one Parquet file per source."""
    return partition_dir(lake_dir, "quarantine", "quality", entity, partition)


@dataclass
class SourceStaging:
    """What staging did with one source's rows of an entity."""

    source: str
    skipped: str | None = None
    rows_mapped: int = 0
    duplicate_keys_collapsed: int = 0
    rows_deleted: int = 0
    rows_valid: int = 0
    rows_quarantined: int = 0
    suite_success: bool = True
    failed_rules: list[str] = field(default_factory=list)
    quality: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "quality"}


def stage_entity(
    *,
    entity: str,
    lake_dir: LakePath,
    partition: str,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> list[SourceStaging]:
    """Map, deduplicate by source key and validate one entity for one partition.

    Args:
        entity: Canonical entity.
        lake_dir: Lake root.
        partition: Partition key.
        log: Where progress goes.

    Returns:
        One outcome per declared source of the entity.
    """
    schema = ENTITIES[entity]
    staging = reset_dir(staging_folder(lake_dir, entity, partition))
    quarantine = reset_dir(quality_quarantine_folder(lake_dir, entity, partition))
    deleted_dir = reset_dir(deleted_folder(lake_dir, entity, partition))
    outcomes: list[SourceStaging] = []
    mappings = load_mappings()
    # People erased on request stay out though a source still holds them: their rows leave the raw
    # lake files (quarantined as 'erased', hashes only) before they are mapped.
    for dataset in sorted({d for m in mappings.entities.get(entity, []) for d in m.inputs.values()}):
        source_dir, name = dataset.split("/", 1)
        suppressed = suppress_raw_partition(
            lake_dir=lake_dir, source_dir=source_dir, dataset=name, partition=partition, mappings=mappings
        )
        if suppressed:
            log.info(f"{entity}: {suppressed} rows of {dataset} dropped (ops.erasure_suppression)")
    con = mapping_connection(spill_dir=spill_dir(lake_dir))
    try:
        for planned in plan_entity(entity=entity, mappings=mappings, lake_dir=lake_dir, partition=partition):
            if planned.sql is None:
                log.warning(
                    f"{entity} from {planned.source}: no data for {partition} in {list(planned.missing_inputs)}"
                )
                outcomes.append(
                    SourceStaging(planned.source, skipped=f"no input in {list(planned.missing_inputs)}")
                )
                continue
            progress = ProgressLog(log, f"{entity} from {planned.source}")
            with scratch_dir(lake_dir) as scratch:
                # Materialise the mapping once: the normalising UDFs are the costly part.
                mapped = scratch / "mapped.parquet"
                con.execute(
                    f"COPY ({planned.sql}) TO {quote_literal(str(mapped))} (FORMAT parquet)"
                ).fetchall()
                scan = scan_parquet(mapped)
                ((mapped_rows, distinct),) = con.execute(
                    f"SELECT count(*), count(DISTINCT record_id) FROM {scan}"
                ).fetchall()
                # Several rows with one source key (an overlapping page, a corrected line): keep the newest.
                newest = (
                    f"SELECT * FROM {scan} "
                    "QUALIFY row_number() OVER (PARTITION BY record_id ORDER BY updated_at DESC NULLS LAST, _raw) = 1"
                )
                # Records the source deleted are not validated: they are logged as soft deletes.
                deleted_file = scratch / "deleted.parquet"
                con.execute(
                    f"COPY (SELECT record_id, source, source_id, {quote_literal(entity)} AS entity "
                    f"FROM ({newest}) WHERE _deleted) TO {quote_literal(str(deleted_file))} (FORMAT parquet)"
                ).fetchall()
                ((deleted_rows,),) = con.execute(
                    f"SELECT count(*) FROM {scan_parquet(deleted_file)}"
                ).fetchall()
                publish(deleted_file, deleted_dir / f"{planned.source}.parquet")
                reader = con.sql(f"SELECT * FROM ({newest}) WHERE NOT _deleted").to_arrow_reader(BATCH_ROWS)
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
            outcomes.append(
                SourceStaging(
                    planned.source,
                    rows_mapped=int(mapped_rows),
                    duplicate_keys_collapsed=int(mapped_rows) - int(distinct),
                    rows_deleted=int(deleted_rows),
                    rows_valid=summary.rows_valid,
                    rows_quarantined=summary.rows_quarantined,
                    suite_success=summary.success,
                    failed_rules=summary.failed_rules,
                    quality=summary.to_dict(),
                )
            )
    finally:
        con.close()
    return outcomes
