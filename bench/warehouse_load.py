"""Loads into the DuckDB warehouse and the PostgreSQL warehouse, side by side, in rows per second.

    uv run python bench/warehouse_load.py --rows 1000000

Generates ``--rows`` contact-shaped rows (ids, names, e-mail, phone, country, amounts, timestamps) as
lake Parquet, starts a PostgreSQL server from this machine's ``initdb``/``pg_ctl`` (crash safety off, as
in the tests), then times the same two loads on both backends:

- **full:** ``replace_partition`` of every row into ``raw.contact`` (one transaction);
- **1% changed:** the same partition again with 1% of the rows edited.

For PostgreSQL the time is the DuckDB load plus the publish (COPY into PostgreSQL, merge by
``INSERT ... ON CONFLICT``, one transaction); the publish alone is reported too. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import duckdb

from crm_pipelines.warehouse.connection import Warehouse
from crm_pipelines.warehouse.load import replace_partition
from crm_pipelines.warehouse.postgres import PostgresWarehouse, publish
from crm_pipelines_sandbox.postgres_server import running_postgres


def write_rows(folder: Path, rows: int, *, changed: float) -> str:
    """``rows`` contacts as Parquet; ``changed`` of them (every n-th) with another title."""
    folder.mkdir(parents=True, exist_ok=True)
    step = max(1, round(1 / changed)) if changed else 0
    title = f"CASE WHEN {step} > 0 AND i % {step} = 0 THEN 'Changed' ELSE 'Buyer' END" if step else "'Buyer'"
    duckdb.execute(
        f"""
        COPY (
            SELECT 'salesforce:' || i AS record_id, 'salesforce' AS source, CAST(i AS VARCHAR) AS source_id,
                   'First' || (i % 5000) AS first_name, 'Last' || (i % 20000) AS last_name,
                   'person' || i || '@example.com' AS email, '+4930' || lpad(CAST(i AS VARCHAR), 8, '0') AS phone,
                   ['DE', 'FR', 'GB', 'US'][1 + i % 4] AS country, {title} AS title,
                   CAST(i % 100000 AS DECIMAL(18, 2)) / 100 AS lifetime_value,
                   TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_seconds(i) AS updated_at, i % 97 = 0 AS is_deleted
            FROM range({rows}) r(i)
        ) TO '{folder}/part-0.parquet' (FORMAT parquet)
        """
    )
    return str(folder / "*.parquet")


def load(warehouse: Warehouse, glob: str) -> float:
    started = time.perf_counter()
    with warehouse.transaction() as con:
        replace_partition(con, schema="raw", table="contact", parquet_glob=glob, partition="2026-11-25")
    return time.perf_counter() - started


def publish_time(warehouse: PostgresWarehouse, glob: str) -> tuple[float, float]:
    """The DuckDB load without publishing, then the publish alone."""
    # The same file opened as a plain DuckDB warehouse: the load without the publish.
    duration = load(Warehouse(f"duckdb:///{warehouse.path}"), glob)
    started = time.perf_counter()
    with warehouse.connect(read_only=True) as con:
        publish(con, warehouse.conninfo, scratch=warehouse.path.parent / "scratch")
    return duration, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--changed", type=float, default=0.01)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="warehouse-load-") as tmp:
        root = Path(tmp)
        full = write_rows(root / "full", args.rows, changed=0)
        edited = write_rows(root / "edited", args.rows, changed=args.changed)
        results: list[tuple[str, str, float, float | None]] = []
        duck = Warehouse(f"duckdb:///{root}/warehouse.duckdb")
        results.append(("DuckDB", "full", load(duck, full), None))
        results.append(("DuckDB", f"{args.changed:.0%} changed", load(duck, edited), None))
        with running_postgres(database="warehouse", settings=("shared_buffers=512MB",)) as server:
            pg = PostgresWarehouse(server.url(), working_copy=root / "work.duckdb")
            duck_part, publish_part = publish_time(pg, full)
            results.append(("PostgreSQL", "full", duck_part + publish_part, publish_part))
            duck_part, publish_part = publish_time(pg, edited)
            results.append(
                ("PostgreSQL", f"{args.changed:.0%} changed", duck_part + publish_part, publish_part)
            )
            with pg.read() as reader:
                [(count,)] = reader.execute("SELECT count(*) FROM raw.contact").fetchall()
            assert count == args.rows, count
    print(f"\n{args.rows:,} rows into raw.contact\n")
    print("| backend | load | seconds | rows/s | publish to PostgreSQL (s) |")
    print("|---|---|---:|---:|---:|")
    for backend, kind, seconds, published in results:
        rate = args.rows / seconds
        extra = f"{published:.2f}" if published is not None else "-"
        print(f"| {backend} | {kind} | {seconds:.2f} | {rate:,.0f} | {extra} |")


if __name__ == "__main__":
    main()
