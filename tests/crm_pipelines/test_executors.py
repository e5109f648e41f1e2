"""Steps on Celery workers behind a real Redis broker (CRM_PIPELINES_EXECUTOR=celery).

Two real ``celery -A crm_pipelines.celery_worker worker`` processes take the steps of a run from a
real ``redis-server``; the run itself executes here, on a Dagster instance in ``tmp_path`` that the
workers share. The jobs are built from the project's executor (``crm_pipelines.executors``).
"""

import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from crm_pipelines.deploy_local import (
    Service,
    celery_worker_argv,
    running_redis,
    start_service,
    stop_service,
)
from crm_pipelines.executors import CELERY_BROKER, CELERY_VISIBILITY_TIMEOUT, EXECUTOR, step_executor
from crm_pipelines.jobs import STEP_EXECUTOR

# Short, so that the test sees a killed worker's step handed on within seconds; long enough that no
# step still running is handed on too (4 s was not, on the loaded 2-CPU VM: 8 runs of 6 steps).
VISIBILITY_TIMEOUT_SECONDS = 10
WORKERS = ("worker-a", "worker-b")
HOST = socket.gethostname()


class Landing(dg.Config):
    database: str


def _record(database: str, table: str) -> int:
    """Append this process to ``table``; returns how many rows the table holds now."""
    with sqlite3.connect(database, timeout=30) as db:
        db.execute(f"INSERT INTO {table} (pid, at) VALUES (?, ?)", (os.getpid(), time.time()))
        row = db.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0])


def _independent_step(name: str) -> dg.OpDefinition:
    @dg.op(name=name)
    def step(config: Landing) -> None:
        _record(config.database, "steps")
        time.sleep(0.5)  # long enough that one worker cannot take all the steps alone

    return step


def six_independent_steps() -> dg.JobDefinition:
    """Six steps that depend on nothing, on the Celery executor."""

    @dg.job(executor_def=step_executor("celery"))
    def six_independent_steps() -> None:
        for number in range(6):
            _independent_step(f"step_{number}")()

    return six_independent_steps


def land_one_row() -> dg.JobDefinition:
    """One step that records each attempt, holds its first until its worker is killed, and lands a row."""

    @dg.op
    def land(config: Landing) -> None:
        if _record(config.database, "attempts") == 1:
            time.sleep(120)  # the test kills this worker meanwhile
        with sqlite3.connect(config.database, timeout=30) as db:
            db.execute("INSERT INTO landed (pid, at) VALUES (?, ?)", (os.getpid(), time.time()))

    @dg.job(executor_def=step_executor("celery"))
    def land_one_row() -> None:
        land()

    return land_one_row


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    try:
        with running_redis(tmp_path / "redis") as url:
            yield url
    except FileNotFoundError as missing:
        pytest.skip(str(missing))  # scripts/install-system-packages.sh installs redis-server


@pytest.fixture
def workers(broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Service]]:
    """Two Celery workers of one pool process each, on the broker; stopped (and killed) after the test."""
    monkeypatch.setenv(CELERY_BROKER, broker)
    monkeypatch.setenv(CELERY_VISIBILITY_TIMEOUT, str(VISIBILITY_TIMEOUT_SECONDS))
    # The workers import this module to rebuild the jobs, as the project's import its code location.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "PYTHONDONTWRITEBYTECODE": "1"}
    started = {
        name: start_service(
            name, celery_worker_argv(name, concurrency=1, preload=False), log_dir=tmp_path / "logs", env=env
        )
        for name in WORKERS
    }
    try:
        deadline = time.monotonic() + 60
        while not all(" ready." in s.log.read_text(errors="replace") for s in started.values()):
            dead = [s.name for s in started.values() if s.exited() is not None]
            assert not dead, f"{dead} exited: " + "".join(s.log.read_text() for s in started.values())
            assert time.monotonic() < deadline, "the workers did not start within 60 s"
            time.sleep(0.2)
        yield started
    finally:
        for service in started.values():
            stop_service(service, timeout=10)


def _database(tmp_path: Path) -> Path:
    database = tmp_path / "landing.sqlite3"
    with sqlite3.connect(database) as db:
        for table in ("steps", "attempts", "landed"):
            db.execute(f"CREATE TABLE {table} (pid INTEGER NOT NULL, at REAL NOT NULL)")
    return database


def _home(tmp_path: Path) -> str:
    home = tmp_path / "home"
    home.mkdir()
    return str(home)


def _config(database: Path, ops: list[str]) -> dict[str, object]:
    return {"ops": {op: {"config": {"database": str(database)}} for op in ops}}


def _workers_by_step(instance: dg.DagsterInstance, run_id: str) -> dict[str, list[str]]:
    """Which Celery worker took each step, in order, from the run's event log (as the UI shows it)."""
    taken: dict[str, list[str]] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or not event.is_engine_event:
            continue
        # "Executing steps ... in celery worker", with the worker's name.
        worker = event.engine_event_data.metadata.get("Celery worker")
        if worker is not None:
            taken.setdefault(str(event.step_key), []).append(str(worker.value))
    return taken


def test_the_forked_executor_stays_the_default_and_the_variable_chooses_celery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert STEP_EXECUTOR.name == "forked_steps"  # CRM_PIPELINES_EXECUTOR is not set for the tests
    monkeypatch.setenv(EXECUTOR, "celery")
    assert step_executor().name == "celery_steps"
    monkeypatch.setenv(EXECUTOR, "kubernetes")
    with pytest.raises(
        ValueError,
        match=r"CRM_PIPELINES_EXECUTOR='kubernetes' is not an executor; choose one of celery, forked",
    ):
        step_executor()


