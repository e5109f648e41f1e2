"""gzip and zip drops: unpacked by content, parsed like any CSV; bad archives rejected whole."""

import gzip
import json
import zipfile
from pathlib import Path

import pytest

from crm_pipelines.files.compression import compression_of, unpacked
from crm_pipelines.files.csv_reader import FileRejected
from crm_pipelines.files.landing import land_file
from crm_pipelines.sources import Dataset

CSV = b"invoice_number;amount\nBIL-1;10\nBIL-2;20\n"
DROP = Dataset(pattern="invoices_{date}.csv", columns=["invoice_number", "amount"])


def land(tmp_path: Path, local: Path) -> dict[str, object]:
    return land_file(
        local_file=local,
        remote_path=f"/outbound/finance/{local.name}",
        sha256="a" * 64,
        size=local.stat().st_size,
        declared=DROP,
        source="finance_sftp",
        entity="invoice",
        folder=tmp_path / "lake",
        quarantine_folder=tmp_path / "quarantine",
    )


def test_gzip_and_zip_are_detected_by_content_and_parsed(tmp_path: Path) -> None:
    gz = tmp_path / "invoices_2026-11-25.csv"  # no .gz suffix: the magic bytes decide
    gz.write_bytes(gzip.compress(CSV))
    zipped = tmp_path / "invoices_2026-11-26.csv"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("export.csv", CSV)
    assert (compression_of(gz), compression_of(zipped)) == ("gzip", "zip")
    for local in (gz, zipped):
        manifest = land(tmp_path / f"out-{local.name}", local)
        assert (manifest["rows_landed"], manifest["rejected"]) == (2, None)
        assert manifest["dialect"] == {"encoding": "utf-8", "delimiter": ";"}
    assert not list(tmp_path.glob(".unpacked/*"))  # scratch copies removed


def test_archives_that_are_not_one_plain_file_are_rejected(tmp_path: Path) -> None:
    two = tmp_path / "two.zip"
    with zipfile.ZipFile(two, "w") as archive:
        archive.writestr("a.csv", CSV)
        archive.writestr("b.csv", CSV)
    with pytest.raises(FileRejected, match="exactly one file"):
        unpacked(two, tmp_path / "scratch")
    escaping = tmp_path / "escaping.zip"
    with zipfile.ZipFile(escaping, "w") as archive:
        archive.writestr("../../etc/cron.d/x", CSV)
    with pytest.raises(FileRejected, match="refusing zip member"):
        unpacked(escaping, tmp_path / "scratch")
    broken = tmp_path / "invoices_2026-11-27.csv"
    broken.write_bytes(gzip.compress(CSV)[:-12])
    manifest = land(tmp_path / "broken", broken)
    assert manifest["rows_landed"] == 0
    assert "corrupt gzip" in str(manifest["rejected"])
    assert json.loads((tmp_path / "broken" / "lake").glob("*.json").__next__().read_text())["rejected"]
