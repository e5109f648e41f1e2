"""The jobs: the nightly sync of everything, and one per-file ingest job per SFTP drop."""

from typing import Any

import dagster as dg

from crm_pipelines.executors import step_executor
from crm_pipelines.partitions import NIGHTLY_PARTITIONS, file_versions_partitions
from crm_pipelines.sources import load_sources

# Assets partitioned by file version (one per SFTP drop file) carry this tag: a job holds one
# partitions definition, so they run in their drop's own job, not in the nightly one.
FILE_VERSION_TAG = "crm_pipelines/partitioned_by"
# The drop (``<source>.<dataset>``) such an asset belongs to: its job selects by it.
DROP_TAG = "crm_pipelines/drop"
# Tags on a sensor-launched run: the file and the full checksum the sensor saw.
SFTP_PATH_TAG = "crm_pipelines/sftp_path"
SFTP_SHA256_TAG = "crm_pipelines/sftp_sha256"

# Each step in its own process, forked from a server that loaded the code location once, or a task on
# Celery workers: CRM_PIPELINES_EXECUTOR (crm_pipelines/executors.py).
STEP_EXECUTOR = step_executor()

nightly_sync_job = dg.define_asset_job(
    name="nightly_sync",
    executor_def=STEP_EXECUTOR,
    selection=dg.AssetSelection.all() - dg.AssetSelection.tag(FILE_VERSION_TAG, "file_version"),
    partitions_def=NIGHTLY_PARTITIONS,
    description=(
        "Extract every CRM, the ERP database and the SFTP finance files, map, check and deduplicate them, "
        "load the warehouse and reconcile the counts."
    ),
)


def drop_tag(source: str, dataset: str) -> str:
    return f"{source}.{dataset}"


def sftp_file_job_name(source: str, dataset: str) -> str:
    return f"sftp_file_ingest__{source}__{dataset}"


# Any: Dagster exports no public name for what define_asset_job returns.
def build_sftp_file_jobs() -> list[Any]:
    """Per SFTP drop: the job its sensor launches, one run per file version (a dynamic partition)."""
    return [
        dg.define_asset_job(
            name=sftp_file_job_name(source, dataset),
            selection=dg.AssetSelection.tag(DROP_TAG, drop_tag(source, dataset)),
            partitions_def=file_versions_partitions(source, dataset),
            executor_def=STEP_EXECUTOR,
            description=(
                f"Land one version of a {source}/{dataset} file in the lake and raw.{source}__{dataset}, "
                "then move it to the processed (or error) folder."
            ),
        )
        for source, spec in load_sources().items()
        if spec.kind == "sftp"
        for dataset in spec.datasets
    ]
