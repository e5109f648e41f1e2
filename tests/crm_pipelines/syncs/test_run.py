"""One sync run against a real simulator: per-row outcomes, previews, crashes, declarations.

The sync here creates ERP customers as Salesforce accounts by an external id (the ERP customer
number), as a user declares it in ``syncs.yaml``: the Salesforce simulator (sObject Collections
upsert, the platform's per-record SaveResults) and a DuckDB warehouse are real.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from crm_pipelines.connectors.auth import clear_token_cache
from crm_pipelines.connectors.limits import clear_buckets
from crm_pipelines.syncs.reconcile import reconcile_syncs, record_outbound
from crm_pipelines.syncs.run import SyncReport, resolve_target, run_sync
from crm_pipelines.syncs.spec import SyncsError, SyncSpec, load_syncs, parse_syncs
from crm_pipelines.warehouse.connection import Warehouse
from crm_pipelines_sandbox.simulators import SalesforceSimulator
from crm_pipelines_sandbox.simulators.store import create_indexes, create_salesforce_store, fetch_records
from resources.crm_api import CrmApiResource

CLIENT_ID = "3MVG9syncs.client"
CLIENT_SECRET = "sf-syncs-secret-53"
NIGHT = "2026-11-25"
REPO = Path(__file__).resolve().parents[3]

SYNCS = """
models:
  erp_customers:
    sql: SELECT * FROM core.erp_customer
syncs:
  customers_to_salesforce:
    description: ERP customers as Salesforce accounts, keyed by the ERP customer number.
    source: {model: erp_customers, key: customer_number}
    target: {system: salesforce, object: Account}
    match: {external_id: ERP_Customer_Number__c}
    mode: upsert
    fields:
      salesforce:
        Name: {from: name}
        BillingCity: {from: city}
        AnnualRevenue: {from: revenue}
"""


class CountingWarehouse(Warehouse):
    """A warehouse that remembers each connection it opened (True: read-only)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.opened: list[bool] = []

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        self.opened.append(read_only)
        with super().connect(read_only=read_only) as con:
            yield con


def customers_sync() -> SyncSpec:
    return parse_syncs(text=SYNCS, origin="test").get("customers_to_salesforce")


