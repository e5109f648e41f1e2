"""The fast path's pieces on their own: the channel buffer and the read-ahead socket."""

from __future__ import annotations

import os

import pytest


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
