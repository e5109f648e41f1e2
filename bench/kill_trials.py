"""Kill trials: SIGKILL the nightly run at random points, run it again, compare with a clean run.

    cd bench && ../.venv/bin/python kill_trials.py --trials 10 --contacts 300 --workdir /tmp/crm-kill-trials

``--lake bucket`` puts each night's lake in its own prefix of a SeaweedFS S3 server started for the
trials (``CRM_PIPELINES_LAKE_DIR=s3://lake/<night>``), and counts as leftovers the objects and local
staging files a killed writer left.

(``--workdir`` keeps the generated sandbox in ``DIR/pristine`` for the next invocation; every run of
the night works on a fresh copy of it in ``DIR/<name>/sandbox`` with an empty lake, warehouse,
rate-limit folder and ``DAGSTER_HOME`` of its own, as ``bench/nightly_sync.py`` does.)

This process starts the sandbox's servers (the CRM simulators, the SFTP server: threads of this
process), and each night runs the ``nightly_sync`` job of one day in a child process
(``kill_trials.py --child``, ``execute_in_process`` on the ``DAGSTER_HOME`` instance with the shipped
``dagster.yaml``, as ``crm-pipelines demo`` runs it) in a session of its own, so a SIGKILL of its
process group takes the pipeline down and leaves the CRMs, the ERP database file and the SFTP server
as they were.

1. Two clean references: the night runs to completion on two fresh copies. A column whose content
   differs between the two (``loaded_at``, ``_extracted_at``, the CRMs' write-back stamps, ids of
   records the syncs create, ...), or whose values pair up with other rows in the two, is volatile:
   it is left out of every comparison and listed; so are every ``run_id`` and the simulators' write
   counter ``_seq`` (the order of the writes). A table whose row count differs between two clean
   runs could not be compared and is listed too.
2. Each trial: a fresh copy; the night starts in a child; a random time in [1 s, T) after its first
   step started (T: the first clean run's time from its first step to its end; before the first
   step the child only imports the definitions; ``--rng-seed``, printed) the child's process group
   gets SIGKILL. The steps that had ended and those in flight are read from the child's progress
   file, the killed run's status from the instance. Then the night of the same day runs again in a
   fresh child, to completion, with no step between.
3. The trial's warehouse (every table of raw, staging, core, marts, ops), the CRM simulators' and the
   ERP's SQLite stores (every table) and the SFTP server's files are compared with the first clean
   run's: per table the row count and an order-independent hash of the rows (a multiset: a doubled
   row changes it) without the volatile columns. A table with a ``run_id`` column that differs only
   by rows of the killed run (the run logs: ``ops.reconciliation``, ``ops.sync_runs``, ...) is equal
   once those rows are left out, and reported as such.
4. "No manual repair": after the re-run no ``*.inprogress``/``*.tmp`` file is left in the lake, the
   warehouse has no ``.wal`` file beside it and opens, its writer lock can be taken at once, and no
   SQLite journal is left in the rate-limit folder. What a kill leaves before the re-run is reported too.

The killed run stays STARTED in the instance's run storage: with ``execute_in_process`` no run worker
is there for the daemon to check, and the shipped ``dagster.yaml`` does not enable run monitoring.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import random
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
from filelock import FileLock, Timeout
from nightly_sync import fresh_copy  # bench/nightly_sync.py (the scripts run from bench/)

from crm_pipelines import lake, settings
from crm_pipelines.deploy_local import S3Endpoint, running_s3
from crm_pipelines.instance import prepare_home
from crm_pipelines_sandbox.run import Sandbox

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = ("raw", "staging", "core", "marts", "ops")
# The run's id, and the simulators' write counter (the order of the writes, which a re-run changes).
ALWAYS_VOLATILE = frozenset({"run_id", "_seq"})
MASK = (1 << 128) - 1
DEFAULT_DAY = dt.date(2026, 11, 30)

# A table as read: its column names and its rows.
Table = tuple[list[str], list[tuple[Any, ...]]]


# ---------------------------------------------------------------------------------------------------
# The child: one night of nightly_sync, its progress written line by line as the events are stored.


def child_main(progress: Path, day: str) -> int:
    from crm_pipelines.definitions import defs

    job = defs().resolve_job_def("nightly_sync")
    instance = dg.DagsterInstance.get()
    storage = instance.event_log_storage
    store_event = storage.store_event
    out = progress.open("a", buffering=1)  # line-buffered: what a killed child wrote is on disk
    seen_run: set[str] = set()

    def watched(event: dg.EventLogEntry) -> None:
        store_event(event)
        if event.run_id not in seen_run:
            seen_run.add(event.run_id)
            out.write(f"RUN {event.run_id}\n")
        dagster_event = event.dagster_event
        if dagster_event is not None and dagster_event.step_key is not None:
            kind = dagster_event.event_type
            if kind in (
                dg.DagsterEventType.STEP_START,
                dg.DagsterEventType.STEP_SUCCESS,
                dg.DagsterEventType.STEP_FAILURE,
            ):
                out.write(f"{kind.value} {dagster_event.step_key} {time.time():.3f}\n")

    setattr(storage, "store_event", watched)  # noqa: B010 (the instance's own, for this benchmark)
    result = job.execute_in_process(
        partition_key=day,
        instance=instance,
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    out.write(f"END {'success' if result.success else 'failure'} {time.time():.3f}\n")
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.STEP_FAILURE:
            out.write(f"FAILED {event.step_key}: {(event.message or '')[:300]!r}\n")
    out.close()
    return 0 if result.success else 1


@dataclass
class Progress:
    run_ids: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    succeeded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    ended: str = ""
    failures: list[str] = field(default_factory=list)
    first_start: float | None = None  # when the first step started (time.time())
    last: float | None = None  # the last step event's or the end's time

    @property
    def run_time(self) -> float:
        """Seconds from the first step's start to the end (0 before any)."""
        return 0.0 if self.first_start is None or self.last is None else self.last - self.first_start

    @property
    def in_flight(self) -> list[str]:
        done = set(self.succeeded) | set(self.failed)
        return [s for s in self.started if s not in done]