def test_independent_steps_run_on_both_workers(workers: dict[str, Service], tmp_path: Path) -> None:
    database = _database(tmp_path)
    ops = [f"step_{n}" for n in range(6)]
    with dg.instance_for_test(temp_dir=_home(tmp_path)) as instance:
        result = dg.execute_job(
            dg.reconstructable(six_independent_steps), instance=instance, run_config=_config(database, ops)
        )
        assert result.success
        taken = _workers_by_step(instance, result.run_id)
    assert sorted(taken) == ops
    assert {worker for names in taken.values() for worker in names} == {f"{w}@{HOST}" for w in WORKERS}
    with sqlite3.connect(database) as db:
        pids = [int(r[0]) for r in db.execute("SELECT pid FROM steps")]
    # Six steps, each once, in the two workers' pool processes (not in this one, where the run ran).
    assert len(pids) == 6
    assert set(pids) <= set().union(*(_pool_pids(s) for s in workers.values()))
    assert all(set(pids) & _pool_pids(s) for s in workers.values())


@dataclass
class KilledMidStep:
    """What a run of ``land_one_row`` saw when a process running its first attempt was SIGKILLed."""

    holder: Service  # the worker whose pool process held the first attempt
    succeeded: bool
    workers_by_step: dict[str, list[str]]
    step_successes: int
    attempts: list[tuple[int, float]]  # (pid, when) of each attempt
    landed: list[tuple[int]]
    killed_at: float


def _kill_mid_step(workers: dict[str, Service], tmp_path: Path, *, whole_worker: bool) -> KilledMidStep:
    database = _database(tmp_path)
    outcome: dict[str, dg.ExecuteJobResult] = {}
    with dg.instance_for_test(temp_dir=_home(tmp_path)) as instance:

        def run() -> None:
            outcome["result"] = dg.execute_job(
                dg.reconstructable(land_one_row), instance=instance, run_config=_config(database, ["land"])
            )

        runner = threading.Thread(target=run, daemon=True)  # a run that never ends must not hold pytest
        runner.start()
        deadline = time.monotonic() + 30
        while not _attempts(database):
            assert time.monotonic() < deadline, "the step did not start within 30 s"
            time.sleep(0.1)
        pool_pid = _attempts(database)[0][0]
        (holder,) = (s for s in workers.values() if pool_pid in _pool_pids(s))
        killed_at = time.time()
        if whole_worker:  # the worker and its pool process, as when its host is lost
            os.killpg(holder.process.pid, signal.SIGKILL)
        else:  # the pool process only, as when the kernel's OOM killer picks it
            os.kill(pool_pid, signal.SIGKILL)
        runner.join(timeout=60)
        assert not runner.is_alive(), "the run did not end within 60 s of the kill"
        result = outcome["result"]
        taken = _workers_by_step(instance, result.run_id)
        successes = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_SUCCESS]
    with sqlite3.connect(database) as db:
        landed = db.execute("SELECT pid FROM landed").fetchall()
    return KilledMidStep(
        holder, result.success, taken, len(successes), _attempts(database), landed, killed_at
    )


def test_a_step_whose_worker_is_killed_runs_again_on_the_other_worker_once(
    workers: dict[str, Service], tmp_path: Path
) -> None:
    killed = _kill_mid_step(workers, tmp_path, whole_worker=True)
    (survivor,) = (s for s in workers.values() if s is not killed.holder)
    assert killed.succeeded
    assert killed.workers_by_step == {"land": [f"{killed.holder.name}@{HOST}", f"{survivor.name}@{HOST}"]}
    (_, (second, second_at)) = killed.attempts
    assert second in _pool_pids(survivor)
    # One row: the killed attempt wrote none, and nothing ran twice.
    assert killed.landed == [(second,)]
    assert killed.step_successes == 1
    # Handed on once the visibility timeout had passed, not at once and not after Celery's default hour.
    # The timeout runs from when the worker reserved the task, a moment before the step started (and
    # so before the kill): CI saw the hand-on 9.6 s after the kill with a 10 s timeout.
    assert VISIBILITY_TIMEOUT_SECONDS - 3 <= second_at - killed.killed_at < VISIBILITY_TIMEOUT_SECONDS + 20


def test_a_step_whose_pool_process_is_killed_is_requeued_at_once(
    workers: dict[str, Service], tmp_path: Path
) -> None:
    killed = _kill_mid_step(workers, tmp_path, whole_worker=False)
    assert killed.succeeded
    assert killed.holder.exited() is None  # the worker lives on, with a new pool process
    assert len(killed.workers_by_step["land"]) == 2
    (_, (second, second_at)) = killed.attempts
    assert killed.landed == [(second,)]
    assert killed.step_successes == 1
    # Requeued by its worker (task_reject_on_worker_lost), not recovered by the visibility timeout.
    assert second_at - killed.killed_at < VISIBILITY_TIMEOUT_SECONDS


def _attempts(database: Path) -> list[tuple[int, float]]:
    with sqlite3.connect(database, timeout=30) as db:
        return [(int(pid), float(at)) for pid, at in db.execute("SELECT pid, at FROM attempts ORDER BY at")]


def _pool_pids(worker: Service) -> set[int]:
    """The worker's pool processes: its children."""
    done = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(worker.process.pid)], capture_output=True, text=True, check=False
    )
    return {int(pid) for pid in done.stdout.split()}
