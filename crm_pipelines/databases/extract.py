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
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from crm_pipelines.databases.source import DatabaseSource
from crm_pipelines.databases.sql_source import SchemaMismatch, TableRead
from crm_pipelines.lake import parquet_glob, partition_dir, reset_dir, scan_parquet, write_batches
from crm_pipelines.sources import Dataset
from crm_pipelines.sql import quote_ident, quote_literal
from crm_pipelines.warehouse.watermarks import PendingWatermark, read_pending, write_pending

DELETED = "_deleted"
SNAPSHOT_FILE = "part-0000.parquet"


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


def previous_snapshot(lake_dir: Path, source: str, dataset: str, partition: str) -> Path | None:
    """The newest ``raw`` folder of the dataset strictly before ``partition`` that holds Parquet."""
    parent = Path(lake_dir) / "raw" / source / dataset
    if not parent.is_dir():
        return None
    earlier = sorted(
        (p for p in parent.glob("dt=*") if p.name[3:] < partition and (p / SNAPSHOT_FILE).exists()),
        key=lambda p: p.name,
    )
    return earlier[-1] if earlier else None


def _flagged(batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """The batches with ``_deleted = false`` appended: every row read from the source exists."""
    for batch in batches:
        yield pa.RecordBatch.from_arrays(
            [*batch.columns, pa.array([False] * batch.num_rows, pa.bool_())], schema=schema
        )


def _write_read(source: DatabaseSource, read: TableRead, path: Path, *, chunk_rows: int, flag: bool) -> int:
    batches = source.read(read, chunk_rows=chunk_rows)
    first = next(batches)  # always one, possibly empty: it fixes the schema
    stream: Iterable[pa.RecordBatch] = itertools.chain([first], batches)
    schema = first.schema
    if flag:
        schema = schema.append(pa.field(DELETED, pa.bool_()))
        stream = _flagged(stream, schema)
    return write_batches(path, schema, stream)


def _cursor_text(value: object, kind: str) -> str | None:
    """The watermark as stored in ops.watermark: ISO-8601 UTC, or the integer."""
    if value is None:
        return None
    if kind == "integer":
        return str(int(value))  # type: ignore[call-overload]
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    moment = moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
    return moment.isoformat()


def _max_cursor(files: str, cursor: str, kind: str) -> str | None:
    con = duckdb.connect()
    try:
        row = con.execute(f"SELECT max({quote_ident(cursor)}) FROM {scan_parquet(files)}").fetchone()
    finally:
        con.close()
    return _cursor_text(row[0] if row else None, kind)


def _since(base: str, kind: str, lookback_seconds: int) -> object:
    if kind == "integer":
        return int(base) - lookback_seconds
    return dt.datetime.fromisoformat(base) - dt.timedelta(seconds=lookback_seconds)


def check_same_columns(table: str, snapshot: Path, increment: Path) -> None:
    """Refuse to merge when a column vanished or changed type since the snapshot; new columns are fine."""
    old = pq.read_schema(snapshot)
    new = pq.read_schema(increment)
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
    lake_dir: Path,
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
    raw = reset_dir(partition_dir(lake_dir, "raw", source_name, dataset, partition))
    incremental = declared.incremental
    base = previous_snapshot(lake_dir, source_name, dataset, partition)
    base_pending = read_pending(base) if base is not None else None
    # The increment must cover every change since the base snapshot was taken: start from what that
    # snapshot reached, or from the committed watermark if the load of that snapshot never committed.
    starts = [c for c in (base_pending.reached if base_pending else None, watermark) if c is not None]
    if incremental is None or base is None or not starts:
        rows = _write_read(
            source, TableRead(table, order_by=order_by), raw / SNAPSHOT_FILE, chunk_rows=chunk_rows, flag=True
        )
        reached = None
        if incremental is not None:
            reached = _max_cursor(parquet_glob(raw), incremental.cursor, incremental.kind)
            write_pending(
                raw,
                PendingWatermark(
                    source=source_name, dataset=dataset, since=None, reached=reached, kind=incremental.kind
                ),
            )
        return ExtractReport("full", rows, rows, 0, None, reached, None)

    start = min(starts, key=lambda c: int(c)) if incremental.kind == "integer" else min(starts)
    since = _since(start, incremental.kind, incremental.lookback_seconds)
    increment = reset_dir(partition_dir(lake_dir, "increment", source_name, dataset, partition))
    read = TableRead(table, order_by=order_by, cursor=incremental.cursor, since=since)
    rows = _write_read(source, read, increment / SNAPSHOT_FILE, chunk_rows=chunk_rows, flag=True)
    check_same_columns(table, base / SNAPSHOT_FILE, increment / SNAPSHOT_FILE)
    keys_file = None
    if declared.deletes == "key_compare":
        keys_file = increment / "_keys.parquet"
        _write_read(
            source,
            TableRead(table, columns=declared.primary_key, order_by=tuple(declared.primary_key)),
            keys_file,
            chunk_rows=max(chunk_rows, 200_000),
            flag=False,
        )
    snapshot_rows, deleted = merge_snapshot(
        base=base / SNAPSHOT_FILE,
        increment=increment / SNAPSHOT_FILE,
        keys=keys_file,
        primary_key=declared.primary_key,
        out=raw / SNAPSHOT_FILE,
    )
    reached = _max_cursor(str(increment / SNAPSHOT_FILE), incremental.cursor, incremental.kind) or start
    since_text = str(since) if incremental.kind == "integer" else _cursor_text(since, "timestamp")
    write_pending(
        raw,
        PendingWatermark(
            source=source_name, dataset=dataset, since=since_text, reached=reached, kind=incremental.kind
        ),
    )
    (increment / "_base.json").write_text(json.dumps({"base": str(base), "since": since_text}))
    return ExtractReport("incremental", rows, snapshot_rows, deleted, since_text, reached, base.name[3:])


def merge_snapshot(
    *, base: Path, increment: Path, keys: Path | None, primary_key: list[str], out: Path
) -> tuple[int, int]:
    """Write ``out`` = ``base`` with the increment's rows replacing theirs by key; keys absent from ``keys``
    are flagged deleted.

    Returns:
        Rows in the new snapshot, and how many of them are flagged deleted.
    """
    pk = ", ".join(quote_ident(c) for c in primary_key)
    key_columns = ", ".join(f"m.{quote_ident(c)}" for c in primary_key)
    if keys is None:
        # coalesce: a snapshot written before the flag existed has no _deleted column.
        flag = f"coalesce(m.{DELETED}, false)"
        join = ""
    else:
        flag = f"(coalesce(m.{DELETED}, false) OR k._present IS NULL)"
        join = (
            f"LEFT JOIN (SELECT DISTINCT {pk}, true AS _present FROM {scan_parquet(keys)}) AS k USING ({pk})"
        )
    tmp = out.with_name(f".{out.name}.inprogress")
    con = duckdb.connect()
    try:
        # Bounded memory: DuckDB spills the window sort to disk rather than holding the table.
        con.execute("SET preserve_insertion_order = false")
        con.execute(
            f"""
            COPY (
                SELECT m.* EXCLUDE ({DELETED}, _priority, _rank), {flag} AS {DELETED}
                FROM (
                    SELECT *, row_number() OVER (PARTITION BY {pk} ORDER BY _priority) AS _rank
                    FROM (
                        SELECT *, 0 AS _priority FROM {scan_parquet(increment)}
                        UNION ALL BY NAME
                        SELECT *, 1 AS _priority FROM {scan_parquet(base)}
                    )
                ) AS m
                {join}
                WHERE m._rank = 1
                ORDER BY {key_columns}
            ) TO {quote_literal(str(tmp))} (FORMAT parquet, COMPRESSION zstd)
            """
        )
        tmp.replace(out)
        row = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE {DELETED}) FROM {scan_parquet(out)}"
        ).fetchone()
    finally:
        con.close()
    return (int(row[0]), int(row[1])) if row else (0, 0)
