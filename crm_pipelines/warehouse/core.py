"""The core layer: golden records with their crosswalk, and the facts merged by record id.

Each function runs inside the caller's transaction, so staging, soft deletes, quarantine and core
commit together or not at all.
"""

from __future__ import annotations

import logging

import duckdb
import pyarrow as pa

from crm_pipelines.canonical import PARTY_ENTITIES
from crm_pipelines.identity.golden_ids import HISTORY_DDL
from crm_pipelines.identity.outputs import identity_files
from crm_pipelines.identity.references import KnownRecord, recognise
from crm_pipelines.identity.review import load_review
from crm_pipelines.lake import LakePath, has_parquet, parquet_glob, scan_parquet
from crm_pipelines.mapping.stage import quality_quarantine_folder, staging_folder
from crm_pipelines.warehouse.connection import table_exists
from crm_pipelines.warehouse.deletes import load_deleted, soft_delete
from crm_pipelines.warehouse.history import HISTORIES, load_golden_history
from crm_pipelines.warehouse.load import (
    create_view,
    merge_by_key,
    merge_table,
    newest_partition,
    record_load_state,
    replace_partition,
)
from crm_pipelines.warehouse.quarantine import replace_quarantine

__all__ = ["load_fact", "load_golden_id_history", "load_identity", "load_order_links"]


