"""Load Parquet from the lake into warehouse tables, idempotently.

Every function runs inside the caller's transaction (see :meth:`Warehouse.transaction`), so a step
that loads several tables commits them together. Re-running a load with the same input leaves the
tables exactly as they were.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import duckdb

from crm_pipelines.lake import scan_parquet
from crm_pipelines.sql import qualified, quote_ident, quote_literal
from crm_pipelines.warehouse.connection import table_exists


def _scan(parquet_glob: str) -> str:
    return scan_parquet(parquet_glob)


def _sync_columns(con: duckdb.DuckDBPyConnection, target: str, select_sql: str) -> None:
    """Add columns that the new data has and the table lacks (a new source field is not an error)."""
    existing = {row[0] for row in con.execute(f"DESCRIBE {target}").fetchall()}
    for name, dtype, *_ in con.execute(f"DESCRIBE {select_sql}").fetchall():
        if name not in existing:
            con.execute(f"ALTER TABLE {target} ADD COLUMN {quote_ident(name)} {dtype}")


def _create_like(con: duckdb.DuckDBPyConnection, target: str, select_sql: str) -> None:
    con.execute(f"CREATE TABLE IF NOT EXISTS {target} AS SELECT * FROM ({select_sql}) LIMIT 0")


def replace_partition(
    con: duckdb.DuckDBPyConnection,
    *,
    schema: str,
    table: str,
    parquet_glob: str,
    partition: str,
    where: Mapping[str, str] | None = None,
) -> int:
    """Replace one partition's rows (and, optionally, only those matching ``where``) with the Parquet rows.

    Args:
        con: Connection inside an open transaction.
        schema: Target schema.
        table: Target table; created from the Parquet schema plus a ``_partition`` column.
        parquet_glob: Files to load.
        partition: Partition key written to ``_partition``.
        where: Extra column = value filters that scope the replacement (e.g. ``{"source": "erp"}``).

    Returns:
        Rows inserted.
    """
    target = qualified(schema, table)
    select_sql = f"SELECT *, CAST(? AS VARCHAR) AS _partition FROM {_scan(parquet_glob)}"
    describe_sql = f"SELECT *, CAST(NULL AS VARCHAR) AS _partition FROM {_scan(parquet_glob)}"
    if not table_exists(con, schema, table):
        _create_like(con, target, describe_sql)
    else:
        _sync_columns(con, target, describe_sql)
    filters = {"_partition": partition, **(where or {})}
    condition = " AND ".join(f"{quote_ident(c)} = ?" for c in filters)
    con.execute(f"DELETE FROM {target} WHERE {condition}", list(filters.values()))
    con.execute(f"INSERT INTO {target} BY NAME {select_sql}", [partition])
    return _changes(con, target, condition, list(filters.values()))


def merge_by_key(
    con: duckdb.DuckDBPyConnection,
    *,
    schema: str,
    table: str,
    parquet_glob: str,
    key: str,
    partition: str,
    version_column: str | None = None,
) -> int:
    """Upsert the Parquet rows into ``table`` by ``key``.

    With ``version_column`` (e.g. ``updated_at``) an incoming row replaces a stored one only if it is
    at least as new, so loading an older partition after a newer one never rolls data back.

    Returns:
        Rows inserted or replaced.
    """
    target = qualified(schema, table)
    describe_sql = f"SELECT *, CAST(NULL AS VARCHAR) AS _partition FROM {_scan(parquet_glob)}"
    if not table_exists(con, schema, table):
        _create_like(con, target, describe_sql)
    else:
        _sync_columns(con, target, describe_sql)
    k = quote_ident(key)
    con.execute("CREATE OR REPLACE TEMP TABLE _incoming AS SELECT * FROM " + _scan(parquet_glob))
    if version_column is None:
        stale = ""
    else:
        v = quote_ident(version_column)
        stale = f" AND (t.{v} IS NULL OR i.{v} IS NULL OR i.{v} >= t.{v})"
    con.execute(f"DELETE FROM {target} AS t USING _incoming AS i WHERE t.{k} = i.{k}{stale}")
    con.execute(
        f"INSERT INTO {target} BY NAME SELECT i.*, CAST(? AS VARCHAR) AS _partition FROM _incoming AS i "
        f"WHERE NOT EXISTS (SELECT 1 FROM {target} AS t WHERE t.{k} = i.{k})",
        [partition],
    )
    row = con.execute("SELECT count(*) FROM _incoming").fetchone()
    con.execute("DROP TABLE _incoming")
    return int(row[0]) if row else 0


def replace_table(
    con: duckdb.DuckDBPyConnection, *, schema: str, table: str, select_sql: str, params: Sequence[object] = ()
) -> int:
    """Rebuild a table from a SELECT (marts and current-state core tables)."""
    target = qualified(schema, table)
    con.execute(f"CREATE OR REPLACE TABLE {target} AS {select_sql}", list(params))
    row = con.execute(f"SELECT count(*) FROM {target}").fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class Merged:
    """What :func:`merge_table` did to a table."""

    rows: int  # rows the table holds now
    inserted: int  # keys new tonight
    updated: int  # keys whose row changed (rewritten)
    deleted: int  # keys gone
    rebuilt: bool  # created, or replaced in full (its columns changed, or a key was not unique)

    @property
    def changed(self) -> bool:
        return self.rebuilt or bool(self.inserted or self.updated or self.deleted)

    def counts(self, prefix: str) -> dict[str, int]:
        """``<prefix>`` (rows held) and ``<prefix>_inserted``/``_updated``/``_deleted``, for metadata."""
        return {
            prefix: self.rows,
            f"{prefix}_inserted": self.inserted,
            f"{prefix}_updated": self.updated,
            f"{prefix}_deleted": self.deleted,
        }


class ScopeError(Exception):
    """A scoped :func:`merge_table` found a table it can only replace in full."""


MERGE_CHANGES = "_merge_changes"  # the temporary table merge_table leaves its written keys in


def merge_table(
    con: duckdb.DuckDBPyConnection,
    *,
    schema: str,
    table: str,
    select_sql: str,
    key: Sequence[str],
    params: Sequence[object] = (),
    changes: str = MERGE_CHANGES,
    scope: str | None = None,
) -> Merged:
    """Bring a table to the rows of a SELECT by writing only the keys whose row differs.

    The SELECT is computed into a temporary table and compared with the table by ``key``: a key only
    the SELECT has is inserted, a key only the table has is deleted, a key whose row differs in any
    column (``IS DISTINCT FROM``, so nulls compare equal) is rewritten; every other row is left as it
    is, and a table that already holds the rows gets no statement at all (so a PostgreSQL warehouse
    publishes nothing for it). The table ends exactly as :func:`replace_table` would leave it, row
    order aside. It is replaced in full when it does not exist yet, when its columns (names, types,
    order) differ from the SELECT's, or when a key is null or repeated on either side.

    The keys written stay in the temporary table ``changes`` (key columns and ``change``: insert,
    update or delete), for the caller to follow up on; after a full replace (``Merged.rebuilt``: every
    key may have changed) it is empty. A table that does not exist yet is created straight from the
    SELECT.

    With ``scope`` (a condition on the key columns) only the rows it holds are compared: the SELECT
    gives tonight's rows of that scope, every other row stays. A scoped merge cannot replace the
    table in full: where it would have to, it raises :class:`ScopeError` (nothing written).
    """
    target = qualified(schema, table)
    keys = [quote_ident(k) for k in key]
    if not keys:
        raise ValueError("merge_table needs a key")
    key_list = ", ".join(keys)
    no_changes = f"CREATE OR REPLACE TEMP TABLE {changes} AS SELECT {key_list}, 'insert' AS change FROM {target} LIMIT 0"
    if not table_exists(con, schema, table):
        if scope is not None:
            raise ScopeError(f"{target} cannot take a scoped merge: it does not exist")
        con.execute(f"CREATE TABLE {target} AS {select_sql}", list(params))
        con.execute(no_changes)
        rows = _count(con, f"SELECT count(*) FROM {target}")
        return Merged(rows=rows, inserted=rows, updated=0, deleted=0, rebuilt=True)
    con.execute(f"CREATE OR REPLACE TEMP TABLE _merge_new AS {select_sql}", list(params))
    wanted = con.execute("DESCRIBE _merge_new").fetchall()
    columns = [str(row[0]) for row in wanted]
    held = target if scope is None else f"(SELECT * FROM {target} WHERE {scope})"
    if (
        [row[:2] for row in con.execute(f"DESCRIBE {target}").fetchall()] != [row[:2] for row in wanted]
        or not _unique_keys(con, "_merge_new", keys)
        or not _unique_keys(con, held, keys)
    ):
        if scope is not None:
            con.execute("DROP TABLE _merge_new")
            raise ScopeError(f"{target} cannot take a scoped merge: it must be replaced in full")
        con.execute(f"CREATE OR REPLACE TABLE {target} AS SELECT * FROM _merge_new")
        con.execute("DROP TABLE _merge_new")
        con.execute(no_changes)
        rows = _count(con, f"SELECT count(*) FROM {target}")
        return Merged(rows=rows, inserted=rows, updated=0, deleted=0, rebuilt=True)
    on = " AND ".join(f"n.{k} = o.{k}" for k in keys)
    differs = " OR ".join(
        f"n.{quote_ident(c)} IS DISTINCT FROM o.{quote_ident(c)}"
        for c in columns
        if quote_ident(c) not in keys
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {changes} AS
        SELECT {", ".join(f"coalesce(n.{k}, o.{k}) AS {k}" for k in keys)},
               CASE WHEN o.{keys[0]} IS NULL THEN 'insert' WHEN n.{keys[0]} IS NULL THEN 'delete'
                    ELSE 'update' END AS change
        FROM _merge_new AS n FULL JOIN {held} AS o ON {on}
        WHERE o.{keys[0]} IS NULL OR n.{keys[0]} IS NULL{f" OR {differs}" if differs else ""}
        """
    )
    counts = dict(con.execute(f"SELECT change, count(*) FROM {changes} GROUP BY change").fetchall())
    inserted, updated, deleted = (int(counts.get(c, 0)) for c in ("insert", "update", "delete"))
    match = " AND ".join(f"c.{k} = t.{k}" for k in keys)
    if updated or deleted:
        con.execute(f"DELETE FROM {target} AS t USING {changes} AS c WHERE {match} AND c.change <> 'insert'")
    if inserted or updated:
        con.execute(
            f"INSERT INTO {target} SELECT t.* FROM _merge_new AS t "
            f"SEMI JOIN {changes} AS c ON {match} AND c.change <> 'delete'"
        )
    con.execute("DROP TABLE _merge_new")
    rows = _count(con, f"SELECT count(*) FROM {target}")
    return Merged(rows=rows, inserted=inserted, updated=updated, deleted=deleted, rebuilt=False)


