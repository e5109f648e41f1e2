"""Dagster metadata from what the library knows: column schemas with their real types."""

from __future__ import annotations

import dagster as dg
import duckdb
import pyarrow as pa

from crm_pipelines.sql import qualified

__all__ = ["column_schema", "warehouse_column_schema"]


def _type_name(dtype: pa.DataType) -> str:
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "string"
    if pa.types.is_decimal(dtype):
        return f"decimal({dtype.precision}, {dtype.scale})"
    if pa.types.is_timestamp(dtype):
        return "timestamp with time zone" if dtype.tz else "timestamp"
    if pa.types.is_date(dtype):
        return "date"
    if pa.types.is_boolean(dtype):
        return "boolean"
    if pa.types.is_integer(dtype):
        return "integer"
    if pa.types.is_floating(dtype):
        return "double"
    return str(dtype)


def column_schema(schema: pa.Schema) -> dg.TableSchema:
    """The Dagster column schema of an Arrow schema: names, types and the fields' descriptions."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                f.name,
                type=_type_name(f.type),
                description=(f.metadata or {}).get(b"description", b"").decode() or None,
            )
            for f in schema
        ]
    )


def warehouse_column_schema(
    con: duckdb.DuckDBPyConnection, *, schema: str, table: str, descriptions: dict[str, str]
) -> dg.TableSchema:
    """The column schema of a warehouse table as built, with its types from the database."""
    described = con.execute(f"DESCRIBE {qualified(schema, table)}").fetchall()
    return dg.TableSchema(
        columns=[
            dg.TableColumn(str(name), type=str(kind).lower(), description=descriptions.get(str(name)))
            for name, kind, *_ in described
        ]
    )
