"""Tables read through an ODBC driver with pyodbc and a DSN-less connection string.

For databases only reachable through ODBC (``DRIVER={PostgreSQL Unicode};SERVER=...`` or
``DRIVER={ODBC Driver 18 for SQL Server};...``). Types come from the driver's catalog
(``SQLColumns``), so decimals keep precision and scale and time-zone-aware columns stay UTC.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from crm_pipelines.databases.sql_source import SchemaMismatch, TableRead
from crm_pipelines.sql import check_identifier, quote_ident

# ODBC SQL type codes (sql.h / sqlext.h; -155 is SQL Server's datetimeoffset). pyodbc itself is
# imported only when a read runs: it needs libodbc, which machines without ODBC sources lack.
SQL_BIT, SQL_TYPE_DATE, SQL_TYPE_TIMESTAMP, SQL_SS_TIMESTAMPOFFSET = -7, 91, 93, -155
_INTEGERS = {4, 5, -5, -6}  # INTEGER, SMALLINT, BIGINT, TINYINT
_DECIMALS = {2, 3}  # NUMERIC, DECIMAL
_FLOATS = {6, 7, 8}  # FLOAT, REAL, DOUBLE
_TIMESTAMPS = {SQL_TYPE_TIMESTAMP, SQL_SS_TIMESTAMPOFFSET}


def connect_read_only(connection_string: str) -> Any:
    """Open a pyodbc connection that refuses writes where the driver and database allow it.

    ``readonly=True`` sets ``SQL_ATTR_ACCESS_MODE``; PostgreSQL additionally gets a read-only session
    (psqlODBC does not map the attribute), and its session time zone is UTC so ``timestamptz`` values
    arrive as UTC wall time.
    """
    import pyodbc

    conn = pyodbc.connect(connection_string, readonly=True, autocommit=True)
    if "postgres" in str(conn.getinfo(pyodbc.SQL_DBMS_NAME)).lower():
        conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        conn.execute("SET TIME ZONE 'UTC'")
    conn.autocommit = False
    return conn


def _arrow_type(row: Any) -> pa.DataType:
    data_type, type_name = int(row.data_type), str(row.type_name).lower()
    if type_name in ("bool", "boolean") or data_type == SQL_BIT:
        return pa.bool_()
    if data_type in _INTEGERS:
        return pa.int64()
    if data_type in _DECIMALS:
        precision = int(row.column_size or 38)
        scale = int(row.decimal_digits) if row.decimal_digits is not None else 9
        return pa.decimal128(min(precision, 38) if precision else 38, scale)
    if data_type in _FLOATS:
        return pa.float64()
    if data_type in _TIMESTAMPS:
        aware = data_type == SQL_SS_TIMESTAMPOFFSET or "tz" in type_name or "zone" in type_name
        return pa.timestamp("us", tz="UTC") if aware else pa.timestamp("us")
    if data_type == SQL_TYPE_DATE:
        return pa.date32()
    return pa.string()


def odbc_schema(conn: Any, table: str) -> pa.Schema:
    """The table's Arrow schema from the driver's catalog; a missing table is named in the error."""
    rows = conn.cursor().columns(table=check_identifier(table)).fetchall()
    if not rows:
        raise SchemaMismatch(f"table {table!r} does not exist (ODBC catalog has no columns for it)")
    fields: dict[str, pa.DataType] = {}
    for row in rows:
        fields.setdefault(str(row.column_name), _arrow_type(row))
    return pa.schema(list(fields.items()))


def _value(value: object, dtype: pa.DataType) -> object:
    if value is None:
        return None
    if pa.types.is_boolean(dtype) and isinstance(value, str):
        return value in ("1", "t", "true")
    if pa.types.is_timestamp(dtype) and dtype.tz is not None and isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if pa.types.is_string(dtype) and not isinstance(value, str):
        if isinstance(value, decimal.Decimal):
            return format(value, "f")
        return value.isoformat() if isinstance(value, dt.date | dt.time) else str(value)
    return value


def _select_sql(read: TableRead, names: Sequence[str]) -> tuple[str, list[object]]:
    sql = f"SELECT {', '.join(quote_ident(n) for n in names)} FROM {quote_ident(read.table)}"
    where: list[str] = []
    params: list[object] = []
    if read.cursor is not None and read.since is not None:
        where.append(f"{quote_ident(read.cursor)} >= ?")
        params.append(read.since)
    if read.after is not None:
        # (a, b) > (x, y) without row values, which SQL Server lacks.
        alternatives = []
        for index, column in enumerate(read.order_by):
            terms = [f"{quote_ident(c)} = ?" for c in read.order_by[:index]]
            terms.append(f"{quote_ident(column)} > ?")
            params.extend([*read.after[:index], read.after[index]])
            alternatives.append("(" + " AND ".join(terms) + ")")
        where.append("(" + " OR ".join(alternatives) + ")")
    if where:
        sql += " WHERE " + " AND ".join(where)
    if read.order_by:
        sql += " ORDER BY " + ", ".join(quote_ident(c) for c in read.order_by)
    return sql, params


def read_odbc_batches(
    connection_string: str, *, read: TableRead, chunk_rows: int = 50_000
) -> Iterator[pa.RecordBatch]:
    """Stream a table through ODBC as Arrow batches of at most ``chunk_rows`` rows.

    Args:
        connection_string: DSN-less ODBC connection string, e.g.
            ``DRIVER={PostgreSQL Unicode};SERVER=db;PORT=5432;DATABASE=erp;UID=reader;PWD=...``.
        read: Table, columns, filter and ordering (identifiers validated and quoted, values bound).
        chunk_rows: Rows per ``fetchmany`` and per batch.

    Returns:
        An iterator of record batches.
    """
    conn = connect_read_only(connection_string)
    try:
        full = odbc_schema(conn, read.table)
        names = list(read.columns) if read.columns is not None else full.names
        wanted = [*names, *read.order_by, *([read.cursor] if read.cursor else [])]
        missing = sorted({n for n in wanted if n not in full.names})
        if missing:
            raise SchemaMismatch(f"table {read.table!r} has no column(s) {missing}; it has {full.names}")
        schema = pa.schema([full.field(n) for n in names])
        sql, params = _select_sql(read, names)
        cursor = conn.cursor()
        cursor.arraysize = chunk_rows
        cursor.execute(sql, params)
        produced = False
        while rows := cursor.fetchmany(chunk_rows):
            produced = True
            arrays = [
                pa.array([_value(row[i], f.type) for row in rows], type=f.type) for i, f in enumerate(schema)
            ]
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)
        if not produced:
            yield pa.RecordBatch.from_pylist([], schema=schema)
        conn.rollback()
    finally:
        conn.close()
