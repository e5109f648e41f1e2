"""Staging: one entity's rows from every source, mapped, normalised, deduplicated by key and checked.

Per source, the declared mapping runs as DuckDB SQL over the lake's raw Parquet and is materialised
once; rows with the same source key collapse to the newest; rows the source deleted go to the
entity's soft-delete log; the Great Expectations suite of the entity splits the rest into valid
rows (lake ``staging``) and quarantined rows with rule and reason (lake ``quarantine``).

Incremental by changed keys. The raw folder of a night is the whole object, and a record's staged
outcome depends only on its source rows (the source SELECT's row, joins included, which ``_raw``
holds) and on the declarations. So staging runs the cheap source SELECT over every row
(:attr:`~crm_pipelines.mapping.build.PlannedMapping.source_sql`), fingerprints each record (DuckDB's
64-bit hash of its rows, whatever the query joined included), compares with the state of the newest
earlier night that can serve as a base (:func:`crm_pipelines.mapping.state.find_base`: complete,
unchanged since written, same declarations) and maps, deduplicates, logs deletes and validates
only the records that are new or changed and those without a key; the others' valid row, quarantine
rows and delete entry are copied from the base night's files by ``record_id``, and ids gone from the
source simply are not copied. The night's files hold what a full run writes (row order aside).
Without a base, or when more than :data:`MAX_RESTAGED_SHARE` of the records changed, staging is full.

The quality suite's ``mostly`` verdict stays the whole night's: each rule's counts (rows evaluated,
rows failing) are the base night's, minus those of the base's versions of the changed and removed
records (validated again from the base's state file), plus those of the restaged records; every
rule reads one row, so the sums are exactly a full run's (a rule comparing rows, a uniqueness rule
on a column other than record_id, makes staging full). ``rows_valid``, ``rows_quarantined`` and the
other counts are the night's too; the suite's ``batches``, ``gx_statistics`` and ``seconds`` describe
the validation of the restaged rows. Before the files are published, the error rules' failing counts
are checked against the night's quarantine rows; should they differ, the source is staged in full.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from crm_pipelines.canonical import ENTITIES, QUARANTINE
from crm_pipelines.lake import (
    LakePath,
    ParquetSink,
    files_in,
    move_tree,
    partition_dir,
    publish,
    remove_tree,
    reset_dir,
    scan_parquet,
    scratch_dir,
    spill_dir,
)
from crm_pipelines.mapping.build import (
    KEY_HAS_KEY,
    KEY_RECORD_ID,
    KEY_ROW,
    PlannedMapping,
    mapping_connection,
    plan_entity,
)
from crm_pipelines.mapping.spec import Mappings, load_mappings
from crm_pipelines.mapping.state import (
    FINGERPRINT,
    Base,
    StagingMarker,
    cross_row_rules,
    declarations_digest,
    file_digest,
    find_base,
    state_folder,
    write_marker,
)
from crm_pipelines.privacy.suppression import suppress_raw_partition
from crm_pipelines.progress import ProgressLog
from crm_pipelines.quality.rules import RAW_COLUMN, RuleSet, load_rules
from crm_pipelines.quality.validate import RuleStats, ValidationSummary, validate_batches
from crm_pipelines.sql import quote_literal
from crm_pipelines.warehouse.deletes import deleted_folder

__all__ = [
    "SourceStaging",
    "night_files",
    "quality_quarantine_folder",
    "stage_entity",
    "staging_folder",
]

BATCH_ROWS = 100_000
# Past this share of changed records, restaging them costs about what a full run does.
MAX_RESTAGED_SHARE = 0.5


def staging_folder(lake_dir: LakePath, entity: str, partition: str) -> LakePath:
    """Lake folder of an entity's valid canonical rows, one Parquet file per source."""
    return partition_dir(lake_dir, "staging", "canonical", entity, partition)


def quality_quarantine_folder(lake_dir: LakePath, entity: str, partition: str) -> LakePath:
    """Lake folder of an entity's rows the quality suite quarantined, one Parquet file per source."""
    return partition_dir(lake_dir, "quarantine", "quality", entity, partition)