def load_identity(
    con: duckdb.DuckDBPyConnection,
    *,
    lake_dir: LakePath,
    partition: str,
    run_id: str,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> dict[str, int]:
    """Staged parties, their soft deletes and quarantine, the golden records with the crosswalk, their
    versions (``core.golden_account_history``, ``core.golden_contact_history``, the field audit trail
    ``core.golden_field_lineage``: :mod:`crm_pipelines.warehouse.history`) and the golden id history
    (``core.golden_id_history``, ``core.golden_id_current``).

    Core holds the current state: a partition older than the one core holds stays in staging only.
    The golden records and the crosswalk are merged by key (:func:`~crm_pipelines.warehouse.load.merge_table`):
    identity's files hold every golden record each night, and only the rows that differ from the ones
    core holds are written; the history looks at those golden ids only.

    Returns:
        Rows per table: staged and held, and for ``golden_account``, ``golden_contact`` and
        ``xref_identity`` the rows held plus ``<table>_inserted``/``_updated``/``_deleted``.
    """
    files = identity_files(lake_dir, partition)
    counts: dict[str, int] = {}
    for entity in PARTY_ENTITIES:
        folder = staging_folder(lake_dir, entity, partition)
        if has_parquet(folder):
            counts[f"staging_{entity}"] = replace_partition(
                con, schema="staging", table=entity, parquet_glob=parquet_glob(folder), partition=partition
            )
        load_deleted(con, lake_dir=lake_dir, entity=entity, partition=partition)
        replace_quarantine(
            con,
            folder=quality_quarantine_folder(lake_dir, entity, partition),
            partition=partition,
            stage="quality",
            entity=entity,
            run_id=run_id,
        )
    counts["staging_xref_identity"] = replace_partition(
        con, schema="staging", table="xref_identity", parquet_glob=str(files.xref), partition=partition
    )
    newest = newest_partition(con, "core.identity")
    if newest is not None and partition < newest:
        log.warning(f"core holds the newer partition {newest}; {partition} is kept in staging only")
        return counts
    # Merged by key: only the golden records and crosswalk rows that differ from last night's are written.
    changed: dict[str, str] = {}  # table -> the temporary table of the keys its merge wrote
    rebuilt: set[str] = set()
    for name, path, key in (
        ("golden_account", files.golden_account, ("golden_id",)),
        ("golden_contact", files.golden_contact, ("golden_id",)),
        ("xref_identity", files.xref, ("record_id", "entity")),
    ):
        merged = merge_table(
            con,
            schema="core",
            table=name,
            select_sql=f"SELECT * FROM {scan_parquet(path)}",
            key=key,
            changes=f"_changed_{name}",
        )
        counts.update(merged.counts(name))
        changed[name] = f"_changed_{name}"
        if merged.rebuilt:
            rebuilt.add(name)
    counts.update(
        load_golden_history(
            con,
            field_sources=files.field_sources,
            partition=partition,
            run_id=run_id,
            # A golden table replaced in full (new, or its columns changed): every record is compared.
            changed={h.entity: changed[h.golden] for h in HISTORIES if h.golden not in rebuilt},
        )
    )
    for temp in changed.values():
        con.execute(f"DROP TABLE {temp}")
    counts["match_review"] = load_review(con, path=files.review, partition=partition, run_id=run_id)
    counts["golden_id_history"] = load_golden_id_history(
        con, path=files.history, partition=partition, run_id=run_id
    )
    record_load_state(con, target="core.identity", partition=partition, run_id=run_id)
    return counts


def load_golden_id_history(
    con: duckdb.DuckDBPyConnection, *, path: LakePath, partition: str, run_id: str
) -> int:
    """Append a run's golden id events to ``core.golden_id_history``; (re)create ``core.golden_id_current``.

    An event already recorded (same entity, id, event and related id: an identity run repeated before
    its load) is not recorded again. ``core.golden_id_current`` maps every id ever recorded to the id
    its records carry today, following merges (A merged into B, B into C: A -> C); a split leaves the
    old id with its anchor record, so it maps to itself.

    Returns:
        Events recorded.
    """
    if not table_exists(con, "core", "golden_id_history"):  # IF NOT EXISTS would count as a write
        con.execute(HISTORY_DDL)
    recorded = 0
    if path.exists():  # identity outputs written before ids were kept have no history file
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE _new_events AS
            SELECT e.*, CAST(? AS VARCHAR) AS partition, CAST(? AS VARCHAR) AS run_id, now() AS recorded_at
            FROM {scan_parquet(path)} AS e
            WHERE NOT EXISTS (
                SELECT 1 FROM core.golden_id_history AS h
                WHERE h.entity = e.entity AND h.golden_id = e.golden_id AND h.event = e.event
                  AND h.related_id IS NOT DISTINCT FROM e.related_id
            )
            """,
            [partition, run_id],
        )
        recorded = _count(con, "SELECT count(*) FROM _new_events")
        if recorded:
            con.execute("INSERT INTO core.golden_id_history BY NAME SELECT * FROM _new_events")
        con.execute("DROP TABLE _new_events")
    create_view(con, schema="core", view="golden_id_current", statement=GOLDEN_ID_CURRENT_VIEW)
    return recorded


# Merges form chains without cycles (a merged id is never assigned again); the depth cap only bounds
# the walk should a hand-edited history hold one.
GOLDEN_ID_CURRENT_VIEW = """
CREATE OR REPLACE VIEW core.golden_id_current AS
WITH RECURSIVE merged AS (
    SELECT entity, golden_id, arg_max(related_id, recorded_at) AS into_id
    FROM core.golden_id_history
    WHERE event = 'merged'
    GROUP BY entity, golden_id
),
walk(entity, old_id, golden_id, merges) AS (
    SELECT DISTINCT entity, golden_id, golden_id, 0 FROM core.golden_id_history
    UNION ALL
    SELECT w.entity, w.old_id, m.into_id, w.merges + 1
    FROM walk AS w JOIN merged AS m ON m.entity = w.entity AND m.golden_id = w.golden_id
    WHERE w.merges < 1000
)
SELECT entity, old_id, arg_max(golden_id, merges) AS golden_id, max(merges) AS merges
FROM walk
GROUP BY entity, old_id
"""


def _count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    return int(row[0]) if row else 0


def load_fact(
    con: duckdb.DuckDBPyConnection, *, lake_dir: LakePath, entity: str, partition: str, run_id: str
) -> dict[str, int]:
    """Valid rows into ``staging.<entity>``, merged into ``core.<entity>``; soft deletes; quarantine.

    Returns:
        staged_rows, core_rows_written, soft_deleted, quarantine_rows.
    """
    folder = staging_folder(lake_dir, entity, partition)
    staged = merged = 0
    if has_parquet(folder):
        staged = replace_partition(
            con, schema="staging", table=entity, parquet_glob=parquet_glob(folder), partition=partition
        )
        merged = merge_by_key(
            con,
            schema="core",
            table=entity,
            parquet_glob=parquet_glob(folder),
            key="record_id",
            partition=partition,
            version_column="updated_at",
        )
    deleted = load_deleted(con, lake_dir=lake_dir, entity=entity, partition=partition)
    soft_delete(con, table=entity, partition=partition, live_glob=parquet_glob(folder) if staged else None)
    quarantined = replace_quarantine(
        con,
        folder=quality_quarantine_folder(lake_dir, entity, partition),
        partition=partition,
        stage="quality",
        entity=entity,
        run_id=run_id,
    )
    return {
        "staged_rows": staged,
        "core_rows_written": merged,
        "soft_deleted": deleted,
        "quarantine_rows": quarantined,
    }


def load_order_links(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """``core.order_links``: each ERP order and the CRM opportunity its stored reference points to.

    The reference was typed by whoever made the order, in whatever format
    (:func:`crm_pipelines.identity.references.recognise`); every order is listed with how it was
    recognised (``unknown`` and ``ambiguous`` link to no opportunity). Every order is recognised again
    (an opportunity added or gone can change what any reference points to), inside the caller's
    transaction; only the orders whose link differs from the one the table holds are written.

    Returns:
        Orders, how many of them are linked, and the orders inserted, updated and deleted.
    """
    orders = con.execute(
        "SELECT record_id, crm_opportunity_ref FROM core.sales_order WHERE NOT coalesce(is_deleted, false)"
    ).fetchall()
    opportunities = [
        KnownRecord(str(r), str(s), str(i))
        for r, s, i in con.execute("SELECT record_id, source, source_id FROM core.opportunity").fetchall()
    ]
    found = recognise([ref for _, ref in orders], opportunities)
    links = pa.table(
        {
            "order_record_id": [str(order) for order, _ in orders],
            "crm_opportunity_ref": [ref for _, ref in orders],
            "opportunity_record_id": [f.record_id for f in found],
            "recognised_by": [f.how for f in found],
        },
        schema=ORDER_LINKS,
    )
    con.register("order_links_input", links)  # gone with the load's connection
    merged = merge_table(
        con, schema="core", table="order_links", select_sql="SELECT * FROM order_links_input", key=KEY
    )
    return {
        "orders": merged.rows,
        "linked": sum(f.record_id is not None for f in found),
        "orders_inserted": merged.inserted,
        "orders_updated": merged.updated,
        "orders_deleted": merged.deleted,
    }


KEY = ("order_record_id",)
ORDER_LINKS = pa.schema(
    [
        ("order_record_id", pa.string()),
        ("crm_opportunity_ref", pa.string()),
        ("opportunity_record_id", pa.string()),
        ("recognised_by", pa.string()),
    ]
)
