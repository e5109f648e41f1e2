"""Staging contacts: the project's staging against the same mapping as plain DuckDB SQL, in one run.

Generates ``--contacts`` Salesforce contacts (and their accounts) with the sandbox's people generator
(``crm_pipelines_sandbox.people.generate_people``) as raw lake Parquet, the way the extract lands them:
text columns, phones in international and national formats, countries as codes and as names, and a
small deterministic share of dirt for the quality rules (bad e-mails, unknown countries, rows without
e-mail or last name, a key written twice, deleted rows). Then, after one untimed warm-up of both on a
small lake (importing GX and building its context take seconds once per process), each round times:

- ``stage_entity("contact")``: what the staging asset calls. The declared mapping as DuckDB SQL with the
  normalising UDFs (vectorised Arrow UDFs, each distinct value once), newest row per key, soft deletes,
  the quality suite (its rules as DuckDB SQL predicates, the verdicts as GX validation results) and
  the valid / quarantine Parquet files.
- plain SQL: the same planned mapping SQL with the UDFs replaced by SQL macros (no Python), newest row
  per key and deletes, written to Parquet; no quality suite.

and prints a markdown table with both, their ratio (median over rounds) and the row counts.

    uv run python bench/staging.py --contacts 100000 --repeat 3
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pycountry

from crm_pipelines.lake import partition_dir, scan_parquet
from crm_pipelines.mapping import normalize
from crm_pipelines.mapping.build import plan_entity
from crm_pipelines.mapping.spec import load_mappings
from crm_pipelines.mapping.stage import quality_quarantine_folder, stage_entity, staging_folder
from crm_pipelines.sql import quote_literal
from crm_pipelines_sandbox.people import generate_people

DAY = "2026-11-25"
ENTITY = "contact"
LOG = logging.getLogger("bench.staging")
LOG.setLevel(logging.ERROR)  # not the skipped sources of other systems

# The normalisers of crm_pipelines/mapping/normalize.py written as SQL: what a plain-SQL mapping does.
PLAIN_MACROS = (
    "CREATE MACRO norm_text(x) AS nullif(trim(regexp_replace(x, '\\s+', ' ', 'g')), '')",
    "CREATE MACRO norm_email(x) AS nullif(lower(replace(trim(x, '<>'), 'mailto:', '')), '')",
    "CREATE MACRO norm_domain(x) AS nullif(split_part(regexp_replace(lower(x), "
    "'^([a-z][a-z0-9+.-]*://)?(www[0-9]?\\.)?', ''), '/', 1), '')",
    "CREATE MACRO norm_country(x) AS "
    "coalesce((SELECT code FROM country_names WHERE name = upper(x)), upper(x))",
    "CREATE MACRO norm_phone(x, c) AS CASE WHEN x IS NULL THEN NULL "
    "WHEN starts_with(x, '+') THEN '+' || regexp_replace(x, '[^0-9]', '', 'g') "
    "WHEN starts_with(x, '00') THEN '+' || regexp_replace(x[3:], '[^0-9]', '', 'g') "
    "ELSE '?' || regexp_replace(x, '[^0-9]', '', 'g') END",
)


def write_lake(lake: Path, contacts: int) -> None:
    """Raw Salesforce contacts and accounts for ``DAY``, as text columns."""
    people = generate_people(contacts, seed=7)
    names = {c.alpha_2: c.name for c in pycountry.countries}
    rows = people.contacts.to_pylist()
    out: list[dict[str, str | None]] = []
    for i, row in enumerate(rows):
        country = row["mailing_country"] or row["country"]
        if country and i % 3 == 1:
            country = names.get(str(country), country)  # 'Germany' as well as 'DE'
        email = row["email"]
        last = row["last_name"]
        if i % 250 == 3:
            email = "not-an-email"
        if i % 400 == 5:
            country = "Atlantis"
        if i % 500 == 7:
            email, last = None, None
        out.append(
            {
                "Id": f"C{i - 1 if i % 1000 == 9 else i}",  # now and then a key twice
                "AccountId": str(row["account_record_id"]).split(":", 1)[1],
                "FirstName": row["first_name"],
                "LastName": last,
                "Email": email,
                "Phone": row["phone"],
                "Title": row["title"],
                "MailingCountry": country,
                "MailingStreet": row["mailing_street"],
                "MailingCity": row["mailing_city"],
                "MailingPostalCode": row["mailing_postal_code"],
                "Birthdate": row["birth_date"],
                "SystemModstamp": row["updated_at"].isoformat(),
                "IsDeleted": "true" if i % 200 == 11 else "false",
                "_deleted": "true" if i % 200 == 11 else "false",
            }
        )
    # One account per company: the three systems' copies of it share the generator's source_id.
    accounts = list(
        {
            str(a["source_id"]): {"Id": str(a["source_id"]), "BillingCountry": a["country"]}
            for a in people.accounts.to_pylist()
        }.values()
    )
    for dataset, table in (("contacts", out), ("accounts", accounts)):
        folder = partition_dir(lake, "raw", "salesforce", dataset, DAY)
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(table), folder / "part-0000.parquet")


def run_project(lake: Path) -> tuple[float, int, int]:
    """The project's staging; returns seconds, valid rows and quarantined rows."""
    # Every round starts as a nightly run does, in a fresh process: the normalisers' caches empty.
    for value in vars(normalize).values():
        if callable(getattr(value, "cache_clear", None)):
            value.cache_clear()
    start = time.perf_counter()
    outcomes = stage_entity(entity=ENTITY, lake_dir=lake, partition=DAY, log=LOG)
    seconds = time.perf_counter() - start
    valid = pq.read_metadata(staging_folder(lake, ENTITY, DAY) / "salesforce.parquet").num_rows
    [salesforce] = [o for o in outcomes if o.source == "salesforce"]
    assert valid == salesforce.rows_valid
    quarantine = quality_quarantine_folder(lake, ENTITY, DAY) / "salesforce.parquet"
    return seconds, valid, salesforce.rows_quarantined if quarantine.exists() else 0


