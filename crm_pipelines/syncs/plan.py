"""What a sync would do: for every source row and its target record, the fields to write, and why.

Three values meet per field, all in the source's canonical form as text:

* **G**, the source's value (the golden record's, by field ownership, or the model's);
* **C**, what the night's extract of the target shows, read through the mapping's transform;
* **P**, what this sync last wrote into that record (``ops.sync_state``).

A field is written when G differs from C. When C also differs from P, the target was edited since
our last write, by someone in a system that does not own the field: a conflict, logged with both
values and decided by the field's policy (the owner's value, or the newest edit, which survivorship
already made G). When G equals C the record is unchanged; if P lags behind (a crash after the write,
before the state; or a value that was already right), the state catches up without a request. A
quiet night therefore sends nothing, and our own writes, read back by the next extract, equal P: they
never count as edits and never travel further.

The comparison runs in DuckDB over the whole source; only rows that differ somewhere reach Python.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from crm_pipelines.mapping.build import mapping_connection
from crm_pipelines.mapping.spec import load_mappings
from crm_pipelines.sql import fetch_arrow, quote_ident, quote_literal
from crm_pipelines.syncs.spec import SyncSpec
from crm_pipelines.syncs.state import Conflict, PlanLine, Rejection, Written
from crm_pipelines.syncs.targets.base import CARRIED, Operation, TargetObject
from crm_pipelines.syncs.transforms import NoTargetValue, canonical_sql, write_value

__all__ = ["Plan", "plan_sync"]

PUSHED_RUN = "__pushed_run__"  # the run that last wrote the record (from the state)
PUSHED = "__pushed__"  # the values the state holds, one per field (from its JSON)


@dataclass
class _Planner:
    """This process's in-memory planning database, and how many plans are using it now."""

    con: duckdb.DuckDBPyConnection
    users: int = 0


_PLANNERS: dict[str, _Planner] = {}  # by spill folder
_PLANNERS_PID = os.getpid()
_INHERITED: list[_Planner] = []  # a forked child never touches (nor closes) its parent's databases
_PLANNERS_LOCK = threading.Lock()