@dataclass
class Estate:
    """A Salesforce simulator and a warehouse whose core holds the ERP's customers."""

    root: Path
    store: Path
    simulator: SalesforceSimulator
    warehouse: Warehouse

    @property
    def connection(self) -> dict[str, str]:
        return {"base_url": self.simulator.base_url, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}

    @property
    def client(self) -> CrmApiResource:
        return CrmApiResource(
            system="salesforce",
            base_url=self.simulator.base_url,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
        )

    def customers(self, rows: Sequence[tuple[str, str | None, str | None, str | None]]) -> None:
        with self.warehouse.transaction() as con:
            con.execute(
                "CREATE OR REPLACE TABLE core.erp_customer "
                "(customer_number VARCHAR, name VARCHAR, city VARCHAR, revenue VARCHAR)"
            )
            con.executemany("INSERT INTO core.erp_customer VALUES (?, ?, ?, ?)", rows)

    def run(self, *, run_id: str, dry_run: bool = False) -> SyncReport:
        return run_sync(
            customers_sync(),
            warehouse=self.warehouse,
            lake_dir=self.root / "lake",
            partition=NIGHT,
            run_id=run_id,
            client=self.client,
            dry_run=dry_run,
        )

    def accounts(self) -> dict[str, list[dict[str, Any]]]:
        """Salesforce's accounts by ERP customer number (a list: a duplicate shows as two)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for record in fetch_records(self.store, "Account"):
            if record.get("ERP_Customer_Number__c"):
                out.setdefault(str(record["ERP_Customer_Number__c"]), []).append(record)
        return out

    def upserts(self) -> list[int]:
        """Status of each upsert request the simulator answered."""
        return [
            r.status
            for r in self.simulator.request_log
            if "/composite/sobjects/Account/ERP_Customer_Number__c" in r.path
        ]

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        with self.warehouse.connect(read_only=True) as con:
            return con.execute(sql, params or []).fetchall()


@pytest.fixture
def estate(tmp_path: Path) -> Iterator[Estate]:
    clear_token_cache()
    clear_buckets()
    store = tmp_path / "salesforce.sqlite"
    with closing(create_salesforce_store(store)) as conn:
        create_indexes(conn)
        conn.commit()
    with SalesforceSimulator(store, client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as simulator:
        yield Estate(tmp_path, store, simulator, Warehouse(f"duckdb:///{tmp_path}/warehouse.duckdb"))
    clear_token_cache()
    clear_buckets()


def test_bad_rows_are_rejected_with_the_vendors_reason_and_the_rest_of_the_batch_goes_through(
    estate: Estate,
) -> None:
    good = [(f"C-{n:03d}", f"Customer {n}", "Lyon", str(1000 * n)) for n in range(1, 8)]
    bad = [
        ("C-101", None, "Lyon", "5000"),  # no name: the platform requires one on a create
        ("C-102", "X" * 300, "Lyon", "5000"),  # longer than a text field holds
        ("C-103", "Customer 103", "Lyon", "a lot"),  # text in a currency field
    ]
    estate.customers([*good, *bad])

    report = estate.run(run_id="night-1")

    counts = report.counts
    assert (counts.planned, counts.created, counts.rejected) == (10, 7, 3)
    assert counts.adds_up
    accounts = estate.accounts()
    assert sorted(accounts) == [c for c, *_ in good]
    assert accounts["C-004"][0]["Name"] == "Customer 4"
    errors = {
        key: (code, reason, json.loads(fields))
        for key, code, reason, fields in estate.query(
            "SELECT source_key, error_code, reason, fields FROM ops.sync_errors WHERE run_id = 'night-1'"
        )
    }
    assert {key: code for key, (code, _, _) in errors.items()} == {
        "C-101": "REQUIRED_FIELD_MISSING",
        "C-102": "STRING_TOO_LONG",
        "C-103": "INVALID_TYPE_ON_FIELD_IN_RECORD",
    }
    assert "Required fields are missing: [Name]" in errors["C-101"][1]
    assert "max length=255" in errors["C-102"][1]
    assert "a lot" in errors["C-103"][1]
    assert "ERP_Customer_Number__c" in errors["C-101"][2]
    assert estate.query("SELECT planned, created, rejected FROM ops.sync_runs WHERE run_id = 'night-1'") == [
        (10, 7, 3)
    ]

    # The finance team corrects the ERP; the next night sends only the rows that failed.
    estate.customers(
        [*good, ("C-101", "Customer 101", "Lyon", "5000"), ("C-102", "Customer 102", "Lyon", "5000"), bad[2]]
    )
    sent_before = len(estate.upserts())
    again = estate.run(run_id="night-2")

    assert (again.counts.created, again.counts.unchanged, again.counts.rejected) == (2, 7, 1)
    assert len(estate.upserts()) == sent_before + 1  # one request carrying the three rows still due
    assert sorted(estate.accounts()) == sorted([c for c, *_ in good] + ["C-101", "C-102"])
    assert all(len(records) == 1 for records in estate.accounts().values())
    assert estate.query("SELECT source_key, error_code FROM ops.sync_errors WHERE run_id = 'night-2'") == [
        ("C-103", "INVALID_TYPE_ON_FIELD_IN_RECORD")
    ]


def test_a_dry_run_writes_the_plan_and_calls_nothing(estate: Estate) -> None:
    estate.customers([("C-001", "Customer 1", "Lyon", "1000"), ("C-002", "Customer 2", "Nice", None)])
    before = fetch_records(estate.store, "Account")

    report = estate.run(run_id="preview", dry_run=True)

    assert report.dry_run
    assert (report.counts.created, report.counts.adds_up) == (2, True)
    assert fetch_records(estate.store, "Account") == before
    assert estate.upserts() == []
    plan = estate.query(
        "SELECT source_key, target_id, action, to_value FROM ops.sync_plan WHERE run_id = 'preview' ORDER BY 1"
    )
    assert [(k, t, a) for k, t, a, _ in plan] == [("C-001", None, "create"), ("C-002", None, "create")]
    assert set(json.loads(plan[0][3])) == {"Name", "BillingCity", "AnnualRevenue", "ERP_Customer_Number__c"}
    assert estate.query("SELECT count(*) FROM ops.sync_state") == [(0,)]

    # The real run after the preview sends it, and the preview changed nothing of what it finds.
    real = estate.run(run_id="night-1")
    assert real.counts.created == 2
    assert estate.accounts()["C-001"][0]["BillingCity"] == "Lyon"

    # An update previews field by field: from which value to which.
    estate.customers([("C-001", "Customer 1", "Marseille", "1000"), ("C-002", "Customer 2", "Nice", None)])
    estate.run(run_id="preview-2", dry_run=True)
    assert estate.query(
        "SELECT source_key, action, field, from_value, to_value FROM ops.sync_plan WHERE run_id = 'preview-2'"
    ) == [("C-001", "update", "BillingCity", "Lyon", "Marseille")]
    assert estate.accounts()["C-001"][0]["BillingCity"] == "Lyon"


def test_a_night_sends_its_records_in_the_sources_key_order(estate: Estate) -> None:
    """The same night sends the same requests in the same order: a CRM numbers what it creates in the
    order it receives it, so a re-run gives every record the id it had."""
    keys = [f"C-{n:03d}" for n in (7, 3, 9, 1, 5)]
    estate.customers([(key, f"Customer {key}", "Lyon", None) for key in keys])
    estate.run(run_id="night-1")
    created = [r["ERP_Customer_Number__c"] for r in fetch_records(estate.store, "Account")]
    assert [key for key in created if key in keys] == sorted(keys)


def test_a_quiet_night_opens_two_warehouse_connections_and_records_its_run(estate: Estate) -> None:
    estate.customers([(f"C-{n:03d}", f"Customer {n}", "Lyon", "1000") for n in range(1, 4)])
    estate.run(run_id="night-1")
    sent = len(estate.upserts())
    warehouse = CountingWarehouse(estate.warehouse.url)

    report = run_sync(
        customers_sync(),
        warehouse=warehouse,
        lake_dir=estate.root / "lake",
        partition=NIGHT,
        run_id="night-2",
        client=estate.client,
        dry_run=False,
    )

    assert (report.counts.planned, report.counts.unchanged, report.counts.adds_up) == (3, 3, True)
    assert len(estate.upserts()) == sent
    # The model's rows, read-only; then the plan's outcomes and the run's record in one transaction.
    assert warehouse.opened == [True, False]
    assert estate.query("SELECT planned, unchanged, created FROM ops.sync_runs WHERE run_id = 'night-2'") == [
        (3, 3, 0)
    ]


# The run a crash interrupts: the same sync, in a process of its own.
CHILD = """
import json, sys
from pathlib import Path
from crm_pipelines.syncs.run import run_sync
from crm_pipelines.syncs.spec import parse_syncs
from crm_pipelines.warehouse.connection import Warehouse
from resources.crm_api import CrmApiResource

