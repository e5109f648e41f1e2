"""gzip and zip drops: unpacked by content, parsed like any CSV; bad archives rejected whole."""

import gzip
import json
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from crm_pipelines.files.compression import UnpackLimits, compression_of, unpacked
from crm_pipelines.files.csv_reader import FileRejected
from crm_pipelines.files.landing import land_file
from crm_pipelines.sources import Dataset

CSV = b"invoice_number;amount\nBIL-1;10\nBIL-2;20\n"
DROP = Dataset(pattern="invoices_{date}.csv", columns=["invoice_number", "amount"])


def land(tmp_path: Path, local: Path, *, sha: str = "a", declared: Dataset = DROP) -> dict[str, object]:
    """Land ``local`` as version ``sha`` of its file into ``tmp_path``'s lake and quarantine folders."""
    return land_file(
        local_file=local,
        remote_path=f"/outbound/finance/{local.name}",
        sha256=sha * 64,
        size=local.stat().st_size,
        declared=declared,
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


def _zip_with(tmp_path: Path, name: str, method: int = zipfile.ZIP_DEFLATED) -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        archive.writestr("export.csv", CSV * 50)
    return path


def test_hostile_archives_are_rejected_with_a_reason_never_a_crash(tmp_path: Path) -> None:
    # Deflate data garbled in the middle (the header is fine): zlib's own error, not an OSError.
    gz = tmp_path / "garbled.gz"
    packed = bytearray(gzip.compress(CSV * 200))
    for i in range(20, 40):
        packed[i] ^= 0xFF
    gz.write_bytes(bytes(packed))
    # A zip whose deflate stream is garbled.
    garbled = _zip_with(tmp_path, "garbled.zip")
    data = bytearray(garbled.read_bytes())
    body = data.index(b"export.csv") + len(b"export.csv")
    for i in range(body + 5, body + 25):
        data[i] ^= 0xFF
    garbled.write_bytes(bytes(data))
    # A member flagged encrypted (general purpose bit 0, in the local and the central header).
    encrypted = _zip_with(tmp_path, "encrypted.zip")
    raw = bytearray(encrypted.read_bytes())
    raw[6] |= 0x1
    central = raw.index(b"PK\x01\x02")
    raw[central + 8] |= 0x1
    encrypted.write_bytes(bytes(raw))
    # A compression method zipfile does not implement (98: PPMd).
    unsupported = _zip_with(tmp_path, "unsupported.zip", zipfile.ZIP_STORED)
    raw = bytearray(unsupported.read_bytes())
    raw[8] = 98
    central = raw.index(b"PK\x01\x02")
    raw[central + 10] = 98
    unsupported.write_bytes(bytes(raw))
    expected = {
        gz: "corrupt gzip data",
        garbled: "corrupt zip data",
        encrypted: "is encrypted",
        unsupported: "compression method 98",
    }
    for path, reason in expected.items():
        with pytest.raises(FileRejected, match=reason):
            unpacked(path, tmp_path / "scratch")
        assert not list((tmp_path / "scratch").glob("*")), path  # nothing half-written left behind


def test_a_compression_bomb_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    bomb = tmp_path / "invoices_2026-11-25.csv"
    with gzip.open(bomb, "wb", compresslevel=9) as out:
        for _ in range(96):  # 96 MiB of zeros, about 100 KB compressed
            out.write(b"\0" * (1024 * 1024))
    assert bomb.stat().st_size < 200_000
    with pytest.raises(FileRejected, match="refused as a compression bomb"):
        unpacked(bomb, tmp_path / "scratch", UnpackLimits(max_bytes=4096 * 1024 * 1024, max_ratio=200))
    assert not list((tmp_path / "scratch").glob("*"))
    # The same file under a drop declaring a tighter absolute limit, landed: rejected whole, with the reason.
    manifest = land(tmp_path, bomb, sha="b", declared=DROP.model_copy(update={"max_unpacked_mb": 8}))
    assert manifest["rows_landed"] == 0
    assert "inflates past 8 MiB" in str(manifest["rejected"])


def test_a_rejected_replacement_leaves_the_landed_version_and_a_good_one_supersedes_it(
    tmp_path: Path,
) -> None:
    """A re-upload of a loaded file as 0 bytes (or corrupt) must not empty the day: all or nothing."""
    local = tmp_path / "invoices_2026-11-25.csv"

    def land_version(content: bytes, sha: str) -> dict[str, object]:
        local.write_bytes(content)
        return land(tmp_path, local, sha=sha)

    def landed_numbers() -> list[str]:
        return sorted(
            n
            for f in (tmp_path / "lake").glob("*.parquet")
            for n in pq.read_table(f).column("invoice_number").to_pylist()
        )

    assert land_version(CSV, "a")["rows_landed"] == 2
    for broken in (b"", gzip.compress(CSV)[:-12]):
        assert land_version(broken, "b")["rejected"]
        assert landed_numbers() == ["BIL-1", "BIL-2"]  # the day keeps what was loaded
    corrected = CSV + b"BIL-3;30\n"
    assert land_version(corrected, "c")["rows_landed"] == 3
    assert landed_numbers() == ["BIL-1", "BIL-2", "BIL-3"]
    assert [json.loads(f.read_text())["sha256"][0] for f in (tmp_path / "lake").glob("*.json")] == ["c"]
