"""The ``crm-pipelines`` command: doctor, and the commands installed packages add (demo, sandbox, dev)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from rich.console import Console
from rich.table import Table

from crm_pipelines.deploy_local import cmd_deploy_local, deploy_local_arguments

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


def _review_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--entity", choices=("account", "contact"), default="contact")
    parser.add_argument("--must-link", nargs=2, metavar=("RECORD_A", "RECORD_B"), help="the same one")
    parser.add_argument("--cannot-link", nargs=2, metavar=("RECORD_A", "RECORD_B"), help="different ones")
    parser.add_argument("--by", default=None, help="who decides (default: $USER)")
    parser.add_argument("--note", default=None)
    parser.add_argument("--limit", type=int, default=30, help="pairs listed")


def cmd_review(args: argparse.Namespace) -> int:
    """List the match review queue, or record a decision that every later night honours."""
    import getpass

    from crm_pipelines.identity.review import Decision, Verdict, pending_review, record_decisions
    from crm_pipelines.settings import current_paths
    from crm_pipelines.warehouse.connection import open_warehouse

    warehouse = open_warehouse(current_paths().warehouse_url)
    pair = args.must_link or args.cannot_link
    if pair:
        verdict: Verdict = "must_link" if args.must_link else "cannot_link"
        decision = Decision(args.entity, pair[0], pair[1], verdict, args.by or getpass.getuser(), args.note)
        with warehouse.transaction() as con:
            record_decisions(con, [decision])
        console.print(f"{verdict}: {pair[0]} and {pair[1]} (applied from the next identity run)")
        return 0
    table = Table(title="ops.match_review (most likely first)")
    for column in ("entity", "record a", "record b", "probability", "reason", "levels"):
        table.add_column(column)
    with warehouse.connect(read_only=True) as con:
        for row in pending_review(con, limit=args.limit):
            table.add_row(*(str(v) for v in row))
    console.print(table)
    return 0


def _webhooks_arguments(parser: argparse.ArgumentParser) -> None:
    from crm_pipelines.webhooks.receiver import DEFAULT_MAX_BODY, STORE_PATH

    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--store", type=Path, default=None, help=f"event store file (default ${STORE_PATH})")
    parser.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY, help="largest body accepted, bytes")


def cmd_webhooks(args: argparse.Namespace) -> int:
    """Serve the webhook receiver until interrupted."""
    from crm_pipelines.webhooks.receiver import default_store_path, serve
    from crm_pipelines.webhooks.senders import SENDERS, sender_for

    configured = [name for name in SENDERS if sender_for(name) is not None]
    if not configured:
        variables = ", ".join(cls.secret_variable for cls in SENDERS.values())
        console.print(f"[red]no sender has a secret: set at least one of {variables}[/]")
        return 1
    console.print(f"webhooks for {', '.join(configured)} on http://{args.host}:{args.port}/webhooks/<sender>")
    serve(
        host=args.host, port=args.port, store_path=args.store or default_store_path(), max_body=args.max_body
    )
    return 0


def _erase_arguments(parser: argparse.ArgumentParser) -> None:
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--email", help="an e-mail address the person used in any source")
    who.add_argument("--golden-id", help="their golden contact id (marts.dim_contact.contact_id)")
    parser.add_argument("--requested-by", default=None, help="who asked (default: $USER)")


def cmd_erase(args: argparse.Namespace) -> int:
    """Erase a person everywhere, keep them out from now on, and print what was touched (counts only)."""
    import getpass

    from crm_pipelines.privacy.erase import erase_person
    from crm_pipelines.settings import current_paths
    from crm_pipelines.warehouse.connection import open_warehouse

    paths = current_paths()
    report = erase_person(
        warehouse=open_warehouse(paths.warehouse_url),
        lake_dir=paths.lake_dir,
        email=args.email,
        golden_id=args.golden_id,
        requested_by=args.requested_by or getpass.getuser(),
    )
    table = Table(title=f"erasure {report.request_id} (ops.erasure_audit)")
    for column in ("place", "rows erased", "rows pseudonymised"):
        table.add_column(column)
    for place, counts in sorted(report.places.items()):
        table.add_row(place, str(counts["erased"]), str(counts["pseudonymised"]))
    console.print(table)
    console.print(
        f"{report.golden_records} golden records, {report.source_records} source records found; "
        f"{report.rows_erased} rows erased, {report.lake_files_rewritten} lake files rewritten"
    )
    return 0


def _roles_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--member",
        action="append",
        default=[],
        metavar="ROLE=LOGIN",
        help="make an existing login a member, e.g. crm_analyst=alice (repeatable)",
    )


def cmd_warehouse_roles(args: argparse.Namespace) -> int:
    """Create the PostgreSQL warehouse's roles (loader, analyst, PII reader) as its owner."""
    from crm_pipelines import settings
    from crm_pipelines.warehouse.postgres import conninfo_from_url
    from crm_pipelines.warehouse.roles import create_roles

    url = os.environ.get(settings.WAREHOUSE_ADMIN_URL) or os.environ.get(settings.WAREHOUSE_URL, "")
    if not url.startswith("postgres"):
        console.print(f"[red]roles are for a PostgreSQL warehouse: set {settings.WAREHOUSE_ADMIN_URL}[/]")
        return 1
    members: dict[str, list[str]] = {}
    for item in args.member:
        role, _, login = item.partition("=")
        if not login:
            console.print(f"[red]--member takes ROLE=LOGIN, got {item!r}[/]")
            return 1
        members.setdefault(role, []).append(login)
    report = create_roles(conninfo_from_url(url), members=members)
    console.print(
        f"roles: {', '.join(report.created) or 'none new'} created; {report.tables_owned} tables owned by "
        f"crm_loader; members granted: {', '.join(f'{r}={m}' for r, m in report.members) or 'none'}"
    )
    return 0