args = json.loads(sys.argv[1])
run_sync(
    parse_syncs(text=args["syncs"]).get("customers_to_salesforce"),
    warehouse=Warehouse(args["warehouse"]),
    lake_dir=Path(args["lake"]),
    partition=args["night"],
    run_id="crashed",
    client=CrmApiResource(system="salesforce", **args["connection"]),
    dry_run=False,
)
"""


def test_a_push_killed_mid_batch_then_run_again_leaves_no_duplicate_and_no_missing_record(
    estate: Estate,
) -> None:
    customers = [(f"C-{n:04d}", f"Customer {n}", "Lyon", str(n)) for n in range(450)]
    estate.customers(customers)
    estate.simulator.faults.latency_seconds = 0.5  # three requests of up to 200 records
    args = {
        "syncs": SYNCS,
        "warehouse": estate.warehouse.url,
        "lake": str(estate.root / "lake"),
        "night": NIGHT,
        "connection": estate.connection,
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(args)],
        cwd=REPO,
        env=dict(os.environ),
    )
    try:
        deadline = time.monotonic() + 120
        while not estate.accounts() and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.02)
        landed = len(estate.accounts())
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert 0 < landed < len(customers), "the kill must fall between the first and the last request"
    assert child.returncode == -signal.SIGKILL
    # The request the dead process had in flight is still answered (and logged) by the server.
    time.sleep(2 * estate.simulator.faults.latency_seconds)
    # The state was not committed for the batch in flight: it is planned again.
    assert estate.query("SELECT count(*) FROM ops.sync_state") == [(0,)]
    estate.simulator.faults.latency_seconds = 0.0

    report = estate.run(run_id="rerun")

    accounts = estate.accounts()
    assert sorted(accounts) == [c for c, *_ in customers]  # nothing missing
    assert all(len(records) == 1 for records in accounts.values())  # nothing twice
    assert (report.counts.rejected, report.counts.adds_up) == (0, True)
    assert report.counts.created + report.counts.updated == len(customers)
    assert estate.query("SELECT count(DISTINCT target_id) FROM ops.sync_state") == [(len(customers),)]
    # And a third run has nothing to send.
    sent = len(estate.upserts())
    third = estate.run(run_id="third")
    assert third.counts.unchanged == len(customers)
    assert len(estate.upserts()) == sent


@pytest.mark.parametrize(
    ("change", "names"),
    [
        (("mode: upsert", "mode: merge"), ["syncs.customers_to_salesforce.mode"]),
        (("Name: {from: name}", "Name: {form: name}"), ["fields.salesforce.Name", "form"]),
        (("source: {model: erp_customers", "source: {model: erp_customer"), ["no model 'erp_customer'"]),
        (("match: {external_id: ERP_Customer_Number__c}", "match: crosswalk"), ["match: crosswalk"]),
        (("Name: {from: name}", "Name: {from: 'name; DROP'}"), ["Name", "from"]),
    ],
)
def test_a_bad_declaration_names_the_key(change: tuple[str, str], names: list[str]) -> None:
    text = SYNCS.replace(*change)
    assert text != SYNCS
    with pytest.raises(SyncsError) as caught:
        parse_syncs(text=text, origin="syncs.yaml")
    message = str(caught.value)
    assert message.startswith("syncs.yaml")
    for name in names:
        assert name in message, message


def test_a_field_the_target_does_not_declare_is_refused_before_anything_runs(estate: Estate) -> None:
    sync = parse_syncs(text=SYNCS.replace("BillingCity:", "Billing_Town__c:")).get("customers_to_salesforce")
    estate.customers([("C-001", "Customer 1", "Lyon", "1000")])
    with pytest.raises(ValueError, match=r"Billing_Town__c"):
        run_sync(
            sync,
            warehouse=estate.warehouse,
            lake_dir=estate.root / "lake",
            partition=NIGHT,
            run_id="r",
            client=estate.client,
            dry_run=False,
        )
    assert estate.upserts() == []


def test_the_outbound_reconciliation_adds_up_and_names_a_lost_outcome(estate: Estate) -> None:
    estate.customers(
        [(f"C-{n:03d}", f"Customer {n}", "Lyon", "1000") for n in range(1, 6)]
        + [("C-100", None, "Lyon", "1")]
    )
    estate.run(run_id="night-1")
    with estate.warehouse.transaction() as con:
        [row] = reconcile_syncs(con, run_id="night-1")
        assert (row.planned, row.sent, row.rejected, row.state_rows, row.error_rows) == (6, 5, 1, 5, 1)
        assert row.adds_up
        record_outbound(con, run_id="night-1", partition=NIGHT, rows=[row])
        # An outcome that went missing between the target's answer and the warehouse shows up.
        con.execute("DELETE FROM ops.sync_errors WHERE source_key = 'C-100'")
        con.execute("DELETE FROM ops.sync_state WHERE source_key = 'C-001'")
        [lost] = reconcile_syncs(con, run_id="night-1")
    assert not lost.adds_up
    assert "1 rejected but 0 rows in ops.sync_errors" in lost.detail
    assert "4 state rows written for 5 sent" in lost.detail
    assert estate.query("SELECT sync, planned, sent, rejected, adds_up FROM ops.sync_reconciliation") == [
        ("customers_to_salesforce", 6, 5, 1, True)
    ]


def test_a_golden_sync_that_only_updates_plans_the_linked_records_and_counts_the_rest(tmp_path: Path) -> None:
    # Three golden contacts; two have a Salesforce record. The third cannot be written there: it is
    # counted as without a target, and only the two are planned.
    sync = load_syncs().get("golden_contacts__salesforce")
    target = resolve_target(sync)
    columns = sorted({f.source_column for f in target.fields.values()} | {"golden_id"})
    warehouse = CountingWarehouse(f"duckdb:///{tmp_path}/warehouse.duckdb")
    with warehouse.transaction() as con:
        con.execute(f"CREATE TABLE core.golden_contact ({', '.join(f'{c} VARCHAR' for c in columns)})")
        for n in (1, 2, 3):
            con.execute(
                f"INSERT INTO core.golden_contact ({', '.join(columns)}) VALUES "
                f"({', '.join('?' for _ in columns)})",
                [
                    f"C-{n}" if c == "golden_id" else (f"Person{n}" if c == "last_name" else None)
                    for c in columns
                ],
            )
        con.execute(
            "CREATE TABLE core.xref_identity (golden_id VARCHAR, entity VARCHAR, source VARCHAR, source_id VARCHAR)"
        )
        con.execute(
            "INSERT INTO core.xref_identity VALUES ('C-1', 'contact', 'salesforce', '003A'), "
            "('C-2', 'contact', 'salesforce', '003B'), ('C-3', 'contact', 'hubspot', '77')"
        )

    warehouse.opened.clear()
    report = run_sync(
        sync,
        warehouse=warehouse,
        lake_dir=tmp_path / "lake",
        partition=NIGHT,
        run_id="preview",
        client=None,
        dry_run=True,
    )

    assert report.counts.planned == 2
    assert report.without_target == 1
    assert report.counts.adds_up
    # One write transaction follows merged golden ids and reads the rows; one records plan and run.
    assert warehouse.opened == [False, False]
    assert warehouse_rows(
        warehouse, "SELECT planned, dry_run FROM ops.sync_runs WHERE run_id = 'preview'"
    ) == [(2, True)]


def warehouse_rows(warehouse: Warehouse, sql: str) -> list[tuple[Any, ...]]:
    with warehouse.connect(read_only=True) as con:
        return con.execute(sql).fetchall()
