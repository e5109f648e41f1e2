"""A throwaway PostgreSQL server from the binaries on this machine, for tests and benchmarks.

``initdb`` + ``pg_ctl start`` in a fresh folder, listening on a free loopback port with password
authentication; stopped and removed on exit. PostgreSQL refuses to run as root, so when we are root
the server runs as ``nobody`` (``runuser``) in a folder under the system temp dir that it owns.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from crm_pipelines.local_ports import PortTaken, address_in_use, log_since, on_a_free_port
from crm_pipelines.sql import quote_ident

# The server never outlives its test or benchmark, so crash safety buys nothing and costs seconds.
_FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


@dataclass(frozen=True)
class PostgresServer:
    """Where a running server listens and how to log in.

    Attributes:
        host: Loopback address.
        port: TCP port.
        user: Superuser name.
        password: Its password.
        database: The database created for the caller.
        data_dir: The cluster's folder.
    """

    host: str
    port: int
    user: str
    password: str
    database: str
    data_dir: Path

    def url(self, driver: str = "psycopg") -> str:
        """SQLAlchemy URL, e.g. ``postgresql+psycopg://user:pw@127.0.0.1:5432/erp``."""
        return f"postgresql+{driver}://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    def conninfo(self) -> str:
        """libpq connection string for psycopg."""
        return (
            f"host={self.host} port={self.port} dbname={self.database} "
            f"user={self.user} password={self.password}"
        )

    def odbc_connection_string(self, driver: str = "PostgreSQL Unicode") -> str:
        """DSN-less ODBC connection string for psqlODBC.

        ``UseDeclareFetch=1`` makes the driver fetch through a server-side cursor, ``Fetch`` rows at a
        time, instead of loading the whole result into client memory.
        """
        return (
            f"DRIVER={{{driver}}};SERVER={self.host};PORT={self.port};DATABASE={self.database};"
            f"UID={self.user};PWD={self.password};UseDeclareFetch=1;Fetch=10000"
        )


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "nobody", "--", *argv]
    return argv


def _run(argv: list[str], *, cwd: Path) -> None:
    done = subprocess.run(_as_server_user(argv), cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:2])} failed ({done.returncode}): {done.stderr or done.stdout}")


@contextmanager
def running_postgres(*, database: str = "erp", settings: tuple[str, ...] = ()) -> Iterator[PostgresServer]:
    """Start a fresh PostgreSQL server, create ``database``, yield it, then stop and delete it.

    Args:
        database: Name of the database to create.
        settings: Extra ``name=value`` server settings (e.g. ``shared_buffers=256MB``).

    Returns:
        A context manager yielding the running :class:`PostgresServer`.
    """
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        raise FileNotFoundError("initdb / pg_ctl are not on PATH; install the PostgreSQL server binaries")
    # Not under pytest's tmp_path: its parents are private to root, and the server may run as nobody.
    root = Path(tempfile.mkdtemp(prefix="crm-pg-"))
    data_dir = root / "data"
    user, password = "crm", secrets.token_hex(12)
    (root / "pwfile").write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(root, "nobody")
        shutil.chown(root / "pwfile", "nobody")
    started = False
    try:
        _run(
            [
                "initdb",
                "-D",
                str(data_dir),
                "-U",
                user,
                f"--pwfile={root / 'pwfile'}",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            cwd=root,
        )

        def start(port: int) -> int:
            options = " ".join(
                f"-c {s}"
                for s in (
                    "listen_addresses=127.0.0.1",
                    f"port={port}",
                    f"unix_socket_directories={root}",
                    *_FAST_SETTINGS,
                    *settings,
                )
            )
            log = root / "log"
            seen = log.stat().st_size if log.exists() else 0
            try:
                _run(
                    ["pg_ctl", "start", "-w", "-t", "60", "-D", str(data_dir), "-l", str(log), "-o", options],
                    cwd=root,
                )
            except RuntimeError as exc:
                if address_in_use(log_since(log, seen)):
                    raise PortTaken(f"port {port} was taken before PostgreSQL bound it") from exc
                raise
            return port

        port = on_a_free_port(start)
        started = True
        server = PostgresServer("127.0.0.1", port, user, password, database, data_dir)
        with psycopg.connect(
            host=server.host, port=port, user=user, password=password, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f"CREATE DATABASE {quote_ident(database)}")
        yield server
    finally:
        if started:
            _run(["pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(data_dir)], cwd=root)
        shutil.rmtree(root, ignore_errors=True)
