"""Landing a file version into a day's lake folder: a replacement appears all at once to a reader."""

import threading
import time
from pathlib import Path

import duckdb

from crm_pipelines.files.landing import day_lock, land_file, landed_manifests
from crm_pipelines.sources import Dataset

DROP = Dataset(pattern="payments_{date}.jsonl", columns=["payment_reference", "amount"], format="jsonl")
NAME = "payments_2026-11-25.jsonl"


def land(tmp_path: Path, payments: list[str], sha256: str) -> None:
    path = tmp_path / "download" / sha256[:8] / NAME
    path.parent.mkdir(parents=True)
    path.write_text("".join(f'{{"payment_reference": "{p}", "amount": 1}}\n' for p in payments))
    land_file(
        local_file=path,
        remote_path=f"/outbound/finance/{NAME}",
        sha256=sha256,
        size=path.stat().st_size,
        declared=DROP,
        source="finance_sftp",
        entity="payment",
        folder=tmp_path / "lake",
        quarantine_folder=tmp_path / "quarantine",
    )


def what_a_reader_sees(folder: Path) -> tuple[list[str], list[str]]:
    """The references a load of the day would read, and the versions its ledger would record."""
    rows = (
        duckdb.connect()
        .execute(f"SELECT payment_reference FROM read_parquet('{folder}/*.parquet')")
        .fetchall()
    )
    return sorted(str(r[0]) for r in rows), sorted(str(m["sha256"])[:1] for m in landed_manifests(folder))


def test_a_replacement_appears_whole_to_a_reader_holding_the_day(tmp_path: Path) -> None:
    folder = tmp_path / "lake"
    land(tmp_path, ["P-1", "P-2"], "a" * 64)
    assert what_a_reader_sees(folder) == (["P-1", "P-2"], ["a"])

    with day_lock(folder):
        replacing = threading.Thread(target=land, args=(tmp_path, ["P-1", "P-2", "P-3"], "b" * 64))
        replacing.start()
        deadline = time.monotonic() + 30
        while not list(folder.glob(".*.staged")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(folder.glob(".*.staged")), "the replacement never got to publishing"
        time.sleep(0.5)
        # Parsed and waiting to publish: the reader still sees the earlier version, whole.
        assert what_a_reader_sees(folder) == (["P-1", "P-2"], ["a"])
        assert replacing.is_alive()
    replacing.join(timeout=30)

    assert what_a_reader_sees(folder) == (["P-1", "P-2", "P-3"], ["b"])
    assert not list(folder.glob(".*.staged"))
    assert [p.name[:1] for p in (tmp_path / "quarantine").glob("*.parquet")] == ["p"]
