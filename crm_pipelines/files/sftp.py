"""SFTP client for file drops: verified host keys, safe listings, resumable hashed downloads.

The Dagster resource wraps :class:`SFTPClient`; everything here is plain paramiko so it can be
used and tested without Dagster.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import hmac
import logging
import os
import posixpath
import socket
import stat as stat_mod
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import paramiko
from paramiko.buffered_pipe import BufferedPipe, PipeTimeout
from paramiko.sftp import CMD_DATA, CMD_READ, SFTP_EOF, int64

log = logging.getLogger(__name__)

# Names a writer uses while a file is still being uploaded; never picked up.
TEMP_SUFFIXES = (".tmp", ".part", ".filepart")
# AES-GCM first (paramiko offers it last): an AEAD cipher authenticates each packet as part of
# decrypting it, where aes-ctr needs a separate HMAC-SHA-256 costing both ends ~0.5 CPU-seconds per
# GB. OpenSSH's sshd offers both; the rest stay in paramiko's order for servers without GCM.
PREFERRED_CIPHERS: tuple[str, ...] = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
    "aes128-cbc",
    "aes192-cbc",
    "aes256-cbc",
    "3des-cbc",
)
# Bytes per local read when hashing a finished file.
READ_SIZE = 1024 * 1024
# Outstanding prefetch requests; OpenSSH's sftp keeps 64 in flight too.
MAX_PREFETCH_REQUESTS = 64
# Bytes per read request. paramiko asks for 32 KiB, and its per-packet Python work then caps a
# stream at ~40 MB/s on loopback; OpenSSH's sftp-server serves up to 256 KiB - 1 KiB per read
# (limits@openssh.com), which measured 2.3x faster. A server that sends less per request is still
# read correctly: the rest of a short block is asked for before the next block (_PipelinedRead).
READ_REQUEST_BYTES = 252 * 1024
# Bytes asked of the TCP socket per read (see _ReadAheadSocket).
READ_AHEAD_BYTES = 1024 * 1024
# Channel window and packet size big enough to keep those requests flowing without stalls.
CHANNEL_WINDOW_BYTES = 128 * 1024 * 1024
CHANNEL_MAX_PACKET_BYTES = 256 * 1024
KEEPALIVE_SECONDS = 30
# Large files are fetched as byte ranges over several connections: one paramiko transport does its
# crypto in one thread, so a single stream is CPU-bound well below what sshd can send.
PARALLEL_MIN_BYTES = 64 * 1024 * 1024
# 0 = automatic: half the CPUs, capped at 4. Each range costs a client thread and a server process;
# on 2 CPUs two streams measured no faster than one (both fight sshd for the cores), so one.
PARALLEL_CONNECTIONS = 0


def parallel_ranges(configured: int) -> int:
    """How many byte ranges a large download uses (``configured``, or automatic when 0)."""
    return configured if configured > 0 else max(1, min(4, (os.cpu_count() or 1) // 2))


# Marker suffixes a writer adds next to a finished file (``invoices.csv`` + ``invoices.csv.done``).
DEFAULT_MARKERS = (".done", ".ok")
# Reconnects per download before giving up: enough for a flapping link, not for a dead server.
DOWNLOAD_RETRIES = 3
CompletenessRule = Literal["stable", "marker", "rename"]


class SFTPError(Exception):
    """Base class for the errors this module raises itself."""


class HostKeyRejected(SFTPError, paramiko.SSHException):
    """The server's host key is not the one in known_hosts (or there is none)."""


class SFTPAuthError(SFTPError, paramiko.AuthenticationException):
    """The server refused our key."""


class DownloadError(SFTPError):
    """A download did not produce the file the server announced."""


@dataclass(frozen=True)
class RemoteFile:
    """A regular file on the server."""

    name: str
    path: str
    size: int
    mtime: float  # seconds since the epoch (whole seconds: SFTP v3 has no finer resolution)

    @property
    def modified_at(self) -> datetime:
        return datetime.fromtimestamp(self.mtime, tz=UTC)


