"""The warehouse: one DuckDB file, one writer at a time, each load one transaction.

DuckDB is where every model runs. A warehouse URL picks the backend analysts query
(:func:`open_warehouse`): ``duckdb:///`` is the file itself; other schemes are registered by their
modules (``postgresql``: :mod:`crm_pipelines.warehouse.postgres`, which publishes each committed load
into PostgreSQL).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import duckdb

from crm_pipelines.lake import register_lake
from crm_pipelines.settings import duckdb_path_from_url
from crm_pipelines.sql import quote_ident
from crm_pipelines.warehouse.attach import attached
from crm_pipelines.warehouse.locks import WriterLock, lock_url, open_lock

SCHEMAS = ("raw", "staging", "core", "marts", "ops")
_OPENING_LOCK = threading.Lock()

OPS_DDL = """
CREATE TABLE IF NOT EXISTS ops.quarantine (
    partition VARCHAR NOT NULL,
    stage VARCHAR NOT NULL,          -- extract (file structure) or quality (a rule failed)
    source VARCHAR NOT NULL,
    entity VARCHAR NOT NULL,
    record_id VARCHAR NOT NULL,
    record VARCHAR,
    rule VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS ops.reconciliation (
    run_id VARCHAR NOT NULL,
    partition VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    entity VARCHAR NOT NULL,
    extracted BIGINT NOT NULL,
    loaded BIGINT NOT NULL,
    merged BIGINT NOT NULL,
    quarantined BIGINT NOT NULL,
    deleted BIGINT NOT NULL DEFAULT 0,  -- deleted in the source: kept as soft deletes
    adds_up BOOLEAN NOT NULL,
    detail VARCHAR,
    checked_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS ops.file_ingest (
    source VARCHAR NOT NULL,
    dataset VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL,
    size BIGINT NOT NULL,
    partition VARCHAR NOT NULL,
    data_lines BIGINT NOT NULL,
    rows_landed BIGINT NOT NULL,
    rows_quarantined BIGINT NOT NULL,
    run_id VARCHAR NOT NULL,
    ingested_at TIMESTAMPTZ NOT NULL,
    new_columns VARCHAR[],           -- schema drift: columns in the file the drop does not declare
    PRIMARY KEY (path, sha256)
);
CREATE TABLE IF NOT EXISTS ops.load_state (
    target VARCHAR PRIMARY KEY,      -- e.g. core.account: the newest partition loaded into it
    partition VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    loaded_at TIMESTAMPTZ NOT NULL
);
"""


class Warehouse:
    """A DuckDB warehouse file guarded by a writer lock (``duckdb:///path/to/file.duckdb``).

    DuckDB lets one process write a database file; the lock makes concurrent steps (the UI's
    multiprocess executor, a sensor run next to the nightly job) wait their turn instead of failing.
    It is a lock file next to the DuckDB file, or, with ``CRM_PIPELINES_LOCK_URL``, a lock on a
    PostgreSQL or Redis server shared by writers on several hosts (:mod:`crm_pipelines.warehouse.locks`).

    Args:
        url: ``duckdb:///path/to/file.duckdb``.
        lock_timeout: Seconds to wait for the writer lock before failing the step.
    """

    backend = "duckdb"

    def __init__(self, url: str, *, lock_timeout: float = 1800.0) -> None:
        self.url = url
        self.path: Path = self._working_copy(url)
        self._lock_timeout = lock_timeout
        self._writer: WriterLock | None = None

    def _working_copy(self, url: str) -> Path:
        """The DuckDB file the models run in; for this backend it is the warehouse itself."""
        return duckdb_path_from_url(url)

    def describe(self) -> str:
        """Where the warehouse is, safe to show (no secrets)."""
        return f"DuckDB {self.path}"

    @property
    def writer_lock(self) -> WriterLock:
        """The lock every connection is held under, keyed by the DuckDB file's absolute path."""
        with _OPENING_LOCK:  # opened on first use: a backend's describe() needs its __init__ done
            if self._writer is None:
                path = self.path.absolute()
                url = lock_url() or Path(f"{path}.lock").as_uri()
                self._writer = open_lock(url, str(path), self._lock_timeout, label=self.describe())
            return self._writer

    def before_write(self, con: duckdb.DuckDBPyConnection) -> None:
        """Called on a write connection before the caller's work; backends start tracking it here."""

    def after_write(self, con: duckdb.DuckDBPyConnection) -> None:
        """Called under the lock after a write connection's work committed; backends publish here."""

    def end_write(self, con: duckdb.DuckDBPyConnection) -> None:
        """Called last on a write connection, whether its work succeeded or not: the database it runs in
        outlives it (:mod:`crm_pipelines.warehouse.attach`), so what ``before_write`` turned on goes off."""

    @contextmanager
    def read(self) -> Iterator[Reader]:
        """A connection to the tables analysts query, for ``execute(sql, params).fetchall()`` with ``?``
        placeholders: the DuckDB file here, the server for other backends."""
        with self.connect(read_only=True) as con:
            yield con

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection held under the warehouse lock; read-only when asked and the file exists."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.writer_lock:
            if read_only and not self.path.exists():
                opened = _empty()  # nothing loaded yet: an empty database answers every read
            else:
                opened = attached(self.path, read_only=read_only)
            with opened as con:
                con.execute("SET TimeZone = 'UTC'")
                if read_only:
                    yield con
                    return
                ensure_schemas(con)
                self.before_write(con)
                try:
                    yield con
                    self.after_write(con)
                finally:
                    self.end_write(con)

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One write transaction: everything inside commits together or not at all."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")


@contextmanager
def _empty() -> Iterator[duckdb.DuckDBPyConnection]:
    con = register_lake(duckdb.connect())
    try:
        yield con
    finally:
        con.close()


class _Rows(Protocol):
    def fetchall(self) -> list[Any]: ...

    def fetchone(self) -> Any: ...


class Reader(Protocol):
    """What :meth:`Warehouse.read` yields: enough of a DB-API connection to run a query."""

    def execute(self, query: str, parameters: object = ..., /) -> _Rows: ...


_BACKENDS: dict[str, Callable[..., Warehouse]] = {"duckdb": Warehouse}


def register_backend(scheme: str, factory: Callable[..., Warehouse]) -> None:
    """Make ``open_warehouse`` answer URLs of ``scheme`` (the part before ``:`` or ``+``)."""
    _BACKENDS[scheme] = factory


def open_warehouse(url: str, *, lock_timeout: float = 1800.0) -> Warehouse:
    """The warehouse for a ``WAREHOUSE_URL``: ``duckdb:///file.duckdb`` or ``postgresql+psycopg://...``."""
    import crm_pipelines.warehouse.postgres  # noqa: F401  (registers itself)

    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    factory = _BACKENDS.get(scheme)
    if factory is None:
        known = ", ".join(sorted(_BACKENDS))
        raise ValueError(f"WAREHOUSE_URL scheme {scheme!r} is not a warehouse backend (known: {known})")
    return factory(url, lock_timeout=lock_timeout)


# Columns added after a warehouse was first created: (table, column, type).
_ADDED_COLUMNS = (
    ("ops.reconciliation", "deleted", "BIGINT DEFAULT 0"),
    ("ops.file_ingest", "new_columns", "VARCHAR[]"),
)


def _ops_ddl() -> list[str]:
    from crm_pipelines.quality.volume import DDL as VOLUME_DDL
    from crm_pipelines.warehouse.watermarks import DDL as WATERMARK_DDL

    return [OPS_DDL, WATERMARK_DDL, VOLUME_DDL]


def ensure_schemas(con: duckdb.DuckDBPyConnection) -> None:
    """Create the schemas and the ``ops`` tables every write expects, unless they are all there.

    Every write connection calls this. Looking the objects up in the catalog is one query; creating
    them "if not exists" is a dozen statements, each its own commit, which cost more than the open.
    """
    if _schemas_ready(con):
        return
    for schema in SCHEMAS:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    for ddl in _ops_ddl():
        con.execute(ddl)
    for table, column, kind in _ADDED_COLUMNS:
        con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind}")


def _schemas_ready(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the schemas, the ``ops`` tables and their added columns are all there.

    One query that names every table and added column (it fails to bind when one is missing) and
    counts the schemas: about 1 ms, where listing ``duckdb_columns()`` took 11 on a large warehouse.
    """
    columns: dict[str, list[str]] = {
        f"{schema}.{name}": [] for ddl in _ops_ddl() for schema, name in _CREATED_TABLE.findall(ddl)
    }
    for table, column, _ in _ADDED_COLUMNS:
        columns[table].append(column)
    probes = ", ".join(
        f"(SELECT {', '.join(quote_ident(c) for c in added) or '1'} FROM {table} LIMIT 0)"
        for table, added in sorted(columns.items())
    )
    try:
        row = con.execute(
            "SELECT (SELECT count(*) FROM duckdb_schemas() WHERE database_name = current_database() "
            f"AND list_contains($schemas, schema_name)), (SELECT count(*) FROM {probes})",
            {"schemas": list(SCHEMAS)},
        ).fetchone()
    except (duckdb.CatalogException, duckdb.BinderException):
        return False  # a table or a column is missing
    return row == (len(SCHEMAS), 0)


_CREATED_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+)\.(\w+)", re.IGNORECASE)


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [schema, table],
    ).fetchone()
    return bool(row and row[0])
