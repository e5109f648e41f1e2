"""One authenticated SFTP connection: listing, resumable hashed downloads, moves on the server."""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import logging
import os
import posixpath
import stat as stat_mod
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import paramiko

from crm_pipelines.files.sftp import _fastpath
from crm_pipelines.files.sftp._fastpath import _PipelinedRead
from crm_pipelines.files.sftp.connection import ConnectSettings, _connect
from crm_pipelines.files.sftp.download import (
    DOWNLOAD_RETRIES,
    PARALLEL_MIN_BYTES,
    READ_SIZE,
    DownloadResult,
    PartialChecksum,
    parallel_ranges,
)
from crm_pipelines.files.sftp.errors import _CONNECTION_LOST, DownloadError, SFTPError
from crm_pipelines.files.sftp.listing import (
    FileListing,
    RejectedName,
    RemoteFile,
    _is_temp,
    unsafe_name_reason,
)

log = logging.getLogger(__name__)


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
