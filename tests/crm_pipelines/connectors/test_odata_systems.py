"""Dynamics 365 and Creatio beyond the conformance suite: what their OData declarations rely on.

A clean run reports no schema drift (Dataverse lists lookups by logical name, Creatio publishes its
fields in an EDMX document), and Creatio's keyset paging reads every record even when records are
deleted between two pages.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from crm_pipelines.connectors.auth import clear_token_cache
from crm_pipelines.connectors.engine import PageInfo, SchemaDrift, extract_keys, extract_object
from crm_pipelines.connectors.limits import clear_buckets
from crm_pipelines.connectors.spec import load_system
from crm_pipelines_sandbox.simulators.records import delete_records, fetch_records
from crm_pipelines_sandbox.systems import SandboxCrm, Started, build_store, sample_seeds, sandbox_crm

AS_OF = date(2026, 11, 25)


@pytest.fixture
def started(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[SandboxCrm, Started, Path]]:
    crm = sandbox_crm(str(request.param))
    store = tmp_path / "store.sqlite"
    build_store(store, crm, sample_seeds(accounts=24, as_of=AS_OF))
    clear_token_cache()
    clear_buckets()
    running = crm.start(store)
    try:
        yield crm, running, store
    finally:
        running.simulator.stop()
        clear_token_cache()
        clear_buckets()


@pytest.mark.parametrize("started", ["dynamics", "creatio"], indirect=True)
def test_a_clean_run_reports_no_schema_drift(started: tuple[SandboxCrm, Started, Path]) -> None:
    crm, running, _ = started
    system = load_system(name=crm.system)
    for object_name in crm.kinds.values():
        drift = SchemaDrift(system.name, object_name)
        list(
            extract_object(
                system=system, object_name=object_name, connection=crm.connection(running), drift=drift
            )
        )
        # The field list was read (so drift is judged against the source, not records only) ...
        assert drift.source_fields, object_name
        # ... and every source field the records carry is declared under the name records use.
        assert not drift.has_drift, drift.describe()


@pytest.mark.parametrize("started", ["creatio"], indirect=True)
def test_keyset_paging_reads_every_record_when_others_are_deleted_mid_read(
    started: tuple[SandboxCrm, Started, Path],
) -> None:
    crm, running, store = started
    system = load_system(name="creatio")
    live = sorted(str(r["Id"]) for r in fetch_records(store, "Contact"))
    first_page = live[:5]

    def delete_read_records(page: PageInfo) -> None:
        if page.page_number == 1:
            # Records already read disappear: an offset would now start one page too far.
            delete_records(store, "Contact", first_page[:3], datetime.now(UTC))

    batches = list(
        extract_object(
            system=system,
            object_name="Contact",
            connection=crm.connection(running),
            page_size=5,
            include_deleted=False,
            on_page=delete_read_records,
        )
    )
    read = [str(k) for k in pa.Table.from_batches(batches).column("Id").to_pylist()]
    assert read == live  # in key order, none skipped, none twice
    keys = {
        str(k)
        for b in extract_keys(
            system=system, object_name="Contact", connection=crm.connection(running), page_size=5
        )
        for k in b.column(0).to_pylist()
    }
    assert keys == set(live) - set(first_page[:3])
