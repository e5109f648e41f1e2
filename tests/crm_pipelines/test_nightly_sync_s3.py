"""The whole nightly with the lake in an S3 bucket (SeaweedFS on loopback) equals the night on a folder.

Two sandboxes with the same seed, one night each: the first with the lake in a local folder, the second
with ``CRM_PIPELINES_LAKE_DIR=s3://...``. Every warehouse table must come out the same, and the second
night must leave no lake on the local disk.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from crm_pipelines import lake, settings
from crm_pipelines.definitions import defs
from crm_pipelines.deploy_local import S3Endpoint
from crm_pipelines_sandbox.run import Sandbox
from tests.crm_pipelines.warehouse_digest import fingerprint

DAY = dt.date(2026, 11, 25)
# When the night ran: the extraction and load times, a file row's change time (the file carries
# none), when an id event was recorded, and the run's id.
RUN_TIME_COLUMNS = (
    "_extracted_at",
    "updated_at",
    "loaded_at",
    "_loaded_at",
    "recorded_at",
    "run_id",
    "_run_id",
)


@dataclass
class Night:
    succeeded: bool
    failed_checks: list[str]
    tables: dict[str, str]
    lake_files: list[tuple[str, ...]]


def _tables(path: Path) -> dict[str, str]:
    with duckdb.connect(str(path), read_only=True) as con:
        return fingerprint(con, leave_out=RUN_TIME_COLUMNS)


def one_night(root: Path, *, lake_dir: str, env: dict[str, str]) -> Night:
    monkeypatch = pytest.MonkeyPatch()
    box = Sandbox(root / "sandbox", contacts=120, seed=11, as_of=DAY)
    try:
        for name, value in {**box.start(), **env}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv(settings.LAKE_DIR, lake_dir)
        monkeypatch.setenv(settings.WRITE_BACK, "off")
        monkeypatch.setenv(settings.WAREHOUSE_URL, f"duckdb:///{root}/warehouse.duckdb")
        result = (
            defs()
            .resolve_job_def("nightly_sync")
            .execute_in_process(
                partition_key=DAY.isoformat(), instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
            )
        )
        return Night(
            succeeded=result.success,
            failed_checks=[
                f"{c.asset_key.to_user_string()}:{c.check_name}"
                for c in result.get_asset_check_evaluations()
                if not c.passed
            ],
            tables=_tables(root / "warehouse.duckdb"),
            lake_files=[parts for _, parts in lake.files_under(lake.lake_root(lake_dir), "*.parquet")],
        )
    finally:
        box.stop()
        monkeypatch.undo()


@pytest.fixture(scope="module")
def on_a_folder(tmp_path_factory: pytest.TempPathFactory) -> Night:
    root = tmp_path_factory.mktemp("folder")
    return one_night(root, lake_dir=str(root / "lake"), env={})


@pytest.fixture(scope="module")
def bucket_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bucket")


@pytest.fixture(scope="module")
def on_a_bucket(s3: S3Endpoint, bucket_root: Path) -> Night:
    return one_night(bucket_root, lake_dir=s3.lake_url, env=s3.environment())


def test_the_night_on_a_bucket_succeeds_with_the_same_checks(on_a_folder: Night, on_a_bucket: Night) -> None:
    assert on_a_bucket.succeeded
    assert on_a_bucket.failed_checks == on_a_folder.failed_checks
    # At this small scale a few sources hold no change within their freshness window (a warning).
    assert all(c.endswith(":source_freshness") for c in on_a_bucket.failed_checks)


def test_the_warehouse_is_the_same_whichever_lake(on_a_folder: Night, on_a_bucket: Night) -> None:
    assert on_a_folder.succeeded
    assert set(on_a_bucket.tables) == set(on_a_folder.tables)
    differing = sorted(t for t in on_a_folder.tables if on_a_bucket.tables[t] != on_a_folder.tables[t])
    assert differing == [], differing
    assert on_a_bucket.tables["marts.dim_contact"].split(":")[0] != "0"


def test_the_lake_is_in_the_bucket_and_not_on_the_local_disk(
    on_a_folder: Night, on_a_bucket: Night, bucket_root: Path
) -> None:
    assert on_a_bucket.lake_files == on_a_folder.lake_files
    layers = {parts[0] for parts in on_a_bucket.lake_files}
    assert {"raw", "staging", "core", "quarantine"} <= layers
    assert any(parts[:2] == ("raw", "finance_sftp") for parts in on_a_bucket.lake_files)
    local_parquet = [p for p in bucket_root.rglob("*.parquet") if "sandbox" not in p.parts]
    assert local_parquet == []
