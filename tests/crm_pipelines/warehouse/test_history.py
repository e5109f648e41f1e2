"""Golden record history (SCD type 2) and the field audit trail over nights of identity loads.

Each night resolves hand-made canonical records with ``resolve_entities`` against the ids the warehouse
holds and loads the outputs with ``load_identity`` into a real DuckDB file, as the nightly job does.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
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
from crm_pipelines.warehouse.connection import open_warehouse
from crm_pipelines.warehouse.core import load_identity
from crm_pipelines.warehouse.marts import MARTS, build_mart
from tests.crm_pipelines.match_by_key import RULES

T0 = datetime(2026, 3, 1, tzinfo=UTC)
MART = {m.name: m for m in MARTS}
# The README's "as of" query.
AS_OF = """
    SELECT name FROM marts.dim_account_history
    WHERE account_id = $id AND valid_from <= $day AND (valid_to IS NULL OR $day < valid_to)
"""
# The README's audit trail query.
LINEAGE = """
    SELECT value, record_id, source, source_id, run_id, valid_from, loaded_at
    FROM core.golden_field_lineage
    WHERE golden_id = $id AND field = $field
      AND valid_from <= $day AND (valid_to IS NULL OR $day < valid_to)
"""


def account(record_id: str, vat: str, name: str, updated: int = 0, **fields: Any) -> dict[str, Any]:
    source, source_id = record_id.split(":")
    return {
        "record_id": record_id,
        "source": source,
        "source_id": source_id,
        "name": name,
        "vat_number": vat,
        "updated_at": T0 + timedelta(days=updated),
        **fields,
    }


def contact(record_id: str, email: str, title: str, account_record_id: str) -> dict[str, Any]:
    source, source_id = record_id.split(":")
    return {
        "record_id": record_id,
        "source": source,
        "source_id": source_id,
        "first_name": "Pat",
        "last_name": "Lee",
        "email": email,
        "title": title,
        "account_record_id": account_record_id,
        "updated_at": T0,
    }


# The ERP owns account names, Salesforce industries (crm_pipelines/ownership.yaml).
ACME_ERP = account("erp:K1", "DE1", "Acme GmbH")
ACME_SF = account("salesforce:S1", "DE1", "ACME", industry="Manufacturing", domain="acme.de")
BETA = account("salesforce:S2", "DE2", "Beta AG")
GAMMA = account("salesforce:S3", "DE3", "Gamma KG")
PAT = contact("salesforce:C1", "pat@acme.de", "Buyer", "salesforce:S1")
NIGHT_1 = [ACME_ERP, ACME_SF, BETA, GAMMA]
# Night 3: the ERP renames Acme, Gamma is gone, Pat is promoted.
ACME_RENAMED = {**ACME_ERP, "name": "Acme Holding GmbH", "updated_at": T0 + timedelta(days=2)}
NIGHT_3 = [ACME_RENAMED, ACME_SF, BETA]
PAT_3 = {**PAT, "title": "Head of Purchasing"}


class Nights:
    """A lake and a warehouse that identity runs and loads night after night."""

    def __init__(self, tmp_path: Path, warehouse_url: str) -> None:
        self.tmp_path = tmp_path
        self.lake = tmp_path / "lake"
        self.warehouse = open_warehouse(warehouse_url)
        self.runs = 0

    def run(
        self, night: str, accounts: list[dict[str, Any]], contacts: list[dict[str, Any]]
    ) -> dict[str, int]:
        self.runs += 1
        staged = self.tmp_path / "staged" / str(self.runs)
        globs = []
        for name, schema, rows in (
            ("account", canonical.ACCOUNT, accounts),
            ("contact", canonical.CONTACT, contacts),
        ):
            (staged / name).mkdir(parents=True)
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), staged / name / "part-0.parquet")
            globs.append(str(staged / name / "*.parquet"))
        with self.warehouse.connect(read_only=True) as wh:
            previous = previous_ids(wh)
        resolve_entities(
            con=duckdb.connect(),
            accounts_glob=globs[0],
            contacts_glob=globs[1],
            out_dir=identity_files(self.lake, night).folder,
            rules=RULES,
            previous=previous,
        )
        with self.warehouse.transaction() as con:
            counts = load_identity(
                con,
                lake_dir=self.lake,
                partition=night,
                run_id=f"run-{self.runs}",
                log=logging.getLogger(__name__),
            )
            for name in ("dim_account", "dim_contact", "dim_account_history", "dim_contact_history"):
                build_mart(con, MART[name])
        return counts

    def query(
        self, sql: str, params: dict[str, object] | list[object] | None = None
    ) -> list[tuple[Any, ...]]:
        """What an analyst's query returns, from the warehouse's backend."""
        with self.warehouse.read() as con:
            return [tuple(row) for row in con.execute(sql, params or []).fetchall()]

    def golden_of(self, record_id: str) -> str:
        ((golden_id,),) = self.query(
            "SELECT golden_id FROM core.xref_identity WHERE record_id = ?", [record_id]
        )
        return str(golden_id)

    def history(self) -> list[tuple[Any, ...]]:
        """Every column of every version of both entities, in a fixed order."""
        return [
            *self.query("SELECT * FROM core.golden_account_history ORDER BY golden_id, valid_from"),
            *self.query("SELECT * FROM core.golden_contact_history ORDER BY golden_id, valid_from"),
        ]

    def versions(self, golden_id: str, column: str = "name") -> list[tuple[Any, ...]]:
        table = "core.golden_account_history" if golden_id.startswith("A-") else "core.golden_contact_history"
        return self.query(
            f"SELECT valid_from, valid_to, is_current, {column}, run_id FROM {table} "
            "WHERE golden_id = ? ORDER BY valid_from",
            [golden_id],
        )


@pytest.fixture
def nights(tmp_path: Path, warehouse_url: str) -> Nights:
    """Night 1 loaded, night 2 unchanged, night 3 with a rename, a promotion and a company gone."""
    n = Nights(tmp_path, warehouse_url)
    n.run("2026-03-01", NIGHT_1, [PAT])
    return n


def test_an_unchanged_night_adds_no_version(nights: Nights) -> None:
    before = nights.history()
    counts = nights.run("2026-03-02", NIGHT_1, [PAT])

    assert nights.history() == before
    assert len(before) == 4  # Acme (two records, one golden), Beta, Gamma, Pat
    assert counts["account_versions_opened"] == 0
    assert counts["account_versions_closed"] == 0
    assert {row[1:4] for row in before} == {(date(2026, 3, 1), None, True)}


def test_a_change_closes_the_version_and_opens_one_and_a_gone_id_closes(nights: Nights) -> None:
    acme, beta, gamma = (nights.golden_of(r) for r in ("erp:K1", "salesforce:S2", "salesforce:S3"))
    nights.run("2026-03-02", NIGHT_1, [PAT])
    counts = nights.run("2026-03-03", NIGHT_3, [PAT_3])

    assert nights.versions(acme) == [
        (date(2026, 3, 1), date(2026, 3, 3), False, "Acme GmbH", "run-1"),
        (date(2026, 3, 3), None, True, "Acme Holding GmbH", "run-3"),
    ]
    assert nights.versions(beta) == [(date(2026, 3, 1), None, True, "Beta AG", "run-1")]
    assert nights.versions(gamma) == [(date(2026, 3, 1), date(2026, 3, 3), False, "Gamma KG", "run-1")]
    assert nights.versions(nights.golden_of("salesforce:C1"), "title") == [
        (date(2026, 3, 1), date(2026, 3, 3), False, "Buyer", "run-1"),
        (date(2026, 3, 3), None, True, "Head of Purchasing", "run-3"),
    ]
    assert counts["account_versions_opened"] == 1
    assert counts["account_versions_closed"] == 2
    # dim_account stays the current state; the history mart holds every version.
    assert nights.query("SELECT account_id, name FROM marts.dim_account ORDER BY name") == [
        (acme, "Acme Holding GmbH"),
        (beta, "Beta AG"),
    ]
    assert nights.query("SELECT count(*) FROM marts.dim_account_history") == [(4,)]
    assert nights.query("SELECT count(*) FROM marts.dim_account_history WHERE is_current") == [(2,)]


def test_as_of_a_night_returns_the_value_of_that_night(nights: Nights) -> None:
    nights.run("2026-03-02", NIGHT_1, [PAT])
    nights.run("2026-03-03", NIGHT_3, [PAT_3])
    acme = nights.golden_of("erp:K1")

    def as_of(day: date) -> list[tuple[Any, ...]]:
        return nights.query(AS_OF, {"id": acme, "day": day})

    assert as_of(date(2026, 2, 28)) == []
    assert as_of(date(2026, 3, 2)) == [("Acme GmbH",)]
    assert as_of(date(2026, 3, 3)) == [("Acme Holding GmbH",)]
    assert as_of(date(2026, 4, 1)) == [("Acme Holding GmbH",)]


def test_a_rerun_of_the_same_night_changes_nothing(nights: Nights) -> None:
    nights.run("2026-03-03", NIGHT_3, [PAT_3])
    after_night = nights.history()
    lineage = sorted(nights.query("SELECT * FROM core.golden_field_lineage"), key=repr)

    nights.run("2026-03-03", NIGHT_3, [PAT_3])

    assert nights.history() == after_night  # run ids and load times included
    assert sorted(nights.query("SELECT * FROM core.golden_field_lineage"), key=repr) == lineage


def test_a_rerun_with_other_data_replaces_that_nights_changes(nights: Nights) -> None:
    acme = nights.golden_of("erp:K1")
    before = nights.history()
    nights.run("2026-03-03", [ACME_RENAMED, ACME_SF, BETA, GAMMA], [PAT_3])
    assert len(nights.versions(acme)) == 2

    nights.run("2026-03-03", NIGHT_1, [PAT])  # the rename was a mistake, undone before the re-run

    assert nights.versions(acme) == [(date(2026, 3, 1), None, True, "Acme GmbH", "run-1")]
    assert nights.versions(nights.golden_of("salesforce:C1"), "title") == [
        (date(2026, 3, 1), None, True, "Buyer", "run-1")
    ]
    assert nights.query(
        "SELECT count(*) FROM core.golden_account_history WHERE valid_from = DATE '2026-03-03'"
    ) == [(0,)]
    # Every version the mistaken run closed is open again: the history is the one before it, run ids
    # and load times included.
    assert nights.history() == before


def test_a_company_deleted_and_restored_keeps_its_id_and_its_history(nights: Nights) -> None:
    gamma = nights.golden_of("salesforce:S3")
    nights.run("2026-03-02", NIGHT_1, [PAT])
    nights.run("2026-03-03", [ACME_ERP, ACME_SF, BETA], [PAT])  # Gamma deleted in Salesforce
    assert nights.versions(gamma, "name") == [
        (date(2026, 3, 1), date(2026, 3, 3), False, "Gamma KG", "run-1")
    ]

    nights.run("2026-03-05", NIGHT_1, [PAT])  # restored two nights later

    assert nights.golden_of("salesforce:S3") == gamma
    assert nights.versions(gamma, "name") == [
        (date(2026, 3, 1), date(2026, 3, 3), False, "Gamma KG", "run-1"),
        (date(2026, 3, 5), None, True, "Gamma KG", "run-4"),
    ]
    # The README's "as of" query: there on the 2nd, gone on the 4th, back on the 5th.
    assert [nights.query(AS_OF, {"id": gamma, "day": date(2026, 3, d)}) for d in (2, 4, 5)] == [
        [("Gamma KG",)],
        [],
        [("Gamma KG",)],
    ]


def test_the_history_never_takes_an_earlier_night_after_a_later_one(nights: Nights) -> None:
    nights.run("2026-03-03", NIGHT_3, [PAT_3])
    before = nights.history()

    nights.run("2026-03-02", NIGHT_1, [PAT])  # a late backfill: core keeps the newer night

    assert nights.history() == before


def test_the_lineage_names_the_source_record_the_run_and_the_night(nights: Nights) -> None:
    nights.run("2026-03-02", NIGHT_1, [PAT])
    nights.run("2026-03-03", NIGHT_3, [PAT_3])
    acme = nights.golden_of("erp:K1")

    def lineage(field: str, day: date) -> tuple[Any, ...]:
        (row,) = nights.query(LINEAGE, {"id": acme, "field": field, "day": day})
        return tuple(row[:6])

    # The ERP owns the name: its record supplies it, although Salesforce's is as new.
    assert lineage("name", date(2026, 3, 3)) == (
        "Acme Holding GmbH",
        "erp:K1",
        "erp",
        "K1",
        "run-3",
        date(2026, 3, 3),
    )
    assert lineage("name", date(2026, 3, 2)) == (
        "Acme GmbH",
        "erp:K1",
        "erp",
        "K1",
        "run-1",
        date(2026, 3, 1),
    )
    # Salesforce owns the industry; unchanged since night 1, although the record changed since.
    assert lineage("industry", date(2026, 3, 3)) == (
        "Manufacturing",
        "salesforce:S1",
        "salesforce",
        "S1",
        "run-1",
        date(2026, 3, 1),
    )
    assert lineage("domain", date(2026, 3, 3))[1] == "salesforce:S1"
    loaded_at = nights.query(
        "SELECT loaded_at FROM core.golden_account_history WHERE golden_id = ? AND valid_from = DATE '2026-03-03'",
        [acme],
    )
    assert (
        nights.query(LINEAGE, {"id": acme, "field": "name", "day": date(2026, 3, 3)})[0][6] == loaded_at[0][0]
    )
    # A field no record holds has no lineage.
    assert nights.query(LINEAGE, {"id": acme, "field": "phone", "day": date(2026, 3, 3)}) == []
