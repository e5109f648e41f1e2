"""The local lake: Parquet files laid out by layer, source, dataset and partition.

Extracts stream Arrow record batches into a :class:`ParquetSink`; nothing holds a whole table in
memory. A sink writes to a temporary name and renames on close, so a crashed step never leaves a
half-written file that a later step could read.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.parquet as pq

from crm_pipelines.sql import quote_literal

# Columns every extract adds to a source's rows: when the row was read, and whether the source has
# deleted the record (kept in the snapshot as a soft delete).
EXTRACTED_AT = "_extracted_at"
DELETED = "_deleted"
# Rows per Parquet row group: big enough for DuckDB to scan fast, small enough to stay flat in memory.
ROW_GROUP_SIZE = 122_880


def partition_dir(lake_dir: Path, layer: str, source: str, dataset: str, partition: str) -> Path:
    """Folder of one dataset's partition, e.g. ``lake/raw/salesforce/contacts/dt=2026-11-25``."""
    return Path(lake_dir) / layer / source / dataset / f"dt={partition}"


def parquet_glob(folder: Path) -> str:
    return str(Path(folder) / "*.parquet")


def scan_parquet(glob: str | Path) -> str:
    """DuckDB table function reading Parquet files of the lake.

    Hive partitioning is off: the ``dt=`` folders are our layout, not a column of the data.
    """
    return f"read_parquet({quote_literal(str(glob))}, union_by_name = true, hive_partitioning = false)"


def has_parquet(folder: Path) -> bool:
    return Path(folder).is_dir() and any(Path(folder).glob("*.parquet"))


def reset_dir(folder: Path) -> Path:
    """Empty a partition folder so a re-run replaces what an earlier run wrote, never adds to it."""
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class ParquetSink:
    """Append Arrow batches to one Parquet file; the file appears atomically on a clean close.

    Args:
        path: Final file path.
        schema: Arrow schema every batch must have (batches are cast to it).
    """

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = Path(path)
        self.schema = schema
        self.rows = 0
        self._tmp = self.path.with_name(f".{self.path.name}.inprogress")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(self._tmp, schema, compression="zstd")

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        if batch.num_rows == 0:
            return
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        if table.schema != self.schema:
            table = table.select(self.schema.names).cast(self.schema)
        self._writer.write_table(table, row_group_size=ROW_GROUP_SIZE)
        self.rows += table.num_rows

    def close(self) -> None:
        self._writer.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._writer.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> ParquetSink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_batches(path: Path, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
    """Stream ``batches`` into one Parquet file at ``path``; returns the row count.

    An empty input still writes a file with the schema, so downstream SQL always has a table to read.
    """
    with ParquetSink(path, schema) as sink:
        for batch in batches:
            sink.write(batch)
    return sink.rows


def stream_to_parquet(path: Path, batches: Iterable[pa.RecordBatch], *, empty_schema: pa.Schema) -> int:
    """Write batches whose schema is only known from the first one; ``empty_schema`` if none arrive."""
    sink: ParquetSink | None = None
    try:
        for batch in batches:
            if sink is None:
                sink = ParquetSink(path, batch.schema)
            sink.write(batch)
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    if sink is None:
        return write_batches(path, empty_schema, [])
    sink.close()
    return sink.rows
