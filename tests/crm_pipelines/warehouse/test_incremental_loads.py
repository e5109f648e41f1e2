"""Core and the marts merge only what changed, and end exactly as a full rebuild would.

Two warehouses on the same backend load the same two nights from the same lake: the incremental one
as the nightly job does (golden records, crosswalk, history, order links and marts merged by key); the
reference one rebuilds every mart from nothing and versions every golden record on each night (the
behaviour before the merge). Night D+1 renames a company, adds one, deletes one, merges two companies
and two people into one, edits an opportunity and an order and adds an order. Every core, mart and
analyst table must hold the same rows in both, the counts must name only the changed keys, and a
re-run of D+1 must change nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crm_pipelines import canonical
from crm_pipelines.identity import resolve_entities
from crm_pipelines.identity.golden_ids import previous_ids
from crm_pipelines.identity.outputs import identity_files
from crm_pipelines.mapping.stage import staging_folder
from crm_pipelines.sql import qualified, quote_ident
from crm_pipelines.warehouse import core as core_module
from crm_pipelines.warehouse import written
from crm_pipelines.warehouse.connection import Warehouse, open_warehouse
from crm_pipelines.warehouse.core import load_fact, load_identity, load_order_links
from crm_pipelines.warehouse.history import load_golden_history
from crm_pipelines.warehouse.marts import MARTS, merge_mart
from crm_pipelines.warehouse.postgres import PostgresWarehouse
from crm_pipelines_sandbox.postgres_server import PostgresServer
from tests.crm_pipelines.match_by_key import RULES

T0 = datetime(2026, 3, 1, tzinfo=UTC)
D, D1 = "2026-03-01", "2026-03-02"
# Compared in every table but these: when a load ran (now()) and PostgreSQL's row key.
SKIPPED = {"loaded_at", "recorded_at", "_row_key"}


def account(record_id: str, vat: str, name: str, **fields: Any) -> dict[str, Any]:
    source, source_id = record_id.split(":")
    return {"record_id": record_id, "source": source, "source_id": source_id, "name": name,
            "vat_number": vat, "updated_at": T0, **fields}  # fmt: skip


def contact(record_id: str, email: str, account_record_id: str, **fields: Any) -> dict[str, Any]:
    source, source_id = record_id.split(":")
    return {"record_id": record_id, "source": source, "source_id": source_id, "first_name": "Pat",
            "last_name": "Lee", "email": email, "title": "Buyer", "account_record_id": account_record_id,
            "updated_at": T0, **fields}  # fmt: skip


def opportunity(record_id: str, account_record_id: str, amount: str, **fields: Any) -> dict[str, Any]:
    source, source_id = record_id.split(":")
    return {"record_id": record_id, "source": source, "source_id": source_id,
            "account_record_id": account_record_id, "name": "Rollout", "stage": "proposal",
            "amount": Decimal(amount), "currency": "EUR", "updated_at": T0, **fields}  # fmt: skip


def order(record_id: str, account_record_id: str, ref: str | None, **fields: Any) -> dict[str, Any]:
    source, source_id = record_id.split(":")
    return {"record_id": record_id, "source": source, "source_id": source_id, "order_number": source_id,
            "account_record_id": account_record_id, "currency": "EUR", "status": "open",
            "amount": Decimal("100.00"), "crm_opportunity_ref": ref, "updated_at": T0, **fields}  # fmt: skip


NIGHT_D: dict[str, list[dict[str, Any]]] = {
    "account": [
        account("erp:K1", "DE1", "Acme GmbH"),
        account("salesforce:S1", "DE1", "ACME", industry="Manufacturing"),
        account("salesforce:S2", "DE2", "Beta AG"),
        account("erp:K2", "DE2-X", "Beta AG (ERP)"),  # a typo keeps it apart from Beta until D+1
        account("salesforce:S3", "DE3", "Gamma KG"),
        *(account(f"salesforce:Q{i}", f"DE9{i}", f"Quiet {i}") for i in range(5)),
    ],
    "contact": [
        contact("salesforce:C1", "pat@acme.de", "salesforce:S1"),
        contact("salesforce:C2", "kim@beta.de", "salesforce:S2", first_name="Kim"),
        contact("hubspot:H2", "kim.b@beta.de", "salesforce:S2", first_name="Kim"),
        contact("salesforce:C3", "lou@gamma.de", "salesforce:S3", first_name="Lou"),
        contact("salesforce:C5", "sam@quiet.de", "salesforce:Q0", first_name="Sam"),
        contact(
            "salesforce:C6", "sam@quiet.de", "salesforce:Q0", first_name="Sam", updated_at=T0 - timedelta(1)
        ),
        *(contact(f"salesforce:QC{i}", f"q{i}@quiet.de", f"salesforce:Q{i}") for i in range(5)),
    ],
    "opportunity": [
        opportunity("salesforce:006A", "salesforce:S1", "5000"),
        opportunity("salesforce:006B", "salesforce:S2", "700"),
        *(opportunity(f"salesforce:006Q{i}", f"salesforce:Q{i}", "10") for i in range(5)),
    ],
    "sales_order": [
        order("erp:O1", "erp:K1", "006A"),
        order("erp:O2", "erp:K2", "opp 006B"),
        *(order(f"erp:OQ{i}", f"salesforce:Q{i}", None) for i in range(5)),
    ],
}
NIGHT_D1: dict[str, list[dict[str, Any]]] = {
    "account": [
        account("erp:K1", "DE1", "Acme Holding GmbH", updated_at=T0 + timedelta(days=1)),  # renamed
        account("salesforce:S1", "DE1", "ACME", industry="Manufacturing"),
        account("salesforce:S2", "DE2", "Beta AG"),
        account("erp:K2", "DE2", "Beta AG (ERP)", updated_at=T0 + timedelta(days=1)),  # merges into Beta
        # Gamma is gone
        account("salesforce:S4", "DE4", "Delta SE"),  # new
        *(account(f"salesforce:Q{i}", f"DE9{i}", f"Quiet {i}") for i in range(5)),
    ],
    "contact": [
        contact("salesforce:C1", "pat@acme.de", "salesforce:S1", title="Head of Purchasing"),  # edited
        contact("salesforce:C2", "kim@beta.de", "salesforce:S2", first_name="Kim"),
        contact("hubspot:H2", "kim@beta.de", "salesforce:S2", first_name="Kim"),  # merges into C2
        contact("salesforce:C4", "dee@delta.de", "salesforce:S4", first_name="Dee"),  # new
        # Sam's two records swap ages: the same golden row, but every field now from C6.
        contact(
            "salesforce:C5", "sam@quiet.de", "salesforce:Q0", first_name="Sam", updated_at=T0 - timedelta(1)
        ),
        contact("salesforce:C6", "sam@quiet.de", "salesforce:Q0", first_name="Sam"),
        *(contact(f"salesforce:QC{i}", f"q{i}@quiet.de", f"salesforce:Q{i}") for i in range(5)),
    ],
    "opportunity": [
        opportunity("salesforce:006A", "salesforce:S1", "6000", updated_at=T0 + timedelta(days=1)),
        opportunity("salesforce:006B", "salesforce:S2", "700"),
        *(opportunity(f"salesforce:006Q{i}", f"salesforce:Q{i}", "10") for i in range(5)),
    ],
    "sales_order": [
        order("erp:O1", "erp:K1", "006A"),
        order("erp:O2", "erp:K2", "006A", updated_at=T0 + timedelta(days=1)),  # now points to 006A
        order("erp:O3", "salesforce:S4", "salesforce:006B"),  # new
        *(order(f"erp:OQ{i}", f"salesforce:Q{i}", None) for i in range(5)),
    ],
}


class Lake:
    """A lake holding each night's staged records and identity outputs, resolved once per night."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def stage(self, night: str, records: dict[str, list[dict[str, Any]]]) -> None:
        for entity, rows in records.items():
            folder = staging_folder(self.root, entity, night)
            folder.mkdir(parents=True, exist_ok=True)
            schema = getattr(canonical, entity.upper())
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "part-0.parquet")

    def resolve(self, night: str, warehouse: Warehouse) -> None:
        with warehouse.connect(read_only=True) as wh:
            previous = previous_ids(wh)
        resolve_entities(
            con=duckdb.connect(),
            accounts_glob=str(staging_folder(self.root, "account", night) / "*.parquet"),
            contacts_glob=str(staging_folder(self.root, "contact", night) / "*.parquet"),
            out_dir=identity_files(self.root, night).folder,
            rules=RULES,
            previous=previous,
        )


