"""The ERP database, reached through SQLAlchemy (any dialect), PostgreSQL COPY, or ODBC (``odbc:`` URLs)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import dagster as dg
import pyarrow as pa
import sqlalchemy as sa

from crm_pipelines.databases.odbc_source import connect_read_only
from crm_pipelines.databases.source import ODBC_PREFIX, DatabaseSource
from crm_pipelines.databases.sql_source import TableRead, check_database


class ErpDatabaseResource(dg.ConfigurableResource["ErpDatabaseResource"]):
    """Read access to the ERP's database.

    Attributes:
        write_url: The account syncs write with (``ERP_WRITE_DATABASE_URL``, e.g. order-to-cash);
            None: nothing writes into the ERP.
        url: SQLAlchemy URL (``ERP_DATABASE_URL``), e.g. ``postgresql+psycopg://user:pw@host/erp`` or
            ``mssql+pyodbc://...``, or ``odbc:`` followed by a DSN-less ODBC connection string
            (``odbc:DRIVER={PostgreSQL Unicode};SERVER=...``); the password is never logged.
        chunk_rows: Rows fetched per round trip and written per Parquet batch.
    """

    url: str
    write_url: str | None = None
    chunk_rows: int = 50_000

    def engine(self) -> sa.Engine:
        return sa.create_engine(self.url, pool_pre_ping=True)

    def write_engine(self) -> sa.Engine:
        """An engine on the account that may write the ERP (``ERP_WRITE_DATABASE_URL``).

        Raises:
            PermissionError: no write account is configured: writing into the ERP is a deliberate choice.
        """
        if not self.write_url:
            raise PermissionError(
                "ERP_WRITE_DATABASE_URL is not set: syncs write into the ERP only through an account "
                "configured for it"
            )
        return sa.create_engine(self.write_url, pool_pre_ping=True)

    def source(self) -> DatabaseSource:
        """The database as a streaming source (close it when done)."""
        return DatabaseSource(self.url)

    def read_table(
        self, *, table: str, columns: Sequence[str] | None = None, order_by: Sequence[str] = ()
    ) -> Iterator[pa.RecordBatch]:
        """Stream one table as Arrow batches.

        Args:
            table: Table name (validated, reflected).
            columns: Columns to read; all when None.
            order_by: Columns to order by, for deterministic output.

        Returns:
            Iterator of record batches.
        """
        source = self.source()
        try:
            yield from source.read(TableRead(table, columns, tuple(order_by)), chunk_rows=self.chunk_rows)
        finally:
            source.close()

    def check(self) -> str:
        """Connect and run ``SELECT 1``; returns the dialect and server version."""
        if self.url.startswith(ODBC_PREFIX):
            import pyodbc

            conn = connect_read_only(self.url[len(ODBC_PREFIX) :])
            try:
                return f"odbc {conn.getinfo(pyodbc.SQL_DBMS_NAME)} {conn.getinfo(pyodbc.SQL_DBMS_VER)}"
            finally:
                conn.close()
        engine = self.engine()
        try:
            return check_database(engine)
        finally:
            engine.dispose()
