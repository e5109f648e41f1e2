"""The analysts' masked views: ``analyst.<mart>``, each mart with its personal data masked as declared.

Which columns are personal and how they are masked is declared once, in the canonical schema
(``crm_pipelines/canonical.py``: ``CLASSIFICATION``); a mart column named like a canonical column of
the mart's entity (:data:`MART_ENTITY`) is masked as that column is. ``hash`` gives a keyed token
(the same value always gives the same token, so joins across views still match), ``partial`` keeps
a hint (``j***@example.com``, ``+49*******67``).

The views are materialised tables rebuilt with their mart: a SQL view would have to carry the
masking key in its definition, which any analyst can read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import duckdb

from crm_pipelines.canonical import CLASSIFICATION, PRIVACY_CLASSES
from crm_pipelines.privacy.keys import SEPARATOR, masking_key
from crm_pipelines.sql import qualified, quote_ident
from crm_pipelines.warehouse.connection import table_exists
from crm_pipelines.warehouse.load import column_comments, comment_columns, replace_table

__all__ = ["ANALYST_SCHEMA", "MART_ENTITY", "build_masked_view", "mart_masking", "merge_masked_view", "token"]

ANALYST_SCHEMA = "analyst"
# The canonical entity each mart is modelled on: its columns are masked as that entity's are.
MART_ENTITY: dict[str, str] = {
    "dim_account": "account",
    "dim_contact": "contact",
    "dim_account_history": "account",
    "dim_contact_history": "contact",
    "fact_opportunity": "opportunity",
    "fact_sales_order": "sales_order",
    "fact_invoice": "invoice",
    "fact_lead_funnel": "lead",
    "fact_case": "support_case",
}
TOKEN_PREFIX = "tok_"
TOKEN_HEX = 20


def token(key: str, value: str) -> str:
    """The token ``hash`` masking gives ``value`` (in Python, for tests and look-ups)."""
    import hashlib

    normalised = value.strip().lower()
    return TOKEN_PREFIX + hashlib.sha256(f"{key}{SEPARATOR}{normalised}".encode()).hexdigest()[:TOKEN_HEX]


def _hash_sql(column: str) -> str:
    value = f"lower(trim(CAST({column} AS VARCHAR)))"
    return (
        f"CASE WHEN {column} IS NULL THEN NULL "
        f"ELSE '{TOKEN_PREFIX}' || left(sha256($1 || '{SEPARATOR}' || {value}), {TOKEN_HEX}) END"
    )


def _partial_sql(column: str) -> str:
    value = f"CAST({column} AS VARCHAR)"
    return (
        f"CASE WHEN {column} IS NULL THEN NULL "
        # an e-mail keeps its first letter and its domain
        f"WHEN contains({value}, '@') THEN left({value}, 1) || '***@' || split_part({value}, '@', 2) "
        # a phone keeps its country code and last two digits
        f"WHEN length({value}) > 6 THEN left({value}, 3) || repeat('*', length({value}) - 5) || right({value}, 2) "
        "ELSE '***' END"
    )


MASKINGS = {"hash": _hash_sql, "partial": _partial_sql}


def mart_masking(mart: str, columns: list[str]) -> dict[str, str]:
    """Mart column -> masking (``hash``, ``partial``; unmasked columns are left out)."""
    if mart not in MART_ENTITY:
        raise KeyError(f"privacy.masking.MART_ENTITY declares no entity for mart {mart!r}")
    classes = CLASSIFICATION[MART_ENTITY[mart]]
    out = {}
    for column in columns:
        masking = PRIVACY_CLASSES[classes[column]][2] if column in classes else "none"
        if masking != "none":
            out[column] = masking
    return out


def build_masked_view(
    con: duckdb.DuckDBPyConnection, *, mart: str, descriptions: Mapping[str, str]
) -> dict[str, str]:
    """Rebuild ``analyst.<mart>`` from ``marts.<mart>`` inside the caller's transaction.

    Returns:
        The masked columns and their masking.
    """
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {ANALYST_SCHEMA}")
    source = qualified("marts", mart)
    columns = [row[0] for row in con.execute(f"DESCRIBE {source}").fetchall()]
    masked = mart_masking(mart, columns)
    replace_table(
        con,
        schema=ANALYST_SCHEMA,
        table=mart,
        select_sql=f"SELECT {_masked_select(columns, masked)} FROM {source}",
        params=_key_param(masked),
    )
    comment_columns(con, schema=ANALYST_SCHEMA, table=mart, descriptions=_comments(descriptions, masked))
    return masked


def merge_masked_view(
    con: duckdb.DuckDBPyConnection,
    *,
    mart: str,
    descriptions: Mapping[str, str],
    key: Sequence[str],
    changes: str,
) -> dict[str, str]:
    """Bring ``analyst.<mart>`` in line with ``marts.<mart>`` after a merge wrote the keys in ``changes``.

    ``changes`` is the table :func:`crm_pipelines.warehouse.load.merge_table` left (key columns and
    ``change``): only those keys' masked rows are deleted and written again, every other row already is
    the masked row of its unchanged mart row. The table is rebuilt in full (:func:`build_masked_view`)
    when that cannot be known: it does not exist, its columns are not the mart's, a column's comment
    (which names its masking) is not the declared one, a mart column has no description to carry it,
    or an unchanged row's token is not the one the masking key gives today (the key was rotated). The
    caller rebuilds it in full itself when the mart's columns changed (their types are not compared).

    Returns:
        The masked columns and their masking.
    """
    source = qualified("marts", mart)
    target = qualified(ANALYST_SCHEMA, mart)
    columns = [str(row[0]) for row in con.execute(f"DESCRIBE {source}").fetchall()]
    masked = mart_masking(mart, columns)
    wanted = _comments(descriptions, masked)
    if (
        not table_exists(con, ANALYST_SCHEMA, mart)
        or list(held := column_comments(con, schema=ANALYST_SCHEMA, table=mart)) != columns
        or held != {c: wanted.get(c) or None for c in columns}
        or not all(descriptions.get(c) for c in columns)
        or not _tokens_hold(con, mart=mart, key=key, changes=changes, masked=masked)
    ):
        return build_masked_view(con, mart=mart, descriptions=descriptions)
    match = " AND ".join(f"c.{quote_ident(k)} = t.{quote_ident(k)}" for k in key)
    counts = dict(con.execute(f"SELECT change, count(*) FROM {changes} GROUP BY change").fetchall())
    if counts.get("update") or counts.get("delete"):
        con.execute(f"DELETE FROM {target} AS t USING {changes} AS c WHERE {match} AND c.change <> 'insert'")
    if counts.get("insert") or counts.get("update"):
        con.execute(
            f"INSERT INTO {target} BY NAME SELECT {_masked_select(columns, masked)} FROM "
            f"(SELECT t.* FROM {source} AS t SEMI JOIN {changes} AS c ON {match} AND c.change <> 'delete')",
            _key_param(masked),
        )
    return masked


def _tokens_hold(
    con: duckdb.DuckDBPyConnection, *, mart: str, key: Sequence[str], changes: str, masked: Mapping[str, str]
) -> bool:
    """Whether an unchanged row's hashed columns hold the tokens today's masking key gives (one row is
    enough: one key masks every column; a table with no hashed value holds no token to go stale)."""
    hashed = [c for c, how in masked.items() if how == "hash"]
    if not hashed:
        return True
    on = " AND ".join(f"a.{quote_ident(k)} = m.{quote_ident(k)}" for k in key)
    unchanged = " AND ".join(f"c.{quote_ident(k)} = a.{quote_ident(k)}" for k in key)
    stale = " OR ".join(
        f"a.{quote_ident(c)} IS DISTINCT FROM {_hash_sql('m.' + quote_ident(c))}" for c in hashed
    )
    found = " OR ".join(f"a.{quote_ident(c)} IS NOT NULL" for c in hashed)
    row = con.execute(
        f"""
        SELECT {stale} FROM (
            SELECT * FROM {qualified(ANALYST_SCHEMA, mart)} AS a
            WHERE ({found}) AND NOT EXISTS (SELECT 1 FROM {changes} AS c WHERE {unchanged})
            LIMIT 1
        ) AS a JOIN {qualified("marts", mart)} AS m ON {on}
        """,
        [masking_key()],
    ).fetchone()
    return row is None or not row[0]


def _masked_select(columns: Sequence[str], masked: Mapping[str, str]) -> str:
    return ", ".join(
        f"{MASKINGS[masked[c]](quote_ident(c))} AS {quote_ident(c)}" if c in masked else quote_ident(c)
        for c in columns
    )


def _key_param(masked: Mapping[str, str]) -> list[object]:
    return [masking_key()] if "hash" in masked.values() else []  # $1 only where a column is hashed


def _comments(descriptions: Mapping[str, str], masked: Mapping[str, str]) -> dict[str, str]:
    return {c: f"{text} (masked: {masked[c]})" if c in masked else text for c, text in descriptions.items()}
