"""The shipped Dagster instance: run retries for dead runs, one run per partition at a time."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from crm_pipelines.instance import SHIPPED_INSTANCE, prepare_home


def test_the_shipped_instance_retries_dead_runs_and_queues_one_run_per_partition(tmp_path: Path) -> None:
    prepare_home(tmp_path / "home")
    instance = dg.DagsterInstance.from_config(str(tmp_path / "home"))
    try:
        assert instance.run_retries_enabled
        assert instance.run_retries_max_retries == 1
        assert not instance.run_retries_retry_on_asset_or_op_failure  # steps retry themselves
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
