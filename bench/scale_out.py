"""Benchmark: the nightly job under each executor, side by side, as the UI and the daemon run it.

    uv run python bench/scale_out.py --contacts 300
    uv run python bench/scale_out.py --contacts 100000 --modes in_process,forkserver

Each mode gets a fresh sandbox (``crm-pipelines sandbox`` in a child process: the CRM simulators,
the SFTP server and the ERP database, generated for ``--contacts``), a fresh lake, warehouse and
``DAGSTER_HOME``, and runs ``dagster job execute -j nightly_sync`` for ``--day`` in a child
process, as a run worker does. It reports wall time, the CPU of the run (its process and every
step process: ``RUSAGE_CHILDREN``), the steps, and the overhead per step against the in-process
run: (wall - in-process wall) / steps.

Modes:

- ``in_process``: every step in the run's process, one after another;
- ``spawn``: Dagster's default multiprocess executor: each step a freshly spawned Python process,
  which imports the code location and builds its definitions before it starts;
- ``forkserver``: the project's executor (``crm_pipelines/jobs.py``): steps forked from a server
  that loaded the code location once (``crm_pipelines/preload.py``);
- ``celery``: ``CRM_PIPELINES_EXECUTOR=celery``: each step a Celery task on a ``redis-server``
  started for the mode, run by two workers (``--celery-workers``, ``--celery-concurrency``) that
  built the definitions once before forking their pool (``crm_pipelines/celery_worker.py``), on the
  run's ``DAGSTER_HOME``. The run is still ``dagster job execute``, as in the other modes; the
  workers' startup is not timed;
- ``deploy_local``: ``crm-pipelines deploy-local`` (PostgreSQL instance, Redis, webserver, daemon,
  ``--celery-workers`` workers) with the sandbox in its environment; the nightly is launched through
  the webserver's GraphQL API, as from the UI, and timed from the launch to its end (the queue, the
  run worker's start and the steps). Its CPU is not counted (0).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MODES = {
    "in_process": "execution: {config: {in_process: {}}}",
    "spawn": "execution: {config: {multiprocess: {start_method: {spawn: {}}}}}",
    "forkserver": "",  # the job's own executor
    "celery": "",  # the job's own executor, chosen by CRM_PIPELINES_EXECUTOR
    "deploy_local": "",  # launched through crm-pipelines deploy-local's webserver, on its workers
}


@dataclass
class Outcome:
    mode: str
    wall: float
    cpu: float
    steps: int
    succeeded: bool


def start_sandbox(folder: Path, contacts: int, day: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """``crm-pipelines sandbox`` in a child process; its exported settings once it serves."""
    process = subprocess.Popen(
        [
            str(BIN / "crm-pipelines"),
            "sandbox",
            "--contacts",
            str(contacts),
            "--sandbox-dir",
            str(folder / "world"),
            "--date",
            day,
        ],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    env: dict[str, str] = {}
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("export "):
            name, _, value = line[len("export ") :].rstrip("\n").partition("=")
            env[name] = value.strip("'")
        if line.startswith("# sandbox day"):
            return process, env
    raise RuntimeError("the sandbox stopped before it served")


@contextmanager
def celery_workers(
    folder: Path, env: dict[str, str], *, workers: int, concurrency: int
) -> Iterator[dict[str, str]]:
    """A Redis broker and Celery workers on it, ready; yields the variables that send steps to them."""
    from crm_pipelines.deploy_local import celery_worker_argv, running_redis, start_service, stop_service
    from crm_pipelines.executors import CELERY_BROKER, EXECUTOR

    with running_redis(folder / "redis") as broker:
        celery_env = {CELERY_BROKER: broker, EXECUTOR: "celery"}
        started = [
            start_service(
                f"worker-{n}",
                celery_worker_argv(f"worker-{n}", concurrency=concurrency, preload=True),
                log_dir=folder / "logs",
                env={**env, **celery_env},
                cwd=folder,
            )
            for n in range(1, workers + 1)
        ]
        try:
            while not all(" ready." in s.log.read_text(errors="replace") for s in started):
                if any(s.exited() is not None for s in started):
                    raise RuntimeError(f"a worker exited; see {folder / 'logs'}")
                time.sleep(0.5)
            yield celery_env
        finally:
            for service in started:
                stop_service(service)


def steps_succeeded(home: Path) -> int:
    """Steps that succeeded in the run, from the instance: celery workers log them, not the run's process."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        (record,) = instance.get_run_records()
        return len(instance.all_logs(record.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS))


