from sensors.sftp_arrival import evaluate_arrivals


def test_a_file_fires_once_after_it_stops_changing() -> None:
    path = "/outbound/finance/invoices_2026-11-25.csv"
    growing = [("invoices_2026-11-25.csv", path, 100, 1000.0)]
    requests, cursor, _ = evaluate_arrivals(files=growing, cursor={}, now=10.0, stable_seconds=5)
    assert requests == []  # first look: not known to be complete yet
    grown = [("invoices_2026-11-25.csv", path, 250, 1003.0)]
    requests, cursor, _ = evaluate_arrivals(files=grown, cursor=cursor, now=20.0, stable_seconds=5)
    assert requests == []  # still being written
    requests, cursor, _ = evaluate_arrivals(files=grown, cursor=cursor, now=30.0, stable_seconds=5)
    assert [r.partition_key for r in requests] == ["2026-11-25"]
    assert requests[0].run_key == f"{path}:250:1003"
    # The same file, unchanged, never fires again (also after a restart: the cursor is persisted).
    requests, cursor, _ = evaluate_arrivals(files=grown, cursor=cursor, now=40.0, stable_seconds=5)
    assert requests == []


def test_a_corrected_file_under_the_same_name_fires_again() -> None:
    path = "/outbound/finance/payments_2026-11-25.csv"
    first = [("payments_2026-11-25.csv", path, 10, 1.0)]
    _, cursor, _ = evaluate_arrivals(files=first, cursor={}, now=0.0, stable_seconds=1)
    requests, cursor, _ = evaluate_arrivals(files=first, cursor=cursor, now=5.0, stable_seconds=1)
    assert len(requests) == 1
    corrected = [("payments_2026-11-25.csv", path, 12, 50.0)]
    _, cursor, _ = evaluate_arrivals(files=corrected, cursor=cursor, now=60.0, stable_seconds=1)
    requests, _, _ = evaluate_arrivals(files=corrected, cursor=cursor, now=65.0, stable_seconds=1)
    assert [r.run_key for r in requests] == [f"{path}:12:50"]


def test_files_that_match_no_drop_are_reported_not_launched() -> None:
    requests, cursor, notes = evaluate_arrivals(
        files=[("holiday_photos.zip", "/outbound/finance/holiday_photos.zip", 5, 1.0)],
        cursor={},
        now=0.0,
        stable_seconds=0,
    )
    assert requests == [] and cursor["pending"] == {}
    assert notes == ["holiday_photos.zip: matches no declared drop"]
