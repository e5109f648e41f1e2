"""Leads from Zoho CRM and SugarCRM through the engine, read the way the nightly sync reads them: a full
read equal to what the CRM holds (converted leads included, no schema drift), then only the changes and
deletes since - a conversion arriving as a change of the lead, a deleted lead as a soft delete."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from crm_pipelines.connectors.collect import DELETED
from crm_pipelines.connectors.drift import SchemaDrift
from crm_pipelines_sandbox.running import RunningCrm, running_crm
from crm_pipelines_sandbox.simulators.records import delete_records, fetch_records, read_info, touch_records

AS_OF = date(2026, 11, 25)
EDIT = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


@dataclass(frozen=True)
class LeadSystem:
    """How one system keeps a lead: a status change a rep makes, and what a conversion writes."""

    system: str
    edit: dict[str, object]  # a store edit: field -> value
    edited_field: str
    edited_value: str
    converted_field: str  # the declared field telling a converted lead
    contact_field: str  # ... and the one naming the contact it became

    def conversion(self, contact_id: str) -> dict[str, object]:
        if self.system == "zoho":
            detail = {
                "contact": contact_id,
                "account": None,
                "deal": None,
                "converted_time": "2026-11-26T08:10:00+00:00",
            }
            return {"converted_flag": 1, "converted_detail": json.dumps(detail)}
        return {"status": "Converted", "converted": 1, "contact_id": contact_id}


SYSTEMS = [
    LeadSystem(
        "zoho",
        edit={"Lead_Status": "Contact in Future"},
        edited_field="Lead_Status",
        edited_value="Contact in Future",
        converted_field="converted",
        contact_field="converted_contact_id",
    ),
    LeadSystem(
        "sugarcrm",
        edit={"status": "Recycled"},
        edited_field="status",
        edited_value="Recycled",
        converted_field="converted",
        contact_field="contact_id",
    ),
]


@pytest.fixture(params=SYSTEMS, ids=lambda s: s.system)
def running(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[RunningCrm, LeadSystem]]:
    lead_system: LeadSystem = request.param
    with running_crm(lead_system.system, "lead", tmp_path, as_of=AS_OF) as run:
        yield run, lead_system


def contact_keys(running: RunningCrm) -> set[str]:
    contacts = running.crm.kinds["contact"]
    key = read_info(running.store).objects[contacts].key
    return {str(r[key]) for r in fetch_records(running.store, contacts, include_deleted=True)}


def test_leads_are_read_in_full_converted_ones_included_without_drift(
    running: tuple[RunningCrm, LeadSystem],
) -> None:
    run, lead = running
    drift = SchemaDrift(run.system.name, run.object_name)
    table, stats = run.extract(drift=drift, page_size=7, include_deleted=False)
    keys = [str(k) for k in table.column(run.key).to_pylist()]
    assert len(keys) == len(set(keys))
    assert set(keys) == set(run.live_keys()) != set()
    assert stats.max_cursor is not None
    assert not drift.has_drift, drift.describe()
    rows = table.to_pylist()
    converted = [r for r in rows if r[lead.converted_field] == "true"]
    assert converted
    assert len(converted) < len(rows)
    # A converted lead names the contact it became, a contact of the same store.
    assert {r[lead.contact_field] for r in converted} <= contact_keys(run)
    assert not any(r[lead.contact_field] for r in rows if r[lead.converted_field] == "false")


def test_a_change_a_conversion_and_a_delete_after_the_first_read_are_picked_up(
    running: tuple[RunningCrm, LeadSystem],
) -> None:
    run, lead = running
    table, stats = run.extract(include_deleted=False)
    open_leads = [str(r[run.key]) for r in table.to_pylist() if r[lead.converted_field] == "false"]
    edited, converted, gone = open_leads[:3]
    contact = sorted(contact_keys(run))[0]
    touch_records(run.store, run.object_name, [edited], EDIT, lead.edit)
    touch_records(
        run.store, run.object_name, [converted], EDIT + timedelta(minutes=10), lead.conversion(contact)
    )
    delete_records(run.store, run.object_name, [gone], EDIT + timedelta(minutes=20))

    rows = {str(r[run.key]): r for r in run.changes_after(stats).to_pylist()}
    assert rows[edited][lead.edited_field] == lead.edited_value
    assert rows[edited][DELETED] is False
    # Converted: still a lead (Zoho no longer lists it by default, but the read asks for both).
    assert rows[converted][lead.converted_field] == "true"
    assert rows[converted][lead.contact_field] == contact
    assert rows[converted][DELETED] is False
    assert rows[gone][DELETED] is True
    assert len(rows) < len(run.live_keys())  # the changes only, not the whole object again
