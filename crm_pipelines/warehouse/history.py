"""History of the golden records (SCD type 2) and the audit trail of every golden field.

``core.golden_account_history`` and ``core.golden_contact_history`` hold one row per version of a
golden record: the golden row as it was, ``supplied_by`` (field -> record_id of the source record whose
value survived), ``valid_from``/``valid_to``/``is_current``, and the ``run_id``/``loaded_at`` of the load
that opened the version. ``valid_from`` and ``valid_to`` are business days: the night (partition) whose
identity load opened, and closed, the version. A version is valid on the nights ``valid_from <= d <
valid_to``; the current one has ``valid_to`` null. The history is keyed by golden id, which identity
keeps from night to night; a golden id merged into another or gone closes its version
(``core.golden_id_current`` says where a merged id went).

``core.golden_field_lineage`` turns the versions into one row per golden field and stretch of nights
it kept the same value from the same source record: which source record, system and id supplied it,
since which night, loaded by which run and when. It is a table kept by the identity load, recomputed
for the golden ids whose versions the night may have touched and merged (a view, it had to be
computed whole by every reader and by every publish to PostgreSQL).

Both are written inside the identity load's transaction (:func:`crm_pipelines.warehouse.core.load_identity`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import duckdb

from crm_pipelines.canonical import SURVIVOR_FIELDS
from crm_pipelines.lake import LakePath, scan_parquet
from crm_pipelines.sql import qualified, quote_ident, quote_literal
from crm_pipelines.warehouse.connection import table_exists
from crm_pipelines.warehouse.load import Merged, ScopeError, merge_table

__all__ = ["HISTORIES", "GoldenHistory", "load_golden_history", "record_versions"]


@dataclass(frozen=True)
class GoldenHistory:
    """The versions of one entity's golden records."""

    entity: str

    @property
    def golden(self) -> str:
        return f"golden_{self.entity}"

    @property
    def table(self) -> str:
        return f"golden_{self.entity}_history"


HISTORIES = (GoldenHistory("account"), GoldenHistory("contact"))

KEY = "golden_id"