def _confirm_deletes_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, help="the source (sources.yaml), e.g. hubspot")
    parser.add_argument("--dataset", required=True, help="the dataset, e.g. contacts")
    parser.add_argument(
        "--count",
        type=int,
        required=True,
        help="deletions allowed in the next read (the number the stop gave)",
    )
    parser.add_argument("--by", default=None, help="who confirms (default: $USER)")


def cmd_confirm_deletes(args: argparse.Namespace) -> int:
    """Let the next read of a dataset delete up to --count records past its delete guard, once."""
    import getpass

    from crm_pipelines.delete_guard import confirm_deletions
    from crm_pipelines.settings import current_paths

    path = confirm_deletions(
        lake_dir=current_paths().lake_dir,
        source=args.source,
        dataset=args.dataset,
        count=args.count,
        by=args.by or getpass.getuser(),
    )
    console.print(
        f"the next read of {args.source} {args.dataset} may delete up to {args.count} records ({path})"
    )
    return 0


BUILT_IN: dict[str, Command] = {
    "doctor": Command(
        help="check configuration, credentials and connectivity of every system", run=cmd_doctor
    ),
    "review": Command(
        help="list the match review queue, or decide a pair (--must-link / --cannot-link A B)",
        run=cmd_review,
        add_arguments=_review_arguments,
    ),
    "erase": Command(
        help="erase a person on request (--email or --golden-id) and keep them out of later nights",
        run=cmd_erase,
        add_arguments=_erase_arguments,
    ),
    "confirm-deletes": Command(
        help="let the next read of a dataset delete more than its guard allows (--source --dataset --count)",
        run=cmd_confirm_deletes,
        add_arguments=_confirm_deletes_arguments,
    ),
    "warehouse-roles": Command(
        help="create the PostgreSQL warehouse's roles: crm_loader, crm_analyst (masked marts), crm_pii_reader",
        run=cmd_warehouse_roles,
        add_arguments=_roles_arguments,
    ),
    "deploy-local": Command(
        help="PostgreSQL, Redis, the Dagster webserver and daemon and Celery workers on this machine (Ctrl-C stops)",
        run=cmd_deploy_local,
        add_arguments=deploy_local_arguments,
    ),
    "webhooks": Command(
        help="serve the webhook receiver (POST /webhooks/<sender>, events stored before the 200)",
        run=cmd_webhooks,
        add_arguments=_webhooks_arguments,
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
