"""Run the nightly sync in-process and summarise what it did, for ``crm-pipelines demo``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import dagster as dg
from rich.console import Console
from rich.table import Table

from crm_pipelines.settings import current_paths
from crm_pipelines.warehouse.connection import Warehouse, table_exists
from crm_pipelines.warehouse.marts import MARTS


@dataclass
class DemoOutcome:
    success: bool
    run_id: str
    partition: str
    seconds: float
    step_rows: list[tuple[str, str, int | None]] = field(default_factory=list)
    checks: list[tuple[str, str, bool, str]] = field(default_factory=list)
    reconciliation: list[tuple[str, str, int, int, int, int, int, bool]] = field(default_factory=list)
    syncs: list[tuple[object, ...]] = field(default_factory=list)
    marts: dict[str, int] = field(default_factory=dict)
    quarantine: list[tuple[object, ...]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    warehouse: str = ""


def run_nightly(*, partition: str, console: Console) -> DemoOutcome:
    """Execute ``nightly_sync`` for ``partition`` in this process, against the current environment."""
    from crm_pipelines.definitions import defs

    job = defs().resolve_job_def("nightly_sync")
    started = time.monotonic()
    console.rule(f"nightly_sync for {partition}")
    result = job.execute_in_process(
        partition_key=partition,
        instance=dg.DagsterInstance.get(),
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
    )
    outcome = DemoOutcome(result.success, result.run_id, partition, time.monotonic() - started)
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.step_materialization_data.materialization
            rows = None
            for key in ("rows", "dagster/row_count", "staged_rows", "golden_accounts"):
                value = materialization.metadata[key].value if key in materialization.metadata else None
                if isinstance(value, int):
                    rows = value
                    break
            outcome.step_rows.append((materialization.asset_key.to_user_string(), "materialized", rows))
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
            error = event.step_failure_data.error
            outcome.failures.append(f"{event.step_key}: {error.message.strip() if error else 'failed'}")
    for evaluation in result.get_asset_check_evaluations():
        outcome.checks.append(
            (
                evaluation.asset_key.to_user_string(),
                evaluation.check_name,
                evaluation.passed,
                str(evaluation.description or ""),
            )
        )
    warehouse = Warehouse(current_paths().warehouse_url)
    outcome.warehouse = str(warehouse.path)
    with warehouse.connect(read_only=True) as con:
        for mart in (m.name for m in MARTS):
            if table_exists(con, "marts", mart):
                row = con.execute(f"SELECT count(*) FROM marts.{mart}").fetchone()
                outcome.marts[mart] = int(row[0]) if row else 0
        if table_exists(con, "ops", "reconciliation"):
            outcome.reconciliation = con.execute(
                "SELECT source, entity, extracted, loaded, merged, quarantined, deleted, adds_up FROM ops.reconciliation "
                "WHERE run_id = ? ORDER BY entity, source",
                [result.run_id],
            ).fetchall()
            if table_exists(con, "ops", "sync_reconciliation"):
                outcome.syncs = con.execute(
                    "SELECT r.sync, r.dry_run, r.planned, r.sent, r.unchanged, r.rejected, r.baseline, "
                    "coalesce(s.conflicts, 0), coalesce(s.requests, 0), r.adds_up FROM ops.sync_reconciliation AS r "
                    "LEFT JOIN ops.sync_runs AS s USING (sync, run_id) WHERE r.run_id = ? ORDER BY r.sync",
                    [result.run_id],
                ).fetchall()
            outcome.quarantine = con.execute(
                "SELECT source, entity, rule, count(DISTINCT record_id) FROM ops.quarantine WHERE partition = ? "
                "GROUP BY ALL ORDER BY 4 DESC, 1, 2, 3",
                [partition],
            ).fetchall()
    return outcome


def print_summary(outcome: DemoOutcome, *, console: Console) -> None:
    """The end-of-demo report: rows per stage, reconciliation, checks, quarantine, where to look next."""
    steps = Table(title="Rows per stage")
    steps.add_column("asset")
    steps.add_column("rows", justify="right")
    for asset, _, rows in outcome.step_rows:
        steps.add_row(asset, "" if rows is None else f"{rows:,}")
    console.print(steps)

    recon = Table(title="Reconciliation (ops.reconciliation)")
    for column in (
        "source",
        "entity",
        "extracted",
        "loaded",
        "merged as duplicates",
        "quarantined",
        "deleted",
        "adds up",
    ):
        recon.add_column(column, justify="right" if column not in ("source", "entity") else "left")
    for source, entity, extracted, loaded, merged, quarantined, deleted, ok in outcome.reconciliation:
        recon.add_row(
            str(source),
            str(entity),
            f"{extracted:,}",
            f"{loaded:,}",
            f"{merged:,}",
            f"{quarantined:,}",
            f"{deleted:,}",
            "[green]yes[/]" if ok else "[red]NO[/]",
        )
    console.print(recon)

    if outcome.syncs:
        syncs = Table(title="Outbound syncs (ops.sync_reconciliation)")
        for column in (
            "sync",
            "planned",
            "sent",
            "unchanged",
            "rejected",
            "baseline",
            "conflicts",
            "API calls",
            "adds up",
        ):
            syncs.add_column(column, justify="left" if column == "sync" else "right")
        for name, dry_run, *counts, fine in outcome.syncs:
            syncs.add_row(
                f"{name}{' (dry run)' if dry_run else ''}",
                *(f"{int(str(n)):,}" for n in counts),
                "[green]yes[/]" if fine else "[red]NO[/]",
            )
        console.print(syncs)

    checks = Table(title="Data-quality checks")
    for column in ("asset", "check", "result", "detail"):
        checks.add_column(column)
    for asset, name, passed, description in outcome.checks:
        checks.add_row(
            asset, name, "[green]passed[/]" if passed else "[red]failed[/]", "" if passed else description
        )
    console.print(checks)

    if outcome.quarantine:
        quarantine = Table(title="Quarantined rows by rule (ops.quarantine)")
        for column in ("source", "entity", "rule", "rows"):
            quarantine.add_column(column)
        for q_source, q_entity, rule, count in outcome.quarantine:
            quarantine.add_row(str(q_source), str(q_entity), str(rule), f"{count:,}")
        console.print(quarantine)

    checks_passed = sum(1 for c in outcome.checks if c[2])
    total_merged = sum(r[4] for r in outcome.reconciliation if r[0] != "all")
    total_quarantined = sum(r[5] for r in outcome.reconciliation if r[0] != "all")
    console.print(
        "\nMarts: "
        + ", ".join(f"marts.{k} {v:,} rows" for k, v in outcome.marts.items())
        + f"\nDuplicates merged: {total_merged:,}   rows quarantined: {total_quarantined:,}   "
        f"checks passed: {checks_passed}/{len(outcome.checks)}   run time: {outcome.seconds:.1f}s"
    )
    for failure in outcome.failures:
        console.print(f"[red]failed[/] {failure}")
    status = "[green]succeeded[/]" if outcome.success else "[red]FAILED[/]"
    console.print(
        f"\nRun {outcome.run_id} {status} for {outcome.partition}.\n"
        f"Warehouse: {outcome.warehouse}\n"
        f"Query it:  uv run python -c \"import duckdb; print(duckdb.connect('{outcome.warehouse}', read_only=True)"
        f".sql('select * from marts.dim_account limit 10'))\"\n"
        "Open the UI: make dev   (http://localhost:3000; this run is in its run history)"
    )
