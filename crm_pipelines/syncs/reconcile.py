"""The outbound reconciliation: every row a sync planned has one outcome, in the tables that say so.

A sync's own counts (``ops.sync_runs``) must add up: planned = created + updated + unchanged +
rejected (+ baseline on a first run). They are also checked against what the run left behind, so a
row lost or doubled between the plan, the target's answers and the warehouse shows up:

* the rejected rows are the run's rows in ``ops.sync_errors`` (one per row, with the vendor's reason;
  a value the target has no spelling for is logged there too, per field, and is not a rejection);
* every row the target confirmed (created, updated) or that was remembered as already there
  (baseline) has its state written in the run (``ops.sync_state``); unchanged rows may refresh theirs.

A dry run writes no state and no errors: only its arithmetic is checked.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from crm_pipelines.syncs.state import ensure_tables

__all__ = ["OutboundRow", "reconcile_syncs", "record_outbound"]

DDL = """
CREATE TABLE IF NOT EXISTS ops.sync_reconciliation (
    run_id VARCHAR NOT NULL,
    partition VARCHAR NOT NULL,
    sync VARCHAR NOT NULL,
    dry_run BOOLEAN NOT NULL,
    planned BIGINT NOT NULL,
    sent BIGINT NOT NULL,          -- created + updated
    unchanged BIGINT NOT NULL,
    rejected BIGINT NOT NULL,
    baseline BIGINT NOT NULL,
    state_rows BIGINT NOT NULL,    -- state written in the run
    error_rows BIGINT NOT NULL,    -- rejected rows logged in the run
    adds_up BOOLEAN NOT NULL,
    detail VARCHAR NOT NULL,
    checked_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (run_id, sync)
)
"""


@dataclass(frozen=True)
class OutboundRow:
    """One sync's outcome in one run, and whether it adds up."""

    sync: str
    dry_run: bool
    planned: int
    sent: int
    unchanged: int
    rejected: int
    baseline: int
    state_rows: int
    error_rows: int
    adds_up: bool
    detail: str


def reconcile_syncs(con: duckdb.DuckDBPyConnection, *, run_id: str) -> list[OutboundRow]:
    """Every sync that ran in ``run_id``, checked against the state and errors it wrote."""
    ensure_tables(con)
    rows = con.execute(
        """
        SELECT r.sync, r.dry_run, r.planned, r.created + r.updated, r.unchanged, r.rejected, r.baseline,
               (SELECT count(*) FROM ops.sync_state AS s WHERE s.sync = r.sync AND s.run_id = r.run_id),
               (SELECT count(*) FROM ops.sync_errors AS e
                WHERE e.sync = r.sync AND e.run_id = r.run_id AND e.error_code IS DISTINCT FROM 'NO_TARGET_VALUE')
        FROM ops.sync_runs AS r WHERE r.run_id = ? ORDER BY r.sync
        """,
        [run_id],
    ).fetchall()
    out: list[OutboundRow] = []
    for sync, dry_run, planned, sent, unchanged, rejected, baseline, state_rows, error_rows in rows:
        problems = []
        if planned != sent + unchanged + rejected + baseline:
            problems.append(
                f"planned {planned} <> sent {sent} + unchanged {unchanged} + rejected {rejected} + baseline {baseline}"
            )
        if not dry_run:
            if error_rows != rejected:
                problems.append(f"{rejected} rejected but {error_rows} rows in ops.sync_errors")
            if not sent + baseline <= state_rows <= sent + baseline + unchanged:
                problems.append(
                    f"{state_rows} state rows written for {sent} sent, {baseline} baseline, {unchanged} unchanged"
                )
        out.append(
            OutboundRow(
                sync=str(sync),
                dry_run=bool(dry_run),
                planned=int(planned),
                sent=int(sent),
                unchanged=int(unchanged),
                rejected=int(rejected),
                baseline=int(baseline),
                state_rows=int(state_rows),
                error_rows=int(error_rows),
                adds_up=not problems,
                detail="; ".join(problems),
            )
        )
    return out


def record_outbound(
    con: duckdb.DuckDBPyConnection, *, run_id: str, partition: str, rows: list[OutboundRow]
) -> None:
    """Write the run's outbound reconciliation to ``ops.sync_reconciliation`` (a re-check replaces it)."""
    con.execute(DDL)
    con.execute("DELETE FROM ops.sync_reconciliation WHERE run_id = ?", [run_id])
    con.executemany(
        "INSERT INTO ops.sync_reconciliation VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
        [
            (
                run_id,
                partition,
                r.sync,
                r.dry_run,
                r.planned,
                r.sent,
                r.unchanged,
                r.rejected,
                r.baseline,
                r.state_rows,
                r.error_rows,
                r.adds_up,
                r.detail,
            )
            for r in rows
        ],
    )
