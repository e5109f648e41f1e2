"""Downloads: no partial file on failure, resume after a dropped connection, parallel ranges, short reads,
files that change while being read.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from crm_pipelines.files.sftp import SFTPSession, connect_sftp

if TYPE_CHECKING:
    from conftest import DropServer

FOLDER = "/outbound/finance"


def test_failed_download_leaves_no_file(session: SFTPSession, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    with pytest.raises(FileNotFoundError):
        session.download(f"{FOLDER}/nope.csv", landing / "nope.csv")
    assert list(landing.iterdir()) == []


# ------------------------------------------------------------------------- resume after a drop


# paramiko's prefetch thread dies with the connection and reports it; the download itself resumes.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_dropped_connection_mid_download_is_resumed(drop_server: DropServer, tmp_path: Path) -> None:
    content = os.urandom(12 * 1024 * 1024 + 5)
    (drop_server.local / "invoices_2026-11-25.csv").write_bytes(content)
    dropped: list[int] = []

    def cut_the_line_once(written: int) -> None:
        if not dropped and written >= 3 * 1024 * 1024:
            dropped.append(written)
            assert drop_server.drop_connections() >= 1

    with drop_server.client().session() as session:
        result = session.download(
            f"{drop_server.remote}/invoices_2026-11-25.csv",
            tmp_path / "landing" / "invoices.csv",
            on_progress=cut_the_line_once,
        )
        assert session.reconnects == 1
    assert dropped, "the connection was never cut"
    assert result.sha256 == hashlib.sha256(content).hexdigest()
    assert result.local_path.read_bytes() == content


@pytest.mark.parametrize("drop_server", ["openssh"], indirect=True)
def test_large_files_come_as_parallel_ranges(drop_server: DropServer, tmp_path: Path) -> None:
    from crm_pipelines.files.sftp import PARALLEL_MIN_BYTES

    content = os.urandom(PARALLEL_MIN_BYTES + 3 * 1024 * 1024 + 11)
    (drop_server.local / "big.csv").write_bytes(content)
    with connect_sftp(
        host=drop_server.host,
        port=drop_server.port,
        username=drop_server.username,
        private_key_path=drop_server.keys.client_key_path,
        known_hosts_path=drop_server.keys.known_hosts_path,
        parallel_connections=3,
    ) as session:
        result = session.download(f"{drop_server.remote}/big.csv", tmp_path / "big.csv")
    assert result.size == len(content)
    assert result.sha256 == hashlib.sha256(content).hexdigest()
    assert list(tmp_path.glob(".big.csv.download")) == []


@pytest.mark.parametrize("drop_server", ["openssh"], indirect=True)
def test_reads_larger_than_the_server_serves_still_come_in_order(
    drop_server: DropServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crm_pipelines.files.sftp import _fastpath

    # OpenSSH's sftp-server answers at most 255 KiB per read; asking for 1 MiB makes every answer
    # short, and the rest of each block must be asked for before the next one is used.
    monkeypatch.setattr(_fastpath, "READ_REQUEST_BYTES", 1024 * 1024)
    content = os.urandom(5 * 1024 * 1024 + 123)
    (drop_server.local / "invoices_2026-11-25.csv").write_bytes(content)
    with drop_server.client().session() as session:
        result = session.download(f"{drop_server.remote}/invoices_2026-11-25.csv", tmp_path / "out.csv")
    assert result.sha256 == hashlib.sha256(content).hexdigest()
    assert (tmp_path / "out.csv").read_bytes() == content


def test_a_file_that_grows_during_the_download_is_refused(drop_server: DropServer, tmp_path: Path) -> None:
    from crm_pipelines.files.sftp import DownloadError

    growing = drop_server.local / "invoices_2026-11-25.csv"
    growing.write_bytes(os.urandom(6 * 1024 * 1024))

    def writer_appends(written: int) -> None:
        if written < 2 * 1024 * 1024:
            with growing.open("ab") as fh:
                fh.write(b"late line\n")

    with drop_server.client().session() as session, pytest.raises(DownloadError, match="changed"):
        session.download(
            f"{drop_server.remote}/invoices_2026-11-25.csv",
            tmp_path / "landing" / "out.csv",
            on_progress=writer_appends,
        )
    assert list((tmp_path / "landing").iterdir()) == []  # no partial file left behind
