"""Erasure on request as a Dagster job: ``erase_person``, the same as ``crm-pipelines erase``."""

import dagster as dg

from crm_pipelines.privacy.erase import erase_person as erase
from resources.lake import LakeResource, WarehouseResource


class ErasePersonConfig(dg.Config):
    """Who to erase (one of email, golden_id) and who asked."""

    email: str | None = None
    golden_id: str | None = None
    requested_by: str


@dg.op(
    description="Erase a person from the lake and every warehouse table, add them to the suppression "
    "list and record the request in ops.erasure_audit."
)
def erase_person_op(
    context: dg.OpExecutionContext,
    config: ErasePersonConfig,
    warehouse: WarehouseResource,
    lake: LakeResource,
) -> None:
    if bool(config.email) == bool(config.golden_id):
        raise dg.Failure("erase_person needs exactly one of email or golden_id")
    report = erase(
        warehouse=warehouse.get(),
        lake_dir=lake.path,
        email=config.email,
        golden_id=config.golden_id,
        requested_by=config.requested_by,
        log=context.log,
    )
    # Counts and the request id only, never the person's data: ops.erasure_audit has the rest.
    context.log.info(f"request {report.request_id}: {report.source_records} source records found")


@dg.job(
    description="Erase a person on request (launch with email or golden_id and requested_by in its config)."
)
def erase_person() -> None:
    erase_person_op()
