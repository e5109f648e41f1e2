"""Step processes are forked from a server that loaded the code location once (crm_pipelines/preload.py)."""

import json
import os
from pathlib import Path

import dagster as dg
import pytest

from crm_pipelines import definitions
from crm_pipelines.jobs import STEP_EXECUTOR


class Observed(dg.Config):
    folder: str


@dg.op
def observe(config: Observed) -> None:
    """Record, from inside the step's process, whether it started with the definitions built."""
    Path(config.folder, f"{os.getpid()}.json").write_text(
        json.dumps({"preloaded": definitions._preloaded is not None})
    )


@dg.op
def observe_again(config: Observed) -> None:
    observe(config)


@dg.job(executor_def=STEP_EXECUTOR)
def two_steps() -> None:
    observe()
    observe_again()


def test_the_nightly_and_file_jobs_fork_their_steps_from_the_preloaded_server() -> None:
    built = definitions.build_definitions()
    for name in ("nightly_sync", "sftp_file_ingest__finance_sftp__invoices"):
        assert built.resolve_job_def(name).executor_def.name == "forked_steps"


def test_each_step_runs_in_its_own_process_with_the_definitions_already_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The step processes import this module to find the job, as they import the code location.
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    config = {"ops": {n: {"config": {"folder": str(tmp_path)}} for n in ("observe", "observe_again")}}
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        result = dg.execute_job(dg.reconstructable(two_steps), instance=instance, run_config=config)
        assert result.success
    seen = {p.stem: json.loads(p.read_text()) for p in tmp_path.glob("*.json")}
    assert len(seen) == 2  # two processes
    assert str(os.getpid()) not in seen
    assert all(s["preloaded"] for s in seen.values())
