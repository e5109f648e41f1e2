"""The jobs: the nightly sync of everything, and the per-file SFTP ingest the sensor launches."""

import dagster as dg

from crm_pipelines.partitions import NIGHTLY_PARTITIONS

nightly_sync_job = dg.define_asset_job(
    name="nightly_sync",
    selection=dg.AssetSelection.all(),
    partitions_def=NIGHTLY_PARTITIONS,
    description=(
        "Extract every CRM, the ERP database and the SFTP finance files, map, check and deduplicate them, "
        "load the warehouse and reconcile the counts."
    ),
)

# Tags a sensor-launched sftp_file_ingest run carries: the one file and drop it is for.
SFTP_PATH_TAG = "crm_pipelines/sftp_path"
SFTP_DATASET_TAG = "crm_pipelines/dataset"

# The SFTP extracts and their raw loads (the warehouse-group assets right after them).
_sftp_extracts = dg.AssetSelection.kind("sftp")
sftp_ingest_job = dg.define_asset_job(
    name="sftp_file_ingest",
    selection=_sftp_extracts | (_sftp_extracts.downstream(depth=1) & dg.AssetSelection.groups("warehouse")),
    partitions_def=NIGHTLY_PARTITIONS,
    description="Land newly arrived SFTP files of one business day in the lake and raw tables.",
)
