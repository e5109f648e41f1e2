"""The lake: Parquet files laid out by layer, source, dataset and partition.

The lake is a local folder (``CRM_PIPELINES_LAKE_DIR=data/lake``, the default) or a prefix of an
S3-compatible bucket (``CRM_PIPELINES_LAKE_DIR=s3://bucket/lake``), so that workers on several hosts
share it. Paths in the lake are :data:`LakePath`: a :class:`pathlib.Path` for a folder, a
:class:`upath.UPath` (universal-pathlib over fsspec's ``s3fs``) for a bucket; both have the pathlib
API the code uses (``/``, ``glob``, ``exists``, ``read_text``...). What pathlib cannot do on a
bucket goes through this module: :func:`connect` (DuckDB reads and writes ``s3://`` through the
registered fsspec filesystem), :func:`local_copy`/:func:`publish` (write a file locally, then make
it appear whole), :func:`move`, :func:`remove_tree`, :func:`scratch_dir` and :func:`lake_lock`.

Extracts stream Arrow record batches into a :class:`ParquetSink`; nothing holds a whole table in
memory. A file is written under a local temporary name and appears whole on close (a rename in a
folder, one upload to a bucket), so a crashed step never leaves a half-written file that a later
step could read.

A bucket's credentials and endpoint come from the standard variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for a server other than AWS, ``AWS_REGION``); TLS
certificates are verified. Locks that guard the lake's folders are files on one host; with a bucket
they live on the server of ``CRM_PIPELINES_LOCK_URL`` (PostgreSQL or Redis), shared by every host.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeAlias

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock
from fsspec import AbstractFileSystem
from upath import UPath

from crm_pipelines.sql import quote_literal

# A path in the lake: a local folder's, or a bucket's (``s3://...``).
LakePath: TypeAlias = Path | UPath

# Columns every extract adds to a source's rows: when the row was read, and whether the source has
# deleted the record (kept in the snapshot as a soft delete).
EXTRACTED_AT = "_extracted_at"
DELETED = "_deleted"
# Rows per Parquet row group: big enough for DuckDB to scan fast, small enough to stay flat in memory.
ROW_GROUP_SIZE = 122_880

# The remote filesystems of the lake roots this process opened, registered on every DuckDB connection.
_FILESYSTEMS: dict[str, AbstractFileSystem] = {}
_FILESYSTEMS_LOCK = threading.Lock()


def is_remote(path: LakePath | str) -> bool:
    """Whether ``path`` is in a bucket (a URL with a scheme other than ``file``), not a local folder."""
    if not isinstance(path, str):
        return not isinstance(path, Path)
    scheme, sep, _ = path.partition("://")
    return bool(sep) and scheme.lower() != "file" and scheme.isidentifier()


def lake_root(root: str | os.PathLike[str]) -> LakePath:
    """The lake at ``root``: a local folder, or ``s3://bucket/prefix`` on an S3-compatible server.

    A bucket is opened without fsspec's listing cache, so every process sees what others wrote since.
    Its endpoint and keys are read from the environment now (fsspec keeps one filesystem per set of
    arguments: a changed key or endpoint opens a new one, not the one cached for the old).
    """
    text = os.fspath(root)
    if not is_remote(text):
        return Path(text.removeprefix("file://"))
    options: dict[str, Any] = {"use_listings_cache": False}
    if text.split("://", 1)[0].lower() in ("s3", "s3a"):
        options.update(_s3_options())
    path: UPath = UPath(text, **options)
    with _FILESYSTEMS_LOCK:
        for protocol in _protocols(path.fs):
            _FILESYSTEMS[protocol] = path.fs
    return path


def _s3_options() -> dict[str, Any]:
    """s3fs's arguments from the standard variables that are set (the rest: botocore's own lookup)."""
    env = os.environ
    options: dict[str, Any] = {}
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["endpoint_url"] = endpoint
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        options["key"] = env["AWS_ACCESS_KEY_ID"]
        options["secret"] = env["AWS_SECRET_ACCESS_KEY"]
    return options


def _protocols(fs: AbstractFileSystem) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def lake_filesystems() -> list[AbstractFileSystem]:
    """The filesystems of the lake roots this process opened, the newest per protocol."""
    with _FILESYSTEMS_LOCK:
        return list({id(fs): fs for fs in _FILESYSTEMS.values()}.values())


def register_lake(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Let ``con`` read and write the buckets of the lake roots this process opened (fsspec)."""
    for fs in lake_filesystems():
        if not con.filesystem_is_registered(_protocols(fs)[0]):
            con.register_filesystem(fs)
    return con


