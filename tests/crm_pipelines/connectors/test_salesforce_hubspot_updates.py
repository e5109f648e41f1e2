"""Updates by record id in Salesforce and HubSpot, through the engine, against their simulators.

What a user of the two-way sync checks: the records changed in the CRM, custom fields included; the
change is in the next incremental read; an id the CRM does not know comes back rejected with the
CRM's own code, and nothing is created. (The other systems run the same case in test_systems.py.)
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from crm_pipelines.connectors.auth import ConnectionSettings, clear_token_cache
from crm_pipelines.connectors.engine import extract_object, output_schema
from crm_pipelines.connectors.limits import clear_buckets
from crm_pipelines.connectors.spec import SystemSpec, load_system
from crm_pipelines.connectors.writes import UpsertResult, update_records
from crm_pipelines_sandbox.data import SandboxLayout, generate_sandbox
from crm_pipelines_sandbox.simulators import HubSpotSimulator, SalesforceSimulator
from crm_pipelines_sandbox.simulators.store import count_records, fetch_records

AS_OF = date(2026, 11, 25)
SF_CLIENT_ID = "3MVG9updates.client"
SF_SECRET = "sf-updates-secret-31"
HS_TOKEN = "pat-eu1-updates-token-47"
SALESFORCE = load_system(name="salesforce")
HUBSPOT = load_system(name="hubspot")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> SandboxLayout:
    return generate_sandbox(tmp_path_factory.mktemp("updates"), contacts=300, seed=17, as_of=AS_OF)


@dataclass
class Crm:
    """A running simulator over this test's own copy of the store."""

    system: SystemSpec
    store: Path
    connection: ConnectionSettings
    sim: SalesforceSimulator | HubSpotSimulator

    def update(self, object_name: str, records: list[dict[str, Any]]) -> list[UpsertResult]:
        return update_records(
            system=self.system, object_name=object_name, connection=self.connection, records=records
        )

    def read_since(self, object_name: str, since: datetime) -> dict[str, dict[str, Any]]:
        """The next incremental read of the object from ``since``: rows by primary key."""
        schema = output_schema(system=self.system, object_name=object_name)
        batches = extract_object(
            system=self.system, object_name=object_name, connection=self.connection, since=since
        )
        key = self.system.get_object(object_name).primary_key
        return {str(row[key]): row for row in pa.Table.from_batches(list(batches), schema).to_pylist()}


@pytest.fixture(autouse=True)
def _fresh_state() -> Iterator[None]:
    clear_token_cache()
    clear_buckets()
    yield
    clear_token_cache()
    clear_buckets()


@pytest.fixture
def salesforce(sandbox: SandboxLayout, tmp_path: Path) -> Iterator[Crm]:
    store = tmp_path / "salesforce.sqlite"
    shutil.copy(sandbox.salesforce_store, store)
    with SalesforceSimulator(store, client_id=SF_CLIENT_ID, client_secret=SF_SECRET) as sim:
        connection = ConnectionSettings(
            base_url=sim.base_url, client_id=SF_CLIENT_ID, client_secret=SF_SECRET
        )
        yield Crm(SALESFORCE, store, connection, sim)


@pytest.fixture
def hubspot(sandbox: SandboxLayout, tmp_path: Path) -> Iterator[Crm]:
    store = tmp_path / "hubspot.sqlite"
    shutil.copy(sandbox.hubspot_store, store)
    with HubSpotSimulator(store, access_token=HS_TOKEN) as sim:
        yield Crm(HUBSPOT, store, ConnectionSettings(base_url=sim.base_url, access_token=HS_TOKEN), sim)


def _live(store: Path, table: str, n: int) -> list[dict[str, object]]:
    """The first ``n`` records a user sees (not deleted / archived)."""
    flag = "IsDeleted" if table[0].isupper() else "archived"
    return [r for r in fetch_records(store, table) if not r[flag]][:n]


def _just_before() -> datetime:
    return datetime.now(UTC) - timedelta(seconds=1)


# --- Salesforce --------------------------------------------------------------------------------

