"""Helpers for SQL text built from configuration: identifiers are validated and quoted, literals escaped."""

from __future__ import annotations

import re
import warnings

import duckdb
import pyarrow as pa

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def quote_ident(name: str) -> str:
    """Double-quote a validated identifier; anything but letters, digits and underscore is refused."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"refusing SQL identifier {name!r}: only letters, digits and underscore are allowed")
    return f'"{name}"'


def qualified(schema: str, table: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(table)}"


def quote_literal(value: str) -> str:
    """A SQL string literal; for text that must be inlined (file paths in read_parquet, value maps)."""
    return "'" + value.replace("'", "''") + "'"


def duckdb_type(dtype: pa.DataType) -> str:
    """DuckDB column type for an Arrow type of the canonical schemas."""
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "VARCHAR"
    if pa.types.is_decimal(dtype):
        return f"DECIMAL({dtype.precision}, {dtype.scale})"
    if pa.types.is_date(dtype):
        return "DATE"
    if pa.types.is_timestamp(dtype):
        return "TIMESTAMPTZ" if dtype.tz else "TIMESTAMP"
    if pa.types.is_boolean(dtype):
        return "BOOLEAN"
    if pa.types.is_int32(dtype):
        return "INTEGER"
    if pa.types.is_int64(dtype):
        return "BIGINT"
    if pa.types.is_floating(dtype):
        return "DOUBLE"
    raise TypeError(f"no DuckDB type for {dtype}")


def check_identifier(name: str) -> str:
    """Return ``name`` if it is a plain identifier, else raise (identifiers from configuration)."""
    quote_ident(name)
    return name


def fetch_arrow(
    con: duckdb.DuckDBPyConnection, sql: str, params: list[object] | dict[str, object] | None = None
) -> pa.Table:
    """Run a query and return its whole result as an Arrow table."""
    # con.sql() would avoid one copy, but refuses to run while an earlier execute() on the same
    # connection has rows left (a fetchone): execute() always runs. Results here are small.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Arrow output on a DB-API result", category=UserWarning)
        table = con.execute(sql, params if params is not None else []).to_arrow_table()
    assert table is not None  # a query always has a result, possibly empty
    return table
