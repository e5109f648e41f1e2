"""JSON document drops: records found by a path, streamed; bad records quarantined by number."""

import json
from pathlib import Path

import pytest

from crm_pipelines.files.csv_reader import DriftReport, FileRejected
from crm_pipelines.files.json_reader import read_json_batches
from crm_pipelines.files.landing import land_file
from crm_pipelines.sources import Dataset

DROP = Dataset(
    pattern="invoices_{date}.json",
    format="json",
    records_path="data.invoices",
    columns=["invoice_number", "amount_gross"],
)


def read(path: Path, **kwargs: object) -> tuple[list[dict[str, object]], list[dict[str, str]]]:
    chunks = list(
        read_json_batches(
            path,
            columns=DROP.columns,
            source_file=path.name,
            source="finance_sftp",
            dataset="invoice",
            **kwargs,  # type: ignore[arg-type]
        )
    )
    return [r for c in chunks for r in c.rows.to_pylist()], [q for c in chunks for q in c.quarantine]


def test_records_at_the_path_land_and_bad_ones_are_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "invoices_2026-11-25.json"
    document = {
        "meta": {"exported": "2026-11-25", "invoices": ["a decoy at another path"]},
        "data": {
            "invoices": [
                {"Invoice-Number": "BIL-1", "amount_gross": 119.00, "pdf_url": "https://x/1"},
                {"invoice_number": "BIL-2"},  # amount missing
                "not an object",
                {"invoice_number": "BIL-3", "amount_gross": "7", "lines": [{"sku": "A", "qty": 2}]},
            ]
        },
    }
    # One line, as exports usually are; numbers keep their written form.
    path.write_text(json.dumps(document).replace("119.0", "119.00"))
    drift = DriftReport()
    rows, quarantine = read(path, records_path="data.invoices", batch_rows=1, drift=drift)
    assert [(r["invoice_number"], r["amount_gross"], r["_source_line"]) for r in rows] == [
        ("BIL-1", "119.00", 1),
        ("BIL-3", "7", 4),
    ]
    assert [(q["record_id"], q["rule"], q["reason"]) for q in quarantine] == [
        (f"{path.name}:2", "missing_field", "record 2: missing field(s) amount_gross"),
        (f"{path.name}:3", "not_an_object", "record 3: expected a JSON object, found str"),
    ]
    assert drift.new_columns == ["pdf_url", "lines"]


def test_a_top_level_array_and_a_compressed_file_land_through_the_drop(tmp_path: Path) -> None:
    import gzip

    path = tmp_path / "invoices_2026-11-25.json"
    records = [{"invoice_number": f"BIL-{i}", "amount_gross": i} for i in range(5)]
    path.write_bytes(gzip.compress(json.dumps(records).encode()))
    manifest = land_file(
        local_file=path,
        remote_path=f"/outbound/finance/{path.name}",
        sha256="c" * 64,
        size=path.stat().st_size,
        declared=DROP.model_copy(update={"records_path": None}),
        source="finance_sftp",
        entity="invoice",
        folder=tmp_path / "lake",
        quarantine_folder=tmp_path / "quarantine",
    )
    assert (manifest["rows_landed"], manifest["rows_quarantined"], manifest["rejected"]) == (5, 0, None)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (
            b'{"data": {"invoices": [{"invoice_number": "BIL-1", "amount_gross": 1}, {"invoice_n',
            "not valid JSON",
        ),
        (
            b'{"data": {"payments": [{"invoice_number": "BIL-1", "amount_gross": 1}]}}',
            "no records at data.invoices",
        ),
        (b'{"data": {"invoices": {"invoice_number": "BIL-1"}}}', "no records at data.invoices"),
        (
            b'{"data": {"invoices": [{"invoice_number": "BIL-1", "gross": 1}, {"invoice_number": "BIL-2"}]}}',
            "amount_gross are in none of the 2 record",
        ),
    ],
    ids=["truncated", "path-missing", "path-not-an-array", "column-missing"],
)
def test_unusable_documents_are_rejected_whole(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "invoices.json"
    path.write_bytes(content)
    with pytest.raises(FileRejected, match=reason):
        read(path, records_path="data.invoices")
