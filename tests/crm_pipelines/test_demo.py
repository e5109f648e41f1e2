"""The demo's summary, as a newcomer reads it: every header over its own column."""

from decimal import Decimal

from rich.console import Console

from crm_pipelines.demo import DemoOutcome, print_summary


def test_the_summary_shows_every_column_under_its_header_and_the_control_totals() -> None:
    outcome = DemoOutcome(success=True, run_id="run-1", partition="2026-11-25", seconds=1.0)
    outcome.step_rows = [("finance_sftp/invoices", 97, 1)]
    outcome.reconciliation = [("finance_sftp", "invoice", 98, 96, 0, 2, 0, True)]
    version = "invoices_2026-11-25.csv@3160898e47f4"
    totals = {
        "source": "675514.52",
        "quarantine_quality": "4606.14",
        "staging": "670908.38",
        "marts": "670908.38",
    }
    outcome.control_totals = [
        ("finance_sftp", "invoice", version, layer, "amount_gross", Decimal(value), Decimal(0) if layer in ("staging", "marts") else None)
        for layer, value in totals.items()
    ]  # fmt: skip
    outcome.unreadable = [
        {"source": "finance_sftp", "file": "invoices_2026-11-25.csv@3160898e47f4",
         "record_id": "invoices_2026-11-25.csv:16", "rule": "field_count", "why": "10 fields where 9 are declared"}
    ]  # fmt: skip
    console = Console(record=True, width=400)
    print_summary(outcome, console=console)
    text = console.export_text()
    lines = text.splitlines()
    header = next(line for line in lines if "merged as duplicates" in line)
    row = next(line for line in lines if line.startswith("│ finance_sftp │ invoice "))
    # As many cells as headers: the separators line up.
    assert header.count("┃") == row.count("│") == 9
    assert [c.strip() for c in header.strip("┃").split("┃")][-2:] == ["deleted", "adds up"]
    assert [c.strip() for c in row.strip("│").split("│")] == [
        "finance_sftp", "invoice", "98", "96", "0", "2", "0", "yes"
    ]  # fmt: skip
    assert "│ finance_sftp/invoices │   97 │           1 │" in text
    # Every amount in full, whatever the terminal's width, and the stages' verdicts.
    assert "invoices_2026-11-25.csv@3160898e47f4" in text.replace("\n", "").replace(" ", "").replace("│", "")
    for amount in ("675,514.52", "4,606.14", "670,908.38"):
        assert amount in text
    marts = next(line for line in lines if "│ marts " in line)
    assert [c.strip() for c in marts.strip("│").split("│")][1:] == ["marts", "670,908.38", "yes"]
    assert "invoices_2026-11-25.csv:16" in text
