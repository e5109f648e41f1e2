"""The warehouse suite runs every test against both backends: the DuckDB file and a PostgreSQL server.

``warehouse_url`` names a fresh, empty warehouse: a DuckDB file under ``tmp_path``, or a new database on
one PostgreSQL server started for the session from this machine's ``initdb``/``pg_ctl`` (the models then
run in a DuckDB working copy under ``tmp_path`` and each load is published to the server).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from crm_pipelines import settings
from crm_pipelines.sql import quote_ident
from crm_pipelines_sandbox.postgres_server import PostgresServer, running_postgres

BACKENDS = ("duckdb", "postgresql")


@pytest.fixture(scope="session")
def warehouse_server() -> Iterator[PostgresServer]:
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not on PATH")
    with running_postgres(database="warehouse") as server:
        yield server


def new_database(server: PostgresServer) -> PostgresServer:
    """A fresh, empty database on the session's server."""
    name = f"warehouse_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.conninfo(), autocommit=True) as pg:
        pg.execute(f"CREATE DATABASE {quote_ident(name)}".encode())
    return replace(server, database=name)


@pytest.fixture
def warehouse_database(warehouse_server: PostgresServer) -> PostgresServer:
    """A fresh, empty database on the session's PostgreSQL server, logged in as its superuser."""
    return new_database(warehouse_server)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def warehouse_url(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> str:
    """``WAREHOUSE_URL`` of an empty warehouse on ``backend``, also set in the environment."""
    if backend == "duckdb":
        url = f"duckdb:///{tmp_path}/warehouse.duckdb"
    else:
        server: PostgresServer = request.getfixturevalue("warehouse_server")
        url = new_database(server).url()
        monkeypatch.setenv(settings.WAREHOUSE_WORKING_COPY, str(tmp_path / "warehouse.work.duckdb"))
    monkeypatch.setenv(settings.WAREHOUSE_URL, url)
    return url
