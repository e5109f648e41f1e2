"""Benchmark: a reverse sync of golden contacts into HubSpot, a naive full push against a diff.

    uv run python bench/reverse_sync.py --contacts 100000 --changed 0.01

Builds a HubSpot store with N contacts, served by the simulator enforcing HubSpot's documented
limit (the declaration's 100 requests per 10 s, a sliding window answering 429 beyond it), and a
DuckDB warehouse whose ``core.golden_contact`` holds the same people, linked by the crosswalk. Then it
runs the declared ``golden_contacts__hubspot`` sync twice, in one process:

1. **naive full push**: no sync state yet, so every record is sent, as a tool without state does
   every night; this is the baseline, and the sustained rate it reaches is the throughput figure
   (rows per second against the declared limit x the batch size; target at least 0.95);
2. **diff**: after ``--changed`` of the golden records change one field (a new job title), the
   sync sends what changed: the rows the requests carried against the rows changed (target at most
   1.05x), the requests, the seconds, and the ratio to the full push.
"""

from __future__ import annotations

import argparse
import collections
import random
import tempfile
import time
from pathlib import Path

import pyarrow as pa
from crm_extract import build_store  # bench/ is the script's folder

from crm_pipelines.connectors.auth import clear_token_cache
from crm_pipelines.connectors.limits import clear_buckets
from crm_pipelines.connectors.spec import load_system
from crm_pipelines.syncs.run import SyncReport, run_sync
from crm_pipelines.syncs.spec import load_syncs
from crm_pipelines.warehouse.connection import Warehouse
from crm_pipelines_sandbox.simulators import HubSpotSimulator, RateLimit
from resources.crm_api import CrmApiResource

TOKEN = "pat-eu1-bench-token"
SYNC = "golden_contacts__hubspot"


def build_warehouse(warehouse: Warehouse, contacts: int) -> None:
    """Golden contacts 1..N, each linked to HubSpot contact i (the crosswalk)."""
    ids = pa.array([str(i) for i in range(1, contacts + 1)])
    golden = pa.table(
        {
            "golden_id": pa.array([f"C-{i:08d}" for i in range(1, contacts + 1)]),
            "first_name": pa.array([f"First{i}" for i in range(1, contacts + 1)]),
            "last_name": pa.array([f"Last{i}" for i in range(1, contacts + 1)]),
            "email": pa.array([f"c{i}@example.com" for i in range(1, contacts + 1)]),
            "phone": pa.array([f"+4930{i:08d}" for i in range(1, contacts + 1)]),
            "title": pa.array(["Buyer"] * contacts),
            "country": pa.array(["DE"] * contacts),
        }
    )
    xref = pa.table(
        {
            "golden_id": golden.column("golden_id"),
            "entity": pa.array(["contact"] * contacts),
            "source": pa.array(["hubspot"] * contacts),
            "source_id": ids,
            "record_id": pa.array([f"hubspot:{i}" for i in range(1, contacts + 1)]),
        }
    )
    with warehouse.transaction() as con:
        con.register("golden", golden)
        con.register("xref", xref)
        con.execute("CREATE OR REPLACE TABLE core.golden_contact AS SELECT * FROM golden")
        con.execute("CREATE OR REPLACE TABLE core.xref_identity AS SELECT * FROM xref")


def change(warehouse: Warehouse, contacts: int, share: float, seed: int = 7) -> int:
    """A new job title on ``share`` of the golden contacts; returns how many changed."""
    picked = sorted(random.Random(seed).sample(range(1, contacts + 1), round(contacts * share)))
    keys = pa.table({"golden_id": pa.array([f"C-{i:08d}" for i in picked])})
    with warehouse.transaction() as con:
        con.register("picked", keys)
        con.execute(
            "UPDATE core.golden_contact SET title = 'Head of Purchasing' "
            "WHERE golden_id IN (SELECT golden_id FROM picked)"
        )
    return len(picked)


def push(
    sim: HubSpotSimulator, warehouse: Warehouse, workdir: Path, run_id: str
) -> tuple[SyncReport, float, collections.Counter[int]]:
    sim.request_log = collections.deque()  # unbounded: every request of the run is counted
    started = time.monotonic()
    report = run_sync(
        load_syncs().get(SYNC),
        warehouse=warehouse,
        lake_dir=workdir / "lake",
        partition="2026-11-25",
        run_id=run_id,
        client=CrmApiResource(system="hubspot", base_url=sim.base_url, access_token=TOKEN),
        dry_run=False,
    )
    seconds = time.monotonic() - started
    writes = collections.Counter(r.status for r in sim.request_log if r.path.endswith("/batch/update"))
    return report, seconds, writes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--changed", type=float, default=0.01, help="share of golden records changed")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the store goes (default: a temp dir)"
    )
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="crm-bench-"))
    store = workdir / f"hubspot-{args.contacts}.sqlite"
    store.unlink(missing_ok=True)
    build_store(store, args.contacts)
    warehouse = Warehouse(f"duckdb:///{workdir}/warehouse.duckdb")
    build_warehouse(warehouse, args.contacts)
    system = load_system(name="hubspot")
    limit = system.rate_limit
    batch = system.get_object("contacts").update.batch_size  # type: ignore[union-attr]
    ceiling = limit.requests / limit.interval_seconds * batch
    print(
        f"HubSpot contacts: {args.contacts:,} golden records; declared limit {limit.requests} requests / "
        f"{limit.interval_seconds:g}s x {batch} records per batch update = {ceiling:,.0f} records/s"
    )
    sim = HubSpotSimulator(
        store, access_token=TOKEN, rate_limit=RateLimit(limit.requests, limit.interval_seconds)
    )
    sim.start()
    # One account, one bucket for both runs (as the shared rate-limit file keeps it between nights).
    clear_token_cache()
    clear_buckets()
    try:
        full, full_seconds, full_writes = push(sim, warehouse, workdir, "full")
        full_sent = full.counts.updated + full.counts.rejected
        rate = full_sent / full_seconds
        print(
            f"naive full push: {full_sent:,} records in {sum(full_writes.values()):,} write requests, "
            f"{full_seconds:.1f}s = {rate:,.0f} records/s = {rate / ceiling:.3f} of the limit x batch "
            f"(target >= 0.95); statuses {dict(full_writes)}, rejected {full.counts.rejected}"
        )
        changed = change(warehouse, args.contacts, args.changed)
        diff, diff_seconds, diff_writes = push(sim, warehouse, workdir, "diff")
        diff_sent = diff.counts.updated + diff.counts.rejected
        print(
            f"diff: {changed:,} golden records changed; {diff_sent:,} records sent in "
            f"{sum(diff_writes.values()):,} write requests = {diff_sent / changed:.3f}x the changed rows "
            f"(target <= 1.05); {diff.counts.unchanged:,} unchanged, {diff_seconds:.1f}s; statuses {dict(diff_writes)}"
        )
        print(
            f"diff / full push: {diff_sent / full_sent:.4f} of the records, "
            f"{sum(diff_writes.values()) / sum(full_writes.values()):.4f} of the requests, "
            f"{diff_seconds / full_seconds:.4f} of the time ({full_seconds / diff_seconds:,.1f}x faster)"
        )
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
