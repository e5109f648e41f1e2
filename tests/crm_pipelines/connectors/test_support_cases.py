"""Support cases through the engine: SugarCRM Cases, Dynamics 365 incidents and Salesforce Cases, read the
way the nightly sync reads them (a full read, then the changes and deletes since), and written back by id."""

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
from crm_pipelines.connectors.collect import DELETED, ExtractStats, output_schema
from crm_pipelines.connectors.engine import extract_object
from crm_pipelines.connectors.limits import clear_buckets
from crm_pipelines.connectors.spec import load_system
from crm_pipelines.connectors.writes import update_records
from crm_pipelines_sandbox.data import SandboxLayout, generate_sandbox
from crm_pipelines_sandbox.running import RunningCrm, running_crm
from crm_pipelines_sandbox.simulators import SalesforceSimulator
from crm_pipelines_sandbox.simulators import store as sf_store
from crm_pipelines_sandbox.simulators.records import delete_records, fetch_records, read_info, touch_records

AS_OF = date(2026, 11, 25)
EDIT = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


@dataclass(frozen=True)
class CaseSystem:
    """How one system keeps a case: its object, a change a user makes, and a field write-back sets."""

    system: str
    edit: dict[str, object]  # a store edit: field -> value
    edited_field: str  # the declared field that shows the edit
    edited_value: str  # ... as the extract renders it
    write: dict[str, object]  # an update by id (besides the key)
    written_field: str
    written_value: str


SYSTEMS = [
    CaseSystem(
        "sugarcrm",
        edit={"status": "Pending Input", "state": "Open"},
        edited_field="status",
        edited_value="Pending Input",
        write={"status": "Closed", "resolution": "Fixed in 4.2", "zendesk_ticket_id_c": "4711"},
        written_field="zendesk_ticket_id_c",
        written_value="4711",
    ),
    CaseSystem(
        "dynamics",
        edit={"statuscode": 2},
        edited_field="statuscode",
        edited_value="2",
        write={"title": "Printer offline again", "prioritycode": 1},
        written_field="title",
        written_value="Printer offline again",
    ),
]


@pytest.fixture(params=SYSTEMS, ids=lambda s: s.system)
def running(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[RunningCrm, CaseSystem]]:
    case_system: CaseSystem = request.param
    with running_crm(case_system.system, "case", tmp_path, as_of=AS_OF) as run:
        yield run, case_system


def test_cases_are_declared_read_in_full_and_link_their_account(
    running: tuple[RunningCrm, CaseSystem],
) -> None:
    run, _ = running
    table, stats = run.extract(page_size=5, include_deleted=False)
    keys = [str(k) for k in table.column(run.key).to_pylist()]
    assert len(keys) == len(set(keys))
    assert set(keys) == set(run.live_keys()) != set()
    assert stats.max_cursor is not None
    accounts = set(
        str(r[read_info(run.store).objects[run.crm.kinds["account"]].key])
        for r in fetch_records(run.store, run.crm.kinds["account"], include_deleted=True)
    )
    linked = [row["account_id"] for row in table.to_pylist()]
    assert all(account in accounts for account in linked)


def test_a_change_after_the_first_read_is_picked_up_and_a_deleted_case_arrives_deleted(
    running: tuple[RunningCrm, CaseSystem],
) -> None:
    run, case = running
    _, stats = run.extract(include_deleted=False)
    edited, gone = run.live_keys()[:2]
    touch_records(run.store, run.object_name, [edited], EDIT, case.edit)
    delete_records(run.store, run.object_name, [gone], EDIT + timedelta(minutes=5))

    rows = {str(r[run.key]): r for r in run.changes_after(stats).to_pylist()}
    assert rows[edited][case.edited_field] == case.edited_value
    assert rows[edited][DELETED] is False
    assert rows[gone][DELETED] is True
    assert len(rows) < len(run.live_keys())  # the changes only, not the whole object again


