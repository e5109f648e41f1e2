"""One small sandbox night shared by the privacy tests (the masked views, then an erasure).

The warehouse is a PostgreSQL server (from this machine's ``initdb``/``pg_ctl``): the tests read the
working copy the models run in, and the erasure tests also search every table analysts can reach on the
server. The rest of the suite covers the DuckDB warehouse.
"""

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from crm_pipelines import settings
from crm_pipelines.definitions import defs
from crm_pipelines_sandbox.postgres_server import PostgresServer, running_postgres
from crm_pipelines_sandbox.run import Sandbox

DAY = dt.date(2026, 11, 25)


@pytest.fixture(scope="package")
def warehouse_server() -> Iterator[PostgresServer]:
    with running_postgres(database="warehouse") as server:
        yield server


@pytest.fixture(scope="package")
def sandbox(tmp_path_factory: pytest.TempPathFactory, warehouse_server: PostgresServer) -> Iterator[Sandbox]:
    root = tmp_path_factory.mktemp("privacy")
    monkeypatch = pytest.MonkeyPatch()
    box = Sandbox(root / "sandbox", contacts=300, seed=11, as_of=DAY)
    try:
        for name, value in box.start().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv(settings.LAKE_DIR, str(root / "lake"))
        monkeypatch.setenv(settings.WRITE_BACK, "off")
        monkeypatch.setenv(settings.WAREHOUSE_URL, warehouse_server.url())
        monkeypatch.setenv(settings.WAREHOUSE_WORKING_COPY, str(root / "warehouse.duckdb"))
        # No CRM_PIPELINES_MASKING_KEY: the development key is generated next to the warehouse.
        monkeypatch.delenv("CRM_PIPELINES_MASKING_KEY", raising=False)
        monkeypatch.delenv("CRM_PIPELINES_MASKING_KEY_FILE", raising=False)
        yield box
    finally:
        box.stop()
        monkeypatch.undo()


def _run_job(name: str, **kwargs: object) -> dg.ExecuteInProcessResult:
    return (
        defs()
        .resolve_job_def(name)
        .execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False, **kwargs)  # type: ignore[arg-type]
    )


# The syncs that carry people (their plan and state hold names and e-mails, so the erasure must reach
# them): into Salesforce and HubSpot, and HubSpot's leads into Dynamics. The other 40-odd syncs repeat
# the same path for other systems and would only lengthen each night.
PEOPLE_SYNCS = {
    "golden_contacts__salesforce",
    "golden_contacts__hubspot",
    "golden_accounts__salesforce",
    "hubspot_leads_to_dynamics",
    "sync_reconciliation",
}


def _nightly_selection() -> list[dg.AssetKey]:
    """The nightly job's assets without the syncs that repeat the people path for other systems."""
    definitions = defs()
    graph = definitions.resolve_asset_graph()
    return [
        key
        for key in definitions.resolve_job_def("nightly_sync").asset_layer.selected_asset_keys
        if graph.get(key).group_name != "reverse_sync" or key.path[-1] in PEOPLE_SYNCS
    ]


def _run_nightly() -> dg.ExecuteInProcessResult:
    return _run_job("nightly_sync", partition_key=DAY.isoformat(), asset_selection=_nightly_selection())


RunJob = Callable[..., dg.ExecuteInProcessResult]
Connect = Callable[[], duckdb.DuckDBPyConnection]


@pytest.fixture
def run_job() -> RunJob:
    """Runs a job of the definitions in-process: ``run_job(name, run_config=...)``."""
    return _run_job


@pytest.fixture
def run_nightly() -> Callable[[], dg.ExecuteInProcessResult]:
    """Runs the nightly sync of the sandbox day."""
    return _run_nightly


@pytest.fixture(scope="package")
def first_night(sandbox: Sandbox) -> dg.ExecuteInProcessResult:
    result = _run_nightly()
    failures = [e.message for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert result.success, failures
    return result


@pytest.fixture(scope="package")
def connect(sandbox: Sandbox) -> Connect:
    """Opens the warehouse's working copy (where the models run) read-only."""
    return lambda: duckdb.connect(str(sandbox.root.parent / "warehouse.duckdb"), read_only=True)


@pytest.fixture(scope="package")
def lake_dir(sandbox: Sandbox) -> Path:
    return sandbox.root.parent / "lake"
