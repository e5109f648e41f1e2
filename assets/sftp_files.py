"""Extract assets for SFTP file drops: complete files downloaded, parsed in chunks, landed once."""

import datetime as dt
import json
import posixpath
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa

from assets.warehouse import load_raw_dataset
from crm_pipelines.canonical import QUARANTINE
from crm_pipelines.files.compression import unpacked
from crm_pipelines.files.csv_reader import DriftReport, FileRejected, normalize_header
from crm_pipelines.files.readers import read_file_batches, text_dialect
from crm_pipelines.files.sftp import DownloadError, SFTPSession, find_complete_files
from crm_pipelines.jobs import DROP_TAG, FILE_VERSION_TAG, SFTP_SHA256_TAG, drop_tag
from crm_pipelines.lake import ParquetSink, partition_dir
from crm_pipelines.mapping.spec import load_mappings
from crm_pipelines.partitions import NIGHTLY_PARTITIONS, file_versions_partitions, parse_file_version_key
from crm_pipelines.progress import ProgressLog
from crm_pipelines.sources import Dataset, load_sources
from crm_pipelines.warehouse.connection import table_exists
from crm_pipelines.warehouse.watermarks import PENDING_FILE
from resources.lake import LakeResource, WarehouseResource
from resources.sftp import SFTPResource


