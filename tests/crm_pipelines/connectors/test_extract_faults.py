"""A CRM read through a faulty network lands the same snapshot as a clean one, or stops, never less.

The pipeline reads Pipedrive's simulator through :class:`FaultProxy`, a real reverse proxy on
loopback that answers a share of the requests with one kind of fault. Pipedrive pages by cursor and
has no deletion feed: every night reads all ids, and ids missing from that listing become deletes,
which is where a page answered with the previous page's body used to delete live records.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from crm_pipelines.connectors.limits import ApiRequestError
from crm_pipelines.lake import partition_dir
from crm_pipelines.warehouse.watermarks import read_pending
from crm_pipelines_sandbox.fault_proxy import FAULT_KINDS, FaultProxy
from crm_pipelines_sandbox.running import RunningCrm, running_crm

DAY = dt.date(2026, 1, 5)
NIGHTS = [DAY, DAY + dt.timedelta(days=1)]


@pytest.fixture
def pipedrive(tmp_path: Path) -> Iterator[RunningCrm]:
    (tmp_path / "crm").mkdir()
    with running_crm("pipedrive", "contact", tmp_path / "crm", as_of=DAY, accounts=30) as crm:
        yield crm


def nights(crm: RunningCrm, base_url: str, lake: Path) -> list[tuple[object, ...]]:
    """Two nights of the persons object into ``lake`` (a full read, then changes and all ids):
    the second night's snapshot, sorted, ``_deleted`` first, without the extraction time."""
    committed: str | None = None
    for night in NIGHTS:
        result = crm.land(
            lake=lake, dataset="contacts", day=night, committed=committed, base_url=base_url, page_size=7
        )
        committed = result.reached
    folder = partition_dir(lake, "raw", "pipedrive", "contacts", NIGHTS[-1].isoformat())
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT _deleted, * EXCLUDE (_extracted_at, _deleted) FROM read_parquet('{folder}/*.parquet') "
        "ORDER BY ALL"
    ).fetchall()
    return [tuple(r) for r in rows]


def test_the_clean_read_deletes_nothing_live(pipedrive: RunningCrm, tmp_path: Path) -> None:
    rows = nights(pipedrive, pipedrive.started.env["PIPEDRIVE_BASE_URL"], tmp_path / "lake")
    live = [r for r in rows if r[0] is False]
    assert len(live) == len(pipedrive.live_keys())


# A page with a record left out is only visible against a total the API reports (Pipedrive reports
# none): test_pages.py covers that guard.
@pytest.mark.parametrize("kind", [k for k in FAULT_KINDS if k != "dropped_record"])
def test_every_fault_kind_leaves_the_snapshot_as_a_clean_read(
    pipedrive: RunningCrm, tmp_path: Path, kind: str
) -> None:
    upstream = pipedrive.started.env["PIPEDRIVE_BASE_URL"]
    clean = nights(pipedrive, upstream, tmp_path / "clean")
    with FaultProxy(upstream, kind, rate=0.2, seed=3) as proxy:
        faulty = nights(pipedrive, proxy.url, tmp_path / "faulty")
    assert proxy.faults > 0, "the proxy injected nothing: the test would prove nothing"
    assert faulty == clean


def test_a_proxy_that_keeps_answering_with_the_previous_page_stops_the_read(
    pipedrive: RunningCrm, tmp_path: Path
) -> None:
    upstream = pipedrive.started.env["PIPEDRIVE_BASE_URL"]
    lake = tmp_path / "lake"
    with FaultProxy(upstream, "previous_page", rate=1.0) as proxy, pytest.raises(ApiRequestError) as stop:
        nights(pipedrive, proxy.url, lake)
    assert "the previous page's 7 records 4 times in a row" in str(stop.value)
    # Nothing was taken for data: the night's snapshot is not marked complete.
    assert read_pending(partition_dir(lake, "raw", "pipedrive", "contacts", NIGHTS[0].isoformat())) is None
