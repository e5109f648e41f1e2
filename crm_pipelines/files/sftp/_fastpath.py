"""The fast download path, and every paramiko internal it relies on (checked before first use).

paramiko's public read path (``SFTPFile.prefetch`` then ``read``) ran a 1 GB download at a third
of OpenSSH's speed on two cores. Three pieces here replace parts of it:

- :class:`_ReadAheadSocket` reads the TCP socket under the transport 1 MiB at a time. It uses only
  the socket-like object paramiko's ``Transport`` documents (``recv``, ``send``, ``settimeout``,
  ``close``), so it stays on when the rest is off.
- :class:`_ChunkPipe` replaces a channel's input buffer, ``Channel.in_buffer``, before any data
  flows (:func:`install_channel_buffer`).
- :class:`_PipelinedRead` keeps 64 READ requests of 252 KiB in flight and reads the responses
  straight off the channel.

The paramiko internals they use, and why (nowhere else in this package touches any):

- ``SFTPClient._async_request(fileobj, t, *args)``: numbers a request, registers it in
  ``self._expecting`` under ``self._lock`` and sends it, without waiting for the response;
  :class:`_PipelinedRead` sends its READs with it.
- ``SFTPClient._expecting`` and ``SFTPClient._lock``: :class:`_PipelinedRead` reads the responses
  itself and removes each from ``_expecting`` (under ``_lock``), so paramiko's bookkeeping does
  not grow by one entry per request.
- ``paramiko.sftp.int64``: the marker type that makes ``_async_request`` pack a 64-bit offset.
- ``Channel.in_buffer``, a ``BufferedPipe``: replaced by :class:`_ChunkPipe`, which keeps
  ``BufferedPipe``'s own ``_lock``, ``_cv``, ``_event`` and ``_closed`` (its inherited ``close``
  uses them) and overrides every other method a channel calls on its buffer.

:func:`available` checks all of them on the first connect, without I/O (classes, code objects,
a fresh ``BufferedPipe`` and ``Channel``). When one is missing or has another shape it logs a
warning once and downloads use paramiko's public ``SFTPFile.prefetch`` and ``read`` instead
(:mod:`.download`), slower but correct. paramiko is pinned exactly in pyproject.toml for this,
and ``test_sftp_fastpath.py`` fails when the installed paramiko lacks any of them: an upgrade
shows up there, not as a slow download.
"""

from __future__ import annotations

import functools
import inspect
import logging
import socket
import struct
import threading
from collections import deque
from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

import paramiko
import paramiko.sftp
from paramiko.buffered_pipe import BufferedPipe, PipeTimeout

from crm_pipelines.files.sftp.errors import _CONNECTION_LOST, DownloadError

log = logging.getLogger(__name__)

# SFTP version 3 message and status numbers (draft-ietf-secsh-filexfer-02), as sent on the wire.
SSH_FXP_READ = 5
SSH_FXP_DATA = 103
SSH_FX_EOF = 1
# Outstanding prefetch requests; OpenSSH's sftp keeps 64 in flight too.
MAX_PREFETCH_REQUESTS = 64
# Bytes per read request. paramiko asks for 32 KiB, and its per-packet Python work then caps a
# stream at ~40 MB/s on loopback; OpenSSH's sftp-server serves up to 256 KiB - 1 KiB per read
# (limits@openssh.com), which measured 2.3x faster. A server that sends less per request is still
# read correctly: the rest of a short block is asked for before the next block (_PipelinedRead).
READ_REQUEST_BYTES = 252 * 1024
# Bytes asked of the TCP socket per read (see _ReadAheadSocket).
READ_AHEAD_BYTES = 1024 * 1024