def file_schema(declared: Dataset) -> pa.Schema:
    return pa.schema(
        [pa.field(normalize_header(c), pa.string()) for c in declared.columns]
        + [
            pa.field("_source_file", pa.string()),
            pa.field("_source_line", pa.int64()),
            pa.field("_extracted_at", pa.timestamp("us", tz="UTC")),
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
    folder: Path,
    quarantine_folder: Path,
    log: dg.DagsterLogManager | None = None,
) -> dict[str, object]:
    """Parse one downloaded file into the lake: rows, quarantined lines and a manifest.

    Returns:
        The manifest (also written next to the Parquet as ``<version>.json``).
    """
    name = posixpath.basename(remote_path)
    version = version_name(name, sha256)
    stem = Path(name).stem
    # A corrected file under the same name supersedes the earlier version in this partition.
    for old in [*folder.glob(f"{stem}-*"), *quarantine_folder.glob(f"{stem}-*")]:
        if not old.name.startswith(version):
            old.unlink()
    extracted_at = pa.scalar(dt.datetime.now(dt.UTC), type=pa.timestamp("us", tz="UTC"))
    schema = file_schema(declared)
    progress = ProgressLog(log, f"{source}/{name}") if log else None
    quarantine_rows: list[dict[str, Any]] = []
    rejected: str | None = None
    parsed_file: Path | None = None
    try:
        parsed_file = unpacked(local_file, local_file.parent / ".unpacked")
    except FileRejected as exc:
        rejected = str(exc)
    dialect = text_dialect(parsed_file, declared) if parsed_file else None
    drift = DriftReport()
    with ParquetSink(folder / f"{version}.parquet", schema) as sink:
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
                        "_extracted_at", pa.array([extracted_at] * rows.num_rows, extracted_at.type)
                    )
                )
                quarantine_rows.extend(chunk.quarantine)
                if progress:
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
        (folder / f"{version}.parquet").unlink(missing_ok=True)
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
    quarantine_folder.mkdir(parents=True, exist_ok=True)
    with ParquetSink(quarantine_folder / f"{version}.parquet", QUARANTINE) as qsink:
        qsink.write(pa.Table.from_pylist(quarantine_rows, schema=QUARANTINE))
    manifest = {
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
        "rows_landed": sink.rows if rejected is None else 0,
        "rows_quarantined": len({q["record_id"] for q in quarantine_rows}),
        "rejected": rejected,
    }
    manifest["data_lines"] = int(manifest["rows_landed"]) + int(manifest["rows_quarantined"])  # type: ignore[call-overload]
    (folder / f"{version}.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _build_extract(
    source: str, title: str, dataset: str, declared: Dataset, entity: str
) -> dg.AssetsDefinition:
    @dg.asset(
        key=[source, dataset],
        group_name=source,
        partitions_def=NIGHTLY_PARTITIONS,
        kinds={"sftp", "csv", "parquet"},
        description=f"{title}: the day's {dataset} file, landed in the lake once it is completely written.",
        check_specs=[dg.AssetCheckSpec("file_arrived", asset=dg.AssetKey([source, dataset]))],
    )
    def _extract(context: dg.AssetExecutionContext, sftp: SFTPResource, lake: LakeResource):  # type: ignore[no-untyped-def]
        expected = declared.file_name(context.partition_key)
        remote_folder = sftp.folder_of(declared.folder)
        folder = partition_dir(lake.path, "raw", source, dataset, context.partition_key)
        quarantine_folder = partition_dir(lake.path, "quarantine", source, dataset, context.partition_key)
        folder.mkdir(parents=True, exist_ok=True)
        manifests: list[dict[str, object]] = []
        unreadable: list[dict[str, str]] = []
        with sftp.session() as session, tempfile.TemporaryDirectory(dir=lake.path) as scratch:
            listing = session.list_files(remote_folder, expected)
            for refused in listing.rejected:
                context.log.warning(f"{remote_folder}: refused {refused.name!r}: {refused.reason}")
            complete = find_complete_files(
                session,
                remote_folder,
                expected,
                stable_seconds=sftp.stable_seconds,
                rule=declared.complete_when,
                markers=tuple(declared.markers),
            )
            for remote in complete:
                local = Path(scratch) / remote.name
                try:
                    downloaded = session.download(remote.path, local, retries=sftp.download_retries)
                except FileNotFoundError:
                    # Taken away (or renamed) by the partner between the listing and the download.
                    context.log.warning(f"{remote.path} disappeared before it could be downloaded")
                    continue
                except DownloadError as exc:
                    # It changed while being read: still being written, or replaced. Not parked in
                    # the error folder; its finished version is read by a later run.
                    context.log.warning(
                        f"{remote.path} changed while being downloaded ({exc}); left for a later run"
                    )
                    continue
                except PermissionError as exc:
                    # Nothing was landed, so nothing needs a commit first: park it for a human now.
                    reason = f"could not be downloaded: {exc}"
                    move_to_error(
                        session, remote.path, declared.remote_folder(remote_folder, "error"), reason
                    )
                    unreadable.append({"path": remote.path, "reason": reason})
                    context.log.error(f"{remote.path} {reason}")
                    continue
                version = version_name(remote.name, downloaded.sha256)
                manifest_file = folder / f"{version}.json"
                if manifest_file.exists():
                    context.log.info(
                        f"{remote.path} (sha256 {downloaded.sha256[:12]}) is already in the lake"
                    )
                    manifests.append(json.loads(manifest_file.read_text()))
                    continue
                manifests.append(
                    land_file(
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
                        log=context.log,
                    )
                )
        yield dg.MaterializeResult(
            metadata={
                "files": dg.MetadataValue.json(manifests),
                "rows": dg.MetadataValue.int(sum(int(m["rows_landed"]) for m in manifests)),  # type: ignore[call-overload]
                "rows_quarantined": dg.MetadataValue.int(sum(int(m["rows_quarantined"]) for m in manifests)),  # type: ignore[call-overload]
                "lake_path": dg.MetadataValue.path(str(folder)),
                "refused_names": dg.MetadataValue.json(
                    [{"name": r.name, "reason": r.reason} for r in listing.rejected]
                ),
                "unreadable_files": dg.MetadataValue.json(unreadable),
                "new_file_columns": dg.MetadataValue.json(new_file_columns(manifests)),
            }
        )
        # A file landed by an earlier run of this day (and since moved to processed/) has arrived too.
        landed_before = sorted(
            str(json.loads(m.read_text()).get("path"))
            for m in folder.glob("*.json")
            if m.name != PENDING_FILE
        )
        yield dg.AssetCheckResult(
            check_name="file_arrived",
            passed=bool(manifests or landed_before),
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{expected} in {remote_folder}"
            + ("" if manifests or not landed_before else " (landed by an earlier run)"),
            metadata={"expected_file": expected, "landed_by_earlier_runs": landed_before},
        )

    return _extract