@contextmanager
def _planning_connection(spill_dir: Path | None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection of its own to this process's in-memory planning database (one per spill folder).

    Opening a DuckDB database and registering the normaliser UDFs costs more CPU than a quiet sync's
    whole plan; the plans of a step process share one database instead, each through a cursor with
    its own temporary tables and registered views (gone when it closes) that sees the database's
    UDFs and settings. A database is closed only when no plan uses it (its UDFs live with it).
    """
    global _PLANNERS_PID
    key = str(spill_dir)
    with _PLANNERS_LOCK:
        if os.getpid() != _PLANNERS_PID:
            _INHERITED.extend(_PLANNERS.values())
            _PLANNERS.clear()
            _PLANNERS_PID = os.getpid()
        planner = _PLANNERS.get(key)
        if planner is None:
            for other, idle in list(_PLANNERS.items()):  # another lake's (tests): close it when idle
                if idle.users == 0:
                    idle.con.close()
                    del _PLANNERS[other]
            planner = _PLANNERS[key] = _Planner(mapping_connection(spill_dir=spill_dir))
        elif spill_dir is not None:
            spill_dir.mkdir(parents=True, exist_ok=True)  # the lake may have been reset since
        planner.users += 1
        con = planner.con.cursor()
    try:
        yield con
    finally:
        con.close()
        with _PLANNERS_LOCK:
            planner.users -= 1


@dataclass
class Plan:
    """A sync's plan for one night.

    Attributes:
        operations: Rows to send: creates (no target id) and updates of the changed fields.
        refreshed: Unchanged rows whose state catches up (no request).
        baseline: Rows there before the sync's first run, remembered and not sent.
        unchanged: Rows whose target already holds every value (refreshed ones included).
        conflicts: Edits made in a system that does not own the field.
        unwritable: Fields left out because the target has no spelling for the value.
        lines: Per record and field, what would change from which value to which (the preview).
        without_target: Source rows with no target record that the mode may not create.
    """

    operations: list[Operation] = field(default_factory=list)
    refreshed: list[Written] = field(default_factory=list)
    baseline: list[Written] = field(default_factory=list)
    unchanged: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    unwritable: list[Rejection] = field(default_factory=list)
    lines: list[PlanLine] = field(default_factory=list)
    without_target: int = 0

    @property
    def planned(self) -> int:
        return len(self.operations) + self.unchanged + len(self.baseline)


def _column(i: int, side: str) -> str:
    return f"{side}_{i}"


def plan_sync(
    sync: SyncSpec,
    target: TargetObject,
    *,
    source: pa.Table,
    links: pa.Table,
    state: pa.Table,
    current_sql: str | None,
    existing: Mapping[str, str],
    backfill: bool = False,
    spill_dir: Path | None = None,
) -> Plan:
    """Compare the source with the target and the state; decide every row.

    Args:
        sync: The sync.
        target: Its resolved target.
        source: The source rows (a ``source.key`` column and the columns the fields read).
        links: ``source_key``, ``target_id``: the target record(s) of each source row that the
            crosswalk or the row itself names.
        state: ``source_key``, ``target_id``, ``values``, ``status`` from ``ops.sync_state``.
        current_sql: SQL of the target's current values (``target_id`` and one canonical text column
            per field); None when the target cannot say (its values are then taken from the state).
        existing: Source key -> target id of records the target already holds (not in ``links``).
        backfill: Also send the rows remembered as there before the first run.
        spill_dir: Where DuckDB may spill.

    Returns:
        The plan.
    """
    value_maps = load_mappings().value_maps
    fields = list(target.fields.items())
    key = quote_ident(sync.source.key)
    plan = Plan()
    with _planning_connection(spill_dir) as con:
        con.register("src", source)
        con.register("given_links", links)
        con.register("st", state)
        existing_rows = pa.table(
            {"source_key": list(existing), "target_id": list(existing.values())},
            schema=pa.schema([("source_key", pa.string()), ("target_id", pa.string())]),
        )
        con.register("found_links", existing_rows)
        first_run = state.num_rows == 0
        if sync.initial == "baseline" and first_run and not backfill:
            return _baseline(con, sync, fields, key, plan)
        creates = sync.mode in ("create", "upsert")
        # Each source row's targets: named by the crosswalk or the row, found by the target, or (for a
        # sync that creates) remembered from an earlier create.
        con.execute(
            f"""
            CREATE TEMP TABLE links AS
            SELECT DISTINCT CAST(source_key AS VARCHAR) AS source_key, CAST(target_id AS VARCHAR) AS target_id
            FROM given_links WHERE target_id IS NOT NULL
            UNION
            SELECT source_key, target_id FROM found_links
            UNION
            SELECT s.source_key, s.target_id FROM st AS s
            WHERE {str(creates).lower()} AND s.status = 'written' AND s.target_id <> ''
              AND s.source_key NOT IN (SELECT CAST(source_key AS VARCHAR) FROM given_links WHERE target_id IS NOT NULL)
            """
        )
        if current_sql is not None:
            con.execute(f"CREATE TEMP TABLE cur AS {current_sql}")
        else:
            con.execute("CREATE TEMP TABLE cur (target_id VARCHAR)")
        selects = []
        differs = []
        for i, (name, f) in enumerate(fields):
            g = canonical_sql(f"src.{quote_ident(f.source_column)}", f)
            c = f"cur.{quote_ident(name)}" if current_sql is not None else "NULL"
            p = canonical_sql(f"st.{PUSHED}[{i + 1}]", f)
            selects += [f"{g} AS {_column(i, 'g')}", f"{c} AS {_column(i, 'c')}", f"{p} AS {_column(i, 'p')}"]
            current_or_state = _column(i, "c") if current_sql is not None else _column(i, "p")
            differs.append(
                f"{_column(i, 'g')} IS DISTINCT FROM {current_or_state} OR {_column(i, 'g')} IS DISTINCT FROM {_column(i, 'p')}"
            )
        selects += [
            f"cur.{quote_ident(CARRIED + name)}" for name in target.carried_columns if current_sql is not None
        ]
        paths = "[" + ", ".join(quote_literal("$." + f.source_column) for _, f in fields) + "]::VARCHAR[]"
        attention = " OR ".join(["NOT known", "NOT found", *[f"({d})" for d in differs]])
        con.execute(
            f"""
            CREATE TEMP TABLE compared AS
            SELECT l.source_key, l.target_id,
                   st.source_key IS NOT NULL AS known, st.run_id AS {PUSHED_RUN},
                   {"cur.target_id IS NOT NULL" if current_sql is not None else "true"} AS found
                   {"".join(", " + s for s in selects)}
            FROM links AS l
            JOIN src ON CAST(src.{key} AS VARCHAR) = l.source_key
            LEFT JOIN cur ON cur.target_id = l.target_id
            LEFT JOIN (
                -- Each state's JSON parsed once for all fields (a path per field: one parse per field).
                SELECT source_key, target_id, run_id, json_extract_string("values", {paths}) AS {PUSHED} FROM st
            ) AS st ON st.source_key = l.source_key AND st.target_id = l.target_id
            """
        )
        ((quiet,),) = con.execute(f"SELECT count(*) FROM compared WHERE NOT ({attention})").fetchall()
        plan.unchanged += int(quiet)
        # In the sources' key order: the same night sends the same requests in the same order (a
        # target numbers what it creates in the order it receives them).
        rows = fetch_arrow(con, f"SELECT * FROM compared WHERE {attention} ORDER BY source_key").to_pylist()
        src_rows = _rows_by_key(con, key, [r["source_key"] for r in rows])
        for row in rows:
            _decide_update(
                sync, target, fields, row, src_rows, plan, value_maps, current_known=current_sql is not None
            )
        if creates:
            canonical = "".join(
                f", {canonical_sql('src.' + quote_ident(f.source_column), f)} AS {_column(i, 'g')}"
                for i, (_, f) in enumerate(fields)
            )
            missing = fetch_arrow(
                con,
                f"""
                SELECT src.*{canonical} FROM src
                WHERE CAST(src.{key} AS VARCHAR) NOT IN (SELECT source_key FROM links)
                  AND CAST(src.{key} AS VARCHAR) NOT IN (
                      SELECT source_key FROM st WHERE status = 'baseline' AND NOT {str(backfill).lower()})
                ORDER BY CAST(src.{key} AS VARCHAR)
                """,
            )
            for row in missing.to_pylist():
                _decide_create(sync, target, fields, row, plan, value_maps)
        else:
            ((alone,),) = con.execute(
                f"SELECT count(*) FROM src WHERE CAST(src.{key} AS VARCHAR) NOT IN (SELECT source_key FROM links)"
            ).fetchall()
            plan.without_target = int(alone)
    return plan


def _rows_by_key(con: Any, key: str, keys: list[str]) -> dict[str, dict[str, Any]]:
    """The source rows of ``keys`` (what a create or an order is made from)."""
    if not keys:
        return {}
    wanted = pa.table({"k": pa.array(sorted(set(keys)), pa.string())})
    con.register("wanted", wanted)
    rows = fetch_arrow(
        con,
        f"SELECT src.* FROM src JOIN wanted ON CAST(src.{key} AS VARCHAR) = wanted.k",
    )
    return {str(r[key.strip('"')]): r for r in rows.to_pylist()}


def _baseline(con: Any, sync: SyncSpec, fields: list[Any], key: str, plan: Plan) -> Plan:
    """The sync's first run with ``initial: baseline``: remember every row as already there."""
    columns = ", ".join(
        f"{canonical_sql('src.' + quote_ident(f.source_column), f)} AS {quote_ident(f.source_column)}"
        for _, f in fields
    )
    rows = fetch_arrow(
        con,
        f"""
        SELECT CAST(src.{key} AS VARCHAR) AS __key, coalesce(l.target_id, '') AS __target{", " + columns if columns else ""}
        FROM src
        LEFT JOIN (SELECT DISTINCT CAST(source_key AS VARCHAR) AS source_key, CAST(target_id AS VARCHAR) AS target_id
                   FROM given_links WHERE target_id IS NOT NULL
                   UNION SELECT source_key, target_id FROM found_links) AS l
          ON l.source_key = CAST(src.{key} AS VARCHAR)
        """,
    )
    for row in rows.to_pylist():
        values = {f.source_column: row.get(f.source_column) for _, f in fields}
        plan.baseline.append(Written(row["__key"], row["__target"], values, status="baseline"))
        plan.lines.append(PlanLine(row["__key"], row["__target"] or None, "baseline"))
    return plan


