"""Fixed-width drops: fields cut by the declared layout, wrong-length lines quarantined, moved columns rejected."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from crm_pipelines.files.csv_reader import DriftReport, FileRejected
from crm_pipelines.files.fixed_width_reader import read_fixed_width_batches
from crm_pipelines.files.landing import land_file
from crm_pipelines.sources import Dataset, FixedWidthLayout

LAYOUT = FixedWidthLayout.model_validate(
    {
        "header_lines": 2,
        "header_names": True,
        "fields": [
            {"name": "payment_reference", "start": 1, "width": 12, "header": "REFERENCE"},
            {"name": "amount", "start": 13, "width": 10},
            {"name": "currency", "start": 23, "width": 3, "header": "CUR"},
        ],
    }
)
TITLE = "PAYMENTS 2026-11-25 - BANK EXPORT"
HEADER = "REFERENCE       AMOUNTCUR"


def line(reference: str, amount: str, currency: str) -> str:
    return f"{reference:<12}{amount:>10}{currency:<3}"


def read(path: Path, layout: FixedWidthLayout = LAYOUT, **kwargs: object) -> tuple[list[dict], list[dict]]:  # type: ignore[type-arg]
    chunks = list(
        read_fixed_width_batches(
            path,
            layout=layout,
            source_file=path.name,
            source="finance_sftp",
            dataset="payment",
            **kwargs,  # type: ignore[arg-type]
        )
    )
    return [r for c in chunks for r in c.rows.to_pylist()], [q for c in chunks for q in c.quarantine]


def test_fields_are_cut_by_position_and_bad_lines_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "payments_2026-11-25.txt"
    body = [
        line("PMT-1", "119.00", "EUR"),  # line 3
        line("PMT-2", "5.50", "EUR")[:-4],  # line 4: truncated
        "",  # line 5: blank, skipped
        line("PMT-Müller", "12.00", "CHF"),  # line 6: one character per ü, not two bytes
        line("PMT-4", "1.00", "USD") + "X",  # line 7: longer than the layout: drift, still loads
        line("PMT-5", "\ufffd1.00", "EUR")[:25],  # line 8: undecodable byte
    ]
    path.write_bytes(
        "\r\n".join([TITLE, HEADER + "  BANK", *body]).encode("utf-8").replace("\ufffd".encode(), b"\xff")
    )
    drift = DriftReport()
    rows, quarantine = read(path, batch_rows=2, drift=drift)
    assert [(r["payment_reference"], r["amount"], r["currency"], r["_source_line"]) for r in rows] == [
        ("PMT-1", "119.00", "EUR", 3),
        ("PMT-Müller", "12.00", "CHF", 6),
        ("PMT-4", "1.00", "USD", 7),
    ]
    assert [(q["record_id"], q["rule"]) for q in quarantine] == [
        (f"{path.name}:4", "line_length"),
        (f"{path.name}:8", "encoding"),
    ]
    assert quarantine[0]["reason"] == "line 4: the line has 21 characters, the layout needs at least 25"
    assert drift.new_columns == ["bank", "(characters after position 25)"]


def test_an_exact_line_length_quarantines_longer_lines(tmp_path: Path) -> None:
    path = tmp_path / "payments.txt"
    path.write_text("\n".join([TITLE, HEADER, line("PMT-1", "1", "EUR"), line("PMT-2", "2", "EUR") + "  "]))
    rows, quarantine = read(path, LAYOUT.model_copy(update={"line_length": 25}))
    assert [r["payment_reference"] for r in rows] == ["PMT-1"]
    assert [q["reason"] for q in quarantine] == ["line 4: the line has 27 characters, the layout 25"]


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        (
            [TITLE, "AMOUNT      REFERENCE   CUR", line("PMT-1", "1", "EUR")],
            "the layout changed: expected 'REFERENCE'",
        ),
        ([TITLE], "1 line\\(s\\), but the layout has 2 header line"),
        (
            [TITLE, HEADER, "PMT-1 1 EUR", "PMT-2 2 EUR"],
            r"line lengths found: 11 \(2 lines\).*changed layout",
        ),
    ],
    ids=["columns-moved", "no-header", "every-line-short"],
)
def test_a_changed_layout_rejects_the_file(tmp_path: Path, lines: list[str], reason: str) -> None:
    path = tmp_path / "payments.txt"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FileRejected, match=reason):
        read(path)


def test_a_cp1252_drop_lands_through_the_declared_dataset(tmp_path: Path) -> None:
    declared = Dataset.model_validate(
        {"pattern": "payments_{date}.txt", "format": "fixed_width", "layout": LAYOUT.model_dump()}
    )
    assert declared.columns == ["payment_reference", "amount", "currency"]
    path = tmp_path / "payments_2026-11-25.txt"
    path.write_bytes("\n".join([TITLE, HEADER, line("PMT-Müller", "3.00", "EUR")]).encode("cp1252"))
    manifest = land_file(
        local_file=path,
        remote_path=f"/outbound/finance/{path.name}",
        sha256="d" * 64,
        size=path.stat().st_size,
        declared=declared,
        source="finance_sftp",
        entity="payment",
        folder=tmp_path / "lake",
        quarantine_folder=tmp_path / "quarantine",
    )
    assert (manifest["rows_landed"], manifest["rows_quarantined"]) == (1, 0)
    assert manifest["dialect"] == {"encoding": "cp1252", "delimiter": ","}


def test_layouts_are_validated() -> None:
    with pytest.raises(ValidationError, match="overlap"):
        FixedWidthLayout.model_validate(
            {"fields": [{"name": "a", "start": 1, "width": 5}, {"name": "b", "start": 5, "width": 2}]}
        )
    with pytest.raises(ValidationError, match="needs a layout"):
        Dataset.model_validate({"pattern": "p_{date}.txt", "format": "fixed_width"})
    with pytest.raises(ValidationError, match="record_path does not apply to format csv"):
        Dataset.model_validate({"pattern": "p_{date}.csv", "record_path": "A/B"})
    with pytest.raises(ValidationError, match=r"extra_forbidden|Extra inputs"):
        Dataset.model_validate(
            {"pattern": "p_{date}.xml", "format": "xml", "record_path": "A/B", "recordpath": 1}
        )