UNKNOWN = "a statement the query log cannot place"


class Written:
    """The tables the loads' statements wrote (from DuckDB's query log, as the PostgreSQL publish reads it)."""

    def __init__(self) -> None:
        self.tables: set[str] = set()

    @contextmanager
    def transaction(self, warehouse: Warehouse) -> Iterator[duckdb.DuckDBPyConnection]:
        with warehouse.transaction() as con:
            written.enable(con)
            yield con
            tables = written.written_tables(con)
            self.tables |= {UNKNOWN} if tables is None else tables  # then PostgreSQL checks every table


def load_night(lake: Lake, warehouse: Warehouse, night: str, log: Written | None = None) -> dict[str, Any]:
    """The nightly loads, one transaction each, as the assets run them; every step's counts."""
    log = log or Written()
    counts: dict[str, Any] = {}
    with log.transaction(warehouse) as con:
        counts["identity"] = load_identity(
            con, lake_dir=lake.root, partition=night, run_id=f"run-{night}", log=logging.getLogger(__name__)
        )
    for entity in ("opportunity", "sales_order"):
        with log.transaction(warehouse) as con:
            load_fact(con, lake_dir=lake.root, entity=entity, partition=night, run_id=f"run-{night}")
    with log.transaction(warehouse) as con:
        counts["order_links"] = load_order_links(con)
    for mart in MARTS:
        if all(d in {"identity", "opportunity", "sales_order", "order_links"} for d in mart.deps):
            with log.transaction(warehouse) as con:
                counts[mart.name] = merge_mart(con, mart)
    return counts


