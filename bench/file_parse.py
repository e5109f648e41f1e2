"""Parse-and-land throughput of a file drop: a large CSV streamed into the lake, with peak memory.

Generates an invoices CSV (``--rows``, default 10M; one in 100,000 rows is malformed so the
quarantine path is exercised), then runs ``land_file`` (the extract's parse, quarantine and Parquet
write) on it and prints rows per second and the peak RSS, sampled every 50 ms with psutil.

    uv run python bench/file_parse.py --rows 10000000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import psutil
from measure import PeakRss  # bench/measure.py (the scripts run from bench/)

from crm_pipelines.files.landing import land_file
from crm_pipelines.sources import load_sources

HEADER = (
    "invoice_number,customer_code,invoice_date,due_date,currency,amount_net,amount_tax,amount_gross,status\n"
)


def write_csv(path: Path, rows: int) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.write(HEADER)
        block: list[str] = []
        for i in range(rows):
            if i % 100_000 == 99_999:
                block.append(f"BIL-{i},broken row with too few fields\n")
            else:
                block.append(
                    f"BIL-{i},C-{i % 5000},2026-11-25,2026-12-25,EUR,{i % 997}.00,19.00,119.00,open\n"
                )
            if len(block) == 100_000:
                out.write("".join(block))
                block.clear()
        out.write("".join(block))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    args = parser.parse_args()
    declared = load_sources()["finance_sftp"].datasets["invoices"]
    with tempfile.TemporaryDirectory(prefix="file-parse-bench-") as scratch:
        work = Path(scratch)
        csv_path = work / "invoices_2026-11-25.csv"
        started = time.perf_counter()
        write_csv(csv_path, args.rows)
        size_mb = csv_path.stat().st_size / 1024 / 1024
        print(f"generated {args.rows:,} rows ({size_mb:,.0f} MB) in {time.perf_counter() - started:.1f}s")
        # pyarrow imports pandas lazily on first use (seconds): pay that before the clock starts.
        import pandas  # noqa: F401

        baseline = psutil.Process().memory_info().rss
        with PeakRss() as memory:
            started = time.perf_counter()
            manifest = land_file(
                local_file=csv_path,
                remote_path=f"/outbound/finance/{csv_path.name}",
                sha256="0" * 64,
                size=csv_path.stat().st_size,
                declared=declared,
                source="finance_sftp",
                entity="invoice",
                folder=work / "lake" / "raw",
                quarantine_folder=work / "lake" / "quarantine",
            )
            elapsed = time.perf_counter() - started
        rows = int(manifest["rows_landed"]) + int(manifest["rows_quarantined"])
        print(
            f"parsed and landed {manifest['rows_landed']:,} rows, quarantined {manifest['rows_quarantined']:,}, "
            f"in {elapsed:.1f}s: {rows / elapsed:,.0f} rows/s, {size_mb / elapsed:,.0f} MB/s"
        )
        print(
            f"peak RSS {memory.peak / 1024 / 1024:,.0f} MB "
            f"(before parsing {baseline / 1024 / 1024:,.0f} MB, +{(memory.peak - baseline) / 1024 / 1024:,.0f} MB)"
        )


if __name__ == "__main__":
    main()
