"""The receiver's durable event store: SQLite in WAL mode, synchronous=FULL.

An event is committed (fsync'd) before the receiver answers 2xx, so an acknowledged event survives
a crash or restart of the receiver. ``UNIQUE (sender, event_id)`` stores a redelivered event once,
whichever of many concurrent deliveries commits first. SQLite (the standard library's, no server)
because the receiver is one process on one host that must not lose an event while the warehouse is
busy; the sensor reads it by a monotonic ``seq`` cursor.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crm_pipelines.webhooks.senders import Event

__all__ = ["EventStore", "StoredEvent"]

_DDL = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    sender TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    object_id TEXT,
    payload TEXT NOT NULL,
    received_at TEXT NOT NULL,
    UNIQUE (sender, event_id)
)
"""


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    sender: str
    event_id: str
    event_type: str
    object_id: str | None
    payload: dict[str, Any]
    received_at: datetime


class EventStore:
    """Events by (sender, event id), each once, in arrival order (``seq``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute(_DDL)

    def _connect(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=True)
            con.execute("PRAGMA synchronous=FULL")
            con.execute("PRAGMA busy_timeout=30000")
            self._local.con = con
        return con

    def add(self, events: Iterable[Event], *, received_at: datetime | None = None) -> tuple[int, int]:
        """Store the events in one transaction; returns (stored, already there)."""
        at = (received_at or datetime.now(UTC)).isoformat()
        rows = [
            (
                e.sender,
                e.event_id,
                e.event_type,
                e.object_id,
                json.dumps(e.payload, separators=(",", ":")),
                at,
            )
            for e in events
        ]
        con = self._connect()
        if rows and all(
            con.execute("SELECT 1 FROM events WHERE sender = ? AND event_id = ?", row[:2]).fetchone()
            for row in rows
        ):
            return 0, len(rows)  # a redelivery of committed events: nothing to write (or to fsync)
        con.execute("BEGIN IMMEDIATE")
        try:
            before = con.total_changes
            con.executemany(
                "INSERT INTO events (sender, event_id, event_type, object_id, payload, received_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (sender, event_id) DO NOTHING",
                rows,
            )
            stored = con.total_changes - before
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return stored, len(rows) - stored

    def since(self, cursor: int, *, limit: int = 1000) -> list[StoredEvent]:
        """Events after ``cursor`` (a ``seq``), oldest first."""
        rows = (
            self._connect()
            .execute(
                "SELECT seq, sender, event_id, event_type, object_id, payload, received_at FROM events "
                "WHERE seq > ? ORDER BY seq LIMIT ?",
                (cursor, limit),
            )
            .fetchall()
        )
        return [
            StoredEvent(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), datetime.fromisoformat(r[6]))
            for r in rows
        ]

    def count(self) -> int:
        row = self._connect().execute("SELECT count(*) FROM events").fetchone()
        return int(row[0]) if row else 0