def full_rebuild(warehouse: Warehouse, lake: Lake, night: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference: every golden record versioned again, every mart and masked table rebuilt."""

    def every_record(con: duckdb.DuckDBPyConnection, **kwargs: Any) -> dict[str, int]:
        return load_golden_history(con, **{**kwargs, "changed": None})

    with monkeypatch.context() as patch:
        patch.setattr(core_module, "load_golden_history", every_record)
        with warehouse.transaction() as con:
            for schema in ("marts", "analyst"):
                for mart in MARTS:
                    con.execute(f"DROP TABLE IF EXISTS {qualified(schema, mart.name)}")
            con.execute("DROP TABLE IF EXISTS core.order_links")
        load_night(lake, warehouse, night)


def tables(warehouse: Warehouse) -> dict[str, list[tuple[Any, ...]]]:
    """Every core, mart and analyst table's rows (sorted; load times and row keys left out)."""
    with warehouse.read() as reader:
        names = reader.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema IN ('core', 'marts', 'analyst') AND table_type = 'BASE TABLE'"
        ).fetchall()
        out = {}
        for schema, table in names:
            columns = [
                str(c)
                for (c,) in reader.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                    [schema, table],
                ).fetchall()
                if c not in SKIPPED
            ]
            select = ", ".join(quote_ident(c) for c in columns)
            rows = reader.execute(f"SELECT {select} FROM {qualified(schema, table)}").fetchall()
            out[f"{schema}.{table}"] = sorted((tuple(r) for r in rows), key=repr)
    return out


