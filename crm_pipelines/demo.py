"""Run the nightly sync in-process and summarise what it did, for ``crm-pipelines demo``."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import dagster as dg
from rich.console import Console
from rich.table import Table

from crm_pipelines.settings import current_paths
from crm_pipelines.warehouse.connection import open_warehouse, table_exists
from crm_pipelines.warehouse.marts import MARTS


@dataclass
class DemoOutcome:
    success: bool
    run_id: str
    partition: str
    seconds: float
    step_rows: list[tuple[str, int | None, int | None]] = field(default_factory=list)
    checks: list[tuple[str, str, bool, str]] = field(default_factory=list)
    reconciliation: list[tuple[str, str, int, int, int, int, int, bool]] = field(default_factory=list)
    syncs: list[tuple[object, ...]] = field(default_factory=list)
    marts: dict[str, int] = field(default_factory=dict)
    quarantine: list[tuple[object, ...]] = field(default_factory=list)
    control_totals: list[tuple[object, ...]] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    warehouse: str = ""
    query_hint: str = ""


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
            metadata = materialization.metadata
            outcome.step_rows.append(
                (
                    materialization.asset_key.to_user_string(),
                    _first_int(metadata, ("rows", "dagster/row_count", "staged_rows", "golden_accounts")),
                    _first_int(metadata, ("rows_quarantined", "quarantine_rows")),
                )
            )
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
        unreadable = evaluation.metadata.get("unreadable")
        if unreadable is not None and isinstance(unreadable.value, list):
            outcome.unreadable.extend(unreadable.value)
    warehouse = open_warehouse(current_paths().warehouse_url)
    outcome.warehouse = warehouse.describe()
    if warehouse.backend == "duckdb":
        outcome.query_hint = (
            f"uv run python -c \"import duckdb; print(duckdb.connect('{warehouse.path}', read_only=True)"
            ".sql('select * from marts.dim_account limit 10'))\""
        )
    else:
        outcome.query_hint = (
            "psql as crm_analyst (analyst.*) or crm_pii_reader (marts.*); the demo's server stops with the "
            "demo: make dev ARGS='--warehouse postgres' keeps one running"
        )
    with warehouse.read() as reader:  # the marts as analysts query them, on the warehouse's backend
        present = {
            str(row[0])
            for row in reader.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'marts'"
            ).fetchall()
        }
        for mart in (m.name for m in MARTS if m.name in present):
            outcome.marts[mart] = int(reader.execute(f"SELECT count(*) FROM marts.{mart}").fetchall()[0][0])
    with warehouse.connect(read_only=True) as con:
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
            if table_exists(con, "ops", "control_totals"):
                outcome.control_totals = con.execute(
                    "SELECT source, entity, file, layer, measure, value, difference FROM ops.control_totals "
                    "WHERE run_id = ? ORDER BY source = 'all', source, file",
                    [result.run_id],
                ).fetchall()
            outcome.quarantine = con.execute(
                "SELECT source, entity, rule, count(DISTINCT record_id) FROM ops.quarantine WHERE partition = ? "
                "GROUP BY ALL ORDER BY 4 DESC, 1, 2, 3",
                [partition],
            ).fetchall()
    return outcome


Row = TypeVar("Row")
Column = tuple[str, Callable[[Row], str]]
_LEFT = {
    "asset",
    "source",
    "entity",
    "sync",
    "check",
    "result",
    "detail",
    "rule",
    "file",
    "record",
    "why",
    "source, file",
    "layer",
}


def _first_int(metadata: Mapping[str, Any], keys: Sequence[str]) -> int | None:
    for key in keys:
        value = metadata[key].value if key in metadata else None
        if isinstance(value, int):
            return value
    return None


def render_table(title: str, columns: Sequence[Column[Row]], rows: Sequence[Row]) -> Table:
    """A table whose every column is declared with the cell it shows, so headers and cells never part."""
    table = Table(title=title)
    for header, _ in columns:
        # Folded, never cut short with an ellipsis: an amount is read in full or not at all.
        table.add_column(header, justify="left" if header in _LEFT else "right", overflow="fold")
    for row in rows:
        table.add_row(*(cell(row) for _, cell in columns))
    return table


def _n(value: object) -> str:
    return "" if value is None else f"{int(str(value)):,}"


def _count_at(index: int) -> Callable[[tuple[Any, ...]], str]:
    return lambda row: _n(row[index])


def _yes(ok: object) -> str:
    return "[green]yes[/]" if ok else "[red]NO[/]"


# What each row of the control totals shows, in order; the optional ones only when not zero.
_SHOWN_LAYERS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("source", ("source",), True),
    ("quarantined", ("quarantine_extract", "quarantine_quality"), True),
    ("merged, deleted", ("merged", "deleted"), False),
    ("staging", ("staging",), True),
    ("superseded", ("superseded",), False),
    ("core", ("core",), True),
    ("marts", ("marts",), True),
    ("unapplied", ("unapplied",), False),
    ("deleted later", ("deleted_later",), False),
)
_PAID_LAYERS = (("payments applied", ("core",), True), ("amount_paid", ("marts",), True))


def control_total_rows(
    totals: Sequence[tuple[Any, ...]], entity: str
) -> list[tuple[str, str, dict[str, str], str]]:
    """One entity's control totals as (source and file, layer, {measure: value}, adds up) rows.

    Args:
        totals: ``ops.control_totals`` rows (source, entity, file, layer, measure, value, difference).
        entity: ``invoice`` or ``payment``.
    """
    groups: dict[tuple[str, str], dict[str, dict[str, tuple[Decimal, Decimal | None]]]] = {}
    for source, row_entity, file, layer, measure, value, difference in totals:
        if row_entity == entity:
            groups.setdefault((str(source), str(file)), {}).setdefault(str(layer), {})[str(measure)] = (
                value,
                difference,
            )
    out = []
    for (source, file), layers in groups.items():
        label = "all: marts.fact_invoice" if source == "all" else f"{source} {file}".strip()
        measures = [m for values in layers.values() for m in values]
        for shown, parts, always in _PAID_LAYERS if source == "all" else _SHOWN_LAYERS:
            if not any(p in layers for p in parts):
                continue
            values = {
                m: sum((layers[p][m][0] for p in parts if m in layers.get(p, {})), Decimal(0))
                for m in dict.fromkeys(measures)
            }
            if not always and not any(values.values()):
                continue
            differences = [d for p in parts for _, d in layers.get(p, {}).values() if d is not None]
            verdict = "" if not differences else _yes(not any(differences))
            cells = {m: f"{v:,.0f}" if m == "count" else f"{v:,.2f}" for m, v in values.items()}
            out.append((label, shown, cells, verdict))
            label = ""
    return out


def _cell_of(measure: str) -> Callable[[tuple[str, str, dict[str, str], str]], str]:
    return lambda row: row[2].get(measure, "")


def print_summary(outcome: DemoOutcome, *, console: Console) -> None:
    """The end-of-demo report: rows per stage, reconciliation, control totals, checks, quarantine."""
    steps: list[Column[tuple[str, int | None, int | None]]] = [
        ("asset", lambda r: r[0]),
        ("rows", lambda r: _n(r[1])),
        ("quarantined", lambda r: _n(r[2])),
    ]
    console.print(render_table("Rows per stage", steps, outcome.step_rows))

    recon: list[Column[tuple[Any, ...]]] = [
        ("source", lambda r: str(r[0])),
        ("entity", lambda r: str(r[1])),
        ("extracted", lambda r: _n(r[2])),
        ("loaded", lambda r: _n(r[3])),
        ("merged as duplicates", lambda r: _n(r[4])),
        ("quarantined", lambda r: _n(r[5])),
        ("deleted", lambda r: _n(r[6])),
        ("adds up", lambda r: _yes(r[7])),
    ]
    console.print(render_table("Reconciliation (ops.reconciliation)", recon, outcome.reconciliation))

    for entity in ("invoice", "payment"):
        rows = control_total_rows(outcome.control_totals, entity)
        if not rows:
            continue
        measures = [
            m for m in ("count", "amount_net", "amount_tax", "amount_gross", "amount") if m in rows[0][2]
        ]
        columns: list[Column[tuple[str, str, dict[str, str], str]]] = [
            ("source, file", lambda r: r[0]),
            ("layer", lambda r: r[1]),
            *[(m, _cell_of(m)) for m in measures],
            ("adds up", lambda r: r[3]),
        ]
        console.print(render_table(f"Control totals: {entity}s (ops.control_totals)", columns, rows))
    if outcome.unreadable:
        unreadable: list[Column[dict[str, str]]] = [
            ("source", lambda u: u["source"]),
            ("file", lambda u: u["file"]),
            ("record", lambda u: u["record_id"]),
            ("rule", lambda u: u["rule"]),
            ("why", lambda u: u["why"]),
        ]
        console.print(
            render_table("Quarantined rows counted without their amounts", unreadable, outcome.unreadable)
        )

    if outcome.syncs:
        syncs: list[Column[tuple[Any, ...]]] = [
            ("sync", lambda r: f"{r[0]}{' (dry run)' if r[1] else ''}"),
            *[
                (name, _count_at(i))
                for i, name in enumerate(
                    ("planned", "sent", "unchanged", "rejected", "baseline", "conflicts", "API calls"),
                    start=2,
                )
            ],
            ("adds up", lambda r: _yes(r[9])),
        ]
        console.print(render_table("Outbound syncs (ops.sync_reconciliation)", syncs, outcome.syncs))

    checks: list[Column[tuple[str, str, bool, str]]] = [
        ("asset", lambda c: c[0]),
        ("check", lambda c: c[1]),
        ("result", lambda c: "[green]passed[/]" if c[2] else "[red]failed[/]"),
        ("detail", lambda c: "" if c[2] else c[3]),
    ]
    console.print(render_table("Data-quality checks", checks, outcome.checks))

    if outcome.quarantine:
        quarantine: list[Column[tuple[Any, ...]]] = [
            ("source", lambda q: str(q[0])),
            ("entity", lambda q: str(q[1])),
            ("rule", lambda q: str(q[2])),
            ("rows", lambda q: _n(q[3])),
        ]
        console.print(
            render_table("Quarantined rows by rule (ops.quarantine)", quarantine, outcome.quarantine)
        )

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
        f"Query it:  {outcome.query_hint}\n"
        "Open the UI: make dev   (http://localhost:3000; this run is in its run history)"
    )
