"""Erasure on request: find a person through the crosswalk and erase them from the lake and warehouse.

:func:`erase_person` finds every record of the person (``core.xref_identity``: the golden contact and
its member records in every CRM, and the leads with their e-mail or converted into them), then, in
one warehouse transaction that also holds the writer lock while the lake is rewritten:

* rewrites every lake Parquet file holding one of their rows, without it (atomically: a new file
  renamed over the old);
* deletes their rows from every table of every schema (raw, staging, core with its history, marts,
  ops: quarantine, sync state, plan and errors, match review), found by their identifiers rather than
  by a list of tables, so a history table added later is covered; references to them from someone
  else's record (the contact of a support case) are pseudonymised instead;
* rebuilds the analysts' masked views;
* adds their hashed e-mail addresses and record ids to ``ops.erasure_suppression`` (and its copy in
  the lake that staging reads), so the next night drops them from a source that still holds them;
* records an audit row in ``ops.erasure_audit``: who asked, when, what was touched and how much, with
  hashed identifiers only.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb

from crm_pipelines.lake import LakePath, connect, files_under, read_table, write_table
from crm_pipelines.mapping.spec import Mappings, load_mappings
from crm_pipelines.privacy.keys import keyed_hash, masking_key
from crm_pipelines.privacy.masking import ANALYST_SCHEMA, build_masked_view
from crm_pipelines.privacy.scrub import RowMatch, raw_key, text_columns
from crm_pipelines.privacy.suppression import SUPPRESSION_DDL, export_suppression
from crm_pipelines.sql import fetch_arrow, qualified, quote_ident
from crm_pipelines.warehouse.connection import Warehouse, table_exists
from crm_pipelines.warehouse.marts import MARTS

__all__ = ["AUDIT_DDL", "ErasureReport", "Person", "erase_person", "find_person"]

AUDIT_DDL = """
CREATE TABLE IF NOT EXISTS ops.erasure_audit (
    request_id VARCHAR PRIMARY KEY,
    requested_by VARCHAR NOT NULL,
    requested_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL,
    identifier_kind VARCHAR NOT NULL,   -- email | golden_id
    identifier_hash VARCHAR NOT NULL,   -- keyed hash of what was asked for, never the value
    golden_records BIGINT NOT NULL,
    source_records BIGINT NOT NULL,
    rows_erased BIGINT NOT NULL,
    rows_pseudonymised BIGINT NOT NULL,
    lake_files_rewritten BIGINT NOT NULL,
    places JSON NOT NULL                -- table or lake file -> {"erased": n, "pseudonymised": n}
)
"""
# Lake layers of source rows as the source wrote them (keyed by the mapping's id column): the raw
# snapshots and the increments an incremental read merges into them (crm_pipelines/incremental.py).
NATIVE_LAYERS = ("raw", "increment")
# Tables that hold hashes only and are the erasure's own record.
OWN_TABLES = {("ops", "erasure_audit"), ("ops", "erasure_suppression")}


@dataclass(frozen=True)
class Person:
    """Everything that identifies one person: golden ids, source records and e-mail addresses."""

    golden_ids: frozenset[str]
    records: frozenset[tuple[str, str, str]]  # (record_id, source, source_id)
    emails: frozenset[str]

    @property
    def found(self) -> bool:
        return bool(self.golden_ids or self.records)

    def match(self, key: str) -> RowMatch:
        source_ids: dict[str, set[str]] = {}
        for _, source, source_id in self.records:
            source_ids.setdefault(source, set()).add(source_id)
        return RowMatch(
            identifiers=frozenset(
                {g.lower() for g in self.golden_ids} | {r.lower() for r, _, _ in self.records} | self.emails
            ),
            emails=self.emails,
            source_ids={s: frozenset(ids) for s, ids in source_ids.items()},
            key=key,
        )


@dataclass
class ErasureReport:
    """What one erasure request found and touched (no personal data)."""

    request_id: str
    golden_records: int = 0
    source_records: int = 0
    places: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def rows_erased(self) -> int:
        return sum(p["erased"] for p in self.places.values())

    @property
    def rows_pseudonymised(self) -> int:
        return sum(p["pseudonymised"] for p in self.places.values())

    @property
    def lake_files_rewritten(self) -> int:
        return sum(1 for name in self.places if name.startswith("lake:"))


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[object]) -> list[tuple[str, ...]]:
    return [tuple(str(v) for v in row) for row in con.execute(sql, params).fetchall()]


def _triples(rows: list[tuple[str, ...]]) -> set[tuple[str, str, str]]:
    return {(r[0], r[1], r[2]) for r in rows}


def find_person(con: duckdb.DuckDBPyConnection, *, email: str | None, golden_id: str | None) -> Person:
    """The person's golden contacts, member records (and leads) and e-mail addresses, via the crosswalk."""
    emails = {email.strip().lower()} if email else set()
    golden: set[str] = set()
    if not table_exists(con, "core", "xref_identity"):
        return Person(frozenset(), frozenset(), frozenset(emails))
    if golden_id:
        golden |= {
            g
            for (g,) in _rows(
                con, "SELECT DISTINCT golden_id FROM core.xref_identity WHERE golden_id = ?", [golden_id]
            )
        }
    if emails:
        for schema, table, id_column in (
            ("staging", "contact", "record_id"),
            ("core", "golden_contact", "golden_id"),
        ):
            if not table_exists(con, schema, table):
                continue
            if id_column == "golden_id":
                sql = f"SELECT golden_id FROM {schema}.{table} WHERE lower(trim(email)) = ?"
            else:
                sql = (
                    f"SELECT x.golden_id FROM {schema}.{table} AS c JOIN core.xref_identity AS x "
                    "ON x.record_id = c.record_id AND x.entity = 'contact' WHERE lower(trim(c.email)) = ?"
                )
            golden |= {g for (g,) in _rows(con, sql, [next(iter(emails))])}
    records = _triples(
        _rows(
            con,
            "SELECT record_id, source, source_id FROM core.xref_identity "
            "WHERE entity = 'contact' AND list_contains(?, golden_id)",
            [sorted(golden) or [""]],
        )
    )
    member_ids = sorted(r for r, _, _ in records) or [""]
    for schema, table in (("staging", "contact"), ("core", "golden_contact")):
        if table_exists(con, schema, table):
            key = "record_id" if table == "contact" else "golden_id"
            emails |= {
                e.lower()
                for (e,) in _rows(
                    con,
                    f"SELECT DISTINCT email FROM {schema}.{table} WHERE email IS NOT NULL AND list_contains(?, {key})",
                    [member_ids if key == "record_id" else sorted(golden) or [""]],
                )
            }
    # Leads are the same person before (or without) their conversion.
    for schema in ("staging", "core"):
        if table_exists(con, schema, "lead"):
            records |= _triples(
                _rows(
                    con,
                    f"SELECT DISTINCT record_id, source, source_id FROM {schema}.lead "
                    "WHERE list_contains(?, lower(trim(email))) OR list_contains(?, contact_record_id)",
                    [sorted(emails) or [""], member_ids],
                )
            )
    return Person(frozenset(golden), frozenset(records), frozenset(emails))


