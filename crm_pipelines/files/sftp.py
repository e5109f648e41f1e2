"""SFTP client for file drops: strict host-key checking, key-only auth, safe listings, hashed downloads.

The Dagster resource wraps :class:`SFTPClient`; everything here is plain paramiko so it can be
used and tested without Dagster.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import posixpath
import stat as stat_mod
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import NoReturn

import paramiko

log = logging.getLogger(__name__)

# Names a writer uses while a file is still being uploaded; never picked up.
TEMP_SUFFIXES = (".tmp", ".part", ".filepart")
# Bytes per local read/write while streaming a download; prefetch keeps the pipe full.
READ_SIZE = 1024 * 1024
# Outstanding prefetch requests (32 KiB each); OpenSSH's sftp uses 64 too.
MAX_PREFETCH_REQUESTS = 64
KEEPALIVE_SECONDS = 30


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


class _RejectUnknownHost(paramiko.RejectPolicy):
    """RejectPolicy with a message that says which host and which key was presented."""

    def __init__(self, host: str, port: int, known_hosts_path: Path) -> None:
        self._where = f"{host}:{port}"
        self._known_hosts = known_hosts_path

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> NoReturn:
        raise HostKeyRejected(
            f"SFTP server {self._where} is not in {self._known_hosts}: it presented "
            f"{key.get_name()} {key.fingerprint}. Add the host key to known_hosts after checking "
            "the fingerprint with the server's owner."
        )


class SFTPSession:
    """One authenticated SFTP connection. Use :func:`connect_sftp` to open one."""

    def __init__(self, ssh: paramiko.SSHClient, sftp: paramiko.SFTPClient, where: str) -> None:
        self.ssh = ssh
        self.sftp = sftp
        self.where = where

    def close(self) -> None:
        try:
            self.sftp.close()
        finally:
            self.ssh.close()

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

    def list_files(self, folder: str, pattern: str = "*") -> FileListing:
        """Regular files in ``folder`` whose name matches the fnmatch ``pattern`` (case-sensitive).

        Directories, symlinks (not followed) and in-progress uploads (``*.tmp``, ``*.part``,
        ``*.filepart``) are left out and named in ``ignored``; unsafe names are in ``rejected``.
        Sorted by name so runs are reproducible.
        """
        listing = FileListing()
        for attr in sorted(self.sftp.listdir_attr(folder), key=lambda a: a.filename):
            name = attr.filename
            if name in (".", ".."):
                continue
            mode = attr.st_mode
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

    def download(self, remote_path: str, local_path: Path) -> DownloadResult:
        """Stream ``remote_path`` to ``local_path``, hashing on the way (SHA-256).

        Reads are pipelined (prefetch) so latency does not cap throughput. The data goes to a
        temporary name and is renamed at the end, so a failed download leaves no partial file.
        Raises :class:`DownloadError` if the byte count differs from the size the server announced
        when the download started (the file changed underneath us).
        """
        local_path = Path(local_path)
        local_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = local_path.with_name(f".{local_path.name}.download")
        digest = hashlib.sha256()
        written = 0
        try:
            with self.sftp.open(remote_path, "rb") as remote, open(tmp, "wb") as out:
                expected = int(remote.stat().st_size or 0)
                remote.prefetch(expected, MAX_PREFETCH_REQUESTS)
                while True:
                    data = remote.read(READ_SIZE)
                    if not data:
                        break
                    digest.update(data)
                    out.write(data)
                    written += len(data)
            if written != expected:
                raise DownloadError(
                    f"{self.where} {remote_path}: server announced {expected} bytes but sent {written}; "
                    "the file changed during the download"
                )
            os.replace(tmp, local_path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return DownloadResult(local_path=local_path, size=written, sha256=digest.hexdigest())


@dataclass(frozen=True)
class SFTPClient:
    """Connection settings for one SFTP server; :meth:`session` opens a connection."""

    host: str
    port: int
    username: str
    private_key_path: Path | str
    known_hosts_path: Path | str
    timeout: float = 30.0
    passphrase: str | None = None

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
        ) as session:
            yield session


def open_sftp(
    *,
    host: str,
    port: int,
    username: str,
    private_key_path: Path | str,
    known_hosts_path: Path | str,
    timeout: float = 30.0,
    passphrase: str | None = None,
) -> SFTPSession:
    """Connect and authenticate; the caller closes the returned session."""
    where = f"{host}:{port}"
    known_hosts = Path(known_hosts_path)
    if not known_hosts.is_file():
        raise HostKeyRejected(f"SFTP server {where}: known_hosts file {known_hosts} does not exist")
    pkey = paramiko.PKey.from_path(Path(private_key_path), passphrase)
    ssh = paramiko.SSHClient()
    # Only the given known_hosts counts: ~/.ssh/known_hosts of whoever runs the job must not.
    ssh.load_host_keys(str(known_hosts))
    ssh.set_missing_host_key_policy(_RejectUnknownHost(host, port, known_hosts))
    try:
        ssh.connect(
            host,
            port=port,
            username=username,
            pkey=pkey,
            look_for_keys=False,
            allow_agent=False,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            channel_timeout=timeout,
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
        raise SFTPAuthError(
            f"SFTP server {where} refused user {username!r} with key {private_key_path}: {exc}"
        ) from exc
    except BaseException:
        ssh.close()
        raise
    try:
        transport = ssh.get_transport()
        assert transport is not None
        transport.set_keepalive(KEEPALIVE_SECONDS)
        sftp = ssh.open_sftp()
        channel = sftp.get_channel()
        if channel is not None:
            channel.settimeout(timeout)
    except BaseException:
        ssh.close()
        raise
    return SFTPSession(ssh, sftp, where)


@contextmanager
def connect_sftp(
    *,
    host: str,
    port: int,
    username: str,
    private_key_path: Path | str,
    known_hosts_path: Path | str,
    timeout: float = 30.0,
    passphrase: str | None = None,
) -> Iterator[SFTPSession]:
    """Open an SFTP session (strict host keys, key auth only, keepalive) and close it afterwards."""
    session = open_sftp(
        host=host,
        port=port,
        username=username,
        private_key_path=private_key_path,
        known_hosts_path=known_hosts_path,
        timeout=timeout,
        passphrase=passphrase,
    )
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
    sleep: Callable[[float], None] = time.sleep,
) -> list[RemoteFile]:
    """Files whose size and mtime did not change over ``stable_seconds`` (still-growing files wait).

    Lists twice, ``stable_seconds`` apart. This is the simplest completeness rule; others (a
    ``.done`` marker, a manifest) can be added as functions with the same shape.
    """
    first = {f.name: f for f in session.list_files(folder, pattern)}
    if not first:
        return []
    sleep(stable_seconds)
    complete: list[RemoteFile] = []
    for current in session.list_files(folder, pattern):
        before = first.get(current.name)
        if before is not None and (before.size, before.mtime) == (current.size, current.mtime):
            complete.append(current)
        else:
            log.info("SFTP %s: %s is still changing; waiting for the next run", session.where, current.path)
    return complete