def _decide_update(
    sync: SyncSpec,
    target: TargetObject,
    fields: list[Any],
    row: dict[str, Any],
    src_rows: dict[str, dict[str, Any]],
    plan: Plan,
    value_maps: dict[str, dict[str, str]],
    *,
    current_known: bool,
) -> None:
    source_key, target_id = row["source_key"], row["target_id"]
    if current_known and not row["found"]:
        # The record is gone from the target (deleted there, or not readable): nothing to update.
        plan.without_target += 1
        return
    values: dict[str, Any] = {}
    canonical: dict[str, str | None] = {}
    for i, (name, f) in enumerate(fields):
        g, c, p = row[_column(i, "g")], row[_column(i, "c")], row[_column(i, "p")]
        canonical[f.source_column] = g
        now = c if current_known else p
        if g == now or g is None:
            # No source value is no reason to clear the target's: a value the golden record
            # lacks may be one its quality rules refused, and the target keeps what it has.
            continue
        try:
            values[name] = write_value(g, f, value_maps)
        except NoTargetValue as exc:
            # Left as the target has it (and remembered so, so it never looks like an edit there).
            canonical[f.source_column] = now
            plan.unwritable.append(
                Rejection(source_key, target_id, "update", "NO_TARGET_VALUE", f"{name}: {exc}", [name])
            )
            continue
        plan.lines.append(PlanLine(source_key, target_id, "update", name, now, g))
        if current_known and p is not None and c != p:
            policy = target.policies.get(name, "owner_wins")
            owner = target.owners.get(name) or (f"model {sync.source.model}" if sync.source.model else None)
            decision = (
                "owner_wins: the owner's value is written back"
                if policy == "owner_wins"
                else "newest_wins: a newer edit elsewhere is written over it"
            )
            plan.conflicts.append(
                Conflict(source_key, name, target_id, c, owner, g, policy, decision, row[PUSHED_RUN])
            )
    if not values:
        plan.unchanged += 1
        if not row["known"] or any(
            row[_column(i, "p")] != canonical[f.source_column] for i, (_, f) in enumerate(fields)
        ):
            plan.refreshed.append(Written(source_key, target_id, canonical))
        return
    if sync.mode == "create":
        # A create-only sync never changes a record it finds (an ERP order that exists).
        plan.unchanged += 1
        plan.refreshed.append(Written(source_key, target_id, canonical))
        return
    for name in target.carried:
        values[name] = row.get(CARRIED + name)
    for name in list(values):
        for other in target.carried_with.get(name, ()):
            values.setdefault(other, row.get(CARRIED + other))
    plan.operations.append(Operation(source_key, target_id, values, canonical, src_rows.get(source_key, {})))


def _decide_create(
    sync: SyncSpec,
    target: TargetObject,
    fields: list[Any],
    row: dict[str, Any],
    plan: Plan,
    value_maps: dict[str, dict[str, str]],
) -> None:
    source_key = str(row[sync.source.key])
    values: dict[str, Any] = {}
    canonical: dict[str, str | None] = {}
    for i, (name, f) in enumerate(fields):
        text = row.pop(_column(i, "g"))
        canonical[f.source_column] = text
        if text is not None:
            try:
                values[name] = write_value(text, f, value_maps)
            except NoTargetValue as exc:
                plan.unwritable.append(
                    Rejection(source_key, None, "create", "NO_TARGET_VALUE", f"{name}: {exc}", [name])
                )
    if sync.match.external_id is not None:
        values[sync.match.external_id] = str(row.get(sync.match.external_value or sync.source.key))
    plan.operations.append(Operation(source_key, None, values, canonical, row))
    plan.lines.append(PlanLine(source_key, None, "create", None, None, json.dumps(sorted(values))))
