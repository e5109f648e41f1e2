"""Order to cash through the declared sync: newly closed-won opportunities become ERP orders, once.

Real parts: the sandbox's ERP database (SQLite, the same schema the demo serves) and a DuckDB
warehouse holding the core tables the model reads.
"""

import datetime as dt
from pathlib import Path
from typing import Any

import duckdb
import sqlalchemy as sa

from crm_pipelines.identity.references import salesforce_id15
from crm_pipelines.syncs.run import run_sync
from crm_pipelines.syncs.spec import load_syncs
from crm_pipelines.warehouse.connection import Warehouse
from crm_pipelines.warehouse.core import load_order_links
from crm_pipelines_sandbox.erp_db import create_erp_db, erp_database_url
from resources.erp_database import ErpDatabaseResource

DAY = "2026-11-25"
S = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def sf18(id15: str) -> str:
    """The 18-character form of a Salesforce id (what the API returns)."""
    return id15 + "".join(
        S[sum(1 << k for k, c in enumerate(id15[b : b + 5]) if c.isupper())] for b in (0, 5, 10)
    )


WON = {
    # Orders the ERP already holds for these, each reference typed another way.
    "a": sf18("0065g00000AaAaA"),
    "b": sf18("0065g00000BbBbB"),
    "c": sf18("0065g00000CcCcC"),
    # No order yet.
    "d": sf18("0065g00000DdDdD"),
}
EXISTING_REFS = {
    "a": WON["a"],  # the bare 18-character id
    "b": "SF-" + salesforce_id15(WON["b"]).__str__(),  # the 15-character form with a prefix
    "c": f"https://acme.my.salesforce.com/lightning/r/Opportunity/{WON['c'].lower()}/view",  # a link
}


class Estate:
    """An ERP with customers and orders, and a warehouse whose core knows the opportunities."""

    def __init__(self, root: Path) -> None:
        self.erp_path = root / "erp.db"
        conn = create_erp_db(self.erp_path)
        conn.execute(
            "INSERT INTO customers (customer_id, customer_code, name, created_at, updated_at) "
            "VALUES (1, 'C-1', 'Acme', '2026-01-01', '2026-01-01')"
        )
        for n, (key, ref) in enumerate(EXISTING_REFS.items(), start=1):
            conn.execute(
                "INSERT INTO sales_orders (order_id, order_number, customer_id, order_date, currency, status, "
                "crm_opportunity_ref, updated_at) VALUES (?, ?, 1, '2026-10-01', 'EUR', 'open', ?, '2026-10-01')",
                (n, f"SO-000000{n}", ref),
            )
            del key
        conn.commit()
        conn.close()
        self.warehouse = Warehouse(f"duckdb:///{root}/warehouse.duckdb")
        self.erp = ErpDatabaseResource(
            url=erp_database_url(self.erp_path), write_url=erp_database_url(self.erp_path)
        )
        with self.warehouse.transaction() as con:
            con.execute(
                "CREATE TABLE core.opportunity (record_id VARCHAR, source VARCHAR, source_id VARCHAR, "
                "account_record_id VARCHAR, name VARCHAR, stage VARCHAR, amount DECIMAL(18,2), currency VARCHAR, "
                "close_date DATE, is_deleted BOOLEAN, mirrors_record_id VARCHAR)"
            )
            con.execute(
                "CREATE TABLE core.xref_identity (golden_id VARCHAR, entity VARCHAR, source VARCHAR, "
                "source_id VARCHAR, record_id VARCHAR)"
            )
            con.execute(
                "INSERT INTO core.xref_identity VALUES ('A-1', 'account', 'salesforce', '001X', 'salesforce:001X'),"
                "('A-1', 'account', 'erp', '1', 'erp:1')"
            )
            con.execute(
                "CREATE TABLE core.sales_order (record_id VARCHAR, crm_opportunity_ref VARCHAR, is_deleted BOOLEAN)"
            )
            con.executemany(
                "INSERT INTO core.sales_order VALUES (?, ?, false)",
                [(f"erp:{n}", ref) for n, ref in enumerate(EXISTING_REFS.values(), start=1)],
            )
        for key in "abcd":
            self.opportunity(key, stage="closed_won")
        self.relink()

    def opportunity(self, key: str, *, stage: str, sid: str | None = None) -> str:
        sid = sid or WON[key]
        with self.warehouse.transaction() as con:
            con.execute("DELETE FROM core.opportunity WHERE source_id = ?", [sid])
            con.execute(
                "INSERT INTO core.opportunity VALUES (?, 'salesforce', ?, 'salesforce:001X', ?, ?, 1500.00, 'EUR', "
                "DATE '2026-11-20', false, NULL)",
                [f"salesforce:{sid}", sid, f"Deal {key}", stage],
            )
        return f"salesforce:{sid}"

    def relink(self) -> None:
        with self.warehouse.transaction() as con:
            load_order_links(con)

    def run(self, tmp: Path, *, backfill: bool = False, run_id: str = "r") -> Any:
        return run_sync(
            load_syncs().get("orders_to_erp"),
            warehouse=self.warehouse,
            lake_dir=tmp,
            partition=DAY,
            run_id=run_id,
            client=self.erp,
            dry_run=False,
            backfill=backfill,
        )

    def orders(self) -> list[tuple[str, str]]:
        engine = sa.create_engine(erp_database_url(self.erp_path))
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT order_number, crm_opportunity_ref FROM sales_orders ORDER BY order_id")
            )
            out = [(str(a), str(b)) for a, b in rows]
        engine.dispose()
        return out


