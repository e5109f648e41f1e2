"""Pipedrive leads (API v1) and Creatio Lead through the engine, read the way the nightly sync reads them:
a full read equals what the CRM lists, the next read picks up a change made after the first one, and a
lead gone from the source (deleted, or a Pipedrive lead converted into a deal) shows in the keys read."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from crm_pipelines.connectors.drift import SchemaDrift
from crm_pipelines.mapping.spec import load_mappings
from crm_pipelines.sources import load_sources
from crm_pipelines_sandbox.running import RunningCrm, running_crm
from crm_pipelines_sandbox.simulators.creatio_schema import QUALIFY_STATUS_IDS
from crm_pipelines_sandbox.simulators.records import delete_records, touch_records
from crm_pipelines_sandbox.systems import sandbox_crm

AS_OF = date(2026, 11, 25)
EDIT = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


@dataclass(frozen=True)
class LeadSystem:
    system: str
    edit: dict[str, object]  # a store edit a user makes: field -> value
    edited_field: str  # the declared field that shows it
    edited_value: str  # ... as the extract renders it


SYSTEMS = [
    LeadSystem("pipedrive", {"was_seen": True, "title": "Nordwind lead"}, "title", "Nordwind lead"),
    LeadSystem(
        "creatio",
        {"QualifyStatusId": QUALIFY_STATUS_IDS["Handoff to sales"]},
        "qualify_status",
        "Handoff to sales",
    ),
]


@pytest.fixture(params=SYSTEMS, ids=lambda s: s.system)
def running(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[RunningCrm, LeadSystem]]:
    lead_system: LeadSystem = request.param
    with running_crm(lead_system.system, "lead", tmp_path, as_of=AS_OF) as run:
        yield run, lead_system


def test_leads_are_a_dataset_the_lead_mapping_reads() -> None:
    for system in ("pipedrive", "creatio"):
        assert load_sources()[system].datasets["leads"].object == sandbox_crm(system).kinds["lead"]
    mapped = {m.source: m for m in load_mappings().entities["lead"]}
    assert mapped["pipedrive"].inputs["leads"] == "pipedrive/leads"
    assert mapped["creatio"].inputs["leads"] == "creatio/leads"


def test_a_full_read_lists_every_live_lead_once_without_drift(running: tuple[RunningCrm, LeadSystem]) -> None:
    run, _ = running
    drift = SchemaDrift(run.system.name, run.object_name)
    table, stats = run.extract(drift=drift, page_size=5, include_deleted=False)
    assert not drift.has_drift, drift.describe()
    keys = [str(k) for k in table.column(run.key).to_pylist()]
    assert len(keys) == len(set(keys))
    assert set(keys) == set(run.live_keys()) != set()
    assert stats.max_cursor is not None
    assert stats.requests > 1  # paged


def test_a_change_after_the_first_read_is_picked_up_and_a_deleted_lead_is_seen(
    running: tuple[RunningCrm, LeadSystem],
) -> None:
    run, lead = running
    full, stats = run.extract(include_deleted=False)
    edited, gone = run.live_keys()[:2]
    touch_records(run.store, run.object_name, [edited], EDIT, lead.edit)
    delete_records(run.store, run.object_name, [gone], EDIT + timedelta(minutes=5))

    assert stats.max_cursor is not None
    lookback = run.system.get_object(run.object_name).incremental.lookback_seconds
    changes, _ = run.extract(
        since=stats.max_cursor - timedelta(seconds=lookback), until=None, include_deleted=True
    )
    rows = {str(r[run.key]): r for r in changes.to_pylist()}
    assert rows[edited][lead.edited_field] == lead.edited_value
    assert gone not in rows
    assert len(rows) < full.num_rows  # the changes only, not the whole object again
    # No deletion feed in either system: the keys read says which lead is gone.
    keys = run.keys()
    assert keys == set(run.live_keys())
    assert gone not in keys