def night_files(lake_dir: LakePath, entity: str, partition: str, source: str) -> dict[str, LakePath]:
    """One night's staging files of one (entity, source), by role."""
    return {
        "staging": staging_folder(lake_dir, entity, partition) / f"{source}.parquet",
        "quarantine": quality_quarantine_folder(lake_dir, entity, partition) / f"{source}.parquet",
        "deleted": deleted_folder(lake_dir, entity, partition) / f"{source}.parquet",
        "state": state_folder(lake_dir, entity, partition) / f"{source}.parquet",
    }


@dataclass
class SourceStaging:
    """What staging did with one source's rows of an entity."""

    source: str
    skipped: str | None = None
    mode: str = "full"  # "full" or "incremental"
    mode_reason: str | None = None  # why full; for incremental, the base night
    base_partition: str | None = None
    records_restaged: int = 0  # records (source keys) mapped and validated tonight
    records_reused: int = 0  # records whose outcome was copied from the base night
    records_removed: int = 0  # keys of the base night no longer in the source
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


class _Inconsistent(RuntimeError):
    """The incremental totals do not add up: the source is staged in full instead."""


def stage_entity(
    *,
    entity: str,
    lake_dir: LakePath,
    partition: str,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    incremental: bool = True,
) -> list[SourceStaging]:
    """Map, deduplicate by source key and validate one entity for one partition.

    Args:
        entity: Canonical entity.
        lake_dir: Lake root.
        partition: Partition key.
        log: Where progress goes.
        incremental: Reuse an earlier night's outcomes for the records that did not change; False
            stages every record.

    Returns:
        One outcome per declared source of the entity.
    """
    # A night run again starts from its last run: that run's files are kept aside (under
    # ``staging/rerun/``, laid out as a lake of their own) and read as the base; they go once the night
    # is staged. The state and its markers go from the night's folders too: a run that dies from here
    # on leaves no base there, while the kept run stays one for the next attempt.
    kept = rerun_root(lake_dir)
    folders = (staging_folder, quality_quarantine_folder, deleted_folder, state_folder)
    if files_in(state_folder(lake_dir, entity, partition), "*.json"):
        for folder in folders:
            move_tree(folder(lake_dir, entity, partition), folder(kept, entity, partition))
    for folder in folders:
        reset_dir(folder(lake_dir, entity, partition))
    outcomes: list[SourceStaging] = []
    mappings = load_mappings()
    rules = load_rules()
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
            stager = _SourceStager(
                con=con,
                planned=planned,
                mappings=mappings,
                rules=rules,
                lake_dir=lake_dir,
                partition=partition,
                log=log,
            )
            outcomes.append(stager.stage(incremental=incremental))
    finally:
        con.close()
    for folder in folders:
        remove_tree(folder(kept, entity, partition))
    return outcomes


def rerun_root(lake_dir: LakePath) -> LakePath:
    """Where an earlier run of a night being staged again is kept (the lake's layout below it)."""
    return lake_dir / "staging" / "rerun"