def connect(database: str = ":memory:", **kwargs: Any) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that can read the lake, wherever it is."""
    return register_lake(duckdb.connect(database, **kwargs))


_READERS = threading.local()
_INHERITED: list[duckdb.DuckDBPyConnection] = []  # a forked child never closes nor frees its parent's


@contextmanager
def reader() -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection for a query over the lake (or registered Arrow data) that creates nothing and sets nothing.

    A new DuckDB database costs about 12 ms of CPU, more than a count over a snapshot does, and a
    night asks hundreds of these. Each thread keeps one in-memory database; every reader is a cursor
    on it: its own connection, transaction and registered views, but the catalog and the settings
    are the database's. So a caller that creates tables or changes a setting uses :func:`connect`.
    """
    # Filesystems register with the database, by protocol: when the lake's filesystems change
    # (another bucket endpoint or key opened a new one), the thread starts a new database.
    filesystems = lake_filesystems()
    if getattr(_READERS, "pid", None) != os.getpid():  # forked: the parent's database is not ours
        _INHERITED.extend(c for c in [getattr(_READERS, "con", None)] if c is not None)
        _READERS.con, _READERS.pid = None, os.getpid()
    base: duckdb.DuckDBPyConnection | None = getattr(_READERS, "con", None)
    held: list[AbstractFileSystem] = getattr(_READERS, "filesystems", [])
    if base is None or [id(fs) for fs in held] != [id(fs) for fs in filesystems]:  # held keeps them alive
        if base is not None:
            base.close()
        base = _READERS.con = register_lake(duckdb.connect())
        _READERS.filesystems = filesystems
    cursor = base.cursor()
    try:
        yield cursor
    finally:
        cursor.close()


def partition_dir(lake_dir: LakePath, layer: str, source: str, dataset: str, partition: str) -> LakePath:
    """Folder of one dataset's partition, e.g. ``lake/raw/salesforce/contacts/dt=2026-11-25``."""
    return lake_dir / layer / source / dataset / f"dt={partition}"


def parquet_glob(folder: LakePath) -> str:
    return str(folder / "*.parquet")


def scan_parquet(glob: str | LakePath) -> str:
    """DuckDB table function reading Parquet files of the lake (on a connection from :func:`connect`).

    Hive partitioning is off: the ``dt=`` folders are our layout, not a column of the data.
    """
    return f"read_parquet({quote_literal(str(glob))}, union_by_name = true, hive_partitioning = false)"


def files_in(folder: LakePath, pattern: str = "*.parquet") -> list[LakePath]:
    """The files directly in ``folder`` that match ``pattern``, by name; none when it does not exist."""
    found: list[LakePath] = [*folder.glob(pattern)]
    return sorted(found, key=lambda f: f.name)


def children(folder: LakePath) -> list[LakePath]:
    """What ``folder`` holds (files and folders), by name; nothing when it does not exist."""
    if not folder.is_dir():
        return []
    found: list[LakePath] = [*folder.iterdir()]
    return sorted(found, key=lambda f: f.name)


def files_under(root: LakePath, pattern: str = "*.parquet") -> list[tuple[LakePath, tuple[str, ...]]]:
    """Every file below ``root`` (at any depth) that matches ``pattern``, with its path's parts under
    ``root``, in path order."""
    found: list[LakePath] = [*root.rglob(pattern)]
    prefix = str(root).rstrip("/") + "/"
    return sorted(
        ((f, tuple(str(f).removeprefix(prefix).split("/"))) for f in found if str(f).startswith(prefix)),
        key=lambda pair: pair[1],
    )


def has_parquet(folder: LakePath) -> bool:
    if isinstance(folder, Path):
        return folder.is_dir() and any(folder.glob("*.parquet"))
    return any(folder.glob("*.parquet"))


def make_dirs(folder: LakePath) -> LakePath:
    """Create a local folder (with its parents); a bucket has no folders to create."""
    if isinstance(folder, Path):
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def remove_tree(folder: LakePath) -> None:
    """Remove a folder and everything under it, if it exists."""
    if isinstance(folder, Path):
        if folder.exists():
            shutil.rmtree(folder)
    elif folder.exists():
        folder.fs.rm(folder.path, recursive=True)


def reset_dir(folder: LakePath) -> LakePath:
    """Empty a partition folder so a re-run replaces what an earlier run wrote, never adds to it."""
    remove_tree(folder)
    return make_dirs(folder)


def move_tree(source: LakePath, target: LakePath) -> None:
    """Move a folder within the lake, replacing ``target``: a rename in a folder; copies in a bucket."""
    if not source.exists():
        return
    remove_tree(target)
    if isinstance(source, Path) and isinstance(target, Path):
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
    elif isinstance(source, UPath) and isinstance(target, UPath) and source.fs is target.fs:
        source.fs.mv(source.path, target.path, recursive=True)
    else:
        raise ValueError(f"cannot move {source} to {target}: not in the same lake")


def move(source: LakePath, target: LakePath) -> None:
    """Move a file within the lake: a rename in a folder; a copy then a delete in a bucket.

    In a bucket the target appears whole but the move is not atomic with the source's removal: callers
    that need readers to see one or the other hold the folder's :func:`lake_lock`.
    """
    if isinstance(source, Path) and isinstance(target, Path):
        os.replace(source, target)
    elif isinstance(source, UPath) and isinstance(target, UPath) and source.fs is target.fs:
        source.fs.mv(source.path, target.path)
    else:
        raise ValueError(f"cannot move {source} to {target}: not in the same lake")


