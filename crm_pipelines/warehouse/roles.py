"""The PostgreSQL warehouse's roles: who may write it, who reads the masked marts, who reads personal data.

``crm-pipelines warehouse-roles`` runs :func:`create_roles` as the database's owner (or a superuser):

- ``crm_loader`` writes the warehouse: it owns every schema and table the pipelines publish
  (:mod:`crm_pipelines.warehouse.postgres` creates tables as ``crm_loader`` when the pipelines' login
  is a member), and may create schemas in the database. It cannot create roles or grant them.
- ``crm_analyst`` reads the marts as analysts need them, masked (schema ``analyst``: e-mails and phones
  tokenised or partly hidden, :mod:`crm_pipelines.privacy.masking`), and nothing else: not the unmasked
  ``marts``, not ``raw``, ``staging``, ``core`` or ``ops``.
- ``crm_pii_reader`` may read the unmasked marts (``marts``) as well as the masked ones.

The three are group roles (``NOLOGIN``): people and services log in as their own users, made members
with ``--member crm_analyst=alice`` or ``GRANT crm_analyst TO alice``. Tables created later get the same
grants through the schemas' default privileges. Running the command again changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql as pgsql

from crm_pipelines.warehouse.postgres import LOADER_ROLE, META_SCHEMA, PUBLISHED_SCHEMAS

ANALYST_ROLE = "crm_analyst"
PII_READER_ROLE = "crm_pii_reader"
# Which schemas each reading role may read, every table in them.
READS: dict[str, tuple[str, ...]] = {
    ANALYST_ROLE: ("analyst",),
    PII_READER_ROLE: ("analyst", "marts"),
}
ROLES = (LOADER_ROLE, ANALYST_ROLE, PII_READER_ROLE)


@dataclass(frozen=True)
class RolesReport:
    created: tuple[str, ...]
    members: tuple[tuple[str, str], ...]
    tables_owned: int


def create_roles(conninfo: str, *, members: dict[str, list[str]] | None = None) -> RolesReport:
    """Create the roles and their grants on the warehouse database (idempotent).

    Args:
        conninfo: libpq connection string or URI of an owner of the database or a superuser.
        members: Logins to make members of each role, e.g. ``{"crm_analyst": ["alice"]}``.
    """
    unknown = set(members or {}) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown warehouse role(s) {sorted(unknown)}; the roles are {', '.join(ROLES)}")
    created = []
    granted = []
    with psycopg.connect(conninfo, autocommit=True) as pg, pg.transaction():
        database = pgsql.Identifier(pg.execute("SELECT current_database()").fetchall()[0][0])
        for role in ROLES:
            exists = pg.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchall()
            if not exists:
                pg.execute(pgsql.SQL("CREATE ROLE {} NOLOGIN").format(pgsql.Identifier(role)))
                created.append(role)
            pg.execute(
                pgsql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, pgsql.Identifier(role))
            )
        loader = pgsql.Identifier(LOADER_ROLE)
        pg.execute(pgsql.SQL("GRANT CREATE, TEMPORARY ON DATABASE {} TO {}").format(database, loader))
        # Nobody but the roles given it reads or writes the public schema's tables by default.
        pg.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        tables = 0
        for schema in (*PUBLISHED_SCHEMAS, META_SCHEMA):
            name = pgsql.Identifier(schema)
            pg.execute(pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(name))
            pg.execute(pgsql.SQL("ALTER SCHEMA {} OWNER TO {}").format(name, loader))
            for (table,) in pg.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", [schema]
            ).fetchall():
                pg.execute(
                    pgsql.SQL("ALTER TABLE {} OWNER TO {}").format(pgsql.Identifier(schema, table), loader)
                )
                tables += 1
        for role, schemas in READS.items():
            reader = pgsql.Identifier(role)
            for schema in schemas:
                name = pgsql.Identifier(schema)
                pg.execute(pgsql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(name, reader))
                pg.execute(pgsql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(name, reader))
                pg.execute(
                    pgsql.SQL(
                        "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT SELECT ON TABLES TO {}"
                    ).format(loader, name, reader)
                )
        for role, logins in (members or {}).items():
            for login in logins:
                pg.execute(
                    pgsql.SQL("GRANT {} TO {}").format(pgsql.Identifier(role), pgsql.Identifier(login))
                )
                granted.append((role, login))
    return RolesReport(created=tuple(created), members=tuple(granted), tables_owned=tables)
