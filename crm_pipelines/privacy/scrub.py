"""Row matching shared by erasure and suppression: which rows of a table or Parquet file are a person's.

A row is the person's when one of its text cells is one of the person's identifiers (a record id
``<source>:<id>``, a golden id, an e-mail address), when its source key column (raw data: the
mapping's ``id``) holds one of the person's ids in that source, or when a text cell (a quarantined
record's JSON, a file line) contains one of the person's e-mail addresses. Columns that only refer
to the person from someone else's record (:data:`REFERENCE_COLUMNS`: the contact who raised a case)
are pseudonymised instead of the row being erased.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from crm_pipelines.mapping.spec import Mappings
from crm_pipelines.privacy.keys import SEPARATOR
from crm_pipelines.sql import quote_ident

__all__ = ["REFERENCE_COLUMNS", "RowMatch", "raw_key", "text_columns"]

# Columns that point at a person from a record that is not theirs: a support case's contact.
REFERENCE_COLUMNS = frozenset({"contact_record_id", "contact_id"})
TEXT_TYPES = ("VARCHAR", "JSON")
PSEUDONYM_PREFIX = "erased:"


def text_columns(described: Iterable[Sequence[object]]) -> list[str]:
    """Names of the text columns among ``DESCRIBE`` rows (name, type, ...)."""
    return [str(row[0]) for row in described if str(row[1]).upper() in TEXT_TYPES]


def raw_key(mappings: Mappings, dataset: str) -> tuple[str, str] | None:
    """(source, id column) of the mapping whose main input is ``dataset`` (``<source dir>/<dataset>``)."""
    for sources in mappings.entities.values():
        for mapping in sources:
            if next(iter(mapping.inputs.values())) == dataset:
                return mapping.source, mapping.id
    return None


@dataclass(frozen=True)
class RowMatch:
    """The SQL conditions that find a person's rows, with their bound parameters (named, ``$name``).

    Attributes:
        identifiers: Record ids, golden ids and e-mail addresses, lower case.
        emails: The person's e-mail addresses, lower case.
        source_ids: Source -> the person's ids in that source (for raw rows keyed by the source's id).
    """

    identifiers: frozenset[str]
    emails: frozenset[str]
    source_ids: dict[str, frozenset[str]]
    key: str

    def params(self) -> dict[str, object]:
        pattern = "|".join(re.escape(e) for e in sorted(self.emails)) or "(?!)"
        return {
            "erase_ids": sorted(self.identifiers) or [""],
            "erase_email": f"(^|[^a-z0-9._%+-])({pattern})($|[^a-z0-9.-])",
            "erase_key": self.key,
        }

    def bind(self, sql: str) -> dict[str, object]:
        """The parameters ``sql`` uses (DuckDB refuses unused named parameters)."""
        return {name: value for name, value in self.params().items() if f"${name}" in sql}

    def owned(self, columns: list[str], *, key: tuple[str, str] | None = None) -> str:
        """Condition true for the person's own rows (``key``: a raw table's source and id column)."""
        terms = []
        for column in columns:
            if column in REFERENCE_COLUMNS:
                continue
            c = quote_ident(column)
            terms.append(f"list_contains($erase_ids, lower(trim(CAST({c} AS VARCHAR))))")
            terms.append(f"coalesce(regexp_matches(lower(CAST({c} AS VARCHAR)), $erase_email), false)")
        if key is not None and self.source_ids.get(key[0]):
            ids = ", ".join(f"'{i.replace(chr(39), chr(39) * 2)}'" for i in sorted(self.source_ids[key[0]]))
            terms.append(f"trim(CAST({quote_ident(key[1])} AS VARCHAR)) IN ({ids})")
        # A NULL cell says nothing: without the coalesce, ``NOT (NULL OR false)`` is NULL, and a
        # rewrite keeping ``WHERE NOT owned`` would drop everyone else's rows with an empty cell.
        return f"coalesce({' OR '.join(terms)}, false)" if terms else "false"

    def references(self, columns: list[str]) -> list[str]:
        """The reference columns present (pseudonymised where they point at the person)."""
        return [c for c in columns if c in REFERENCE_COLUMNS]

    def pseudonymised(self, column: str) -> str:
        """The column with a reference to the person replaced by a keyed pseudonym (the same for every row)."""
        value = f"lower(trim(CAST({quote_ident(column)} AS VARCHAR)))"
        return (
            f"CASE WHEN list_contains($erase_ids, {value}) "
            f"THEN '{PSEUDONYM_PREFIX}' || left(sha256($erase_key || '{SEPARATOR}' || {value}), 20) "
            f"ELSE {quote_ident(column)} END"
        )

    def referenced(self, column: str) -> str:
        return f"list_contains($erase_ids, lower(trim(CAST({quote_ident(column)} AS VARCHAR))))"
