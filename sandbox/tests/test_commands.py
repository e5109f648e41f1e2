"""The sandbox's subcommands reach `crm-pipelines` through the entry points in sandbox/pyproject.toml."""

import datetime as dt

from crm_pipelines.cli import build_parser, subcommands
from crm_pipelines_sandbox import cli


def test_demo_sandbox_and_dev_are_installed_subcommands() -> None:
    commands = subcommands()
    assert commands["demo"] is cli.demo_command
    assert commands["sandbox"] is cli.sandbox_command
    assert commands["dev"] is cli.dev_command


def test_their_options_parse_as_before() -> None:
    parser = build_parser(subcommands())
    demo = parser.parse_args(["demo", "--contacts", "100", "--seed", "7", "--date", "2026-11-25"])
    assert demo.func is cli.cmd_demo
    assert (demo.contacts, demo.seed, demo.date) == (100, 7, dt.date(2026, 11, 25))
    assert demo.sandbox_dir == "data/sandbox"
    dev = parser.parse_args(["dev", "--port", "3001"])
    assert dev.func is cli.cmd_dev
    assert dev.port == 3001