def _unique_keys(con: duckdb.DuckDBPyConnection, relation: str, keys: list[str]) -> bool:
    """No key column null and no key twice."""
    key_list = ", ".join(keys)
    nulls = " OR ".join(f"{k} IS NULL" for k in keys)
    row = con.execute(
        f"SELECT count(*) = count(DISTINCT ({key_list})) AND count(*) FILTER (WHERE {nulls}) = 0 FROM {relation}"
    ).fetchone()
    return bool(row and row[0])


def _count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    return int(row[0]) if row else 0


def comment_columns(
    con: duckdb.DuckDBPyConnection, *, schema: str, table: str, descriptions: Mapping[str, str]
) -> None:
    """Copy column descriptions onto the table so SQL clients show them too.

    Only the columns whose comment differs are commented: a table that keeps its columns and comments
    from night to night gets no statement.
    """
    target = qualified(schema, table)
    existing = column_comments(con, schema=schema, table=table)
    for column, text in descriptions.items():
        if column in existing and text and existing[column] != text:
            con.execute(f"COMMENT ON COLUMN {target}.{quote_ident(column)} IS {quote_literal(text)}")


def column_comments(con: duckdb.DuckDBPyConnection, *, schema: str, table: str) -> dict[str, str | None]:
    """Every column of the table, in order, with its comment (``None`` when it has none)."""
    rows = con.execute(
        "SELECT column_name, comment FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = ? AND table_name = ? ORDER BY column_index",
        [schema, table],
    ).fetchall()
    return {str(name): (str(comment) if comment else None) for name, comment in rows}


