"""Extract assets for SFTP file drops: complete files downloaded, parsed in chunks, landed once."""

import datetime as dt
import json
import posixpath
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa

from crm_pipelines.canonical import QUARANTINE
from crm_pipelines.files.compression import unpacked
from crm_pipelines.files.csv_reader import DriftReport, FileRejected, normalize_header
from crm_pipelines.files.readers import read_file_batches, text_dialect
from crm_pipelines.files.sftp import DownloadError, SFTPSession, find_complete_files
from crm_pipelines.jobs import SFTP_DATASET_TAG
from crm_pipelines.lake import ParquetSink, partition_dir
from crm_pipelines.mapping.spec import load_mappings
from crm_pipelines.partitions import NIGHTLY_PARTITIONS
from crm_pipelines.progress import ProgressLog
from crm_pipelines.sources import Dataset, load_sources
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
        # A sensor run names the one drop it is for; the other drops of the day are left alone.
        wanted = context.run.tags.get(SFTP_DATASET_TAG)
        if wanted is not None and wanted != f"{source}/{dataset}":
            context.log.info(f"run launched for {wanted}; {source}/{dataset} is not part of it")
            yield dg.MaterializeResult(metadata={"skipped": dg.MetadataValue.text(f"run for {wanted}")})
            yield dg.AssetCheckResult(check_name="file_arrived", passed=True, description="not checked")
            return
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
                except (PermissionError, DownloadError) as exc:
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
        paths = [m["path"] for ms in manifests.values() for m in ms]
        committed: set[tuple[str, str]] = set()
        if paths:
            # The ledger, not the lake, says what committed: the move never runs ahead of the load.
            with warehouse.get().connect(read_only=True) as con:
                if con.execute(
                    "SELECT count(*) FROM information_schema.tables "
                    "WHERE table_schema = 'ops' AND table_name = 'file_ingest'"
                ).fetchone() != (0,):
                    rows = con.execute(
                        "SELECT path, sha256 FROM ops.file_ingest WHERE source = ? AND path IN "
                        "(SELECT unnest(?::VARCHAR[]))",
                        [source, paths],
                    ).fetchall()
                    committed = {(str(p), str(h)) for p, h in rows}
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