def new_file_columns(manifests: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Schema drift per file: the columns each file has that its drop does not declare."""
    return {
        posixpath.basename(str(m["path"])): list(m["new_columns"]) for m in manifests if m.get("new_columns")
    }


def move_to_error(session: SFTPSession, remote_path: str, error_folder: str, reason: str) -> str:
    """Move a rejected file to ``error_folder`` and write ``<name>.error.txt`` beside it saying why."""
    moved = session.move(remote_path, error_folder)
    if moved:
        session.write_text(f"{moved}.error.txt", f"{posixpath.basename(remote_path)}: {reason}\n")
    return moved


def archive_committed_files(
    *,
    session: SFTPSession,
    manifests: list[dict[str, Any]],
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
            actions.append({"path": path, "action": "error", "to": moved})
        elif declared.after_load == "move":
            moved = session.move(path, declared.remote_folder(remote_folder, "processed"))
            actions.append({"path": path, "action": "processed", "to": moved})
        else:
            actions.append({"path": path, "action": "left"})
    return actions


def committed_versions(warehouse: WarehouseResource, source: str, paths: list[str]) -> set[tuple[str, str]]:
    """``(path, sha256)`` of the given files that ``ops.file_ingest`` records: their load committed.

    The ledger, not the lake, says what committed, so a move never runs ahead of the load.
    """
    if not paths:
        return set()
    with warehouse.get().connect(read_only=True) as con:
        if not table_exists(con, "ops", "file_ingest"):
            return set()
        rows = con.execute(
            "SELECT path, sha256 FROM ops.file_ingest WHERE source = ? AND path IN (SELECT unnest(?::VARCHAR[]))",
            [source, paths],
        ).fetchall()
    return {(str(p), str(h)) for p, h in rows}


def _build_archive(source: str, title: str, datasets: dict[str, Dataset]) -> dg.AssetsDefinition:
    @dg.asset(
        key=["ops", f"{source}__files_archived"],
        deps=[dg.AssetKey(["raw", source])],
        group_name=source,
        partitions_def=NIGHTLY_PARTITIONS,
        kinds={"sftp"},
        description=(
            f"{title}: after the raw load committed, moves each ingested file to its processed folder "
            "(rejected ones to the error folder with a .error.txt)."
        ),
    )
    def _archive(
        context: dg.AssetExecutionContext,
        sftp: SFTPResource,
        lake: LakeResource,
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        pk = context.partition_key
        manifests: dict[str, list[dict[str, Any]]] = {}
        for dataset in datasets:
            folder = partition_dir(lake.path, "raw", source, dataset, pk)
            manifests[dataset] = [json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))]
        paths = [str(m["path"]) for ms in manifests.values() for m in ms]
        committed = committed_versions(warehouse, source, paths)
        actions: list[dict[str, str]] = []
        if paths:
            with sftp.session() as session:
                for dataset, declared in datasets.items():
                    actions += archive_committed_files(
                        session=session,
                        manifests=manifests[dataset],
                        committed=committed,
                        declared=declared,
                        remote_folder=sftp.folder_of(declared.folder),
                    )
        for action in actions:
            context.log.info(f"{action['path']}: {action['action']} {action.get('to', '')}".strip())
        return dg.MaterializeResult(
            metadata={
                "moved_to_processed": dg.MetadataValue.int(sum(a["action"] == "processed" for a in actions)),
                "moved_to_error": dg.MetadataValue.int(sum(a["action"] == "error" for a in actions)),
                "actions": dg.MetadataValue.json(actions),
            }
        )

    return _archive


def build_sftp_assets() -> list[dg.AssetsDefinition]:
    """Per SFTP source: one extract asset per declared drop, and the after-commit file mover."""
    mappings = load_mappings()
    assets = []
    for source, spec in load_sources().items():
        if spec.kind != "sftp":
            continue
        for dataset, declared in spec.datasets.items():
            entity = mappings.entity_of(f"{source}/{dataset}") or dataset
            assets.append(_build_extract(source, spec.title, dataset, declared, entity))
        assets.append(_build_archive(source, spec.title, spec.datasets))
    return assets


# ----------------------------------------------------------------- one run per file version
#
# The arrival sensor adds a dynamic partition per complete file version (name@sha256[:12]) and
# launches the drop's job for it. These three assets do for that one file what the nightly
# extract, raw load and mover do for a day: land it in the lake (the same day folder, the same
# manifest, so the nightly sweep finds it landed), commit its day's raw rows with the ledger,
# then move it. Exactly once rests on the same two things: the lake manifest named by the
# version and the ledger keyed by (path, sha256).


def file_version_keys(source: str, dataset: str) -> tuple[dg.AssetKey, dg.AssetKey, dg.AssetKey]:
    """Asset keys of a drop's per-file-version extract, raw load and mover."""
    return (
        dg.AssetKey([source, dataset, "file_version"]),
        dg.AssetKey(["raw", source, dataset, "file_version"]),
        dg.AssetKey(["ops", source, dataset, "file_version_archived"]),
    )


def _file_of(partition_key: str, declared: Dataset) -> tuple[str, str, str]:
    """(file name, sha256 prefix, business day) of a file-version partition."""
    name, checksum = parse_file_version_key(partition_key)
    day = declared.date_from_name(name)
    if day is None:
        raise dg.Failure(f"{name} does not match the drop's pattern {declared.pattern}")
    return name, checksum, day


def _build_file_version_assets(
    source: str, title: str, dataset: str, declared: Dataset, entity: str
) -> list[dg.AssetsDefinition]:
    partitions = file_versions_partitions(source, dataset)
    tags = {FILE_VERSION_TAG: "file_version", DROP_TAG: drop_tag(source, dataset)}
    extract_key, load_key, archive_key = file_version_keys(source, dataset)

    @dg.asset(
        key=extract_key,
        group_name=source,
        partitions_def=partitions,
        tags=tags,
        kinds={"sftp", "parquet"},
        description=f"{title}: one version of a {dataset} file (name@sha256), landed in its day's lake folder.",
    )
    def _extract(
        context: dg.AssetExecutionContext, sftp: SFTPResource, lake: LakeResource
    ) -> dg.MaterializeResult:
        name, checksum, day = _file_of(context.partition_key, declared)
        remote_folder = sftp.folder_of(declared.folder)
        remote_path = posixpath.join(remote_folder, name)
        full_checksum = context.run.tags.get(SFTP_SHA256_TAG, checksum)
        folder = partition_dir(lake.path, "raw", source, dataset, day)
        manifest_file = folder / f"{version_name(name, checksum)}.json"
        if manifest_file.exists():
            # Landed before (an earlier attempt, or the nightly sweep got there first).
            context.log.info(f"{remote_path} (sha256 {checksum}) is already in the lake")
            manifest = json.loads(manifest_file.read_text())
        else:
            folder.mkdir(parents=True, exist_ok=True)
            with sftp.session() as session, tempfile.TemporaryDirectory(dir=lake.path) as scratch:
                local = Path(scratch) / name
                try:
                    # Size and mtime as read, so the mover can tell this content from a later one.
                    seen = session.stat(remote_path)
                    downloaded = session.download(remote_path, local, retries=sftp.download_retries)
                except FileNotFoundError as exc:
                    raise dg.Failure(
                        f"{remote_path} is gone from the drop folder and version {checksum} is not in the lake"
                    ) from exc
                except DownloadError as exc:
                    raise dg.Failure(
                        f"{remote_path} changed while being downloaded ({exc}); its next version gets its "
                        "own partition"
                    ) from exc
                except PermissionError as exc:
                    reason = f"could not be downloaded: {exc}"
                    move_to_error(
                        session, remote_path, declared.remote_folder(remote_folder, "error"), reason
                    )
                    raise dg.Failure(f"{remote_path} {reason}; moved to the error folder") from exc
                if not downloaded.sha256.startswith(full_checksum):
                    # Replaced after the sensor hashed it: the new content is another version, which
                    # the sensor launches on its own; landing it under this key would mislabel it.
                    raise dg.Failure(
                        f"{remote_path} changed since the sensor saw it (sha256 {full_checksum[:12]}, now "
                        f"{downloaded.sha256[:12]}); the new version gets its own partition"
                    )
                manifest = land_file(
                    local_file=local,
                    remote_path=remote_path,
                    sha256=downloaded.sha256,
                    size=downloaded.size,
                    mtime=seen.mtime,
                    declared=declared,
                    source=source,
                    entity=entity,
                    folder=folder,
                    quarantine_folder=partition_dir(lake.path, "quarantine", source, dataset, day),
                    log=context.log,
                )
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.text(str(manifest["path"])),
                "sha256": dg.MetadataValue.text(str(manifest["sha256"])),
                "business_day": dg.MetadataValue.text(day),
                "rows": dg.MetadataValue.int(int(manifest["rows_landed"])),
                "rows_quarantined": dg.MetadataValue.int(int(manifest["rows_quarantined"])),
                "rejected": dg.MetadataValue.text(str(manifest.get("rejected") or "")),
                "new_file_columns": dg.MetadataValue.json(new_file_columns([manifest])),
                "lake_path": dg.MetadataValue.path(str(folder)),
            }
        )

    @dg.asset(
        key=load_key,
        deps=[extract_key],
        group_name="warehouse",
        partitions_def=partitions,
        tags=tags,
        kinds={"duckdb"},
        pool="warehouse",
        description=(
            f"Lands the {dataset} file version's business day in raw.{source}__{dataset} with its ledger "
            "row in ops.file_ingest, in one transaction."
        ),
    )
    def _load(
        context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        _, _, day = _file_of(context.partition_key, declared)
        with warehouse.get().transaction() as con:
            result = load_raw_dataset(
                con,
                lake_dir=lake.path,
                source=source,
                dataset=dataset,
                kind="sftp",
                partition=day,
                run_id=context.run_id,
                log=context.log,
            )
        return dg.MaterializeResult(
            metadata={
                "business_day": dg.MetadataValue.text(day),
                "rows_in_day": dg.MetadataValue.int(result.rows or 0),
                "files": dg.MetadataValue.json(result.files),
            }
        )

    @dg.asset(
        key=archive_key,
        deps=[load_key],
        group_name=source,
        partitions_def=partitions,
        tags=tags,
        kinds={"sftp"},
        description=(
            f"{title}: after the load committed, moves the {dataset} file version to its processed folder "
            "(a rejected one to the error folder with a .error.txt)."
        ),
    )
    def _archive(
        context: dg.AssetExecutionContext,
        sftp: SFTPResource,
        lake: LakeResource,
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        name, checksum, day = _file_of(context.partition_key, declared)
        manifest_file = (
            partition_dir(lake.path, "raw", source, dataset, day) / f"{version_name(name, checksum)}.json"
        )
        if not manifest_file.exists():
            raise dg.Failure(f"{name} version {checksum} is not in the lake; nothing to move")
        manifest = json.loads(manifest_file.read_text())
        committed = committed_versions(warehouse, source, [str(manifest["path"])])
        remote_folder = sftp.folder_of(declared.folder)
        with sftp.session() as session:
            actions = archive_committed_files(
                session=session,
                manifests=[manifest],
                committed=committed,
                declared=declared,
                remote_folder=remote_folder,
            )
        for action in actions:
            context.log.info(f"{action['path']}: {action['action']} {action.get('to', '')}".strip())
        return dg.MaterializeResult(metadata={"actions": dg.MetadataValue.json(actions)})

    return [_extract, _load, _archive]


def build_sftp_file_version_assets() -> list[dg.AssetsDefinition]:
    """Per SFTP drop: the extract, raw load and mover of one file version (the sensor's runs)."""
    mappings = load_mappings()
    return [
        asset
        for source, spec in load_sources().items()
        if spec.kind == "sftp"
        for dataset, declared in spec.datasets.items()
        for asset in _build_file_version_assets(
            source, spec.title, dataset, declared, mappings.entity_of(f"{source}/{dataset}") or dataset
        )
    ]
