"""Extract assets for SFTP file drops: complete files landed in the lake once, moved after the load.

Per drop, the nightly extract lands the day's files and an archive step moves what committed
(:mod:`crm_pipelines.files.landing`); the arrival sensor's runs do the same for one file version
(partition ``<name>@<sha256[:12]>``, the same manifest, so the nightly sweep finds it landed).
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from crm_pipelines.files.landing import (
    DropDay,
    FileVersionUnavailable,
    archive_drop,
    land_drop_day,
    land_file_version,
    landed_manifests,
    landed_version,
    new_file_columns,
)
from crm_pipelines.jobs import DROP_TAG, FILE_VERSION_TAG, SFTP_SHA256_TAG, drop_tag
from crm_pipelines.lake import partition_dir
from crm_pipelines.mapping.spec import load_mappings
from crm_pipelines.partitions import NIGHTLY_PARTITIONS, file_versions_partitions, parse_file_version_key
from crm_pipelines.retries import step_retry_policy
from crm_pipelines.sources import Dataset, load_sources
from crm_pipelines.warehouse.raw import load_raw_dataset
from resources.lake import LakeResource, WarehouseResource
from resources.sftp import SFTPResource


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
        retry_policy=step_retry_policy(),
    )
    def _extract(
        context: dg.AssetExecutionContext, sftp: SFTPResource, lake: LakeResource
    ) -> Iterator[dg.MaterializeResult[None] | dg.AssetCheckResult]:
        with sftp.session() as session:
            day = land_drop_day(
                session,
                declared=declared,
                source=source,
                dataset=dataset,
                entity=entity,
                remote_folder=sftp.folder_of(declared.folder),
                lake_dir=lake.path,
                partition=context.partition_key,
                stable_seconds=sftp.stable_seconds,
                download_retries=sftp.download_retries,
                log=context.log,
            )
        yield dg.MaterializeResult(metadata=_day_metadata(day))
        # A file landed by an earlier run of this day (and since moved to processed/) has arrived too.
        landed_before = day.landed_before()
        yield dg.AssetCheckResult(
            check_name="file_arrived",
            passed=bool(day.manifests or landed_before),
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{day.expected} in {day.remote_folder}"
            + ("" if day.manifests or not landed_before else " (landed by an earlier run)"),
            metadata={"expected_file": day.expected, "landed_by_earlier_runs": landed_before},
        )

    return _extract


def _day_metadata(day: DropDay) -> dict[str, Any]:
    rows, quarantined = day.partition_rows()  # whichever run landed them (see partition_rows)
    return {
        "files": dg.MetadataValue.json(day.manifests),
        "dagster/row_count": dg.MetadataValue.int(rows),
        "rows": dg.MetadataValue.int(rows),
        "rows_quarantined": dg.MetadataValue.int(quarantined),
        "rows_landed_this_run": dg.MetadataValue.int(day.rows),
        "lake_path": dg.MetadataValue.path(str(day.folder)),
        "refused_names": dg.MetadataValue.json(day.refused),
        "unreadable_files": dg.MetadataValue.json(day.unreadable),
        "new_file_columns": dg.MetadataValue.json(new_file_columns(day.manifests)),
    }


def _log_actions(context: dg.AssetExecutionContext, actions: list[dict[str, str]]) -> None:
    for action in actions:
        context.log.info(f"{action['path']}: {action['action']} {action.get('to', '')}".strip())


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
    ) -> dg.MaterializeResult[None]:
        drops = {
            dataset: (
                declared,
                sftp.folder_of(declared.folder),
                landed_manifests(partition_dir(lake.path, "raw", source, dataset, context.partition_key)),
            )
            for dataset, declared in datasets.items()
        }
        actions = archive_drop(sftp.session, warehouse=warehouse.get(), source=source, drops=drops)
        _log_actions(context, actions)
        moved = {f"moved_to_{to}": sum(a["action"] == to for a in actions) for to in ("processed", "error")}
        return dg.MaterializeResult(metadata={**moved, "actions": dg.MetadataValue.json(actions)})

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
        retry_policy=step_retry_policy(),
    )
    def _extract(
        context: dg.AssetExecutionContext, sftp: SFTPResource, lake: LakeResource
    ) -> dg.MaterializeResult[None]:
        name, checksum, day = _file_of(context.partition_key, declared)
        try:
            manifest = land_file_version(
                sftp.session,
                declared=declared,
                source=source,
                dataset=dataset,
                entity=entity,
                remote_folder=sftp.folder_of(declared.folder),
                name=name,
                checksum=context.run.tags.get(SFTP_SHA256_TAG, checksum),
                day=day,
                lake_dir=lake.path,
                download_retries=sftp.download_retries,
                log=context.log,
            )
        except FileVersionUnavailable as exc:
            raise dg.Failure(str(exc), allow_retries=False) from exc
        rows = int(manifest["rows_landed"])
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.text(str(manifest["path"])),
                "sha256": dg.MetadataValue.text(str(manifest["sha256"])),
                "business_day": dg.MetadataValue.text(day),
                "dagster/row_count": dg.MetadataValue.int(rows),
                "rows": dg.MetadataValue.int(rows),
                "rows_quarantined": dg.MetadataValue.int(int(manifest["rows_quarantined"])),
                "rejected": dg.MetadataValue.text(str(manifest.get("rejected") or "")),
                "new_file_columns": dg.MetadataValue.json(new_file_columns([manifest])),
                "lake_path": dg.MetadataValue.path(
                    str(partition_dir(lake.path, "raw", source, dataset, day))
                ),
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
    ) -> dg.MaterializeResult[None]:
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
    ) -> dg.MaterializeResult[None]:
        name, checksum, day = _file_of(context.partition_key, declared)
        manifest = landed_version(partition_dir(lake.path, "raw", source, dataset, day), name, checksum)
        if manifest is None:
            raise dg.Failure(f"{name} version {checksum} is not in the lake; nothing to move")
        drops = {dataset: (declared, sftp.folder_of(declared.folder), [manifest])}
        actions = archive_drop(sftp.session, warehouse=warehouse.get(), source=source, drops=drops)
        _log_actions(context, actions)
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