def run_plain_sql(lake: Path) -> tuple[float, int]:
    """The same mapping as plain DuckDB SQL, no UDFs, no suite; returns seconds and rows written."""
    import duckdb

    start = time.perf_counter()
    [planned] = [
        p for p in plan_entity(entity=ENTITY, mappings=load_mappings(), lake_dir=lake, partition=DAY) if p.sql
    ]
    assert planned.sql is not None
    out = Path(tempfile.mkdtemp(dir=lake))
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET preserve_insertion_order = false")
        names = [(c.name.upper(), c.alpha_2) for c in pycountry.countries]
        names += [(c.alpha_3, c.alpha_2) for c in pycountry.countries]
        con.execute("CREATE TABLE country_names (name VARCHAR, code VARCHAR)")
        con.executemany("INSERT INTO country_names VALUES (?, ?)", names)
        for macro in PLAIN_MACROS:
            con.execute(macro)
        mapped = out / "mapped.parquet"
        con.execute(f"COPY ({planned.sql}) TO {quote_literal(str(mapped))} (FORMAT parquet)")
        newest = (
            f"SELECT * FROM {scan_parquet(mapped)} "
            "QUALIFY row_number() OVER (PARTITION BY record_id ORDER BY updated_at DESC NULLS LAST, _raw) = 1"
        )
        con.execute(
            f"COPY (SELECT record_id, source, source_id FROM ({newest}) WHERE _deleted) "
            f"TO {quote_literal(str(out / 'deleted.parquet'))} (FORMAT parquet)"
        )
        staged = out / "staged.parquet"
        con.execute(
            f"COPY (SELECT * EXCLUDE (_deleted) FROM ({newest}) WHERE NOT _deleted) "
            f"TO {quote_literal(str(staged))} (FORMAT parquet)"
        )
        seconds = time.perf_counter() - start
        rows = pq.read_metadata(staged).num_rows
    finally:
        con.close()
        shutil.rmtree(out, ignore_errors=True)
    return seconds, rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (project and plain SQL each)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="crm-bench-staging-"))
    try:
        warm = root / "warm"
        write_lake(warm, 1_000)
        run_project(warm)
        run_plain_sql(warm)
        lake = root / "lake"
        started = time.perf_counter()
        write_lake(lake, args.contacts)
        print(f"generated {args.contacts:,} raw contacts in {time.perf_counter() - started:.1f} s\n")
        project: list[float] = []
        plain: list[float] = []
        for _ in range(args.repeat):
            seconds, valid, quarantined = run_project(lake)
            project.append(seconds)
            plain_seconds, plain_rows = run_plain_sql(lake)
            plain.append(plain_seconds)
        ratios = [p / q for p, q in zip(project, plain, strict=True)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"`uv run python bench/staging.py --contacts {args.contacts} --repeat {args.repeat}`\n")
    print("| staging contacts | seconds (median) | rows/s | rows out |")
    print("| --- | --- | --- | --- |")
    med_project, med_plain = statistics.median(project), statistics.median(plain)
    print(
        f"| project: stage_entity (UDFs + quality suite) | {med_project:.2f} | "
        f"{args.contacts / med_project:,.0f} | {valid:,} valid + {quarantined:,} quarantined |"
    )
    print(
        f"| plain DuckDB SQL (same mapping, no UDFs, no suite) | {med_plain:.2f} | "
        f"{args.contacts / med_plain:,.0f} | {plain_rows:,} |"
    )
    print(
        f"\nratio project / plain SQL: {statistics.median(ratios):.2f}x "
        f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
    )


if __name__ == "__main__":
    main()
