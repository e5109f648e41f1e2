"""The ``crm-pipelines`` command: doctor, and the commands installed packages add (demo, sandbox, dev)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

from rich.console import Console
from rich.table import Table

# Wide enough for the summary tables when the output is a file or a CI log.
console = Console(width=None if sys.stdout.isatty() else 140)

# Other packages add subcommands here: the entry point's name is the subcommand, its object a Command.
COMMANDS_GROUP = "crm_pipelines.commands"
# Subcommands another distribution adds, so that running one without it says what to install.
PROVIDED_BY = {
    "demo": "crm-pipelines-sandbox",
    "sandbox": "crm-pipelines-sandbox",
    "dev": "crm-pipelines-sandbox",
}


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


@dataclass(frozen=True)
class Command:
    """A ``crm-pipelines`` subcommand.

    A package adds one by naming it in its ``pyproject.toml``, e.g.
    ``[project.entry-points."crm_pipelines.commands"]`` ``demo = "crm_pipelines_sandbox.cli:demo_command"``.

    Attributes:
        help: One line for ``crm-pipelines --help``.
        run: Runs the command with the parsed arguments; returns the exit code.
        add_arguments: Adds the command's options to its parser.
    """

    help: str
    run: Callable[[argparse.Namespace], int]
    add_arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments


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


BUILT_IN: dict[str, Command] = {
    "doctor": Command(
        help="check configuration, credentials and connectivity of every system", run=cmd_doctor
    ),
}


def subcommands() -> dict[str, Command]:
    """Every subcommand by name: those installed packages add (``crm_pipelines.commands``), then doctor."""
    commands: dict[str, Command] = {}
    for entry_point in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        command = entry_point.load()
        if not isinstance(command, Command):
            raise TypeError(
                f"{COMMANDS_GROUP} entry point {entry_point.name} = {entry_point.value} is not a Command"
            )
        if entry_point.name in BUILT_IN:
            raise ValueError(f"{COMMANDS_GROUP} entry point {entry_point.value} redefines {entry_point.name}")
        commands[entry_point.name] = command
    return {**commands, **BUILT_IN}


def build_parser(commands: dict[str, Command]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crm-pipelines", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in commands.items():
        subparser = sub.add_parser(name, help=command.help)
        command.add_arguments(subparser)
        subparser.set_defaults(func=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    commands = subcommands()
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in PROVIDED_BY and argv[0] not in commands:
        sys.stderr.write(
            f"crm-pipelines {argv[0]} needs the {PROVIDED_BY[argv[0]]} package, which is not installed.\n"
            f"In a clone of the repository `uv sync` installs it (dev dependency group); elsewhere "
            f"install {PROVIDED_BY[argv[0]]} next to crm-pipelines.\n"
        )
        return 2
    args = build_parser(commands).parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
