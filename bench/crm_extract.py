"""Benchmark: extract N records from a CRM simulator, with and without a rate limit.

    uv run python bench/crm_extract.py --records 1000000 --limit 1500 --interval 10
    uv run python bench/crm_extract.py --system zoho --records 1000000 --limit 300 --interval 10

Builds a store with N contacts (seeded, no generator overhead) for HubSpot or any of the other
declared systems (``--system``), serves it with that system's simulator and runs the connector
engine twice:

1. without a limit: rows per second (the engine's and simulator's own speed);
2. with the simulator enforcing ``--limit`` requests per ``--interval`` seconds (a sliding window,
   429 with Retry-After beyond it) and the system declaration sized to the same documented limit:
   the achieved request rate as a fraction of the limit (target: at least 0.95), the 429s received
   and whether the run completed with every record (a failed run is one that raised or lost rows).
"""

from __future__ import annotations

import argparse
import collections
import random
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

from crm_pipelines.connectors.auth import ConnectionSettings, clear_token_cache
from crm_pipelines.connectors.engine import ExtractStats, extract_object
from crm_pipelines.connectors.limits import clear_buckets
from crm_pipelines.connectors.spec import SystemSpec, load_system
from crm_pipelines_sandbox.simulators import HubSpotSimulator, RateLimit
from crm_pipelines_sandbox.simulators.base import SimulatorServer
from crm_pipelines_sandbox.simulators.store import create_hubspot_store, create_indexes, hs_datetime
from crm_pipelines_sandbox.systems import SeedContact, StoreWriter, sandbox_crm

TOKEN = "pat-eu1-bench-token"


def build_store(path: Path, records: int, seed: int = 1) -> None:
    """A HubSpot store with ``records`` contacts (and the empty companies/deals tables)."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    with closing(create_hubspot_store(path)) as conn:
        rows = []
        for i in range(1, records + 1):
            created = hs_datetime(start + timedelta(seconds=i * 30))
            modified = hs_datetime(start + timedelta(seconds=i * 30 + rng.randrange(86_400)))
            rows.append(
                (
                    i,
                    created,
                    modified,
                    f"First{i}",
                    f"Last{i}",
                    f"c{i}@example.com",
                    f"+4930{i:08d}",
                    "Buyer",
                    "Germany",
                    None,
                    created,
                    modified,
                    modified,
                )
            )
            if len(rows) == 50_000:
                _insert(conn, rows)
                rows = []
        _insert(conn, rows)
        create_indexes(conn)


def _insert(conn: sqlite3.Connection, rows: Sequence[tuple[object, ...]]) -> None:
    conn.executemany(
        'INSERT INTO contacts (id, "createdAt", "updatedAt", firstname, lastname, email, phone, jobtitle, '
        "country, associatedcompanyid, createdate, lastmodifieddate, hs_lastmodifieddate)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    conn.commit()


def build_other_store(path: Path, system: str, records: int, seed: int = 1) -> None:
    """A store of one of the other CRMs with ``records`` contacts, written through the system's module."""
    crm = sandbox_crm(system)
    rng = random.Random(seed)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    writer = StoreWriter(path, crm, seed=seed)
    try:
        batch: list[SeedContact] = []
        for i in range(1, records + 1):
            created = start + timedelta(seconds=i * 30)
            batch.append(
                SeedContact(
                    ref=f"P{i}",
                    account_ref=None,
                    first_name=f"First{i}",
                    last_name=f"Last{i}",
                    email=f"c{i}@example.com",
                    phone=f"+4930{i:08d}",
                    title="Buyer",
                    country="Germany",
                    created=created,
                    modified=created + timedelta(seconds=rng.randrange(86_400)),
                )
            )
            if len(batch) == 50_000:
                writer.add("contact", batch)
                batch = []
        writer.add("contact", batch)
    finally:
        writer.close()


