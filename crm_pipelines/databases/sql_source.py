"""Stream tables from any SQLAlchemy database into Arrow record batches.

Rows are fetched through a server-side cursor (``stream_results`` + ``yield_per``) and converted
chunk by chunk, so memory stays flat however large the table is.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from crm_pipelines.sql import check_identifier


@dataclass(frozen=True)
class TableRead:
    """What to read from one table.

    Attributes:
        table: Table name (validated, reflected).
        columns: Columns to read; None reads every column.
        order_by: Columns to order by; also the key a broken read resumes after.
        cursor: Incremental cursor column; with ``since``, only rows with ``cursor >= since`` are read.
        since: Lower bound of the cursor (inclusive).
        after: Resume point: only rows whose ``order_by`` values sort after these.
    """

    table: str
    columns: Sequence[str] | None = None  # None: every column
    order_by: Sequence[str] = ()
    cursor: str | None = None
    since: object = None
    after: tuple[object, ...] | None = None


class SchemaMismatch(LookupError):
    """A table or column is missing, or a column's type is not what the lake holds."""


def reflect_table(engine: sa.Engine, name: str) -> sa.Table:
    """The table's reflected definition; a missing table raises :class:`SchemaMismatch` naming it."""
    check_identifier(name)
    try:
        return sa.Table(name, sa.MetaData(), autoload_with=engine)
    except sa.exc.NoSuchTableError as exc:
        raise SchemaMismatch(f"table {name!r} does not exist in {engine.url.render_as_string()}") from exc


def selected_columns(table: sa.Table, read: TableRead) -> list[str]:
    """The names to read, checked against the table (the error names what is missing)."""
    names = list(read.columns) if read.columns is not None else [c.name for c in table.columns]
    wanted = [*names, *read.order_by, *([read.cursor] if read.cursor else [])]
    missing = [n for n in wanted if n not in table.c]
    if missing:
        raise SchemaMismatch(
            f"table {read.table!r} has no column(s) {sorted(set(missing))}; it has {[c.name for c in table.c]}"
        )
    return names


def after_key(
    columns: Sequence[sa.ColumnElement[object]], values: Sequence[object]
) -> sa.ColumnElement[bool]:
    """``(a, b) > (x, y)`` spelled with AND/OR, which every dialect understands (SQL Server has no row values)."""
    clauses = []
    for index, column in enumerate(columns):
        equal = [columns[i] == values[i] for i in range(index)]
        clauses.append(sa.and_(*equal, column > values[index]))
    return sa.or_(*clauses)


def filtered_select(
    table: sa.Table, read: TableRead, outputs: Sequence[sa.ColumnElement[Any]]
) -> sa.Select[Any]:
    """``SELECT outputs FROM table`` with the cursor bound, the resume point and the ordering."""
    statement = sa.select(*outputs)
    if read.cursor is not None and read.since is not None:
        statement = statement.where(table.c[read.cursor] >= read.since)
    if read.after is not None:
        statement = statement.where(after_key([table.c[c] for c in read.order_by], read.after))
    if read.order_by:
        statement = statement.order_by(*(table.c[check_identifier(c)] for c in read.order_by))
    return statement


@contextmanager
def read_only_connection(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection whose transaction is read-only where the database supports it.

    PostgreSQL: ``SET TRANSACTION READ ONLY`` through the dialect's ``postgresql_readonly`` option;
    SQLite: ``PRAGMA query_only``. Elsewhere the read relies on the account's grants (give the ERP
    reader SELECT only).
    """
    with engine.connect() as conn:
        name = engine.dialect.name
        if name == "postgresql":
            conn = conn.execution_options(postgresql_readonly=True)
        elif name == "sqlite":
            conn.exec_driver_sql("PRAGMA query_only = ON")
        try:
            yield conn
        finally:
            if name == "sqlite":
                conn.rollback()
                conn.exec_driver_sql("PRAGMA query_only = OFF")


def arrow_type(column_type: sa.types.TypeEngine[Any], *, enforced: bool) -> pa.DataType:
    """The Arrow type that keeps a column's values faithfully.

    ``enforced`` is False for databases that do not enforce declared types (SQLite): there a DATE
    column may hold '31/13/2025', so dates, times and numbers are read as text and converted (or
    quarantined) by the mapping step instead of crashing the extract.
    """
    if isinstance(column_type, sa.Boolean):
        return pa.bool_()
    if isinstance(column_type, sa.Integer):
        return pa.int64()
    if not enforced:
        return pa.string()
    if isinstance(column_type, sa.Numeric) and not isinstance(column_type, sa.Float):
        precision = column_type.precision or 38
        scale = column_type.scale if column_type.scale is not None else 9
        return pa.decimal128(precision, scale)
    if isinstance(column_type, sa.Float):
        return pa.float64()
    if isinstance(column_type, sa.DateTime):
        return pa.timestamp("us", tz="UTC") if column_type.timezone else pa.timestamp("us")
    if isinstance(column_type, sa.Date):
        return pa.date32()
    return pa.string()


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    return str(value)


def table_schema(engine: sa.Engine, table: sa.Table, names: Sequence[str]) -> pa.Schema:
    """The Arrow schema a read of ``names`` produces."""
    enforced = engine.dialect.name != "sqlite"
    return pa.schema([pa.field(n, arrow_type(table.c[n].type, enforced=enforced)) for n in names])


def read_table_batches(
    engine: sa.Engine, *, read: TableRead, chunk_rows: int = 50_000
) -> Iterator[pa.RecordBatch]:
    """Yield the table's rows as Arrow batches of at most ``chunk_rows`` rows.

    Args:
        engine: SQLAlchemy engine of the source database.
        read: Table, columns, filter and ordering (names are validated and reflected, never interpolated).
        chunk_rows: Rows per fetch and per batch.

    Returns:
        An iterator of record batches with a schema derived from the reflected column types.
    """
    table = reflect_table(engine, read.table)
    names = selected_columns(table, read)
    enforced = engine.dialect.name != "sqlite"
    # SQLite hands back whatever text was stored, so read raw values instead of letting the
    # dialect's date/decimal processors raise on a malformed one.
    columns = [
        table.c[n]
        if enforced or isinstance(table.c[n].type, sa.Integer | sa.Boolean)
        else sa.type_coerce(table.c[n], sa.String()).label(n)
        for n in names
    ]
    schema = table_schema(engine, table, names)
    statement = filtered_select(table, read, columns)
    converters = [_text if pa.types.is_string(f.type) else None for f in schema]
    with read_only_connection(engine) as base:
        conn = base.execution_options(stream_results=True, yield_per=chunk_rows)
        result = conn.execute(statement)
        produced = False
        for chunk in result.partitions(chunk_rows):
            produced = True
            arrays = []
            for index, field in enumerate(schema):
                values = [row[index] for row in chunk]
                convert = converters[index]
                if convert is not None:
                    values = [convert(v) for v in values]
                arrays.append(pa.array(values, type=field.type))
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)
        if not produced:
            # An empty table still has a schema; downstream SQL needs it.
            yield pa.RecordBatch.from_pylist([], schema=schema)


def check_database(engine: sa.Engine) -> str:
    """Run a trivial query; returns the server version string or raises with the driver's error."""
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
        return f"{engine.dialect.name} {'.'.join(str(p) for p in (engine.dialect.server_version_info or ()))}"
