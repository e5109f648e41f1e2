"""The SFTP arrival sensors: the decision logic, then the sensors against a real sshd and the sandbox."""

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from crm_pipelines.sources import Dataset
from crm_pipelines_sandbox.openssh_server import OpenSSHServer, sshd_unavailable_reason
from crm_pipelines_sandbox.sftp_server import SandboxSFTPServer, make_keys, write_known_hosts
from resources.sftp import SFTPResource
from sensors.sftp_arrival import build_sftp_arrival_sensor

INVOICES = Dataset(pattern="invoices_{date}.csv", columns=["invoice_number"])

# ------------------------------------------------------- the sensors against real SFTP servers


@dataclass
class Served:
    folder: Path  # the drop folder on disk
    resource: SFTPResource


@pytest.fixture(params=["openssh", "paramiko"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    """The finance drop folder behind a real sshd or the paramiko sandbox server."""
    keys = make_keys(tmp_path / "keys")
    settings: dict[str, Any] = {
        "private_key_path": str(keys.client_key_path),
        "known_hosts_path": str(keys.known_hosts_path),
    }
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


def tick(served: Served, declared: Dataset, cursor: str | None, **settings: float) -> dg.SensorResult:
    """One evaluation of a freshly built sensor (a restarted daemon builds it anew each time)."""
    sensor = build_sftp_arrival_sensor(
        source="finance_sftp",
        dataset="invoices",
        declared=declared,
        **settings,  # type: ignore[arg-type]
    )
    result = sensor(dg.build_sensor_context(cursor=cursor, resources={"sftp": served.resource}))
    assert isinstance(result, dg.SensorResult)
    return result


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def added_partitions(result: dg.SensorResult) -> list[str]:
    return [key for request in result.dynamic_partitions_requests or [] for key in request.partition_keys]


def test_a_growing_file_waits_and_fires_once_across_restarts(served: Served) -> None:
    invoices = served.folder / "invoices_2026-11-25.csv"
    invoices.write_text("invoice_number\nBIL-1\n")
    first = tick(served, INVOICES, None)
    assert first.run_requests == []
    assert "waiting for a second look" in str(first.skip_reason)
    with invoices.open("a") as fh:
        fh.write("BIL-2\n")  # the writer is not done
    time.sleep(0.4)
    second = tick(served, INVOICES, first.cursor)
    assert second.run_requests == []
    time.sleep(0.4)
    third = tick(served, INVOICES, second.cursor)
    sha = sha256_of(invoices)
    version = f"invoices_2026-11-25.csv@{sha[:12]}"
    assert added_partitions(third) == [version]
    assert [(r.partition_key, r.run_key) for r in third.run_requests or []] == [
        (version, f"{served.resource.finance_dir}/invoices_2026-11-25.csv@{sha}")
    ]
    request = (third.run_requests or [])[0]
    assert request.tags["crm_pipelines/sftp_sha256"] == sha
    # A restart: a new sensor instance with the stored cursor launches nothing again.
    again = tick(served, INVOICES, third.cursor)
    assert again.run_requests == []
    assert "no new" in str(again.skip_reason)
    # A corrected file under the same name is a new version with its own partition and run key.
    invoices.write_text("invoice_number\nBIL-1\nBIL-2\nBIL-3\n")
    seen = tick(served, INVOICES, again.cursor)
    assert seen.run_requests == []  # first look at the new version
    time.sleep(0.4)
    later = tick(served, INVOICES, seen.cursor)
    assert added_partitions(later) == [f"invoices_2026-11-25.csv@{sha256_of(invoices)[:12]}"]
    assert [r.run_key for r in later.run_requests or []] != [request.run_key]


def test_marker_and_rename_rules_fire_without_waiting(served: Served) -> None:
    (served.folder / "invoices_2026-11-25.csv").write_text("invoice_number\nBIL-1\n")
    marker = INVOICES.model_copy(update={"complete_when": "marker"})
    waiting = tick(served, marker, None)
    assert waiting.run_requests == []
    assert "completion marker" in str(waiting.skip_reason)
    (served.folder / "invoices_2026-11-25.csv.done").write_text("")
    assert len(tick(served, marker, waiting.cursor).run_requests or []) == 1

    (served.folder / "invoices_2026-11-26.csv.part").write_text("invoice_number\n")
    rename = INVOICES.model_copy(update={"complete_when": "rename"})
    result = tick(served, rename, None)
    assert [str(r.partition_key).split("@")[0] for r in result.run_requests or []] == [
        "invoices_2026-11-25.csv"
    ]


@pytest.mark.parametrize("served", ["openssh"], indirect=True)
def test_a_file_too_big_to_hash_in_one_tick_is_hashed_over_several(served: Served) -> None:
    big = served.folder / "invoices_2026-11-25.csv"
    big.write_bytes(b"invoice_number\n" + os.urandom(1024 * 1024))
    rename = INVOICES.model_copy(update={"complete_when": "rename"})
    cursor = None
    progress = []
    for _ in range(20):
        # No time at all per tick: each tick hashes one block and hands the rest to the next.
        result = tick(served, rename, cursor, checksum_budget_seconds=0.0)
        cursor = result.cursor
        if result.run_requests:
            break
        progress.append(str(result.skip_reason))
    assert len(progress) >= 2
    assert all("% hashed" in p for p in progress)
    assert added_partitions(result) == [f"invoices_2026-11-25.csv@{sha256_of(big)[:12]}"]


@pytest.mark.parametrize("served", ["openssh"], indirect=True)
def test_an_unreadable_file_is_noted_and_never_blocks_its_neighbours(served: Served) -> None:
    """The SFTP login may list a file it may not read (a partner's umask): the tick goes on."""
    locked = served.folder / "invoices_2026-11-24.csv"
    locked.write_text("invoice_number\nBIL-0\n")
    locked.chmod(0)
    (served.folder / "invoices_2026-11-25.csv").write_text("invoice_number\nBIL-1\n")
    ready = INVOICES.model_copy(update={"complete_when": "rename"})
    result = tick(served, ready, None)
    assert [str(r.partition_key).split("@")[0] for r in result.run_requests or []] == [
        "invoices_2026-11-25.csv"
    ]
    again = tick(served, ready, result.cursor)  # every later tick too, until the file becomes readable
    assert again.run_requests == []
    locked.chmod(0o644)
    readable = tick(served, ready, again.cursor)
    assert [str(r.partition_key).split("@")[0] for r in readable.run_requests or []] == [
        "invoices_2026-11-24.csv"
    ]


@pytest.mark.parametrize("served", ["paramiko"], indirect=True)
def test_a_drop_declares_how_long_a_slow_writer_may_pause(served: Served) -> None:
    """The resource waits 0.3 s here; a drop whose partner writes a row every few seconds declares more."""
    (served.folder / "invoices_2026-11-25.csv").write_text("invoice_number\nBIL-1\n")
    patient = INVOICES.model_copy(update={"stable_seconds": 30.0})
    first = tick(served, patient, None)
    time.sleep(0.4)  # past the resource's window, well inside the drop's
    assert tick(served, patient, first.cursor).run_requests == []
    hasty = tick(served, INVOICES, first.cursor)
    assert len(hasty.run_requests or []) == 1