@dataclass(frozen=True)
class RejectedName:
    """A listing entry refused because its name could escape the folder or is not a plain name."""

    name: str
    reason: str


class FileListing(list[RemoteFile]):
    """The files a listing returned, plus what it left out and why.

    ``rejected``: unsafe names (reported; a server should never send them). ``ignored``: names of
    in-progress uploads, directories, symlinks and other non-files (normal, for the logs).
    """

    def __init__(self) -> None:
        super().__init__()
        self.rejected: list[RejectedName] = []
        self.ignored: list[str] = []


@dataclass
class PartialChecksum:
    """A SHA-256 of a remote file computed in steps (a sensor tick may end before the file does).

    Attributes:
        size, mtime: The file as it was when hashing began; a change means starting over.
        offset: Bytes hashed so far.
    """

    size: int
    mtime: float
    offset: int = 0
    digest: Any = field(default_factory=hashlib.sha256)

    @property
    def done(self) -> bool:
        return self.offset >= self.size

    def hexdigest(self) -> str:
        return str(self.digest.hexdigest())


@dataclass(frozen=True)
class DownloadResult:
    local_path: Path
    size: int
    sha256: str


def unsafe_name_reason(name: str) -> str | None:
    """Why ``name`` is not a plain file name we may join to a local folder, or None."""
    if not name:
        return "empty name"
    if name.startswith("/"):
        return "absolute path"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    # Any '..' is refused, not only the exact component: cheap defence in depth for the local path.
    if ".." in name:
        return "contains '..'"
    if any(ord(ch) < 32 or ch == "\x7f" for ch in name):
        return "contains control characters"
    return None


