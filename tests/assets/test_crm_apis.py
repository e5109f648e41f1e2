"""Incremental CRM extraction through the Dagster assets: snapshots, soft deletes, watermarks, failures."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import dagster as dg
import duckdb
import pyarrow as pa
import pytest

from assets.crm_apis import api_resource_key, build_crm_api_assets
from assets.warehouse import build_raw_load_assets
from crm_pipelines.connectors.auth import clear_token_cache
from crm_pipelines.connectors.engine import DELETED, EXTRACTED_AT, extract_object
from crm_pipelines.connectors.limits import clear_buckets
from crm_pipelines.connectors.spec import load_system
from crm_pipelines.lake import parquet_glob, partition_dir, scan_parquet
from crm_pipelines.sources import load_sources
from crm_pipelines.warehouse.watermarks import PENDING_FILE
from crm_pipelines_sandbox.data import SandboxLayout, generate_sandbox
from crm_pipelines_sandbox.simulators import HubSpotSimulator, SalesforceSimulator
from crm_pipelines_sandbox.simulators.records import delete_records as delete_other
from crm_pipelines_sandbox.simulators.records import keys_of
from crm_pipelines_sandbox.simulators.records import touch_records as touch_other
from crm_pipelines_sandbox.simulators.store import (
    add_field,
    delete_records,
    fetch_records,
    insert_records,
    sf_datetime,
    touch_records,
    update_records,
)
from crm_pipelines_sandbox.systems import build_store, sample_seeds, sandbox_crm
from resources.crm_api import CrmApiResource
from resources.lake import LakeResource, WarehouseResource

DAY1, DAY2 = date(2026, 11, 25), date(2026, 11, 26)
EDIT = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
SF_ID, SF_SECRET, HS_TOKEN = "3MVG9incr.client", "sf-incr-secret", "pat-eu1-incr-token"


@dataclass
class Env:
    root: Path
    layout: SandboxLayout
    sf: SalesforceSimulator
    hs: HubSpotSimulator

    def resources(self) -> dict[str, object]:
        return {
            api_resource_key("salesforce"): CrmApiResource(
                system="salesforce", base_url=self.sf.base_url, client_id=SF_ID, client_secret=SF_SECRET
            ),
            api_resource_key("hubspot"): CrmApiResource(
                system="hubspot", base_url=self.hs.base_url, access_token=HS_TOKEN
            ),
            "lake": LakeResource(root=str(self.root / "lake")),
            "warehouse": WarehouseResource(url=f"duckdb:///{self.root}/warehouse.duckdb"),
        }

    def run(self, day: date) -> dg.ExecuteInProcessResult:
        wanted = {
            ("salesforce", "contacts"),
            ("hubspot", "contacts"),
            ("raw", "salesforce"),
            ("raw", "hubspot"),
        }
        assets = [
            a for a in [*build_crm_api_assets(), *build_raw_load_assets()] if tuple(a.key.path) in wanted
        ]
        return dg.materialize(
            assets, resources=self.resources(), partition_key=day.isoformat(), raise_on_error=False
        )

    def snapshot(self, source: str, day: date) -> pa.Table:
        folder = partition_dir(self.root / "lake", "raw", source, "contacts", day.isoformat())
        with duckdb.connect() as con:
            return con.sql(f"SELECT * FROM {scan_parquet(parquet_glob(folder))}").to_arrow_table()

    def watermark(self, source: str) -> str | None:
        with duckdb.connect(str(self.root / "warehouse.duckdb"), read_only=True) as con:
            row = con.execute(
                "SELECT cursor_value FROM ops.watermark WHERE source = ? AND dataset = 'contacts'", [source]
            ).fetchone()
        return str(row[0]) if row else None


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    clear_token_cache()
    layout = generate_sandbox(tmp_path / "sandbox", contacts=500, seed=3, as_of=DAY1)
    with (
        SalesforceSimulator(layout.salesforce_store, client_id=SF_ID, client_secret=SF_SECRET) as sf,
        HubSpotSimulator(layout.hubspot_store, access_token=HS_TOKEN) as hs,
    ):
        yield Env(tmp_path, layout, sf, hs)
    clear_token_cache()


def _metadata(result: dg.ExecuteInProcessResult, source: str) -> dict[str, Any]:
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        if materialization.asset_key == dg.AssetKey([source, "contacts"]):
            return {k: v.value for k, v in materialization.metadata.items()}
    raise AssertionError(f"no materialization of {source}/contacts")


def _rows(table: pa.Table, key: str) -> list[tuple[object, ...]]:
    table = table.drop_columns([EXTRACTED_AT]).sort_by(key)
    return [tuple(r.values()) for r in table.to_pylist()]


def _expected(
    env: Env, system: str, key: str, kept_deleted: set[str], until: datetime
) -> list[tuple[object, ...]]:
    """The snapshot a user expects: every live record as the CRM holds it now, plus the ones
    deleted since the last run (flagged), read by a fresh full extract."""
    resource = env.resources()[api_resource_key(system)]
    assert isinstance(resource, CrmApiResource)
    table = pa.Table.from_batches(
        list(
            extract_object(
                system=resource.spec(),
                object_name="Contact" if system == "salesforce" else "contacts",
                connection=resource.connection(),
                until=until,
                include_deleted=True,
            )
        ),
        schema=resource.output_schema(object_name="Contact" if system == "salesforce" else "contacts"),
    )
    keep = [
        not d or k in kept_deleted
        for k, d in zip(table.column(key).to_pylist(), table.column(DELETED).to_pylist(), strict=True)
    ]
    return _rows(table.filter(pa.array(keep)), key)


def test_incremental_runs_build_the_snapshot_with_soft_deletes_and_survive_a_failed_run(env: Env) -> None:
    first = env.run(DAY1)
    assert first.success
    assert _metadata(first, "salesforce")["mode"] == "full"
    assert _metadata(first, "hubspot")["mode"] == "full"
    day1_sf = env.snapshot("salesforce", DAY1)
    assert not any(day1_sf.column(DELETED).to_pylist())  # a full extract has the column too
    watermark_sf, watermark_hs = env.watermark("salesforce"), env.watermark("hubspot")
    assert watermark_sf is not None
    assert watermark_hs is not None

    # Users work in both CRMs on day 2.
    store_sf, store_hs = env.layout.salesforce_store, env.layout.hubspot_store
    live_sf = [r for r in fetch_records(store_sf, "Contact") if not r["IsDeleted"]]
    edited_sf, deleted_sf = [str(r["Id"]) for r in live_sf[:3]], [str(r["Id"]) for r in live_sf[3:5]]
    touch_records(store_sf, "Contact", edited_sf, EDIT, {"Title": "Chief Incremental Officer"})
    delete_records(store_sf, "Contact", deleted_sf, EDIT)
    # A record whose cursor equals the committed watermark (same second as the last one read).
    boundary = str(live_sf[5]["Id"])
    stamp = datetime.fromisoformat(watermark_sf)
    update_records(
        store_sf, "Contact", [boundary], {"Title": "On the boundary", "SystemModstamp": sf_datetime(stamp)}
    )
    new_sf = "003Qy00000NEWAAA"
    insert_records(
        store_sf,
        "Contact",
        [
            {
                "Id": new_sf,
                "LastName": "Newcomer",
                "CreatedDate": sf_datetime(EDIT),
                "SystemModstamp": sf_datetime(EDIT),
            }
        ],
    )
    live_hs = [r for r in fetch_records(store_hs, "contacts") if not r["archived"]]
    touch_records(
        store_hs, "contacts", [cast("str | int", live_hs[0]["id"])], EDIT, {"jobtitle": "Head of Deltas"}
    )
    archived_hs = str(live_hs[1]["id"])
    delete_records(store_hs, "contacts", [archived_hs], EDIT)
    add_field(store_hs, "contacts", "shoe_size")  # a property added in HubSpot between runs

    # Day 2 breaks midway: the Salesforce API starts failing after a few requests.
    clear_token_cache()
    env.sf.faults.fail_after(3, 400)
    broken = env.run(DAY2)
    assert not broken.success
    assert env.watermark("salesforce") == watermark_sf  # only a committed load moves it
    assert not (
        partition_dir(env.root / "lake", "raw", "salesforce", "contacts", DAY2.isoformat()) / PENDING_FILE
    ).exists()

    # The next run loses nothing.
    env.sf.faults.clear()
    second = env.run(DAY2)
    assert second.success
    meta_sf, meta_hs = _metadata(second, "salesforce"), _metadata(second, "hubspot")
    assert meta_sf["mode"] == "incremental"
    assert meta_hs["mode"] == "incremental"
    assert meta_hs["method"] == "search"
    assert meta_sf["rows_read"] < 20  # the changes and the lookback, not the whole object
    assert "shoe_size" in meta_hs["new_source_fields"]  # drift is reported, the run succeeds

    until = datetime(2026, 11, 27, tzinfo=UTC)
    snapshot_sf = env.snapshot("salesforce", DAY2)
    assert _rows(snapshot_sf, "Id") == _expected(env, "salesforce", "Id", set(deleted_sf), until)
    by_id = {r["Id"]: r for r in snapshot_sf.to_pylist()}
    assert by_id[boundary]["Title"] == "On the boundary"
    assert by_id[new_sf]["LastName"] == "Newcomer"
    assert not by_id[new_sf][DELETED]
    assert all(by_id[i][DELETED] for i in deleted_sf)
    assert all(by_id[i]["Title"] == "Chief Incremental Officer" for i in edited_sf)
    assert snapshot_sf.num_rows == day1_sf.num_rows + 1  # deleted rows stay, flagged

    snapshot_hs = env.snapshot("hubspot", DAY2)
    assert _rows(snapshot_hs, "id") == _expected(env, "hubspot", "id", {archived_hs}, until)
    assert {r["id"]: r[DELETED] for r in snapshot_hs.to_pylist()}[archived_hs] is True

    # The load committed the new watermarks with the rows.
    assert env.watermark("salesforce") == EDIT.isoformat(timespec="microseconds")
    assert env.watermark("hubspot") == EDIT.isoformat(timespec="microseconds")
    with duckdb.connect(str(env.root / "warehouse.duckdb"), read_only=True) as con:
        deleted = con.execute(
            "SELECT count(*) FILTER (WHERE _deleted) FROM raw.salesforce__contacts WHERE Id IN (SELECT unnest(?))",
            [deleted_sf],
        ).fetchone()
    assert deleted == (2,)

    # Day 2 run again after one more edit: it builds on its own last run and reads since what that
    # run reached (less the lookback), not the whole day since day 1.
    later = EDIT + timedelta(hours=2)
    touch_records(
        store_hs, "contacts", [cast("str | int", live_hs[2]["id"])], later, {"jobtitle": "Late Editor"}
    )
    again = env.run(DAY2)
    assert again.success
    meta_hs = _metadata(again, "hubspot")
    assert (meta_hs["mode"], meta_hs["base_partition"]) == ("incremental", DAY2.isoformat())
    assert meta_hs["read_since"] == (EDIT - timedelta(seconds=60)).isoformat()
    assert _rows(env.snapshot("hubspot", DAY2), "id") == _expected(env, "hubspot", "id", {archived_hs}, until)
    assert _metadata(again, "salesforce")["base_partition"] == DAY2.isoformat()
    assert _rows(env.snapshot("salesforce", DAY2), "Id") == _rows(snapshot_sf, "Id")


# --- every other CRM the catalog reads: the same guarantees through the assets ----------------------

OTHER_SOURCES = [
    name
    for name, spec in load_sources().items()
    if spec.kind == "crm_api" and name not in ("salesforce", "hubspot")
]


@pytest.mark.parametrize("source", OTHER_SOURCES)
def test_a_run_failing_midway_keeps_the_watermark_and_the_next_loses_nothing(
    source: str, tmp_path: Path
) -> None:
    clear_token_cache()
    clear_buckets()
    crm = sandbox_crm(source)
    store = tmp_path / f"{source}.sqlite"
    build_store(store, crm, sample_seeds(accounts=12, as_of=DAY1))
    started = crm.start(store)
    try:
        object_name = crm.kinds["contact"]
        dataset = next(d for d, spec in load_sources()[source].datasets.items() if spec.object == object_name)
        resource = CrmApiResource(system=source, **load_system(name=source).connection_fields(started.env))
        resources = {
            api_resource_key(source): resource,
            "lake": LakeResource(root=str(tmp_path / "lake")),
            "warehouse": WarehouseResource(url=f"duckdb:///{tmp_path}/warehouse.duckdb"),
        }
        wanted = {(source, dataset), ("raw", source)}
        assets = [
            a for a in [*build_crm_api_assets(), *build_raw_load_assets()] if tuple(a.key.path) in wanted
        ]

        def run(day: date) -> dg.ExecuteInProcessResult:
            return dg.materialize(
                assets, resources=resources, partition_key=day.isoformat(), raise_on_error=False
            )

        def watermark() -> str | None:
            with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
                row = con.execute(
                    "SELECT cursor_value FROM ops.watermark WHERE source = ? AND dataset = ?",
                    [source, dataset],
                ).fetchone()
            return str(row[0]) if row else None

        def snapshot(day: date) -> dict[str, dict[str, object]]:
            folder = partition_dir(tmp_path / "lake", "raw", source, dataset, day.isoformat())
            key = resource.spec().get_object(object_name).primary_key
            with duckdb.connect() as con:
                rows = (
                    con.sql(f"SELECT * FROM {scan_parquet(parquet_glob(folder))}")
                    .to_arrow_table()
                    .to_pylist()
                )
            return {str(r[key]): r for r in rows}

        first = run(DAY1)
        assert first.success
        committed = watermark()
        assert committed is not None
        day1 = snapshot(DAY1)
        assert set(day1) == {str(k) for k in keys_of(store, object_name)}

        live = sorted(str(k) for k in keys_of(store, object_name))
        edited, deleted = live[:2], live[2:4]
        touch_other(store, object_name, _typed(store, object_name, edited), EDIT)
        delete_other(store, object_name, _typed(store, object_name, deleted), EDIT)

        # Day 2 breaks midway: the API starts refusing after a few requests (at the first, for a
        # system that reads this small store in one request: Zendesk's export, 1,000 per page).
        clear_token_cache()
        started.simulator.faults.fail_after(0 if source == "zendesk" else 2, 400)
        broken = run(DAY2)
        assert not broken.success
        assert watermark() == committed  # only a committed load moves it
        started.simulator.faults.clear()

        second = run(DAY2)
        assert second.success
        assert watermark() not in (None, committed)
        day2 = snapshot(DAY2)
        assert set(edited) <= set(day2)
        assert all(day2[k][DELETED] for k in deleted), "deletes arrive as soft deletes"
        assert not any(day2[k][DELETED] for k in edited)
        assert set(day2) == set(day1)  # nothing lost, nothing doubled
    finally:
        started.simulator.stop()
        clear_token_cache()
        clear_buckets()


def _typed(store: Path, object_name: str, keys: list[str]) -> list[object]:
    """Keys as the store holds them (an integer id stays an integer)."""
    by_text = {str(k): k for k in keys_of(store, object_name)}
    return [by_text[k] for k in keys]
