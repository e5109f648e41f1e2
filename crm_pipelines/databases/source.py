"""One database to read from, whatever the way in: SQLAlchemy, PostgreSQL COPY, or ODBC.

``ERP_DATABASE_URL`` is either a SQLAlchemy URL (any dialect; ``postgresql+psycopg://`` reads through
``COPY``, the fastest way out of PostgreSQL) or ``odbc:`` followed by a DSN-less ODBC connection
string. A read that loses its connection is retried and resumes after the last key it delivered, so
nothing is lost or delivered twice.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from typing import Literal

import psycopg
import pyarrow as pa
import sqlalchemy as sa

from crm_pipelines.databases.odbc_source import read_odbc_batches
from crm_pipelines.databases.postgres_copy import read_postgres_copy
from crm_pipelines.databases.sql_source import TableRead, read_table_batches

ODBC_PREFIX = "odbc:"

Method = Literal["auto", "sqlalchemy", "copy", "odbc"]

log = logging.getLogger(__name__)


def is_connection_lost(exc: BaseException) -> bool:
    """True for errors a new connection can cure: a dropped link, a killed backend, a failover."""
    if isinstance(exc, sa.exc.DBAPIError):
        return bool(exc.connection_invalidated) or isinstance(exc, sa.exc.OperationalError)
    if isinstance(exc, psycopg.OperationalError):
        return True
    if type(exc).__module__ == "pyodbc":  # not imported here: pyodbc needs libodbc
        state = str(exc.args[0]) if exc.args else ""
        # 08: connection exception; 57P0x: the server terminated the session (admin, crash, shutdown).
        return state.startswith(("08", "57P0")) or type(exc).__name__ == "OperationalError"
    return False


def _last_key(batch: pa.RecordBatch, order_by: tuple[str, ...]) -> tuple[object, ...]:
    last = batch.slice(batch.num_rows - 1, 1).to_pylist()[0]
    return tuple(last[c] for c in order_by)


class DatabaseSource:
    """Streams tables of one database as Arrow batches.

    Args:
        url: SQLAlchemy URL, or ``odbc:`` + a DSN-less ODBC connection string.
        method: ``auto`` picks COPY for ``postgresql+psycopg``, ODBC for ``odbc:``, else SQLAlchemy.
        attempts: Tries per read when the connection is lost.
        backoff_seconds: First wait between tries; doubles each time.
    """

    def __init__(
        self, url: str, *, method: Method = "auto", attempts: int = 4, backoff_seconds: float = 0.5
    ) -> None:
        self.url = url
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self._engine: sa.Engine | None = None
        if url.startswith(ODBC_PREFIX):
            self.method: Method = "odbc"
        elif method != "auto":
            self.method = method
        else:
            driver = sa.engine.make_url(url).drivername
            self.method = "copy" if driver == "postgresql+psycopg" else "sqlalchemy"

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (created on first use; ``pool_pre_ping`` drops dead connections)."""
        if self._engine is None:
            self._engine = sa.create_engine(self.url, pool_pre_ping=True)
        return self._engine

    def _reader(self) -> Callable[[TableRead, int], Iterator[pa.RecordBatch]]:
        if self.method == "odbc":
            conn_str = self.url[len(ODBC_PREFIX) :]
            return lambda read, rows: read_odbc_batches(conn_str, read=read, chunk_rows=rows)
        if self.method == "copy":
            # COPY batches are sized in bytes; ~200 bytes per ERP row keeps them near chunk_rows.
            return lambda read, rows: read_postgres_copy(
                self.engine, read=read, block_bytes=max(rows * 200, 1 << 16)
            )
        return lambda read, rows: read_table_batches(self.engine, read=read, chunk_rows=rows)

    def read(self, read: TableRead, *, chunk_rows: int = 50_000) -> Iterator[pa.RecordBatch]:
        """Stream a table; a lost connection is retried, resuming after the last key delivered.

        Args:
            read: What to read. With ``order_by`` a broken read resumes where it stopped; without,
                it is retried only if no batch had been delivered yet.
            chunk_rows: Rows per batch (the COPY path sizes batches by bytes instead).

        Returns:
            An iterator of record batches; at least one, possibly empty, carrying the schema.
        """
        reader = self._reader()
        current = read
        delivered = False
        for attempt in range(1, self.attempts + 1):
            try:
                for batch in reader(current, chunk_rows):
                    if batch.num_rows and read.order_by:
                        current = dataclasses.replace(current, after=_last_key(batch, tuple(read.order_by)))
                    if batch.num_rows or not delivered:
                        delivered = True
                        yield batch
                return
            except Exception as exc:
                resumable = not delivered or bool(read.order_by)
                if attempt == self.attempts or not resumable or not is_connection_lost(exc):
                    raise
                wait = self.backoff_seconds * 2 ** (attempt - 1)
                log.warning(
                    "lost the connection reading %s (%s); try %d of %d in %.1fs, resuming after %s",
                    read.table,
                    type(exc).__name__,
                    attempt + 1,
                    self.attempts,
                    wait,
                    current.after,
                )
                time.sleep(wait)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
