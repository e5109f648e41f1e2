"""What the syncs remember, in the warehouse's ``ops`` schema.

``ops.sync_state``      per sync and target record: the values last written (as the source's
                        canonical text, by source column), their hash, when and in which run.
``ops.sync_errors``     every row a target rejected: the vendor's code and message, per run.
``ops.sync_conflicts``  every edit made in a system that does not own the field, with both values,
                        both systems and the decision; a conflict is logged once.
``ops.sync_runs``       per sync and run: planned = created + updated + unchanged + rejected.
``ops.sync_plan``       a dry run's plan: every record with the fields that would change.

State is written only for what the target confirmed, in the same transaction as the run's outcome
rows, batch by batch: a crash loses at most the state of the batch in flight, and that batch is
idempotent to send again (updates write the same values; creates go by external id).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from crm_pipelines.sql import fetch_arrow
from crm_pipelines.warehouse.connection import table_exists

__all__ = [
    "DDL",
    "Conflict",
    "PlanLine",
    "Rejection",
    "RunCounts",
    "Written",
    "ensure_tables",
    "follow_merged_ids",
    "pushed_values",
    "read_state",
    "record_conflicts",
    "record_plan",
    "record_rejections",
    "record_run",
    "record_written",
    "tables_exist",
    "values_hash",
]

DDL = (
    """
    CREATE TABLE IF NOT EXISTS ops.sync_state (
        sync VARCHAR NOT NULL,
        source_key VARCHAR NOT NULL,
        target_system VARCHAR NOT NULL,
        target_object VARCHAR NOT NULL,
        target_id VARCHAR NOT NULL,
        entity VARCHAR,                -- the golden entity, for syncs of golden records
        "values" VARCHAR NOT NULL,     -- JSON: source column -> canonical text last written
        values_hash VARCHAR NOT NULL,
        status VARCHAR NOT NULL,       -- written, or baseline (there before the sync's first run)
        written_at TIMESTAMPTZ NOT NULL,
        run_id VARCHAR NOT NULL,
        partition VARCHAR NOT NULL,
        PRIMARY KEY (sync, source_key, target_id)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS ops.sync_errors (
        sync VARCHAR NOT NULL,
        source_key VARCHAR NOT NULL,
        target_id VARCHAR,
        action VARCHAR NOT NULL,
        error_code VARCHAR,
        reason VARCHAR,
        fields VARCHAR,                -- JSON list of the target fields the row tried to write
        run_id VARCHAR NOT NULL,
        partition VARCHAR NOT NULL,
        failed_at TIMESTAMPTZ NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS ops.sync_conflicts (
        sync VARCHAR NOT NULL,
        source_key VARCHAR NOT NULL,
        field VARCHAR NOT NULL,
        target_system VARCHAR NOT NULL,
        target_id VARCHAR NOT NULL,
        target_value VARCHAR,
        owner_system VARCHAR,
        owner_value VARCHAR,
        policy VARCHAR NOT NULL,
        decision VARCHAR NOT NULL,
        run_id VARCHAR NOT NULL,
        partition VARCHAR NOT NULL,
        detected_at TIMESTAMPTZ NOT NULL,
        conflict_hash VARCHAR PRIMARY KEY  -- the same conflict, seen again, is not logged again
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS ops.sync_runs (
        sync VARCHAR NOT NULL,
        run_id VARCHAR NOT NULL,
        partition VARCHAR NOT NULL,
        dry_run BOOLEAN NOT NULL,
        planned BIGINT NOT NULL,
        created BIGINT NOT NULL,
        updated BIGINT NOT NULL,
        unchanged BIGINT NOT NULL,
        rejected BIGINT NOT NULL,
        baseline BIGINT NOT NULL,
        conflicts BIGINT NOT NULL,
        requests BIGINT NOT NULL,
        seconds DOUBLE NOT NULL,
        finished_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (sync, run_id)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS ops.sync_plan (
        sync VARCHAR NOT NULL,
        run_id VARCHAR NOT NULL,
        source_key VARCHAR NOT NULL,
        target_id VARCHAR,
        action VARCHAR NOT NULL,
        field VARCHAR,
        from_value VARCHAR,
        to_value VARCHAR
    )
    """,
)


def follow_merged_ids(con: duckdb.DuckDBPyConnection, *, sync: str, entity: str) -> int:
    """Re-key a golden sync's state from ids merged away to the ids their records carry today.

    When identity resolution merges golden record B into A (``core.golden_id_current``: B -> A), the
    target records B was written into now belong to A. Their state moves with them, so tonight's plan
    compares against what was last written instead of writing every field again, and no row of the
    state is left behind under an id that no longer exists. Where A already has state for the same
    target record it is kept; of several merged-away ids for one target record the newest state wins.
    Runs inside the caller's transaction.

    Returns:
        State rows re-keyed.
    """
    (has_ids,) = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'core' AND table_name = 'golden_id_current'"
    ).fetchall()[0]
    if not has_ids:
        return 0
    # Most nights merge nothing this sync wrote: one read says so, and nothing is written. An id the
    # view maps elsewhere has a 'merged' event in the history the view walks: asking the history
    # (when it is there) spares the recursive walk; it may say yes where the walk moves nothing.
    merged = (
        "SELECT golden_id FROM core.golden_id_history WHERE entity = $entity AND event = 'merged'"
        if table_exists(con, "core", "golden_id_history")
        else "SELECT old_id FROM core.golden_id_current WHERE entity = $entity AND golden_id <> old_id"
    )
    ((found,),) = con.execute(
        f"SELECT count(*) FROM ops.sync_state WHERE sync = $sync AND entity = $entity AND source_key IN ({merged})",
        {"sync": sync, "entity": entity},
    ).fetchall()
    if not found:
        return 0
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE sync_state_moved AS
        WITH moved AS (  -- the ids merged away (few): most golden ids are their own current id
            SELECT old_id, golden_id FROM core.golden_id_current WHERE entity = $entity AND golden_id <> old_id
        )
        SELECT s.*, c.golden_id AS new_key,
               row_number() OVER (PARTITION BY s.sync, c.golden_id, s.target_id ORDER BY s.written_at DESC) AS newest
        FROM ops.sync_state AS s
        JOIN moved AS c ON c.old_id = s.source_key
        WHERE s.sync = $sync AND s.entity = $entity
        """,
        {"sync": sync, "entity": entity},
    )
    con.execute(
        """
        DELETE FROM ops.sync_state AS s
        WHERE EXISTS (SELECT 1 FROM sync_state_moved AS m
                      WHERE m.sync = s.sync AND m.source_key = s.source_key AND m.target_id = s.target_id)
        """
    )
    (moved,) = con.execute(
        """
        SELECT count(*) FROM sync_state_moved AS m
        WHERE m.newest = 1 AND NOT EXISTS (
            SELECT 1 FROM ops.sync_state AS t
            WHERE t.sync = m.sync AND t.source_key = m.new_key AND t.target_id = m.target_id)
        """
    ).fetchall()[0]
    con.execute(
        """
        INSERT INTO ops.sync_state
            (sync, source_key, target_system, target_object, target_id, entity, "values", values_hash,
             status, written_at, run_id, partition)
        SELECT sync, new_key, target_system, target_object, target_id, entity, "values", values_hash,
               status, written_at, run_id, partition
        FROM sync_state_moved AS m
        WHERE m.newest = 1 AND NOT EXISTS (
            SELECT 1 FROM ops.sync_state AS t
            WHERE t.sync = m.sync AND t.source_key = m.new_key AND t.target_id = m.target_id)
        """
    )
    con.execute("DROP TABLE sync_state_moved")
    return int(moved)


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the sync tables (inside the caller's transaction)."""
    for ddl in DDL:
        con.execute(ddl)


TABLES = ("sync_state", "sync_errors", "sync_conflicts", "sync_runs", "sync_plan")


def tables_exist(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether every sync table exists (a read-only connection can tell; :func:`ensure_tables` makes them)."""
    ((found,),) = con.execute(
        "SELECT count(DISTINCT table_name) FROM information_schema.tables "
        "WHERE table_schema = 'ops' AND table_name IN (SELECT unnest(?::VARCHAR[]))",
        [list(TABLES)],
    ).fetchall()
    return int(found) == len(TABLES)


def _insert(
    con: duckdb.DuckDBPyConnection, statement: str, columns: Sequence[str], data: list[tuple[Any, ...]]
) -> None:
    """Run ``statement`` (``INSERT ... SELECT <columns> FROM rows``) over ``data`` as one Arrow table of text.

    One statement instead of one per row (``executemany``): a night that writes 100,000 records
    records their state in a fraction of a second.
    """
    rows = pa.table(
        {
            name: pa.array([None if row[i] is None else str(row[i]) for row in data], pa.string())
            for i, name in enumerate(columns)
        }
    )
    con.register("rows", rows)
    try:
        con.execute(statement)
    finally:
        con.unregister("rows")


def values_hash(values: Mapping[str, str | None]) -> str:
    """A stable hash of the values written (key order does not matter)."""
    return hashlib.sha256(
        json.dumps(dict(sorted(values.items())), separators=(",", ":")).encode()
    ).hexdigest()


def read_state(con: duckdb.DuckDBPyConnection, *, sync: str) -> pa.Table:
    """The state rows of one sync (``source_key``, ``target_id``, ``values``, ``status``, ``run_id``).

    Empty before its first run.
    """
    if not table_exists(con, "ops", "sync_state"):
        return pa.schema(
            [
                ("source_key", pa.string()),
                ("target_id", pa.string()),
                ("values", pa.string()),
                ("status", pa.string()),
                ("run_id", pa.string()),
            ]
        ).empty_table()
    return fetch_arrow(
        con,
        'SELECT source_key, target_id, "values", status, run_id FROM ops.sync_state WHERE sync = ?',
        [sync],
    )


def pushed_values(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """What the syncs of golden records last wrote into each record: (entity, record_id, field, value).

    Identity resolution reads it to tell an echo of our own write from an edit made in the system.
    """
    schema = pa.schema(
        [("entity", pa.string()), ("record_id", pa.string()), ("field", pa.string()), ("value", pa.string())]
    )
    if not table_exists(con, "ops", "sync_state"):
        return schema.empty_table()
    table = fetch_arrow(
        con,
        """
        SELECT s.entity, s.target_system || ':' || s.target_id AS record_id, j.key AS field,
               json_extract_string(j.value, '$') AS value
        FROM ops.sync_state AS s, json_each(s."values") AS j
        WHERE s.entity IS NOT NULL AND s.status = 'written' AND json_type(j.value) <> 'NULL'
        """,
    )
    return table.cast(schema)


@dataclass(frozen=True)
class Written:
    """A target record the target confirmed: its values are now what the sync wrote (or found)."""

    source_key: str
    target_id: str
    values: dict[str, str | None]
    status: str = "written"


@dataclass(frozen=True)
class Rejection:
    """A row the target refused, with the vendor's code and message."""

    source_key: str
    target_id: str | None
    action: str
    error_code: str | None
    reason: str | None
    fields: Sequence[str]


@dataclass(frozen=True)
class Conflict:
    """An edit made in a system that does not own the field."""

    source_key: str
    field: str
    target_id: str
    target_value: str | None
    owner_system: str | None
    owner_value: str | None
    policy: str
    decision: str
    pushed_run: str | None = None
    """The run that last wrote the record: an edit made again after that write is a new conflict."""


@dataclass(frozen=True)
class PlanLine:
    """One field a dry run would change (or one record it would leave, with no field)."""

    source_key: str
    target_id: str | None
    action: str
    field: str | None = None
    from_value: str | None = None
    to_value: str | None = None


@dataclass
class RunCounts:
    """A sync run's outcome: every planned row is created, updated, unchanged or rejected.

    In a dry run, created and updated count what the run would have sent.
    """

    planned: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    baseline: int = 0
    conflicts: int = 0
    requests: int = 0
    seconds: float = 0.0

    @property
    def adds_up(self) -> bool:
        return self.planned == self.created + self.updated + self.unchanged + self.rejected + self.baseline


def record_written(
    con: duckdb.DuckDBPyConnection,
    *,
    sync: str,
    target_system: str,
    target_object: str,
    entity: str | None,
    rows: Iterable[Written],
    run_id: str,
    partition: str,
) -> int:
    """Upsert the state of the confirmed rows (inside the caller's transaction); returns how many."""
    # One row per record: the last word on a record in the batch is its state.
    latest = {(row.source_key, row.target_id): row for row in rows}
    data = [
        (
            sync,
            row.source_key,
            target_system,
            target_object,
            row.target_id,
            entity,
            json.dumps(row.values, sort_keys=True),
            values_hash(row.values),
            row.status,
            run_id,
            partition,
        )
        for row in latest.values()
    ]
    if data:
        columns = (
            "sync",
            "source_key",
            "target_system",
            "target_object",
            "target_id",
            "entity",
            "values",
            "values_hash",
            "status",
            "run_id",
            "partition",
        )
        _insert(
            con,
            "INSERT OR REPLACE INTO ops.sync_state (sync, source_key, target_system, target_object, target_id, "
            'entity, "values", values_hash, status, written_at, run_id, partition) '
            "SELECT sync, source_key, target_system, target_object, target_id, CAST(entity AS VARCHAR), "
            '"values", values_hash, status, now(), run_id, partition FROM rows',
            columns,
            data,
        )
    return len(data)


def record_rejections(
    con: duckdb.DuckDBPyConnection, *, sync: str, rows: Iterable[Rejection], run_id: str, partition: str
) -> int:
    data = [
        (
            sync,
            r.source_key,
            r.target_id,
            r.action,
            r.error_code,
            r.reason,
            json.dumps(list(r.fields)),
            run_id,
            partition,
        )
        for r in rows
    ]
    if data:
        columns = (
            "sync",
            "source_key",
            "target_id",
            "action",
            "error_code",
            "reason",
            "fields",
            "run_id",
            "partition",
        )
        _insert(
            con,
            "INSERT INTO ops.sync_errors SELECT sync, source_key, CAST(target_id AS VARCHAR), action, "
            "CAST(error_code AS VARCHAR), CAST(reason AS VARCHAR), fields, run_id, partition, now() FROM rows",
            columns,
            data,
        )
    return len(data)


def record_conflicts(
    con: duckdb.DuckDBPyConnection,
    *,
    sync: str,
    target_system: str,
    rows: Iterable[Conflict],
    run_id: str,
    partition: str,
) -> int:
    """Log conflicts not logged before; returns how many were new."""
    data: list[tuple[Any, ...]] = []
    for c in rows:
        identity = json.dumps(
            [sync, c.source_key, c.target_id, c.field, c.target_value, c.owner_value, c.pushed_run]
        )
        data.append(
            (
                sync,
                c.source_key,
                c.field,
                target_system,
                c.target_id,
                c.target_value,
                c.owner_system,
                c.owner_value,
                c.policy,
                c.decision,
                run_id,
                partition,
                hashlib.sha256(identity.encode()).hexdigest(),
            )
        )
    if not data:
        return 0
    data = list({row[-1]: row for row in data}.values())  # the same conflict twice in a night: once
    (before,) = con.execute("SELECT count(*) FROM ops.sync_conflicts").fetchall()[0]
    columns = (
        "sync",
        "source_key",
        "field",
        "target_system",
        "target_id",
        "target_value",
        "owner_system",
        "owner_value",
        "policy",
        "decision",
        "run_id",
        "partition",
        "conflict_hash",
    )
    _insert(
        con,
        "INSERT INTO ops.sync_conflicts SELECT sync, source_key, field, target_system, target_id, "
        "CAST(target_value AS VARCHAR), CAST(owner_system AS VARCHAR), CAST(owner_value AS VARCHAR), policy, "
        "decision, run_id, partition, now(), conflict_hash FROM rows ON CONFLICT DO NOTHING",
        columns,
        data,
    )
    (after,) = con.execute("SELECT count(*) FROM ops.sync_conflicts").fetchall()[0]
    return int(after) - int(before)


def record_plan(con: duckdb.DuckDBPyConnection, *, sync: str, run_id: str, lines: Iterable[PlanLine]) -> int:
    con.execute("DELETE FROM ops.sync_plan WHERE sync = ? AND run_id = ?", [sync, run_id])
    data = [
        (sync, run_id, p.source_key, p.target_id, p.action, p.field, p.from_value, p.to_value) for p in lines
    ]
    if data:
        columns = ("sync", "run_id", "source_key", "target_id", "action", "field", "from_value", "to_value")
        _insert(
            con,
            "INSERT INTO ops.sync_plan SELECT sync, run_id, source_key, CAST(target_id AS VARCHAR), action, "
            "CAST(field AS VARCHAR), CAST(from_value AS VARCHAR), CAST(to_value AS VARCHAR) FROM rows",
            columns,
            data,
        )
    return len(data)


def record_run(
    con: duckdb.DuckDBPyConnection,
    *,
    sync: str,
    run_id: str,
    partition: str,
    dry_run: bool,
    counts: RunCounts,
) -> None:
    con.execute(
        "INSERT OR REPLACE INTO ops.sync_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
        [
            sync,
            run_id,
            partition,
            dry_run,
            counts.planned,
            counts.created,
            counts.updated,
            counts.unchanged,
            counts.rejected,
            counts.baseline,
            counts.conflicts,
            counts.requests,
            counts.seconds,
        ],
    )
