"""The ERP database, reached through SQLAlchemy (any dialect; ODBC through pyodbc URLs)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import dagster as dg
import pyarrow as pa
import sqlalchemy as sa

from crm_pipelines.databases.sql_source import TableRead, check_database, read_table_batches


class ErpDatabaseResource(dg.ConfigurableResource):
    """Read access to the ERP's database.

    Attributes:
        url: SQLAlchemy URL (``ERP_DATABASE_URL``), e.g. ``postgresql+psycopg://user:pw@host/erp`` or
            ``mssql+pyodbc://...``; the password is never logged (SQLAlchemy masks it in reprs).
        chunk_rows: Rows fetched per round trip and written per Parquet batch.
    """

    url: str
    chunk_rows: int = 50_000

    def engine(self) -> sa.Engine:
        return sa.create_engine(self.url, pool_pre_ping=True)

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
        engine = self.engine()
        try:
            yield from read_table_batches(
                engine, read=TableRead(table, columns, tuple(order_by)), chunk_rows=self.chunk_rows
            )
        finally:
            engine.dispose()

    def check(self) -> str:
        """Connect and run ``SELECT 1``; returns the dialect and server version."""
        engine = self.engine()
        try:
            return check_database(engine)
        finally:
            engine.dispose()
