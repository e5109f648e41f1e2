"""File drops into the lake: complete files downloaded, parsed in chunks, landed once, then moved.

A landed file version is ``raw/<source>/<dataset>/dt=<day>/<stem>-<sha256[:12]>.parquet`` with a
manifest ``<same>.json`` beside it (path, sha256, size, dialect, rows landed and quarantined, why it
was rejected) and its quarantined lines under ``quarantine/``. Exactly once rests on two things:
the manifest named by the version (a version already in the lake is not landed again) and the
ledger ``ops.file_ingest`` keyed by (path, sha256), which the raw load commits with the rows. A file
is moved to its processed (or error) folder only once the ledger says its load committed. Two runs
landing one version at the same moment (the sensor's run beside the nightly) take turns on a lock
file per version in the day's folder (:func:`_landing`), and the second finds the version landed.

Two paths land files the same way: the nightly sweep of a day (:func:`land_drop_day`) and the
sensor's run per file version (:func:`land_file_version`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import posixpath
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from crm_pipelines.canonical import QUARANTINE
from crm_pipelines.files.compression import UnpackLimits, unpacked
from crm_pipelines.files.csv_reader import DriftReport, FileRejected, normalize_header
from crm_pipelines.files.readers import read_file_batches, text_dialect
from crm_pipelines.files.sftp import DownloadError, SFTPSession, find_complete_files
from crm_pipelines.lake import (
    EXTRACTED_AT,
    LakePath,
    ParquetSink,
    files_in,
    lake_lock,
    make_dirs,
    move,
    partition_dir,
    scratch_dir,
    write_text,
)
from crm_pipelines.progress import ProgressLog
from crm_pipelines.sources import Dataset
from crm_pipelines.warehouse.connection import Warehouse, table_exists
from crm_pipelines.warehouse.watermarks import PENDING_FILE

__all__ = [
    "DropDay",
    "FileVersionUnavailable",
    "archive_committed_files",
    "archive_drop",
    "committed_versions",
    "day_lock",
    "file_schema",
    "land_drop_day",
    "land_file",
    "land_file_version",
    "landed_manifests",
    "landed_version",
    "move_to_error",
    "new_file_columns",
    "version_name",
]

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]
Manifest = dict[str, Any]


def file_schema(declared: Dataset) -> pa.Schema:
    """Arrow schema of a drop's landed rows: the declared columns as text, and where each row came from."""
    return pa.schema(
        [pa.field(normalize_header(c), pa.string()) for c in declared.columns]
        + [
            pa.field("_source_file", pa.string()),
            pa.field("_source_line", pa.int64()),
            pa.field(EXTRACTED_AT, pa.timestamp("us", tz="UTC")),
        ]
    )


def version_name(remote_name: str, sha256: str) -> str:
    """Lake name of one version of a remote file: its stem plus the start of its checksum."""
    return f"{Path(remote_name).stem}-{sha256[:12]}"


