"""Load Parquet from the lake into warehouse tables, idempotently.

Every function runs inside the caller's transaction (see :meth:`Warehouse.transaction`), so a step
that loads several tables commits them together. Re-running a load with the same input leaves the
tables exactly as they were.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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


def comment_columns(
    con: duckdb.DuckDBPyConnection, *, schema: str, table: str, descriptions: Mapping[str, str]
) -> None:
    """Copy column descriptions onto the table so SQL clients show them too."""
    target = qualified(schema, table)
    existing = {row[0] for row in con.execute(f"DESCRIBE {target}").fetchall()}
    for column, text in descriptions.items():
        if column in existing and text:
            con.execute(f"COMMENT ON COLUMN {target}.{quote_ident(column)} IS {quote_literal(text)}")


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
