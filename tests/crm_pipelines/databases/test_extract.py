"""Full and incremental extracts into the lake: snapshots, late rows inside the lookback, deletes, type changes."""

import datetime as dt
import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from crm_pipelines.databases.extract import extract_table
from crm_pipelines.databases.source import ODBC_PREFIX, DatabaseSource
from crm_pipelines.databases.sql_source import SchemaMismatch
from crm_pipelines.sources import Dataset
from crm_pipelines.warehouse.watermarks import read_pending
from crm_pipelines_sandbox.postgres_server import PostgresServer

DECLARED = Dataset.model_validate(
    {
        "table": "invoices",
        "order_by": ["invoice_id"],
        "primary_key": ["invoice_id"],
        "incremental": {"cursor": "updated_at", "kind": "timestamp", "lookback": "2h"},
        "deletes": "key_compare",
    }
)
DDL = "CREATE TABLE invoices (invoice_id INTEGER PRIMARY KEY, amount NUMERIC(18,2), updated_at TIMESTAMP)"


@pytest.fixture(params=["postgres_copy", "postgres_odbc", "sqlite"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[sa.Engine, DatabaseSource]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/erp.db"
        engine = sa.create_engine(url)
        source = DatabaseSource(url)
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        engine = sa.create_engine(server.url())
        if request.param == "postgres_odbc":
            request.getfixturevalue("odbc_driver")
            source = DatabaseSource(ODBC_PREFIX + server.odbc_connection_string())
        else:
            source = DatabaseSource(server.url())
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS invoices"))
        conn.execute(sa.text(DDL))
    try:
        yield engine, source
    finally:
        source.close()
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS invoices"))
        engine.dispose()


def run(engine: sa.Engine, sql: str, **params: object) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(sql), params)


def extract(source: DatabaseSource, lake: Path, day: str, watermark: str | None):  # type: ignore[no-untyped-def]
    return extract_table(
        source,
        lake_dir=lake,
        source_name="erp",
        dataset="invoices",
        declared=DECLARED,
        partition=day,
        watermark=watermark,
        chunk_rows=2,
    )


def snapshot(lake: Path, day: str) -> dict[int, tuple[Decimal, bool]]:
    """Key -> (amount, deleted); SQLite hands amounts over as text, PostgreSQL as decimals."""
    rows = pq.read_table(lake / "raw" / "erp" / "invoices" / f"dt={day}").to_pylist()
    return {r["invoice_id"]: (Decimal(str(r["amount"])), r["_deleted"]) for r in rows}


def test_full_then_incremental_with_a_late_row_and_a_delete(
    database: tuple[sa.Engine, DatabaseSource], tmp_path: Path
) -> None:
    engine, source = database
    lake = tmp_path / "lake"
    ts = dt.datetime(2026, 11, 24, 12, 0)
    for i in range(1, 6):
        run(engine, "INSERT INTO invoices VALUES (:i, :a, :t)", i=i, a=f"{i}0.10", t=ts)

    first = extract(source, lake, "2026-11-24", None)
    assert (first.mode, first.rows_read) == ("full", 5)
    assert first.reached == "2026-11-24T12:00:00+00:00"
    assert snapshot(lake, "2026-11-24") == {i: (Decimal(f"{i}0.10"), False) for i in range(1, 6)}

    # Next day: one row changes, one is new, one is deleted, and one commits late with an updated_at
    # 1h before the watermark (inside the 2h lookback).
    run(
        engine,
        "UPDATE invoices SET amount = 99.99, updated_at = :t WHERE invoice_id = 2",
        t=ts + dt.timedelta(hours=5),
    )
    run(engine, "INSERT INTO invoices VALUES (6, 60.60, :t)", t=ts + dt.timedelta(hours=6))
    run(engine, "INSERT INTO invoices VALUES (7, 70.70, :t)", t=ts - dt.timedelta(hours=1))
    run(engine, "DELETE FROM invoices WHERE invoice_id = 4")
    second = extract(source, lake, "2026-11-25", first.reached)

    assert second.mode == "incremental"
    assert second.base_partition == "2026-11-24"
    assert second.since == "2026-11-24T10:00:00+00:00"
    assert second.rows_read == 6  # 1, 3, 5 fall inside the lookback too; 4 is gone; nothing older
    assert snapshot(lake, "2026-11-25") == {
        1: (Decimal("10.10"), False),
        2: (Decimal("99.99"), False),
        3: (Decimal("30.10"), False),
        4: (Decimal("40.10"), True),
        5: (Decimal("50.10"), False),
        6: (Decimal("60.60"), False),
        7: (Decimal("70.70"), False),
    }
    pending = read_pending(lake / "raw" / "erp" / "invoices" / "dt=2026-11-25")
    assert pending is not None
    assert pending.reached == "2026-11-24T18:00:00+00:00"
    # The day before stays as it was: the snapshot contract holds per partition.
    assert snapshot(lake, "2026-11-24")[4] == (Decimal("40.10"), False)


def test_a_changed_column_type_is_named(database: tuple[sa.Engine, DatabaseSource], tmp_path: Path) -> None:
    engine, source = database
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite keeps declared types loosely; the check is for typed databases")
    lake = tmp_path / "lake"
    run(engine, "INSERT INTO invoices VALUES (1, 1.00, '2026-11-24 12:00:00')")
    first = extract(source, lake, "2026-11-24", None)
    run(engine, "ALTER TABLE invoices ALTER COLUMN amount TYPE NUMERIC(20,4)")
    with pytest.raises(SchemaMismatch, match=r"invoices\.amount changed type"):
        extract(source, lake, "2026-11-25", first.reached)


def test_declarations_that_cannot_merge_are_refused() -> None:
    with pytest.raises(ValueError, match="need primary_key"):
        Dataset.model_validate({"table": "invoices", "incremental": {"cursor": "updated_at"}})
    with pytest.raises(ValueError, match="lookback '2 hours'"):
        Dataset.model_validate(
            {"table": "t", "primary_key": ["id"], "incremental": {"cursor": "u", "lookback": "2 hours"}}
        )
    assert DECLARED.incremental is not None
    assert DECLARED.incremental.lookback_seconds == 7200


def test_a_night_run_again_reads_only_what_changed_since_its_last_run(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/erp.db")
    source = DatabaseSource(f"sqlite:///{tmp_path}/erp.db")
    lake = tmp_path / "lake"
    night = lake / "raw" / "erp" / "invoices" / "dt=2026-11-25"
    ts = dt.datetime(2026, 11, 24, 12, 0)
    run(engine, DDL)
    for i in range(1, 6):
        run(engine, "INSERT INTO invoices VALUES (:i, :a, :t)", i=i, a=f"{i}0.10", t=ts)
    first = extract(source, lake, "2026-11-24", None)
    run(
        engine,
        "UPDATE invoices SET amount = 99.99, updated_at = :t WHERE invoice_id = 2",
        t=ts + dt.timedelta(hours=5),
    )
    run(engine, "INSERT INTO invoices VALUES (6, 60.60, :t)", t=ts + dt.timedelta(hours=10))
    second = extract(source, lake, "2026-11-25", first.reached)
    assert (second.base_partition, second.rows_read) == ("2026-11-24", 6)

    # Run again, after one more row and a delete: it builds on its own last run, so it reads the 2h
    # lookback before what that run reached (row 6) and the new row 7, not the day since the night before.
    run(engine, "INSERT INTO invoices VALUES (7, 70.70, :t)", t=ts + dt.timedelta(hours=11))
    run(engine, "DELETE FROM invoices WHERE invoice_id = 3")
    again = extract(source, lake, "2026-11-25", second.reached)
    assert (again.mode, again.base_partition, again.since) == (
        "incremental",
        "2026-11-25",
        "2026-11-24T20:00:00+00:00",
    )
    assert again.rows_read == 2
    expected = {
        1: (Decimal("10.10"), False),
        2: (Decimal("99.99"), False),
        3: (Decimal("30.10"), True),
        4: (Decimal("40.10"), False),
        5: (Decimal("50.10"), False),
        6: (Decimal("60.60"), False),
        7: (Decimal("70.70"), False),
    }
    assert snapshot(lake, "2026-11-25") == expected

    # A run that fails midway leaves no snapshot in the night's folder, and the run it built on stays
    # the base of the next attempt, which ends the same as a rebuild from the night before.
    run(engine, "ALTER TABLE invoices RENAME TO invoices_away")
    with pytest.raises(SchemaMismatch, match="does not exist"):
        extract(source, lake, "2026-11-25", again.reached)
    assert read_pending(night) is None
    run(engine, "ALTER TABLE invoices_away RENAME TO invoices")
    retried = extract(source, lake, "2026-11-25", again.reached)
    assert (retried.base_partition, retried.rows_read) == ("2026-11-25", 2)  # rows 6 and 7
    assert snapshot(lake, "2026-11-25") == expected
    assert not (lake / "rerun" / "raw" / "erp" / "invoices" / "dt=2026-11-25").exists()

    shutil.rmtree(night)
    rebuilt = extract(source, lake, "2026-11-25", first.reached)
    assert rebuilt.base_partition == "2026-11-24"
    assert snapshot(lake, "2026-11-25") == expected
    source.close()
    engine.dispose()
