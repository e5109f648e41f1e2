"""The SFTP arrival sensors: the decision logic, then the sensors against a real sshd and the sandbox."""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from crm_pipelines.sandbox.openssh_server import OpenSSHServer, sshd_unavailable_reason
from crm_pipelines.sandbox.sftp_server import SandboxSFTPServer, make_keys, write_known_hosts
from crm_pipelines.sources import Dataset
from resources.sftp import SFTPResource
from sensors.sftp_arrival import build_sftp_arrival_sensor, evaluate_arrivals


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


# ------------------------------------------------------- the sensors against real SFTP servers


@dataclass
class Served:
    folder: Path  # the drop folder on disk
    resource: SFTPResource


@pytest.fixture(params=["openssh", "paramiko"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    """The finance drop folder behind a real sshd or the paramiko sandbox server."""
    keys = make_keys(tmp_path / "keys")
    settings = {"private_key_path": str(keys.client_key_path), "known_hosts_path": str(keys.known_hosts_path)}
    if request.param == "openssh":
        reason = sshd_unavailable_reason()
        if reason:
            pytest.skip(reason)
        with OpenSSHServer(tmp_path / "sshd", authorized_key=keys.client_public_key_path) as sshd:
            folder = sshd.folder("/outbound/finance")
            write_known_hosts(keys.known_hosts_path, sshd.host, sshd.port, sshd.host_public_key_path)
            yield Served(
                folder,
                SFTPResource(
                    host=sshd.host,
                    port=sshd.port,
                    username=sshd.username,
                    finance_dir=sshd.remote_path(folder),
                    stable_seconds=0.3,
                    **settings,
                ),
            )
        return
    root = tmp_path / "root"
    folder = root / "outbound" / "finance"
    folder.mkdir(parents=True)
    with SandboxSFTPServer(
        root, username="billing", authorized_key=keys.client_public_key_path, host_key_path=keys.host_key_path
    ) as server:
        write_known_hosts(keys.known_hosts_path, server.host, server.port, keys.host_public_key_path)
        yield Served(
            folder,
            SFTPResource(
                host=server.host,
                port=server.port,
                username="billing",
                finance_dir="/outbound/finance",
                stable_seconds=0.3,
                **settings,
            ),
        )


def tick(served: Served, declared: Dataset, cursor: str | None) -> dg.SensorResult:
    """One evaluation of a freshly built sensor (a restarted daemon builds it anew each time)."""
    sensor = build_sftp_arrival_sensor(
        job_name="sftp_file_ingest", source="finance_sftp", dataset="invoices", declared=declared
    )
    result = sensor(dg.build_sensor_context(cursor=cursor, resources={"sftp": served.resource}))
    assert isinstance(result, dg.SensorResult)
    return result


INVOICES = Dataset(pattern="invoices_{date}.csv", columns=["invoice_number"])


def test_a_growing_file_waits_and_fires_once_across_restarts(served: Served) -> None:
    invoices = served.folder / "invoices_2026-11-25.csv"
    invoices.write_text("invoice_number\nBIL-1\n")
    first = tick(served, INVOICES, None)
    assert first.run_requests == [] and "waiting for a second look" in str(first.skip_reason)
    with invoices.open("a") as fh:
        fh.write("BIL-2\n")  # the writer is not done
    time.sleep(0.4)
    second = tick(served, INVOICES, first.cursor)
    assert second.run_requests == []
    time.sleep(0.4)
    third = tick(served, INVOICES, second.cursor)
    assert [r.partition_key for r in third.run_requests or []] == ["2026-11-25"]
    request = (third.run_requests or [])[0]
    assert request.tags["crm_pipelines/sftp_path"].endswith("/invoices_2026-11-25.csv")
    # A restart: a new sensor instance with the stored cursor launches nothing again.
    again = tick(served, INVOICES, third.cursor)
    assert again.run_requests == [] and "no new" in str(again.skip_reason)
    # A corrected file under the same name is a new version with a new run key.
    invoices.write_text("invoice_number\nBIL-1\nBIL-2\nBIL-3\n")
    seen = tick(served, INVOICES, again.cursor)
    assert seen.run_requests == []  # first look at the new version
    time.sleep(0.4)
    later = tick(served, INVOICES, seen.cursor)
    new_keys = [r.run_key for r in later.run_requests or []]
    assert len(new_keys) == 1 and new_keys != [request.run_key]


def test_marker_and_rename_rules_fire_without_waiting(served: Served) -> None:
    (served.folder / "invoices_2026-11-25.csv").write_text("invoice_number\nBIL-1\n")
    marker = INVOICES.model_copy(update={"complete_when": "marker"})
    waiting = tick(served, marker, None)
    assert waiting.run_requests == [] and "completion marker" in str(waiting.skip_reason)
    (served.folder / "invoices_2026-11-25.csv.done").write_text("")
    assert len(tick(served, marker, waiting.cursor).run_requests or []) == 1

    (served.folder / "invoices_2026-11-26.csv.part").write_text("invoice_number\n")
    rename = INVOICES.model_copy(update={"complete_when": "rename"})
    result = tick(served, rename, None)
    assert [r.partition_key for r in result.run_requests or []] == ["2026-11-25"]  # not the .part
