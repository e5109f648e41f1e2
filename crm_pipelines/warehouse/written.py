"""Which warehouse tables a DuckDB connection wrote: from DuckDB's own query log.

Publishing a load (:mod:`crm_pipelines.warehouse.postgres`) fingerprints the tables the load may have
changed. DuckDB logs every statement a connection runs, including those the relational API generates
(``CALL enable_logging('QueryLog')``); :func:`written_tables` reads them back and names each statement's
target. A statement it cannot place (an unknown kind, a ``DROP SCHEMA``) makes it answer ``None``: then
every table is checked, so a write is never missed, only checked for more than it needed.
"""

from __future__ import annotations

import re

import duckdb

_NAME = r'(?:"(?:[^"]|"")+"|[A-Za-z_][\w$]*)'
_QUALIFIED = rf"({_NAME}(?:\s*\.\s*{_NAME}){{0,2}})"
# Statements that write no table's rows (files written by COPY ... TO are not warehouse tables).
_READS = {
    "SELECT", "FROM", "VALUES", "TABLE", "DESCRIBE", "SHOW", "SUMMARIZE", "PRAGMA", "EXPLAIN", "SET",
    "RESET", "BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "CALL", "CHECKPOINT", "USE",
    "INSTALL", "LOAD", "PREPARE", "EXECUTE", "DEALLOCATE", "VACUUM", "ANALYZE", "EXPORT",
}  # fmt: skip
_TARGETS = [
    re.compile(rf"^INSERT\s+(?:OR\s+\w+\s+)?INTO\s+{_QUALIFIED}", re.I),
    re.compile(rf"^DELETE\s+FROM\s+{_QUALIFIED}", re.I),
    re.compile(rf"^UPDATE\s+{_QUALIFIED}", re.I),
    re.compile(rf"^MERGE\s+INTO\s+{_QUALIFIED}", re.I),
    re.compile(rf"^TRUNCATE\s+(?:TABLE\s+)?{_QUALIFIED}", re.I),
    re.compile(rf"^COPY\s+{_QUALIFIED}\s*(?:\([^)]*\)\s*)?FROM\b", re.I),
    re.compile(rf"^ALTER\s+(?:TABLE|VIEW)\s+(?:IF\s+EXISTS\s+)?{_QUALIFIED}", re.I),
    re.compile(rf"^DROP\s+(?:TABLE|VIEW)\s+(?:IF\s+EXISTS\s+)?{_QUALIFIED}", re.I),
    re.compile(rf"^COMMENT\s+ON\s+(?:TABLE|VIEW)\s+{_QUALIFIED}", re.I),
    re.compile(
        rf"^CREATE\s+(?:OR\s+REPLACE\s+)?(?:(?:TEMP|TEMPORARY)\s+)?(?:TABLE|VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?{_QUALIFIED}",
        re.I,
    ),
]
_COMMENT_ON_COLUMN = re.compile(rf"^COMMENT\s+ON\s+COLUMN\s+{_QUALIFIED}", re.I)
_CREATE_OTHER = re.compile(
    r"^CREATE\s+(?:OR\s+REPLACE\s+)?(?:(?:TEMP|TEMPORARY)\s+)?(?:SCHEMA|MACRO|FUNCTION|SEQUENCE|TYPE|"
    r"(?:UNIQUE\s+)?INDEX|SECRET)\b",
    re.I,
)
_TEMPORARY = re.compile(r"^CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP|TEMPORARY)\s+", re.I)
_CTE_WRITE = re.compile(r"\b(INSERT\s+(?:OR\s+\w+\s+)?INTO|DELETE\s+FROM|UPDATE|MERGE\s+INTO)\s", re.I)


def enable(con: duckdb.DuckDBPyConnection) -> None:
    """Start logging this connection's statements (anything logged before is dropped)."""
    con.execute("CALL enable_logging('QueryLog')")
    con.execute("CALL truncate_duckdb_logs()")


def disable(con: duckdb.DuckDBPyConnection) -> None:
    """Stop logging and drop the log: logging is the database's, and the database outlives the connection."""
    con.execute("CALL disable_logging()")
    con.execute("CALL truncate_duckdb_logs()")


def written_tables(con: duckdb.DuckDBPyConnection) -> set[str] | None:
    """``schema.table`` of every table or view the logged statements wrote, or ``None`` if one is unknown."""
    messages = con.execute("SELECT message FROM duckdb_logs WHERE type = 'QueryLog'").fetchall()
    written: set[str] = set()
    for (message,) in messages:
        for statement in _statements(str(message)):
            targets = statement_targets(statement)
            if targets is None:
                return None
            written |= targets
    return written


def statement_targets(statement: str) -> set[str] | None:
    """The ``schema.table`` names one statement writes (empty for a read), ``None`` when unknown."""
    text = _strip_comments(statement).strip().lstrip("(").strip()
    if not text:
        return set()
    keyword = text.split(None, 1)[0].upper().rstrip(";")
    if keyword == "WITH":
        found = _CTE_WRITE.search(text)
        return set() if found is None else statement_targets(text[found.start() :])
    if keyword == "COPY" and re.match(r"^COPY\s*\(", text, re.I):
        return set()
    if keyword == "COPY" and re.search(r"\bTO\b", text, re.I) and not re.search(r"\bFROM\b", text, re.I):
        return set()
    if keyword in _READS:
        return set()
    if _CREATE_OTHER.match(text):
        return set()
    if _TEMPORARY.match(text):
        return set()
    column = _COMMENT_ON_COLUMN.match(text)
    if column:
        parts = _parts(column.group(1))
        return {".".join(parts[-3:-1])} if len(parts) >= 3 else set()
    for pattern in _TARGETS:
        match = pattern.match(text)
        if match:
            parts = _parts(match.group(1))
            # An unqualified name is in the default (unpublished) schema or a temporary table.
            return {".".join(parts[-2:])} if len(parts) >= 2 else set()
    return None


def _parts(name: str) -> list[str]:
    return [p.strip().strip('"').replace('""', '"').lower() for p in re.findall(_NAME, name)]


def _strip_comments(text: str) -> str:
    return re.sub(r"--[^\n]*|/\*.*?\*/", " ", text, flags=re.S)


def _statements(message: str) -> list[str]:
    """Split a logged message on the semicolons outside quotes."""
    pieces = re.split(r"""('(?:[^']|'')*'|"(?:[^"]|"")*")""", message)
    statements, current = [], ""
    for piece in pieces:
        if piece.startswith(("'", '"')):
            current += piece
            continue
        *done, rest = piece.split(";")
        for part in done:
            statements.append(current + part)
            current = ""
        current += rest
    statements.append(current)
    return [s for s in statements if s.strip()]
