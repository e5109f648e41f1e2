"""Which files have arrived and which runs they launch: complete, named by their checksum, once."""

from crm_pipelines.files.arrivals import Cursor, find_arrivals, plan_runs
from crm_pipelines.sources import Dataset

INVOICES = Dataset(pattern="invoices_{date}.csv", columns=["invoice_number"])
SHA = {"v1": "1a2b3c4d5e6f" + "0" * 52, "v2": "abcdefabcdef" + "1" * 52}


def test_a_file_is_named_by_its_checksum_once_it_stops_changing() -> None:
    path = "/outbound/finance/invoices_2026-11-25.csv"
    growing = [("invoices_2026-11-25.csv", path, 100, 1000.0)]
    arrivals, cursor, _ = find_arrivals(
        files=growing, declared=INVOICES, cursor={}, now=10.0, stable_seconds=5
    )
    assert arrivals == []  # first look: not known to be complete yet
    grown = [("invoices_2026-11-25.csv", path, 250, 1003.0)]
    arrivals, cursor, _ = find_arrivals(
        files=grown, declared=INVOICES, cursor=cursor, now=20.0, stable_seconds=5
    )
    assert arrivals == []  # still being written
    arrivals, cursor, _ = find_arrivals(
        files=grown, declared=INVOICES, cursor=cursor, now=30.0, stable_seconds=5
    )
    assert [(a.path, a.day) for a in arrivals] == [(path, "2026-11-25")]
    # Not hashed within this tick: nothing launched, and it stays complete for the next tick.
    requests, keys, waiting, _ = plan_runs(arrivals=arrivals, checksums={}, cursor=cursor)
    assert requests == []
    assert keys == []
    arrivals, _, _ = find_arrivals(files=grown, declared=INVOICES, cursor=waiting, now=31.0, stable_seconds=5)
    requests, keys, cursor, _ = plan_runs(arrivals=arrivals, checksums={path: SHA["v1"]}, cursor=waiting)
    assert keys == ["invoices_2026-11-25.csv@1a2b3c4d5e6f"]
    assert [(r.run_key, r.partition_key) for r in requests] == [(f"{path}@{SHA['v1']}", keys[0])]
    # The same file, unchanged, is not even hashed again (also after a restart: the cursor persists).
    arrivals, cursor, _ = find_arrivals(
        files=grown, declared=INVOICES, cursor=cursor, now=40.0, stable_seconds=5
    )
    assert arrivals == []


def test_a_touched_file_is_not_launched_again_and_a_corrected_one_is() -> None:
    path = "/outbound/finance/invoices_2026-11-25.csv"

    def tick(
        size: int, mtime: float, now: float, cursor: Cursor, sha: str
    ) -> tuple[list[str], dict, list[str]]:  # type: ignore[type-arg]
        files = [("invoices_2026-11-25.csv", path, size, mtime)]
        arrivals, cursor, _ = find_arrivals(
            files=files, declared=INVOICES, cursor=cursor, now=now, stable_seconds=1
        )
        _, keys, cursor, notes = plan_runs(
            arrivals=arrivals, checksums={a.path: sha for a in arrivals}, cursor=cursor
        )
        return keys, cursor, notes

    _, cursor, _ = tick(10, 1.0, 0.0, {}, SHA["v1"])
    keys, cursor, _ = tick(10, 1.0, 5.0, cursor, SHA["v1"])
    assert keys == ["invoices_2026-11-25.csv@1a2b3c4d5e6f"]
    _, cursor, _ = tick(10, 9.0, 10.0, cursor, SHA["v1"])  # touched: new mtime, same bytes
    keys, cursor, notes = tick(10, 9.0, 15.0, cursor, SHA["v1"])
    assert keys == []
    assert "content unchanged" in notes[0]
    _, cursor, _ = tick(12, 50.0, 60.0, cursor, SHA["v2"])  # corrected
    keys, cursor, _ = tick(12, 50.0, 65.0, cursor, SHA["v2"])
    assert keys == ["invoices_2026-11-25.csv@abcdefabcdef"]


def test_files_that_do_not_match_the_drop_are_reported_not_launched() -> None:
    arrivals, cursor, notes = find_arrivals(
        files=[("invoices_final.csv", "/outbound/finance/invoices_final.csv", 5, 1.0)],
        declared=INVOICES,
        cursor={},
        now=0.0,
        stable_seconds=0,
    )
    assert arrivals == []
    assert cursor["pending"] == {}
    assert notes == ["invoices_final.csv: does not match invoices_{date}.csv"]


def test_a_name_with_an_impossible_date_is_not_launched_and_its_neighbour_goes() -> None:
    files = [
        ("invoices_2025-13-45.csv", "/outbound/finance/invoices_2025-13-45.csv", 10, 1.0),
        ("invoices_2026-11-25.csv", "/outbound/finance/invoices_2026-11-25.csv", 10, 1.0),
    ]
    ready = {path for _, path, _, _ in files}
    arrivals, _, notes = find_arrivals(
        files=files, declared=INVOICES, cursor={}, now=10.0, stable_seconds=5, ready=ready
    )
    assert [a.day for a in arrivals] == ["2026-11-25"]
    assert notes == [
        "invoices_2025-13-45.csv: '2025-13-45' in the name is not a calendar date (YYYY-MM-DD in ASCII digits); "
        "the nightly sweep moves it to the error folder"
    ]