def read_progress(path: Path) -> Progress:
    progress = Progress()
    if not path.exists():
        return progress
    for line in path.read_text().splitlines():
        head, _, rest = line.partition(" ")
        if head == "RUN":
            progress.run_ids.append(rest)
        elif head == "STEP_START":
            progress.started.append(rest.split()[0])
            if progress.first_start is None:
                progress.first_start = float(rest.split()[1])
        elif head == "STEP_SUCCESS":
            progress.succeeded.append(rest.split()[0])
            progress.last = float(rest.split()[1])
        elif head == "STEP_FAILURE":
            progress.failed.append(rest.split()[0])
        elif head == "END":
            progress.ended, _, at = rest.partition(" ")
            progress.last = float(at)
        elif head == "FAILED":
            progress.failures.append(rest)
    return progress


# ---------------------------------------------------------------------------------------------------
# The parent: sandboxes, nights in children, fingerprints.


@dataclass
class Place:
    """One night's world: a fresh copy of the sandbox and empty pipeline folders."""

    root: Path

    @property
    def sandbox(self) -> Path:
        return self.root / "sandbox"

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def rate_limits(self) -> Path:
        return self.root / "rate-limits"

    @property
    def home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def lake_url(self) -> str:
        """The lake: a folder of the place, or its own prefix of the bucket (``--lake bucket``)."""
        return f"s3://{BUCKET.bucket}/{self.root.name}" if BUCKET is not None else str(self.lake)

    def env(self) -> dict[str, str]:
        return {
            **(BUCKET.environment() if BUCKET is not None else {}),
            settings.LAKE_DIR: self.lake_url,
            settings.WAREHOUSE_URL: f"duckdb:///{self.warehouse}",
            settings.RATE_LIMIT_DIR: str(self.rate_limits),
            "DAGSTER_HOME": str(self.home),
            "PYTHONDONTWRITEBYTECODE": "1",
        }


