"""The order-to-cash asset against the sandbox ERP (SQLite) and a DuckDB warehouse."""

from pathlib import Path

import dagster as dg
import duckdb
import sqlalchemy as sa

from assets.reverse_sync import erp_sales_orders_from_crm
from crm_pipelines_sandbox.erp_db import create_erp_db, erp_database_url
from resources.erp_database import ErpDatabaseResource
from resources.lake import WarehouseResource

DAY = "2026-11-25"


def _warehouse(path: Path) -> None:
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA core")
    con.execute(
        "CREATE TABLE core.opportunity (record_id VARCHAR, account_record_id VARCHAR, name VARCHAR, "
        "stage VARCHAR, amount DECIMAL(18,2), currency VARCHAR, close_date DATE)"
    )
    con.execute(
        "INSERT INTO core.opportunity VALUES "
        "('salesforce:006A', 'salesforce:001A', 'Won deal', 'closed_won', 1500.00, 'EUR', '2026-11-24'),"
        "('salesforce:006B', 'salesforce:001A', 'Open deal', 'proposal', 900.00, 'EUR', '2026-12-01'),"
        "('hubspot:77', 'hubspot:5', 'Won, no ERP customer', 'closed_won', 10.00, 'USD', '2026-11-24')"
    )
    con.execute(
        "CREATE TABLE core.xref_identity (golden_id VARCHAR, entity VARCHAR, source VARCHAR, "
        "source_id VARCHAR, record_id VARCHAR)"
    )
    con.execute(
        "INSERT INTO core.xref_identity VALUES "
        "('acc-1', 'account', 'salesforce', '001A', 'salesforce:001A'),"
        "('acc-1', 'account', 'erp', '1', 'erp:1'),"
        "('acc-2', 'account', 'hubspot', '5', 'hubspot:5')"
    )
    con.close()


def test_closed_won_becomes_one_order_and_its_number_lands_in_the_warehouse(tmp_path: Path) -> None:
    conn = create_erp_db(tmp_path / "erp.db")
    conn.execute(
        "INSERT INTO customers (customer_id, customer_code, name, created_at, updated_at) "
        "VALUES (1, 'C-1', 'Acme', '2026-01-01', '2026-01-01')"
    )
    conn.commit()
    conn.close()
    _warehouse(tmp_path / "wh.duckdb")
    resources = {
        "erp_database": ErpDatabaseResource(url=erp_database_url(tmp_path / "erp.db")),
        "warehouse": WarehouseResource(url=f"duckdb:///{tmp_path}/wh.duckdb"),
    }
    config = {"ops": {"erp__sales_orders_from_crm": {"config": {"create_orders": True}}}}
    for _ in range(2):  # the second run finds the order and creates nothing
        result = dg.materialize(
            [erp_sales_orders_from_crm], resources=resources, partition_key=DAY, run_config=config
        )
        assert result.success
    engine = sa.create_engine(erp_database_url(tmp_path / "erp.db"))
    with engine.connect() as c:
        orders = c.execute(sa.text("SELECT order_number, crm_opportunity_ref FROM sales_orders")).all()
    engine.dispose()
    assert orders == [("SO-SALESFORCE-006A", "salesforce:006A")]
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        links = con.execute(
            "SELECT crm_opportunity_ref, erp_order_number FROM core.erp_order_link"
        ).fetchall()
    assert links == [("salesforce:006A", "SO-SALESFORCE-006A")]
    metadata = result.asset_materializations_for_node("erp__sales_orders_from_crm")[0].metadata
    assert metadata["orders_created"].value == 0
    assert metadata["orders_already_there"].value == 1