def run_deploy_local(
    folder: Path, env: dict[str, str], *, day: str, workers: int, concurrency: int
) -> Outcome:
    """The nightly launched through ``crm-pipelines deploy-local``'s webserver; timed from launch to end."""
    from dagster_graphql import DagsterGraphQLClient

    from crm_pipelines.deploy_local import free_port

    folder.chmod(0o755)  # its PostgreSQL runs as nobody when we are root
    port = free_port()
    output = folder / "deploy-local.out"
    argv = [str(BIN / "crm-pipelines"), "deploy-local", "--dir", str(folder / "deploy"), "--port", str(port)]
    argv += ["--workers", str(workers), "--concurrency", str(concurrency)]
    with output.open("wb") as out:
        deploy = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder)
    try:
        while "Ctrl-C" not in output.read_text():
            if deploy.poll() is not None:
                raise RuntimeError(f"deploy-local exited:\n{output.read_text()}")
            time.sleep(1)
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        started = time.perf_counter()
        run_id = client.submit_job_execution("nightly_sync", tags={"dagster/partition": day})
        while (status := client.get_run_status(run_id).value) not in ("SUCCESS", "FAILURE", "CANCELED"):
            time.sleep(2)
        wall = time.perf_counter() - started
        stats = httpx.post(
            f"http://127.0.0.1:{port}/graphql",
            json={"query": STEP_STATS, "variables": {"runId": run_id}},
            timeout=60,
        ).json()["data"]["runOrError"]["stepStats"]
        steps = sum(1 for step in stats if step["status"] == "SUCCESS")
        return Outcome(mode="deploy_local", wall=wall, cpu=0.0, steps=steps, succeeded=status == "SUCCESS")
    finally:
        deploy.send_signal(signal.SIGINT)
        deploy.wait(timeout=120)


STEP_STATS = "query Steps($runId: ID!) { runOrError(runId: $runId) { ... on Run { stepStats { status } } } }"


def run_mode(mode: str, *, contacts: int, day: str, workers: int = 2, concurrency: int = 1) -> Outcome:
    folder = Path(tempfile.mkdtemp(prefix=f"scale-out-{mode}-"))
    sandbox, env = start_sandbox(folder, contacts, day)
    stack = ExitStack()
    try:
        home = folder / "home"
        home.mkdir()
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
        config = folder / "run.yaml"
        config.write_text(MODES[mode] + "\n")
        child_env = {
            **os.environ,
            **env,
            "DAGSTER_HOME": str(home),
            "CRM_PIPELINES_LAKE_DIR": str(folder / "lake"),
            "WAREHOUSE_URL": f"duckdb:///{folder / 'warehouse.duckdb'}",
        }
        if mode == "deploy_local":
            del child_env["DAGSTER_HOME"]  # deploy-local's own, on its PostgreSQL
            return run_deploy_local(folder, child_env, day=day, workers=workers, concurrency=concurrency)
        if mode == "celery":
            child_env.update(
                stack.enter_context(
                    celery_workers(folder, child_env, workers=workers, concurrency=concurrency)
                )
            )
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        argv = [
            str(BIN / "dagster"),
            "job",
            "execute",
            "-m",
            "crm_pipelines.definitions",
            "-a",
            "defs",
            "-j",
            "nightly_sync",
            "--tags",
            f'{{"dagster/partition": "{day}"}}',
        ]
        if MODES[mode]:
            argv += ["-c", str(config)]
        done = subprocess.run(argv, cwd=folder, env=child_env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        log = done.stdout + done.stderr
        succeeded = done.returncode == 0 and "RUN_SUCCESS" in log
        if not succeeded:
            kept = Path(tempfile.gettempdir()) / f"scale-out-{mode}-{contacts}.log"
            kept.write_text(log, encoding="utf-8")
            failed = sorted(set(re.findall(r" - ([\w]+) - STEP_FAILURE", log)))
            print(
                f"{mode}: the run failed; failed steps: {', '.join(failed) or '?'}; log in {kept}", flush=True
            )
        return Outcome(
            mode=mode,
            wall=wall,
            cpu=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            steps=steps_succeeded(home),
            succeeded=succeeded,
        )
    finally:
        stack.close()
        os.killpg(sandbox.pid, signal.SIGINT)
        try:
            sandbox.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(sandbox.pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=300)
    parser.add_argument("--day", default=(dt.date.today() - dt.timedelta(days=1)).isoformat())
    parser.add_argument("--modes", default="in_process,spawn,forkserver,celery")
    parser.add_argument("--celery-workers", type=int, default=2)
    parser.add_argument("--celery-concurrency", type=int, default=1, help="steps each worker runs at once")
    args = parser.parse_args()
    outcomes = [
        run_mode(
            m.strip(),
            contacts=args.contacts,
            day=args.day,
            workers=args.celery_workers,
            concurrency=args.celery_concurrency,
        )
        for m in args.modes.split(",")
        if m.strip()
    ]
    base = next((o for o in outcomes if o.mode == "in_process"), None)
    print(f"command: uv run python bench/scale_out.py {' '.join(sys.argv[1:])}")
    print("| mode | wall s | CPU s | steps | overhead per step s | run |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for o in outcomes:
        overhead = (o.wall - base.wall) / o.steps if base is not None and o.steps else 0.0
        print(
            f"| {o.mode} | {o.wall:.0f} | {o.cpu:.0f} | {o.steps} | {overhead:.2f} | "
            f"{'succeeded' if o.succeeded else 'FAILED'} |"
        )


if __name__ == "__main__":
    main()
