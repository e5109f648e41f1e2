"""Resumable hashed downloads: one stream, or byte ranges over parallel connections; remote checksums."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paramiko

from crm_pipelines.files.sftp import _fastpath
from crm_pipelines.files.sftp.connection import _connect
from crm_pipelines.files.sftp.errors import _CONNECTION_LOST, DownloadError
from crm_pipelines.files.sftp.listing import RemoteFile

if TYPE_CHECKING:
    from crm_pipelines.files.sftp.session import SFTPSession

log = logging.getLogger(__name__)

# Bytes per local read when hashing a finished file.
READ_SIZE = 1024 * 1024
# Large files are fetched as byte ranges over several connections: one paramiko transport does its
# crypto in one thread, so a single stream is CPU-bound well below what sshd can send.
PARALLEL_MIN_BYTES = 64 * 1024 * 1024
# Reconnects per download before giving up: enough for a flapping link, not for a dead server.
DOWNLOAD_RETRIES = 3


def parallel_ranges(configured: int) -> int:
    """How many byte ranges a large download uses (``configured``, or automatic when 0)."""
    return configured if configured > 0 else max(1, min(4, (os.cpu_count() or 1) // 2))


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


def read_range(
    sftp: paramiko.SFTPClient,
    remote: paramiko.SFTPFile,
    *,
    start: int,
    end: int,
    where: str,
    expect_eof: bool = True,
) -> Iterable[bytes]:
    """The bytes ``[start, end)`` of an open remote file, as blocks in file order.

    The fast path's pipelined reader when this paramiko has the internals it needs
    (:func:`_fastpath.available`), else paramiko's public prefetch. Either raises
    :class:`DownloadError` when the file ends before ``end`` or (with ``expect_eof``) goes on
    after it: it changed while being read.
    """
    if _fastpath.available():
        return _fastpath._PipelinedRead(
            sftp, remote, start=start, end=end, where=where, expect_eof=expect_eof
        )
    return _prefetched_range(remote, start=start, end=end, where=where, expect_eof=expect_eof)


def _prefetched_range(
    remote: paramiko.SFTPFile, *, start: int, end: int, where: str, expect_eof: bool
) -> Iterator[bytes]:
    """``[start, end)`` through paramiko's public read path: ``prefetch`` from ``start``, then ``read``.

    Reads one prefetch request's worth at a time (``MAX_REQUEST_SIZE``): a larger ``read`` grows
    its result by concatenation, one copy per request. ``read`` takes an ``EOFError`` for the end
    of the file, and paramiko raises one when it sends on a channel the transport has just closed:
    a lost connection can look like a file that ended. So an empty ``read`` asks the server for
    the file's attributes first; that raises on a lost connection (the caller reconnects and
    resumes), and otherwise the file did end early.
    """
    remote.seek(start)
    remote.prefetch(end, max_concurrent_requests=_fastpath.MAX_PREFETCH_REQUESTS)
    at = start
    while at < end:
        data = remote.read(min(remote.MAX_REQUEST_SIZE, end - at))
        if not data:
            remote.stat()
            raise DownloadError(f"{where}: the file ended at byte {at}, expected {end}; it changed")
        at += len(data)
        yield data
    if expect_eof:
        if remote.read(1):
            raise DownloadError(f"{where}: the file is longer than {end} bytes; it changed")
        remote.stat()  # the empty read was the end of the file, not a lost connection


def download_file(
    session: SFTPSession,
    remote_path: str,
    local_path: Path,
    *,
    retries: int = DOWNLOAD_RETRIES,
    on_progress: Callable[[int], None] | None = None,
) -> DownloadResult:
    """What :meth:`SFTPSession.download` does (see there)."""
    local_path = Path(local_path)
    local_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = local_path.with_name(f".{local_path.name}.download")
    digest = hashlib.sha256()
    written = 0
    announced: RemoteFile | None = None
    attempts = 0
    try:
        if session.settings is not None and parallel_ranges(session.settings.parallel_connections) > 1:
            announced = session.stat(remote_path)
            if announced.size >= PARALLEL_MIN_BYTES:
                sha256 = _download_ranges(session, remote_path, tmp, announced, retries)
                if session.stat(remote_path) != announced:
                    raise DownloadError(
                        f"{session.where} {remote_path}: the file changed during the download"
                    )
                os.replace(tmp, local_path)
                return DownloadResult(local_path=local_path, size=announced.size, sha256=sha256)
            announced = None
        with open(tmp, "wb") as out:
            while True:
                try:
                    with session.sftp.open(remote_path, "rb") as remote:
                        now = session.stat(remote_path)
                        if announced is None:
                            announced = now
                        elif (now.size, now.mtime) != (announced.size, announced.mtime):
                            raise DownloadError(
                                f"{session.where} {remote_path}: the file changed while we reconnected "
                                f"({announced.size} -> {now.size} bytes); not resuming"
                            )
                        blocks = read_range(
                            session.sftp,
                            remote,
                            start=written,
                            end=announced.size,
                            where=f"{session.where} {remote_path}",
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
                    if attempts > retries or session.settings is None:
                        raise
                    log.warning(
                        "SFTP %s %s: connection lost at byte %d (%s); reconnecting to resume (%d/%d)",
                        session.where,
                        remote_path,
                        written,
                        exc,
                        attempts,
                        retries,
                    )
                    time.sleep(min(0.2 * 2**attempts, 5.0))
                    session.reconnect()
        assert announced is not None
        if written != announced.size:
            raise DownloadError(
                f"{session.where} {remote_path}: server announced {announced.size} bytes but sent "
                f"{written}; the file changed during the download"
            )
        os.replace(tmp, local_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return DownloadResult(local_path=local_path, size=written, sha256=digest.hexdigest())


def checksum_file(
    session: SFTPSession, remote_path: str, partial: PartialChecksum, *, deadline: float | None = None
) -> PartialChecksum:
    """What :meth:`SFTPSession.checksum` does (see there)."""
    now = session.stat(remote_path)
    if (now.size, now.mtime) != (partial.size, partial.mtime):
        raise DownloadError(f"{session.where} {remote_path}: changed while being hashed")
    with session.sftp.open(remote_path, "rb") as remote:
        blocks = read_range(
            session.sftp,
            remote,
            start=partial.offset,
            end=partial.size,
            where=f"{session.where} {remote_path}",
        )
        for data in blocks:
            partial.digest.update(data)
            partial.offset += len(data)
            if deadline is not None and time.monotonic() > deadline:
                break
    return partial


def _download_ranges(
    session: SFTPSession, remote_path: str, tmp: Path, announced: RemoteFile, retries: int
) -> str:
    """Fetch a large file as byte ranges over parallel connections into ``tmp``; returns its sha256.

    Each range has its own connection, request pipeline and reconnect-and-resume loop. Ranges
    arrive out of order, so a hashing thread follows the written prefix of the file (the
    page cache still holds it) instead of hashing the whole file once the last byte is in.
    """
    assert session.settings is not None
    settings = session.settings
    size = announced.size
    parts = parallel_ranges(settings.parallel_connections)
    # Whole read requests per range: a read that splits a requested block costs a copy.
    step = -(-size // parts // _fastpath.READ_REQUEST_BYTES) * _fastpath.READ_REQUEST_BYTES
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
                            for data in read_range(
                                sftp,
                                remote,
                                start=pos,
                                end=end,
                                where=f"{session.where} {remote_path}",
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
                for future in [pool.submit(fetch, i, start, end) for i, (start, end) in enumerate(ranges)]:
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
