"""The delete guard: a read that deletes many live records stops until someone confirms, then once.

Real parts: Pipedrive's simulator (no deletion feed, so every night compares all ids), records
deleted in its store, and the extract as the nightly runs it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from crm_pipelines.cli import main as cli_main
from crm_pipelines.connectors.extract import ApiExtract
from crm_pipelines.delete_guard import DeleteGuardTripped, confirm_deletions, confirmation_file
from crm_pipelines.lake import partition_dir
from crm_pipelines.warehouse.watermarks import read_pending
from crm_pipelines_sandbox.running import RunningCrm, running_crm
from crm_pipelines_sandbox.simulators.records import delete_records

DAY = dt.date(2026, 1, 5)


@pytest.fixture
def pipedrive(tmp_path: Path) -> Iterator[RunningCrm]:
    (tmp_path / "crm").mkdir()
    with running_crm("pipedrive", "contact", tmp_path / "crm", as_of=DAY, accounts=30) as crm:
        yield crm


def night(crm: RunningCrm, lake: Path, day: dt.date, committed: str | None) -> ApiExtract:
    return crm.land(lake=lake, dataset="contacts", day=day, committed=committed, page_size=20)


def deleted_in_lake(lake: Path, day: dt.date) -> int:
    folder = partition_dir(lake, "raw", "pipedrive", "contacts", day.isoformat())
    row = (
        duckdb.connect()
        .execute(f"SELECT count(*) FILTER (WHERE _deleted) FROM read_parquet('{folder}/*.parquet')")
        .fetchone()
    )
    assert row is not None
    return int(row[0])


def delete_in_crm(crm: RunningCrm, count: int) -> None:
    keys = crm.live_keys()[:count]
    delete_records(crm.store, crm.object_name, keys, dt.datetime.now(dt.UTC))


def test_a_few_deletions_pass_and_many_stop_until_confirmed_once(
    pipedrive: RunningCrm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = tmp_path / "lake"
    first = night(pipedrive, lake, DAY, None)
    live = len(pipedrive.live_keys())
    before = deleted_in_lake(lake, DAY)

    # Two records gone: within min_rows, deleted at once.
    delete_in_crm(pipedrive, 2)
    second = night(pipedrive, lake, DAY + dt.timedelta(days=1), first.reached)
    assert deleted_in_lake(lake, DAY + dt.timedelta(days=1)) == before + 2

    # A quarter of the rest gone (more than 5% and more than 10 records): the read stops.
    many = (live - 2) // 4
    assert many > 10
    delete_in_crm(pipedrive, many)
    third_day = DAY + dt.timedelta(days=2)
    with pytest.raises(DeleteGuardTripped) as stop:
        night(pipedrive, lake, third_day, second.reached)
    assert f"would delete {many} of {live - 2} live records" in str(stop.value)
    assert f"--count {many}" in str(stop.value)
    # Nothing complete for that night: no load, no watermark, no sync sees it.
    assert read_pending(partition_dir(lake, "raw", "pipedrive", "contacts", third_day.isoformat())) is None

    # A confirmation for fewer than would go does not let it through.
    confirm_deletions(lake_dir=lake, source="pipedrive", dataset="contacts", count=many - 1, by="test")
    with pytest.raises(DeleteGuardTripped):
        night(pipedrive, lake, third_day, second.reached)

    # The operator confirms with the command the message names; the next read goes through, once.
    monkeypatch.setenv("CRM_PIPELINES_LAKE_DIR", str(lake))
    assert (
        cli_main(["confirm-deletes", "--source", "pipedrive", "--dataset", "contacts", "--count", str(many)])
        == 0
    )
    night(pipedrive, lake, third_day, second.reached)
    assert deleted_in_lake(lake, third_day) == before + 2 + many
    assert not confirmation_file(lake, "pipedrive", "contacts").exists()


def test_a_confirmation_names_only_safe_folders(tmp_path: Path) -> None:
    for bad in ("../etc", "a/b", "..", ""):
        with pytest.raises(ValueError, match="not a source or dataset name"):
            confirmation_file(tmp_path, bad, "contacts")
