"""The jobs: the nightly sync of everything, and the per-file SFTP ingest the sensor launches."""

from __future__ import annotations

import dagster as dg

from crm_pipelines.partitions import NIGHTLY_PARTITIONS
from crm_pipelines.sources import load_sources


def sftp_sources() -> list[str]:
    return [name for name, spec in load_sources().items() if spec.kind == "sftp"]


def build_nightly_sync_job() -> dg.JobDefinition:  # an unresolved asset job; resolved by Definitions
    return dg.define_asset_job(
        name="nightly_sync",
        selection=dg.AssetSelection.all(),
        partitions_def=NIGHTLY_PARTITIONS,
        description=(
            "Extract every CRM, the ERP database and the SFTP finance files, map, check and deduplicate them, "
            "load the warehouse and reconcile the counts."
        ),
    )


def build_sftp_ingest_job() -> dg.JobDefinition:  # an unresolved asset job; resolved by Definitions
    sources = sftp_sources()
    selection = dg.AssetSelection.groups(*sources) | dg.AssetSelection.assets(*[["raw", s] for s in sources])
    return dg.define_asset_job(
        name="sftp_file_ingest",
        selection=selection,
        partitions_def=NIGHTLY_PARTITIONS,
        description="Land newly arrived SFTP files of one business day in the lake and raw tables.",
    )