class _SourceStager:
    """Stages one source of an entity for one night, in full or from a base night."""

    def __init__(
        self,
        *,
        con: duckdb.DuckDBPyConnection,
        planned: PlannedMapping,
        mappings: Mappings,
        rules: RuleSet,
        lake_dir: LakePath,
        partition: str,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.con = con
        self.planned = planned
        self.entity = planned.entity
        self.source = planned.source
        self.rules = rules
        self.lake_dir = lake_dir
        self.partition = partition
        self.log = log
        mapping = next(m for m in mappings.entities[self.entity] if m.source == self.source)
        self.declarations = declarations_digest(
            entity=self.entity, mapping=mapping, value_maps=mappings.value_maps, rules=rules
        )

    def _sql(self, sql: str) -> None:
        self.con.execute(sql).fetchall()

    def stage(self, *, incremental: bool) -> SourceStaging:
        assert self.planned.source_sql is not None
        try:
            # The source SELECT over every row (pure SQL): each record's fingerprint is the hash of its
            # rows (the query's row struct, so it changes with anything the query joined); keyless rows
            # have none. DuckDB's hash of the row costs a third of an md5 of its JSON, and an edit that
            # leaves a record's 64-bit hash as it was has a chance of 2^-64; a new DuckDB version
            # changes the declarations digest (:mod:`crm_pipelines.mapping.state`), so it restages all.
            self._sql(
                f"CREATE OR REPLACE TEMP TABLE records AS SELECT {KEY_RECORD_ID} AS record_id, "
                f"CASE WHEN bool_and({KEY_HAS_KEY}) THEN hash(list_sort(list(hash({KEY_ROW})))) END "
                f"AS fingerprint, count(*) AS n FROM ({self.planned.source_sql}) GROUP BY {KEY_RECORD_ID}"
            )
            base, reason = self._base(incremental)
            try:
                return self._run(base, reason)
            except _Inconsistent as exc:
                self.log.warning(f"{self.entity} from {self.source}: {exc}; staging in full")
                return self._run(None, str(exc))
        finally:
            self._sql("DROP TABLE IF EXISTS records; DROP TABLE IF EXISTS reused")

    def _base(self, incremental: bool) -> tuple[Base | None, str]:
        if not incremental:
            return None, "incremental staging switched off"
        cross = cross_row_rules(self.entity, self.rules)
        if cross:
            return None, f"rules {cross} compare rows with each other"
        kept = rerun_root(self.lake_dir)
        reason = ""
        base, _ = find_base(
            lake_dir=kept,
            entity=self.entity,
            source=self.source,
            partition=self.partition,
            declarations=self.declarations,
            output_files=lambda night: night_files(kept, self.entity, night, self.source),
            same_night=True,
        )
        if base is None:
            base, reason = find_base(
                lake_dir=self.lake_dir,
                entity=self.entity,
                source=self.source,
                partition=self.partition,
                declarations=self.declarations,
                output_files=lambda night: night_files(self.lake_dir, self.entity, night, self.source),
            )
        if base is None:
            return None, reason
        # Records whose fingerprint is the base's: their outcome is the base's.
        self._sql(
            "CREATE OR REPLACE TEMP TABLE reused AS SELECT r.record_id FROM records r "
            f"JOIN {scan_parquet(base.files['state'])} b "
            f"ON b.record_id = r.record_id AND b.{FINGERPRINT} = r.fingerprint"
        )
        ((records, unchanged),) = self.con.execute(
            "SELECT (SELECT count(*) FROM records), (SELECT count(*) FROM reused)"
        ).fetchall()
        changed = int(records) - int(unchanged)
        if changed > MAX_RESTAGED_SHARE * int(records):
            return None, f"{changed} of {records} records changed since {base.partition}"
        return base, f"from {base.partition}"

    def _run(self, base: Base | None, reason: str) -> SourceStaging:
        entity, source, con = self.entity, self.source, self.con
        if base is None:
            self._sql("CREATE OR REPLACE TEMP TABLE reused (record_id VARCHAR)")
        ((rows_mapped, records),) = con.execute(
            "SELECT coalesce(sum(n), 0), count(*) FROM records"
        ).fetchall()
        ((reused,),) = con.execute("SELECT count(*) FROM reused").fetchall()
        progress = ProgressLog(self.log, f"{entity} from {source}")
        with scratch_dir(self.lake_dir) as scratch:
            # The column mapping with the normalising UDFs (the costly part), materialised once, over
            # the records that are new, changed or without a key.
            mapped = scratch / "mapped.parquet"
            # The source SELECT runs again (it is cheap) rather than its rows being kept: keyless rows
            # are numbered in it before the filter, as in a full run.
            restage = (
                f"(SELECT s.* FROM ({self.planned.source_sql}) s "
                f"ANTI JOIN reused r ON s.{KEY_RECORD_ID} = r.record_id)"
            )
            self._sql(
                f"COPY ({self.planned.mapping_sql(restage)}) TO {quote_literal(str(mapped))} (FORMAT parquet)"
            )
            # Several rows with one source key (an overlapping page, a corrected line): keep the newest.
            restaged = scratch / "restaged.parquet"
            self._sql(
                f"COPY (SELECT n.*, r.fingerprint AS {FINGERPRINT} FROM (SELECT * FROM {scan_parquet(mapped)} "
                "QUALIFY row_number() OVER (PARTITION BY record_id ORDER BY updated_at DESC NULLS LAST, _raw) = 1"
                f") n LEFT JOIN records r ON r.record_id = n.record_id) TO {quote_literal(str(restaged))} "
                "(FORMAT parquet)"
            )
            new_rows = scan_parquet(restaged)
            base_rows = {
                role: f"(SELECT b.* FROM {scan_parquet(path)} b SEMI JOIN reused r ON b.record_id = r.record_id)"
                for role, path in (base.files.items() if base is not None else ())
            }
            files = {
                role: scratch / f"{role}.parquet" for role in ("staging", "quarantine", "deleted", "state")
            }
            # Records the source deleted are not validated: they are logged as soft deletes.
            deleted = f"SELECT record_id, source, source_id, {quote_literal(entity)} AS entity FROM {new_rows} WHERE _deleted"
            if base is not None:
                deleted += (
                    f" UNION ALL SELECT record_id, source, source_id, entity FROM {base_rows['deleted']}"
                )
            self._sql(f"COPY ({deleted}) TO {quote_literal(str(files['deleted']))} (FORMAT parquet)")
            state = self._state_rows(new_rows, scratch)
            if base is not None:
                state += f" UNION ALL BY NAME SELECT * FROM {base_rows['state']}"
            self._sql(f"COPY ({state}) TO {quote_literal(str(files['state']))} (FORMAT parquet)")

            schema = ENTITIES[entity]
            reader = con.sql(
                f"SELECT * EXCLUDE ({FINGERPRINT}) FROM {new_rows} WHERE NOT _deleted"
            ).to_arrow_reader(BATCH_ROWS)
            run = validate_batches(
                entity=entity, batches=progress.counted(reader), source=source, rules=self.rules
            )
            with (
                ParquetSink(files["staging"], schema) as valid_sink,
                ParquetSink(files["quarantine"], QUARANTINE) as quarantine_sink,
            ):
                for result in run:
                    valid_sink.write(result.valid.select(schema.names))
                    quarantine_sink.write(result.quarantine)
                if base is not None:
                    for role, sink in (("staging", valid_sink), ("quarantine", quarantine_sink)):
                        for batch in con.sql(f"SELECT * FROM {base_rows[role]}").to_arrow_reader(BATCH_ROWS):
                            sink.write(batch)
            progress.done()
            summary = run.summary
            removed = 0
            if base is not None:
                summary, removed = self._night_summary(base, base_rows, files, summary)
            ((rows_deleted,),) = con.execute(
                f"SELECT count(*) FROM {scan_parquet(files['deleted'])}"
            ).fetchall()
            if summary.rows_in != int(records) - int(rows_deleted):
                raise _Inconsistent(
                    f"{summary.rows_in} rows validated but {records} records of which {rows_deleted} deleted"
                )
            digests = {role: file_digest(path) or "" for role, path in files.items()}
            targets = night_files(self.lake_dir, entity, self.partition, source)
            for role in ("staging", "quarantine", "deleted", "state"):
                publish(files[role], targets[role])
        write_marker(
            self.lake_dir,
            entity,
            source,
            StagingMarker(
                partition=self.partition,
                declarations=self.declarations,
                files=digests,
                rules={
                    name: {"evaluated": stats.evaluated, "unexpected": stats.unexpected}
                    for name, stats in summary.rules.items()
                },
            ),
        )
        return SourceStaging(
            source,
            mode="full" if base is None else "incremental",
            mode_reason=reason,
            base_partition=None if base is None else base.partition,
            records_restaged=int(records) - int(reused),
            records_reused=int(reused),
            records_removed=removed,
            rows_mapped=int(rows_mapped),
            duplicate_keys_collapsed=int(rows_mapped) - int(records),
            rows_deleted=int(rows_deleted),
            rows_valid=summary.rows_valid,
            rows_quarantined=summary.rows_quarantined,
            suite_success=summary.success,
            failed_rules=summary.failed_rules,
            quality=summary.to_dict(),
        )

    def _state_rows(self, new_rows: str, scratch: Path) -> str:
        """The state's rows of the restaged records: as the suite saw them, but for the source JSON.

        The JSON (``_raw``) was two thirds of a contact state file, copied forward every night, and is
        read back only by the derived columns that take a value from it; their values take its place,
        derived here as the suite derives them (the suite reads them as they are).
        """
        from_raw = self.rules.derived_from_raw(self.entity)
        if not from_raw:
            return f"SELECT * EXCLUDE ({RAW_COLUMN}) FROM {new_rows}"
        values = scratch / "raw_values.parquet"
        schema = pa.schema([("record_id", pa.string()), *((d.name, d.arrow_type) for d in from_raw)])
        with ParquetSink(values, schema) as sink:
            reader = self.con.sql(f"SELECT record_id, {RAW_COLUMN} FROM {new_rows}").to_arrow_reader(
                BATCH_ROWS
            )
            for batch in reader:
                table = pa.Table.from_batches([batch])
                derived = {d.name: d.derive(table, table.column) for d in from_raw}
                sink.write(pa.table({"record_id": table.column("record_id"), **derived}, schema=schema))
        # Restaged rows are one per record_id (deduplicated above).
        return (
            f"SELECT n.* EXCLUDE ({RAW_COLUMN}), v.* EXCLUDE (record_id) FROM {new_rows} n "
            f"JOIN {scan_parquet(values)} v ON v.record_id = n.record_id"
        )

    def _night_summary(
        self, base: Base, base_rows: dict[str, str], files: dict[str, Path], restaged: ValidationSummary
    ) -> tuple[ValidationSummary, int]:
        """The whole night's quality summary from the base night's, the base's versions of the records
        that changed or went, and the restaged records'; and how many of the base's records went."""
        con = self.con
        state = scan_parquet(base.files["state"])
        # The base's versions of the records not reused, validated again for their share of the counts.
        gone = con.sql(
            f"SELECT b.* EXCLUDE ({FINGERPRINT}) FROM {state} b ANTI JOIN reused r ON b.record_id = r.record_id "
            "WHERE NOT b._deleted"
        ).to_arrow_reader(BATCH_ROWS)
        old_run = validate_batches(entity=self.entity, batches=gone, source=self.source, rules=self.rules)
        for _ in old_run:
            pass
        old = old_run.summary.rules
        rules: dict[str, RuleStats] = {}
        for name, stats in restaged.rules.items():
            night = base.marker.rules.get(name)
            if night is None:
                raise _Inconsistent(f"the base night {base.partition} has no counts for rule {name}")
            rules[name] = RuleStats(
                expectation=stats.expectation,
                columns=list(stats.columns),
                mostly=stats.mostly,
                tolerated_failures=stats.tolerated_failures,
                severity=stats.severity,
                evaluated=night["evaluated"] - old[name].evaluated + stats.evaluated,
                unexpected=night["unexpected"] - old[name].unexpected + stats.unexpected,
                gx_failed_batches=stats.gx_failed_batches,
            )
        quarantine = scan_parquet(files["quarantine"])
        by_rule = dict(con.execute(f"SELECT rule, count(*) FROM {quarantine} GROUP BY rule").fetchall())
        for name, stats in rules.items():
            if stats.severity == "error" and stats.unexpected != int(by_rule.get(name, 0)):
                raise _Inconsistent(
                    f"rule {name}: {stats.unexpected} failing rows counted, {by_rule.get(name, 0)} quarantined"
                )
        ((valid,),) = con.execute(f"SELECT count(*) FROM {scan_parquet(files['staging'])}").fetchall()
        ((quarantined, records),) = con.execute(
            f"SELECT count(DISTINCT record_id), count(*) FROM {quarantine}"
        ).fetchall()
        ((removed,),) = con.execute(
            f"SELECT count(*) FROM {state} b ANTI JOIN records r ON b.record_id = r.record_id "
            f"WHERE b.{FINGERPRINT} IS NOT NULL"
        ).fetchall()
        summary = ValidationSummary(
            entity=self.entity,
            suite=restaged.suite,
            rows_in=int(valid) + int(quarantined),
            rows_valid=int(valid),
            rows_quarantined=int(quarantined),
            quarantine_records=int(records),
            batches=restaged.batches,
            rules=rules,
            gx_statistics=restaged.gx_statistics,
            seconds=restaged.seconds + old_run.summary.seconds,
            gx_seconds=restaged.gx_seconds + old_run.summary.gx_seconds,
        )
        return summary, int(removed)