def create_view(con: duckdb.DuckDBPyConnection, *, schema: str, view: str, statement: str) -> bool:
    """Run ``statement`` (a ``CREATE OR REPLACE VIEW`` of ``schema.view``) unless the view already has it.

    The view's comment keeps the statement's md5, so a load that would define it again as it is runs
    nothing (and a PostgreSQL warehouse does not publish it for that). Returns whether it ran.
    """
    stamp = f"definition md5 {hashlib.md5(statement.encode()).hexdigest()}"
    row = con.execute(
        "SELECT comment FROM duckdb_views() WHERE database_name = current_database() "
        "AND schema_name = ? AND view_name = ?",
        [schema, view],
    ).fetchone()
    if row is not None and row[0] == stamp:
        return False
    con.execute(statement)
    con.execute(f"COMMENT ON VIEW {qualified(schema, view)} IS {quote_literal(stamp)}")
    return True


def newest_partition(con: duckdb.DuckDBPyConnection, target: str) -> str | None:
    row = con.execute("SELECT partition FROM ops.load_state WHERE target = ?", [target]).fetchone()
    return str(row[0]) if row else None


def record_load_state(con: duckdb.DuckDBPyConnection, *, target: str, partition: str, run_id: str) -> None:
    con.execute(
        "INSERT OR REPLACE INTO ops.load_state VALUES (?, ?, ?, now())",
        [target, partition, run_id],
    )


def _changes(con: duckdb.DuckDBPyConnection, target: str, condition: str, params: list[str]) -> int:
    row = con.execute(f"SELECT count(*) FROM {target} WHERE {condition}", params).fetchone()
    return int(row[0]) if row else 0
