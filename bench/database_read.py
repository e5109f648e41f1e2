"""Reading a large PostgreSQL table into the lake: our reader vs pandas.read_sql vs raw COPY.

Starts a fresh PostgreSQL server (same code as the tests), fills a table with ``--rows`` ERP-like rows
(integer, text, decimal, timestamptz, date, boolean), then in one run measures rows/s and peak RSS of:
our reader (COPY -> Arrow -> Parquet in the lake), pandas.read_sql over the same SQLAlchemy engine,
and psycopg ``COPY (...) TO STDOUT`` into a file (the near-bound reference).

    uv run python bench/database_read.py --rows 5000000
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import psutil
import psycopg
import sqlalchemy as sa
from measure import PeakRss  # bench/measure.py (the scripts run from bench/)

from crm_pipelines.databases.source import DatabaseSource
from crm_pipelines.databases.sql_source import TableRead
from crm_pipelines.lake import write_batches
from crm_pipelines_sandbox.postgres_server import running_postgres


def measure(name: str, rows: int, run: Callable[[], int]) -> tuple[str, float, float, float]:
    base = psutil.Process().memory_info().rss
    with PeakRss() as rss:
        start = time.perf_counter()
        got = run()
        seconds = time.perf_counter() - start
    assert got == rows, f"{name}: {got} rows, expected {rows}"
    return name, seconds, rows / seconds, (rss.peak - base) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=5_000_000)
    args = parser.parse_args()
    with running_postgres(database="bench", settings=("shared_buffers=256MB",)) as server:
        with psycopg.connect(server.conninfo(), autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE invoices AS SELECT g AS invoice_id, 'INV-' || g AS invoice_number, "
                "(g % 997)::int AS customer_id, round((g % 100000) / 7.0, 2)::numeric(18,2) AS amount_gross, "
                "'2026-01-01 00:00:00+00'::timestamptz + make_interval(secs => g) AS updated_at, "
                "'2026-01-01'::date + (g % 365) AS invoice_date, g % 3 = 0 AS paid "
                f"FROM generate_series(1, {args.rows}) AS g"
            )
            conn.execute("ALTER TABLE invoices ADD PRIMARY KEY (invoice_id)")
            conn.execute("VACUUM ANALYZE invoices")
        out = Path(tempfile.mkdtemp(prefix="crm-bench-"))
        engine = sa.create_engine(server.url())

        def ours() -> int:
            source = DatabaseSource(server.url())
            batches = source.read(TableRead("invoices", order_by=("invoice_id",)), chunk_rows=100_000)
            first = next(batches)
            rows = write_batches(out / "ours.parquet", first.schema, itertools.chain([first], batches))
            source.close()
            return rows

        def pandas_read_sql() -> int:
            with engine.connect() as conn:
                frame = pd.read_sql(sa.text("SELECT * FROM invoices ORDER BY invoice_id"), conn)
            return len(frame)

        def copy_to_file() -> int:
            with psycopg.connect(server.conninfo()) as conn, open(out / "copy.csv", "wb") as handle:
                cursor = conn.cursor()
                with cursor.copy(
                    "COPY (SELECT * FROM invoices ORDER BY invoice_id) TO STDOUT (FORMAT csv)"
                ) as copy:
                    for chunk in copy:
                        handle.write(chunk)
            with open(out / "copy.csv", "rb") as handle:
                return sum(1 for _ in handle)

        try:
            results = [
                measure("copy to file (reference)", args.rows, copy_to_file),
                measure("ours: COPY -> Arrow -> Parquet", args.rows, ours),
                measure("pandas.read_sql", args.rows, pandas_read_sql),
            ]
        finally:
            engine.dispose()
            shutil.rmtree(out, ignore_errors=True)
        print(f"{args.rows:,} rows")
        print(f"{'reader':34} {'seconds':>8} {'rows/s':>12} {'peak RSS +MiB':>14}")
        for name, seconds, rate, mib in results:
            print(f"{name:34} {seconds:8.1f} {rate:12,.0f} {mib:14.0f}")
        ratio = results[2][1] / results[1][1]
        print(f"ours is {ratio:.1f}x faster than pandas.read_sql")


if __name__ == "__main__":
    main()
