"""A real PostgreSQL server for the database tests, started once per session from the local binaries."""

import shutil
from collections.abc import Iterator

import pytest

from crm_pipelines_sandbox.postgres_server import PostgresServer, running_postgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not on PATH")
    with running_postgres(database="erp") as server:
        yield server


@pytest.fixture(scope="session")
def odbc_driver() -> str:
    """The psqlODBC driver name registered with unixODBC, or a skip saying what to install."""
    try:
        import pyodbc
    except ImportError as exc:  # libodbc.so missing: pyodbc cannot load
        pytest.skip(f"pyodbc cannot load ({exc}); install unixodbc (scripts/install-system-packages.sh)")
    if "PostgreSQL Unicode" not in pyodbc.drivers():
        pytest.skip("ODBC driver 'PostgreSQL Unicode' not registered; install odbc-postgresql")
    return "PostgreSQL Unicode"
