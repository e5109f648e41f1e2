"""Order-to-cash: a closed-won CRM opportunity becomes one ERP sales order (header and line).

Each order carries an idempotency key, ``<source system>:<opportunity id>`` (the canonical
``record_id``), in ``sales_orders.crm_opportunity_ref`` and in ``crm_order_links`` (created if missing,
primary key on the key): a re-run, or two runs racing, never create a second order. Header, line and
link are written in one transaction, so a failure leaves no half order behind. Statements bind every
value; table and column names are fixed here and quoted by SQLAlchemy.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa

LINKS = "crm_order_links"
ORDER_PRODUCT_SKU = "CRM-OPPORTUNITY"


@dataclass(frozen=True)
class Opportunity:
    """What an order needs from a canonical opportunity."""

    record_id: str  # idempotency key: "<source>:<opportunity id>"
    customer_id: int  # the ERP customer of the opportunity's account
    amount: Decimal
    currency: str
    close_date: dt.date | None
    name: str


@dataclass(frozen=True)
class OrderLink:
    """An opportunity and the ERP order made for it."""

    crm_opportunity_ref: str
    order_id: int
    order_number: str
    created: bool  # False when the order already existed


def _links_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        LINKS,
        metadata,
        sa.Column("crm_opportunity_ref", sa.String(200), primary_key=True),
        sa.Column("order_id", sa.Integer, nullable=False),
        sa.Column("order_number", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def _new_id(result: sa.CursorResult[object]) -> int:
    key = result.inserted_primary_key
    if key is None or key[0] is None:
        raise RuntimeError("the ERP did not return the new row's id")
    return int(key[0])


def order_number_for(record_id: str) -> str:
    """Deterministic order number: the same opportunity always maps to the same number."""
    return "SO-" + record_id.replace(":", "-").upper()[:60]


class OrderWriter:
    """Writes sales orders into the ERP's ``sales_orders`` / ``sales_order_lines`` / ``products``.

    Args:
        engine: Engine with write access to the ERP (a separate account from the reader).
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        metadata = sa.MetaData()
        self.links = _links_table(metadata)
        metadata.create_all(engine, tables=[self.links], checkfirst=True)
        reflected = sa.MetaData()
        reflected.reflect(engine, only=["sales_orders", "sales_order_lines", "products"])
        self.orders = reflected.tables["sales_orders"]
        self.lines = reflected.tables["sales_order_lines"]
        self.products = reflected.tables["products"]

    def existing(self, conn: sa.Connection, ref: str) -> OrderLink | None:
        row = conn.execute(
            sa.select(self.links.c.order_id, self.links.c.order_number).where(
                self.links.c.crm_opportunity_ref == ref
            )
        ).first()
        if row is None:
            # An order made by hand (or before the link table existed) with the reference counts too.
            row = conn.execute(
                sa.select(self.orders.c.order_id, self.orders.c.order_number).where(
                    self.orders.c.crm_opportunity_ref == ref
                )
            ).first()
        return None if row is None else OrderLink(ref, int(row[0]), str(row[1]), created=False)

    def _product_id(self, conn: sa.Connection, now: dt.datetime) -> int:
        found = conn.execute(
            sa.select(self.products.c.product_id).where(self.products.c.sku == ORDER_PRODUCT_SKU)
        ).scalar()
        if found is not None:
            return int(found)
        result = conn.execute(
            sa.insert(self.products).values(
                sku=ORDER_PRODUCT_SKU, name="Order from a CRM opportunity", unit_price=None, updated_at=now
            )
        )
        return _new_id(result)

    def create(self, opportunity: Opportunity) -> OrderLink:
        """Create the order for one opportunity unless it exists; one transaction.

        Args:
            opportunity: The closed-won opportunity.

        Returns:
            The link between the opportunity and its (new or existing) order.
        """
        ref = opportunity.record_id
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        try:
            with self.engine.begin() as conn:
                found = self.existing(conn, ref)
                if found is not None:
                    return found
                number = order_number_for(ref)
                header = conn.execute(
                    sa.insert(self.orders).values(
                        order_number=number,
                        customer_id=opportunity.customer_id,
                        order_date=opportunity.close_date or now.date(),
                        currency=opportunity.currency,
                        status="open",
                        crm_opportunity_ref=ref,
                        updated_at=now,
                    )
                )
                order_id = _new_id(header)
                conn.execute(
                    sa.insert(self.lines).values(
                        order_id=order_id,
                        line_no=1,
                        product_id=self._product_id(conn, now),
                        quantity=Decimal("1.000"),
                        unit_price=opportunity.amount,
                        line_amount=opportunity.amount,
                        updated_at=now,
                    )
                )
                # The link's primary key is the guard against a concurrent run making a second order.
                conn.execute(
                    sa.insert(self.links).values(
                        crm_opportunity_ref=ref,
                        order_id=order_id,
                        order_number=number,
                        created_at=dt.datetime.now(dt.UTC),
                    )
                )
                return OrderLink(ref, order_id, number, created=True)
        except sa.exc.IntegrityError:
            with self.engine.connect() as conn:
                found = self.existing(conn, ref)
            if found is None:
                raise
            return found
