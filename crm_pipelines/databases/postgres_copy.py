"""The fast PostgreSQL read: ``COPY (SELECT ...) TO STDOUT`` streamed into pyarrow's CSV reader.

The server renders rows as CSV and pyarrow parses them in C++ into typed Arrow batches, so no Python
object is built per value (the SQLAlchemy path builds one per cell). Memory stays flat: psycopg hands
over the stream in chunks and pyarrow parses one block at a time.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa

from crm_pipelines.databases.sql_source import (
    TableRead,
    filtered_select,
    read_only_connection,
    reflect_table,
    selected_columns,
    table_schema,
)

# Bytes pyarrow parses per batch: ~16 MB is roughly 100k rows of an ERP table.
BLOCK_BYTES = 16 << 20


class _CopyStream(io.RawIOBase):
    """A readable file over psycopg's COPY chunks, for pyarrow.

    PostgreSQL sends one message per row; ``readinto`` fills the whole buffer pyarrow asks for, since
    pyarrow's streaming reader makes one batch per read and would otherwise make one per row.
    """

    def __init__(self, chunks: Iterator[memoryview]) -> None:
        self._chunks = chunks
        self._pending = bytearray()
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        wanted = len(target)
        while len(self._pending) < wanted and not self._done:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._done = True
            else:
                self._pending += chunk
        size = min(wanted, len(self._pending))
        target[:size] = self._pending[:size]
        del self._pending[:size]
        return size


def read_postgres_copy(
    engine: sa.Engine, *, read: TableRead, block_bytes: int = BLOCK_BYTES
) -> Iterator[pa.RecordBatch]:
    """Stream a PostgreSQL table through COPY as Arrow batches with the reflected types.

    Args:
        engine: SQLAlchemy engine with the psycopg (3) driver.
        read: Table, columns, filter and ordering.
        block_bytes: CSV bytes parsed per batch.

    Returns:
        An iterator of record batches; an empty result yields one empty batch with the schema.
    """
    table = reflect_table(engine, read.table)
    names = selected_columns(table, read)
    schema = table_schema(engine, table, names)
    outputs: list[sa.ColumnElement[object]] = []
    parse_types: dict[str, pa.DataType] = {}
    for field in schema:
        column = table.c[field.name]
        if pa.types.is_timestamp(field.type) and field.type.tz is not None:
            # Rendered as UTC wall time, so the text carries no offset for the parser to interpret.
            outputs.append(sa.func.timezone("UTC", column).label(field.name))
            parse_types[field.name] = pa.timestamp("us")
        else:
            outputs.append(column)
            parse_types[field.name] = field.type
    compiled = filtered_select(table, read, outputs).compile(dialect=engine.dialect)
    copy_sql = f"COPY ({compiled}) TO STDOUT WITH (FORMAT csv)"
    with read_only_connection(engine) as conn:
        conn.exec_driver_sql("SET LOCAL DateStyle = 'ISO, YMD'")
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        # psycopg binds the parameters client-side: COPY accepts no server-side parameters.
        with cursor.copy(copy_sql, compiled.params) as copy:
            chunks = iter(copy)
            first = next(chunks, None)
            if first is None:  # pyarrow refuses an empty CSV; an empty result still has a schema
                yield pa.RecordBatch.from_pylist([], schema=schema)
                return
            reader = pacsv.open_csv(
                _CopyStream(itertools.chain([first], chunks)),
                read_options=pacsv.ReadOptions(column_names=names, block_size=block_bytes),
                convert_options=pacsv.ConvertOptions(
                    column_types=parse_types,
                    # COPY writes NULL unquoted and empty text as "": keep them apart.
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                    true_values=["t"],
                    false_values=["f"],
                ),
            )
            for batch in reader:
                yield pa.RecordBatch.from_arrays(
                    [batch.column(i).cast(f.type) for i, f in enumerate(schema)], schema=schema
                )