def _erase_table(
    con: duckdb.DuckDBPyConnection, schema: str, table: str, match: RowMatch, mappings: Mappings
) -> dict[str, int]:
    target = qualified(schema, table)
    columns = text_columns(con.execute(f"DESCRIBE {target}").fetchall())
    key = None
    if schema == "raw" and "__" in table:
        key = raw_key(mappings, table.replace("__", "/", 1))
    owned = match.owned(columns, key=key)
    erased = _count(con, f"SELECT count(*) FROM {target} WHERE {owned}", match)
    if erased:
        _run(con, f"DELETE FROM {target} WHERE {owned}", match)
    pseudonymised = 0
    for column in match.references(columns):
        hit = match.referenced(column)
        n = _count(con, f"SELECT count(*) FROM {target} WHERE {hit}", match)
        if n:
            _run(
                con,
                f"UPDATE {target} SET {quote_ident(column)} = {match.pseudonymised(column)} WHERE {hit}",
                match,
            )
            pseudonymised += n
    return {"erased": erased, "pseudonymised": pseudonymised}


def _run(con: duckdb.DuckDBPyConnection, sql: str, match: RowMatch) -> duckdb.DuckDBPyConnection:
    return con.execute(sql, match.bind(sql))


def _count(con: duckdb.DuckDBPyConnection, sql: str, match: RowMatch) -> int:
    row = _run(con, sql, match).fetchone()
    return int(row[0]) if row else 0


