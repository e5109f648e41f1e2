"""The CRM target against the simulators: a write of part of an object the API replaces whole.

Pipedrive's organization ``address``, Infor CRM's related ``Address`` and Sage CRM's company
address are saved as sent: writing the street alone would clear the city and the country. The sync
sends the members it does not change as the night's snapshot has them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from crm_pipelines.connectors.auth import clear_token_cache
from crm_pipelines.connectors.engine import extract_object, output_schema
from crm_pipelines.connectors.limits import clear_buckets
from crm_pipelines.connectors.spec import load_system
from crm_pipelines.lake import DELETED, partition_dir, write_batches
from crm_pipelines.syncs.run import resolve_target, run_sync
from crm_pipelines.syncs.spec import load_syncs
from crm_pipelines.warehouse.connection import Warehouse
from crm_pipelines_sandbox.systems import Started, build_store, sample_seeds, sandbox_crm
from resources.crm_api import CrmApiResource

AS_OF = date(2026, 11, 25)
NIGHT = "2026-11-25"
STREET = "Neue Straße 5"


@pytest.fixture
def running(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Started]]:
    name = str(request.param)
    clear_token_cache()
    clear_buckets()
    crm = sandbox_crm(name)
    store = tmp_path / f"{name}.sqlite"
    build_store(store, crm, sample_seeds(accounts=8, as_of=AS_OF))
    started = crm.start(store)
    try:
        yield name, started
    finally:
        started.simulator.stop()
        clear_token_cache()
        clear_buckets()


def snapshot(system: str, started: Started, object_name: str) -> pa.Table:
    spec = load_system(name=system)
    batches = extract_object(
        system=spec,
        object_name=object_name,
        connection=sandbox_crm(system).connection(started),
        include_deleted=False,
    )
    return pa.Table.from_batches(list(batches), output_schema(system=spec, object_name=object_name))


@pytest.mark.parametrize("running", ["pipedrive", "infor_crm", "sage_crm"], indirect=True)
def test_writing_the_street_keeps_the_city_and_country_of_an_address_the_api_replaces_whole(
    running: tuple[str, Started], tmp_path: Path
) -> None:
    system, started = running
    sync = load_syncs().get(f"golden_accounts__{system}")
    target = resolve_target(sync)
    by_column = {f.source_column: name for name, f in target.fields.items()}
    street, city, country = by_column["street"], by_column["city"], by_column["country"]
    assert city in target.carried_with[street]
    before = snapshot(system, started, target.object_name)
    rows = before.to_pylist()
    record = next(r for r in rows if r[city] and r[country])
    key = str(record[target.primary_key])
    # The night's snapshot, as the extract leaves it.
    assert target.dataset is not None
    folder = partition_dir(tmp_path / "lake", "raw", system, target.dataset, NIGHT)
    folder.mkdir(parents=True)
    lake = before.append_column(DELETED, pa.array([False] * before.num_rows))
    write_batches(folder / "part-0.parquet", lake.schema, lake.to_batches())
    # Only the street is new in the golden record; the other columns say nothing.
    warehouse = Warehouse(f"duckdb:///{tmp_path}/warehouse.duckdb")
    columns: dict[str, Any] = {"golden_id": ["A-1"]}
    columns.update({f.source_column: [None] for f in target.fields.values()})
    columns["street"] = [STREET]
    golden = pa.table({k: pa.array(v, pa.string()) for k, v in columns.items()})
    with warehouse.transaction() as con:
        con.register("golden", golden)
        con.execute("CREATE TABLE core.golden_account AS SELECT * FROM golden")
        con.execute(
            "CREATE TABLE core.xref_identity AS SELECT 'A-1' AS golden_id, 'account' AS entity, "
            "? AS source, ? AS source_id, ? AS record_id",
            [system, key, f"{system}:{key}"],
        )

    report = run_sync(
        sync,
        warehouse=warehouse,
        lake_dir=tmp_path / "lake",
        partition=NIGHT,
        run_id="r",
        client=CrmApiResource(system=system, **load_system(name=system).connection_fields(started.env)),
        dry_run=False,
    )

    assert (report.counts.updated, report.counts.rejected) == (1, 0)
    after = {str(r[target.primary_key]): r for r in snapshot(system, started, target.object_name).to_pylist()}
    assert after[key][street] == STREET
    assert (after[key][city], after[key][country]) == (record[city], record[country])
    # Nothing else moved.
    others = {str(r[target.primary_key]): r for r in rows if str(r[target.primary_key]) != key}
    assert all(after[k][street] == r[street] for k, r in others.items())


@pytest.mark.parametrize(
    "system",
    ["salesforce", "hubspot", "dynamics", "zoho", "sugarcrm", "infor_crm", "sage_crm", "creatio", "sap_b1"],
)
def test_golden_contacts_write_no_phone_digits_address_or_birth_date_back(system: str) -> None:
    """Only the E.164 phone is golden; the mailing address and birth date are read, not written back."""
    from crm_pipelines.syncs.targets.crm import reverse_mapping

    sync = load_syncs().get(f"golden_contacts__{system}")
    assert sync is not None
    target = resolve_target(sync)
    fields = reverse_mapping(sync, load_system(name=system).get_object(target.object_name))
    written = {f.source_column for f in fields.values()}
    assert not written & {"phone_digits", "phone_quality", "street", "city", "postal_code", "birth_date"}
    assert "phone" in written or system == "sage_crm"  # Sage CRM's phone is three columns