def test_references_in_any_format_link_orders_to_their_opportunities(tmp_path: Path) -> None:
    estate = Estate(tmp_path)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        links = dict(
            con.execute("SELECT order_record_id, opportunity_record_id FROM core.order_links").fetchall()
        )
    assert links == {
        "erp:1": f"salesforce:{WON['a']}",
        "erp:2": f"salesforce:{WON['b']}",
        "erp:3": f"salesforce:{WON['c']}",
    }
    assert estate  # the estate built above is what was linked


def test_only_newly_closed_won_opportunities_become_orders_and_a_rerun_creates_nothing(
    tmp_path: Path,
) -> None:
    estate = Estate(tmp_path)
    before = estate.orders()
    # The first run remembers what is closed-won already (no back-fill of history).
    first = estate.run(tmp_path, run_id="r1")
    assert first.counts.baseline == 4
    assert first.counts.created == 0
    assert estate.orders() == before

    # An opportunity closes won after that: exactly one order, with a deterministic number.
    new = estate.opportunity("e", stage="closed_won", sid=sf18("0065g00000EeEeE"))
    second = estate.run(tmp_path, run_id="r2")
    assert (second.counts.created, second.counts.rejected) == (1, 0)
    assert estate.orders()[-1] == (f"SO-{new.replace(':', '-').upper()}", new)
    assert second.counts.adds_up

    # Run again, and again after the night's extract linked the new order: nothing more.
    third = estate.run(tmp_path, run_id="r3")
    assert third.counts.created == 0
    assert len(estate.orders()) == len(before) + 1


def test_a_deal_mirroring_a_won_opportunity_of_another_crm_makes_no_second_order(tmp_path: Path) -> None:
    estate = Estate(tmp_path)
    estate.run(tmp_path, run_id="r1")  # baseline
    original = estate.opportunity("g", stage="closed_won", sid=sf18("0065g00000GgGgG"))
    # dynamics_opportunities_to_hubspot copied it into HubSpot; the copy reads back as a mirror.
    with estate.warehouse.transaction() as con:
        con.execute(
            "INSERT INTO core.opportunity VALUES ('hubspot:9234761570', 'hubspot', '9234761570', "
            "'salesforce:001X', 'Deal g', 'closed_won', 1500.00, 'EUR', DATE '2026-11-20', false, ?)",
            [original],
        )
    run = estate.run(tmp_path, run_id="r2")
    assert run.counts.created == 1
    assert [ref for _, ref in estate.orders()].count("hubspot:9234761570") == 0
    assert estate.orders()[-1][1] == original
    assert estate.run(tmp_path, run_id="r3").counts.created == 0


def test_a_backfill_skips_opportunities_that_already_have_an_order_in_any_format(tmp_path: Path) -> None:
    estate = Estate(tmp_path)
    estate.run(tmp_path, run_id="r1")  # baseline
    backfilled = estate.run(tmp_path, backfill=True, run_id="r2")
    orders = estate.orders()
    # a, b and c have orders under other reference formats: only d gets one.
    assert backfilled.counts.created == 1
    assert [ref for _, ref in orders].count(f"salesforce:{WON['d']}") == 1
    assert len(orders) == 4
    again = estate.run(tmp_path, backfill=True, run_id="r3")
    assert again.counts.created == 0
    assert len(estate.orders()) == 4


def test_an_opportunity_without_an_erp_customer_is_rejected_with_the_reason_and_the_rest_go_through(
    tmp_path: Path,
) -> None:
    estate = Estate(tmp_path)
    estate.run(tmp_path, run_id="r1")
    with estate.warehouse.transaction() as con:
        con.execute(
            "INSERT INTO core.opportunity VALUES ('salesforce:006ZZ', 'salesforce', '006ZZ', 'salesforce:001Q', "
            "'Orphan', 'closed_won', 10.00, 'EUR', DATE '2026-11-20', false, NULL)"
        )
    good = estate.opportunity("f", stage="closed_won", sid=sf18("0065g00000FfFfF"))
    run = estate.run(tmp_path, run_id="r2")
    assert (run.counts.created, run.counts.rejected) == (1, 1)
    assert estate.orders()[-1][1] == good
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        (row,) = con.execute("SELECT source_key, error_code, reason FROM ops.sync_errors").fetchall()
    assert row[0] == "salesforce:006ZZ"
    assert row[1] == "NO_ORDER_INPUT"
    assert "no ERP customer" in row[2]
    assert dt.date.fromisoformat(DAY)
