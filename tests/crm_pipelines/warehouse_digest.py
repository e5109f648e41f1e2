"""A digest of every data table of a warehouse, for tests that compare two nights table by table."""

from __future__ import annotations

from collections.abc import Iterable

import duckdb


def fingerprint(
    con: duckdb.DuckDBPyConnection, *, leave_out: Iterable[str] = ("_extracted_at",)
) -> dict[str, str]:
    """Row count and an order-independent digest of each table of raw, staging, core and marts.

    Args:
        con: The warehouse.
        leave_out: Columns allowed to differ (by default the extraction time).
    """
    skipped = set(leave_out)
    out = {}
    tables = con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema IN ('raw', 'staging', 'core', 'marts') ORDER BY 1, 2"
    ).fetchall()
    for schema, table in tables:
        columns = [
            r[0] for r in con.execute(f'DESCRIBE "{schema}"."{table}"').fetchall() if r[0] not in skipped
        ]
        select = ", ".join(f'"{c}"' for c in columns)
        row = con.execute(
            f"SELECT count(*), md5(coalesce(string_agg(r::VARCHAR, '|' ORDER BY r::VARCHAR), '')) "
            f'FROM (SELECT {select} FROM "{schema}"."{table}") AS r'
        ).fetchone()
        out[f"{schema}.{table}"] = f"{row[0]}:{row[1]}" if row else ""
    return out
