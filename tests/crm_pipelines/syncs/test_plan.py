"""Plans of one process share an in-memory DuckDB: each plan sees only its own tables."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa
import pytest

from crm_pipelines.syncs.plan import Plan, plan_sync
from crm_pipelines.syncs.run import resolve_target
from crm_pipelines.syncs.spec import parse_syncs

SYNCS = """
models:
  customers:
    sql: SELECT * FROM core.customer
syncs:
  customers_to_salesforce:
    source: {model: customers, key: number}
    target: {system: salesforce, object: Account}
    match: {external_id: ERP_Customer_Number__c}
    mode: upsert
    fields:
      salesforce:
        Name: {from: name}
        BillingCity: {from: city}
"""
EMPTY_STATE = pa.schema(
    [(n, pa.string()) for n in ("source_key", "target_id", "values", "status", "run_id")]
).empty_table()
NO_LINKS = pa.table({"source_key": pa.array([], pa.string()), "target_id": pa.array([], pa.string())})


def _plan(keys: list[str], spill: Path) -> Plan:
    sync = parse_syncs(text=SYNCS).get("customers_to_salesforce")
    source = pa.table({"number": keys, "name": [f"Customer {k}" for k in keys], "city": ["Lyon"] * len(keys)})
    return plan_sync(
        sync,
        resolve_target(sync),
        source=source,
        links=NO_LINKS,
        state=EMPTY_STATE,
        current_sql=None,
        existing={},
        spill_dir=spill,
    )


def test_plans_in_one_process_never_see_each_others_rows(tmp_path: Path) -> None:
    first = _plan(["C-1", "C-2"], tmp_path / "a")
    # Another lake's plan, then the first lake's again: each plans exactly its own source rows.
    other = _plan(["C-9"], tmp_path / "b")
    again = _plan(["C-3"], tmp_path / "a")

    assert [op.source_key for op in first.operations] == ["C-1", "C-2"]
    assert [op.source_key for op in other.operations] == ["C-9"]
    assert [op.source_key for op in again.operations] == ["C-3"]
    assert again.operations[0].values == {
        "Name": "Customer C-3",
        "BillingCity": "Lyon",
        "ERP_Customer_Number__c": "C-3",
    }


# fetch_arrow silences DuckDB's extra-copy warning with warnings.catch_warnings, which threads race on.
@pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result")
def test_plans_on_threads_at_once_each_get_their_own_rows(tmp_path: Path) -> None:
    results: dict[int, list[str]] = {}

    def plan(n: int) -> None:
        keys = [f"T{n}-{i:03d}" for i in range(200)]
        results[n] = [op.source_key for op in _plan(keys, tmp_path / "spill").operations]

    threads = [threading.Thread(target=plan, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results == {n: [f"T{n}-{i:03d}" for i in range(200)] for n in range(4)}
