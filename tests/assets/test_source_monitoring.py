"""Freshness and volume checks of the extracts, against a live HubSpot simulator going stale or shrinking."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import cast

import dagster as dg
import duckdb
import pytest

from assets.crm_apis import api_resource_key, build_crm_api_assets
from assets.source_monitoring import (
    FRESHNESS_CHECK,
    VOLUME_BLOCK_CHECK,
    VOLUME_WARN_CHECK,
    build_source_checks,
)
from assets.staging import build_staging_assets
from assets.warehouse import build_raw_load_assets
from crm_pipelines.connectors.auth import clear_token_cache
from crm_pipelines.delete_guard import confirm_deletions
from crm_pipelines_sandbox.data import SandboxLayout, generate_sandbox
from crm_pipelines_sandbox.simulators import HubSpotSimulator
from crm_pipelines_sandbox.simulators.store import delete_records, fetch_records, touch_records
from resources.crm_api import CrmApiResource
from resources.lake import LakeResource, WarehouseResource

DAY1 = date(2026, 11, 25)
TOKEN = "pat-eu1-monitoring-token"
CONTACTS = dg.AssetKey(["hubspot", "contacts"])
RAW = dg.AssetKey(["raw", "hubspot"])
STAGING = dg.AssetKey(["staging", "contact"])


@dataclass
class Env:
    root: Path
    layout: SandboxLayout
    hubspot: HubSpotSimulator

    def run(self, day: date) -> dg.ExecuteInProcessResult:
        """The night's HubSpot contacts extract, its checks, its raw load and the contact staging."""
        assets = [
            a
            for a in [*build_crm_api_assets(), *build_raw_load_assets(), *build_staging_assets()]
            if a.key in (CONTACTS, RAW, STAGING)
        ]
        checks = [c for c in build_source_checks() if {k.asset_key for k in c.check_keys} & {CONTACTS, RAW}]
        return dg.materialize(
            [*assets, *checks],
            resources={
                api_resource_key("hubspot"): CrmApiResource(
                    system="hubspot", base_url=self.hubspot.base_url, access_token=TOKEN
                ),
                "lake": LakeResource(root=str(self.root / "lake")),
                "warehouse": WarehouseResource(url=f"duckdb:///{self.root}/warehouse.duckdb"),
            },
            partition_key=day.isoformat(),
            raise_on_error=False,
        )

    def confirm_deletes(self, count: int) -> None:
        """What an operator does after checking that the records are really gone."""
        confirm_deletions(
            lake_dir=self.root / "lake", source="hubspot", dataset="contacts", count=count, by="test"
        )

    def live_contacts(self) -> list[str]:
        return [
            str(r["id"]) for r in fetch_records(self.layout.hubspot_store, "contacts") if not r["archived"]
        ]

    def recorded_nights(self) -> list[tuple[str, int]]:
        with duckdb.connect(str(self.root / "warehouse.duckdb"), read_only=True) as con:
            rows = con.execute(
                "SELECT partition, live_rows FROM ops.source_volume "
                "WHERE source = 'hubspot' AND dataset = 'contacts' ORDER BY partition"
            ).fetchall()
        return [(str(p), int(n)) for p, n in rows]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    clear_token_cache()
    layout = generate_sandbox(tmp_path / "sandbox", contacts=300, seed=5, as_of=DAY1)
    with HubSpotSimulator(layout.hubspot_store, access_token=TOKEN) as hubspot:
        yield Env(tmp_path, layout, hubspot)
    clear_token_cache()


def _check(
    result: dg.ExecuteInProcessResult, name: str, key: dg.AssetKey = CONTACTS
) -> dg.AssetCheckEvaluation:
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.asset_key == key and evaluation.check_name == name:
            return evaluation
    raise AssertionError(f"check {name} did not run")


def _materialized(result: dg.ExecuteInProcessResult) -> set[dg.AssetKey]:
    return {
        cast("dg.AssetKey", e.materialization.asset_key) for e in result.get_asset_materialization_events()
    }


