"""Updates by the record's own id for every object that declares one, through the engine.

The conformance suite (test_systems.py) updates one object per system; here each object of SugarCRM,
Creatio, Infor CRM, Sage CRM and SAP Business One is updated the way the sync will: records carrying
the primary key at its API path, a field to change, and one id the system does not know. The change
is what the next incremental read of that object returns, and nothing is created.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from crm_pipelines.connectors.auth import clear_token_cache
from crm_pipelines.connectors.engine import extract_object, output_schema
from crm_pipelines.connectors.limits import clear_buckets
from crm_pipelines.connectors.spec import SystemSpec, load_system
from crm_pipelines.connectors.writes import update_records
from crm_pipelines_sandbox.simulators.records import count_records, fetch_records, read_info
from crm_pipelines_sandbox.systems import SandboxCrm, Started, build_store, sample_seeds, sandbox_crm

AS_OF = date(2026, 11, 25)


@dataclass(frozen=True)
class Change:
    """One object's update: the field set (declared name), and the id the system does not know."""

    system: str
    object_name: str
    field: str
    unknown_id: object
    unknown_code: str


CHANGES = [
    Change(
        "sugarcrm", "Accounts", "erp_customer_number_c", "5f0c2e1a-0000-4000-8000-00000000dead", "not_found"
    ),
    Change("sugarcrm", "Contacts", "title", "5f0c2e1a-0000-4000-8000-00000000dead", "not_found"),
    Change(
        "sugarcrm",
        "Opportunities",
        "erp_invoice_numbers_c",
        "5f0c2e1a-0000-4000-8000-00000000dead",
        "not_found",
    ),
    Change("creatio", "Account", "UsrErpCustomerNumber", "0b4f7f0e-0000-4000-8000-00000000dead", "HTTP_404"),
    Change("creatio", "Contact", "JobTitle", "0b4f7f0e-0000-4000-8000-00000000dead", "HTTP_404"),
    Change(
        "creatio", "Opportunity", "UsrErpInvoiceNumbers", "0b4f7f0e-0000-4000-8000-00000000dead", "HTTP_404"
    ),
    Change("infor_crm", "accounts", "ErpCustomerNumber", "AQSIMZZZZZZZ", "NotFound"),
    Change("infor_crm", "contacts", "Title", "CQSIMZZZZZZZ", "NotFound"),
    Change("infor_crm", "opportunities", "ErpInvoiceNumbers", "OQSIMZZZZZZZ", "NotFound"),
    Change("sage_crm", "Company", "comp_erpcustomernumber", 987_654, "NotFound"),
    Change("sage_crm", "Person", "pers_title", 987_654, "NotFound"),
    Change("sage_crm", "Opportunity", "oppo_erpinvoicenumbers", 987_654, "NotFound"),
    Change("sap_b1", "BusinessPartners", "U_ErpCustomerNo", "C00000000", "-2028"),
    Change("sap_b1", "ContactEmployees", "E_Mail", 999_999_999, "-2028"),
    Change("sap_b1", "SalesOpportunities", "U_ErpInvoiceNos", 999_999_999, "-2028"),
]


@dataclass
class Running:
    crm: SandboxCrm
    system: SystemSpec
    store: Path
    started: Started


@pytest.fixture
def running(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Running]:
    name = str(request.param)
    clear_token_cache()
    clear_buckets()
    crm = sandbox_crm(name)
    store = tmp_path / f"{name}.sqlite"
    build_store(store, crm, sample_seeds(accounts=12, as_of=AS_OF))
    started = crm.start(store)
    try:
        yield Running(crm, load_system(name=name), store, started)
    finally:
        started.simulator.stop()
        clear_token_cache()
        clear_buckets()


def at_path(record: dict[str, Any], path: str, value: object) -> None:
    """Put a value where the API path says (``BusinessPartners/ContactEmployees.E_Mail`` nests)."""
    head, dot, rest = path.partition(".")
    if not dot:
        record[path] = value
        return
    at_path(record.setdefault(head, {}), rest, value)


def read_since(running: Running, object_name: str, since: datetime) -> dict[str, dict[str, Any]]:
    batches = list(
        extract_object(
            system=running.system,
            object_name=object_name,
            connection=running.crm.connection(running.started),
            since=since,
            until=None,
            include_deleted=True,
        )
    )
    table = pa.Table.from_batches(
        batches, schema=output_schema(system=running.system, object_name=object_name)
    )
    key = running.system.get_object(object_name).primary_key
    return {str(row[key]): row for row in table.to_pylist()}


@pytest.mark.parametrize(
    ("running", "change"),
    [pytest.param(c.system, c, id=f"{c.system}-{c.object_name}") for c in CHANGES],
    indirect=["running"],
)
def test_an_update_by_id_changes_each_object_and_the_next_read_returns_it(
    running: Running, change: Change
) -> None:
    obj = running.system.get_object(change.object_name)
    assert obj.update is not None
    key_path = obj.field(obj.primary_key).source_path
    field_path = obj.field(change.field).source_path
    store_key = read_info(running.store).objects[change.object_name].key
    targets = sorted(fetch_records(running.store, change.object_name), key=lambda r: str(r[store_key]))[:2]
    records: list[dict[str, Any]] = []
    for n, target in enumerate(targets, start=1):
        record: dict[str, Any] = {}
        at_path(record, key_path, target[store_key])
        at_path(record, field_path, f"ERP-{n:03d},ERP-{n + 100:03d}")
        if change.object_name == "ContactEmployees":  # a line of its partner: the partner is named
            at_path(record, obj.field("CardCode").source_path, target["CardCode"])
        records.append(record)
    unknown: dict[str, Any] = {}
    at_path(unknown, key_path, change.unknown_id)
    at_path(unknown, field_path, "ERP-999")
    if change.object_name == "ContactEmployees":
        at_path(unknown, obj.field("CardCode").source_path, targets[0]["CardCode"])
    before = count_records(running.store, change.object_name)
    started = datetime.now(UTC) - timedelta(seconds=1)

    results = update_records(
        system=running.system,
        object_name=change.object_name,
        connection=running.crm.connection(running.started),
        records=[*records, unknown],
    )

    assert [r.status for r in results] == ["updated", "updated", "rejected"], results
    assert [r.external_id for r in results] == [str(t[store_key]) for t in targets] + [str(change.unknown_id)]
    assert results[-1].error_code == change.unknown_code, results[-1]
    assert results[-1].reason
    assert count_records(running.store, change.object_name) == before
    seen = read_since(running, change.object_name, started)
    for n, target in enumerate(targets, start=1):
        assert seen[str(target[store_key])][change.field] == f"ERP-{n:03d},ERP-{n + 100:03d}"


@pytest.mark.parametrize("running", ["sap_b1"], indirect=True)
def test_a_contact_person_without_its_partner_is_rejected_unsent(running: Running) -> None:
    contact = fetch_records(running.store, "ContactEmployees")[0]
    member = "BusinessPartners/ContactEmployees"
    [result] = update_records(
        system=running.system,
        object_name="ContactEmployees",
        connection=running.crm.connection(running.started),
        records=[{member: {"InternalCode": contact["InternalCode"], "E_Mail": "ap@erp.example"}}],
    )
    assert (result.status, result.error_code) == ("rejected", "PARENT_KEY_MISSING")
    assert "CardCode" in (result.reason or "")
    assert (
        fetch_records(running.store, "ContactEmployees", [contact["InternalCode"]])[0]["E_Mail"]
        == contact["E_Mail"]
    )
