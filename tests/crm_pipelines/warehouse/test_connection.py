"""A write connection brings the schemas and the ``ops`` tables to what this version expects."""

from __future__ import annotations

from pathlib import Path

import duckdb

from crm_pipelines.warehouse.connection import SCHEMAS, Warehouse


def _columns(path: Path, table: str) -> list[str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        schema, name = table.split(".")
        rows = con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE schema_name = ? AND table_name = ?",
            [schema, name],
        ).fetchall()
        return [row[0] for row in rows]
    finally:
        con.close()


def test_a_warehouse_from_an_older_version_gets_what_it_lacks_on_the_next_write(tmp_path: Path) -> None:
    path = tmp_path / "wh.duckdb"
    old = duckdb.connect(str(path))
    old.execute("CREATE SCHEMA ops; CREATE SCHEMA raw")
    # ops.reconciliation before ``deleted`` was added, and no ops.file_ingest at all.
    old.execute(
        "CREATE TABLE ops.reconciliation (run_id VARCHAR NOT NULL, partition VARCHAR NOT NULL, "
        "source VARCHAR NOT NULL, entity VARCHAR NOT NULL, extracted BIGINT NOT NULL, loaded BIGINT NOT NULL, "
        "merged BIGINT NOT NULL, quarantined BIGINT NOT NULL, adds_up BOOLEAN NOT NULL, detail VARCHAR, "
        "checked_at TIMESTAMPTZ NOT NULL)"
    )
    old.execute(
        "INSERT INTO ops.reconciliation VALUES ('r', '2026-12-01', 's', 'e', 1, 1, 0, 0, true, NULL, now())"
    )
    old.close()

    warehouse = Warehouse(f"duckdb:///{path}")
    with warehouse.transaction():
        pass
    assert "deleted" in _columns(path, "ops.reconciliation")
    assert "new_columns" in _columns(path, "ops.file_ingest")
    with warehouse.read() as reader:
        assert reader.execute("SELECT deleted FROM ops.reconciliation").fetchall() == [(0,)]
        held = {row[0] for row in reader.execute("SELECT schema_name FROM duckdb_schemas()").fetchall()}
    assert set(SCHEMAS) <= held

    # A schema dropped by hand comes back with the next write; a read changes nothing.
    other = duckdb.connect(str(path))
    other.execute("DROP SCHEMA marts")
    other.close()
    with warehouse.read() as reader:
        assert reader.execute(
            "SELECT count(*) FROM duckdb_schemas() WHERE schema_name = 'marts'"
        ).fetchone() == (0,)
    with warehouse.transaction():
        pass
    with warehouse.read() as reader:
        assert reader.execute(
            "SELECT count(*) FROM duckdb_schemas() WHERE schema_name = 'marts'"
        ).fetchone() == (1,)
