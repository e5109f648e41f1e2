"""Reading a real PostgreSQL server three ways (COPY, SQLAlchemy, ODBC): types, read-only, errors, lost connections."""

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pyarrow as pa
import pytest
import sqlalchemy as sa

from crm_pipelines.databases.source import ODBC_PREFIX, DatabaseSource
from crm_pipelines.databases.sql_source import SchemaMismatch, TableRead, read_only_connection
from crm_pipelines_sandbox.postgres_server import PostgresServer

METHODS = ["copy", "sqlalchemy", "odbc"]


@pytest.fixture(scope="module")
def typed_table(postgres: PostgresServer) -> Iterator[str]:
    with psycopg.connect(postgres.conninfo(), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE typed (id integer PRIMARY KEY, amount numeric(18,4), paid_at timestamptz, "
            "booked timestamp, due date, note text, active boolean)"
        )
        conn.execute(
            "INSERT INTO typed VALUES "
            "(1, 12345678901234.1234, '2026-11-25 10:00:00+02', '2026-11-25 10:00:00', '2026-11-25', '', true),"
            "(2, NULL, NULL, NULL, NULL, NULL, NULL),"
            "(3, -0.0001, '2026-11-25 23:59:59.999999+00', NULL, NULL, E'a,\"b\"\\nc', false)"
        )
        conn.execute(
            "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS payload FROM generate_series(1, 120000) AS g"
        )
        conn.execute("ALTER TABLE big ADD PRIMARY KEY (id)")
    yield "typed"
    with psycopg.connect(postgres.conninfo(), autocommit=True) as conn:
        conn.execute("DROP TABLE typed, big")


def open_source(postgres: PostgresServer, method: str, request: pytest.FixtureRequest) -> DatabaseSource:
    if method == "odbc":
        request.getfixturevalue("odbc_driver")
        return DatabaseSource(ODBC_PREFIX + postgres.odbc_connection_string(), backoff_seconds=0.05)
    return DatabaseSource(postgres.url(), method=method, backoff_seconds=0.05)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", METHODS)
def test_decimals_time_zones_and_text_survive(
    postgres: PostgresServer, typed_table: str, method: str, request: pytest.FixtureRequest
) -> None:
    source = open_source(postgres, method, request)
    table = pa.Table.from_batches(list(source.read(TableRead(typed_table, order_by=("id",)))))
    source.close()
    assert table.schema.field("amount").type == pa.decimal128(18, 4)
    assert table.schema.field("paid_at").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("booked").type == pa.timestamp("us")
    rows = table.to_pylist()
    assert rows[0]["amount"] == Decimal("12345678901234.1234")
    assert rows[0]["paid_at"] == dt.datetime(2026, 11, 25, 8, 0, tzinfo=dt.UTC)
    assert rows[0]["booked"] == dt.datetime(2026, 11, 25, 10, 0)
    assert rows[0]["due"] == dt.date(2026, 11, 25)
    assert rows[0]["note"] == ""  # empty text is not NULL
    assert rows[0]["active"] is True
    assert rows[1] == {k: (2 if k == "id" else None) for k in rows[1]}
    assert rows[2]["amount"] == Decimal("-0.0001")
    assert rows[2]["paid_at"] == dt.datetime(2026, 11, 25, 23, 59, 59, 999999, tzinfo=dt.UTC)
    assert rows[2]["note"] == 'a,"b"\nc'


@pytest.mark.parametrize("method", METHODS)
def test_missing_table_and_column_are_named(
    postgres: PostgresServer, typed_table: str, method: str, request: pytest.FixtureRequest
) -> None:
    source = open_source(postgres, method, request)
    with pytest.raises(SchemaMismatch, match="'no_such_table'"):
        list(source.read(TableRead("no_such_table")))
    with pytest.raises(SchemaMismatch, match="vat_number"):
        list(source.read(TableRead(typed_table, columns=["id", "vat_number"])))
    source.close()


def test_the_read_connection_refuses_writes(postgres: PostgresServer, typed_table: str) -> None:
    engine = sa.create_engine(postgres.url())
    with read_only_connection(engine) as conn, pytest.raises(sa.exc.InternalError, match="read-only"):
        conn.execute(sa.text("DELETE FROM typed"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM typed")).scalar() == 3
    engine.dispose()


def _terminate_reader(postgres: PostgresServer) -> int:
    with psycopg.connect(postgres.conninfo(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.parametrize("method", METHODS)
def test_a_lost_connection_resumes_without_losing_or_doubling_rows(
    postgres: PostgresServer, typed_table: str, method: str, request: pytest.FixtureRequest
) -> None:
    source = open_source(postgres, method, request)
    batches = source.read(TableRead("big", order_by=("id",)), chunk_rows=10_000)
    ids: list[int] = []
    killed = 0
    for batch in batches:
        ids.extend(batch.column("id").to_pylist())
        if not killed:
            # Another session kills our backend mid-stream, as a DBA or a failover would.
            killed = _terminate_reader(postgres)
    source.close()
    assert killed == 1
    assert len(ids) == 120_000
    assert ids == list(range(1, 120_001))
