"""Incremental watermarks: read before an extract, advanced only inside the load that commits its rows.

An extract that reads ``since`` a watermark writes the highest cursor it saw next to its Parquet
(``_watermark.json`` in the lake partition). The raw load of that partition advances
``ops.watermark`` in the same transaction as the rows, so a run that fails before the load commits
leaves the watermark where it was and the next run reads the same window again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import duckdb

from crm_pipelines.lake import LakePath, write_text
from crm_pipelines.warehouse.connection import open_warehouse

PENDING_FILE = "_watermark.json"

DDL = """
CREATE TABLE IF NOT EXISTS ops.watermark (
    source VARCHAR NOT NULL,
    dataset VARCHAR NOT NULL,
    cursor_value VARCHAR NOT NULL,   -- ISO timestamp, integer sequence or delta link, as the extract wrote it
    partition VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, dataset)
)
"""


@dataclass(frozen=True)
class PendingWatermark:
    """What an extract read and the cursor it reached; committed by the load."""

    source: str
    dataset: str
    since: str | None
    reached: str | None
    kind: str = (
        "timestamp"  # timestamp (ISO-8601, UTC), integer, or delta_link (an opaque change-tracking link)
    )


def write_pending(folder: LakePath, pending: PendingWatermark) -> LakePath:
    path = folder / PENDING_FILE
    write_text(path, json.dumps(asdict(pending), indent=2))
    return path


def read_pending(folder: LakePath) -> PendingWatermark | None:
    path = folder / PENDING_FILE
    if not path.exists():
        return None
    return PendingWatermark(**json.loads(path.read_text()))


def read_watermark(con: duckdb.DuckDBPyConnection, *, source: str, dataset: str) -> str | None:
    """The committed watermark of a dataset, or None before its first incremental load.

    Works on a read-only connection (extracts read it without taking the writer's role): the table
    is looked up rather than created; every write connection creates it (``ensure_schemas``).
    """
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'ops' AND table_name = 'watermark'"
    ).fetchone()
    if not exists or not exists[0]:
        return None
    row = con.execute(
        "SELECT cursor_value FROM ops.watermark WHERE source = ? AND dataset = ?", [source, dataset]
    ).fetchone()
    return str(row[0]) if row else None


def committed_watermark(warehouse_url: str, *, source: str, dataset: str) -> str | None:
    """A dataset's committed watermark as stored, read without taking the writer's role (extracts)."""
    with open_warehouse(warehouse_url).connect(read_only=True) as con:
        return read_watermark(con, source=source, dataset=dataset)


def _newer(kind: str, candidate: str, current: str | None) -> bool:
    if current is None:
        return True
    if kind == "delta_link":
        # Opaque: a later read's link replaces the earlier one (the load of an older partition run
        # again commits an older link only if it is the one its snapshot was built from).
        return candidate != current
    if kind == "integer":
        return int(candidate) > int(current)
    return candidate > current  # ISO-8601 UTC strings order as time does


def advance_watermark(
    con: duckdb.DuckDBPyConnection, *, pending: PendingWatermark, partition: str, run_id: str
) -> bool:
    """Move the watermark forward to ``pending.reached``; never backwards. Call inside the load's transaction.

    Returns:
        True when the stored watermark changed.
    """
    if pending.reached is None:
        return False
    current = read_watermark(con, source=pending.source, dataset=pending.dataset)
    if not _newer(pending.kind, pending.reached, current):
        return False
    con.execute(
        "INSERT OR REPLACE INTO ops.watermark VALUES (?, ?, ?, ?, ?, now())",
        [pending.source, pending.dataset, pending.reached, partition, run_id],
    )
    return True
