"""The analysts' masked views: personal data masked as declared, joins intact."""

import re
from collections.abc import Callable

import dagster as dg
import duckdb

from crm_pipelines.canonical import ENTITIES
from crm_pipelines.privacy.keys import masking_key
from crm_pipelines.privacy.masking import MART_ENTITY, token

Connect = Callable[[], duckdb.DuckDBPyConnection]


def _emails(con: duckdb.DuckDBPyConnection) -> set[str]:
    emails: set[str] = set()
    for schema, table in (("staging", "contact"), ("staging", "lead"), ("staging", "account")):
        emails |= {
            e.lower()
            for (e,) in con.execute(f"SELECT email FROM {schema}.{table} WHERE email IS NOT NULL").fetchall()
        }
    return emails


def test_every_mart_has_an_analyst_view(connect: Connect, first_night: dg.ExecuteInProcessResult) -> None:
    with connect() as con:
        marts = {
            t
            for (t,) in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'marts'"
            ).fetchall()
        }
        views = {
            t
            for (t,) in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'analyst'"
            ).fetchall()
        }
        assert marts
        assert marts <= views
        for mart in marts & set(MART_ENTITY):
            assert (
                con.execute(f"SELECT count(*) FROM analyst.{mart}").fetchone()
                == con.execute(f"SELECT count(*) FROM marts.{mart}").fetchone()
            )


def test_the_analyst_views_never_show_an_email(
    connect: Connect, first_night: dg.ExecuteInProcessResult
) -> None:
    with connect() as con:
        emails = _emails(con)
        assert len(emails) > 100
        views = con.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'analyst' AND data_type = 'VARCHAR'"
        ).fetchall()
        for table, column in views:
            values = {
                str(v).lower()
                for (v,) in con.execute(f'SELECT DISTINCT "{column}" FROM analyst.{table}').fetchall()
                if v
            }
            assert not values & emails, (table, column)
        names = {
            n.lower()
            for (n,) in con.execute(
                "SELECT last_name FROM marts.dim_contact WHERE last_name IS NOT NULL"
            ).fetchall()
        }
        shown = {
            str(v).lower()
            for (v,) in con.execute("SELECT last_name FROM analyst.dim_contact").fetchall()
            if v
        }
        assert names
        assert not names & shown


def test_the_same_email_gives_the_same_token(
    connect: Connect, first_night: dg.ExecuteInProcessResult
) -> None:
    with connect() as con:
        pairs = con.execute(
            "SELECT m.email, a.email FROM marts.dim_contact AS m JOIN analyst.dim_contact AS a USING (contact_id) "
            "WHERE m.email IS NOT NULL"
        ).fetchall()
    key = masking_key()
    assert pairs
    assert all(masked == token(key, clear) for clear, masked in pairs)
    # One token per address, one address per token.
    assert len({c for c, _ in pairs}) == len({m for _, m in pairs})


def test_joins_across_views_still_match(connect: Connect, first_night: dg.ExecuteInProcessResult) -> None:
    with connect() as con:
        clear = con.execute(
            "SELECT count(*) FROM marts.fact_case AS f JOIN marts.dim_contact AS c USING (contact_id)"
        ).fetchone()
        masked = con.execute(
            "SELECT count(*) FROM analyst.fact_case AS f JOIN analyst.dim_contact AS c USING (contact_id)"
        ).fetchone()
        # On a masked column: people sharing an address pair up the same way in clear and in tokens.
        clear_email = con.execute(
            "SELECT count(*) FROM marts.dim_contact AS a JOIN marts.dim_contact AS b ON lower(a.email) = lower(b.email)"
        ).fetchone()
        masked_email = con.execute(
            "SELECT count(*) FROM analyst.dim_contact AS a JOIN analyst.dim_contact AS b ON a.email = b.email"
        ).fetchone()
    assert clear is not None
    assert clear[0] > 0
    assert masked == clear
    assert clear_email is not None
    assert clear_email[0] > 0
    assert masked_email == clear_email


def test_contact_points_are_shown_partly(connect: Connect, first_night: dg.ExecuteInProcessResult) -> None:
    with connect() as con:
        rows = con.execute(
            "SELECT m.email, a.email, m.phone, a.phone FROM marts.dim_account AS m "
            "JOIN analyst.dim_account AS a USING (account_id) WHERE m.email IS NOT NULL AND m.phone IS NOT NULL"
        ).fetchall()
    assert rows
    for email, masked_email, phone, masked_phone in rows:
        assert masked_email == f"{email[0]}***@{email.split('@')[1]}"
        assert masked_phone[:3] == phone[:3]
        assert masked_phone[-2:] == phone[-2:]
        assert re.fullmatch(r"\+\d\d\*+\d\d", masked_phone), masked_phone


def test_staging_keeps_only_the_declared_canonical_columns(
    connect: Connect, first_night: dg.ExecuteInProcessResult
) -> None:
    """Data minimisation past the extract (whose declared fields only are read: tests/crm_pipelines/connectors)."""
    with connect() as con:
        for entity, schema in ENTITIES.items():
            columns = {c for (c, *_) in con.execute(f"DESCRIBE staging.{entity}").fetchall()}
            assert columns - {"_partition"} == set(schema.names), entity
