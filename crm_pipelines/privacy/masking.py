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

from collections.abc import Mapping

import duckdb

from crm_pipelines.canonical import CLASSIFICATION, PRIVACY_CLASSES
from crm_pipelines.privacy.keys import SEPARATOR, masking_key
from crm_pipelines.sql import qualified, quote_ident
from crm_pipelines.warehouse.load import comment_columns, replace_table

__all__ = ["ANALYST_SCHEMA", "MART_ENTITY", "build_masked_view", "mart_masking", "token"]

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
    select = ", ".join(
        f"{MASKINGS[masked[c]](quote_ident(c))} AS {quote_ident(c)}" if c in masked else quote_ident(c)
        for c in columns
    )
    replace_table(
        con,
        schema=ANALYST_SCHEMA,
        table=mart,
        select_sql=f"SELECT {select} FROM {source}",
        params=[masking_key()] if "hash" in masked.values() else [],  # $1 only where a column is hashed
    )
    comment_columns(
        con,
        schema=ANALYST_SCHEMA,
        table=mart,
        descriptions={
            c: f"{text} (masked: {masked[c]})" if c in masked else text for c, text in descriptions.items()
        },
    )
    return masked
