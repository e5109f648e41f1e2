"""Which tables a load wrote, read from DuckDB's query log: every kind of write is named, and a statement
that cannot be placed makes every table be checked."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from crm_pipelines.warehouse import written


@pytest.mark.parametrize(
    ("statement", "targets"),
    [
        ("INSERT INTO core.t VALUES (1)", {"core.t"}),
        ('insert or replace into "ops"."load_state" values (?)', {"ops.load_state"}),
        ("INSERT INTO raw.t BY NAME SELECT * FROM read_parquet('x')", {"raw.t"}),
        ("DELETE FROM staging.contact AS t USING _incoming AS i WHERE t.k = i.k", {"staging.contact"}),
        ("UPDATE marts.fact_invoice SET amount = 1", {"marts.fact_invoice"}),
        ("  -- a comment\n  CREATE OR REPLACE TABLE marts.dim_account AS SELECT 1", {"marts.dim_account"}),
        ("CREATE TABLE IF NOT EXISTS ops.quarantine (x INT)", {"ops.quarantine"}),
        ("CREATE OR REPLACE VIEW core.golden_field_lineage AS SELECT 1", {"core.golden_field_lineage"}),
        ("ALTER TABLE raw.t ADD COLUMN extra VARCHAR", {"raw.t"}),
        ("DROP TABLE IF EXISTS core.t", {"core.t"}),
        ("TRUNCATE core.t", {"core.t"}),
        ("COPY core.t FROM 'file.csv'", {"core.t"}),
        ("MERGE INTO core.t USING s ON (t.k = s.k) WHEN MATCHED THEN UPDATE SET v = 1", {"core.t"}),
        ("COMMENT ON COLUMN marts.dim_contact.email IS 'x'", {"marts.dim_contact"}),
        ("WITH n AS (SELECT 1) INSERT INTO core.t SELECT * FROM n", {"core.t"}),
        ("WITH n AS (SELECT updated_at FROM t) SELECT * FROM n", set()),
        ("SELECT * FROM core.t WHERE note = 'DELETE FROM core.x'", set()),
        ("COPY (SELECT * FROM core.t) TO 'out.parquet' (FORMAT parquet)", set()),
        ("COPY core.t TO 'out.csv'", set()),
        ("CREATE TEMP TABLE _incoming AS SELECT 1", set()),
        ("CREATE OR REPLACE TEMPORARY TABLE __rows AS SELECT 1", set()),
        ("CREATE SCHEMA IF NOT EXISTS analyst", set()),
        ("CREATE OR REPLACE MACRO clean(x) AS trim(x)", set()),
        ("INSERT INTO _incoming SELECT 1", set()),  # unqualified: a temporary or default-schema table
        ("DESCRIBE core.t", set()),
        ("SET TimeZone = 'UTC'", set()),
        ("BEGIN TRANSACTION", set()),
        ("DROP SCHEMA core CASCADE", None),
        ("ATTACH 'other.duckdb' AS other", None),
        ("GRANT SELECT ON core.t TO someone", None),
    ],
)
def test_each_statement_names_what_it_writes(statement: str, targets: set[str] | None) -> None:
    assert written.statement_targets(statement) == targets


def test_a_connection_reports_the_tables_it_wrote_however_it_wrote_them() -> None:
    con = duckdb.connect()
    con.execute(
        "CREATE SCHEMA core; CREATE SCHEMA marts; CREATE TABLE core.a (x INT); CREATE TABLE core.b (x INT)"
    )
    written.enable(con)
    con.execute("INSERT INTO core.a VALUES (?)", [1])
    arrow = pa.table({"x": [2]})
    con.register("arrow_rows", arrow)
    con.sql("SELECT * FROM arrow_rows").insert_into("core.b")  # the relational API
    con.execute("CREATE TABLE marts.c AS SELECT 1 AS x; UPDATE core.a SET x = 3")
    con.execute("SELECT * FROM core.a").fetchall()
    assert written.written_tables(con) == {"core.a", "core.b", "marts.c"}
    con.execute("DROP SCHEMA marts CASCADE")
    assert written.written_tables(con) is None  # unknown: every table is checked
    written.enable(con)  # a new load starts with a clean log
    assert written.written_tables(con) == set()


def test_logging_stops_with_the_write_it_served() -> None:
    con = duckdb.connect()
    con.execute("CREATE SCHEMA core; CREATE TABLE core.a (x INT)")
    written.enable(con)
    con.execute("INSERT INTO core.a VALUES (1)")
    written.disable(con)
    con.execute("INSERT INTO core.a VALUES (2)")  # a later connection's statement on the same database
    assert con.execute("SELECT count(*) FROM duckdb_logs").fetchone() == (0,)
    written.enable(con)
    con.execute("INSERT INTO core.a VALUES (3)")
    assert written.written_tables(con) == {"core.a"}