SF_CHANGES: dict[str, dict[str, Any]] = {
    # The ERP facts on Account, a standard field beside them.
    "Account": {
        "ERP_Customer_Number__c": "C-100{n}",
        "Open_Balance__c": 1250.5,
        "Overdue_Amount__c": 310.25,
        "Last_Payment_Date__c": "2026-11-20",
        "Phone": "+49 40 555 010{n}",
    },
    "Contact": {"Title": "Head of Procurement {n}"},
    "Opportunity": {
        "ERP_Order_Number__c": "SO-2026-00{n}",
        "ERP_Invoice_Numbers__c": "INV-2026-0{n}1,INV-2026-0{n}2",
        "Name": "Renewal 2027 ({n})",
    },
}
SF_UNKNOWN = {
    "Account": "001Qy00000ZZZZZAAA",
    "Contact": "003Qy00000ZZZZZAAA",
    "Opportunity": "006Qy00000ZZZZZAAA",
}
SF_READ_BACK = {"Open_Balance__c": "1250.5", "Overdue_Amount__c": "310.25"}  # numbers land as their text


def _filled(template: dict[str, Any], n: int) -> dict[str, Any]:
    return {k: v.format(n=n) if isinstance(v, str) else v for k, v in template.items()}


@pytest.mark.parametrize("sobject", ["Account", "Contact", "Opportunity"])
def test_salesforce_update_by_id_shows_in_the_next_read(salesforce: Crm, sobject: str) -> None:
    targets = _live(salesforce.store, sobject, 2)
    changed = [{"Id": t["Id"], **_filled(SF_CHANGES[sobject], n)} for n, t in enumerate(targets, 1)]
    before = count_records(salesforce.store, sobject)
    started = _just_before()

    unknown = {**changed[0], "Id": SF_UNKNOWN[sobject]}
    results = salesforce.update(sobject, [*changed, unknown])

    assert [r.status for r in results] == ["updated", "updated", "rejected"], results
    assert [r.record_id for r in results[:2]] == [t["Id"] for t in targets]
    assert results[2].error_code == "INVALID_CROSS_REFERENCE_KEY"
    assert results[2].reason
    assert count_records(salesforce.store, sobject) == before  # an update never creates
    seen = salesforce.read_since(sobject, started)
    declared = {f.name for f in salesforce.system.get_object(sobject).fields}
    for record in changed:
        row = seen[str(record["Id"])]
        for name, value in record.items():
            if name in declared:
                assert row[name] == SF_READ_BACK.get(name, str(value)), name
    # The audit fields moved with the write, as every sObject's do.
    stored = {
        str(r["Id"]): r for r in fetch_records(salesforce.store, sobject, [str(t["Id"]) for t in targets])
    }
    for target in targets:
        row = stored[str(target["Id"])]
        assert row["LastModifiedDate"] == row["SystemModstamp"] != target["SystemModstamp"]
        assert row["LastModifiedById"] == salesforce.sim.integration_user  # type: ignore[union-attr]


def test_salesforce_refusals_come_per_record_and_a_lock_is_retried(salesforce: Crm) -> None:
    accounts = _live(salesforce.store, "Account", 3)
    deleted = next(r for r in fetch_records(salesforce.store, "Account") if r["IsDeleted"])
    locked = str(accounts[2]["Id"])
    salesforce.sim.record_faults[locked] = ["UNABLE_TO_LOCK_ROW"]
    results = update_records(
        system=_fast(salesforce.system),
        object_name="Account",
        connection=salesforce.connection,
        records=[
            {"Id": accounts[0]["Id"], "ERP_Invoice_Numbers__c": "x"},  # an Opportunity field
            {"Id": accounts[1]["Id"], "ERP_Customer_Number__c": "C" * 256},
            {"Id": locked, "ERP_Customer_Number__c": "C-2001"},
            {"Id": deleted["Id"], "ERP_Customer_Number__c": "C-2002"},
            {"Id": "003Qy00000ZZZZZAAA", "ERP_Customer_Number__c": "C-2003"},  # a Contact's id
        ],
    )
    assert [(r.status, r.error_code) for r in results] == [
        ("rejected", "INVALID_FIELD"),
        ("rejected", "STRING_TOO_LONG"),
        ("updated", None),
        ("rejected", "ENTITY_IS_DELETED"),
        ("rejected", "MALFORMED_ID"),
    ]
    assert results[2].attempts == 2
    stored = fetch_records(salesforce.store, "Account", [locked, str(accounts[1]["Id"])])
    assert {str(r["Id"]): r["ERP_Customer_Number__c"] for r in stored} == {
        locked: "C-2001",
        str(accounts[1]["Id"]): None,
    }


