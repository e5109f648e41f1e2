"""`crm-pipelines` finds its subcommands in entry points and explains a missing package."""

from pathlib import Path

import pytest

from crm_pipelines import cli
from crm_pipelines.identity.review import ensure_review_tables
from crm_pipelines.warehouse.connection import Warehouse


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


def test_review_lists_the_queue_and_records_a_decision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"duckdb:///{tmp_path}/warehouse.duckdb"
    monkeypatch.setenv("WAREHOUSE_URL", url)
    warehouse = Warehouse(url)
    with warehouse.transaction() as con:
        ensure_review_tables(con)
        con.execute(
            "INSERT INTO ops.match_review VALUES ('2026-11-25', 'contact', 'salesforce:1', 'hubspot:2', 0.83, "
            "'between review_at and merge_at', '{\"first_name\": \"nickname\"}', NULL, NULL, 'r', now())"
        )
    assert cli.main(["review"]) == 0
    listed = capsys.readouterr().out
    assert "salesforce:1" in listed
    assert "nickname" in listed

    assert cli.main(["review", "--must-link", "salesforce:1", "hubspot:2", "--by", "ana"]) == 0
    with warehouse.connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM ops.match_review").fetchall() == [(0,)]
        assert con.execute(
            "SELECT entity, record_id_a, record_id_b, decision, decided_by FROM ops.match_decisions"
        ).fetchall() == [("contact", "hubspot:2", "salesforce:1", "must_link", "ana")]
