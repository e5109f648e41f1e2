"""The run's reconciliation: it fails loudly when the row counts do not add up."""

import dagster as dg

from crm_pipelines.mapping.spec import load_mappings
from crm_pipelines.partitions import NIGHTLY_PARTITIONS
from crm_pipelines.warehouse.marts import MARTS
from crm_pipelines.warehouse.reconcile import reconcile_partition, record_reconciliation
from resources.lake import WarehouseResource


@dg.asset(
    key=["ops", "reconciliation"],
    deps=[dg.AssetKey(["marts", m.name]) for m in MARTS],
    group_name="marts",
    partitions_def=NIGHTLY_PARTITIONS,
    kinds={"duckdb"},
    pool="warehouse",
    description="Per source and entity: rows extracted, loaded, merged as duplicates and quarantined; they must add up.",
)
def reconciliation(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult[None]:
    with warehouse.get().transaction() as con:
        rows = reconcile_partition(con, partition=context.partition_key, mappings=load_mappings())
        record_reconciliation(con, run_id=context.run_id, partition=context.partition_key, rows=rows)
    table = dg.MetadataValue.md(
        "| source | entity | extracted | loaded | merged | quarantined | deleted | adds up |\n"
        "|---|---|---|---|---|---|---|---|\n"
        + "\n".join(
            f"| {r.source} | {r.entity} | {r.extracted:,} | {r.loaded:,} | {r.merged:,} | {r.quarantined:,} | {r.deleted:,} | "
            f"{'yes' if r.adds_up else 'NO: ' + r.detail} |"
            for r in rows
        )
    )
    bad = [r for r in rows if not r.adds_up]
    if bad:
        # Written first so the analyst can see the mismatch in ops.reconciliation, then fail the run.
        raise dg.Failure(
            description="Reconciliation does not add up: "
            + "; ".join(f"{r.source}/{r.entity}: {r.detail}" for r in bad),
            metadata={"reconciliation": table},
        )
    return dg.MaterializeResult(
        metadata={
            "reconciliation": table,
            "extracted": dg.MetadataValue.int(sum(r.extracted for r in rows if r.source != "all")),
            "quarantined": dg.MetadataValue.int(sum(r.quarantined for r in rows if r.source != "all")),
            "merged": dg.MetadataValue.int(sum(r.merged for r in rows if r.source != "all")),
        }
    )
