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
  that loaded the code location once (``crm_pipelines/preload.py``).

Celery workers on Redis (``dagster-celery``) are not installed here: that mode is not measured.
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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MODES = {
    "in_process": "execution: {config: {in_process: {}}}",
    "spawn": "execution: {config: {multiprocess: {start_method: {spawn: {}}}}}",
    "forkserver": "",  # the job's own executor
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


def run_mode(mode: str, *, contacts: int, day: str) -> Outcome:
    folder = Path(tempfile.mkdtemp(prefix=f"scale-out-{mode}-"))
    sandbox, env = start_sandbox(folder, contacts, day)
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
        return Outcome(
            mode=mode,
            wall=wall,
            cpu=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            steps=len(re.findall(r"STEP_SUCCESS", log)),
            succeeded=done.returncode == 0 and "RUN_SUCCESS" in log,
        )
    finally:
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
    parser.add_argument("--modes", default="in_process,spawn,forkserver")
    args = parser.parse_args()
    outcomes = [
        run_mode(m.strip(), contacts=args.contacts, day=args.day) for m in args.modes.split(",") if m.strip()
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
