"""The sandbox's ``crm-pipelines`` commands: demo, sandbox and dev.

They reach the product's command through the ``crm_pipelines.commands`` entry points in
``sandbox/pyproject.toml``. Imports that start servers or load the definitions wait for the command.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from crm_pipelines import lake, settings
from crm_pipelines.cli import Command, console

if TYPE_CHECKING:
    from crm_pipelines_sandbox.run import Sandbox

DATA_DIR = Path("data")


def _default_day() -> dt.date:
    """Yesterday in the business timezone: the last complete day, which the nightly run syncs."""
    from zoneinfo import ZoneInfo

    return dt.datetime.now(ZoneInfo(settings.current_timezone())).date() - dt.timedelta(days=1)


def _prepare_dagster_home() -> Path:
    from crm_pipelines.instance import prepare_home

    home = Path(os.environ.get("DAGSTER_HOME") or (DATA_DIR / "dagster_home")).resolve()
    prepare_home(home)  # the shipped dagster.yaml: run retries and a run queue, one run per partition
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _start_sandbox(args: argparse.Namespace, *, webhooks: bool = False) -> tuple[Sandbox, dict[str, str]]:
    """Prepare and start the sandbox's servers; with ``--warehouse postgres`` a PostgreSQL warehouse too."""
    from crm_pipelines_sandbox.run import Sandbox

    sandbox = Sandbox(
        Path(args.sandbox_dir), contacts=args.contacts, seed=args.seed, as_of=args.date, webhooks=webhooks
    )
    if _one_world(sandbox):
        sandbox.reset()  # its drops and CRM stores as generated: the empty lake and warehouse start from them
    with console.status(
        f"Preparing the sandbox ({args.contacts:,} contacts, seed {args.seed}, day {args.date})"
    ):
        sandbox.prepare()
    env = sandbox.start()
    if args.warehouse == "postgres":
        env.update(_start_postgres_warehouse(sandbox))
    return sandbox, env


def _start_postgres_warehouse(sandbox: Sandbox) -> dict[str, str]:
    """A throwaway PostgreSQL server as the warehouse, with its roles; stopped with the sandbox.

    The server starts empty, so the first load publishes every table of the working copy.
    """
    from contextlib import ExitStack

    from crm_pipelines.warehouse.postgres import conninfo_from_url
    from crm_pipelines.warehouse.roles import create_roles
    from crm_pipelines_sandbox.postgres_server import running_postgres

    stack = ExitStack()
    with console.status("Starting PostgreSQL for the warehouse (initdb, pg_ctl)"):
        server = stack.enter_context(running_postgres(database="warehouse"))
        create_roles(conninfo_from_url(server.url()))
    sandbox.on_stop(stack.close)
    console.print(
        f"Warehouse: PostgreSQL on {server.host}:{server.port}/warehouse; models run in "
        f"{settings.working_copy_path()}; roles crm_loader, crm_analyst, crm_pii_reader."
    )
    return {
        settings.WAREHOUSE_URL: server.url(),
        settings.WAREHOUSE_WORKING_COPY: str(settings.working_copy_path()),
    }


def _one_world(sandbox: Sandbox) -> bool:
    """Start the demo's lake and warehouse over when the sandbox is another world than they hold.

    Each scale, seed and day is its own generated world (other records, other keys): a warehouse
    and lake filled from another would read it as mass deletions and edits, and the syncs would
    write it back. The default ``data/`` lake and warehouse are the sandbox's own, so they are
    cleared; a lake or warehouse set by variable is the user's and is never touched.

    Returns:
        Whether they were cleared: then the sandbox's own data must start as generated too (its drop
        folders and CRM stores hold what an earlier run of that world moved and wrote back).
    """

    if os.environ.get(settings.LAKE_DIR) or os.environ.get(settings.WAREHOUSE_URL):
        return False
    marker = DATA_DIR / "sandbox-world.txt"
    world = sandbox.world
    if marker.exists() and marker.read_text().strip() == world:
        return False
    paths = settings.current_paths()
    warehouses = (settings.duckdb_path_from_url(paths.warehouse_url), settings.working_copy_path())
    if paths.lake_dir.exists() or any(w.exists() for w in warehouses):
        console.print(f"A new sandbox world ({world}): the demo lake and warehouse start empty.")
    lake.remove_tree(paths.lake_dir)
    for warehouse in warehouses:
        for path in (warehouse, warehouse.with_name(warehouse.name + ".wal")):
            path.unlink(missing_ok=True)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(world + "\n")
    return True


def cmd_sandbox(args: argparse.Namespace) -> int:
    sandbox, env = _start_sandbox(args, webhooks=True)
    for name, value in env.items():
        print(f"export {name}={shlex.quote(value)}")  # noqa: T201 - this is the command's output
    if sandbox.receiver is not None:
        print(f"# webhooks: {sandbox.receiver.base_url}/webhooks/<sender>")  # noqa: T201
    print(f"# sandbox day: {args.date}; Ctrl-C stops the servers", flush=True)  # noqa: T201
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from crm_pipelines.demo import print_summary, run_nightly

    _prepare_dagster_home()
    sandbox, env = _start_sandbox(args)
    try:
        os.environ.update(env)
        outcome = run_nightly(partition=args.date.isoformat(), console=console)
    finally:
        sandbox.stop()
    print_summary(outcome, console=console)
    return 0 if outcome.success else 1


def cmd_dev(args: argparse.Namespace) -> int:
    _prepare_dagster_home()
    sandbox, env = _start_sandbox(args, webhooks=True)
    try:
        os.environ.update(env)
        if sandbox.receiver is not None:
            console.print(
                f"Webhook receiver on {sandbox.receiver.base_url}/webhooks/<sender>; the webhook_events "
                "sensor turns its events into runs."
            )
        console.print(f"Sandbox running for day {args.date}; starting the Dagster UI (Ctrl-C stops both).")
        return subprocess.call(
            # dg sits beside this interpreter in the project environment (dagster-dg-cli, a dev dependency).
            [str(Path(sys.executable).with_name("dg")), "dev", "--port", str(args.port)]
        )
    except KeyboardInterrupt:
        return 0
    finally:
        sandbox.stop()


def sandbox_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--contacts", type=int, default=2000, help="sandbox scale: people across the CRMs")
    p.add_argument("--seed", type=int, default=42, help="random seed of the sandbox data")
    p.add_argument(
        "--date",
        type=dt.date.fromisoformat,
        default=_default_day(),
        help="business day to sync (default: yesterday)",
    )
    p.add_argument("--sandbox-dir", default=str(DATA_DIR / "sandbox"), help="where the sandbox data lives")
    p.add_argument(
        "--warehouse",
        choices=("duckdb", "postgres"),
        default="duckdb",
        help="duckdb: the embedded file (default); postgres: a PostgreSQL server started for the run",
    )


def dev_options(p: argparse.ArgumentParser) -> None:
    sandbox_options(p)
    p.add_argument("--port", type=int, default=3000)


demo_command = Command(
    help="run the nightly sync against the embedded sandbox and summarise",
    add_arguments=sandbox_options,
    run=cmd_demo,
)
sandbox_command = Command(
    help="serve the sandbox in the foreground and print its env settings",
    add_arguments=sandbox_options,
    run=cmd_sandbox,
)
dev_command = Command(help="the sandbox plus the Dagster UI (dg dev)", add_arguments=dev_options, run=cmd_dev)
