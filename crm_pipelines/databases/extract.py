"""One database table into the lake: a full snapshot, or the previous snapshot merged with an increment.

Contract with downstream steps: ``raw/<source>/<dataset>/dt=D/`` always holds the whole table as of D,
plus a ``_deleted`` flag. An incremental extract reads only rows whose cursor is at or after the
watermark minus the lookback into ``increment/<source>/<dataset>/dt=D/``, then rebuilds the snapshot
from the newest earlier snapshot in the lake and the increment (newest row per primary key wins) in
DuckDB, streamed Parquet to Parquet. With ``deletes: key_compare`` a keys-only read of the source
marks snapshot rows whose key is gone as ``_deleted = true`` instead of dropping them.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal

import pyarrow as pa

from crm_pipelines.databases.source import DatabaseSource
from crm_pipelines.databases.sql_source import SchemaMismatch, TableRead
from crm_pipelines.incremental import (
    SNAPSHOT_FILE,
    CursorKind,
    SnapshotBuild,
    plan_read,
)
from crm_pipelines.lake import DELETED, LakePath, read_schema, reader, scan_parquet
from crm_pipelines.sources import Dataset, Incremental
from crm_pipelines.sql import quote_ident


@dataclass(frozen=True)
class ExtractReport:
    """What one extract did (shown as asset metadata)."""

    mode: str  # full or incremental
    rows_read: int
    snapshot_rows: int
    deleted_rows: int
    since: str | None
    reached: str | None
    base_partition: str | None


def _flagged(batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """The batches with ``_deleted = false`` appended: every row read from the source exists."""
    for batch in batches:
        yield pa.RecordBatch.from_arrays(
            [*batch.columns, pa.array([False] * batch.num_rows, pa.bool_())], schema=schema
        )


def _read(
    source: DatabaseSource, read: TableRead, *, chunk_rows: int, flag: bool
) -> tuple[pa.Schema, Iterable[pa.RecordBatch]]:
    """The read's schema (fixed by its first batch, always one, possibly empty) and its batches."""
    batches = source.read(read, chunk_rows=chunk_rows)
    first = next(batches)
    stream: Iterable[pa.RecordBatch] = itertools.chain([first], batches)
    schema = first.schema
    if flag:
        schema = schema.append(pa.field(DELETED, pa.bool_()))
        stream = _flagged(stream, schema)
    return schema, stream


def _cursor_text(value: object, kind: str) -> str | None:
    """The watermark as stored in ops.watermark: ISO-8601 UTC, or the integer."""
    if value is None:
        return None
    if kind == "integer":
        return str(int(value) if isinstance(value, int | float | Decimal) else int(str(value)))
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    moment = moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
    return moment.isoformat()


def _max_cursor(file: LakePath, incremental: Incremental) -> str | None:
    """The highest cursor in a Parquet file, as stored in ops.watermark."""
    with reader() as con:
        row = con.execute(
            f"SELECT max({quote_ident(incremental.cursor)}) FROM {scan_parquet(file)}"
        ).fetchone()
    return _cursor_text(row[0] if row else None, incremental.kind)


def check_same_columns(table: str, snapshot: LakePath, increment: LakePath) -> None:
    """Refuse to merge when a column vanished or changed type since the snapshot; new columns are fine."""
    old = read_schema(snapshot)
    new = read_schema(increment)
    for field in old:
        if field.name == DELETED:
            continue
        if field.name not in new.names:
            raise SchemaMismatch(f"column {table}.{field.name} is gone from the source (the lake has it)")
        if new.field(field.name).type != field.type:
            raise SchemaMismatch(
                f"column {table}.{field.name} changed type: {field.type} in the lake, "
                f"{new.field(field.name).type} in the source"
            )


def extract_table(
    source: DatabaseSource,
    *,
    lake_dir: LakePath,
    source_name: str,
    dataset: str,
    declared: Dataset,
    partition: str,
    watermark: str | None,
    chunk_rows: int = 50_000,
) -> ExtractReport:
    """Land the table's snapshot as of ``partition`` in the lake, reading as little as the declaration allows.

    Args:
        source: The database.
        lake_dir: Root of the lake.
        source_name: Source system (``erp``).
        dataset: Dataset name.
        declared: Its declaration in sources.yaml (table, order, key, incremental, deletes).
        partition: Partition key ``D``.
        watermark: The committed watermark from ``ops.watermark`` (None before the first load).
        chunk_rows: Rows per batch.

    Returns:
        What was read and written.
    """
    table = declared.table or dataset
    order_by = tuple(declared.order_by or declared.primary_key)
    incremental = declared.incremental
    build = SnapshotBuild(lake_dir=lake_dir, source=source_name, dataset=dataset, partition=partition)
    kind: CursorKind | None = incremental.kind if incremental is not None else None
    plan = plan_read(
        base=build.base() if kind is not None else None,  # a table without a cursor is read whole
        committed=watermark,
        kind=kind,
        lookback_seconds=incremental.lookback_seconds if incremental is not None else 0,
    )
    if not plan.incremental or incremental is None or plan.base is None:
        schema, batches = _read(source, TableRead(table, order_by=order_by), chunk_rows=chunk_rows, flag=True)
        rows = build.write_full(batches, empty_schema=schema)
        reached = _max_cursor(build.snapshot_file, incremental) if incremental is not None else None
        build.finish(since=None, reached=reached, kind=kind or "timestamp")
        return ExtractReport("full", rows, rows, 0, None, reached, None)

    base, since, start = plan.base, plan.since, plan.start
    read = TableRead(table, order_by=order_by, cursor=incremental.cursor, since=since)
    schema, batches = _read(source, read, chunk_rows=chunk_rows, flag=True)
    rows = build.write_increment(batches, empty_schema=schema)
    check_same_columns(table, base.folder / SNAPSHOT_FILE, build.increment_file)
    if declared.deletes == "key_compare":
        keys = TableRead(table, columns=declared.primary_key, order_by=tuple(declared.primary_key))
        key_schema, key_batches = _read(source, keys, chunk_rows=max(chunk_rows, 200_000), flag=False)
        build.write_live_keys(key_batches, schema=key_schema, base=base, what=f"{source_name} table {table}")
    snapshot_rows, deleted = build.merge(base=base, primary_key=declared.primary_key)
    reached = _max_cursor(build.increment_file, incremental) or start
    since_text = str(since) if isinstance(since, int) else _cursor_text(since, "timestamp")
    build.finish(since=since_text, reached=reached, kind=incremental.kind)
    return ExtractReport("incremental", rows, snapshot_rows, deleted, since_text, reached, base.partition)
