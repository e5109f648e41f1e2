"""CPU per statement of the core and mart loads: a full night, then a night with 1% of the records changed.

    .venv/bin/python bench/core_marts.py --contacts 100000 --changed 0.01

Writes CRM-shaped canonical records (``--contacts`` contacts, a fifth as many accounts, half of them
also in the ERP under the same VAT number; as many opportunities, orders, invoices, payments and leads
as accounts times two, and cases) into a lake, resolves identity on them as the nightly job does,
then loads core (``load_identity``, ``load_fact``, ``load_order_links``) and builds every mart into a
DuckDB warehouse, night D in full. Night D+1 edits ``--changed`` of every entity's records, adds and
deletes a few, resolves again against the ids the warehouse holds and loads again.

Every statement the loads run is timed with ``time.process_time`` (CPU of every DuckDB thread) and
grouped by what it does; each night prints its costliest statements and the CPU per step. With
``--backend postgresql`` the warehouse is a PostgreSQL server started from this machine's
``initdb``/``pg_ctl`` and each step's CPU includes this process's share of publishing the load (the
server's own CPU is not counted); "(commit, close)" is then mostly the publish.
"""

from __future__ import annotations

import argparse
import logging
import re
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from crm_pipelines import canonical
from crm_pipelines.identity import parse_match_rules, resolve_entities
from crm_pipelines.identity.golden_ids import previous_ids
from crm_pipelines.identity.outputs import identity_files
from crm_pipelines.mapping.stage import staging_folder
from crm_pipelines.sql import duckdb_type
from crm_pipelines.warehouse import postgres
from crm_pipelines.warehouse.connection import Warehouse
from crm_pipelines.warehouse.core import load_fact, load_identity, load_order_links
from crm_pipelines.warehouse.marts import MARTS, build_mart
from crm_pipelines.warehouse.postgres import PostgresWarehouse
from crm_pipelines_sandbox.postgres_server import running_postgres

RULES = parse_match_rules(
    text="""
    account:
      rules:
        - name: same_vat
          block: [vat_number]
    contact:
      rules:
        - name: same_email
          block: [email]
    """
)


class Timed:
    """A DuckDB connection whose ``execute`` calls are timed (process CPU) and grouped by statement."""

    def __init__(self, con: duckdb.DuckDBPyConnection, totals: dict[str, list[float]], step: str) -> None:
        self._con = con
        self._totals = totals
        self._step = step

    def execute(self, sql: str, *args: Any) -> Any:
        started = time.process_time()
        try:
            return self._con.execute(sql, *args)
        finally:
            entry = self._totals[f"{self._step}: {label(sql)}"]
            entry[0] += time.process_time() - started
            entry[1] += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def label(sql: str) -> str:
    """The statement's verb and target, short enough for a table row."""
    text = re.sub(r"\s+", " ", sql).strip()
    match = re.match(
        r"((?:CREATE (?:OR REPLACE )?(?:TEMP )?(?:TABLE|VIEW)(?: IF NOT EXISTS)?|INSERT (?:OR REPLACE )?INTO|"
        r"DELETE FROM|UPDATE|COMMENT ON COLUMN|ALTER TABLE|DROP TABLE|DESCRIBE|SELECT)\s+[\w.\"]+)",
        text,
        re.I,
    )
    return match.group(1)[:70] if match else text[:50]


def _column(name: str, dtype: pa.DataType, entity: str, version: str) -> str:
    """A SQL expression over row number ``i`` for one canonical column."""
    if name == "updated_at":
        return f"TIMESTAMPTZ '2026-11-01 00:00:00+00' + to_seconds(i) + INTERVAL ({version}) DAY"
    if pa.types.is_timestamp(dtype):
        return "TIMESTAMPTZ '2026-10-01 00:00:00+00' + to_seconds(i * 7)"
    if pa.types.is_date32(dtype):
        return "DATE '2026-10-01' + CAST(i % 60 AS INTEGER)"
    if pa.types.is_decimal(dtype):
        return f"CAST((i % 100000) + {version} AS DECIMAL(18, 2))"
    if pa.types.is_integer(dtype):
        return "CAST(1 + i % 9 AS INTEGER)"
    if pa.types.is_boolean(dtype):
        return "i % 3 = 0"
    return f"'{entity[:3]}-{name[:6]}-' || (i % 997) || CASE WHEN {version} > 0 THEN '-v' || {version} ELSE '' END"


