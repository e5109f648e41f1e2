"""Stream tables from any SQLAlchemy database into Arrow record batches.

Rows are fetched through a server-side cursor (``stream_results`` + ``yield_per``) and converted
chunk by chunk, so memory stays flat however large the table is.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import sqlalchemy as sa

from crm_pipelines.sql import check_identifier


@dataclass(frozen=True)
class TableRead:
    """What to read from one table."""

    table: str
    columns: Sequence[str] | None = None  # None: every column
    order_by: Sequence[str] = ()


def arrow_type(column_type: sa.types.TypeEngine, *, enforced: bool) -> pa.DataType:
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


def read_table_batches(
    engine: sa.Engine, *, read: TableRead, chunk_rows: int = 50_000
) -> Iterator[pa.RecordBatch]:
    """Yield the table's rows as Arrow batches of at most ``chunk_rows`` rows.

    Args:
        engine: SQLAlchemy engine of the source database.
        read: Table, columns and ordering to read (names are validated and reflected, never interpolated).
        chunk_rows: Rows per fetch and per batch.

    Returns:
        An iterator of record batches with a schema derived from the reflected column types.
    """
    check_identifier(read.table)
    table = sa.Table(read.table, sa.MetaData(), autoload_with=engine)
    names = list(read.columns) if read.columns is not None else [c.name for c in table.columns]
    missing = [n for n in names if n not in table.c]
    if missing:
        raise LookupError(
            f"table {read.table!r} has no column(s) {missing}; it has {[c.name for c in table.c]}"
        )
    enforced = engine.dialect.name != "sqlite"
    # SQLite hands back whatever text was stored, so read raw values instead of letting the
    # dialect's date/decimal processors raise on a malformed one.
    columns = [
        table.c[n]
        if enforced or isinstance(table.c[n].type, sa.Integer | sa.Boolean)
        else sa.type_coerce(table.c[n], sa.String()).label(n)
        for n in names
    ]
    schema = pa.schema([pa.field(n, arrow_type(table.c[n].type, enforced=enforced)) for n in names])
    statement = sa.select(*columns)
    if read.order_by:
        statement = statement.order_by(*(table.c[check_identifier(c)] for c in read.order_by))
    converters = [_text if pa.types.is_string(f.type) else None for f in schema]
    with engine.connect().execution_options(stream_results=True, yield_per=chunk_rows) as conn:
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