# The S3 server of ``--lake bucket`` (None: each night's lake is a folder).
BUCKET: S3Endpoint | None = None


def new_place(root: Path, pristine: Sandbox) -> tuple[Place, Sandbox]:
    if root.exists():
        shutil.rmtree(root)
    place = Place(root)
    fresh_copy(pristine, place.sandbox)
    prepare_home(place.home)
    box = Sandbox(place.sandbox, contacts=pristine.contacts, seed=pristine.seed, as_of=pristine.as_of)
    return place, box


def start_child(
    place: Place, sandbox_env: dict[str, str], day: dt.date, progress: Path
) -> subprocess.Popen[bytes]:
    env = {**os.environ, **sandbox_env, **place.env()}
    log = (place.root / f"{progress.stem}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(progress), day.isoformat()],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: SIGKILL reaches every process it started
    )


def run_to_end(
    place: Place, env: dict[str, str], day: dt.date, name: str, timeout: float
) -> tuple[float, Progress]:
    progress_path = place.root / f"{name}.progress"
    started = time.monotonic()
    child = start_child(place, env, day, progress_path)
    try:
        child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    return time.monotonic() - started, read_progress(progress_path)


def sqlite_tables(path: Path) -> dict[str, Table]:
    tables: dict[str, Table] = {}
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
        names = [
            r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        ]
        for name in names:
            cursor = con.execute(f'SELECT * FROM "{name}"')
            columns = [d[0] for d in cursor.description]
            tables[name] = (columns, cursor.fetchall())
    return tables


def warehouse_tables(path: Path) -> dict[str, Table]:
    tables: dict[str, Table] = {}
    if not path.exists():
        return tables
    with closing(duckdb.connect(str(path), read_only=True)) as con:
        names = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema IN "
            f"({', '.join(repr(s) for s in SCHEMAS)}) AND table_type = 'BASE TABLE' ORDER BY 1, 2"
        ).fetchall()
        for schema, name in names:
            cursor = con.execute(f'SELECT * FROM "{schema}"."{name}"')
            columns = [str(d[0]) for d in cursor.description or []]
            tables[f"{schema}.{name}"] = (columns, cursor.fetchall())
    return tables


def world_tables(place: Place) -> dict[str, Table]:
    """Every table the night writes: the warehouse's, the stores', the SFTP server's file list."""
    tables = {f"warehouse:{k}": v for k, v in warehouse_tables(place.warehouse).items()}
    folder = next(p for p in place.sandbox.iterdir() if p.is_dir() and (p / "layout.json").exists())
    for store in sorted([*folder.glob("*.sqlite"), *folder.glob("crms/*.sqlite")]):
        label = store.relative_to(folder).as_posix()
        tables.update({f"{label}:{k}": v for k, v in sqlite_tables(store).items()})
    sftp = folder / "sftp"
    files = [
        (p.relative_to(sftp).as_posix(), p.stat().st_size) for p in sorted(sftp.rglob("*")) if p.is_file()
    ]
    tables["sftp:files"] = (["path", "size"], files)
    return tables


def _h(value: object) -> int:
    return int.from_bytes(hashlib.blake2b(repr(value).encode(), digest_size=16).digest(), "big")


def multiset(values: Iterable[object]) -> int:
    """An order-independent hash of a multiset: the sum of the members' hashes (a doubled row counts twice)."""
    return sum(_h(v) for v in values) & MASK


@dataclass
class Fingerprint:
    rows: int
    content: int
    columns: dict[str, int]


def fingerprint(table: Table, volatile: frozenset[str], only_run: str | None = None) -> Fingerprint:
    columns, rows = table
    if only_run is not None and "run_id" in columns:
        at = columns.index("run_id")
        rows = [r for r in rows if r[at] == only_run]
    keep = [i for i, c in enumerate(columns) if c not in volatile and c not in ALWAYS_VOLATILE]
    return Fingerprint(
        rows=len(rows),
        content=multiset(tuple(r[i] for i in keep) for r in rows),
        columns={c: multiset(r[i] for r in rows) for i, c in enumerate(columns)},
    )


