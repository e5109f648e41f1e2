"""Reconciliation: every extracted row is loaded, merged into a golden record, or quarantined.

The counts come from different tables (raw, staging, the crosswalk, ops.quarantine, core, marts),
so a row lost or doubled anywhere between them shows up as a mismatch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import duckdb

from crm_pipelines.canonical import PARTY_ENTITIES
from crm_pipelines.mapping.spec import Mappings
from crm_pipelines.sql import qualified, quote_ident
from crm_pipelines.warehouse.connection import table_exists


@dataclass(frozen=True)
class ReconciliationRow:
    source: str
    entity: str
    extracted: int
    loaded: int
    merged: int
    quarantined: int
    deleted: int
    adds_up: bool
    detail: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _count(con: duckdb.DuckDBPyConnection, sql: str, params: list[object]) -> int:
    row = con.execute(sql, params).fetchone()
    return int(row[0] or 0) if row else 0


def reconcile_partition(
    con: duckdb.DuckDBPyConnection, *, partition: str, mappings: Mappings
) -> list[ReconciliationRow]:
    """Count every (source, entity) of one partition and say whether the counts add up.

    Args:
        con: Warehouse connection (read access is enough).
        partition: Partition key.
        mappings: The declared mappings (they say which raw dataset and key feed each entity).

    Returns:
        One row per (source, entity), plus one ``all`` row per party entity when the marts hold this
        partition: the sum of the entity's rows, with its golden records checked against the mart.
    """
    rows: list[ReconciliationRow] = []
    for entity, sources in mappings.entities.items():
        for mapping in sources:
            source_dir, dataset = next(iter(mapping.inputs.values())).split("/")
            raw = f"{source_dir}__{dataset}"
            extracted_raw = pk_duplicates = 0
            if table_exists(con, "raw", raw):
                key = f"nullif(trim(CAST({quote_ident(mapping.id)} AS VARCHAR)), '')"
                # A mapping that takes only some of its input's rows (where:) is counted on those.
                selected = f"{qualified('raw', raw)} WHERE _partition = ?"
                if mapping.where is not None:
                    selected += f" AND ({mapping.where})"
                extracted_raw = _count(con, f"SELECT count(*) FROM {selected}", [partition])
                distinct = _count(
                    con,
                    f"SELECT count(DISTINCT {key}) + count(*) FILTER (WHERE {key} IS NULL) FROM {selected}",
                    [partition],
                )
                pk_duplicates = extracted_raw - distinct
            quarantine_sql = (
                "SELECT count(DISTINCT record_id) FROM ops.quarantine "
                "WHERE partition = ? AND stage = ? AND source = ? AND entity = ?"
            )
            extract_q = _count(con, quarantine_sql, [partition, "extract", mapping.source, entity])
            quality_q = _count(con, quarantine_sql, [partition, "quality", mapping.source, entity])
            staged = 0
            if table_exists(con, "staging", entity):
                staged = _count(
                    con,
                    f"SELECT count(*) FROM staging.{entity} WHERE _partition = ? AND source = ?",
                    [partition, mapping.source],
                )
            deleted = 0
            if table_exists(con, "staging", "deleted"):
                deleted = _count(
                    con,
                    "SELECT count(*) FROM staging.deleted WHERE _partition = ? AND source = ? AND entity = ?",
                    [partition, mapping.source, entity],
                )
            problems = []
            if entity in PARTY_ENTITIES:
                survivors = non_survivors = 0
                if table_exists(con, "staging", "xref_identity"):
                    survivors = _count(
                        con,
                        "SELECT count(*) FILTER (WHERE is_survivor) FROM staging.xref_identity "
                        "WHERE _partition = ? AND source = ? AND entity = ?",
                        [partition, mapping.source, entity],
                    )
                    non_survivors = _count(
                        con,
                        "SELECT count(*) FILTER (WHERE NOT is_survivor) FROM staging.xref_identity "
                        "WHERE _partition = ? AND source = ? AND entity = ?",
                        [partition, mapping.source, entity],
                    )
                loaded, merged = survivors, pk_duplicates + non_survivors
                if staged != survivors + non_survivors:
                    problems.append(f"{staged} staged rows but {survivors + non_survivors} in the crosswalk")
            else:
                loaded, merged = staged, pk_duplicates
                if staged and table_exists(con, "core", entity):
                    in_core = _count(
                        con,
                        f"SELECT count(*) FROM staging.{entity} AS s "
                        f"WHERE s._partition = ? AND s.source = ? "
                        f"AND EXISTS (SELECT 1 FROM core.{entity} AS c WHERE c.record_id = s.record_id)",
                        [partition, mapping.source],
                    )
                    if in_core != staged:
                        problems.append(f"{staged - in_core} staged rows missing from core.{entity}")
            extracted = extracted_raw + extract_q
            quarantined = extract_q + quality_q
            if extracted != loaded + merged + quarantined + deleted:
                problems.append(
                    f"extracted {extracted} != loaded {loaded} + merged {merged} + quarantined {quarantined}"
                    f" + deleted {deleted}"
                )
            rows.append(
                ReconciliationRow(
                    mapping.source,
                    entity,
                    extracted,
                    loaded,
                    merged,
                    quarantined,
                    deleted,
                    not problems,
                    "; ".join(problems),
                )
            )
    rows.extend(_all_rows(con, partition, rows))
    return rows


def _all_rows(
    con: duckdb.DuckDBPyConnection, partition: str, rows: list[ReconciliationRow]
) -> list[ReconciliationRow]:
    """One ``all`` row per party entity: the sum of its sources' rows, its golden records checked
    against the mart.

    Every count is the sum of the per-source counts above it, so the table adds up down its columns as
    well as across; the mart must hold one row per survivor the sources' records made.
    """
    state = con.execute("SELECT partition FROM ops.load_state WHERE target = 'core.identity'").fetchone()
    if not state or state[0] != partition or not table_exists(con, "staging", "xref_identity"):
        return []
    out = []
    for entity, mart in (("account", "dim_account"), ("contact", "dim_contact")):
        if not table_exists(con, "marts", mart):
            continue
        parts = [r for r in rows if r.entity == entity]
        total = ReconciliationRow(
            "all",
            entity,
            sum(r.extracted for r in parts),
            sum(r.loaded for r in parts),
            sum(r.merged for r in parts),
            sum(r.quarantined for r in parts),
            sum(r.deleted for r in parts),
            True,
            "",
        )
        problems = []
        if total.extracted != total.loaded + total.merged + total.quarantined + total.deleted:
            problems.append(f"{', '.join(r.source for r in parts if not r.adds_up)} do not add up")
        golden = _count(con, f"SELECT count(*) FROM marts.{mart}", [])
        if golden != total.loaded:
            problems.append(
                f"marts.{mart} has {golden} rows, the sources' records made {total.loaded} golden records"
            )
        out.append(replace(total, adds_up=not problems, detail="; ".join(problems)))
    return out


def record_reconciliation(
    con: duckdb.DuckDBPyConnection, *, run_id: str, partition: str, rows: list[ReconciliationRow]
) -> None:
    """Append the run's reconciliation to ops.reconciliation (one row per source and entity)."""
    for row in rows:
        con.execute(
            "INSERT INTO ops.reconciliation (run_id, partition, source, entity, extracted, loaded, merged, "
            "quarantined, deleted, adds_up, detail, checked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
            [
                run_id,
                partition,
                row.source,
                row.entity,
                row.extracted,
                row.loaded,
                row.merged,
                row.quarantined,
                row.deleted,
                row.adds_up,
                row.detail,
            ],
        )