def with_rate(system: SystemSpec, requests: int, interval: float) -> SystemSpec:
    return system.model_copy(
        update={
            "rate_limit": system.rate_limit.model_copy(
                update={"requests": requests, "interval_seconds": interval}
            )
        }
    )


def run(
    sim: SimulatorServer, system: SystemSpec, object_name: str, connection: ConnectionSettings
) -> tuple[int, float, ExtractStats, collections.Counter[int]]:
    # A fresh bucket per run: an account's bucket is created once, sized by the first declaration.
    clear_token_cache()
    clear_buckets()
    sim.request_log = collections.deque()  # unbounded: every request of the run is counted
    stats = ExtractStats()
    started = time.monotonic()
    rows = sum(
        batch.num_rows
        for batch in extract_object(
            system=system,
            object_name=object_name,
            connection=connection,
            include_deleted=False,
            pages_per_batch=50,
            stats=stats,
        )
    )
    seconds = time.monotonic() - started
    return rows, seconds, stats, collections.Counter(r.status for r in sim.request_log)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--system", default="hubspot", help="hubspot or another declared system")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--limit", type=int, default=1500, help="requests per interval the simulator allows")
    parser.add_argument("--interval", type=float, default=10.0, help="rate-limit window in seconds")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the store goes (default: a temp dir)"
    )
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="crm-bench-"))
    store = workdir / f"{args.system}-{args.records}.sqlite"
    if not store.exists():
        t0 = time.monotonic()
        if args.system == "hubspot":
            build_store(store, args.records)
        else:
            build_other_store(store, args.system, args.records)
        print(f"store: {args.records:,} contacts in {time.monotonic() - t0:.1f}s at {store}")

    system = load_system(name=args.system)
    if args.system == "hubspot":
        sim: SimulatorServer = HubSpotSimulator(store, access_token=TOKEN)
        sim.start()
        connection = ConnectionSettings(base_url=sim.base_url, access_token=TOKEN)
        object_name = "contacts"
    else:
        crm = sandbox_crm(args.system)
        started_sim = crm.start(store)
        sim, connection, object_name = (
            started_sim.simulator,
            crm.connection(started_sim),
            crm.kinds["contact"],
        )
    print(
        f"{system.title} {object_name}, declared limit {system.rate_limit.requests} / {system.rate_limit.interval_seconds:g}s"
    )
    try:
        # 1. No limit anywhere: how fast the engine pulls pages. (Without a configured limit the
        # HubSpot simulator still advertises the nominal one in its headers, which the client obeys.)
        sim.rate_limit = RateLimit(1_000_000_000, 1.0)
        rows, seconds, stats, statuses = run(sim, with_rate(system, 1_000_000, 1.0), object_name, connection)
        print(
            f"unlimited: {rows:,} rows in {seconds:.1f}s = {rows / seconds:,.0f} rows/s, "
            f"{stats.requests:,} requests ({stats.requests / seconds:,.0f}/s), statuses {dict(statuses)}"
        )
        # 2. The simulator enforces the limit; the declaration carries the same documented limit.
        sim.rate_limit = RateLimit(args.limit, args.interval)
        failed_runs = 0
        try:
            limited_rows, seconds, stats, statuses = run(
                sim, with_rate(system, args.limit, args.interval), object_name, connection
            )
        except Exception as exc:  # a failed run is a result here, not a crash of the benchmark
            failed_runs, limited_rows, seconds, statuses = 1, 0, 1.0, collections.Counter()
            print(f"limited run failed: {exc}")
        allowed = args.limit / args.interval
        sent = sum(statuses.values())
        achieved = sent / seconds
        if limited_rows != rows:
            failed_runs = max(failed_runs, 1)
        print(
            f"limited to {args.limit} requests / {args.interval:g}s ({allowed:,.1f}/s): {limited_rows:,} rows in "
            f"{seconds:.1f}s, {sent:,} requests = {achieved:,.1f}/s = {achieved / allowed:.3f} of the limit "
            f"(target >= 0.95), 429s: {statuses.get(429, 0)}, failed runs: {failed_runs}"
        )
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