def land_file(
    *,
    local_file: Path,
    remote_path: str,
    sha256: str,
    size: int,
    declared: Dataset,
    mtime: float | None = None,
    source: str,
    entity: str,
    folder: LakePath,
    quarantine_folder: LakePath,
    log: Logger | None = None,
) -> Manifest:
    """Parse one downloaded file into the lake: rows, quarantined lines and a manifest.

    Returns:
        The manifest (also written next to the Parquet as ``<version>.json``).
    """
    name = posixpath.basename(remote_path)
    version = version_name(name, sha256)
    stem = Path(name).stem
    extracted_at = pa.scalar(dt.datetime.now(dt.UTC), type=pa.timestamp("us", tz="UTC"))
    schema = file_schema(declared)
    progress = ProgressLog(log, f"{source}/{name}")
    quarantine_rows: list[dict[str, Any]] = []
    rejected: str | None = None
    parsed_file: Path | None = None
    try:
        limits = UnpackLimits(declared.max_unpacked_mb * 1024 * 1024, declared.max_compression_ratio)
        parsed_file = unpacked(local_file, local_file.parent / ".unpacked", limits)
    except FileRejected as exc:
        rejected = str(exc)
    dialect = text_dialect(parsed_file, declared) if parsed_file else None
    drift = DriftReport()
    # Written under staged names the raw load never reads; published together, under the day's lock.
    staged = folder / f".{version}.parquet.staged"
    staged_quarantine = quarantine_folder / f".{version}.parquet.staged"
    with ParquetSink(staged, schema) as sink:
        try:
            if parsed_file is None:
                raise FileRejected(rejected or "unreadable")
            chunks = read_file_batches(
                parsed_file,
                declared=declared,
                source_file=name,
                source=source,
                dataset=entity,
                dialect=dialect,
                drift=drift,
            )
            for chunk in chunks:
                rows = chunk.rows
                sink.write(
                    rows.append_column(
                        EXTRACTED_AT, pa.array([extracted_at] * rows.num_rows, extracted_at.type)
                    )
                )
                quarantine_rows.extend(chunk.quarantine)
                progress.add(chunk.rows.num_rows)
        except FileRejected as exc:
            rejected = str(exc)
    if parsed_file is not None and parsed_file != local_file:
        parsed_file.unlink(missing_ok=True)
    if drift.new_columns and log:
        log.warning(
            f"{name}: schema drift: column(s) {', '.join(drift.new_columns)} are not declared for "
            "this drop and were not loaded (declare them in sources.yaml to load them)"
        )
    if rejected is not None:
        staged.unlink(missing_ok=True)
        quarantine_rows = [
            {
                "source": source,
                "entity": entity,
                "record_id": f"{name}:0",
                "record": None,
                "rule": "file_rejected",
                "reason": rejected,
            }
        ]
    with ParquetSink(staged_quarantine, QUARANTINE) as qsink:
        qsink.write(pa.Table.from_pylist(quarantine_rows, schema=QUARANTINE))
    rows_landed = sink.rows if rejected is None else 0
    rows_quarantined = len({q["record_id"] for q in quarantine_rows})
    manifest: Manifest = {
        "path": remote_path,
        "sha256": sha256,
        "size": size,
        "mtime": mtime,
        "format": declared.format,
        "dialect": None
        if dialect is None
        else {"encoding": dialect.encoding, "delimiter": dialect.delimiter},
        # Schema drift: columns in the file the drop does not declare (not loaded; reported).
        "new_columns": drift.new_columns,
        "rows_landed": rows_landed,
        "rows_quarantined": rows_quarantined,
        "rejected": rejected,
        "data_lines": rows_landed + rows_quarantined,
    }
    with day_lock(folder):
        # All or nothing for a reader of the day (the raw load holds the same lock): the version's
        # rows, its quarantine and its manifest appear, and the versions it replaces go, together.
        if staged.exists():
            move(staged, folder / f"{version}.parquet")
        move(staged_quarantine, quarantine_folder / f"{version}.parquet")
        if rejected is None:
            # A corrected file under the same name supersedes the earlier versions in this partition,
            # once it has landed: a replacement that is rejected (empty, truncated, corrupt) leaves
            # them as they were.
            for old in [*folder.glob(f"{stem}-*"), *quarantine_folder.glob(f"{stem}-*")]:
                if not old.name.startswith(version):
                    old.unlink()
        write_text(folder / f"{version}.json", json.dumps(manifest, indent=2))
    return manifest


def day_lock(folder: LakePath) -> AbstractContextManager[object]:
    """Held while a file version is published into a day's lake folder, and while the raw load reads it.

    A replacement swaps several files (the new version's rows, quarantine and manifest in, the old
    version's out); a load reading the folder between two of those steps would see both versions, or
    neither. Its holder dying frees it (:func:`~crm_pipelines.lake.lake_lock`).
    """
    # Beside the day: a read creates no empty day.
    return lake_lock(folder.parent / f".{folder.name}.lock")


def new_file_columns(manifests: list[Manifest]) -> dict[str, list[str]]:
    """Schema drift per file: the columns each file has that its drop does not declare."""
    return {
        posixpath.basename(str(m["path"])): list(m["new_columns"]) for m in manifests if m.get("new_columns")
    }


def landed_manifests(folder: LakePath) -> list[Manifest]:
    """The manifests of the file versions landed in one day's lake folder."""
    return [json.loads(f.read_text()) for f in files_in(folder, "*.json") if f.name != PENDING_FILE]


def landed_version(folder: LakePath, name: str, checksum: str) -> Manifest | None:
    """The manifest of one file version in a day's lake folder, if that version was landed."""
    manifest_file = folder / f"{version_name(name, checksum)}.json"
    if not manifest_file.exists():
        return None
    manifest: Manifest = json.loads(manifest_file.read_text())
    return manifest