def load_golden_history(
    con: duckdb.DuckDBPyConnection,
    *,
    field_sources: LakePath,
    partition: str,
    run_id: str,
    changed: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """Record tonight's golden records as versions and (re)create ``core.golden_field_lineage``.

    Runs after ``core.golden_account`` and ``core.golden_contact`` hold the night's golden records,
    inside the same transaction.

    Args:
        con: Connection inside the identity load's transaction.
        field_sources: Identity's ``golden_field_sources.parquet`` (which record supplied each field);
            outputs written before it existed give versions without ``supplied_by``.
        partition: The night (``YYYY-MM-DD``): ``valid_from`` of the versions it opens.
        run_id: The run loading it.
        changed: Per entity, a table of the golden ids (column ``golden_id``) tonight's load wrote
            into ``core.golden_<entity>`` (inserted, updated or deleted: the changes
            :func:`~crm_pipelines.warehouse.load.merge_table` leaves). Only those ids, the ids whose
            supplying records changed and the ids this night already versioned are compared with
            their versions; every other id's golden row is the one its open version holds. ``None``
            (or an entity left out, or no history yet) compares every golden record.

    Returns:
        Versions opened and closed on this night, per entity.
    """
    counts: dict[str, int] = {}
    # The golden ids whose versions this night may change, per entity; None: every id may have.
    con.execute("CREATE OR REPLACE TEMP TABLE _lineage_ids (entity VARCHAR, golden_id VARCHAR)")
    scoped = True
    for history in HISTORIES:
        if field_sources.exists():
            supplied = (
                f"SELECT golden_id, supplied_by FROM {scan_parquet(str(field_sources))} WHERE entity = ?"
            )
            params: list[object] = [history.entity]
        else:
            supplied = (
                "SELECT NULL::VARCHAR AS golden_id, NULL::MAP(VARCHAR, VARCHAR) AS supplied_by WHERE false"
            )
            params = []
        only = None
        if changed is not None and history.entity in changed:
            only = _candidates(
                con,
                table=history.table,
                changed=changed[history.entity],
                supplied=supplied,
                params=params,
            )
        opened, closed = record_versions(
            con,
            table=history.table,
            snapshot_sql=(
                f"SELECT g.*, s.supplied_by FROM {qualified('core', history.golden)} AS g "
                f"LEFT JOIN ({supplied}) AS s USING (golden_id)"
            ),
            params=params,
            partition=partition,
            run_id=run_id,
            only=only,
        )
        if only is None:
            scoped = False
        else:
            con.execute(
                f"INSERT INTO _lineage_ids SELECT DISTINCT ?, golden_id FROM {only}", [history.entity]
            )
            con.execute(f"DROP TABLE {only}")
        counts[f"{history.entity}_versions_opened"] = opened
        counts[f"{history.entity}_versions_closed"] = closed
    lineage = load_lineage(con, scoped=scoped)
    con.execute("DROP TABLE _lineage_ids")
    counts.update(lineage.counts("lineage_rows"))
    return counts


LINEAGE = "golden_field_lineage"
LINEAGE_KEY = ("entity", "golden_id", "field", "valid_from")


def load_lineage(con: duckdb.DuckDBPyConnection, *, scoped: bool) -> Merged:
    """Bring ``core.golden_field_lineage`` in line with the history tables.

    ``scoped``: only the golden ids in ``_lineage_ids`` (``entity``, ``golden_id``) may have versions that
    changed, so only their rows are recomputed and merged; every other id's rows are the ones its
    unchanged versions give. It is recomputed whole when not scoped, when the table does not exist
    yet (or is the view it used to be), or when its definition changed (the table's comment keeps the
    md5 of the query it was computed with: a new survivor field, or a change to this code).
    """
    target = qualified("core", LINEAGE)
    definition = _lineage_sql(con, scoped=False)
    stamp = f"definition md5 {hashlib.md5(definition.encode()).hexdigest()}"
    view = con.execute(
        "SELECT count(*) FROM duckdb_views() WHERE database_name = current_database() "
        "AND schema_name = 'core' AND view_name = ?",
        [LINEAGE],
    ).fetchone()
    if view and view[0]:
        con.execute(f"DROP VIEW {target}")
    held = con.execute(
        "SELECT comment FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'core' AND table_name = ?",
        [LINEAGE],
    ).fetchone()
    if scoped and held is not None and held[0] == stamp:
        try:
            return merge_table(
                con,
                schema="core",
                table=LINEAGE,
                select_sql=_lineage_sql(con, scoped=True),
                key=LINEAGE_KEY,
                scope="(entity, golden_id) IN (SELECT entity, golden_id FROM _lineage_ids)",
            )
        except ScopeError:
            pass  # recomputed whole below
    merged = merge_table(con, schema="core", table=LINEAGE, select_sql=definition, key=LINEAGE_KEY)
    if held is None or held[0] != stamp or merged.rebuilt:
        con.execute(f"COMMENT ON TABLE {target} IS {quote_literal(stamp)}")
    return merged


def _candidates(
    con: duckdb.DuckDBPyConnection,
    *,
    table: str,
    changed: str,
    supplied: str,
    params: list[object],
) -> str | None:
    """The temporary table of the golden ids whose versions tonight may touch, or ``None`` for all.

    The history and the golden table are written in one transaction, so a golden row the load did not
    write is the row its version holds, unless its supplying records changed (``supplied_by``). That
    holds for a re-run of the night too: a golden row the earlier run versioned and the re-run leaves
    as it is keeps that version; one that goes back, or an id that comes back, is written, so
    compared.
    """
    target = qualified("core", table)
    if not table_exists(con, "core", table):
        return None
    columns = {str(row[0]) for row in con.execute(f"DESCRIBE {target}").fetchall()}
    if "supplied_by" not in columns:
        return None
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _history_candidates AS
        SELECT golden_id FROM {changed}
        UNION
        SELECT h.golden_id FROM {target} AS h LEFT JOIN ({supplied}) AS s USING (golden_id)
        WHERE h.valid_to IS NULL AND h.supplied_by IS DISTINCT FROM s.supplied_by
        """,
        params,
    )
    return "_history_candidates"


def record_versions(
    con: duckdb.DuckDBPyConnection,
    *,
    table: str,
    snapshot_sql: str,
    params: list[object],
    partition: str,
    run_id: str,
    only: str | None = None,
) -> tuple[int, int]:
    """Bring ``core.<table>`` (SCD type 2, keyed by ``golden_id``) in line with tonight's snapshot.

    Against the versions open just before the night: a changed row closes its version and opens one,
    a new id opens one, an id missing from the snapshot closes its version, an unchanged row adds
    nothing. Rows compare by a hash of their non-null values, so a new column that is still empty
    changes no row. A re-run of the same night redoes only that night's changes, keeping every version
    it would write again as it is (its run_id and loaded_at included): the table ends as it was.

    With ``only`` (a table with a ``golden_id`` column) just those ids are compared and only their
    versions are written: the caller knows every other id's snapshot row is the one its current
    version holds (opened before the night, or by an earlier run of this night), so the result is
    the one comparing every id gives.

    Raises:
        ValueError: the history holds a later night (core only ever moves forward).

    Returns:
        Versions opened on the night, versions closed on the night.
    """
    target = qualified("core", table)
    night = dt.date.fromisoformat(partition)
    key = quote_ident(KEY)
    in_scope = "true" if only is None else f"{key} IN (SELECT {key} FROM {only})"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _snapshot AS SELECT * FROM ({snapshot_sql}) WHERE {in_scope}", params
    )
    columns = sorted(str(row[0]) for row in con.execute("DESCRIBE _snapshot").fetchall())
    row_hash = "md5(concat_ws(chr(31), {}))".format(
        ", ".join(f"{quote_literal(c)} || '=' || to_json(s.{quote_ident(c)})" for c in columns)
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _versioned AS SELECT s.*, {row_hash} AS row_hash FROM _snapshot AS s"
    )
    _create_or_extend(con, table)
    later = con.execute(
        f"SELECT max(greatest(valid_from, coalesce(valid_to, valid_from))) FROM {target}"
    ).fetchone()
    if later and later[0] is not None and later[0] > night:
        raise ValueError(f"{target} holds the later night {later[0]}; {partition} cannot be recorded")
    # The version of each id open just before the night (a re-run finds it closed on the night itself).
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _before AS
        SELECT {key}, valid_from, row_hash FROM {target}
        WHERE valid_from < $night AND (valid_to IS NULL OR valid_to >= $night) AND {in_scope}
        """,
        {"night": night},
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _opened AS
        SELECT v.* FROM _versioned AS v LEFT JOIN _before AS b USING ({key})
        WHERE b.row_hash IS DISTINCT FROM v.row_hash
        """
    )
    # Each statement runs only when it has rows to write: a night that changes no version writes nothing.
    stale = f"""
        FROM {target} AS h
        WHERE h.valid_from = $night AND {in_scope}
          AND NOT EXISTS (SELECT 1 FROM _opened AS o WHERE o.{key} = h.{key} AND o.row_hash = h.row_hash)
    """
    if _any(con, stale, {"night": night}):
        con.execute(f"DELETE {stale}", {"night": night})
    new = f"""
        FROM _opened AS o
        WHERE NOT EXISTS (SELECT 1 FROM {target} AS h WHERE h.valid_from = $night AND h.{key} = o.{key})
    """
    if _any(con, new, {"night": night}):
        con.execute(
            f"""
            INSERT INTO {target} BY NAME
            SELECT o.*, $night::DATE AS valid_from, NULL::DATE AS valid_to, true AS is_current,
                   $run_id AS run_id, now() AS loaded_at
            {new}
            """,
            {"night": night, "run_id": run_id},
        )
    ended = f"(b.{key} IN (SELECT {key} FROM _opened) OR b.{key} NOT IN (SELECT {key} FROM _versioned))"
    joined = f"FROM {target} AS h JOIN _before AS b ON h.{key} = b.{key} AND h.valid_from = b.valid_from"
    to_close = f"h.valid_to IS DISTINCT FROM $night AND {ended}"
    if _any(con, f"{joined} WHERE {to_close}", {"night": night}):
        con.execute(
            f"""
            UPDATE {target} AS h SET valid_to = $night, is_current = false
            FROM _before AS b
            WHERE h.{key} = b.{key} AND h.valid_from = b.valid_from AND {to_close}
            """,
            {"night": night},
        )
    to_reopen = f"h.valid_to IS NOT NULL AND NOT {ended}"
    if _any(con, f"{joined} WHERE {to_reopen}", {}):
        con.execute(
            f"""
            UPDATE {target} AS h SET valid_to = NULL, is_current = true
            FROM _before AS b
            WHERE h.{key} = b.{key} AND h.valid_from = b.valid_from AND {to_reopen}
            """
        )
    for temp in ("_snapshot", "_versioned", "_before", "_opened"):
        con.execute(f"DROP TABLE {temp}")
    row = con.execute(
        f"SELECT count(*) FILTER (WHERE valid_from = $night), count(*) FILTER (WHERE valid_to = $night) FROM {target}",
        {"night": night},
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def _any(con: duckdb.DuckDBPyConnection, from_where: str, params: dict[str, object]) -> bool:
    """Whether ``SELECT 1 <from_where>`` finds a row."""
    return con.execute(f"SELECT EXISTS (SELECT 1 {from_where})", params).fetchone() == (True,)


def _create_or_extend(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """Create ``core.<table>`` from the snapshot's columns, or add the columns it lacks."""
    key = quote_ident(KEY)
    target = qualified("core", table)
    if not table_exists(con, "core", table):  # not CREATE ... IF NOT EXISTS, which counts as a write
        con.execute(
            f"""
            CREATE TABLE {target} AS
            SELECT {key}, NULL::DATE AS valid_from, NULL::DATE AS valid_to, NULL::BOOLEAN AS is_current,
                   * EXCLUDE ({key}, row_hash), NULL::VARCHAR AS run_id, NULL::TIMESTAMPTZ AS loaded_at,
                   row_hash
            FROM _versioned LIMIT 0
            """
        )
    existing = {row[0] for row in con.execute(f"DESCRIBE {target}").fetchall()}
    for name, dtype, *_ in con.execute("DESCRIBE _versioned").fetchall():
        if name not in existing:
            con.execute(f"ALTER TABLE {target} ADD COLUMN {quote_ident(name)} {dtype}")


def _lineage_sql(con: duckdb.DuckDBPyConnection, *, scoped: bool) -> str:
    """``core.golden_field_lineage``: per golden field, each stretch of nights with one value from one record.

    ``scoped``: only the golden ids in ``_lineage_ids`` (each id's rows come from its own versions only).
    """
    versions = []
    for history in HISTORIES:
        present = {
            str(row[0]) for row in con.execute(f"DESCRIBE {qualified('core', history.table)}").fetchall()
        }
        fields = [name for name in SURVIVOR_FIELDS[history.entity] if name in present]
        entries = ", ".join(
            f"{{'field': {quote_literal(name)}, 'value': CAST(h.{quote_ident(name)} AS VARCHAR)}}"
            for name in fields
        )
        only = (
            f" WHERE h.golden_id IN (SELECT golden_id FROM _lineage_ids WHERE entity = {quote_literal(history.entity)})"
            if scoped
            else ""
        )
        versions.append(
            f"""
            SELECT {quote_literal(history.entity)} AS entity, golden_id, f.field, f.value,
                   CASE WHEN f.value IS NOT NULL THEN supplied_by[f.field] END AS record_id,
                   valid_from, valid_to, is_current, run_id, loaded_at
            FROM (SELECT h.*, unnest([{entries}]) AS f FROM {qualified("core", history.table)} AS h{only})
            """
        )
    union = " UNION ALL ".join(versions)
    return f"""
        WITH versions AS ({union}),
        marked AS (
            SELECT *,
                   CASE WHEN lag(value) OVER w IS NOT DISTINCT FROM value
                         AND lag(record_id) OVER w IS NOT DISTINCT FROM record_id
                         AND lag(valid_to) OVER w = valid_from
                        THEN 0 ELSE 1 END AS starts
            FROM versions
            WINDOW w AS (PARTITION BY entity, golden_id, field ORDER BY valid_from)
        ),
        stretches AS (
            SELECT *, sum(starts) OVER (PARTITION BY entity, golden_id, field ORDER BY valid_from) AS stretch
            FROM marked
        )
        SELECT entity, golden_id, field, any_value(value) AS value, any_value(record_id) AS record_id,
               split_part(any_value(record_id), ':', 1) AS source,
               nullif(substr(any_value(record_id), strpos(any_value(record_id), ':') + 1), '') AS source_id,
               min(valid_from) AS valid_from,
               CASE WHEN bool_or(is_current) THEN NULL ELSE max(valid_to) END AS valid_to,
               bool_or(is_current) AS is_current,
               arg_min(run_id, valid_from) AS run_id,
               arg_min(loaded_at, valid_from) AS loaded_at
        FROM stretches
        GROUP BY entity, golden_id, field, stretch
        HAVING any_value(value) IS NOT NULL
    """