def _erase_file(
    path: LakePath, relative: tuple[str, ...], match: RowMatch, mappings: Mappings
) -> dict[str, int]:
    native = relative[0] in NATIVE_LAYERS and len(relative) > 3
    key = raw_key(mappings, f"{relative[1]}/{relative[2]}") if native else None
    table = read_table(path)
    con = connect()
    try:
        con.register("lake_file", table)
        columns = text_columns(con.execute("DESCRIBE lake_file").fetchall())
        owned = match.owned(columns, key=key)
        erased = _count(con, f"SELECT count(*) FROM lake_file WHERE {owned}", match)
        references = match.references(columns)
        pseudonymised = sum(
            _count(
                con, f"SELECT count(*) FROM lake_file WHERE NOT ({owned}) AND {match.referenced(c)}", match
            )
            for c in references
        )
        if not erased and not pseudonymised:
            return {"erased": 0, "pseudonymised": 0}
        replaced = ", ".join(f"{match.pseudonymised(c)} AS {quote_ident(c)}" for c in references)
        sql = f"SELECT * {f'REPLACE ({replaced})' if references else ''} FROM lake_file WHERE NOT ({owned})"
        kept = fetch_arrow(con, sql, match.bind(sql))
    finally:
        con.close()
    write_table(path, kept.cast(table.schema))
    return {"erased": erased, "pseudonymised": pseudonymised}


def _base_tables(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    rows = con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_type = 'BASE TABLE' AND table_catalog = current_database() ORDER BY 1, 2"
    ).fetchall()
    return [(str(s), str(t)) for s, t in rows if (s, t) not in OWN_TABLES and s != ANALYST_SCHEMA]


def erase_person(
    *,
    warehouse: Warehouse,
    lake_dir: LakePath,
    email: str | None = None,
    golden_id: str | None = None,
    requested_by: str,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
) -> ErasureReport:
    """Erase one person (by an e-mail address of any of their records, or a golden contact id).

    Args:
        warehouse: The warehouse.
        lake_dir: Lake root.
        email: An e-mail address the person used in any source.
        golden_id: Their golden contact id (``marts.dim_contact.contact_id``).
        requested_by: Who asked (recorded in the audit).
        log: Where progress goes (counts only, never the person's data).

    Returns:
        What was found and touched; the same is in ``ops.erasure_audit``.
    """
    if bool(email) == bool(golden_id):
        raise ValueError("erase needs exactly one of email or golden_id")
    key = masking_key()
    requested_at = datetime.now(UTC)
    report = ErasureReport(request_id=str(uuid.uuid4()))
    mappings = load_mappings()
    with warehouse.transaction() as con:
        con.execute(AUDIT_DDL)
        con.execute(SUPPRESSION_DDL)
        person = find_person(con, email=email, golden_id=golden_id)
        report.golden_records = len(person.golden_ids)
        report.source_records = len(person.records)
        if person.found:
            match = person.match(key)
            # The lake first: should it fail, the transaction rolls back and the person is still found.
            for path, relative in files_under(lake_dir):
                if any(part.startswith((".", "_")) for part in relative):
                    continue
                counts = _erase_file(path, relative, match, mappings)
                if counts["erased"] or counts["pseudonymised"]:
                    report.places[f"lake:{'/'.join(relative)}"] = counts
            for schema, table in _base_tables(con):
                counts = _erase_table(con, schema, table, match, mappings)
                if counts["erased"] or counts["pseudonymised"]:
                    report.places[f"{schema}.{table}"] = counts
            # The analysts' views are rebuilt from the erased marts, not scrubbed: they hold tokens.
            for mart in MARTS:
                if table_exists(con, "marts", mart.name):
                    build_masked_view(con, mart=mart.name, descriptions=mart.columns)
            hashes = [("email", keyed_hash(key, e)) for e in sorted(person.emails)] + [
                ("record", keyed_hash(key, r.lower())) for r, _, _ in sorted(person.records)
            ]
            con.executemany(
                "INSERT INTO ops.erasure_suppression VALUES (?, ?, ?, now()) ON CONFLICT DO NOTHING",
                [[kind, h, report.request_id] for kind, h in hashes],
            )
        kind, value = ("email", (email or "").strip().lower()) if email else ("golden_id", golden_id or "")
        con.execute(
            "INSERT INTO ops.erasure_audit VALUES (?, ?, ?, now(), ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                report.request_id,
                requested_by,
                requested_at,
                kind,
                keyed_hash(key, value),
                report.golden_records,
                report.source_records,
                report.rows_erased,
                report.rows_pseudonymised,
                report.lake_files_rewritten,
                json.dumps(report.places, sort_keys=True),
            ],
        )
        export_suppression(con, lake_dir=lake_dir)
    if log is not None:
        log.info(
            f"erasure {report.request_id}: {report.source_records} source records, {report.rows_erased} rows "
            f"erased, {report.rows_pseudonymised} pseudonymised, {report.lake_files_rewritten} lake files rewritten"
        )
    return report
