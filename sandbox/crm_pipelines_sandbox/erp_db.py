"""The sandbox ERP: a SQLite database with the schema of docs/contracts.md.

Columns carry the contract's declared types, but SQLite stores what it is given: a row with an
invalid date or amount keeps the text the ERP user typed, as a real database with lax validation
would, so the pipeline's quality rules have something to catch.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

ERP_TABLES: dict[str, tuple[str, ...]] = {
    "customers": (
        "customer_id",
        "customer_code",
        "name",
        "vat_number",
        "email",
        "phone",
        "street",
        "city",
        "postal_code",
        "country",
        "created_at",
        "updated_at",
    ),
    "products": ("product_id", "sku", "name", "unit_price", "updated_at"),
    "sales_orders": (
        "order_id",
        "order_number",
        "customer_id",
        "order_date",
        "currency",
        "status",
        "crm_opportunity_ref",
        "updated_at",
    ),
    "sales_order_lines": (
        "line_id",
        "order_id",
        "line_no",
        "product_id",
        "quantity",
        "unit_price",
        "line_amount",
        "updated_at",
    ),
    "invoices": (
        "invoice_id",
        "invoice_number",
        "customer_id",
        "order_id",
        "invoice_date",
        "due_date",
        "currency",
        "amount_net",
        "amount_tax",
        "amount_gross",
        "status",
        "updated_at",
    ),
    "payments": ("payment_id", "invoice_id", "payment_date", "amount", "currency", "method", "updated_at"),
}

_DDL = (
    """CREATE TABLE customers (
    customer_id INTEGER PRIMARY KEY,
    customer_code TEXT NOT NULL UNIQUE,
    name TEXT,
    vat_number TEXT,
    email TEXT,
    phone TEXT,
    street TEXT,
    city TEXT,
    postal_code TEXT,
    country TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
)""",
    """CREATE TABLE products (
    product_id INTEGER PRIMARY KEY,
    sku TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    unit_price NUMERIC(18,2),
    updated_at TIMESTAMP NOT NULL
)""",
    """CREATE TABLE sales_orders (
    order_id INTEGER PRIMARY KEY,
    order_number TEXT NOT NULL UNIQUE,
    customer_id INTEGER NOT NULL REFERENCES customers (customer_id),
    order_date DATE,
    currency TEXT,
    status TEXT NOT NULL,
    crm_opportunity_ref TEXT,
    updated_at TIMESTAMP NOT NULL
)""",
    """CREATE TABLE sales_order_lines (
    line_id INTEGER PRIMARY KEY,
    order_id INTEGER NOT NULL REFERENCES sales_orders (order_id),
    line_no INTEGER NOT NULL,
    product_id INTEGER NOT NULL REFERENCES products (product_id),
    quantity NUMERIC(18,3),
    unit_price NUMERIC(18,2),
    line_amount NUMERIC(18,2),
    updated_at TIMESTAMP NOT NULL
)""",
    """CREATE TABLE invoices (
    invoice_id INTEGER PRIMARY KEY,
    invoice_number TEXT NOT NULL UNIQUE,
    customer_id INTEGER NOT NULL REFERENCES customers (customer_id),
    order_id INTEGER REFERENCES sales_orders (order_id),
    invoice_date DATE,
    due_date DATE,
    currency TEXT,
    amount_net NUMERIC(18,2),
    amount_tax NUMERIC(18,2),
    amount_gross NUMERIC(18,2),
    status TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL
)""",
    """CREATE TABLE payments (
    payment_id INTEGER PRIMARY KEY,
    invoice_id INTEGER NOT NULL REFERENCES invoices (invoice_id),
    payment_date DATE,
    amount NUMERIC(18,2),
    currency TEXT,
    method TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL
)""",
)

# Incremental extracts filter on updated_at; joins follow the foreign keys.
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS customers_updated_at ON customers (updated_at)",
    "CREATE INDEX IF NOT EXISTS products_updated_at ON products (updated_at)",
    "CREATE INDEX IF NOT EXISTS sales_orders_updated_at ON sales_orders (updated_at)",
    "CREATE INDEX IF NOT EXISTS sales_orders_customer_id ON sales_orders (customer_id)",
    "CREATE INDEX IF NOT EXISTS sales_order_lines_updated_at ON sales_order_lines (updated_at)",
    "CREATE INDEX IF NOT EXISTS sales_order_lines_order_id ON sales_order_lines (order_id)",
    "CREATE INDEX IF NOT EXISTS invoices_updated_at ON invoices (updated_at)",
    "CREATE INDEX IF NOT EXISTS invoices_customer_id ON invoices (customer_id)",
    "CREATE INDEX IF NOT EXISTS payments_updated_at ON payments (updated_at)",
    "CREATE INDEX IF NOT EXISTS payments_invoice_id ON payments (invoice_id)",
)


def create_erp_db(path: Path) -> sqlite3.Connection:
    """Create the empty ERP schema (without secondary indexes) and return the open connection."""
    conn = sqlite3.connect(Path(path), timeout=30.0)
    for statement in _DDL:
        conn.execute(statement)
    conn.commit()
    return conn


def create_erp_indexes(conn: sqlite3.Connection) -> None:
    """Create the secondary indexes; bulk loaders call this after inserting."""
    for statement in _INDEXES:
        conn.execute(statement)
    conn.commit()


def insert_sql(table: str) -> str:
    """``INSERT`` statement taking one value per column of ``table``, in :data:`ERP_TABLES` order."""
    columns = ERP_TABLES[table]
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"


def erp_database_url(path: Path) -> str:
    """SQLAlchemy URL of the sandbox ERP database (absolute path, so it works from any directory)."""
    return f"sqlite:///{Path(path).resolve()}"
