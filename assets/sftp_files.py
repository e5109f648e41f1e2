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
from crm_pipelines.files.csv_reader import FileRejected, read_csv_batches
from crm_pipelines.files.sftp import find_complete_files
from crm_pipelines.lake import ParquetSink, partition_dir
from crm_pipelines.mapping.spec import load_mappings
from crm_pipelines.partitions import NIGHTLY_PARTITIONS
from crm_pipelines.progress import ProgressLog
from crm_pipelines.sources import Dataset, load_sources
from resources.lake import LakeResource
from resources.sftp import SFTPResource


def file_schema(declared: Dataset) -> pa.Schema:
    return pa.schema(
        [pa.field(c, pa.string()) for c in declared.columns]
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
    with ParquetSink(folder / f"{version}.parquet", schema) as sink:
        try:
            for chunk in read_csv_batches(
                local_file, columns=declared.columns, source_file=name, source=source, dataset=entity
            ):
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
        folder = partition_dir(lake.path, "raw", source, dataset, context.partition_key)
        quarantine_folder = partition_dir(lake.path, "quarantine", source, dataset, context.partition_key)
        folder.mkdir(parents=True, exist_ok=True)
        manifests: list[dict[str, object]] = []
        with sftp.session() as session, tempfile.TemporaryDirectory(dir=lake.path) as scratch:
            complete = find_complete_files(
                session, sftp.finance_dir, expected, stable_seconds=sftp.stable_seconds
            )
            for remote in complete:
                local = Path(scratch) / remote.name
                downloaded = session.download(remote.path, local)
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
            }
        )
        yield dg.AssetCheckResult(
            check_name="file_arrived",
            passed=bool(manifests),
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{expected} in {sftp.finance_dir}",
            metadata={"expected_file": expected},
        )

    return _extract


def build_sftp_assets() -> list[dg.AssetsDefinition]:
    """One extract asset per SFTP dataset declared in sources.yaml."""
    mappings = load_mappings()
    assets = []
    for source, spec in load_sources().items():
        if spec.kind != "sftp":
            continue
        for dataset, declared in spec.datasets.items():
            entity = mappings.entity_of(f"{source}/{dataset}") or dataset
            assets.append(_build_extract(source, spec.title, dataset, declared, entity))
    return assets
