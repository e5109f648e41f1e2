"""Engine features Zoho CRM and Pipedrive need, each against the simulator of the API that needs it.

An exclusive lower bound (Zoho's If-Modified-Since), a chain of page tokens that stops at a record
limit (Zoho: 100,000), fields requested by another name than they are read by (Zoho lookups), field
lists that take parameters or are paged, custom fields declared by display name (Pipedrive's
per-company hashes), and a write-side lookup that confirms the external id on what it found.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from crm_pipelines.connectors.auth import ConnectionSettings, clear_token_cache
from crm_pipelines.connectors.engine import (
    ExtractStats,
    SchemaDrift,
    extract_object,
    output_schema,
    resolved_object,
)
from crm_pipelines.connectors.limits import ApiRequestError, clear_buckets
from crm_pipelines.connectors.spec import CursorPaging, ObjectSpec, SystemSpec, load_system
from crm_pipelines.connectors.writes import upsert_records
from crm_pipelines.connectors.writes.per_record import PerRecordUpsert
from crm_pipelines_sandbox.simulators.base import SimulatorServer
from crm_pipelines_sandbox.simulators.pipedrive_schema import (
    ORG_ANNUAL_REVENUE,
    ORG_EXTERNAL_ID,
    ORG_WEBSITE,
    PERSON_COUNTRY,
    PERSON_EXTERNAL_ID,
)
from crm_pipelines_sandbox.simulators.records import fetch_records, insert_records, touch_records
from crm_pipelines_sandbox.systems import build_store, sample_seeds, sandbox_crm

AS_OF = date(2026, 11, 25)


@dataclass
class Sandboxed:
    system: SystemSpec
    store: Path
    sim: Any  # the system's SimulatorServer subclass (page_token_limit, request_log ...)
    connection: ConnectionSettings

    def read(self, object_name: str, *, system: SystemSpec | None = None, **kwargs: Any) -> pa.Table:
        system = system or self.system
        batches = extract_object(system=system, object_name=object_name, connection=self.connection, **kwargs)
        return pa.Table.from_batches(
            list(batches), schema=output_schema(system=system, object_name=object_name)
        )

    def live(self, object_name: str) -> dict[str, dict[str, Any]]:
        return {str(r["id"]): dict(r) for r in fetch_records(self.store, object_name)}


def _start(name: str, tmp_path: Path) -> Iterator[Sandboxed]:
    clear_token_cache()
    clear_buckets()
    crm = sandbox_crm(name)
    store = tmp_path / f"{name}.sqlite"
    build_store(store, crm, sample_seeds(accounts=24, as_of=AS_OF))
    started = crm.start(store)
    sim: SimulatorServer = started.simulator
    try:
        yield Sandboxed(load_system(name=name), store, sim, crm.connection(started))
    finally:
        sim.stop()
        clear_token_cache()
        clear_buckets()


@pytest.fixture
def zoho(tmp_path: Path) -> Iterator[Sandboxed]:
    yield from _start("zoho", tmp_path)


@pytest.fixture
def pipedrive(tmp_path: Path) -> Iterator[Sandboxed]:
    yield from _start("pipedrive", tmp_path)


def _with_object(system: SystemSpec, object_name: str, **update: Any) -> SystemSpec:
    obj: ObjectSpec = system.get_object(object_name)
    return system.model_copy(
        update={"objects": {**system.objects, object_name: obj.model_copy(update=update)}}
    )


# --- an exclusive lower bound ----------------------------------------------------------------------


def test_a_record_stamped_at_the_bound_is_read_through_if_modified_since(zoho: Sandboxed) -> None:
    contacts = zoho.live("Contacts")
    key, record = sorted(contacts.items())[0]
    stamp = datetime.fromisoformat(str(record["Modified_Time"]))
    table = zoho.read(
        "Contacts", since=stamp, until=datetime(2026, 11, 27, tzinfo=UTC), include_deleted=False
    )
    assert key in table.column("id").to_pylist()
    # Declared inclusive, the same header would have lost it: Zoho reads it as "modified after".
    inclusive = _with_object(
        zoho.system,
        "Contacts",
        incremental=zoho.system.get_object("Contacts").incremental.model_copy(
            update={"lower_bound": "inclusive"}
        ),
    )
    again = zoho.read(
        "Contacts",
        system=inclusive,
        since=stamp,
        until=datetime(2026, 11, 27, tzinfo=UTC),
        include_deleted=False,
    )
    assert key not in again.column("id").to_pylist()


# --- a chain of cursors with a record limit --------------------------------------------------------


def _chain_limited(system: SystemSpec, limit: int | None) -> SystemSpec:
    assert isinstance(system.paging, CursorPaging)
    return system.model_copy(update={"paging": system.paging.model_copy(update={"chain_limit": limit})})


def test_a_chain_at_its_limit_goes_on_from_the_last_cursor_read(zoho: Sandboxed) -> None:
    zoho.sim.page_token_limit = 10  # Zoho: 100,000 records per chain of page tokens
    stats = ExtractStats()
    table = zoho.read(
        "Contacts", system=_chain_limited(zoho.system, 10), page_size=3, include_deleted=False, stats=stats
    )
    keys = table.column("id").to_pylist()
    assert len(keys) == len(set(keys))
    assert set(keys) == set(zoho.live("Contacts"))
    assert stats.chain_restarts >= 4  # 46 live contacts, at most 9 per chain
    assert not [r for r in zoho.sim.request_log if r.status == 400]
    # Without the restart the simulator refuses the chain past its limit, as Zoho does.
    with pytest.raises(ApiRequestError, match="PAGINATION_LIMIT_EXCEEDED"):
        zoho.read("Contacts", system=_chain_limited(zoho.system, None), page_size=3, include_deleted=False)


def test_a_chain_that_cannot_move_past_one_cursor_value_fails_clearly(zoho: Sandboxed) -> None:
    zoho.sim.page_token_limit = 10
    touch_records(
        zoho.store, "Contacts", sorted(zoho.live("Contacts")), datetime(2026, 11, 26, 8, tzinfo=UTC)
    )
    with pytest.raises(ApiRequestError, match="records in a row share Modified_Time 2026-11-26T08:00:00"):
        zoho.read("Contacts", system=_chain_limited(zoho.system, 10), page_size=3, include_deleted=False)


# --- fields requested by another name, field lists with parameters ---------------------------------


def test_a_lookup_is_requested_by_its_api_name_and_read_from_its_parts(zoho: Sandboxed) -> None:
    drift = SchemaDrift("zoho", "Contacts")
    table = zoho.read("Contacts", include_deleted=False, drift=drift)
    accounts = zoho.live("Accounts")
    contacts = zoho.live("Contacts")
    for row in table.to_pylist():
        account = contacts[row["id"]]["Account_Name"]
        assert row["account_id"] == (None if account is None else str(account))
        if account is not None and str(account) in accounts:
            assert row["account_name"] == accounts[str(account)]["Account_Name"]
    # The field list came from /settings/fields?module=Contacts, and the lookup counts as declared.
    assert "Account_Name" in drift.source_fields, drift.describe()
    assert not drift.has_drift, drift.describe()


# --- custom fields declared by their display name --------------------------------------------------


def test_custom_fields_are_found_by_display_name_in_a_paged_field_list(pipedrive: Sandboxed) -> None:
    system = pipedrive.system
    describe = system.get_object("organizations").describe
    assert describe is not None
    small_pages = _with_object(
        system, "organizations", describe=describe.model_copy(update={"params": {"limit": "4"}})
    )
    drift = SchemaDrift("pipedrive", "organizations")
    table = pipedrive.read("organizations", system=small_pages, include_deleted=False, drift=drift)
    stored = pipedrive.live("organizations")
    assert table.num_rows == len(stored)
    for row in table.to_pylist():
        record = stored[row["id"]]
        assert row["website"] == record[ORG_WEBSITE]
        assert float(row["annual_revenue"]) == record[ORG_ANNUAL_REVENUE]
    field_pages = [r for r in pipedrive.sim.request_log if r.path == "/api/v2/organizationFields"]
    assert len(field_pages) > 1  # 14 fields, 4 a page: the list was followed to its end
    assert not drift.has_drift, drift.describe()
    # A writer asks for the concrete path of the external id in this company.
    obj = resolved_object(system=system, object_name="organizations", connection=pipedrive.connection)
    assert obj.field("external_id").source_path == f"custom_fields.{ORG_EXTERNAL_ID}"


def test_a_label_the_company_does_not_have_fails_naming_it(pipedrive: Sandboxed) -> None:
    obj = pipedrive.system.get_object("persons")
    fields = [
        f.model_copy(update={"label": "Kundennummer"}) if f.name == "external_id" else f for f in obj.fields
    ]
    renamed = _with_object(pipedrive.system, "persons", fields=fields)
    with pytest.raises(
        ApiRequestError, match="has no field named 'Kundennummer' \\(declared as external_id\\)"
    ):
        pipedrive.read("persons", system=renamed, include_deleted=False)


# --- a lookup that confirms the external id --------------------------------------------------------


def test_a_lookup_match_on_another_custom_field_is_not_taken_for_the_record(pipedrive: Sandboxed) -> None:
    # A person whose Country happens to hold the external id of the record about to be written:
    # Pipedrive's exact search over custom_fields finds it.
    decoy = {
        "id": 999_001,
        "name": "Decoy Person",
        "first_name": "Decoy",
        "last_name": "Person",
        "emails": [],
        "phones": [],
        PERSON_COUNTRY: "ERP-C-424242",
    }
    insert_records(pipedrive.store, "persons", [decoy], at=datetime(2026, 11, 20, tzinfo=UTC))
    record = {"name": "Real Person", "custom_fields": {PERSON_EXTERNAL_ID: "ERP-C-424242"}}
    field = f"custom_fields.{PERSON_EXTERNAL_ID}"

    (result,) = upsert_records(
        system=pipedrive.system,
        object_name="persons",
        connection=pipedrive.connection,
        external_id_field=field,
        records=[record],
    )
    assert result.status == "created"
    assert result.record_id != "999001"
    assert pipedrive.live("persons")["999001"]["name"] == "Decoy Person"
    (again,) = upsert_records(
        system=pipedrive.system,
        object_name="persons",
        connection=pipedrive.connection,
        external_id_field=field,
        records=[record],
    )
    assert again.status == "updated"
    assert again.record_id == result.record_id

    # Without the confirmation the first match wins: the decoy would have been overwritten.
    upsert = pipedrive.system.get_object("persons").upsert
    assert isinstance(upsert, PerRecordUpsert)
    assert upsert.lookup is not None
    unconfirmed = _with_object(
        pipedrive.system,
        "persons",
        upsert=upsert.model_copy(update={"lookup": upsert.lookup.model_copy(update={"confirm": None})}),
    )
    (wrong,) = upsert_records(
        system=unconfirmed,
        object_name="persons",
        connection=pipedrive.connection,
        external_id_field=field,
        records=[{**record, "name": "Overwritten"}],
    )
    assert wrong.status == "updated"
    assert wrong.record_id == "999001"


# --- Zoho answers 400 with one result per record when every record failed --------------------------


def test_a_batch_in_which_every_record_fails_reports_each_without_splitting(zoho: Sandboxed) -> None:
    records = [{"External_Id": f"ERP-C-91000{i}", "First_Name": "Nameless"} for i in range(3)]
    zoho.sim.request_log.clear()
    results = upsert_records(
        system=zoho.system,
        object_name="Contacts",
        connection=zoho.connection,
        external_id_field="External_Id",
        records=records,
    )
    assert [(r.status, r.error_code) for r in results] == [("rejected", "MANDATORY_NOT_FOUND")] * 3
    upserts = [r for r in zoho.sim.request_log if r.path.endswith("/upsert")]
    assert [r.status for r in upserts] == [400]  # one request: the per-record answers were read
