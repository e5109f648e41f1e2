"""The PostgreSQL warehouse's roles, each proved by what it must not be able to do.

A warehouse is published as the server's superuser; ``crm-pipelines warehouse-roles`` creates the roles
and makes three logins members. Each login then tries what its role allows and what it must not do.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors

from crm_pipelines import settings
from crm_pipelines.cli import main
from crm_pipelines.privacy.keys import MASKING_KEY
from crm_pipelines.privacy.masking import build_masked_view
from crm_pipelines.warehouse.connection import Warehouse, open_warehouse
from crm_pipelines_sandbox.postgres_server import PostgresServer

EMAIL = "anna.schmidt@example.com"
PASSWORD = "not-a-real-secret-9"


@dataclass
class Setup:
    server: PostgresServer
    warehouse: Warehouse

    def login(self, user: str) -> psycopg.Connection[Any]:
        server = replace(self.server, user=user, password=PASSWORD)
        return psycopg.connect(server.conninfo(), autocommit=True)


def load_mart(warehouse: Warehouse, mart: str, email: str) -> None:
    """One load: a raw record, a core row and the mart with its masked view, as the nightly writes them."""
    with warehouse.transaction() as con:
        con.execute(f"CREATE OR REPLACE TABLE raw.{mart}_source AS SELECT '{email}' AS email")
        con.execute(f"CREATE OR REPLACE TABLE core.{mart}_core AS SELECT '{email}' AS email")
        con.execute(
            f"CREATE OR REPLACE TABLE marts.{mart} AS SELECT 'GC-1' AS contact_id, '{email}' AS email, "
            "'+49 30 1234567' AS phone"
        )
        build_masked_view(con, mart=mart, descriptions={})


@pytest.fixture
def setup(warehouse_database: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Setup:
    server = warehouse_database
    monkeypatch.setenv(settings.WAREHOUSE_WORKING_COPY, str(tmp_path / "work.duckdb"))
    monkeypatch.setenv(settings.WAREHOUSE_URL, server.url())
    monkeypatch.setenv(MASKING_KEY, "k" * 32)
    warehouse = open_warehouse(server.url())
    load_mart(warehouse, "dim_contact", EMAIL)
    with psycopg.connect(server.conninfo(), autocommit=True) as admin:
        for login in ("alice", "pat", "pipelines"):
            exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [login]).fetchall()
            if not exists:
                admin.execute(f"CREATE ROLE {login} LOGIN PASSWORD '{PASSWORD}'".encode())
    assert (
        main(
            [
                "warehouse-roles",
                "--member",
                "crm_analyst=alice",
                "--member",
                "crm_pii_reader=pat",
                "--member",
                "crm_loader=pipelines",
            ]
        )
        == 0
    )
    return Setup(server, warehouse)


def denied(con: psycopg.Connection[Any], statement: str) -> bool:
    try:
        con.execute(statement.encode())
    except errors.InsufficientPrivilege:
        return True
    return False


def test_the_analyst_reads_the_masked_marts_and_nothing_else(setup: Setup) -> None:
    with setup.login("alice") as alice:
        [(email, phone)] = alice.execute("SELECT email, phone FROM analyst.dim_contact").fetchall()
        assert email != EMAIL
        assert "anna.schmidt" not in email
        assert "1234567" not in phone
        for statement in (
            "SELECT * FROM marts.dim_contact",
            "SELECT * FROM core.dim_contact_core",
            "SELECT * FROM raw.dim_contact_source",
            "SELECT * FROM ops.load_state",
            "INSERT INTO analyst.dim_contact (contact_id) VALUES ('GC-2')",
            "DELETE FROM analyst.dim_contact",
            "CREATE TABLE analyst.mine (x int)",
            "CREATE TABLE public.mine (x int)",
        ):
            assert denied(alice, statement), statement


def test_the_pii_reader_sees_personal_data_and_cannot_write(setup: Setup) -> None:
    with setup.login("pat") as pat:
        assert pat.execute("SELECT email FROM marts.dim_contact").fetchall() == [(EMAIL,)]
        assert pat.execute("SELECT count(*) FROM analyst.dim_contact").fetchall() == [(1,)]
        for statement in (
            "SELECT * FROM raw.dim_contact_source",
            "SELECT * FROM core.dim_contact_core",
            "UPDATE marts.dim_contact SET email = 'x'",
            "TRUNCATE marts.dim_contact",
        ):
            assert denied(pat, statement), statement


def test_the_loader_writes_and_new_tables_reach_the_readers(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    loader_url = replace(setup.server, user="pipelines", password=PASSWORD).url()
    monkeypatch.setenv(settings.WAREHOUSE_URL, loader_url)
    # A later night, published by the pipelines' own login: a changed row and a table first seen now.
    load_mart(open_warehouse(loader_url), "dim_contact", "anna@example.org")
    load_mart(open_warehouse(loader_url), "fact_case", EMAIL)
    with setup.login("pat") as pat:
        assert pat.execute("SELECT email FROM marts.dim_contact").fetchall() == [("anna@example.org",)]
        assert pat.execute("SELECT email FROM marts.fact_case").fetchall() == [(EMAIL,)]
    with setup.login("alice") as alice:
        assert alice.execute("SELECT count(*) FROM analyst.fact_case").fetchall() == [(1,)]
        assert denied(alice, "SELECT * FROM marts.fact_case")
    with setup.login("pipelines") as loader:
        owners = loader.execute(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname IN ('raw', 'core', 'marts', 'analyst')"
        ).fetchall()
        assert owners == [("crm_loader",)]
        assert denied(loader, "CREATE ROLE intruder")
        assert denied(loader, "GRANT crm_pii_reader TO alice")


def test_running_the_command_again_changes_nothing(setup: Setup) -> None:
    assert main(["warehouse-roles"]) == 0
    with setup.login("alice") as alice:
        assert alice.execute("SELECT count(*) FROM analyst.dim_contact").fetchall() == [(1,)]
        assert denied(alice, "SELECT * FROM marts.dim_contact")
