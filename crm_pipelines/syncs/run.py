"""Running one sync for one night: read its rows, plan, write (or preview), remember what happened.

Everything the sync reads comes from the warehouse (a model's SQL on a read-only connection) and the
lake; the target is written through its kind (:mod:`crm_pipelines.syncs.targets`). Outcomes are
committed batch by batch, each batch in one warehouse transaction: the state of what the target
confirmed, the rejections with the vendor's message. A dry run writes the plan to ``ops.sync_plan``
and calls nothing. A night with nothing to send opens two warehouse connections: one to read (a
golden sync's state following merged ids first, in the same transaction), one committing the plan's
outcomes with the run's record.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from crm_pipelines.lake import LakePath, spill_dir
from crm_pipelines.sql import fetch_arrow, quote_ident
from crm_pipelines.syncs.plan import Plan, plan_sync
from crm_pipelines.syncs.spec import SyncSpec
from crm_pipelines.syncs.state import (
    PlanLine,
    Rejection,
    RunCounts,
    Written,
    ensure_tables,
    follow_merged_ids,
    read_state,
    record_conflicts,
    record_plan,
    record_rejections,
    record_run,
    record_written,
    tables_exist,
)
from crm_pipelines.syncs.targets import Outcome, TargetObject, target_for
from crm_pipelines.warehouse.connection import Warehouse, table_exists

__all__ = ["MissingInput", "SyncReport", "resolve_target", "run_sync"]

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


class MissingInput(Exception):
    """A table the sync reads does not exist yet (its load has not run)."""


@dataclass
class SyncReport:
    """What one run of a sync did (the asset's metadata)."""

    sync: str
    system: str
    object_name: str
    dry_run: bool
    counts: RunCounts
    without_target: int = 0
    fields: list[str] = field(default_factory=list)
    sample: list[PlanLine] = field(default_factory=list)


def resolve_target(sync: SyncSpec) -> TargetObject:
    """The sync's target, checked against the system's declaration (raises ValueError naming the problem)."""
    return target_for(sync.system).resolve(sync)


Loaded = tuple[pa.Table, pa.Table, pa.Table, int]


def _load(sync: SyncSpec, warehouse: Warehouse, partition: str, logger: Logger) -> Loaded:
    """The source rows, their named targets, the sync's state; and the source rows left out because
    they have no target record and the sync only updates.

    One warehouse connection on a settled warehouse. A golden sync's state first follows merged golden
    ids, and its rows are read in that same write transaction (what is planned is what was committed
    with it). A model's SQL is the user's: it runs on a read-only connection, after a write
    transaction creating the sync tables only when they do not exist yet (a model may read the state
    of another sync before either has run).
    """
    if sync.source.entity is not None:
        with warehouse.transaction() as con:
            ensure_tables(con)
            rekeyed = follow_merged_ids(con, sync=sync.name, entity=sync.source.entity)
            if rekeyed:
                logger.info(f"{sync.name}: state of {rekeyed} target records follows their merged golden ids")
            return _read(con, sync, partition)
    with warehouse.connect(read_only=True) as con:
        if tables_exist(con):
            return _read(con, sync, partition)
    with warehouse.transaction() as con:
        ensure_tables(con)
    with warehouse.connect(read_only=True) as con:
        return _read(con, sync, partition)


def _read(con: Any, sync: SyncSpec, partition: str) -> Loaded:
    """What :func:`_load` returns, read on ``con``."""
    left_out = 0
    if sync.source.entity is not None:
        entity = sync.source.entity
        for table in (f"golden_{entity}", "xref_identity"):
            if not table_exists(con, "core", table):
                raise MissingInput(f"core.{table} does not exist yet: load core/identity first")
        golden = f"core.{quote_ident('golden_' + entity)}"
        linked = "SELECT golden_id FROM core.xref_identity WHERE entity = $entity AND source = $system"
        params: dict[str, object] = {"entity": entity, "system": sync.system}
        if sync.mode == "update":
            # Only golden records with a record in this system can be written: the others are
            # counted, not read (a CRM holding a tenth of the customers reads a tenth).
            source = fetch_arrow(con, f"SELECT * FROM {golden} WHERE golden_id IN ({linked})", params)
            ((left_out,),) = con.execute(
                f"SELECT count(*) FROM {golden} WHERE golden_id NOT IN ({linked})", params
            ).fetchall()
        else:
            source = fetch_arrow(con, f"SELECT * FROM {golden}")
        links = fetch_arrow(
            con,
            "SELECT golden_id AS source_key, source_id AS target_id FROM core.xref_identity "
            "WHERE entity = ? AND source = ?",
            [entity, sync.system],
        )
    else:
        assert sync.model is not None
        where = (
            f" WHERE {quote_ident(sync.source.system_column)} = $system" if sync.source.system_column else ""
        )
        sql = f"SELECT * FROM ({sync.model.sql}) AS model{where}"
        # Bind what the model uses: the night and the system written.
        known: dict[str, object] = {"partition": dt.date.fromisoformat(partition), "system": sync.system}
        params = {name: known[name] for name in set(re.findall(r"\$([a-z_]+)", sql)) if name in known}
        try:
            source = fetch_arrow(con, sql, params)
        except Exception as exc:  # a table the model reads is missing, or its SQL is wrong
            raise MissingInput(f"model {sync.source.model}: {str(exc).splitlines()[0]}") from exc
        if sync.match.record_id is not None:
            links = pa.table(
                {
                    "source_key": source.column(sync.source.key).cast(pa.string()),
                    "target_id": source.column(sync.match.record_id).cast(pa.string()),
                }
            )
        else:
            links = pa.table(
                {"source_key": pa.array([], pa.string()), "target_id": pa.array([], pa.string())}
            )
    state = read_state(con, sync=sync.name)
    return source, links, state, int(left_out)


def run_sync(
    sync: SyncSpec,
    *,
    warehouse: Warehouse,
    lake_dir: LakePath,
    partition: str,
    run_id: str,
    client: Any,
    dry_run: bool,
    backfill: bool = False,
    log: Logger | None = None,
) -> SyncReport:
    """Plan one sync and carry it out (or only record the plan).

    Args:
        sync: The sync.
        warehouse: Where the rows, the crosswalk and the state are.
        lake_dir: Where the night's target snapshot is.
        partition: The night.
        run_id: The Dagster run (stored with every state, error and conflict row).
        client: What writes into the target (the CRM's or the ERP's resource).
        dry_run: Record the plan and call nothing.
        backfill: Also send rows the first run found already there (``initial: baseline``).
        log: Where progress goes.

    Returns:
        The counts: every planned row is created, updated, unchanged, rejected or a baseline.
    """
    logger = log or logging.getLogger(__name__)
    started = time.monotonic()
    kind = target_for(sync.system)
    target = kind.resolve(sync)
    source, links, state, left_out = _load(sync, warehouse, partition, logger)
    existing = kind.existing(target, sync=sync, rows=source, client=client) if source.num_rows else {}
    plan = plan_sync(
        sync,
        target,
        source=source,
        links=links,
        state=state,
        current_sql=kind.current(target, lake_dir=lake_dir, partition=partition),
        existing=existing,
        backfill=backfill,
        spill_dir=spill_dir(lake_dir),
    )
    plan.without_target += left_out
    counts = RunCounts(planned=plan.planned, unchanged=plan.unchanged, baseline=len(plan.baseline))
    report = SyncReport(
        sync=sync.name,
        system=sync.system,
        object_name=target.object_name,
        dry_run=dry_run,
        counts=counts,
        without_target=plan.without_target,
        fields=sorted(target.fields),
        sample=plan.lines[:50],
    )
    logger.info(
        f"{sync.name}: {plan.planned} planned ({len(plan.operations)} to send, {plan.unchanged} unchanged, "
        f"{len(plan.baseline)} baseline), {len(plan.conflicts)} conflicts"
        + (" - dry run, nothing is written" if dry_run else "")
    )
    sends = not dry_run and bool(plan.operations)
    if dry_run:
        # A preview counts what it would send as created and updated (the run says dry_run).
        counts.created = sum(1 for op in plan.operations if op.target_id is None)
        counts.updated = len(plan.operations) - counts.created
    if sends:
        # What needs no request is committed before the first one (a crash mid-send keeps it).
        if plan.baseline or plan.refreshed or plan.unwritable or plan.conflicts:
            with warehouse.transaction() as con:
                _record_plan_outcomes(con, sync, target, plan, counts, run_id=run_id, partition=partition)

        def on_batch(outcomes: list[Outcome]) -> None:
            _record_batch(warehouse, sync, target, outcomes, counts, run_id=run_id, partition=partition)

        counts.requests = kind.write(
            target, sync=sync, operations=plan.operations, client=client, on_batch=on_batch
        )
        counts.seconds = round(time.monotonic() - started, 3)
        with warehouse.transaction() as con:
            ensure_tables(con)
            record_run(
                con, sync=sync.name, run_id=run_id, partition=partition, dry_run=dry_run, counts=counts
            )
    else:
        # Nothing to send: the plan's outcomes and the run commit together, in one transaction.
        counts.seconds = round(time.monotonic() - started, 3)
        with warehouse.transaction() as con:
            if dry_run:
                ensure_tables(con)
                record_plan(con, sync=sync.name, run_id=run_id, lines=plan.lines)
            else:
                _record_plan_outcomes(con, sync, target, plan, counts, run_id=run_id, partition=partition)
            record_run(
                con, sync=sync.name, run_id=run_id, partition=partition, dry_run=dry_run, counts=counts
            )
    if not counts.adds_up:
        logger.error(f"{sync.name}: outcomes do not add up to the plan: {counts}")
    return report


def _record_plan_outcomes(
    con: Any,
    sync: SyncSpec,
    target: TargetObject,
    plan: Plan,
    counts: RunCounts,
    *,
    run_id: str,
    partition: str,
) -> None:
    """What the plan decided without a request: quiet state, unwritable fields, conflicts."""
    ensure_tables(con)
    _record_quiet(con, sync, target, plan, run_id=run_id, partition=partition)
    record_rejections(con, sync=sync.name, rows=plan.unwritable, run_id=run_id, partition=partition)
    counts.conflicts = record_conflicts(
        con,
        sync=sync.name,
        target_system=sync.system,
        rows=plan.conflicts,
        run_id=run_id,
        partition=partition,
    )


def _record_quiet(
    con: Any, sync: SyncSpec, target: TargetObject, plan: Plan, *, run_id: str, partition: str
) -> None:
    """State of the rows that need no request: baselines and unchanged rows whose state lagged."""
    for rows in (plan.baseline, plan.refreshed):
        record_written(
            con,
            sync=sync.name,
            target_system=sync.system,
            target_object=target.object_name,
            entity=sync.source.entity,
            rows=rows,
            run_id=run_id,
            partition=partition,
        )


def _record_batch(
    warehouse: Warehouse,
    sync: SyncSpec,
    target: TargetObject,
    outcomes: list[Outcome],
    counts: RunCounts,
    *,
    run_id: str,
    partition: str,
) -> None:
    """Commit one batch's outcomes: the state of what the target confirmed, the rejections."""
    written: list[Written] = []
    rejected: list[Rejection] = []
    for outcome in outcomes:
        op = outcome.operation
        if outcome.status == "rejected" or outcome.target_id is None:
            rejected.append(
                Rejection(
                    op.source_key,
                    op.target_id,
                    "create" if op.target_id is None else "update",
                    outcome.error_code or "NO_ID",
                    outcome.reason or "the target confirmed no record id",
                    sorted(n for n in op.values if n in target.fields or n == sync.match.external_id),
                )
            )
            counts.rejected += 1
            continue
        written.append(Written(op.source_key, outcome.target_id, op.canonical))
        if outcome.status == "created":
            counts.created += 1
        elif outcome.status == "updated":
            counts.updated += 1
        else:
            counts.unchanged += 1
    with warehouse.transaction() as con:
        ensure_tables(con)
        record_written(
            con,
            sync=sync.name,
            target_system=sync.system,
            target_object=target.object_name,
            entity=sync.source.entity,
            rows=written,
            run_id=run_id,
            partition=partition,
        )
        record_rejections(con, sync=sync.name, rows=rejected, run_id=run_id, partition=partition)
