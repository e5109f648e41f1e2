"""Which files of a drop have arrived: complete, new in content, and the runs to launch for them.

A file version is its path plus the sha256 of its content. When a complete file shows a size and
mtime not hashed yet, it is streamed once (nothing is stored) and ``[size:mtime, sha256]`` is kept
per path in the sensor's JSON cursor, so later ticks cost one listing. A new checksum becomes the
dynamic partition ``<name>@<sha256[:12]>`` and a run request with run key ``<path>@<sha256>``: the
same content is launched once whatever restarts happen, a file touched without a content change is
not launched again, and a corrected file is a new version with its own partition.

Hashing reads the whole file, and a sensor tick has a time limit, so hashing gets a budget per tick
(:func:`scan_drop`). A file not done by then keeps its partial hash in this process and the next tick
continues from the byte it reached (if size and mtime are unchanged); after a restart of the code
server it starts over.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import dagster as dg

from crm_pipelines.files.sftp import DEFAULT_MARKERS, DownloadError, FileListing, PartialChecksum, SFTPSession
from crm_pipelines.jobs import SFTP_PATH_TAG, SFTP_SHA256_TAG
from crm_pipelines.partitions import file_version_key
from crm_pipelines.sources import Dataset

__all__ = ["Arrival", "Cursor", "DropTick", "find_arrivals", "plan_runs", "scan_drop"]

# Hashes a tick could not finish, by sensor and path: continued by the next tick of this process.
_PARTIAL: dict[str, PartialChecksum] = {}

Cursor = dict[str, dict[str, list[object]]]


@dataclass(frozen=True)
class Arrival:
    """A complete file whose size and mtime the sensor has not hashed yet."""

    name: str
    path: str
    size: int
    mtime: float
    day: str

    @property
    def signature(self) -> str:
        return f"{self.size}:{int(self.mtime)}"


def find_arrivals(
    *,
    files: list[tuple[str, str, int, float]],
    declared: Dataset,
    cursor: Cursor,
    now: float,
    stable_seconds: float,
    ready: set[str] | None = None,
) -> tuple[list[Arrival], Cursor, list[str]]:
    """Which listed files are complete and not hashed in their current size and mtime.

    A file is complete when it is in ``ready`` (its drop's marker or rename rule said so), or when
    the sensor saw the same size and mtime on an earlier tick at least ``stable_seconds`` ago.

    Args:
        files: (name, path, size, mtime) of the drop's files.
        declared: The drop (its pattern gives each file's business day).
        cursor: ``{"pending": {path: [signature, first_seen]}, "versions": {path: [signature, sha256]}}``.
        now: Current time (seconds since the epoch).
        stable_seconds: How long a file must stay unchanged.
        ready: Paths known complete without a second look; None means "use the stable rule".

    Returns:
        The arrivals, the cursor with updated ``pending`` (files gone from the folder forgotten,
        so it does not grow forever), and notes on files that were ignored.
    """
    pending = dict(cursor.get("pending", {}))
    versions = dict(cursor.get("versions", {}))
    arrivals: list[Arrival] = []
    notes: list[str] = []
    listed = set()
    for name, path, size, mtime in files:
        day = declared.date_from_name(name)
        if day is None:
            problem = declared.date_problem(name)
            notes.append(
                f"{name}: {problem}; the nightly sweep moves it to the error folder"
                if problem
                else f"{name}: does not match {declared.pattern}"
            )
            continue
        listed.add(path)
        arrival = Arrival(name, path, size, mtime, day)
        known = versions.get(path)
        if known is not None and known[0] == arrival.signature:
            continue
        seen = pending.get(path)
        stable = (
            seen is not None and seen[0] == arrival.signature and now - float(str(seen[1])) >= stable_seconds
        )
        if (path in ready) if ready is not None else stable:
            arrivals.append(arrival)
            pending.pop(path, None)
        elif seen is None or seen[0] != arrival.signature:
            pending[path] = [arrival.signature, now]
    return (
        arrivals,
        {
            "pending": {p: v for p, v in pending.items() if p in listed},
            "versions": {p: v for p, v in versions.items() if p in listed},
        },
        notes,
    )


def plan_runs(
    *, arrivals: list[Arrival], checksums: Mapping[str, str], cursor: Cursor
) -> tuple[list[dg.RunRequest], list[str], Cursor, list[str]]:
    """Run requests and new partition keys for the arrivals whose checksum is known.

    Args:
        arrivals: From :func:`find_arrivals`.
        checksums: sha256 by path, for the arrivals hashed so far (the others wait a tick).
        cursor: The cursor :func:`find_arrivals` returned.

    Returns:
        Run requests (run key ``<path>@<sha256>``, partition ``<name>@<sha256[:12]>``), the
        partition keys to add, the new cursor, and notes.
    """
    versions = dict(cursor.get("versions", {}))
    pending = dict(cursor.get("pending", {}))
    requests: list[dg.RunRequest] = []
    keys: list[str] = []
    notes: list[str] = []
    for arrival in arrivals:
        sha256 = checksums.get(arrival.path)
        if sha256 is None:
            # Still hashing: keep it pending (it is complete; the next tick continues).
            pending[arrival.path] = [arrival.signature, 0]
            continue
        known = versions.get(arrival.path)
        versions[arrival.path] = [arrival.signature, sha256]
        if known is not None and known[1] == sha256:
            notes.append(
                f"{arrival.name}: touched, content unchanged (sha256 {sha256[:12]}); not launched again"
            )
            continue
        key = file_version_key(arrival.name, sha256)
        keys.append(key)
        requests.append(
            dg.RunRequest(
                run_key=f"{arrival.path}@{sha256}",
                partition_key=key,
                tags={SFTP_PATH_TAG: arrival.path, SFTP_SHA256_TAG: sha256},
            )
        )
    return requests, keys, {"pending": pending, "versions": versions}, notes


def _ready_paths(listing: FileListing, declared: Dataset, pattern: str) -> set[str] | None:
    """Paths the drop's marker or rename rule says are complete (None for the stable rule)."""
    if declared.complete_when == "rename":
        # list_files already leaves out *.tmp, *.part and *.filepart.
        return {f.path for f in listing}
    if declared.complete_when == "marker":
        names = {f.name for f in listing}
        markers = tuple(declared.markers) or DEFAULT_MARKERS
        return {
            f.path
            for f in listing
            if fnmatch.fnmatchcase(f.name, pattern) and any(f"{f.name}{m}" in names for m in markers)
        }
    return None


@dataclass
class DropTick:
    """What one look at a drop found: the runs to launch, the partitions to add, what to say."""

    requests: list[dg.RunRequest] = field(default_factory=list)
    partition_keys: list[str] = field(default_factory=list)
    cursor: Cursor = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    skip_reason: str | None = None


def scan_drop(
    session: SFTPSession,
    *,
    declared: Dataset,
    folder: str,
    cursor: Cursor,
    stable_seconds: float,
    checksum_budget_seconds: float,
    partial_key: str,
) -> DropTick:
    """List a drop, hash its complete new files within the budget and plan one run per new version.

    Args:
        session: Open SFTP session.
        declared: The drop.
        folder: Its remote folder.
        cursor: The sensor's cursor (see :func:`find_arrivals`).
        stable_seconds: How long a file must stay unchanged under the ``stable`` rule, unless the drop
            declares its own.
        checksum_budget_seconds: Hashing time for this tick.
        partial_key: Names this drop's unfinished hashes (the sensor's name).
    """
    pattern = (declared.pattern or "*").replace("{date}", "*")
    checksums: dict[str, str] = {}
    hashing: list[str] = []
    everything = session.list_files(folder, "*")
    matching = [f for f in everything if fnmatch.fnmatchcase(f.name, pattern)]
    arrivals, cursor, notes = find_arrivals(
        files=[(f.name, f.path, f.size, f.mtime) for f in matching],
        declared=declared,
        cursor=cursor,
        now=time.time(),
        stable_seconds=declared.stable_seconds or stable_seconds,
        ready=_ready_paths(everything, declared, pattern),
    )
    deadline = time.monotonic() + checksum_budget_seconds
    hashed_some = False
    for arrival in arrivals:
        key = f"{partial_key}|{arrival.path}"
        partial = _PARTIAL.pop(key, None)
        if partial is None or (partial.size, partial.mtime) != (arrival.size, arrival.mtime):
            partial = PartialChecksum(size=arrival.size, mtime=arrival.mtime)
        # The first file always moves on (at least a block), so a tiny budget still ends.
        if time.monotonic() < deadline or not hashed_some:
            hashed_some = True
            try:
                session.checksum(arrival.path, partial, deadline=deadline)
            except FileNotFoundError:
                notes.append(f"{arrival.name}: gone before it could be hashed")
                continue
            except PermissionError as exc:
                # Listed but not readable by this login: the others go on; it is tried again each tick.
                notes.append(f"{arrival.name}: not readable by this login ({exc}); left in the drop")
                continue
            except DownloadError as exc:
                notes.append(f"{arrival.name}: {exc}; hashing again on the next tick")
                continue
        if partial.done:
            checksums[arrival.path] = partial.hexdigest()
        else:
            _PARTIAL[key] = partial
            hashing.append(f"{arrival.name} ({partial.offset * 100 // max(partial.size, 1)}% hashed)")
    requests, keys, new_cursor, more_notes = plan_runs(arrivals=arrivals, checksums=checksums, cursor=cursor)
    tick = DropTick(
        requests=requests,
        partition_keys=keys,
        cursor=new_cursor,
        notes=notes + more_notes,
        refused=[f"{folder}: refused {r.name!r}: {r.reason}" for r in everything.rejected],
    )
    if not requests:
        tick.skip_reason = _skip_reason(
            declared, folder, pattern, new_cursor, hashing, len(everything.rejected)
        )
    return tick


def _skip_reason(
    declared: Dataset, folder: str, pattern: str, cursor: Cursor, hashing: list[str], refused: int
) -> str:
    if hashing:
        return f"hashing {', '.join(hashing)}; continuing on the next tick"
    waiting = len(cursor["pending"])
    if waiting:
        rule = {
            "stable": "still being written or waiting for a second look",
            "marker": "waiting for their completion marker",
            "rename": "waiting",
        }[declared.complete_when]
        return f"{waiting} file(s) in {folder} {rule}"
    return f"no new {pattern} files in {folder}" + (f" ({refused} refused names)" if refused else "")