def _landing(folder: LakePath, name: str, sha256: str) -> AbstractContextManager[object]:
    """Held while one file version is checked for and landed in a day's folder.

    Without it, two runs that both found the version missing would write its Parquet file at once
    (one of them then fails, and the file may mix both writers' bytes). Its holder dying frees it,
    however it dies.
    """
    return lake_lock(folder / f".{version_name(name, sha256)}.landing.lock")


def _land_once(*, folder: LakePath, remote_path: str, sha256: str, log: Logger, **land: Any) -> Manifest:
    """Land one file version unless it is already in the day's folder, under its landing lock: the
    nightly sweep and the per-file run may reach the same version at the same moment."""
    name = posixpath.basename(remote_path)
    with _landing(folder, name, sha256):
        landed = landed_version(folder, name, sha256)
        if landed is not None:
            log.info(f"{remote_path} (sha256 {sha256[:12]}) is already in the lake")
            return landed
        return land_file(folder=folder, remote_path=remote_path, sha256=sha256, log=log, **land)


def move_to_error(session: SFTPSession, remote_path: str, error_folder: str, reason: str) -> str:
    """Move a rejected file to ``error_folder`` and write ``<name>.error.txt`` beside it saying why."""
    moved = session.move(remote_path, error_folder)
    if moved:
        session.write_text(f"{moved}.error.txt", f"{posixpath.basename(remote_path)}: {reason}\n")
    return moved