@dataclass
class Reference:
    tables: dict[str, Table]
    run_id: str
    volatile: dict[str, frozenset[str]]  # table -> columns that differ between two clean runs
    unstable: dict[str, tuple[int, int]]  # table -> row counts of two clean runs that differ
    by_column: set[str]  # tables compared by row count and each column's values, not whole rows


def learn_volatile(
    a: dict[str, Table], b: dict[str, Table]
) -> tuple[dict[str, frozenset[str]], dict[str, tuple[int, int]], set[str]]:
    """What differs between two clean runs: volatile columns, row counts, tables compared by column."""
    volatile: dict[str, frozenset[str]] = {}
    unstable: dict[str, tuple[int, int]] = {}
    by_column: set[str] = set()
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            unstable[name] = (len(a.get(name, ([], []))[1]), len(b.get(name, ([], []))[1]))
            continue
        fa, fb = fingerprint(a[name], frozenset()), fingerprint(b[name], frozenset())
        if fa.rows != fb.rows:
            unstable[name] = (fa.rows, fb.rows)
            continue
        differ = set(c for c in fa.columns if fa.columns[c] != fb.columns.get(c))
        if fingerprint(a[name], frozenset(differ)).content != fingerprint(b[name], frozenset(differ)).content:
            # Each column holds the same values in both, but not in the same rows (a write order, the
            # ids of created records): the column whose removal pairs the rows up again is volatile too.
            for column in a[name][0]:
                without = frozenset(differ | {column})
                if fingerprint(a[name], without).content == fingerprint(b[name], without).content:
                    differ.add(column)
                    break
            else:
                by_column.add(name)
        if differ:
            volatile[name] = frozenset(differ)
    return volatile, unstable, by_column


@dataclass
class Comparison:
    equal: list[str] = field(default_factory=list)
    run_log: dict[str, int] = field(default_factory=dict)  # equal but for N rows of the killed run
    different: dict[str, str] = field(default_factory=dict)


def compare(reference: Reference, tables: dict[str, Table], final_run: str) -> Comparison:
    result = Comparison()
    for name in sorted(set(reference.tables) | set(tables)):
        if name in reference.unstable:
            continue
        if name not in tables or name not in reference.tables:
            result.different[name] = "missing" if name not in tables else "extra table"
            continue
        volatile = reference.volatile.get(name, frozenset())
        want = fingerprint(reference.tables[name], volatile)
        got = fingerprint(tables[name], volatile)
        if (want.rows, want.content) == (got.rows, got.content):
            result.equal.append(name)
            continue
        if (
            name in reference.by_column
            and want.rows == got.rows
            and all(got.columns[c] == want.columns.get(c) for c in got.columns if c not in volatile)
        ):
            result.equal.append(name)
            continue
        if "run_id" in tables[name][0]:
            want_run = fingerprint(reference.tables[name], volatile, only_run=reference.run_id)
            got_run = fingerprint(tables[name], volatile, only_run=final_run)
            if (want_run.rows, want_run.content) == (
                got_run.rows,
                got_run.content,
            ) and want.rows == want_run.rows:
                result.run_log[name] = got.rows - got_run.rows
                continue
        what = (
            f"{got.rows:,} rows vs {want.rows:,}" if got.rows != want.rows else f"{got.rows:,} rows, content"
        )
        if got.rows == want.rows:
            columns = sorted(
                c
                for c in got.columns
                if c not in volatile | ALWAYS_VOLATILE and got.columns[c] != want.columns.get(c)
            )
            what += f" ({', '.join(columns)})" if columns else ""
        result.different[name] = what
    return result


