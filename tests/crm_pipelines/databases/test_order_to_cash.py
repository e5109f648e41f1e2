"""Closed-won opportunities become ERP orders once, header and line together, on PostgreSQL and SQLite."""

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from crm_pipelines.databases.order_to_cash import Opportunity, OrderWriter
from crm_pipelines_sandbox.erp_db import create_erp_db
from crm_pipelines_sandbox.postgres_server import PostgresServer

PG_DDL = (
    "CREATE TABLE customers (customer_id SERIAL PRIMARY KEY, customer_code TEXT UNIQUE NOT NULL)",
    "CREATE TABLE products (product_id SERIAL PRIMARY KEY, sku TEXT UNIQUE NOT NULL, name TEXT NOT NULL, "
    "unit_price NUMERIC(18,2), updated_at TIMESTAMP NOT NULL)",
    "CREATE TABLE sales_orders (order_id SERIAL PRIMARY KEY, order_number TEXT UNIQUE NOT NULL, "
    "customer_id INTEGER NOT NULL REFERENCES customers, order_date DATE, currency TEXT, status TEXT NOT NULL, "
    "crm_opportunity_ref TEXT, updated_at TIMESTAMP NOT NULL)",
    "CREATE TABLE sales_order_lines (line_id SERIAL PRIMARY KEY, order_id INTEGER NOT NULL REFERENCES sales_orders, "
    "line_no INTEGER NOT NULL, product_id INTEGER NOT NULL REFERENCES products, quantity NUMERIC(18,3), "
    "unit_price NUMERIC(18,2), line_amount NUMERIC(18,2), updated_at TIMESTAMP NOT NULL)",
)


@pytest.fixture(params=["postgres", "sqlite"])
def erp(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        create_erp_db(tmp_path / "erp.db").close()
        engine = sa.create_engine(f"sqlite:///{tmp_path}/erp.db")
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        engine = sa.create_engine(server.url())
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
            for ddl in PG_DDL:
                conn.execute(sa.text(ddl))
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO customers (customer_id, customer_code, name, created_at, updated_at) "
                "VALUES (1, 'C-1', 'Acme', '2026-01-01', '2026-01-01')"
            )
            if request.param == "sqlite"
            else sa.text("INSERT INTO customers (customer_id, customer_code) VALUES (1, 'C-1')")
        )
    yield engine
    engine.dispose()


def opportunity(record_id: str, amount: str) -> Opportunity:
    return Opportunity(record_id, 1, Decimal(amount), "EUR", dt.date(2026, 11, 25), "Big deal")


def counts(engine: sa.Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        orders = conn.execute(sa.text("SELECT count(*) FROM sales_orders")).scalar_one()
        lines = conn.execute(sa.text("SELECT count(*) FROM sales_order_lines")).scalar_one()
    return int(orders), int(lines)


def test_orders_are_created_once_across_reruns(erp: sa.Engine) -> None:
    first = OrderWriter(erp).create(opportunity("salesforce:006A", "1234.56"))
    assert first.created
    assert first.order_number == "SO-SALESFORCE-006A"
    # A new run (new writer, as a new process would have) finds the order instead of making another.
    again = OrderWriter(erp).create(opportunity("salesforce:006A", "1234.56"))
    assert (again.created, again.order_id) == (False, first.order_id)
    assert counts(erp) == (1, 1)
    with erp.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT o.crm_opportunity_ref, l.line_amount FROM sales_orders o "
                "JOIN sales_order_lines l USING (order_id)"
            )
        ).one()
    assert row[0] == "salesforce:006A"
    assert Decimal(str(row[1])) == Decimal("1234.56")


def test_a_failure_mid_order_leaves_no_header(erp: sa.Engine) -> None:
    if erp.dialect.name == "sqlite":
        # SQLite does not enforce NUMERIC(18,2); make the line insert fail the way a constraint would.
        with erp.begin() as conn:
            conn.execute(
                sa.text(
                    "CREATE TRIGGER no_lines BEFORE INSERT ON sales_order_lines "
                    "WHEN NEW.line_amount > 1e15 BEGIN SELECT RAISE(ABORT, 'numeric field overflow'); END"
                )
            )
    writer = OrderWriter(erp)
    with pytest.raises(sa.exc.DBAPIError, match="overflow"):
        writer.create(opportunity("hubspot:42", "99999999999999999.00"))  # too big for NUMERIC(18,2)
    assert counts(erp) == (0, 0)
    assert writer.create(opportunity("hubspot:42", "10.00")).created
    assert counts(erp) == (1, 1)
