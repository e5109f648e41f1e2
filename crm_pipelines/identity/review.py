"""The match review queue and the decisions people make on it.

Scored matching sends pairs it is unsure of (between ``review_at`` and ``merge_at``, or a merge the
consistency guard refused) to ``ops.match_review``, with both records and each field's comparison
level. A person decides a pair: ``must_link`` or ``cannot_link``, by record id, in
``ops.match_decisions``; every later night honours the latest decision on a pair over any score and
no longer queues it. Decide through ``crm-pipelines review`` or the Dagster job ``apply_match_decisions``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import duckdb
import pyarrow as pa

from crm_pipelines.lake import LakePath, scan_parquet
from crm_pipelines.sql import fetch_arrow
from crm_pipelines.warehouse.connection import table_exists

__all__ = [
    "Decision",
    "decisions_table",
    "ensure_review_tables",
    "load_review",
    "pending_review",
    "record_decisions",
]

Verdict = Literal["must_link", "cannot_link"]

DDL = (
    """
    CREATE TABLE IF NOT EXISTS ops.match_review (
        partition VARCHAR NOT NULL,
        entity VARCHAR NOT NULL,
        record_id_a VARCHAR NOT NULL,
        record_id_b VARCHAR NOT NULL,
        probability DOUBLE NOT NULL,
        reason VARCHAR NOT NULL,
        levels JSON,           -- each compared field's level: exact, nickname, initial, jw92 ... different
        record_a JSON,
        record_b JSON,
        run_id VARCHAR NOT NULL,
        queued_at TIMESTAMPTZ NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS ops.match_decisions (
        entity VARCHAR NOT NULL,
        record_id_a VARCHAR NOT NULL,
        record_id_b VARCHAR NOT NULL,
        decision VARCHAR NOT NULL CHECK (decision IN ('must_link', 'cannot_link')),
        decided_by VARCHAR NOT NULL,
        note VARCHAR,
        decided_at TIMESTAMPTZ NOT NULL
    )
    """,
)


@dataclass(frozen=True)
class Decision:
    """A person's decision on a pair of records (order does not matter)."""

    entity: Literal["account", "contact"]
    record_id_a: str
    record_id_b: str
    decision: Verdict
    decided_by: str
    note: str | None = None


def ensure_review_tables(con: duckdb.DuckDBPyConnection) -> None:
    for ddl in DDL:
        con.execute(ddl)


def record_decisions(con: duckdb.DuckDBPyConnection, decisions: Iterable[Decision]) -> int:
    """Append decisions (inside the caller's transaction) and take their pairs off the queue."""
    ensure_review_tables(con)
    n = 0
    for d in decisions:
        if d.decision not in ("must_link", "cannot_link"):
            raise ValueError(f"decision must be must_link or cannot_link, not {d.decision!r}")
        if d.record_id_a == d.record_id_b:
            raise ValueError(f"a pair needs two records, got {d.record_id_a!r} twice")
        a, b = sorted((d.record_id_a, d.record_id_b))
        con.execute(
            "INSERT INTO ops.match_decisions VALUES (?, ?, ?, ?, ?, ?, now())",
            [d.entity, a, b, d.decision, d.decided_by, d.note],
        )
        con.execute(
            "DELETE FROM ops.match_review WHERE entity = ? AND least(record_id_a, record_id_b) = ? "
            "AND greatest(record_id_a, record_id_b) = ?",
            [d.entity, a, b],
        )
        n += 1
    return n


def decisions_table(con: duckdb.DuckDBPyConnection) -> pa.Table | None:
    """Every decision (for identity resolution to honour); None before the first."""
    if not table_exists(con, "ops", "match_decisions"):
        return None
    return fetch_arrow(
        con,
        "SELECT entity, record_id_a, record_id_b, decision, decided_at FROM ops.match_decisions ORDER BY decided_at",
    )


def load_review(con: duckdb.DuckDBPyConnection, *, path: LakePath, partition: str, run_id: str) -> int:
    """Tonight's queue replaces the last one (pairs already decided are left out); returns its size."""
    ensure_review_tables(con)
    con.execute("DELETE FROM ops.match_review")
    if not path.exists():
        return 0
    con.execute(
        f"""
        INSERT INTO ops.match_review
        SELECT ?, r.entity, r.record_id_a, r.record_id_b, r.probability, r.reason, r.levels, r.record_a,
               r.record_b, ?, now()
        FROM {scan_parquet(path)} AS r
        ANTI JOIN ops.match_decisions AS d
          ON d.entity = r.entity AND d.record_id_a = least(r.record_id_a, r.record_id_b)
         AND d.record_id_b = greatest(r.record_id_a, r.record_id_b)
        """,
        [partition, run_id],
    )
    row = con.execute("SELECT count(*) FROM ops.match_review").fetchone()
    return int(row[0]) if row else 0


def pending_review(con: duckdb.DuckDBPyConnection, *, limit: int = 50) -> list[tuple[object, ...]]:
    """The queue, most likely matches first: entity, both record ids, probability, reason, levels."""
    if not table_exists(con, "ops", "match_review"):
        return []
    return con.execute(
        "SELECT entity, record_id_a, record_id_b, round(probability, 3), reason, levels FROM ops.match_review "
        "ORDER BY probability DESC, record_id_a, record_id_b LIMIT ?",
        [limit],
    ).fetchall()