class _ReadAheadSocket:
    """The TCP socket under a paramiko transport, read in large pieces.

    paramiko asks the socket for exactly the bytes it needs next: a packet's first block, then
    the rest of it. With a timeout set (paramiko's is 0.1 s), each ``recv`` is a ``poll`` and a
    ``recv`` system call and two releases of the GIL, four of each per 32 KiB packet. Reading up
    to ``READ_AHEAD_BYTES`` at once and handing out slices serves several packets per system call.
    Everything else (send, settimeout, close) goes to the socket itself.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._pending = b""
        self._pos = 0

    def recv(self, nbytes: int) -> bytes:
        if self._pos >= len(self._pending):
            data = self._sock.recv(max(nbytes, READ_AHEAD_BYTES))
            if len(data) <= nbytes:
                return data
            self._pending, self._pos = data, 0
        start = self._pos
        self._pos = min(start + nbytes, len(self._pending))
        out = self._pending[start : self._pos]
        if self._pos >= len(self._pending):
            self._pending, self._pos = b"", 0
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


if TYPE_CHECKING:
    _PipeBase = BufferedPipe[bytes]  # generic in the type stubs only
else:
    _PipeBase = BufferedPipe


class _ChunkPipe(_PipeBase):
    """paramiko's channel input buffer, made cheap for large SFTP reads.

    ``BufferedPipe`` keeps one ``array('B')`` that grows at the back and is deleted from the
    front: every read moved what was still buffered, and the array was reallocated as it grew
    and shrank by megabytes (the 128 MiB window lets the reader fall that far behind). Fresh
    memory costs a page fault per 4 KiB, about 0.4 CPU-seconds per GB on the development VM
    (perf counted 200,000-260,000 faults per GB, even with the front-cheap ``bytearray`` this
    replaced). Here the packets paramiko hands over are kept as they are, in a queue: a read
    takes whole packets, copies only when it spans several, and never reallocates a buffer.

    It also wakes a reader only once what it asked for is there: an SFTP client always knows the
    length it needs, and waking it for each 64 KiB packet of a 252 KiB block cost a thread switch
    per packet. After a whole ``timeout`` without enough data it returns what it has (or raises
    ``PipeTimeout`` when that is nothing), as ``BufferedPipe`` does at once.
    """

    # BufferedPipe's own state (its type stubs leave it out).
    _lock: threading.Lock
    _cv: threading.Condition
    _event: threading.Event | None
    _closed: bool

    def __init__(self) -> None:
        super().__init__()
        self._chunks: deque[bytes | memoryview] = deque()
        self._size = 0
        self._wanted = 1

    def feed(self, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            if self._event is not None:
                self._event.set()
            self._chunks.append(data)
            self._size += len(data)
            if self._size >= self._wanted:
                self._cv.notify_all()

    def _take(self, nbytes: int) -> bytes:
        """Remove and return the first ``min(nbytes, buffered)`` bytes (the lock is held)."""
        chunks = self._chunks
        first = chunks[0]
        if len(first) == nbytes and isinstance(first, bytes):
            chunks.popleft()
            self._size -= nbytes
            return first
        parts: list[bytes | memoryview] = []
        need = min(nbytes, self._size)
        self._size -= need
        while need:
            chunk = chunks[0]
            if len(chunk) <= need:
                parts.append(chunks.popleft())
                need -= len(chunk)
            else:
                view = memoryview(chunk)
                parts.append(view[:need])
                chunks[0] = view[need:]
                need = 0
        return parts[0].tobytes() if len(parts) == 1 and isinstance(parts[0], memoryview) else b"".join(parts)

    def read(self, nbytes: int, timeout: float | None = None) -> bytes:
        with self._lock:
            self._wanted = max(1, nbytes)
            try:
                while self._size < nbytes and not self._closed:
                    if not self._cv.wait(timeout) and self._size < nbytes:
                        if not self._size:
                            raise PipeTimeout()
                        break
            finally:
                self._wanted = 1
            if not self._size:
                return b""
            out = self._take(nbytes)
            if not self._size and self._event is not None and not self._closed:
                self._event.clear()
            return out

    def read_ready(self) -> bool:
        with self._lock:
            return self._size > 0

    def set_event(self, event: threading.Event) -> None:
        with self._lock:
            self._event = event
            if self._closed or self._size:
                event.set()
            else:
                event.clear()

    def empty(self) -> bytes:
        with self._lock:
            out = self._take(self._size) if self._size else b""
            if self._event is not None and not self._closed:
                self._event.clear()
            return out

    def __len__(self) -> int:
        with self._lock:
            return self._size


class _PipelinedRead:
    """Reads ``[start, end)`` of an open remote file with up to ``depth`` READ requests in flight.

    Why not paramiko's ``SFTPFile.prefetch``: it issues requests from a helper thread that polls
    every 10 ms once ``depth`` are out, the reader busy-waits (holding the GIL) when a response
    beats that thread's bookkeeping, it finds each block by scanning every buffered one, and each
    byte is copied three times between the channel and the caller. On two cores, where sshd takes
    one, a 1 GB download spent its time there and ran at a third of OpenSSH's speed. Here the
    reading thread keeps the pipe full itself and reads each DATA response straight off the
    channel: one copy, blocks in order, no helper thread.

    It sends with paramiko's ``_async_request`` (which numbers and registers the request) and
    reads the responses itself, so it must be the only reader of the SFTP session while it runs:
    true here, one session per thread and nothing else in flight. Used only when :func:`available`
    (see the module docstring); the tests run it against OpenSSH and the sandbox server.

    Iterating yields the data blocks in file order. Raises :class:`DownloadError` if the file
    ends before ``end`` or (with ``expect_eof``) goes on after it: it changed while being read.
    """

    def __init__(
        self,
        sftp: paramiko.SFTPClient,
        remote: paramiko.SFTPFile,
        *,
        start: int,
        end: int,
        where: str,
        request_bytes: int | None = None,
        depth: int | None = None,
        expect_eof: bool = True,
    ) -> None:
        self._sftp = sftp
        self._channel = sftp.get_channel()
        self._handle = remote.handle
        self._start, self._end = start, end
        self._where = where
        self._request_bytes = request_bytes or READ_REQUEST_BYTES
        self._depth = depth or MAX_PREFETCH_REQUESTS
        self._expect_eof = expect_eof
        self._early: dict[int, tuple[int, bytes]] = {}

    def _request(self, offset: int, size: int) -> int:
        send = self._sftp._async_request  # type: ignore[attr-defined]
        return int(send(type(None), SSH_FXP_READ, self._handle, paramiko.sftp.int64(offset), int(size)))

    def _recv(self, n: int) -> bytes:
        assert self._channel is not None
        first = self._channel.recv(n)
        if len(first) == n:
            return first
        parts = [first]
        got = len(first)
        while got < n:
            if not parts[-1]:
                raise EOFError("SFTP channel closed")
            parts.append(self._channel.recv(n - got))
            got += len(parts[-1])
        return b"".join(parts)

    def _response(self, num: int) -> tuple[int, bytes]:
        """The response to request ``num``: (type, DATA payload or the raw STATUS body)."""
        while num not in self._early:
            length, kind, got = struct.unpack(">IBI", self._recv(9))
            if kind == SSH_FXP_DATA:
                (size,) = struct.unpack(">I", self._recv(4))
                body = self._recv(size)
            else:
                body = self._recv(length - 5)
            with self._sftp._lock:  # type: ignore[attr-defined]
                self._sftp._expecting.pop(got, None)  # type: ignore[attr-defined]
            self._early[got] = (kind, body)
        return self._early.pop(num)

    def _status(self, body: bytes, at: int) -> DownloadError:
        code = struct.unpack(">I", body[:4])[0] if len(body) >= 4 else -1
        if code == SSH_FX_EOF:
            return DownloadError(
                f"{self._where}: the file ended at byte {at}, expected {self._end}; it changed"
            )
        return DownloadError(f"{self._where}: the server refused a read at byte {at} (SFTP status {code})")

    def __iter__(self) -> Iterator[bytes]:
        pending: deque[tuple[int, int, int]] = deque()
        offset = self._start
        try:
            while pending or offset < self._end:
                while len(pending) < self._depth and offset < self._end:
                    size = min(self._request_bytes, self._end - offset)
                    pending.append((self._request(offset, size), offset, size))
                    offset += size
                num, at, size = pending.popleft()
                kind, data = self._response(num)
                if kind != SSH_FXP_DATA:
                    raise self._status(data, at)
                if len(data) < size:
                    # The server sends less per read than asked (its own limit): ask for the rest
                    # first in line, so blocks still come in order.
                    rest = (at + len(data), size - len(data))
                    pending.appendleft((self._request(*rest), *rest))
                if data:
                    yield data
            if self._expect_eof:
                # One more read must hit the end of the file; data there means the file grew.
                kind, data = self._response(self._request(self._end, 1))
                if kind == SSH_FXP_DATA and data:
                    raise DownloadError(
                        f"{self._where}: the file is longer than {self._end} bytes; it changed"
                    )
        finally:
            # Responses still on their way (the caller stopped early) are read and dropped, so the
            # session is clean for the next request.
            try:
                for num, _, _ in pending:
                    self._response(num)
            except _CONNECTION_LOST:
                pass  # the session is gone anyway; the caller reconnects
            self._early.clear()


def install_channel_buffer(channel: paramiko.Channel) -> None:
    """Put a :class:`_ChunkPipe` in as ``channel``'s input buffer; before any data flows on it."""
    channel.in_buffer = _ChunkPipe()