def second_warehouse(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Warehouse:
    if backend == "duckdb":
        return open_warehouse(f"duckdb:///{tmp_path}/reference.duckdb")
    database: PostgresServer = request.getfixturevalue("warehouse_database")  # a second, empty one
    return PostgresWarehouse(database.url(), working_copy=tmp_path / "reference.work.duckdb")


@pytest.fixture
def nights(
    backend: str, warehouse_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> tuple[Lake, Warehouse, Warehouse]:
    """Night D loaded into both warehouses; D+1 staged and resolved against what they hold."""
    lake = Lake(tmp_path / "lake")
    incremental = open_warehouse(warehouse_url)
    reference = second_warehouse(backend, tmp_path, request)
    lake.stage(D, NIGHT_D)
    lake.resolve(D, incremental)
    for warehouse in (incremental, reference):
        load_night(lake, warehouse, D)
    lake.stage(D1, NIGHT_D1)
    lake.resolve(D1, incremental)
    return lake, incremental, reference


def test_the_merged_night_equals_a_full_rebuild_and_writes_only_the_changed_keys(
    nights: tuple[Lake, Warehouse, Warehouse], monkeypatch: pytest.MonkeyPatch
) -> None:
    lake, incremental, reference = nights

    counts = load_night(lake, incremental, D1)
    full_rebuild(reference, lake, D1, monkeypatch)

    got, want = tables(incremental), tables(reference)
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], name
    assert len(want["marts.dim_account"]) == 8  # Acme, Beta (with its ERP record), Delta, five quiet ones
    assert len(want["marts.dim_account_history"]) == 12  # Acme renamed: +1; Beta changed: +1; Delta: +1
    # Only what changed was written. Accounts: Acme renamed, Beta's two records together under one of
    # their ids (the other merged away), Gamma gone, Delta new; the five quiet ones untouched.
    identity = counts["identity"]
    assert (identity["golden_account_inserted"], identity["golden_account_updated"]) == (1, 2)
    assert identity["golden_account_deleted"] == 2  # Gamma, and Beta's id merged away
    assert identity["golden_account"] == 8
    # Contacts: Pat promoted, Kim's two records together (one id merged away), Lou gone, Dee new.
    assert (identity["golden_contact_inserted"], identity["golden_contact_updated"]) == (1, 2)
    assert identity["golden_contact_deleted"] == 2
    # Crosswalk: Beta's and Kim's records under their surviving ids (the survivor's own row changes too:
    # matched by a rule now), Sam's survivor swapped, Gamma's and Lou's records gone, Delta's and Dee's new.
    assert (identity["xref_identity_inserted"], identity["xref_identity_updated"]) == (2, 5)
    assert identity["xref_identity_deleted"] == 2
    assert identity["account_versions_opened"] == 3
    # Pat, Kim, Dee, and Sam: whose golden row was not written, but whose fields another record supplies.
    assert identity["contact_versions_opened"] == 4
    assert counts["order_links"]["orders_inserted"] == 1  # O3
    assert counts["order_links"]["orders_updated"] == 1  # O2 now points to 006A
    assert counts["order_links"]["orders_deleted"] == 0
    dim_account = counts["dim_account"]
    assert (dim_account.inserted, dim_account.updated, dim_account.deleted) == (1, 2, 2)
    assert not dim_account.rebuilt
    fact_sales_order = counts["fact_sales_order"]
    # O3 new; O2 links to 006A and its account Beta (ERP) merged into Beta; O1 and the quiet ones untouched.
    assert (fact_sales_order.inserted, fact_sales_order.updated, fact_sales_order.deleted) == (1, 1, 0)
    fact_opportunity = counts["fact_opportunity"]
    # 006A's amount; 006B's account, whose id merged away. The five quiet ones untouched.
    assert (fact_opportunity.inserted, fact_opportunity.updated, fact_opportunity.deleted) == (0, 2, 0)


def test_a_rerun_of_the_merged_night_writes_nothing(nights: tuple[Lake, Warehouse, Warehouse]) -> None:
    lake, warehouse, _ = nights
    load_night(lake, warehouse, D1)
    before = tables(warehouse)

    log = Written()
    counts = load_night(lake, warehouse, D1, log)

    # No statement wrote a core table the merge keeps, a mart or a masked table: PostgreSQL gets nothing.
    kept = {
        "core.golden_account", "core.golden_contact", "core.xref_identity", "core.golden_account_history",
        "core.golden_contact_history", "core.golden_field_lineage", "core.golden_id_history",
        "core.golden_id_current", "core.order_links",
    }  # fmt: skip
    assert log.tables & (kept | {UNKNOWN}) == set()
    assert {t for t in log.tables if t.startswith(("marts.", "analyst."))} == set()
    with warehouse.read() as reader:
        loaded_at = reader.execute(
            "SELECT count(DISTINCT loaded_at) FROM core.golden_account_history"
        ).fetchall()
    assert tables(warehouse) == before
    assert loaded_at == [(2,)]  # the versions of night D and of the first load of D+1, kept as they were
    identity = counts["identity"]
    for table in ("golden_account", "golden_contact", "xref_identity"):
        assert [identity[f"{table}_{c}"] for c in ("inserted", "updated", "deleted")] == [0, 0, 0]
    assert identity["account_versions_opened"] == 3  # the night's versions, still there, not rewritten
    for mart in MARTS:
        if mart.name in counts:
            merged = counts[mart.name]
            assert not merged.changed, mart.name
    assert [counts["order_links"][f"orders_{c}"] for c in ("inserted", "updated", "deleted")] == [0, 0, 0]


def test_a_rotated_masking_key_rebuilds_the_masked_tables(
    nights: tuple[Lake, Warehouse, Warehouse], monkeypatch: pytest.MonkeyPatch
) -> None:
    lake, warehouse, _ = nights
    load_night(lake, warehouse, D1)
    with warehouse.read() as reader:
        before = reader.execute("SELECT contact_id, email FROM analyst.dim_contact ORDER BY 1").fetchall()

    monkeypatch.setattr("crm_pipelines.privacy.masking.masking_key", lambda: "another-key")
    load_night(lake, warehouse, D1)

    with warehouse.read() as reader:
        after = reader.execute("SELECT contact_id, email FROM analyst.dim_contact ORDER BY 1").fetchall()
    assert [r[0] for r in after] == [r[0] for r in before]
    assert all(a[1] != b[1] and str(a[1]).startswith("tok_") for a, b in zip(after, before, strict=True))


def test_a_changed_mart_column_rebuilds_the_mart_and_its_masked_table(
    nights: tuple[Lake, Warehouse, Warehouse],
) -> None:
    lake, warehouse, _ = nights
    load_night(lake, warehouse, D1)
    mart = next(m for m in MARTS if m.name == "dim_contact")
    wider = type(mart)(
        name=mart.name,
        description=mart.description,
        deps=mart.deps,
        sql=mart.sql.replace(
            "g.record_count AS source_records", "g.record_count AS source_records, 1 AS one"
        ),
        columns={**mart.columns, "one": "Always one."},
        key=mart.key,
    )
    with warehouse.transaction() as con:
        merged = merge_mart(con, wider)
    assert merged.rebuilt
    with warehouse.read() as reader:
        assert reader.execute("SELECT DISTINCT one FROM analyst.dim_contact").fetchall() == [(1,)]
        assert reader.execute("SELECT count(*) FROM marts.dim_contact").fetchall() == [(merged.rows,)]


def test_history_versions_on_the_merged_night(nights: tuple[Lake, Warehouse, Warehouse]) -> None:
    lake, warehouse, _ = nights
    load_night(lake, warehouse, D1)
    with warehouse.read() as reader:
        acme = reader.execute(
            "SELECT name, valid_from, valid_to FROM core.golden_account_history AS h "
            "JOIN core.xref_identity AS x USING (golden_id) WHERE x.record_id = 'erp:K1' ORDER BY valid_from"
        ).fetchall()
    assert acme == [
        ("Acme GmbH", date(2026, 3, 1), date(2026, 3, 2)),
        ("Acme Holding GmbH", date(2026, 3, 2), None),
    ]


def test_a_warehouse_holding_the_lineage_view_gets_the_lineage_table(
    nights: tuple[Lake, Warehouse, Warehouse], monkeypatch: pytest.MonkeyPatch
) -> None:
    lake, incremental, reference = nights
    with incremental.transaction() as con:  # as a warehouse loaded before the lineage was a table
        con.execute("DROP TABLE core.golden_field_lineage")
        con.execute("CREATE VIEW core.golden_field_lineage AS SELECT 1 AS field")

    load_night(lake, incremental, D1)
    full_rebuild(reference, lake, D1, monkeypatch)

    with incremental.read() as reader:
        kind = reader.execute(
            "SELECT table_type FROM information_schema.tables "
            "WHERE table_schema = 'core' AND table_name = 'golden_field_lineage'"
        ).fetchall()
    assert kind == [("BASE TABLE",)]
    lineage = tables(reference)["core.golden_field_lineage"]
    assert tables(incremental)["core.golden_field_lineage"] == lineage
    assert ("contact", "title", "Head of Purchasing") in {(r[0], r[2], r[3]) for r in lineage}
