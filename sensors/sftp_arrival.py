"""SFTP file-arrival sensors: one per declared drop, one run per complete file version.

What has arrived and which runs to launch is :mod:`crm_pipelines.files.arrivals`; the sensor keeps
the JSON cursor and hands Dagster the run requests and the new dynamic partitions.

Tick time: Dagster cancels a sensor evaluation after 60 s by default
(``DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS``), and hashing means reading the whole file, so hashing
gets :data:`CHECKSUM_BUDGET_SECONDS` per tick and continues on the next one. Over loopback a 1 GB
file hashes in about 5 s.
"""

import json

import dagster as dg

from crm_pipelines.files.arrivals import scan_drop
from crm_pipelines.jobs import sftp_file_job_name
from crm_pipelines.partitions import file_versions_partitions
from crm_pipelines.sources import Dataset, load_sources
from resources.sftp import SFTPResource

DEFAULT_INTERVAL_SECONDS = 30
# Of Dagster's 60 s per tick: the rest is for connecting, listing and launching.
CHECKSUM_BUDGET_SECONDS = 40.0


def build_sftp_arrival_sensor(
    *,
    source: str,
    dataset: str,
    declared: Dataset,
    job_name: str | None = None,
    name: str | None = None,
    minimum_interval_seconds: int = DEFAULT_INTERVAL_SECONDS,
    checksum_budget_seconds: float = CHECKSUM_BUDGET_SECONDS,
) -> dg.SensorDefinition:
    """The arrival sensor of one drop (``sftp_file_arrival__<source>__<dataset>``).

    Args:
        source: The drop's source in sources.yaml.
        dataset: The drop's dataset.
        declared: The drop.
        job_name: The job it launches (default: the drop's ``sftp_file_ingest__<source>__<dataset>``).
        name: Sensor name (default as above).
        minimum_interval_seconds: Time between ticks.
        checksum_budget_seconds: Hashing time per tick (see the module docstring).
    """
    partitions = file_versions_partitions(source, dataset)
    sensor_name = name or f"sftp_file_arrival__{source}__{dataset}"

    @dg.sensor(
        name=sensor_name,
        job_name=job_name or sftp_file_job_name(source, dataset),
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Launches one ingest run per new, completely written version of a {source}/{dataset} file "
            f"({declared.complete_when} rule), as a partition named by the file and its sha256."
        ),
    )
    def _sensor(context: dg.SensorEvaluationContext, sftp: SFTPResource) -> dg.SensorResult:
        with sftp.session() as session:
            tick = scan_drop(
                session,
                declared=declared,
                folder=sftp.folder_of(declared.folder),
                cursor=json.loads(context.cursor) if context.cursor else {},
                stable_seconds=sftp.stable_seconds,
                checksum_budget_seconds=checksum_budget_seconds,
                partial_key=sensor_name,
            )
        for refused in tick.refused:
            context.log.warning(refused)
        for note in tick.notes:
            context.log.info(note)
        for request in tick.requests:
            context.log.info(f"launching {request.partition_key} (run key {request.run_key})")
        return dg.SensorResult(
            run_requests=tick.requests,
            cursor=json.dumps(tick.cursor, sort_keys=True),
            dynamic_partitions_requests=[partitions.build_add_request(tick.partition_keys)]
            if tick.partition_keys
            else None,
            skip_reason=tick.skip_reason,
        )

    return _sensor


def build_sftp_arrival_sensors() -> list[dg.SensorDefinition]:
    """One arrival sensor per SFTP drop declared in sources.yaml, each launching its drop's job."""
    return [
        build_sftp_arrival_sensor(source=source, dataset=dataset, declared=declared)
        for source, spec in load_sources().items()
        if spec.kind == "sftp"
        for dataset, declared in spec.datasets.items()
    ]
