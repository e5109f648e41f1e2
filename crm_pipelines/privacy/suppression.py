"""The suppression list: people erased on request stay out, even while a source still holds them.

``ops.erasure_suppression`` holds keyed hashes (:func:`crm_pipelines.privacy.keys.keyed_hash`) of the
erased people's e-mail addresses and record ids; erasure copies it into the lake
(``_privacy/suppression.parquet``), where the steps that read the extracts find it without waiting
for the warehouse. Before a source dataset's partition is staged or loaded,
:func:`suppress_raw_partition` drops from its lake files every row whose record id or any text cell
(an e-mail address) hashes to a suppressed value, and records each as an extract-stage quarantine
row with rule ``erased``: no personal data, only a hash, so the reconciliation still adds up
(extracted = loaded + merged + quarantined).
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from crm_pipelines.canonical import QUARANTINE
from crm_pipelines.lake import (
    LakePath,
    connect,
    files_in,
    lake_lock,
    partition_dir,
    read_table,
    write_table,
)
from crm_pipelines.mapping.spec import Mappings
from crm_pipelines.privacy.keys import keyed_hash_sql, masking_key
from crm_pipelines.privacy.scrub import raw_key, text_columns
from crm_pipelines.sql import fetch_arrow, quote_ident, quote_literal

__all__ = ["SUPPRESSION_DDL", "export_suppression", "suppress_raw_partition", "suppression_file"]

SUPPRESSION_DDL = """
CREATE TABLE IF NOT EXISTS ops.erasure_suppression (
    kind VARCHAR NOT NULL,        -- email | record (a record id <source>:<id>)
    hash VARCHAR NOT NULL,        -- keyed hash of the lower-case value
    request_id VARCHAR NOT NULL,  -- the ops.erasure_audit row that added it
    added_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (kind, hash)
)
"""
ERASED_RULE = "erased"
# The quarantine file the suppressed rows of a partition are recorded in, next to the extract's.
ERASED_FILE = "erased.parquet"


def suppression_file(lake_dir: LakePath) -> LakePath:
    return lake_dir / "_privacy" / "suppression.parquet"


def export_suppression(con: duckdb.DuckDBPyConnection, *, lake_dir: LakePath) -> int:
    """Write ``ops.erasure_suppression`` to the lake (atomically); returns its rows."""
    table = fetch_arrow(con, "SELECT kind, hash FROM ops.erasure_suppression ORDER BY kind, hash", [])
    write_table(suppression_file(lake_dir), table)
    return int(table.num_rows)


def suppress_raw_partition(
    *, lake_dir: LakePath, source_dir: str, dataset: str, partition: str, mappings: Mappings
) -> int:
    """Drop the suppressed people's rows from one dataset's raw lake partition; returns rows dropped.

    Idempotent and safe to call from the raw load and staging alike: they serialise on a lock and
    the second finds nothing left to drop.
    """
    suppressed = suppression_file(lake_dir)
    folder = partition_dir(lake_dir, "raw", source_dir, dataset, partition)
    files = files_in(folder)
    if not suppressed.exists() or not files:
        return 0
    key = masking_key()
    found = raw_key(mappings, f"{source_dir}/{dataset}")
    source = found[0] if found else source_dir
    entity = mappings.entity_of(f"{source_dir}/{dataset}") or dataset
    dropped = 0
    with lake_lock(folder.with_name(f"{folder.name}.privacy.lock")):
        con = connect()
        try:
            con.execute(
                f"CREATE TEMP TABLE suppressed AS SELECT * FROM read_parquet({quote_literal(str(suppressed))})"
            )
            erased_rows: list[str] = []
            for path in files:
                table = read_table(path)
                con.register("lake_file", table)
                columns = text_columns(con.execute("DESCRIBE lake_file").fetchall())
                terms = [
                    f"{keyed_hash_sql(f'lower(trim({quote_ident(c)}))', '$key')} IN "
                    "(SELECT hash FROM suppressed WHERE kind = 'email')"
                    for c in columns
                ]
                record_hash = "NULL"
                if found is not None:
                    record_hash = keyed_hash_sql(
                        f"lower({quote_literal(source + ':')} || trim(CAST({quote_ident(found[1])} AS VARCHAR)))",
                        "$key",
                    )
                    terms.append(f"{record_hash} IN (SELECT hash FROM suppressed WHERE kind = 'record')")
                hit = " OR ".join(f"coalesce({t}, false)" for t in terms) or "false"
                marks = con.execute(
                    f"SELECT coalesce({record_hash}, {keyed_hash_sql(f'{quote_literal(path.name)} || CAST(row_number() OVER () AS VARCHAR)', '$key')}) "
                    f"FROM lake_file WHERE {hit}",
                    {"key": key},
                ).fetchall()
                if not marks:
                    con.unregister("lake_file")
                    continue
                kept_sql = f"SELECT * FROM lake_file WHERE NOT ({hit})"
                kept = fetch_arrow(con, kept_sql, {"key": key} if "$key" in kept_sql else {})
                con.unregister("lake_file")
                write_table(path, kept.cast(table.schema))
                erased_rows += [str(m[0]) for m in marks]
                dropped += len(marks)
        finally:
            con.close()
        if erased_rows:
            _record_erased(lake_dir, source_dir, dataset, partition, source, entity, erased_rows)
    return dropped


def _record_erased(
    lake_dir: LakePath,
    source_dir: str,
    dataset: str,
    partition: str,
    source: str,
    entity: str,
    hashes: list[str],
) -> None:
    """Add the dropped rows to the partition's extract quarantine (rule ``erased``, hashes only)."""
    path = partition_dir(lake_dir, "quarantine", source_dir, dataset, partition) / ERASED_FILE
    record_ids = {f"erased:{h[:20]}" for h in hashes}
    if path.exists():
        record_ids |= set(read_table(path, columns=["record_id"]).column("record_id").to_pylist())
    rows = sorted(record_ids)
    table = pa.table(
        {
            "source": [source] * len(rows),
            "entity": [entity] * len(rows),
            "record_id": rows,
            "record": [None] * len(rows),
            "rule": [ERASED_RULE] * len(rows),
            "reason": ["erased on request: the source still holds the record (ops.erasure_suppression)"]
            * len(rows),
        },
        schema=QUARANTINE,
    )
    write_table(path, table, compression="snappy")
