"""Sync state follows golden ids that identity resolution merged into others."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb

from crm_pipelines.identity.golden_ids import HISTORY_DDL
from crm_pipelines.syncs.state import ensure_tables, follow_merged_ids
from crm_pipelines.warehouse.core import GOLDEN_ID_CURRENT_VIEW

T0 = datetime(2026, 11, 20, tzinfo=UTC)


def _state(
    con: duckdb.DuckDBPyConnection, key: str, target: str, values: str, days: int, sync: str = "s"
) -> None:
    con.execute(
        "INSERT INTO ops.sync_state VALUES (?, ?, 'hubspot', 'contacts', ?, 'contact', ?, ?, 'written', ?, 'r', 'p')",
        [sync, key, target, values, values, T0 + timedelta(days=days)],
    )


def _history(con: duckdb.DuckDBPyConnection, golden_id: str, into: str) -> None:
    con.execute(
        "INSERT INTO core.golden_id_history VALUES ('contact', ?, 'merged', ?, NULL, 'p', 'r', ?)",
        [golden_id, into, T0],
    )


def test_state_moves_to_the_id_its_records_were_merged_into() -> None:
    con = duckdb.connect()
    con.execute("CREATE SCHEMA ops")
    con.execute("CREATE SCHEMA core")
    ensure_tables(con)
    con.execute(HISTORY_DDL)
    # C-B was merged into C-A, C-C into C-B (so into C-A); C-D is untouched.
    _history(con, "C-B", "C-A")
    _history(con, "C-C", "C-B")
    con.execute(GOLDEN_ID_CURRENT_VIEW)
    _state(con, "C-A", "T1", "a-own", 1)  # the survivor's own state for T1 stays
    _state(con, "C-B", "T1", "b-old", 0)
    _state(con, "C-B", "T2", "b-t2", 1)  # newer than C-C's state for the same target record
    _state(con, "C-C", "T2", "c-t2", 0)
    _state(con, "C-C", "T3", "c-t3", 0)
    _state(con, "C-D", "T4", "d", 0)
    _state(con, "C-B", "T9", "other sync", 0, sync="other")

    assert follow_merged_ids(con, sync="s", entity="contact") == 2

    rows = con.execute(
        "SELECT source_key, target_id, \"values\" FROM ops.sync_state WHERE sync = 's' ORDER BY target_id"
    ).fetchall()
    assert rows == [("C-A", "T1", "a-own"), ("C-A", "T2", "b-t2"), ("C-A", "T3", "c-t3"), ("C-D", "T4", "d")]
    # Another sync's state is its own run's business; a second pass changes nothing.
    assert con.execute("SELECT source_key FROM ops.sync_state WHERE sync = 'other'").fetchall() == [("C-B",)]
    assert follow_merged_ids(con, sync="s", entity="contact") == 0


def test_without_golden_id_history_nothing_moves() -> None:
    con = duckdb.connect()
    con.execute("CREATE SCHEMA ops")
    ensure_tables(con)
    _state(con, "C-B", "T1", "b", 0)
    assert follow_merged_ids(con, sync="s", entity="contact") == 0
    assert con.execute("SELECT source_key FROM ops.sync_state").fetchall() == [("C-B",)]
