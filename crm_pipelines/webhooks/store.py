"""The receiver's durable event store: SQLite in WAL mode, synchronous=FULL.

An event is committed (fsync'd, group commit: one transaction for the deliveries waiting
together) before the receiver answers 2xx, so an acknowledged event survives
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
from dataclasses import dataclass, field
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


_INSERT = (
    "INSERT INTO events (sender, event_id, event_type, object_id, payload, received_at) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (sender, event_id) DO NOTHING"
)


@dataclass
class _Pending:
    """One delivery's rows waiting for the writer's next commit."""

    rows: list[tuple[str, str, str, str | None, str, str]]
    stored: int = 0
    error: Exception | None = None
    done: threading.Event = field(default_factory=threading.Event)


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
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: list[_Pending] = []
        self._writer: threading.Thread | None = None
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
        """Store the events, committed when this returns; returns (stored, already there).

        Deliveries arriving together are committed by one writer thread in one transaction (group
        commit): each waits for the commit that holds its rows, so none is acknowledged before its
        fsync, and a busy receiver pays one fsync per batch instead of one per delivery.
        """
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
        pending = _Pending(rows)
        with self._lock:
            self._queue.append(pending)
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._write_batches, name="webhook-store", daemon=True)
                self._writer.start()
            self._wake.notify()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.stored, len(rows) - pending.stored

    def _write_batches(self) -> None:
        """Group commit: every delivery waiting when a transaction starts shares its one fsync."""
        con = self._connect()
        while True:
            with self._lock:
                while not self._queue:
                    if not self._wake.wait(timeout=30):
                        self._writer = None
                        return
                batch, self._queue = self._queue, []
            try:
                con.execute("BEGIN IMMEDIATE")
                try:
                    for pending in batch:
                        before = con.total_changes
                        con.executemany(_INSERT, pending.rows)
                        pending.stored = con.total_changes - before
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
            except Exception as error:  # every delivery of the batch is refused (503) and retried
                for pending in batch:
                    pending.stored, pending.error = 0, error
            for pending in batch:
                pending.done.set()

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
