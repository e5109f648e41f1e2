"""`crm-pipelines` finds its subcommands in entry points and explains a missing package."""

import pytest

from crm_pipelines import cli


def test_without_the_sandbox_demo_says_which_package_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "entry_points", lambda group: [])
    assert cli.main(["demo", "--contacts", "100"]) == 2
    error = capsys.readouterr().err
    assert "crm-pipelines demo needs the crm-pipelines-sandbox package" in error


def test_without_the_sandbox_doctor_is_still_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "entry_points", lambda group: [])
    args = cli.build_parser(cli.subcommands()).parse_args(["doctor"])
    assert args.func is cli.cmd_doctor
