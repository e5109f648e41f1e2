"""The SFTP client against the sandbox SFTP server."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from crm_pipelines.files.sftp import (
    HostKeyRejected,
    SFTPAuthError,
    SFTPClient,
    SFTPSession,
    connect_sftp,
    find_complete_files,
    unsafe_name_reason,
)
from crm_pipelines_sandbox.sftp_server import SandboxKeys, SandboxSFTPServer, make_keys, write_known_hosts

USER = "billing"
FOLDER = "/outbound/finance"


@dataclass
class Drop:
    keys: SandboxKeys
    folder: Path  # local side of FOLDER
    port: int

    def client(self, **overrides: object) -> SFTPClient:
        settings: dict[str, object] = {
            "host": "127.0.0.1",
            "port": self.port,
            "username": USER,
            "private_key_path": self.keys.client_key_path,
            "known_hosts_path": self.keys.known_hosts_path,
            "timeout": 10.0,
        }
        settings.update(overrides)
        return SFTPClient(**settings)  # type: ignore[arg-type]


@pytest.fixture
def drop(tmp_path: Path) -> Iterator[Drop]:
    keys = make_keys(tmp_path / "keys")
    root = tmp_path / "sftp-root"
    folder = root / "outbound" / "finance"
    folder.mkdir(parents=True)
    with SandboxSFTPServer(
        root, username=USER, authorized_key=keys.client_public_key_path, host_key_path=keys.host_key_path
    ) as server:
        write_known_hosts(keys.known_hosts_path, "127.0.0.1", server.port, keys.host_public_key_path)
        yield Drop(keys, folder, server.port)


def connect_once(client: SFTPClient) -> None:
    with client.session():
        pass


@pytest.fixture
def session(drop: Drop) -> Iterator[SFTPSession]:
    with drop.client().session() as s:
        yield s


def test_known_host_key_connects(drop: Drop) -> None:
    with connect_sftp(
        host="127.0.0.1",
        port=drop.port,
        username=USER,
        private_key_path=drop.keys.client_key_path,
        known_hosts_path=drop.keys.known_hosts_path,
    ) as session:
        assert session.list_files(FOLDER, "*.csv") == []


def test_changed_host_key_is_refused_with_the_fingerprint(drop: Drop, tmp_path: Path) -> None:
    # known_hosts holds some other server's key for this host and port.
    impostor = make_keys(tmp_path / "impostor")
    write_known_hosts(drop.keys.known_hosts_path, "127.0.0.1", drop.port, impostor.host_public_key_path)
    with pytest.raises(HostKeyRejected) as err:
        connect_once(drop.client())
    message = str(err.value)
    presented = drop.keys.host_key().fingerprint
    assert f"127.0.0.1:{drop.port}" in message
    assert presented in message
    assert impostor.host_key().fingerprint in message


def test_unknown_host_is_refused_with_the_fingerprint(drop: Drop, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyRejected) as err:
        connect_once(drop.client(known_hosts_path=empty))
    assert f"127.0.0.1:{drop.port}" in str(err.value)
    assert drop.keys.host_key().fingerprint in str(err.value)

    with pytest.raises(HostKeyRejected, match="does not exist"):
        connect_once(drop.client(known_hosts_path=tmp_path / "missing"))


def test_wrong_client_key_is_refused(drop: Drop, tmp_path: Path) -> None:
    other = make_keys(tmp_path / "other")
    with pytest.raises(SFTPAuthError, match="refused user 'billing'"):
        connect_once(drop.client(private_key_path=other.client_key_path))


def test_list_and_download(drop: Drop, session: SFTPSession, tmp_path: Path) -> None:
    content = os.urandom(3 * 1024 * 1024 + 17)  # several prefetch requests and read sizes
    (drop.folder / "invoices_2026-11-25.csv").write_bytes(content)
    (drop.folder / "payments_2026-11-25.csv").write_bytes(b"payment_reference\nP-1\n")
    (drop.folder / "invoices_2026-11-26.csv.tmp").write_bytes(b"half")
    (drop.folder / "invoices_2026-11-26.csv.part").write_bytes(b"half")
    (drop.folder / "invoices_2026-11-27.csv.filepart").write_bytes(b"half")
    (drop.folder / "invoices_old.csv.d").mkdir()
    (drop.folder / "invoices_link.csv").symlink_to(drop.folder / "invoices_2026-11-25.csv")

    listing = session.list_files(FOLDER, "invoices_*.csv")
    assert [f.name for f in listing] == ["invoices_2026-11-25.csv"]
    remote = listing[0]
    assert remote.path == f"{FOLDER}/invoices_2026-11-25.csv"
    assert remote.size == len(content)
    assert remote.mtime == int((drop.folder / "invoices_2026-11-25.csv").stat().st_mtime)
    assert set(listing.ignored) == {
        "invoices_2026-11-26.csv.tmp",
        "invoices_2026-11-26.csv.part",
        "invoices_2026-11-27.csv.filepart",
        "invoices_old.csv.d",
    }
    # A link may point outside the folder: refused and reported, never followed.
    assert [r.name for r in listing.rejected] == ["invoices_link.csv"]
    assert [f.name for f in session.list_files(FOLDER, "*.csv")] == [
        "invoices_2026-11-25.csv",
        "payments_2026-11-25.csv",
    ]

    result = session.download(remote.path, tmp_path / "landing" / remote.name)
    assert result.size == len(content)
    assert result.sha256 == hashlib.sha256(content).hexdigest()
    assert result.local_path.read_bytes() == content
    assert list((tmp_path / "landing").iterdir()) == [result.local_path]  # no temporary left
    assert session.stat(remote.path).size == len(content)


def test_failed_download_leaves_no_file(session: SFTPSession, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    with pytest.raises(FileNotFoundError):
        session.download(f"{FOLDER}/nope.csv", landing / "nope.csv")
    assert list(landing.iterdir()) == []


def test_unsafe_names_are_reported_not_returned(drop: Drop, session: SFTPSession) -> None:
    (drop.folder / "invoices..csv").write_bytes(b"x")
    (drop.folder / "invoices\n2026.csv").write_bytes(b"x")
    listing = session.list_files(FOLDER, "*")
    assert list(listing) == []
    assert {(r.name, r.reason) for r in listing.rejected} == {
        ("invoices..csv", "contains '..'"),
        ("invoices\n2026.csv", "contains control characters"),
    }
    # Names a hostile server could send but a local disk cannot hold.
    assert unsafe_name_reason("/etc/passwd") == "absolute path"
    assert unsafe_name_reason("../x.csv") is not None
    assert unsafe_name_reason("sub/x.csv") == "contains a path separator"
    assert unsafe_name_reason("invoices_2026-11-25.csv") is None


def test_growing_file_is_complete_only_once_stable(drop: Drop, session: SFTPSession) -> None:
    growing = drop.folder / "invoices_2026-11-25.csv"
    done = drop.folder / "payments_2026-11-25.csv"
    growing.write_bytes(b"invoice_number,amount\n" + b"BIL-1,10.00\n" * 1000)
    done.write_bytes(b"payment_reference\nP-1\n")

    def writer_keeps_writing(seconds: float) -> None:
        # The billing system appends more rows while we wait between the two listings.
        with growing.open("ab") as fh:
            fh.write(b"BIL-2,20.00\n" * 1000)

    first = find_complete_files(session, FOLDER, "*.csv", stable_seconds=5, sleep=writer_keeps_writing)
    assert [f.name for f in first] == ["payments_2026-11-25.csv"]

    # The writer has finished: a real short wait, nothing changes, the file is complete.
    second = find_complete_files(session, FOLDER, "*.csv", stable_seconds=0.2)
    assert [f.name for f in second] == ["invoices_2026-11-25.csv", "payments_2026-11-25.csv"]
    assert second[0].size == growing.stat().st_size

    def must_not_wait(seconds: float) -> None:
        raise AssertionError("no matching file, so there is nothing to wait for")

    assert find_complete_files(session, FOLDER, "nothing_*.csv", stable_seconds=5, sleep=must_not_wait) == []


def test_channel_buffer_reads_across_packets_and_returns_what_it_has_on_timeout() -> None:
    from paramiko.buffered_pipe import PipeTimeout

    from crm_pipelines.files.sftp import _ChunkPipe

    pipe = _ChunkPipe()
    packets = [os.urandom(n) for n in (5, 70_000, 1, 65_536, 300)]
    for packet in packets:
        pipe.feed(packet)
    stream = b"".join(packets)
    assert len(pipe) == len(stream)
    # Reads that start and end inside packets, span several, and take one whole.
    got = [pipe.read(n) for n in (3, 70_000, 3, 65_536)]
    assert b"".join(got) == stream[:-300]
    assert pipe.read(1000, timeout=0.05) == stream[-300:]  # less than asked: what is there
    with pytest.raises(PipeTimeout):
        pipe.read(10, timeout=0.05)
    pipe.feed(b"tail")
    pipe.close()
    assert pipe.read(10) == b"tail"
    assert pipe.read(10) == b""  # closed and empty


def test_read_ahead_socket_hands_out_at_most_what_was_asked_in_order() -> None:
    import socket
    import threading

    from crm_pipelines.files.sftp import _ReadAheadSocket

    left, right = socket.socketpair()
    with left, right:
        sent = os.urandom(300_000)
        # More than a socket buffer holds: the sender waits for the reader.
        sender = threading.Thread(target=left.sendall, args=(sent,))
        sender.start()
        reader = _ReadAheadSocket(right)
        reader.settimeout(0.2)  # passed to the socket itself
        got = b""
        for asked in (16, 32_768, 1, 200_000, 70_000):
            piece = reader.recv(asked)
            assert 0 < len(piece) <= asked
            got += piece
        while len(got) < len(sent):
            got += reader.recv(100_000)
        sender.join()
        assert got == sent
        with pytest.raises(TimeoutError):
            reader.recv(1)