def test_salesforce_updates_go_200_records_a_request(salesforce: Crm) -> None:
    contacts = [str(c["Id"]) for c in _live(salesforce.store, "Contact", 150)]
    unknown = [f"003Qy0000{n:06d}AAA" for n in range(60)]
    results = salesforce.update("Contact", [{"Id": i, "Title": "Buyer"} for i in [*contacts, *unknown]])
    assert [r.status for r in results] == ["updated"] * len(contacts) + ["rejected"] * len(unknown)
    batches = [r for r in salesforce.sim.request_log if r.method == "PATCH"]
    assert [r.path for r in batches] == ["/services/data/v62.0/composite/sobjects"] * 2


# --- HubSpot -------------------------------------------------------------------------------------

HS_CHANGES: dict[str, dict[str, str]] = {
    "companies": {"erp_customer_number": "C-300{n}", "phone": "+44 20 7946 03{n}0"},
    "contacts": {"jobtitle": "Controller {n}"},
    "deals": {
        "erp_order_number": "SO-2026-10{n}",
        "erp_invoice_numbers": "INV-2026-1{n}1,INV-2026-1{n}2",
        "dealname": "Expansion ({n})",
    },
}


@pytest.mark.parametrize("object_type", ["companies", "contacts", "deals"])
def test_hubspot_update_by_id_shows_in_the_next_read(hubspot: Crm, object_type: str) -> None:
    targets = _live(hubspot.store, object_type, 2)
    changed = [{"id": str(t["id"]), **_filled(HS_CHANGES[object_type], n)} for n, t in enumerate(targets, 1)]
    before = count_records(hubspot.store, object_type)
    started = _just_before()

    results = hubspot.update(object_type, [*changed, {**changed[0], "id": "999999999"}])

    assert [r.status for r in results] == ["updated", "updated", "rejected"], results
    assert [r.record_id for r in results[:2]] == [str(t["id"]) for t in targets]
    assert results[2].error_code == "OBJECT_NOT_FOUND"
    assert results[2].reason
    assert count_records(hubspot.store, object_type) == before
    seen = hubspot.read_since(object_type, started)
    declared = {f.name for f in hubspot.system.get_object(object_type).fields}
    for record in changed:
        row = seen[record["id"]]
        assert {k: row[k] for k in record if k in declared} == {
            k: v for k, v in record.items() if k in declared
        }
    # Every object's hs_lastmodifieddate moves with the write (contacts' lastmodifieddate too).
    stored = {
        str(r["id"]): r for r in fetch_records(hubspot.store, object_type, [str(t["id"]) for t in targets])
    }
    for target in targets:
        row = stored[str(target["id"])]
        assert row["hs_lastmodifieddate"] == row["updatedAt"] != target["updatedAt"]


def test_hubspot_refuses_read_only_and_unknown_properties_per_record(hubspot: Crm) -> None:
    companies = _live(hubspot.store, "companies", 3)
    results = hubspot.update(
        "companies",
        [
            {"id": str(companies[0]["id"]), "hs_lastmodifieddate": "2026-01-01T00:00:00Z"},
            {"id": str(companies[1]["id"]), "no_such_property": "x"},
            {"id": str(companies[2]["id"]), "erp_customer_number": "C-4001"},
        ],
    )
    assert [(r.status, r.error_code) for r in results] == [
        ("rejected", "VALIDATION_ERROR"),
        ("rejected", "VALIDATION_ERROR"),
        ("updated", None),
    ]
    assert "read only" in (results[0].reason or "")


def _fast(system: SystemSpec) -> SystemSpec:
    retries = system.retries.model_copy(update={"backoff_initial_seconds": 0.01, "backoff_max_seconds": 0.05})
    return system.model_copy(update={"retries": retries})
