"""The fast path: its pieces on their own, the check of the paramiko internals it uses, and the
fallback to paramiko's public prefetch when they are missing (against a real sshd).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paramiko
import pytest
from paramiko.buffered_pipe import BufferedPipe

from crm_pipelines.files.sftp import DownloadError, _fastpath

if TYPE_CHECKING:
    from conftest import DropServer


def test_channel_buffer_reads_across_packets_and_returns_what_it_has_on_timeout() -> None:
    from paramiko.buffered_pipe import PipeTimeout

    from crm_pipelines.files.sftp._fastpath import _ChunkPipe

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

    from crm_pipelines.files.sftp._fastpath import _ReadAheadSocket

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


# -------------------------------------------------------------------- the check of the internals


def test_the_pinned_paramiko_has_every_internal_the_fast_path_uses() -> None:
    # Fails after a paramiko upgrade that moved or reshaped one: read _fastpath.py's docstring.
    assert _fastpath.missing_internals() == []


if TYPE_CHECKING:
    PipeBase = BufferedPipe[bytes]  # generic in the type stubs only
else:
    PipeBase = BufferedPipe


def test_a_missing_or_reshaped_internal_is_named() -> None:
    class ReshapedClient(paramiko.SFTPClient):
        def _async_request(self, fileobj: Any, t: int, args: tuple[Any, ...]) -> int:
            return 0

    class ReshapedPipe(PipeBase):
        def __init__(self) -> None:
            super().__init__()
            vars(self).pop("_cv")

        def peek(self) -> bytes:
            return b""

    missing = _fastpath.missing_internals(sftp_client=ReshapedClient, pipe=ReshapedPipe)
    assert any(m.startswith("SFTPClient._async_request(self, fileobj, t, *args)") for m in missing)
    assert "SFTPClient._expecting (as used by _async_request)" in missing
    assert "SFTPClient._lock (as used by _async_request)" in missing
    assert "BufferedPipe._cv" in missing
    assert "BufferedPipe.peek (not handled by _ChunkPipe)" in missing


# ------------------------------------------------------------- the fallback, against a real sshd


@pytest.fixture
def fast_path_off(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As if paramiko lacked an internal: the check's result is forced, paramiko is left alone."""

    def fast_reader(*args: object, **kwargs: object) -> None:
        raise AssertionError("the fast path's reader was used")

    monkeypatch.setattr(_fastpath, "missing_internals", lambda: ["SFTPClient._async_request (test)"])
    monkeypatch.setattr(_fastpath, "_PipelinedRead", fast_reader)
    _fastpath.available.cache_clear()
    yield
    _fastpath.available.cache_clear()  # the next test checks the real paramiko again


@pytest.mark.parametrize("drop_server", ["openssh"], indirect=True)
def test_without_the_internals_downloads_use_paramikos_prefetch(
    drop_server: DropServer, tmp_path: Path, fast_path_off: None, caplog: pytest.LogCaptureFixture
) -> None:
    content = os.urandom(5 * 1024 * 1024 + 123)  # many 32 KiB prefetch requests, a short last one
    (drop_server.local / "invoices_2026-11-25.csv").write_bytes(content)
    remote = f"{drop_server.remote}/invoices_2026-11-25.csv"
    with caplog.at_level(logging.WARNING):
        for attempt in range(2):
            with drop_server.client().session() as session:
                assert type(session.sftp.get_channel().in_buffer) is BufferedPipe  # paramiko's own
                result = session.download(remote, tmp_path / f"out{attempt}.csv")
            assert result.size == len(content)
            assert result.sha256 == hashlib.sha256(content).hexdigest()
            assert result.local_path.read_bytes() == content
    warnings = [r for r in caplog.records if "SFTP fast path off" in r.getMessage()]
    assert len(warnings) == 1  # once per process, not per connection
    assert "SFTPClient._async_request (test)" in warnings[0].getMessage()


# paramiko's prefetch thread dies with the connection and reports it; the download itself resumes.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("drop_server", ["openssh"], indirect=True)
def test_without_the_internals_a_dropped_connection_is_resumed_and_a_growing_file_refused(
    drop_server: DropServer, tmp_path: Path, fast_path_off: None
) -> None:
    content = os.urandom(12 * 1024 * 1024 + 5)
    path = drop_server.local / "invoices_2026-11-25.csv"
    path.write_bytes(content)
    remote = f"{drop_server.remote}/invoices_2026-11-25.csv"
    dropped: list[int] = []

    def cut_the_line_once(written: int) -> None:
        if not dropped and written >= 3 * 1024 * 1024:
            dropped.append(written)
            assert drop_server.drop_connections() >= 1

    with drop_server.client().session() as session:
        result = session.download(remote, tmp_path / "landing" / "a.csv", on_progress=cut_the_line_once)
        assert session.reconnects == 1
    assert dropped, "the connection was never cut"
    assert result.sha256 == hashlib.sha256(content).hexdigest()
    assert result.local_path.read_bytes() == content

    def writer_appends(written: int) -> None:
        if written < 2 * 1024 * 1024:
            with path.open("ab") as fh:
                fh.write(b"late line\n")

    with drop_server.client().session() as session, pytest.raises(DownloadError, match="changed"):
        session.download(remote, tmp_path / "landing" / "b.csv", on_progress=writer_appends)
    assert not (tmp_path / "landing" / "b.csv").exists()
