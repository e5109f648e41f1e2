"""The writer lock as a PostgreSQL advisory lock, shared by every host that reaches the server.

``CRM_PIPELINES_LOCK_URL=postgresql://user:password@host:5432/db`` (``postgresql+psycopg://`` is
accepted too; libpq options such as ``sslmode=verify-full`` go in the query string). The holder
takes ``pg_advisory_lock`` on a connection of its own and keeps that session open until the write
ends; waiting is the server's (``lock_timeout``), not a polling loop. A holder that dies loses its
session and with it the lock: at once when its process is killed (the operating system closes the
socket), within about a minute when its host vanishes (TCP keepalives set on the session).
Who holds it: ``SELECT * FROM pg_stat_activity WHERE application_name = 'crm-pipelines warehouse lock'``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import psycopg
from psycopg import errors

from crm_pipelines.warehouse.locks import LockServerError, lock_key, register_lock, without_password

__all__ = ["PostgresHolder", "advisory_key"]

log = logging.getLogger(__name__)

APPLICATION_NAME = "crm-pipelines warehouse lock"
# The server notices a vanished holder after idle + interval * count seconds.
_KEEPALIVES = (
    ("tcp_keepalives_idle", "30"),
    ("tcp_keepalives_interval", "10"),
    ("tcp_keepalives_count", "3"),
)


def advisory_key(name: str) -> int:
    """The signed 64-bit advisory-lock key of a warehouse (a digest: stable across hosts and versions)."""
    return int.from_bytes(lock_key(name)[:8], "big", signed=True)


@register_lock("postgresql", "postgres")
class PostgresHolder:
    """One acquisition of the warehouse's advisory lock on the server ``url`` names.

    Args:
        url: ``postgresql://user:password@host:5432/db``.
        name: The warehouse's identity, hashed into the key.
    """

    def __init__(self, url: str, *, name: str) -> None:
        self._url = url
        self._conninfo = re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)
        self.key = advisory_key(name)
        self._conn: psycopg.Connection[Any] | None = None
        try:
            params = psycopg.conninfo.conninfo_to_dict(self._conninfo)
        except psycopg.ProgrammingError as exc:
            raise ValueError(
                f"CRM_PIPELINES_LOCK_URL is not a PostgreSQL URL: {without_password(str(exc), url)}"
            ) from None
        where = f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')}"
        self.where = f"PostgreSQL advisory lock {self.key} on {where}"

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(
                self._conninfo, autocommit=True, application_name=APPLICATION_NAME, connect_timeout=30
            )
        except psycopg.Error as exc:
            raise LockServerError(
                f"could not reach the warehouse's writer lock ({self.where}): {without_password(str(exc), self._url)}"
            ) from None
        try:
            for setting, value in _KEEPALIVES:
                conn.execute("SELECT set_config(%s, %s, false)", [setting, value])
            if conn.info.server_version >= 140000:
                conn.execute("SELECT set_config('idle_session_timeout', '0', false)")  # the holder idles
        except BaseException:
            conn.close()
            raise
        return conn

    def acquire(self, timeout: float) -> bool:
        conn = self._connect()
        try:
            if timeout > 0:
                # The server waits for us; lock_timeout ends the wait (0 would mean forever).
                conn.execute(
                    "SELECT set_config('lock_timeout', %s, false)", [f"{max(1, round(timeout * 1000))}ms"]
                )
                try:
                    conn.execute("SELECT pg_advisory_lock(%s)", [self.key])
                except errors.LockNotAvailable:
                    conn.close()
                    return False
            else:
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", [self.key]).fetchone()
                if not (row and row[0]):
                    conn.close()
                    return False
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return True

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            row = conn.execute("SELECT pg_advisory_unlock(%s)", [self.key]).fetchone()
            if not (row and row[0]):
                log.error(f"the warehouse's writer lock ({self.where}) was no longer held at release")
        except psycopg.Error as exc:
            # The session is gone (server restart, network): so is the lock it held.
            log.error(
                f"the warehouse's writer lock ({self.where}) was lost before release: {type(exc).__name__}"
            )
        finally:
            conn.close()
