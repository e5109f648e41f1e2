"""Remote listings: regular files with safe names, and which of them a writer has finished."""

from __future__ import annotations

import fnmatch
import logging
import posixpath
import stat as stat_mod
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import paramiko

if TYPE_CHECKING:
    from crm_pipelines.files.sftp.session import SFTPSession

log = logging.getLogger(__name__)

# Names a writer uses while a file is still being uploaded; never picked up.
TEMP_SUFFIXES = (".tmp", ".part", ".filepart")
# Marker suffixes a writer adds next to a finished file (``invoices.csv`` + ``invoices.csv.done``).
DEFAULT_MARKERS = (".done", ".ok")
CompletenessRule = Literal["stable", "marker", "rename"]


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


def list_files(sftp: paramiko.SFTPClient, folder: str, pattern: str = "*", *, where: str) -> FileListing:
    """What :meth:`SFTPSession.list_files` returns; ``where`` names the server in the log lines."""
    listing = FileListing()
    for attr in sorted(sftp.listdir_attr(folder), key=lambda a: a.filename):
        name = attr.filename
        if name in (".", ".."):
            continue
        mode = attr.st_mode
        if mode is not None and stat_mod.S_ISLNK(mode):
            # A link can point anywhere on the server (outside the drop folder too): never followed.
            why = "symbolic link (links are not followed: the target may be outside the folder)"
            log.warning("SFTP %s %s: refusing %r: %s", where, folder, name, why)
            listing.rejected.append(RejectedName(name, why))
            continue
        # A server that omits permissions gets the benefit of the doubt: treat as a file.
        if mode is not None and not stat_mod.S_ISREG(mode):
            listing.ignored.append(name)
            continue
        reason = unsafe_name_reason(name)
        if reason is not None:
            log.warning("SFTP %s %s: refusing listed name %r: %s", where, folder, name, reason)
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
