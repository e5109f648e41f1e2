"""The ``crm-pipelines`` command: demo, sandbox, dev and doctor."""

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

from rich.console import Console
from rich.table import Table

from crm_pipelines import settings

# Wide enough for the summary tables when the output is a file or a CI log.
console = Console(width=None if sys.stdout.isatty() else 140)
DATA_DIR = Path("data")


def _default_day() -> dt.date:
    """Yesterday in the business timezone: the last complete day, which the nightly run syncs."""
    from zoneinfo import ZoneInfo

    return dt.datetime.now(ZoneInfo(settings.current_timezone())).date() - dt.timedelta(days=1)


def _prepare_dagster_home() -> Path:
    home = Path(os.environ.get("DAGSTER_HOME") or (DATA_DIR / "dagster_home")).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _start_sandbox(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from crm_pipelines_sandbox.run import Sandbox

    sandbox = Sandbox(Path(args.sandbox_dir), contacts=args.contacts, seed=args.seed, as_of=args.date)
    with console.status(
        f"Preparing the sandbox ({args.contacts:,} contacts, seed {args.seed}, day {args.date})"
    ):
        sandbox.prepare()
    env = sandbox.start()
    return sandbox, env


def cmd_sandbox(args: argparse.Namespace) -> int:
    sandbox, env = _start_sandbox(args)
    for name, value in env.items():
        print(f"export {name}={shlex.quote(value)}")  # noqa: T201 - this is the command's output
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
    sandbox, env = _start_sandbox(args)
    try:
        os.environ.update(env)
        console.print(f"Sandbox running for day {args.date}; starting the Dagster UI (Ctrl-C stops both).")
        return subprocess.call(
            [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-p", str(args.port)]
        )
    except KeyboardInterrupt:
        return 0
    finally:
        sandbox.stop()


def cmd_doctor(args: argparse.Namespace) -> int:
    from crm_pipelines.doctor import run_checks

    rows = run_checks()
    table = Table(title="crm-pipelines doctor")
    for column in ("system", "configured", "reachable", "authenticated", "detail", "how to fix"):
        table.add_column(column)
    mark = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}
    for row in rows:
        table.add_row(
            row.system,
            mark[row.configured],
            mark[row.reachable],
            mark[row.authenticated],
            row.detail,
            row.fix,
        )
    console.print(table)
    return 0 if all(r.ok for r in rows) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crm-pipelines", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def sandbox_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--contacts", type=int, default=2000, help="sandbox scale: people across the CRMs")
        p.add_argument("--seed", type=int, default=42, help="random seed of the sandbox data")
        p.add_argument(
            "--date",
            type=dt.date.fromisoformat,
            default=_default_day(),
            help="business day to sync (default: yesterday)",
        )
        p.add_argument(
            "--sandbox-dir", default=str(DATA_DIR / "sandbox"), help="where the sandbox data lives"
        )

    demo = sub.add_parser("demo", help="run the nightly sync against the embedded sandbox and summarise")
    sandbox_options(demo)
    demo.set_defaults(func=cmd_demo)
    sandbox = sub.add_parser("sandbox", help="serve the sandbox in the foreground and print its env settings")
    sandbox_options(sandbox)
    sandbox.set_defaults(func=cmd_sandbox)
    dev = sub.add_parser("dev", help="the sandbox plus the Dagster UI (dagster dev)")
    sandbox_options(dev)
    dev.add_argument("--port", type=int, default=3000)
    dev.set_defaults(func=cmd_dev)
    doctor = sub.add_parser(
        "doctor", help="check configuration, credentials and connectivity of every system"
    )
    doctor.set_defaults(func=cmd_doctor)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
