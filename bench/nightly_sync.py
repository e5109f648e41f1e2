"""Benchmark: the nightly sync on the sandbox at a given scale.

    uv run python bench/nightly_sync.py --contacts 100000

Prints per-stage wall time, rows and rows per second, and peak memory (RSS) of the process during
the run (the data generation happens before and is reported apart). With ``--reference`` it also
times DuckDB's own CSV reader loading the run's contacts from one CSV, side by side.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import dagster as dg
import duckdb
import psutil
from measure import PeakRss  # bench/measure.py (the scripts run from bench/)

from crm_pipelines import settings
from crm_pipelines_sandbox.run import Sandbox


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--workdir", default=None, help="keep the sandbox and warehouse here (default: a temp dir)"
    )
    parser.add_argument("--reference", action="store_true", help="also time DuckDB read_csv on the contacts")
    args = parser.parse_args()
    day = dt.date(2026, 11, 25)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="crm-bench-"))
    os.environ[settings.LAKE_DIR] = str(workdir / "lake")
    os.environ[settings.WAREHOUSE_URL] = f"duckdb:///{workdir}/warehouse.duckdb"

    box = Sandbox(workdir / "sandbox", contacts=args.contacts, seed=args.seed, as_of=day)
    started = time.monotonic()
    box.prepare()
    print(
        f"sandbox data for {args.contacts:,} contacts: {time.monotonic() - started:.1f}s (not part of the run)"
    )
    os.environ.update(box.start())
    try:
        from crm_pipelines.definitions import defs

        job = defs().resolve_job_def("nightly_sync")
        instance = dg.DagsterInstance.ephemeral()
        rss_before = psutil.Process().memory_info().rss
        with PeakRss() as peak:
            run_started = time.monotonic()
            result = job.execute_in_process(
                partition_key=day.isoformat(),
                instance=instance,
                raise_on_error=False,
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            )
            total = time.monotonic() - run_started
    finally:
        box.stop()

    starts: dict[str, float] = {}
    seconds: dict[str, float] = {}
    rows: dict[str, int] = defaultdict(int)
    for entry in instance.all_logs(result.run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            starts[event.step_key] = entry.timestamp
        elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            seconds[event.step_key] = entry.timestamp - starts.get(event.step_key, entry.timestamp)
        elif event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            metadata = event.event_specific_data.materialization.metadata  # type: ignore[union-attr]
            for key in ("rows", "dagster/row_count", "staged_rows", "golden_contacts"):
                if key in metadata:
                    rows[event.step_key] = int(metadata[key].value)  # type: ignore[arg-type]
                    break

    print(
        f"\nnightly_sync {'succeeded' if result.success else 'FAILED'} in {total:.1f}s "
        f"for {args.contacts:,} contacts; peak RSS {peak.peak / 2**20:,.0f} MiB "
        f"(before the run {rss_before / 2**20:,.0f} MiB; ru_maxrss "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB)"
    )
    print(f"{'stage':40} {'seconds':>9} {'rows':>11} {'rows/s':>11}")
    for step, secs in sorted(seconds.items(), key=lambda kv: starts.get(kv[0], 0)):
        n = rows.get(step)
        rate = f"{n / secs:,.0f}" if n and secs > 0 else ""
        print(f"{step:40} {secs:9.2f} {'' if n is None else f'{n:,}':>11} {rate:>11}")

    if args.reference:
        lake = workdir / "lake" / "raw"
        csv_path = workdir / "contacts.csv"
        con = duckdb.connect()
        con.execute(
            f"COPY (SELECT * FROM read_parquet('{lake}/hubspot/contacts/dt={day}/*.parquet')) TO '{csv_path}' (HEADER)"
        )
        count = con.execute(f"SELECT count(*) FROM read_csv('{csv_path}')").fetchall()[0][0]
        ref_started = time.monotonic()
        duckdb.connect(str(workdir / "reference.duckdb")).execute(
            f"CREATE OR REPLACE TABLE contacts AS SELECT * FROM read_csv('{csv_path}')"
        )
        print(
            f"\nreference: DuckDB read_csv of {count:,} HubSpot contacts into a table: "
            f"{time.monotonic() - ref_started:.2f}s"
        )


if __name__ == "__main__":
    main()
