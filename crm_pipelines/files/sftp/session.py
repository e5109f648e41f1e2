"""One authenticated SFTP connection: listing, resumable hashed downloads, moves on the server."""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import paramiko

from crm_pipelines.files.sftp.connection import ConnectSettings, _connect
from crm_pipelines.files.sftp.download import (
    DOWNLOAD_RETRIES,
    DownloadResult,
    PartialChecksum,
    checksum_file,
    download_file,
)
from crm_pipelines.files.sftp.errors import SFTPError
from crm_pipelines.files.sftp.listing import (
    FileListing,
    RemoteFile,
    list_files,
    unsafe_name_reason,
)


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
        return list_files(self.sftp, folder, pattern, where=self.where)

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
        return download_file(self, remote_path, local_path, retries=retries, on_progress=on_progress)

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
        return checksum_file(self, remote_path, partial, deadline=deadline)

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
        try:
            self.sftp.rename(remote_path, target)
        except FileNotFoundError:
            if self.exists(remote_path):
                raise
            return ""  # another run moved it between the check and the rename
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