def leftovers(place: Place) -> list[str]:
    """What a person would have to clean up: temporary lake files, a WAL, a held lock, journals."""
    found: list[str] = []
    if place.lake.exists():
        found += [
            f"lake/{p.relative_to(place.lake)}"
            for p in place.lake.rglob("*")
            if p.name.endswith((".inprogress", ".tmp"))
        ]
    if BUCKET is not None:
        in_bucket = lake.files_under(lake.lake_root(place.lake_url), "*")
        found += [
            "/".join(("bucket", *parts))
            for _, parts in in_bucket
            if parts[-1].endswith((".inprogress", ".tmp"))
        ]
        found += [f"staging area/{p.name}" for p in lake.staging_area().glob("*.inprogress")]
    wal = place.warehouse.with_name(place.warehouse.name + ".wal")
    if wal.exists():
        found.append(wal.name)
    lock = FileLock(str(place.warehouse) + ".lock", timeout=0)
    try:
        with lock:
            pass
    except Timeout:
        found.append("warehouse lock held")
    if place.warehouse.exists():
        try:
            duckdb.connect(str(place.warehouse), read_only=True).close()
        except duckdb.Error as error:
            found.append(f"warehouse does not open: {error}")
    if place.rate_limits.exists():
        found += [
            f"rate-limits/{p.name}"
            for p in place.rate_limits.iterdir()
            if p.name.endswith(("-journal", "-wal"))
        ]
    return found


def clean_night(
    pristine: Sandbox, root: Path, day: dt.date, timeout: float, *, reuse: bool
) -> tuple[float, Progress, Place]:
    """The night of ``day`` to its end on a fresh copy (or the one an earlier invocation left, ``reuse``)."""
    done = read_progress(root / "clean.progress")
    if reuse and done.ended == "success":
        return done.run_time, done, Place(root)
    place, box = new_place(root, pristine)
    env = box.start()
    try:
        wall, progress = run_to_end(place, env, day, "clean", timeout)
    finally:
        box.stop()
    if progress.ended != "success":
        raise SystemExit(f"the clean night in {root} did not succeed: {progress.failures[:5]}")
    return wall, progress, place


@dataclass
class Trial:
    number: int
    kill_at: float
    done_steps: int = 0
    in_flight: list[str] = field(default_factory=list)
    finished_before_kill: bool = False
    killed_run_status: str = ""
    after_kill: list[str] = field(default_factory=list)
    rerun_wall: float = 0.0
    rerun_ok: bool = False
    rerun_failures: list[str] = field(default_factory=list)
    comparison: Comparison = field(default_factory=Comparison)
    left: list[str] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        if not self.rerun_ok:
            return "RE-RUN FAILED"
        if self.comparison.different:
            return "DIFFERENT"
        return "equal" if not self.left else "equal, LEFTOVERS"


def run_status(place: Place, run_id: str) -> str:
    os.environ["DAGSTER_HOME"] = str(place.home)
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(run_id)
        return "" if run is None else run.status.value


def kill_trial(
    number: int,
    pristine: Sandbox,
    workdir: Path,
    day: dt.date,
    kill_at: float,
    reference: Reference,
    timeout: float,
) -> Trial:
    trial = Trial(number, kill_at)
    place, box = new_place(workdir / f"trial-{number:02d}", pristine)
    env = box.start()
    try:
        progress_path = place.root / "killed.progress"
        child = start_child(place, env, day, progress_path)
        # The clock starts at the run's first step: before it the child only imports the definitions.
        while child.poll() is None and read_progress(progress_path).first_start is None:
            time.sleep(0.1)
        try:
            child.wait(timeout=kill_at)
            trial.finished_before_kill = True
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        killed = read_progress(progress_path)
        trial.done_steps = len(killed.succeeded)
        trial.in_flight = killed.in_flight
        if killed.run_ids:
            trial.killed_run_status = run_status(place, killed.run_ids[0])
        trial.after_kill = leftovers(place)
        trial.rerun_wall, rerun = run_to_end(place, env, day, "rerun", timeout)
    finally:
        box.stop()
    trial.rerun_ok = rerun.ended == "success"
    trial.rerun_failures = rerun.failures
    if rerun.run_ids:
        trial.comparison = compare(reference, world_tables(place), rerun.run_ids[0])
    trial.left = leftovers(place)
    return trial