def test_an_update_by_id_writes_the_case_and_an_unknown_id_creates_nothing(
    running: tuple[RunningCrm, CaseSystem],
) -> None:
    run, case = running
    _, stats = run.extract(include_deleted=False)
    target = run.live_keys()[0]
    before = len(fetch_records(run.store, run.object_name, include_deleted=True))
    unknown_id = "5f0c2e1a-0000-4000-8000-00000000dead"
    results = update_records(
        system=run.system,
        object_name=run.object_name,
        connection=run.crm.connection(run.started),
        records=[{run.key: target, **case.write}, {run.key: unknown_id, **case.write}],
    )
    assert [r.status for r in results] == ["updated", "rejected"], results
    assert len(fetch_records(run.store, run.object_name, include_deleted=True)) == before
    rows = {str(r[run.key]): r for r in run.changes_after(stats).to_pylist()}
    assert rows[target][case.written_field] == case.written_value


# --- Salesforce: its own generator and simulator (not a SandboxCrm) --------------------------------


@pytest.fixture(scope="module")
def salesforce_sandbox(tmp_path_factory: pytest.TempPathFactory) -> SandboxLayout:
    return generate_sandbox(tmp_path_factory.mktemp("cases"), contacts=300, seed=23, as_of=AS_OF)


@pytest.fixture
def salesforce(
    salesforce_sandbox: SandboxLayout, tmp_path: Path
) -> Iterator[tuple[Path, ConnectionSettings]]:
    clear_token_cache()
    clear_buckets()
    store = tmp_path / "salesforce.sqlite"
    shutil.copy(salesforce_sandbox.salesforce_store, store)
    with SalesforceSimulator(store, client_id="3MVG9cases.client", client_secret="cases-secret") as sim:
        yield (
            store,
            ConnectionSettings(
                base_url=sim.base_url, client_id="3MVG9cases.client", client_secret="cases-secret"
            ),
        )
    clear_token_cache()
    clear_buckets()


def read_cases(
    connection: ConnectionSettings, **kwargs: Any
) -> tuple[dict[str, dict[str, Any]], ExtractStats]:
    system = load_system(name="salesforce")
    stats = ExtractStats()
    batches = list(
        extract_object(system=system, object_name="Case", connection=connection, stats=stats, **kwargs)
    )
    table = pa.Table.from_batches(batches, schema=output_schema(system=system, object_name="Case"))
    return {str(r["Id"]): r for r in table.to_pylist()}, stats


def test_salesforce_cases_read_in_full_then_changes_and_deletes(
    salesforce: tuple[Path, ConnectionSettings],
) -> None:
    store, connection = salesforce
    full, stats = read_cases(connection, include_deleted=False)
    live = sorted(str(r["Id"]) for r in sf_store.fetch_records(store, "Case") if not r["IsDeleted"])
    assert sorted(full) == live != []
    assert stats.max_cursor is not None
    edited, gone = live[:2]
    sf_store.touch_records(store, "Case", [edited], EDIT, {"Status": "Escalated"})
    sf_store.delete_records(store, "Case", [gone], EDIT + timedelta(minutes=5))
    changes, _ = read_cases(connection, since=stats.max_cursor, until=None, include_deleted=True)
    assert changes[edited]["Status"] == "Escalated"
    assert changes[edited][DELETED] is False
    assert changes[gone][DELETED] is True
    assert len(changes) < len(full)


def test_salesforce_case_update_by_id_closes_it(salesforce: tuple[Path, ConnectionSettings]) -> None:
    store, connection = salesforce
    _, stats = read_cases(connection, include_deleted=False)
    case = next(r for r in sf_store.fetch_records(store, "Case") if not r["IsClosed"] and not r["IsDeleted"])
    results = update_records(
        system=load_system(name="salesforce"),
        object_name="Case",
        connection=connection,
        records=[{"Id": case["Id"], "Status": "Closed"}, {"Id": "500Qy0000000000AAA", "Status": "Closed"}],
    )
    assert [r.status for r in results] == ["updated", "rejected"], results
    changes, _ = read_cases(connection, since=stats.max_cursor, until=None, include_deleted=True)
    assert (changes[str(case["Id"])]["Status"], changes[str(case["Id"])]["IsClosed"]) == ("Closed", "true")
    assert changes[str(case["Id"])]["ClosedDate"]
