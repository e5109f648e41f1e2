"""The shipped Dagster instances: run retries for dead runs, one run per partition at a time; the
production one keeps runs and events in PostgreSQL, shared by every host."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from crm_pipelines.instance import SHIPPED_INSTANCE, prepare_home
from crm_pipelines_sandbox.postgres_server import running_postgres


def test_the_shipped_instance_retries_dead_runs_and_queues_one_run_per_partition(tmp_path: Path) -> None:
    prepare_home(tmp_path / "home")
    instance = dg.DagsterInstance.from_config(str(tmp_path / "home"))
    try:
        assert instance.run_retries_enabled
        assert instance.run_retries_max_retries == 1
        assert not instance.run_retries_retry_on_asset_or_op_failure  # steps retry themselves
        # A run whose process died is failed by the monitoring daemon (then retried), not left STARTED.
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_max_runtime_seconds == 4 * 3600
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None
        assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in (
            queue.tag_concurrency_limits
        )
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    finally:
        instance.dispose()


def test_an_instance_file_of_its_own_is_left_alone_and_ours_is_updated(tmp_path: Path) -> None:
    own = tmp_path / "own"
    own.mkdir()
    (own / "dagster.yaml").write_text("run_storage: {}\n")
    prepare_home(own)
    assert (own / "dagster.yaml").read_text() == "run_storage: {}\n"

    old = tmp_path / "old"
    old.mkdir()
    (old / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # what earlier versions wrote
    prepare_home(old)
    assert (old / "dagster.yaml").read_text() == SHIPPED_INSTANCE.read_text()


DEPLOYED_INSTANCE = SHIPPED_INSTANCE.parent / "deploy" / "dagster.yaml"


def test_the_production_instance_keeps_runs_in_postgresql_for_every_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @dg.op
    def hello() -> int:
        return 1

    @dg.job
    def tiny() -> None:
        hello()

    with running_postgres(database="dagster") as server:
        monkeypatch.setenv(
            "DAGSTER_PG_URL",
            f"postgresql://{server.user}:{server.password}@{server.host}:{server.port}/dagster",
        )
        homes = [tmp_path / "webserver", tmp_path / "worker"]  # two hosts' $DAGSTER_HOME
        for home in homes:
            home.mkdir()
            shutil.copy(DEPLOYED_INSTANCE, home / "dagster.yaml")
        worker = dg.DagsterInstance.from_config(str(homes[1]))
        webserver = dg.DagsterInstance.from_config(str(homes[0]))
        try:
            result = tiny.execute_in_process(instance=worker, tags={"dagster/partition": "2026-11-25"})
            assert result.success
            # The other host's instance sees the run and its events: they live in PostgreSQL.
            seen = webserver.get_run_by_id(result.run_id)
            assert seen is not None
            assert seen.status == dg.DagsterRunStatus.SUCCESS
            assert webserver.all_logs(result.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
            queue = webserver.get_concurrency_config().run_queue_config
            assert queue is not None
            assert queue.tag_concurrency_limits[0]["key"] == "dagster/partition"
            assert webserver.run_retries_enabled
        finally:
            worker.dispose()
            webserver.dispose()
        with psycopg.connect(server.conninfo()) as con:
            row = con.execute("SELECT count(*) FROM runs WHERE run_id = %s", [result.run_id]).fetchone()
        assert row == (1,)
