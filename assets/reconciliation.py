"""The run's reconciliation: row counts and the control totals finance checks, as blocking checks."""

from collections.abc import Iterator

import dagster as dg

from crm_pipelines.mapping.spec import load_mappings
from crm_pipelines.partitions import NIGHTLY_PARTITIONS
from crm_pipelines.sources import load_sources
from crm_pipelines.warehouse.control_totals import (
    ControlTotals,
    compute_control_totals,
    record_control_totals,
)
from crm_pipelines.warehouse.marts import MARTS
from crm_pipelines.warehouse.reconcile import ReconciliationRow, reconcile_partition, record_reconciliation
from resources.lake import WarehouseResource

KEY = dg.AssetKey(["ops", "reconciliation"])


@dg.asset(
    key=KEY,
    deps=[dg.AssetKey(["marts", m.name]) for m in MARTS],
    group_name="marts",
    partitions_def=NIGHTLY_PARTITIONS,
    kinds={"duckdb"},
    pool="warehouse",
    description=(
        "Per source and entity: rows extracted, loaded, merged as duplicates, quarantined and deleted; "
        "per source, day and file: the invoice and payment control totals from the source to the facts."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            "rows_add_up",
            asset=KEY,
            blocking=True,
            description="Every extracted row is loaded, merged, quarantined or deleted (ops.reconciliation).",
        ),
        dg.AssetCheckSpec(
            "control_totals_match",
            asset=KEY,
            blocking=True,
            description=(
                "Per source, day and file, the count and amounts of invoices and payments at every layer "
                "equal the source's, less what was quarantined, merged or deleted (ops.control_totals)."
            ),
        ),
    ],
)
def reconciliation(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> Iterator[dg.MaterializeResult[None] | dg.AssetCheckResult]:
    partition = context.partition_key
    # Written before the checks judge them, so a mismatch can be looked at in ops.* after the failure.
    with warehouse.get().transaction() as con:
        rows = reconcile_partition(con, partition=partition, mappings=load_mappings())
        record_reconciliation(con, run_id=context.run_id, partition=partition, rows=rows)
        totals = compute_control_totals(
            con, partition=partition, mappings=load_mappings(), sources=load_sources()
        )
        record_control_totals(con, run_id=context.run_id, totals=totals)
    counts, amounts = _counts_metadata(rows), _totals_metadata(totals)
    yield dg.MaterializeResult(
        metadata={
            "reconciliation": counts.pop("reconciliation"),
            "control_totals": amounts.pop("control_totals"),
            "extracted": dg.MetadataValue.int(sum(r.extracted for r in rows if r.source != "all")),
            "quarantined": dg.MetadataValue.int(sum(r.quarantined for r in rows if r.source != "all")),
            "merged": dg.MetadataValue.int(sum(r.merged for r in rows if r.source != "all")),
            **counts,
            **amounts,
        }
    )
    bad = [r for r in rows if not r.adds_up]
    yield dg.AssetCheckResult(
        check_name="rows_add_up",
        passed=not bad,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(f"{r.source}/{r.entity}: {r.detail}" for r in bad)
        or "every extracted row is loaded, merged, quarantined or deleted",
        metadata={"rows_not_adding_up": dg.MetadataValue.int(len(bad))},
    )
    mismatches = totals.mismatches()
    yield dg.AssetCheckResult(
        check_name="control_totals_match",
        passed=not mismatches,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(m.describe() for m in mismatches[:20])
        + (f"; and {len(mismatches) - 20} more in ops.control_totals" if len(mismatches) > 20 else "")
        or "every layer's count and amounts match the source's",
        metadata={
            "mismatches": dg.MetadataValue.int(len(mismatches)),
            "largest_difference": dg.MetadataValue.float(
                float(max((abs(m.difference) for m in mismatches), default=0))
            ),
            "unreadable_amounts": dg.MetadataValue.int(len(totals.unreadable)),
            "unreadable": dg.MetadataValue.json(
                [
                    {
                        "source": u.source,
                        "entity": u.entity,
                        "file": u.file,
                        "record_id": u.record_id,
                        "rule": u.rule,
                        "why": u.why,
                    }
                    for u in totals.unreadable
                ]
            ),
        },
    )


def _counts_metadata(rows: list[ReconciliationRow]) -> dict[str, dg.MetadataValue]:
    """The table, and per entity and source the counts as numbers the UI plots over time."""
    table = dg.MetadataValue.md(
        "| source | entity | extracted | loaded | merged | quarantined | deleted | adds up |\n"
        "|---|---|---|---|---|---|---|---|\n"
        + "\n".join(
            f"| {r.source} | {r.entity} | {r.extracted:,} | {r.loaded:,} | {r.merged:,} | {r.quarantined:,} | "
            f"{r.deleted:,} | {'yes' if r.adds_up else 'NO: ' + r.detail} |"
            for r in rows
        )
    )
    out: dict[str, dg.MetadataValue] = {"reconciliation": table}
    for r in rows:
        for name, value in (("extracted", r.extracted), ("loaded", r.loaded), ("quarantined", r.quarantined)):
            out[f"{r.entity}/{r.source}/{name}"] = dg.MetadataValue.int(value)
    return out


def _totals_metadata(totals: ControlTotals) -> dict[str, dg.MetadataValue]:
    """The control totals as a table, and per entity and source the source totals as plottable numbers."""
    layers = ("source", "raw", "quarantine_extract", "quarantine_quality", "staging", "core", "marts")
    lines = [
        "| source | entity | file | measure | " + " | ".join(layers) + " |",
        "|---|---|---|---|" + "---|" * len(layers),
    ]
    for source, entity, file, measure, values in totals.table():
        cells = " | ".join(
            ""
            if layer not in values
            else f"{values[layer]:,.0f}"
            if measure == "count"
            else f"{values[layer]:,.2f}"
            for layer in layers
        )
        lines.append(f"| {source} | {entity} | {file} | {measure} | {cells} |")
    out: dict[str, dg.MetadataValue] = {"control_totals": dg.MetadataValue.md("\n".join(lines))}
    for (source, entity), values in totals.source_totals().items():
        for measure, value in values.items():
            if measure != "count":  # the count is plotted as extracted
                out[f"{entity}/{source}/{measure}"] = dg.MetadataValue.float(float(value))
    return out