def local_copy(target: LakePath) -> Path:
    """Where to write a file that :func:`publish` then makes appear at ``target`` whole.

    Beside the target in a folder (so the publish is a rename); in the local temporary folder for a
    bucket (the publish is one upload).
    """
    if isinstance(target, Path):
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.with_name(f".{target.name}.inprogress")
    # Named by the target, as beside it in a folder: the next write of that target (a re-run after a
    # kill) replaces what a killed writer left, instead of leaving one more orphan.
    digest = hashlib.sha256(str(target).encode()).hexdigest()[:32]
    return staging_area() / f"{digest}.{target.name}.inprogress"


def staging_area() -> Path:
    """This user's private folder (0700) in the temporary folder, for files on their way to a bucket."""
    folder = Path(tempfile.gettempdir()) / f"crm-pipelines-lake-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.lstat()
    if not folder.is_dir() or folder.is_symlink() or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{folder} is not a private folder of this user: remove it and run again")
    return folder


def publish(written: Path, target: LakePath) -> None:
    """Make the finished local file ``written`` (from :func:`local_copy`) appear at ``target``."""
    if isinstance(target, Path):
        os.replace(written, target)
        return
    try:
        target.fs.put_file(str(written), target.path)
    finally:
        written.unlink(missing_ok=True)


def write_text(target: LakePath, text: str) -> None:
    """Write a small text file (a manifest, a marker) so that it appears whole."""
    written = local_copy(target)
    try:
        written.write_text(text, encoding="utf-8")
        publish(written, target)
    except BaseException:
        written.unlink(missing_ok=True)
        raise


def write_table(target: LakePath, table: pa.Table, *, compression: str = "zstd") -> None:
    """Write an Arrow table as one Parquet file that appears whole (replacing any file there)."""
    written = local_copy(target)
    try:
        pq.write_table(table, written, compression=compression)
        publish(written, target)
    except BaseException:
        written.unlink(missing_ok=True)
        raise


def read_table(path: LakePath, columns: list[str] | None = None) -> pa.Table:
    """One Parquet file of the lake as an Arrow table."""
    if isinstance(path, Path):
        return pq.read_table(path, columns=columns)
    with path.open("rb") as f:
        return pq.read_table(f, columns=columns)


def read_schema(path: LakePath) -> pa.Schema:
    """The Arrow schema of one Parquet file of the lake."""
    if isinstance(path, Path):
        return pq.read_schema(path)
    with path.open("rb") as f:
        return pq.read_schema(f)


@contextmanager
def scratch_dir(lake_dir: LakePath) -> Iterator[Path]:
    """A local scratch folder, removed on exit: in the lake's folder (same disk), else the temp folder."""
    parent = lake_dir if isinstance(lake_dir, Path) else None
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent) as scratch:
        yield Path(scratch)


def spill_dir(lake_dir: LakePath) -> Path | None:
    """Where DuckDB may spill: ``_spill`` in a local lake; DuckDB's own temp folder with a bucket."""
    return lake_dir / "_spill" if isinstance(lake_dir, Path) else None


def lake_lock(path: LakePath, *, timeout: float = 1800.0) -> AbstractContextManager[object]:
    """A lock named by a path of the lake, shared by every process that uses the lake.

    A lock file at ``path`` in a local lake (the operating system frees it when its holder dies). For
    a bucket, the lock lives on the server of ``CRM_PIPELINES_LOCK_URL`` (a PostgreSQL advisory lock
    or a Redis lease) so that hosts take turns; without one, a lock file in the local temporary folder
    keeps the processes of this host apart only.
    """
    if isinstance(path, Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(path), timeout=timeout)
    from crm_pipelines.warehouse.locks import lock_url, open_lock

    url = lock_url()
    if url is not None:
        return open_lock(url, f"lake:{path}", timeout, label=f"lake lock {path}")
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:32]
    return FileLock(str(staging_area() / f"{digest}.lock"), timeout=timeout)


class ParquetSink:
    """Append Arrow batches to one Parquet file; the file appears whole on a clean close.

    Args:
        path: Final file path.
        schema: Arrow schema every batch must have (batches are cast to it).
    """

    def __init__(self, path: LakePath, schema: pa.Schema) -> None:
        self.path = path
        self.schema = schema
        self.rows = 0
        self._tmp = local_copy(path)
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
        publish(self._tmp, self.path)

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


def write_batches(path: LakePath, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
    """Stream ``batches`` into one Parquet file at ``path``; returns the row count.

    An empty input still writes a file with the schema, so downstream SQL always has a table to read.
    """
    with ParquetSink(path, schema) as sink:
        for batch in batches:
            sink.write(batch)
    return sink.rows


def stream_to_parquet(path: LakePath, batches: Iterable[pa.RecordBatch], *, empty_schema: pa.Schema) -> int:
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
