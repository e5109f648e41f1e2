"""Two runs of one partition started at once: the shipped run queue runs them one after the other.

The instance is the shipped ``dagster.yaml`` in a fresh ``$DAGSTER_HOME`` (QueuedRunCoordinator, tag
limit 1 per ``dagster/partition``). Three runs are submitted at once with ``dagster job launch``, as an
operator or two schedules would: two of one night and one of the next. Then ``dagster-daemon run``
dequeues them and the default run launcher starts real run workers. The second run of the night is
not started until the first has finished; the other night is not held back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg

from crm_pipelines.instance import prepare_home

NIGHT, NEXT_NIGHT = "2026-11-25", "2026-11-26"
BIN = Path(sys.executable).parent
RUNNING = (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED)

# A night's job as the queue sees it: partitioned like the nightly, each run noting when it worked.
JOB = """
import json
import time

import dagster as dg

from crm_pipelines.partitions import NIGHTLY_PARTITIONS


@dg.op
def work(context: dg.OpExecutionContext) -> None:
    began = time.time()
    time.sleep(2)
    with open({log!r}, "a") as log:
        log.write(json.dumps([context.run_id, context.partition_key, began, time.time()]) + "\\n")


@dg.job(partitions_def=NIGHTLY_PARTITIONS)
def night() -> None:
    work()


defs = dg.Definitions(jobs=[night])
"""


def test_two_runs_of_one_partition_take_turns_and_another_partition_does_not_wait(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    prepare_home(home)
    log = tmp_path / "worked.jsonl"
    job_file = tmp_path / "night_job.py"
    job_file.write_text(JOB.format(log=str(log)))
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    where = ["-f", str(job_file), "-d", str(tmp_path)]

    def launch(night: str) -> subprocess.Popen[str]:
        """``dagster job launch`` of one night: the instance's run coordinator queues it."""
        tags = json.dumps({"dagster/partition": night})
        command = [str(BIN / "dagster"), "job", "launch", *where, "-j", "night", "--tags", tags]
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    # The instance exists before anything is launched (its SQLite storage is created once, here).
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        launches = [launch(night) for night in (NIGHT, NIGHT, NEXT_NIGHT)]  # at once
        try:
            for process in launches:
                output, _ = process.communicate(timeout=120)
                assert process.returncode == 0, output
        finally:
            for process in launches:
                process.kill()  # only one that never finished is still there
                process.wait(timeout=10)
        runs = instance.get_runs()
        assert sorted(r.tags["dagster/partition"] for r in runs) == [NIGHT, NIGHT, NEXT_NIGHT]
        assert {r.status for r in runs} == {dg.DagsterRunStatus.QUEUED}  # nothing runs without the daemon

        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", *where],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 240
            while not all(r.status == dg.DagsterRunStatus.SUCCESS for r in instance.get_runs()):
                assert time.monotonic() < deadline, [(r.tags, r.status) for r in instance.get_runs()]
                night_runs = [r for r in instance.get_runs() if r.tags["dagster/partition"] == NIGHT]
                # Never both runs of the night out of the queue and unfinished at once.
                assert sum(r.status in RUNNING for r in night_runs) <= 1, night_runs
                time.sleep(0.2)
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)  # the daemon and the code server it started
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait(timeout=10)

        def moment(run: dg.DagsterRun, event: dg.DagsterEventType) -> float:
            (record,) = instance.all_logs(run.run_id, of_type=event)
            return record.timestamp

        first, second = sorted(
            (r for r in instance.get_runs() if r.tags["dagster/partition"] == NIGHT),
            key=lambda r: moment(r, dg.DagsterEventType.RUN_STARTING),
        )
        (other,) = [r for r in instance.get_runs() if r.tags["dagster/partition"] == NEXT_NIGHT]
        first_done = moment(first, dg.DagsterEventType.RUN_SUCCESS)
        # The queue let the second run of the night out only once the first had finished ...
        assert moment(second, dg.DagsterEventType.RUN_STARTING) >= first_done
        # ... while the next night started beside the first.
        assert moment(other, dg.DagsterEventType.RUN_STARTING) < first_done
    finally:
        instance.dispose()

    worked = {line[0]: line[1:] for line in map(json.loads, log.read_text().splitlines())}
    assert [worked[r.run_id][0] for r in (first, second, other)] == [NIGHT, NIGHT, NEXT_NIGHT]
    assert worked[second.run_id][1] >= worked[first.run_id][2]  # its work began after the first's ended