def _at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 9, 0, tzinfo=UTC)


def test_a_shrinking_source_warns_then_blocks_its_loads(env: Env) -> None:
    days = [DAY1 + timedelta(days=n) for n in range(4)]
    for day in days[:2]:
        night = env.run(day)
        assert night.success
        # No history, or too little: no verdict, nothing blocked (a new source's first nights).
        assert _check(night, VOLUME_WARN_CHECK).passed
        assert _check(night, VOLUME_BLOCK_CHECK).passed
        assert {CONTACTS, RAW, STAGING} <= _materialized(night)
    live = env.live_contacts()
    assert [n for _, n in env.recorded_nights()] == [len(live), len(live)]

    # Night 3: 60 % of the contacts are archived in HubSpot. The extract's delete guard stops the
    # night first (more than 5 % of the live records); once an operator confirms, a warning, and
    # the loads go on.
    gone = live[: len(live) * 6 // 10]
    delete_records(env.layout.hubspot_store, "contacts", gone, _at(days[2]))
    stopped = env.run(days[2])
    assert not stopped.success
    assert CONTACTS not in _materialized(stopped)
    env.confirm_deletes(len(gone))
    third = env.run(days[2])
    assert third.success
    warn, block = _check(third, VOLUME_WARN_CHECK), _check(third, VOLUME_BLOCK_CHECK)
    assert not warn.passed
    assert warn.severity == dg.AssetCheckSeverity.WARN
    assert warn.metadata["trailing_median"].value == len(live)
    assert warn.metadata["change"].value == f"{(len(live) - len(gone)) / len(live) - 1:+.1%}"
    assert block.passed
    assert {RAW, STAGING} <= _materialized(third)
    assert env.recorded_nights()[-1] == (days[2].isoformat(), len(live) - len(gone))

    # Night 4: nearly all are gone, past -80 % of the median (still the full nights): the raw load
    # and the staging that read the extract do not run, and the night is not recorded.
    remaining = env.live_contacts()
    delete_records(env.layout.hubspot_store, "contacts", remaining[5:], _at(days[3]))
    env.confirm_deletes(len(remaining) - 5)
    fourth = env.run(days[3])
    block = _check(fourth, VOLUME_BLOCK_CHECK)
    assert not block.passed
    assert block.severity == dg.AssetCheckSeverity.ERROR
    assert block.metadata["live_rows"].value == 5
    assert not _check(fourth, VOLUME_WARN_CHECK).passed
    materialized = _materialized(fourth)
    assert CONTACTS in materialized
    assert RAW not in materialized
    assert STAGING not in materialized
    assert days[3].isoformat() not in {p for p, _ in env.recorded_nights()}


def test_a_source_that_stops_changing_fails_its_freshness_check(env: Env) -> None:
    first = env.run(DAY1)
    assert first.success
    fresh = _check(first, FRESHNESS_CHECK, RAW)
    assert fresh.passed
    newest = datetime.fromisoformat(str(fresh.metadata["last_change"].value))
    assert newest <= datetime(2026, 11, 26, tzinfo=UTC)

    # Nobody changes anything in HubSpot for ten days: the extract still runs, the data is stale.
    stale_day = DAY1 + timedelta(days=10)
    stale = env.run(stale_day)
    assert stale.success  # a warning: the loads go on
    check = _check(stale, FRESHNESS_CHECK, RAW)
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert datetime.fromisoformat(str(check.metadata["last_change"].value)) == newest
    assert check.metadata["last_changed_dataset"].value == "contacts"
    assert float(check.metadata["hours_since_last_change"].value) > 7 * 24  # type: ignore[arg-type]
    assert {RAW, STAGING} <= _materialized(stale)

    # A user edits a contact the next day: fresh again.
    live = env.live_contacts()
    touch_records(env.layout.hubspot_store, "contacts", [live[0]], _at(stale_day + timedelta(days=1)), {})
    again = env.run(stale_day + timedelta(days=1))
    assert _check(again, FRESHNESS_CHECK, RAW).passed