@dataclass
class DropDay:
    """What the nightly sweep of one drop did for one day."""

    expected: str
    remote_folder: str
    folder: LakePath
    manifests: list[Manifest] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    refused: list[dict[str, str]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        """Rows landed from the files found in the drop this run."""
        return sum(int(m["rows_landed"]) for m in self.manifests)

    @property
    def rows_quarantined(self) -> int:
        return sum(int(m["rows_quarantined"]) for m in self.manifests)

    def partition_rows(self) -> tuple[int, int]:
        """(rows landed, lines quarantined) of every file version the day's partition holds.

        What the raw load and the reconciliation count, whichever run landed the files: a re-run
        finds the day's files already moved to processed/, yet the partition still holds their rows.
        """
        manifests = landed_manifests(self.folder)
        return (
            sum(int(m["rows_landed"]) for m in manifests),
            sum(int(m["rows_quarantined"]) for m in manifests),
        )

    def landed_before(self) -> list[str]:
        """Files of this day landed by earlier runs (and since moved to processed/)."""
        return sorted(str(m.get("path")) for m in landed_manifests(self.folder))


def reject_undated_files(
    session: SFTPSession,
    *,
    declared: Dataset,
    remote_folder: str,
    stable_seconds: float,
    log: Logger,
    now: float | None = None,
) -> list[dict[str, str]]:
    """Move the drop's files whose name carries no calendar date to the error folder, with the reason.

    ``invoices_2025-13-45.csv`` (or a date in other scripts' digits) is shaped like the drop's files
    but names no night: no sweep would ever read it, so it is rejected rather than left forever.
    Only a file unchanged for ``stable_seconds`` moves (a partner may still be writing it).
    """
    if not declared.pattern or "{date}" not in declared.pattern:
        return []
    moment = time.time() if now is None else now
    shaped = declared.pattern.replace("{date}", "?" * 10)
    rejected: list[dict[str, str]] = []
    for remote in session.list_files(remote_folder, shaped):
        problem = declared.date_problem(remote.name)
        if problem is None or moment - remote.mtime < (declared.stable_seconds or stable_seconds):
            continue
        reason = f"{problem}: no night reads it"
        move_to_error(session, remote.path, declared.remote_folder(remote_folder, "error"), reason)
        rejected.append({"path": remote.path, "reason": reason})
        log.error(f"{remote.path}: {reason}; moved to the error folder")
    return rejected


def land_drop_day(
    session: SFTPSession,
    *,
    declared: Dataset,
    source: str,
    dataset: str,
    entity: str,
    remote_folder: str,
    lake_dir: LakePath,
    partition: str,
    stable_seconds: float,
    download_retries: int,
    log: Logger,
) -> DropDay:
    """Land every complete version of the day's file(s) of one drop that the lake does not hold yet.

    A file taken away or still changing is left for a later run; one that cannot be read is moved to
    the error folder with the reason, since nothing of it was landed. ``stable_seconds`` applies unless
    the drop declares its own.
    """
    expected = declared.file_name(partition)
    folder = partition_dir(lake_dir, "raw", source, dataset, partition)
    quarantine_folder = partition_dir(lake_dir, "quarantine", source, dataset, partition)
    make_dirs(folder)
    day = DropDay(expected=expected, remote_folder=remote_folder, folder=folder)
    day.unreadable += reject_undated_files(
        session, declared=declared, remote_folder=remote_folder, stable_seconds=stable_seconds, log=log
    )
    listing = session.list_files(remote_folder, expected)
    for refused in listing.rejected:
        log.warning(f"{remote_folder}: refused {refused.name!r}: {refused.reason}")
        day.refused.append({"name": refused.name, "reason": refused.reason})
    complete = find_complete_files(
        session,
        remote_folder,
        expected,
        stable_seconds=declared.stable_seconds or stable_seconds,
        rule=declared.complete_when,
        markers=tuple(declared.markers),
    )
    with scratch_dir(lake_dir) as scratch:
        for remote in complete:
            local = scratch / remote.name
            try:
                downloaded = session.download(remote.path, local, retries=download_retries)
            except FileNotFoundError:
                # Taken away (or renamed) by the partner between the listing and the download.
                log.warning(f"{remote.path} disappeared before it could be downloaded")
                continue
            except DownloadError as exc:
                # It changed while being read: still being written, or replaced. Not parked in
                # the error folder; its finished version is read by a later run.
                log.warning(f"{remote.path} changed while being downloaded ({exc}); left for a later run")
                continue
            except PermissionError as exc:
                # Nothing was landed, so nothing needs a commit first: park it for a human now.
                reason = f"could not be downloaded: {exc}"
                move_to_error(session, remote.path, declared.remote_folder(remote_folder, "error"), reason)
                day.unreadable.append({"path": remote.path, "reason": reason})
                log.error(f"{remote.path} {reason}")
                continue
            day.manifests.append(
                _land_once(
                    local_file=local,
                    remote_path=remote.path,
                    sha256=downloaded.sha256,
                    size=downloaded.size,
                    mtime=remote.mtime,
                    declared=declared,
                    source=source,
                    entity=entity,
                    folder=folder,
                    quarantine_folder=quarantine_folder,
                    log=log,
                )
            )
    return day


class FileVersionUnavailable(Exception):
    """The file version a run was launched for can no longer be landed (gone, changed or unreadable)."""


def land_file_version(
    open_session: Callable[[], AbstractContextManager[SFTPSession]],
    *,
    declared: Dataset,
    source: str,
    dataset: str,
    entity: str,
    remote_folder: str,
    name: str,
    checksum: str,
    day: str,
    lake_dir: LakePath,
    download_retries: int,
    log: Logger,
) -> Manifest:
    """Land one version of a file (the sensor's run) in its day's lake folder, unless it is there.

    Args:
        open_session: Opens an SFTP session; called only when the version is not landed yet.
        declared: The drop.
        source: The drop's source.
        dataset: The drop's dataset.
        entity: The canonical entity its rows map to.
        remote_folder: The drop's remote folder.
        name: The file's name.
        checksum: The sha256 the sensor saw (or its start): the version to land.
        day: The business day the name carries.
        lake_dir: Root of the lake.
        download_retries: Reconnect-and-resume attempts.
        log: Where progress goes.

    Returns:
        The version's manifest.

    Raises:
        FileVersionUnavailable: the file is gone, changed since the sensor hashed it, or unreadable
            (then moved to the error folder).
    """
    remote_path = posixpath.join(remote_folder, name)
    folder = partition_dir(lake_dir, "raw", source, dataset, day)
    landed = landed_version(folder, name, checksum)
    if landed is not None:
        # Landed before (an earlier attempt, or the nightly sweep got there first).
        log.info(f"{remote_path} (sha256 {checksum[:12]}) is already in the lake")
        return landed
    make_dirs(folder)
    with open_session() as session, scratch_dir(lake_dir) as scratch:
        local = scratch / name
        try:
            # Size and mtime as read, so the mover can tell this content from a later one.
            seen = session.stat(remote_path)
            downloaded = session.download(remote_path, local, retries=download_retries)
        except FileNotFoundError as exc:
            raise FileVersionUnavailable(
                f"{remote_path} is gone from the drop folder and version {checksum[:12]} is not in the lake"
            ) from exc
        except DownloadError as exc:
            raise FileVersionUnavailable(
                f"{remote_path} changed while being downloaded ({exc}); its next version gets its own partition"
            ) from exc
        except PermissionError as exc:
            reason = f"could not be downloaded: {exc}"
            move_to_error(session, remote_path, declared.remote_folder(remote_folder, "error"), reason)
            raise FileVersionUnavailable(f"{remote_path} {reason}; moved to the error folder") from exc
        if not downloaded.sha256.startswith(checksum):
            # Replaced after the sensor hashed it: the new content is another version, which the
            # sensor launches on its own; landing it under this key would mislabel it.
            raise FileVersionUnavailable(
                f"{remote_path} changed since the sensor saw it (sha256 {checksum[:12]}, now "
                f"{downloaded.sha256[:12]}); the new version gets its own partition"
            )
        return _land_once(
            local_file=local,
            remote_path=remote_path,
            sha256=downloaded.sha256,
            size=downloaded.size,
            mtime=seen.mtime,
            declared=declared,
            source=source,
            entity=entity,
            folder=folder,
            quarantine_folder=partition_dir(lake_dir, "quarantine", source, dataset, day),
            log=log,
        )


def archive_committed_files(
    *,
    session: SFTPSession,
    manifests: list[Manifest],
    committed: set[tuple[str, str]],
    declared: Dataset,
    remote_folder: str,
) -> list[dict[str, str]]:
    """Move files whose load has committed: processed folder (or left), rejected ones to the error folder.

    Idempotent: a file already moved is gone from the drop folder and skipped; a file replaced by
    a newer version since it was read (other size or mtime) stays for its own ingest.

    Args:
        session: Open SFTP session.
        manifests: Lake manifests of the files landed for the partition.
        committed: ``(path, sha256)`` pairs present in ``ops.file_ingest`` (the load committed).
        declared: The drop (folders, ``after_load``).
        remote_folder: The drop's remote folder.

    Returns:
        One entry per file acted on: path, action (``processed``, ``error``, ``left``, ``newer
        version waiting``, ``not committed``) and where it went.
    """
    actions: list[dict[str, str]] = []
    for manifest in manifests:
        path = str(manifest["path"])
        if (path, str(manifest["sha256"])) not in committed:
            actions.append({"path": path, "action": "not committed"})
            continue
        if not session.exists(path):
            continue  # moved by an earlier (retried) run
        now = session.stat(path)
        same = now.size == manifest["size"] and manifest.get("mtime") in (None, now.mtime)
        if not same:
            actions.append({"path": path, "action": "newer version waiting"})
            continue
        if manifest.get("rejected"):
            moved = move_to_error(
                session, path, declared.remote_folder(remote_folder, "error"), str(manifest["rejected"])
            )
            if moved:  # else another run moved it meanwhile
                actions.append({"path": path, "action": "error", "to": moved})
        elif declared.after_load == "move":
            moved = session.move(path, declared.remote_folder(remote_folder, "processed"))
            if moved:  # else another run moved it meanwhile
                actions.append({"path": path, "action": "processed", "to": moved})
        else:
            actions.append({"path": path, "action": "left"})
    return actions


def committed_versions(warehouse: Warehouse, source: str, paths: list[str]) -> set[tuple[str, str]]:
    """``(path, sha256)`` of the given files that ``ops.file_ingest`` records: their load committed.

    The ledger, not the lake, says what committed, so a move never runs ahead of the load.
    """
    if not paths:
        return set()
    with warehouse.connect(read_only=True) as con:
        if not table_exists(con, "ops", "file_ingest"):
            return set()
        rows = con.execute(
            "SELECT path, sha256 FROM ops.file_ingest WHERE source = ? AND path IN (SELECT unnest(?::VARCHAR[]))",
            [source, paths],
        ).fetchall()
    return {(str(p), str(h)) for p, h in rows}


def archive_drop(
    open_session: Callable[[], AbstractContextManager[SFTPSession]],
    *,
    warehouse: Warehouse,
    source: str,
    drops: dict[str, tuple[Dataset, str, list[Manifest]]],
) -> list[dict[str, str]]:
    """Move the committed files of a source's drops (``dataset -> (declared, remote folder, manifests)``).

    Opens a session only when something was landed.
    """
    paths = [str(m["path"]) for _, _, manifests in drops.values() for m in manifests]
    if not paths:
        return []
    committed = committed_versions(warehouse, source, paths)
    actions: list[dict[str, str]] = []
    with open_session() as session:
        for declared, remote_folder, manifests in drops.values():
            actions += archive_committed_files(
                session=session,
                manifests=manifests,
                committed=committed,
                declared=declared,
                remote_folder=remote_folder,
            )
    return actions