def kinds(found: Sequence[str]) -> str:
    """Leftovers counted by kind: lake temporary files, the WAL, the lock, rate-limit journals."""
    counts: dict[str, int] = {}
    for item in found:
        kind = {"lake": "lake temp file", "rate-limits": "rate-limit SQLite -wal"}.get(
            item.split("/")[0], item
        )
        counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{n} {kind}" for kind, n in counts.items())


def short(steps: Sequence[str], limit: int = 2) -> str:
    shown = ", ".join(steps[:limit])
    return shown + (f" +{len(steps) - limit}" if len(steps) > limit else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--contacts", type=int, default=300, help="sandbox scale (default 300)")
    parser.add_argument("--seed", type=int, default=42, help="the sandbox data's seed")
    parser.add_argument(
        "--day", type=dt.date.fromisoformat, default=DEFAULT_DAY, help="the night's partition"
    )
    parser.add_argument("--rng-seed", type=int, default=None, help="seed of the kill times (default: random)")
    parser.add_argument("--workdir", default=None, help="keep the generated data here (default: a temp dir)")
    parser.add_argument(
        "--keep", action="store_true", help="keep every trial's folder (default: the last only)"
    )
    parser.add_argument(
        "--window",
        type=float,
        default=None,
        help="kill within this many seconds of the first step (default: the clean run's first step to end)",
    )
    parser.add_argument(
        "--reuse-clean",
        action="store_true",
        help="reuse the clean runs an earlier invocation left (debugging)",
    )
    parser.add_argument(
        "--lake",
        choices=("folder", "bucket"),
        default="folder",
        help="bucket: each night's lake in its own prefix of a SeaweedFS S3 server started for the trials",
    )
    args = parser.parse_args()
    with ExitStack() as stack:
        if args.lake == "bucket":
            global BUCKET
            BUCKET = stack.enter_context(running_s3(Path(args.workdir or tempfile.mkdtemp()) / "s3"))
            os.environ.update(BUCKET.environment())  # this process reads the lakes too (leftovers)
        trials(args)


def trials(args: argparse.Namespace) -> None:
    rng_seed: int = args.rng_seed if args.rng_seed is not None else secrets.randbelow(2**31)
    workdir = Path(args.workdir or Path(os.environ.get("TMPDIR", "/tmp")) / f"crm-kill-trials-{os.getpid()}")
    workdir.mkdir(parents=True, exist_ok=True)
    command = (
        f"kill_trials.py --trials {args.trials} --contacts {args.contacts} --seed {args.seed} "
        f"--day {args.day} --rng-seed {rng_seed} --workdir {workdir}"
        + (f" --window {args.window:g}" if args.window else "")
        + (" --reuse-clean" if args.reuse_clean else "")
        + (" --lake bucket" if args.lake == "bucket" else "")
    )
    print(f"command: {command}", flush=True)

    pristine = Sandbox(workdir / "pristine", contacts=args.contacts, seed=args.seed, as_of=args.day)
    started = time.monotonic()
    pristine.prepare()
    print(
        f"sandbox data ({args.contacts:,} contacts, seed {args.seed}, day {args.day}): {time.monotonic() - started:.1f}s"
    )

    nights: list[tuple[float, Progress, Place]] = []
    for name in ("a", "b"):
        nights.append(
            clean_night(pristine, workdir / f"clean-{name}", args.day, 3600, reuse=args.reuse_clean)
        )
        wall, progress, _ = nights[-1]
        print(
            f"clean night {name.upper()}: {wall:.1f}s wall ({progress.run_time:.1f}s from the "
            f"first step to the end), {len(progress.succeeded)} steps",
            flush=True,
        )
    (wall_a, progress_a, place_a), (_, progress_b, place_b) = nights
    steps = len(progress_a.succeeded)
    tables_a, tables_b = world_tables(place_a), world_tables(place_b)
    volatile, unstable, by_column = learn_volatile(tables_a, tables_b)
    reference = Reference(tables_a, progress_a.run_ids[0], volatile, unstable, by_column)
    same = compare(
        Reference(tables_b, progress_b.run_ids[0], volatile, unstable, by_column),
        tables_a,
        progress_a.run_ids[0],
    )
    print(
        f"\n{len(tables_a)} tables compared ({sum(1 for t in tables_a if t.startswith('warehouse:'))} in the "
        f"warehouse); clean A vs B: {len(same.equal)} equal, {len(same.different)} different "
        f"{'; '.join(f'{k}: {v}' for k, v in same.different.items())}"
    )
    print("volatile columns (differ between the two clean runs; left out of every comparison):")
    for name, columns in sorted(volatile.items()):
        print(f"  {name}: {', '.join(sorted(columns))}")
    for name, (rows_a, rows_b) in sorted(unstable.items()):
        print(f"  NOT COMPARED {name}: {rows_a:,} vs {rows_b:,} rows in two clean runs")
    for name in sorted(by_column):
        print(f"  {name}: compared by row count and each column's values (rows pair up differently)")
    print(
        f"  and every run_id and _seq column. clean-run leftovers: {leftovers(place_a) or 'none'}", flush=True
    )

    rng = random.Random(rng_seed)
    upper = max(args.window or progress_a.run_time, 1.5)
    print(
        f"\nkill times: uniform in [1 s, {upper:.1f} s) after the run's first step started (the clean run's "
        f"time from its first step to its end), rng seed {rng_seed}\n",
        flush=True,
    )
    header = (
        f"| trial | killed at | steps done / {steps} | in flight | killed run's status | left after kill "
        "| re-run | outcome | tables equal | run-log rows of the killed run | different |"
    )
    rows: list[str] = []
    trials: list[Trial] = []
    for number in range(1, args.trials + 1):
        kill_at = rng.uniform(1.0, upper)
        trial = kill_trial(
            number, pristine, workdir, args.day, kill_at, reference, timeout=max(600.0, 20 * wall_a)
        )
        trials.append(trial)
        row = (
            f"| {number} | {kill_at:.1f} s{' (ended first)' if trial.finished_before_kill else ''} "
            f"| {trial.done_steps} | {short(trial.in_flight) or '-'} | {trial.killed_run_status or '-'} "
            f"| {kinds(trial.after_kill) or 'none'} | {trial.rerun_wall:.1f} s "
            f"| {trial.outcome} | {len(trial.comparison.equal) + len(trial.comparison.run_log)} "
            f"| {sum(trial.comparison.run_log.values())} "
            f"| {'; '.join(f'{k}: {v}' for k, v in trial.comparison.different.items()) or '-'} |"
        )
        rows.append(row)
        print(row, flush=True)
        for failure in trial.rerun_failures[:5]:
            print(f"    re-run failure: {failure}")
        if trial.left:
            print(f"    left after the re-run: {', '.join(trial.left)}")
        if not args.keep and number < args.trials and trial.outcome == "equal":
            shutil.rmtree(workdir / f"trial-{number:02d}")

    print(f"\n{header}\n| ---: | ---: | ---: | --- | --- | --- | ---: | --- | ---: | ---: | --- |")
    print("\n".join(rows))
    equal = sum(1 for t in trials if t.outcome == "equal")
    print(
        f"\n{len(trials)} trials: {equal} equal to the clean run with nothing left to repair, "
        f"{sum(1 for t in trials if t.comparison.different)} different, "
        f"{sum(1 for t in trials if not t.rerun_ok)} re-runs failed, "
        f"{sum(1 for t in trials if t.left)} with leftovers; clean night {wall_a:.1f}s.\ncommand: {command}"
    )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        sys.exit(child_main(Path(sys.argv[2]), sys.argv[3]))
    main()