def write_entity(
    lake: Path, night: str, entity: str, rows: int, changed: float, added: int, *, overrides: dict[str, str]
) -> None:
    """``rows`` canonical records of ``entity`` (every 1/changed-th edited, every 997th gone, ``added`` new)."""
    schema: pa.Schema = getattr(canonical, entity.upper())
    step = max(1, round(1 / changed)) if changed else 0
    version = f"(CASE WHEN {step} > 0 AND i % {step} = 1 THEN 1 ELSE 0 END)" if step else "0"
    exprs = []
    for field in schema:
        expr = overrides.get(field.name) or _column(field.name, field.type, entity, version)
        exprs.append(f"CAST({expr} AS {duckdb_type(field.type)}) AS {field.name}")
    keep = f"WHERE i % 997 <> 5 AND i < {rows + added}" if changed else f"WHERE i < {rows}"
    folder = staging_folder(lake, entity, night)
    folder.mkdir(parents=True, exist_ok=True)
    duckdb.execute(
        f"COPY (SELECT {', '.join(exprs)} FROM range({rows + added}) r(i) {keep}) "
        f"TO '{folder}/part-0.parquet' (FORMAT parquet)"
    )


def write_night(lake: Path, night: str, contacts: int, changed: float) -> None:
    accounts = contacts // 5
    facts = accounts * 2
    added = max(1, round(contacts * changed / 10)) if changed else 0
    # Accounts: salesforce:S<i>; every even one also in the ERP (erp:K<i>) under the same VAT number.
    write_entity(
        lake,
        night,
        "account",
        accounts * 3 // 2,
        changed,
        added,
        overrides={
            "record_id": f"CASE WHEN i < {accounts} THEN 'salesforce:S' || i ELSE 'erp:K' || ((i - {accounts}) * 2) END",
            "source": f"CASE WHEN i < {accounts} THEN 'salesforce' ELSE 'erp' END",
            "source_id": f"CASE WHEN i < {accounts} THEN 'S' || i ELSE 'K' || ((i - {accounts}) * 2) END",
            "vat_number": f"'DE' || CASE WHEN i < {accounts} THEN i ELSE (i - {accounts}) * 2 END",
        },
    )
    # Contacts: hubspot:<i> at salesforce:S<i % accounts>; every tenth twice (salesforce, same e-mail).
    write_entity(
        lake,
        night,
        "contact",
        contacts * 11 // 10,
        changed,
        added,
        overrides={
            "record_id": f"CASE WHEN i < {contacts} THEN 'hubspot:' || i ELSE 'salesforce:C' || ((i - {contacts}) * 10) END",
            "source": f"CASE WHEN i < {contacts} THEN 'hubspot' ELSE 'salesforce' END",
            "source_id": "CAST(i AS VARCHAR)",
            "email": f"'p' || CASE WHEN i < {contacts} THEN i ELSE (i - {contacts}) * 10 END || '@example.com'",
            "account_record_id": f"'salesforce:S' || (i % {accounts})",
        },
    )
    refs = {
        "account_record_id": f"'salesforce:S' || (i % {accounts})",
        "contact_record_id": f"'hubspot:' || (i % {contacts})",
    }
    for entity in canonical.FACT_ENTITIES:
        overrides = {
            "record_id": f"'{entity}:' || i",
            "source": f"'{'erp' if entity in ('sales_order', 'invoice', 'payment') else 'salesforce'}'",
            "source_id": "CAST(i AS VARCHAR)",
            "invoice_number": "'INV' || i",
            "crm_opportunity_ref": "'opportunity:' || i",
            "mirrors_record_id": "NULL",
            **refs,
        }
        write_entity(lake, night, entity, facts, changed, added, overrides=overrides)


def resolve(lake: Path, warehouse: Warehouse, night: str) -> None:
    with warehouse.connect(read_only=True) as wh:
        previous = previous_ids(wh)
    resolve_entities(
        con=duckdb.connect(),
        accounts_glob=str(staging_folder(lake, "account", night) / "*.parquet"),
        contacts_glob=str(staging_folder(lake, "contact", night) / "*.parquet"),
        out_dir=identity_files(lake, night).folder,
        rules=RULES,
        previous=previous,
    )


