"""An account's rate-limit window in PostgreSQL, shared by every process on every host.

The same sliding window and pause as the SQLite one (:class:`crm_pipelines.connectors.limits.AccountWindow`),
in two small tables of the schema ``crm_pipelines_rate``. Each decision runs in one transaction
under a transaction-level advisory lock of the account, and reads the server's clock, so hosts
whose clocks drift apart still agree on the window.
"""

from __future__ import annotations

import threading

import psycopg

__all__ = ["Window"]

_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS crm_pipelines_rate;
CREATE TABLE IF NOT EXISTS crm_pipelines_rate.sent (account text NOT NULL, at double precision NOT NULL);
CREATE INDEX IF NOT EXISTS sent_account_at ON crm_pipelines_rate.sent (account, at);
CREATE TABLE IF NOT EXISTS crm_pipelines_rate.pause (account text PRIMARY KEY, until double precision NOT NULL);
"""
_NOW = "extract(epoch FROM clock_timestamp())::double precision"


class Window:
    """The window of ``account`` (a digest of the API and credential) at ``url``.

    Args:
        url: ``postgresql://user:password@host:5432/db`` (``postgresql+psycopg://`` is accepted too).
        account: The account's name.
        capacity: Sends allowed per interval.
        interval_seconds: Length of the interval.
        margin_seconds: Extra time a send stays in the window.
    """

    def __init__(
        self, url: str, *, account: str, capacity: int, interval_seconds: float, margin_seconds: float
    ) -> None:
        self.account = account
        self.capacity = capacity
        self.span = interval_seconds + margin_seconds
        self.margin = margin_seconds
        self._lock = threading.Lock()
        self._conn = psycopg.connect(
            url.replace("postgresql+psycopg://", "postgresql://", 1), autocommit=True
        )
        with self._conn.transaction():
            # Two first processes may create the tables at once: the lock makes it one.
            self._conn.execute("SELECT pg_advisory_xact_lock(hashtext('crm_pipelines_rate'))")
            self._conn.execute(_SCHEMA)

    def _locked(self) -> None:
        self._conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [self.account])

    def try_send(self) -> float:
        """Log a send now if the window allows it; else the seconds until it would."""
        with self._lock, self._conn.transaction():
            self._locked()
            row = self._conn.execute(
                f"SELECT {_NOW}, coalesce((SELECT until FROM crm_pipelines_rate.pause WHERE account = %s), 0)",
                [self.account],
            ).fetchone()
            assert row is not None
            now, paused = float(row[0]), float(row[1])
            if now < paused:
                return paused - now
            self._conn.execute(
                "DELETE FROM crm_pipelines_rate.sent WHERE account = %s AND at <= %s",
                [self.account, now - self.span],
            )
            count_row = self._conn.execute(
                "SELECT count(*), min(at) FROM crm_pipelines_rate.sent WHERE account = %s", [self.account]
            ).fetchone()
            assert count_row is not None
            if int(count_row[0]) >= self.capacity:
                return float(count_row[1]) + self.span - now
            self._conn.execute("INSERT INTO crm_pipelines_rate.sent VALUES (%s, %s)", [self.account, now])
            return 0.0

    def hold(self, seconds: float, *, until_window_frees: bool = False) -> None:
        """Hold every process on every host for ``seconds``; with ``until_window_frees``, until the
        oldest logged send leaves a full window."""
        with self._lock, self._conn.transaction():
            self._locked()
            row = self._conn.execute(
                f"SELECT {_NOW}, count(*), min(at) FROM crm_pipelines_rate.sent WHERE account = %s",
                [self.account],
            ).fetchone()
            assert row is not None
            now = float(row[0])
            until = now + seconds
            if until_window_frees and int(row[1]) >= self.capacity:
                until = max(float(row[2]) + self.span, now + self.margin)
            self._conn.execute(
                "INSERT INTO crm_pipelines_rate.pause VALUES (%s, %s) "
                "ON CONFLICT (account) DO UPDATE SET until = greatest(pause.until, excluded.until)",
                [self.account, until],
            )

    def reset(self) -> None:
        """Forget the account's logged sends and its pause."""
        with self._lock, self._conn.transaction():
            self._conn.execute("DELETE FROM crm_pipelines_rate.sent WHERE account = %s", [self.account])
            self._conn.execute("DELETE FROM crm_pipelines_rate.pause WHERE account = %s", [self.account])

    def close(self) -> None:
        self._conn.close()
