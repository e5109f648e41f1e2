"""JSON Lines drops: good lines land, broken ones are quarantined with their line, counts add up."""

import gzip
from pathlib import Path

import pytest

from crm_pipelines.files.csv_reader import FileRejected
from crm_pipelines.files.jsonl_reader import read_jsonl_batches
from crm_pipelines.files.landing import land_file
from crm_pipelines.sources import Dataset

DROP = Dataset(pattern="payments_{date}.jsonl", columns=["payment_reference", "amount"], format="jsonl")


def test_broken_lines_are_quarantined_and_the_rest_lands(tmp_path: Path) -> None:
    path = tmp_path / "payments_2026-11-25.jsonl"
    lines = [
        '\ufeff{"Payment Reference": "P-1", "amount": 10.5, "extra": {"a": 1}}',
        '{"payment_reference": "P-2", "amount": null}',
        "",
        '{"payment_reference": "P-3", "amount": ',  # cut off
        '["not", "an", "object"]',
        '{"payment_reference": "P-4"}',  # a field missing
        '{"payment_reference": "P-5", "amount": "7"}',
    ]
    path.write_bytes(gzip.compress("\n".join(lines).encode("utf-8") + b"\n\xff\xfe\n"))
    manifest = land_file(
        local_file=path,
        remote_path=f"/outbound/finance/{path.name}",
        sha256="b" * 64,
        size=path.stat().st_size,
        declared=DROP,
        source="finance_sftp",
        entity="payment",
        folder=tmp_path / "lake",
        quarantine_folder=tmp_path / "quarantine",
    )
    assert (manifest["rows_landed"], manifest["rows_quarantined"], manifest["data_lines"]) == (3, 4, 7)

    path.write_text("\n".join(lines) + "\n")
    chunks = list(
        read_jsonl_batches(
            path, columns=DROP.columns, source_file=path.name, source="s", dataset="d", batch_rows=2
        )
    )
    rows = [r for c in chunks for r in c.rows.to_pylist()]
    assert [(r["payment_reference"], r["amount"], r["_source_line"]) for r in rows] == [
        ("P-1", "10.5", 1),
        ("P-2", None, 2),
        ("P-5", "7", 7),
    ]
    quarantine = {q["record_id"]: q["rule"] for c in chunks for q in c.quarantine}
    assert quarantine == {
        "payments_2026-11-25.jsonl:4": "malformed_json",
        "payments_2026-11-25.jsonl:5": "not_an_object",
        "payments_2026-11-25.jsonl:6": "missing_field",
    }


def test_a_file_without_one_usable_line_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "payments.jsonl"
    path.write_text('{"reference": "P-1"}\n{"reference": "P-2"}\n')
    with pytest.raises(FileRejected, match="no usable rows"):
        list(read_jsonl_batches(path, columns=DROP.columns, source_file=path.name, source="s", dataset="d"))
