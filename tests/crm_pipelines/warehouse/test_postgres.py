"""Publishing loads into the PostgreSQL warehouse: only what changed moves, one transaction per load,
concurrent loads of different tables, and every DuckDB type arriving as analysts expect it."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest

from crm_pipelines import settings
from crm_pipelines.doctor import check_warehouse
from crm_pipelines.warehouse.postgres import PostgresWarehouse, publish
from crm_pipelines_sandbox.postgres_server import PostgresServer


def rows(server: PostgresServer, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(server.conninfo()) as pg:
        return [tuple(r) for r in pg.execute(sql.encode()).fetchall()]


def publish_now(warehouse: PostgresWarehouse) -> dict[str, int]:
    with warehouse.connect(read_only=True) as con:
        return publish(con, warehouse.conninfo, scratch=warehouse.path.parent / "scratch")


@pytest.fixture
def warehouse(warehouse_database: PostgresServer, tmp_path: Path) -> PostgresWarehouse:
    return PostgresWarehouse(warehouse_database.url(), working_copy=tmp_path / "work.duckdb")


def test_only_changed_rows_travel_and_a_quiet_load_sends_nothing(
    warehouse: PostgresWarehouse, warehouse_database: PostgresServer
) -> None:
    with warehouse.transaction() as con:
        con.execute("CREATE TABLE core.t (id INTEGER PRIMARY KEY, v VARCHAR)")
        con.execute("INSERT INTO core.t SELECT i, 'v' || i FROM range(1000) r(i)")
    with warehouse.transaction() as con:
        con.execute("UPDATE core.t SET v = 'changed' WHERE id IN (1, 2, 3)")
        con.execute("DELETE FROM core.t WHERE id = 4")
        con.execute("INSERT INTO core.t VALUES (5000, 'new')")
    assert rows(warehouse_database, "SELECT count(*), count(*) FILTER (WHERE v = 'changed') FROM core.t") == [
        (1000, 3)
    ]
    assert rows(warehouse_database, "SELECT v FROM core.t WHERE id IN (4, 5000)") == [("new",)]
    [(sent,)] = rows(
        warehouse_database, "SELECT row_count FROM crm_pipelines_meta.published WHERE relation = 'core.t'"
    )
    assert sent == 1000
    assert publish_now(warehouse) == {}  # nothing changed since: nothing travels


def test_the_rows_that_changed_are_the_rows_sent(warehouse: PostgresWarehouse) -> None:
    with warehouse.transaction() as con:
        con.execute("CREATE TABLE raw.t AS SELECT i AS id, 'same' AS v FROM range(500) r(i)")
    with duckdb.connect(str(warehouse.path)) as con:  # a change the warehouse has not published yet
        con.execute("UPDATE raw.t SET v = 'other' WHERE id < 7")
    assert publish_now(warehouse) == {"raw.t": 7}
    assert publish_now(warehouse) == {}


def test_equal_rows_nested_values_and_every_type_arrive_intact(
    warehouse: PostgresWarehouse, warehouse_database: PostgresServer
) -> None:
    with warehouse.transaction() as con:
        con.execute(
            "CREATE TABLE marts.t (s VARCHAR, e VARCHAR, n DECIMAL(18,2), d DATE, ts TIMESTAMPTZ, b BOOLEAN, "
            "f DOUBLE, tags VARCHAR[], attrs MAP(VARCHAR, VARCHAR), j JSON)"
        )
        con.execute(
            "INSERT INTO marts.t VALUES "
            "('a,\"b\"\nc', '', 12.30, DATE '2026-11-25', TIMESTAMPTZ '2026-11-25 08:00:00+00', true, 1.5, "
            " ['x', 'y'], MAP {'k': 'v'}, '{\"a\": 1}'), "
            "(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL), "
            "(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"  # the same row twice: both kept
        )
    got = rows(
        warehouse_database, "SELECT s, e, n, d, ts, b, f, tags, attrs, j FROM marts.t ORDER BY s NULLS LAST"
    )
    assert got[0] == (
        'a,"b"\nc',
        "",
        Decimal("12.30"),
        dt.date(2026, 11, 25),
        dt.datetime(2026, 11, 25, 8, tzinfo=dt.UTC),
        True,
        1.5,
        ["x", "y"],
        {"k": "v"},
        {"a": 1},
    )
    assert got[1:] == [(None,) * 10, (None,) * 10]
    with warehouse.transaction() as con:  # what PostgreSQL cannot hold as such: a NUL in text and in JSON
        con.execute(
            "CREATE TABLE raw.odd AS SELECT 'a' || chr(0) || 'b' AS s, ['x' || chr(0)] AS l, 'inf'::DOUBLE AS f"
        )
    assert rows(warehouse_database, "SELECT s, l, f FROM raw.odd") == [
        ("a\ufffdb", ["x\ufffd"], float("inf"))
    ]
    with warehouse.transaction() as con:  # one of the two equal rows goes
        con.execute("DELETE FROM marts.t WHERE rowid = (SELECT max(rowid) FROM marts.t WHERE s IS NULL)")
    assert rows(warehouse_database, "SELECT count(*) FROM marts.t WHERE s IS NULL") == [(1,)]


def test_a_new_column_rebuilds_the_table(
    warehouse: PostgresWarehouse, warehouse_database: PostgresServer
) -> None:
    with warehouse.transaction() as con:
        con.execute("CREATE TABLE staging.t AS SELECT 1 AS id")
    with warehouse.transaction() as con:
        con.execute("ALTER TABLE staging.t ADD COLUMN extra VARCHAR DEFAULT 'x'")
    assert rows(warehouse_database, "SELECT id, extra FROM staging.t") == [(1, "x")]


def test_loads_of_different_tables_run_concurrently_and_one_table_waits(
    warehouse_database: PostgresServer, tmp_path: Path
) -> None:
    """Two hosts' working copies publish at once. While a load of marts.a holds its table, a load of
    marts.b goes through and a second load of marts.a waits for the first to commit."""
    first = PostgresWarehouse(warehouse_database.url(), working_copy=tmp_path / "one.duckdb")
    second = PostgresWarehouse(warehouse_database.url(), working_copy=tmp_path / "two.duckdb")
    with first.transaction() as con:
        con.execute("CREATE TABLE marts.a AS SELECT 1 AS x")
    with psycopg.connect(warehouse_database.conninfo()) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(hashtext('marts.a'))")  # a long load of marts.a
        with second.transaction() as con:  # does not wait for it
            con.execute("CREATE TABLE marts.b AS SELECT 2 AS x")
        done = threading.Event()

        def load_a() -> None:
            with first.transaction() as con:
                con.execute("INSERT INTO marts.a VALUES (3)")
            done.set()

        waiting = threading.Thread(target=load_a)
        waiting.start()
        assert not done.wait(1.5)  # still waiting for the table
        holder.commit()
    waiting.join(30)
    assert done.is_set()
    assert rows(warehouse_database, "SELECT x FROM marts.a ORDER BY x") == [(1,), (3,)]
    assert rows(warehouse_database, "SELECT x FROM marts.b") == [(2,)]


def test_read_answers_from_postgresql_with_duckdb_placeholders(warehouse: PostgresWarehouse) -> None:
    with warehouse.transaction() as con:
        con.execute("CREATE TABLE marts.t AS SELECT 'a' AS v, 1 AS n")
    with warehouse.read() as reader:  # placeholders as in DuckDB, answered by PostgreSQL
        assert reader.execute("SELECT n FROM marts.t WHERE v = ? AND n < 50", ["a"]).fetchall() == [(1,)]
        assert reader.execute("SELECT n FROM marts.t WHERE v = $v", {"v": "a"}).fetchall() == [(1,)]
        assert reader.execute("SELECT '?' || v FROM marts.t WHERE v LIKE ?", ["a%"]).fetchall() == [("?a",)]


def test_doctor_reaches_the_server_and_never_shows_the_password(
    warehouse_database: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(settings.WAREHOUSE_WORKING_COPY, str(tmp_path / "work.duckdb"))
    monkeypatch.setenv(settings.WAREHOUSE_URL, warehouse_database.url())
    row = check_warehouse()
    assert row.ok, row
    assert f"PostgreSQL crm@127.0.0.1:{warehouse_database.port}/{warehouse_database.database}" in row.detail
    assert warehouse_database.password not in str(row)
    wrong = warehouse_database.url().replace(warehouse_database.password, "not-the-password-42")
    monkeypatch.setenv(settings.WAREHOUSE_URL, wrong)
    row = check_warehouse()
    assert not row.ok
    assert "password authentication failed" in row.detail
    assert "not-the-password-42" not in str(row)


def test_a_load_whose_publish_failed_is_published_by_the_next_write(
    warehouse: PostgresWarehouse, warehouse_database: PostgresServer
) -> None:
    unreachable = PostgresWarehouse(
        warehouse_database.url().replace(f":{warehouse_database.port}/", ":1/"), working_copy=warehouse.path
    )
    with warehouse.transaction() as con:
        con.execute("CREATE TABLE core.t AS SELECT 1 AS x")
    with (
        pytest.raises(psycopg.OperationalError),
        unreachable.transaction() as con,
    ):  # committed, not published
        con.execute("UPDATE core.t SET x = 2")
    assert rows(warehouse_database, "SELECT x FROM core.t") == [(1,)]
    with warehouse.transaction() as con:  # another table: the change left behind is found and sent too
        con.execute("CREATE TABLE marts.other AS SELECT 3 AS x")
    assert rows(warehouse_database, "SELECT x FROM core.t") == [(2,)]
    assert rows(warehouse_database, "SELECT x FROM marts.other") == [(3,)]


def _fail_inside_a_transaction(warehouse: PostgresWarehouse) -> None:
    with warehouse.connect() as con:
        con.execute("BEGIN TRANSACTION")
        con.execute("CREATE TABLE core.half_done AS SELECT 1 AS id")
        con.execute("SELECT * FROM core.no_such_table")


def test_a_failed_write_reports_its_own_error_and_the_next_write_is_published(
    warehouse: PostgresWarehouse, warehouse_database: PostgresServer
) -> None:
    with pytest.raises(duckdb.CatalogException, match="no_such_table"):
        _fail_inside_a_transaction(warehouse)
    with warehouse.transaction() as con:
        con.execute("CREATE TABLE core.after_failure AS SELECT 2 AS id")
    assert rows(warehouse_database, "SELECT id FROM core.after_failure") == [(2,)]
    assert rows(
        warehouse_database,
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'core' AND table_name = 'half_done'",
    ) == [(0,)]
