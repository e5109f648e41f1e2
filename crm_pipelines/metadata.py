"""Dagster metadata from what the library knows: column schemas with their warehouse types."""

from __future__ import annotations

import dagster as dg
import duckdb
import pyarrow as pa

from crm_pipelines.sql import duckdb_type, qualified

__all__ = ["column_schema", "warehouse_column_schema"]


def column_schema(schema: pa.Schema) -> dg.TableSchema:
    """The Dagster column schema of an Arrow schema: names, types and the fields' descriptions."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                f.name,
                type=duckdb_type(f.type).lower(),
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