# What _ChunkPipe may inherit from BufferedPipe as it is: close() only sets the state it shares.
_INHERITED_PIPE_METHODS = {"close"}


def missing_internals(
    *,
    sftp_client: type = paramiko.SFTPClient,
    pipe: type = BufferedPipe,
    channel: type = paramiko.Channel,
    sftp_module: ModuleType = paramiko.sftp,
) -> list[str]:
    """The paramiko internals the fast path uses that are missing or changed (empty: all there).

    No I/O: looks at classes, at the code of ``_async_request`` (``_expecting`` and ``_lock`` are
    set in ``SFTPClient.__init__``, which talks to the server, so they are checked where
    ``_async_request`` uses them) and at a fresh ``BufferedPipe`` and ``Channel``. The keyword
    arguments exist for the tests.
    """
    missing: list[str] = []
    try:
        request = getattr(sftp_client, "_async_request", None)
        if request is None or not callable(request):
            missing.append("SFTPClient._async_request")
        else:
            params = list(inspect.signature(request).parameters.values())
            shape = [(p.name, p.kind) for p in params]
            if shape != [
                ("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                ("fileobj", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                ("t", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                ("args", inspect.Parameter.VAR_POSITIONAL),
            ]:
                missing.append(f"SFTPClient._async_request(self, fileobj, t, *args) (found {shape})")
            used = set(getattr(getattr(request, "__code__", None), "co_names", ()))
            for name in ("_expecting", "_lock"):
                if name not in used:
                    missing.append(f"SFTPClient.{name} (as used by _async_request)")
        if not (isinstance(getattr(sftp_module, "int64", None), type) and issubclass(sftp_module.int64, int)):
            missing.append("paramiko.sftp.int64")
        fresh = pipe()
        for name, ok in (
            ("_lock", hasattr(getattr(fresh, "_lock", None), "__enter__")),
            ("_cv", isinstance(getattr(fresh, "_cv", None), threading.Condition)),
            ("_event", hasattr(fresh, "_event") and fresh._event is None),
            ("_closed", getattr(fresh, "_closed", None) is False),
        ):
            if not ok:
                missing.append(f"BufferedPipe.{name}")
        # A method a channel may call that _ChunkPipe neither overrides nor may inherit would work
        # on BufferedPipe's own buffer, which _ChunkPipe leaves empty.
        methods = {name for name in dir(pipe) if not name.startswith("_")} | {"__len__"}
        for name in sorted(methods - set(vars(_ChunkPipe)) - _INHERITED_PIPE_METHODS):
            missing.append(f"BufferedPipe.{name} (not handled by _ChunkPipe)")
        if not isinstance(getattr(channel(0), "in_buffer", None), pipe):
            missing.append("Channel.in_buffer (a BufferedPipe)")
    except Exception as exc:  # any surprise in looking means the shape changed
        missing.append(f"inspecting paramiko failed: {exc!r}")
    return missing


@functools.cache
def available() -> bool:
    """Whether this paramiko has what the fast path needs; checked once, on the first connect.

    When it does not, logs a warning (once) naming what is missing; downloads then use paramiko's
    public prefetch.
    """
    missing = missing_internals()
    if missing:
        log.warning(
            "SFTP fast path off: paramiko %s lacks or changed %s. Downloads use paramiko's public "
            "SFTPFile.prefetch instead (correct, several times slower); see the docstring of "
            "crm_pipelines/files/sftp/_fastpath.py.",
            paramiko.__version__,
            "; ".join(missing),
        )
        return False
    return True