@contextmanager
def step(
    warehouse: Warehouse, totals: dict[str, list[float]], steps: dict[str, float], name: str
) -> Iterator[Any]:
    started = time.process_time()
    with warehouse.transaction() as con:
        opened = time.process_time()
        yield Timed(con, totals, name)
        body = time.process_time()
    ended = time.process_time()
    steps[name] = ended - started
    totals[f"{name}: (connect)"][0] += opened - started
    totals[f"{name}: (commit, close)"][0] += ended - body


def load_night(
    lake: Path, warehouse: Warehouse, night: str
) -> tuple[dict[str, list[float]], dict[str, float]]:
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    steps: dict[str, float] = {}
    log = logging.getLogger("bench")
    with step(warehouse, totals, steps, "core.identity") as con:
        counts = load_identity(con, lake_dir=lake, partition=night, run_id=f"run-{night}", log=log)
    print(f"  core.identity counts: {counts}")
    for entity in canonical.FACT_ENTITIES:
        with step(warehouse, totals, steps, f"core.{entity}") as con:
            load_fact(con, lake_dir=lake, entity=entity, partition=night, run_id=f"run-{night}")
    with step(warehouse, totals, steps, "core.order_links") as con:
        print(f"  core.order_links counts: {load_order_links(con)}")
    for mart in MARTS:
        with step(warehouse, totals, steps, f"marts.{mart.name}") as con:
            result = build_mart(con, mart)
        print(f"  marts.{mart.name}: {result}")
    return totals, steps


def report(title: str, totals: dict[str, list[float]], steps: dict[str, float]) -> None:
    core = sum(v for k, v in steps.items() if k.startswith("core."))
    marts = sum(v for k, v in steps.items() if k.startswith("marts."))
    print(f"\n{title}: core {core:.2f} s CPU, marts {marts:.2f} s CPU")
    for name, cpu in steps.items():
        print(f"  {name:32} {cpu:7.2f} s")
    print("  costliest statements (CPU s, calls):")
    for key, (cpu, calls) in sorted(totals.items(), key=lambda kv: -kv[1][0])[:25]:
        print(f"    {cpu:7.3f} {calls:4d}  {key}")


PUBLISHED: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])


def time_publish() -> None:
    """Time the publish's fingerprints, merges and rebuilds per relation (process CPU)."""
    for name in ("fingerprint", "_merge", "_rebuild"):
        original = getattr(postgres, name)

        def timed(con: Any, *args: Any, _original: Any = original, _name: str = name) -> Any:
            started = time.process_time()
            try:
                return _original(con, *args)
            finally:
                relation = next(a for a in args if isinstance(a, postgres.Relation))
                entry = PUBLISHED[f"publish {_name.strip('_')} {relation.label}"]
                entry[0] += time.process_time() - started
                entry[1] += 1

        setattr(postgres, name, timed)


def report_publish(title: str) -> None:
    if not PUBLISHED:
        return
    print(f"  {title}: costliest publish calls (CPU s, calls):")
    for key, (cpu, calls) in sorted(PUBLISHED.items(), key=lambda kv: -kv[1][0])[:15]:
        print(f"    {cpu:7.3f} {calls:4d}  {key}")
    PUBLISHED.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--backend", choices=("duckdb", "postgresql"), default="duckdb")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="core-marts-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        lake = root / "lake"
        warehouse = Warehouse(f"duckdb:///{root}/warehouse.duckdb")
        if args.backend == "postgresql":
            server = stack.enter_context(running_postgres(database="warehouse", settings=("fsync=off",)))
            warehouse = PostgresWarehouse(server.url(), working_copy=root / "warehouse.work.duckdb")
            time_publish()
        for night, changed in (("2026-11-25", 0.0), ("2026-11-26", args.changed)):
            write_night(lake, night, args.contacts, changed)
            resolve(lake, warehouse, night)
            totals, steps = load_night(lake, warehouse, night)
            report(f"night {night} ({changed:.0%} changed)", totals, steps)
            report_publish(f"night {night}")


if __name__ == "__main__":
    main()