def _is_temp(name: str) -> bool:
    return name.lower().endswith(TEMP_SUFFIXES)


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Decides about a host key that is not in the loaded known_hosts.

    Refuses by default, with a message naming the host and the key it presented. Accepts a key
    whose SHA-256 fingerprint equals the pinned one. Trusts on first use only when configured,
    writing the key to known_hosts (so a later *change* is refused) and logging a warning.
    """

    def __init__(
        self,
        *,
        where: str,
        known_hosts: Path | None,
        fingerprint: str | None,
        trust_on_first_use: bool,
    ) -> None:
        self._where = where
        self._known_hosts = known_hosts
        self._fingerprint = fingerprint
        self._tofu = trust_on_first_use

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        presented = f"{key.get_name()} {key.fingerprint}"
        if self._fingerprint is not None:
            if key.fingerprint == self._fingerprint:
                return
            raise HostKeyRejected(
                f"SFTP server {self._where} presented host key {presented}, but the pinned fingerprint "
                f"is {self._fingerprint}: refusing to connect (re-keyed server or someone in between)."
            )
        if self._tofu and self._known_hosts is not None:
            log.warning(
                "SFTP server %s is not in %s: TRUSTING ITS HOST KEY ON FIRST USE (%s) and saving it. "
                "Check this fingerprint with the server's owner; later changes will be refused.",
                self._where,
                self._known_hosts,
                presented,
            )
            client.get_host_keys().add(hostname, key.get_name(), key)
            self._known_hosts.parent.mkdir(parents=True, exist_ok=True)
            client.save_host_keys(str(self._known_hosts))
            return
        where_known = f"not in {self._known_hosts}" if self._known_hosts else "unknown (no known_hosts given)"
        raise HostKeyRejected(
            f"SFTP server {self._where} is {where_known}: it presented {presented}. Add the host key "
            "to known_hosts (or pin the fingerprint) after checking it with the server's owner."
        )


@dataclass(frozen=True)
class ConnectSettings:
    """Everything needed to open (and re-open) one SFTP connection.

    Attributes:
        host, port, username: The server and login.
        private_key_path: Private key (RSA, ECDSA or Ed25519, OpenSSH or PEM); None for password auth.
        passphrase: Passphrase of an encrypted private key.
        password: Password, when the server allows password authentication (no key given).
        known_hosts_path: known_hosts file; the server's key must be in it (unless pinned/TOFU).
        host_key_fingerprint: Pinned ``SHA256:...`` fingerprint instead of (or besides) known_hosts.
        trust_on_first_use: Accept and save an unknown host key (logged loudly); changed keys
            are still refused.
        timeout: Connect, banner, auth and per-operation timeout in seconds.
        keepalive_seconds: SSH keepalive interval (keeps NAT and firewalls from dropping idle links).
        ciphers: Ciphers offered, in order of preference (None: ``PREFERRED_CIPHERS``); the
            benchmark pins one.
        parallel_connections: Connections for files of at least ``PARALLEL_MIN_BYTES`` (1: never;
            0: automatic, see :func:`parallel_ranges`).
    """

    host: str
    port: int
    username: str
    private_key_path: Path | str | None = None
    known_hosts_path: Path | str | None = None
    timeout: float = 30.0
    passphrase: str | None = None
    password: str | None = None
    host_key_fingerprint: str | None = None
    trust_on_first_use: bool = False
    keepalive_seconds: int = KEEPALIVE_SECONDS
    ciphers: tuple[str, ...] | None = None
    parallel_connections: int = PARALLEL_CONNECTIONS

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def _compare_macs_in_c() -> None:
    """Let paramiko check each packet's MAC with ``hmac.compare_digest``.

    paramiko compares MACs in a Python loop (32 ``byte_ord`` calls a packet), 0.3 CPU-seconds
    per GB downloaded, on the transport thread that every byte waits for. ``compare_digest`` is
    the standard library's constant-time comparison, in C: the same guarantee, without the loop.
    """
    paramiko.util.constant_time_bytes_eq = hmac.compare_digest  # type: ignore[assignment]


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


def _transport_offering(ciphers: tuple[str, ...]) -> Callable[..., paramiko.Transport]:
    """A paramiko transport factory that offers ``ciphers``, in that order, and no others."""

    def transport(sock: Any, /, **kwargs: Any) -> paramiko.Transport:
        # paramiko only calls recv, send, settimeout and close on its socket.
        made = paramiko.Transport(_ReadAheadSocket(sock), **kwargs)  # type: ignore[arg-type]
        made.get_security_options().ciphers = ciphers  # ValueError for a name paramiko lacks
        return made

    return transport


def _connect(settings: ConnectSettings) -> tuple[paramiko.SSHClient, paramiko.SFTPClient]:
    _compare_macs_in_c()
    where = settings.where
    known_hosts = Path(settings.known_hosts_path) if settings.known_hosts_path else None
    fingerprint = settings.host_key_fingerprint
    if fingerprint is not None and not fingerprint.startswith("SHA256:"):
        raise HostKeyRejected(f"SFTP server {where}: pinned fingerprint must look like 'SHA256:...'")
    if (
        known_hosts is not None
        and not known_hosts.is_file()
        and not settings.trust_on_first_use
        and fingerprint is None
    ):
        raise HostKeyRejected(f"SFTP server {where}: known_hosts file {known_hosts} does not exist")
    if known_hosts is None and fingerprint is None:
        raise HostKeyRejected(
            f"SFTP server {where}: give a known_hosts file or a pinned host key fingerprint"
        )
    if settings.private_key_path is None and settings.password is None:
        raise SFTPAuthError(f"SFTP server {where}: give a private key or a password")
    pkey = (
        paramiko.PKey.from_path(
            Path(settings.private_key_path),
            # paramiko's hint says str, but cryptography underneath needs bytes.
            settings.passphrase.encode("utf-8") if settings.passphrase else None,  # type: ignore[arg-type]
        )
        if settings.private_key_path is not None
        else None
    )
    ssh = paramiko.SSHClient()
    # Only the given known_hosts counts: ~/.ssh/known_hosts of whoever runs the job must not.
    if known_hosts is not None and known_hosts.is_file():
        ssh.load_host_keys(str(known_hosts))
    ssh.set_missing_host_key_policy(
        _HostKeyPolicy(
            where=where,
            known_hosts=known_hosts,
            fingerprint=fingerprint,
            trust_on_first_use=settings.trust_on_first_use,
        )
    )
    try:
        ssh.connect(
            settings.host,
            port=settings.port,
            username=settings.username,
            pkey=pkey,
            password=settings.password if pkey is None else None,
            look_for_keys=False,
            allow_agent=False,
            transport_factory=_transport_offering(settings.ciphers or PREFERRED_CIPHERS),
            timeout=settings.timeout,
            banner_timeout=settings.timeout,
            auth_timeout=settings.timeout,
            channel_timeout=settings.timeout,
        )
    except paramiko.BadHostKeyException as exc:
        ssh.close()
        raise HostKeyRejected(
            f"SFTP server {where} presented host key {exc.key.get_name()} {exc.key.fingerprint}, but "
            f"{known_hosts} expects {exc.expected_key.fingerprint}. The host key changed: refusing "
            "to connect (either the server was re-keyed or someone is in between)."
        ) from exc
    except paramiko.AuthenticationException as exc:
        ssh.close()
        how = f"key {settings.private_key_path}" if pkey is not None else "password"
        raise SFTPAuthError(
            f"SFTP server {where} refused user {settings.username!r} with {how}: {exc}"
        ) from exc
    except BaseException:
        ssh.close()
        raise
    try:
        transport = ssh.get_transport()
        assert transport is not None
        transport.set_keepalive(settings.keepalive_seconds)
        # What SFTPClient.from_transport does, with our channel buffer put in before any data flows.
        channel = transport.open_session(
            window_size=CHANNEL_WINDOW_BYTES, max_packet_size=CHANNEL_MAX_PACKET_BYTES
        )
        channel.in_buffer = _ChunkPipe()
        channel.settimeout(settings.timeout)
        channel.invoke_subsystem("sftp")
        sftp = paramiko.SFTPClient(channel)
    except BaseException:
        ssh.close()
        raise
    return ssh, sftp


class _ChunkPipe(BufferedPipe):
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
    true here, one session per thread and nothing else in flight. paramiko is pinned; the tests
    run it against OpenSSH and the sandbox server.

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
        return int(self._sftp._async_request(type(None), CMD_READ, self._handle, int64(offset), int(size)))  # type: ignore[attr-defined]

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
            if kind == CMD_DATA:
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
        if code == SFTP_EOF:
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
                if kind != CMD_DATA:
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
                if kind == CMD_DATA and data:
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


# Errors that mean "the connection went away", after which a reconnect may help.
_CONNECTION_LOST = (EOFError, OSError, paramiko.SSHException)


class SFTPSession:
    """One authenticated SFTP connection that can re-open itself. Use :func:`connect_sftp`."""

    def __init__(
        self,
        ssh: paramiko.SSHClient,
        sftp: paramiko.SFTPClient,
        where: str,
        settings: ConnectSettings | None = None,
    ) -> None:
        self.ssh = ssh
        self.sftp = sftp
        self.where = where
        self.settings = settings
        self.reconnects = 0

    def close(self) -> None:
        try:
            self.sftp.close()
        finally:
            self.ssh.close()

    def reconnect(self) -> None:
        """Drop the current connection and open a new one with the same settings."""
        if self.settings is None:
            raise SFTPError(f"SFTP {self.where}: this session cannot reconnect (no settings)")
        with contextlib.suppress(Exception):
            self.close()
        self.ssh, self.sftp = _connect(self.settings)
        self.reconnects += 1

    def __enter__(self) -> SFTPSession:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def stat(self, remote_path: str) -> RemoteFile:
        """Size and mtime of one remote file (follows symlinks, like ``ls -L``)."""
        attr = self.sftp.stat(remote_path)
        return RemoteFile(
            name=posixpath.basename(remote_path),
            path=remote_path,
            size=int(attr.st_size or 0),
            mtime=float(attr.st_mtime or 0),
        )

    def exists(self, remote_path: str) -> bool:
        """Whether ``remote_path`` exists (without following a final symlink)."""
        try:
            self.sftp.lstat(remote_path)
        except FileNotFoundError:
            return False
        return True

    def list_files(self, folder: str, pattern: str = "*") -> FileListing:
        """Regular files in ``folder`` whose name matches the fnmatch ``pattern`` (case-sensitive).

        Directories and in-progress uploads (``*.tmp``, ``*.part``, ``*.filepart``) are left out
        and named in ``ignored``; unsafe names and symbolic links are in ``rejected``.
        Sorted by name so runs are reproducible.
        """
        listing = FileListing()
        for attr in sorted(self.sftp.listdir_attr(folder), key=lambda a: a.filename):
            name = attr.filename
            if name in (".", ".."):
                continue
            mode = attr.st_mode
            if mode is not None and stat_mod.S_ISLNK(mode):
                # A link can point anywhere on the server (outside the drop folder too): never followed.
                why = "symbolic link (links are not followed: the target may be outside the folder)"
                log.warning("SFTP %s %s: refusing %r: %s", self.where, folder, name, why)
                listing.rejected.append(RejectedName(name, why))
                continue
            # A server that omits permissions gets the benefit of the doubt: treat as a file.
            if mode is not None and not stat_mod.S_ISREG(mode):
                listing.ignored.append(name)
                continue
            reason = unsafe_name_reason(name)
            if reason is not None:
                log.warning("SFTP %s %s: refusing listed name %r: %s", self.where, folder, name, reason)
                listing.rejected.append(RejectedName(name, reason))
                continue
            if _is_temp(name):
                listing.ignored.append(name)
                continue
            if not fnmatch.fnmatchcase(name, pattern):
                continue
            listing.append(
                RemoteFile(
                    name=name,
                    path=posixpath.join(folder, name),
                    size=int(attr.st_size or 0),
                    mtime=float(attr.st_mtime or 0),
                )
            )
        return listing

    def download(
        self,
        remote_path: str,
        local_path: Path,
        *,
        retries: int = DOWNLOAD_RETRIES,
        on_progress: Callable[[int], None] | None = None,
    ) -> DownloadResult:
        """Stream ``remote_path`` to ``local_path``, hashing on the way (SHA-256).

        Reads are pipelined (prefetch) so latency does not cap throughput. If the connection
        drops, the session reconnects and the download continues from the byte it had reached
        (up to ``retries`` times), after checking the remote file still has the same size and
        mtime. The data goes to a temporary name renamed at the end, so a failed download leaves
        no partial file.

        Args:
            remote_path: File on the server.
            local_path: Where the complete file ends up.
            retries: Reconnect-and-resume attempts after a dropped connection.
            on_progress: Called with the byte count after each block (tests use it to cut the link).

        Raises:
            DownloadError: the byte count differs from the announced size, or the file changed
                between a drop and the resume.
        """
        local_path = Path(local_path)
        local_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = local_path.with_name(f".{local_path.name}.download")
        digest = hashlib.sha256()
        written = 0
        announced: RemoteFile | None = None
        attempts = 0
        try:
            if self.settings is not None and parallel_ranges(self.settings.parallel_connections) > 1:
                announced = self.stat(remote_path)
                if announced.size >= PARALLEL_MIN_BYTES:
                    sha256 = self._download_ranges(remote_path, tmp, announced, retries)
                    if self.stat(remote_path) != announced:
                        raise DownloadError(
                            f"{self.where} {remote_path}: the file changed during the download"
                        )
                    os.replace(tmp, local_path)
                    return DownloadResult(local_path=local_path, size=announced.size, sha256=sha256)
                announced = None
            with open(tmp, "wb") as out:
                while True:
                    try:
                        with self.sftp.open(remote_path, "rb") as remote:
                            now = self.stat(remote_path)
                            if announced is None:
                                announced = now
                            elif (now.size, now.mtime) != (announced.size, announced.mtime):
                                raise DownloadError(
                                    f"{self.where} {remote_path}: the file changed while we reconnected "
                                    f"({announced.size} -> {now.size} bytes); not resuming"
                                )
                            blocks = _PipelinedRead(
                                self.sftp,
                                remote,
                                start=written,
                                end=announced.size,
                                where=f"{self.where} {remote_path}",
                            )
                            for data in blocks:
                                digest.update(data)
                                out.write(data)
                                written += len(data)
                                if on_progress is not None:
                                    on_progress(written)
                        break
                    except (FileNotFoundError, PermissionError, DownloadError):
                        raise
                    except _CONNECTION_LOST as exc:
                        attempts += 1
                        if attempts > retries or self.settings is None:
                            raise
                        log.warning(
                            "SFTP %s %s: connection lost at byte %d (%s); reconnecting to resume (%d/%d)",
                            self.where,
                            remote_path,
                            written,
                            exc,
                            attempts,
                            retries,
                        )
                        time.sleep(min(0.2 * 2**attempts, 5.0))
                        self.reconnect()
            assert announced is not None
            if written != announced.size:
                raise DownloadError(
                    f"{self.where} {remote_path}: server announced {announced.size} bytes but sent "
                    f"{written}; the file changed during the download"
                )
            os.replace(tmp, local_path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return DownloadResult(local_path=local_path, size=written, sha256=digest.hexdigest())

    def checksum(
        self, remote_path: str, partial: PartialChecksum, *, deadline: float | None = None
    ) -> PartialChecksum:
        """Continue hashing ``remote_path`` (streamed, nothing stored) until the end or ``deadline``.

        Args:
            remote_path: File on the server.
            partial: Where an earlier call stopped (a fresh one starts at byte 0).
            deadline: ``time.monotonic()`` value after which to stop and return ``partial`` as far
                as it got; None reads to the end.

        Raises:
            DownloadError: the file's size or mtime differs from ``partial``'s (it changed).
        """
        now = self.stat(remote_path)
        if (now.size, now.mtime) != (partial.size, partial.mtime):
            raise DownloadError(f"{self.where} {remote_path}: changed while being hashed")
        with self.sftp.open(remote_path, "rb") as remote:
            blocks = _PipelinedRead(
                self.sftp, remote, start=partial.offset, end=partial.size, where=f"{self.where} {remote_path}"
            )
            for data in blocks:
                partial.digest.update(data)
                partial.offset += len(data)
                if deadline is not None and time.monotonic() > deadline:
                    break
        return partial

    def _download_ranges(self, remote_path: str, tmp: Path, announced: RemoteFile, retries: int) -> str:
        """Fetch a large file as byte ranges over parallel connections into ``tmp``; returns its sha256.

        Each range has its own connection, request pipeline and reconnect-and-resume loop. Ranges
        arrive out of order, so a hashing thread follows the written prefix of the file (the
        page cache still holds it) instead of hashing the whole file once the last byte is in.
        """
        assert self.settings is not None
        settings = self.settings
        size = announced.size
        parts = parallel_ranges(settings.parallel_connections)
        # Whole read requests per range: a read that splits a requested block costs a copy.
        step = -(-size // parts // READ_REQUEST_BYTES) * READ_REQUEST_BYTES
        ranges = [(start, min(start + step, size)) for start in range(0, size, step)]
        reached = [start for start, _ in ranges]  # bytes written per range, from its start
        progress = threading.Condition()
        stopped = threading.Event()
        digest = hashlib.sha256()

        def written_prefix() -> int:
            for (_, end), pos in zip(ranges, reached, strict=True):
                if pos < end:
                    return pos
            return size

        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, size)

            def fetch(index: int, start: int, end: int) -> None:
                pos, attempts = start, 0
                ssh, sftp = _connect(settings)
                try:
                    while pos < end:
                        try:
                            with sftp.open(remote_path, "rb") as remote:
                                # Only the last range can check the end of the file.
                                for data in _PipelinedRead(
                                    sftp,
                                    remote,
                                    start=pos,
                                    end=end,
                                    where=f"{self.where} {remote_path}",
                                    expect_eof=end == size,
                                ):
                                    os.pwrite(fd, data, pos)
                                    pos += len(data)
                                    with progress:
                                        reached[index] = pos
                                        progress.notify()
                        except (FileNotFoundError, PermissionError, DownloadError):
                            raise
                        except _CONNECTION_LOST:
                            attempts += 1
                            if attempts > retries:
                                raise
                            ssh.close()
                            time.sleep(min(0.2 * 2**attempts, 5.0))
                            ssh, sftp = _connect(settings)
                finally:
                    ssh.close()

            def hash_in_order() -> None:
                hashed = 0
                while hashed < size and not stopped.is_set():
                    with progress:
                        upto = written_prefix()
                        if upto <= hashed:
                            progress.wait(timeout=1.0)  # notified at every block written
                            continue
                    while hashed < upto:
                        block = os.pread(fd, min(8 * READ_SIZE, upto - hashed), hashed)
                        digest.update(block)
                        hashed += len(block)

            with ThreadPoolExecutor(max_workers=len(ranges) + 1, thread_name_prefix="sftp-range") as pool:
                hasher = pool.submit(hash_in_order)
                try:
                    for future in [
                        pool.submit(fetch, i, start, end) for i, (start, end) in enumerate(ranges)
                    ]:
                        future.result()
                finally:
                    if any(pos < end for (_, end), pos in zip(ranges, reached, strict=True)):
                        stopped.set()  # a range failed: the hash will never be needed
                    with progress:
                        progress.notify_all()
                hasher.result()
        finally:
            os.close(fd)
        return digest.hexdigest()

    def move(self, remote_path: str, folder: str, *, new_name: str | None = None) -> str:
        """Move a file into ``folder`` (created if missing); idempotent.

        A name already taken in ``folder`` gets a numbered suffix rather than being overwritten
        (an archive must not lose an earlier version). A source that is already gone is not an
        error: the move happened before (e.g. a retried step).

        Returns:
            The new remote path (or "" when the file was already gone).
        """
        name = new_name or posixpath.basename(remote_path)
        reason = unsafe_name_reason(name)
        if reason is not None:
            raise SFTPError(f"refusing to move to {name!r}: {reason}")
        self.makedirs(folder)
        if not self.exists(remote_path):
            return ""
        target = posixpath.join(folder, name)
        stem, dot, suffix = name.partition(".")
        n = 1
        while self.exists(target):
            target = posixpath.join(folder, f"{stem}.{n}{dot}{suffix}")
            n += 1
        self.sftp.rename(remote_path, target)
        return target

    def makedirs(self, folder: str) -> None:
        """Create ``folder`` and missing parents (like ``mkdir -p``)."""
        current = ""
        for part in folder.strip("/").split("/"):
            current = f"{current}/{part}" if (current or folder.startswith("/")) else part
            try:
                self.sftp.stat(current)
            except FileNotFoundError:
                with contextlib.suppress(OSError):
                    self.sftp.mkdir(current)

    def write_text(self, remote_path: str, text: str) -> None:
        """Write a small text file on the server (the ``.error.txt`` beside a rejected file)."""
        with self.sftp.open(remote_path, "wb") as remote:
            remote.write(text.encode("utf-8"))


@dataclass(frozen=True)
class SFTPClient:
    """Connection settings for one SFTP server; :meth:`session` opens a connection."""

    host: str
    port: int
    username: str
    private_key_path: Path | str | None = None
    known_hosts_path: Path | str | None = None
    timeout: float = 30.0
    passphrase: str | None = None
    password: str | None = None
    host_key_fingerprint: str | None = None
    trust_on_first_use: bool = False

    @contextmanager
    def session(self) -> Iterator[SFTPSession]:
        with connect_sftp(
            host=self.host,
            port=self.port,
            username=self.username,
            private_key_path=self.private_key_path,
            known_hosts_path=self.known_hosts_path,
            timeout=self.timeout,
            passphrase=self.passphrase,
            password=self.password,
            host_key_fingerprint=self.host_key_fingerprint,
            trust_on_first_use=self.trust_on_first_use,
        ) as session:
            yield session


def open_sftp(
    *,
    host: str,
    port: int,
    username: str,
    private_key_path: Path | str | None = None,
    known_hosts_path: Path | str | None = None,
    timeout: float = 30.0,
    passphrase: str | None = None,
    password: str | None = None,
    host_key_fingerprint: str | None = None,
    trust_on_first_use: bool = False,
    keepalive_seconds: int = KEEPALIVE_SECONDS,
    ciphers: tuple[str, ...] | None = None,
    parallel_connections: int = PARALLEL_CONNECTIONS,
) -> SFTPSession:
    """Connect and authenticate; the caller closes the returned session (see :class:`ConnectSettings`)."""
    settings = ConnectSettings(
        host=host,
        port=port,
        username=username,
        private_key_path=private_key_path,
        known_hosts_path=known_hosts_path,
        timeout=timeout,
        passphrase=passphrase,
        password=password,
        host_key_fingerprint=host_key_fingerprint,
        trust_on_first_use=trust_on_first_use,
        keepalive_seconds=keepalive_seconds,
        ciphers=ciphers,
        parallel_connections=parallel_connections,
    )
    ssh, sftp = _connect(settings)
    return SFTPSession(ssh, sftp, settings.where, settings)


@contextmanager
def connect_sftp(**kwargs: Any) -> Iterator[SFTPSession]:
    """Open an SFTP session (verified host key, keepalive) and close it afterwards.

    Takes the keyword arguments of :func:`open_sftp`.
    """
    session = open_sftp(**kwargs)
    try:
        yield session
    finally:
        session.close()


def find_complete_files(
    session: SFTPSession,
    folder: str,
    pattern: str,
    *,
    stable_seconds: float,
    rule: CompletenessRule = "stable",
    markers: tuple[str, ...] = DEFAULT_MARKERS,
    sleep: Callable[[float], None] = time.sleep,
) -> list[RemoteFile]:
    """Files in ``folder`` matching ``pattern`` that the writer has finished.

    Rules:
        ``stable``: size and mtime unchanged across two listings ``stable_seconds`` apart.
        ``marker``: a companion file ``<name><marker>`` (``invoices.csv.done``) exists; the writer
            creates it after the data file is closed.
        ``rename``: the writer uploads under a temporary name (``*.tmp``, ``*.part``,
            ``*.filepart``) and renames when done, so every listed non-temporary file is complete.
    """
    if rule == "rename":
        return list(session.list_files(folder, pattern))
    if rule == "marker":
        listing = session.list_files(folder, "*")
        names = {f.name for f in listing}
        complete = []
        for f in listing:
            if not fnmatch.fnmatchcase(f.name, pattern) or f.name.endswith(markers):
                continue
            if any(f"{f.name}{m}" in names for m in markers):
                complete.append(f)
            else:
                log.info("SFTP %s: %s has no completion marker yet", session.where, f.path)
        return complete
    first = {f.name: f for f in session.list_files(folder, pattern)}
    if not first:
        return []
    sleep(stable_seconds)
    complete = []
    for current in session.list_files(folder, pattern):
        before = first.get(current.name)
        if before is not None and (before.size, before.mtime) == (current.size, current.mtime):
            complete.append(current)
        else:
            log.info("SFTP %s: %s is still changing; waiting for the next run", session.where, current.path)
    return complete
