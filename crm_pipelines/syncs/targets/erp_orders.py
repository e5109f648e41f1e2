"""The ERP as a sync target: one sales order per closed-won opportunity (order-to-cash).

An order is made from the source row (the opportunity, its ERP customer, amount, currency, close date)
by :class:`~crm_pipelines.databases.order_to_cash.OrderWriter`, header, line and link in one
transaction, keyed by the opportunity's ``record_id``. Orders the ERP already holds are recognised
before anything is written: the source row names the order the warehouse linked to the opportunity
(``core.order_links``, whatever format its reference was stored in), and the ERP itself is asked for
orders made since the night's extract (a re-run after a crash finds its own orders there).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import pyarrow as pa
import sqlalchemy as sa

from crm_pipelines.databases.order_to_cash import LINKS, Opportunity, OrderWriter
from crm_pipelines.lake import LakePath
from crm_pipelines.syncs.spec import SyncSpec
from crm_pipelines.syncs.targets.base import TARGET_KINDS, Operation, Outcome, TargetObject

__all__ = ["ErpOrdersTarget"]


class ErpWriter(Protocol):
    """What the target needs of the ERP (``resources.erp_database.ErpDatabaseResource`` is one)."""

    def engine(self) -> sa.Engine: ...

    def write_engine(self) -> sa.Engine: ...


def _opportunity(row: dict[str, Any]) -> Opportunity | str:
    """The order's input from a source row, or why there is none."""
    if row.get("erp_customer_id") is None:
        return "the opportunity's account has no ERP customer (the crosswalk links none)"
    try:
        amount = Decimal(str(row.get("amount")))
    except InvalidOperation:
        return f"amount {row.get('amount')!r} is not a number"
    return Opportunity(
        record_id=str(row["record_id"]),
        customer_id=int(row["erp_customer_id"]),
        amount=amount,
        currency=str(row.get("currency") or ""),
        close_date=row.get("close_date"),
        name=str(row.get("name") or ""),
    )


class ErpOrdersTarget:
    """The ERP database's ``sales_orders``."""

    def resolve(self, sync: SyncSpec) -> TargetObject:
        if sync.object_name != "sales_orders":
            raise ValueError(
                f"sync {sync.name}: the ERP target writes sales_orders, not {sync.object_name!r}"
            )
        if sync.mode != "create":
            raise ValueError(f"sync {sync.name}: ERP orders are only created (mode: create)")
        return TargetObject(
            system="erp", object_name="sales_orders", dataset=None, primary_key="order_id", fields={}
        )

    def current(self, target: TargetObject, *, lake_dir: LakePath, partition: str) -> str | None:
        return None

    def existing(
        self, target: TargetObject, *, sync: SyncSpec, rows: pa.Table, client: Any
    ) -> dict[str, str]:
        """Orders the ERP holds for these opportunities now, by exact reference or the link table."""
        keys = [str(k) for k in rows.column(sync.source.key).to_pylist()]
        if not keys:
            return {}
        erp: ErpWriter = client
        engine = erp.engine()  # reading is the reader account's job, also in a dry run
        found: dict[str, str] = {}
        try:
            with engine.connect() as conn:
                inspector = sa.inspect(conn)
                queries = [
                    "SELECT crm_opportunity_ref, order_id FROM sales_orders WHERE crm_opportunity_ref IN :keys"
                ]
                if inspector.has_table(LINKS):
                    queries.append(
                        f"SELECT crm_opportunity_ref, order_id FROM {LINKS} WHERE crm_opportunity_ref IN :keys"
                    )
                for query in queries:
                    statement = sa.text(query).bindparams(sa.bindparam("keys", expanding=True))
                    for start in range(0, len(keys), 1000):
                        for ref, order_id in conn.execute(statement, {"keys": keys[start : start + 1000]}):
                            found[str(ref)] = str(order_id)
        finally:
            engine.dispose()
        return found

    def write(
        self,
        target: TargetObject,
        *,
        sync: SyncSpec,
        operations: Sequence[Operation],
        client: Any,
        on_batch: Callable[[list[Outcome]], None],
    ) -> int:
        erp: ErpWriter = client
        writer = OrderWriter(erp.write_engine())
        requests = 0
        try:
            batch: list[Outcome] = []
            for op in operations:
                made = _opportunity(dict(op.row))
                if isinstance(made, str):
                    batch.append(Outcome(op, "rejected", None, "NO_ORDER_INPUT", made))
                else:
                    try:
                        link = writer.create(made)
                        requests += 1
                    except sa.exc.SQLAlchemyError as exc:
                        # The database's own message (a constraint, a type), without the SQL statement.
                        cause = getattr(exc, "orig", None) or exc
                        batch.append(Outcome(op, "rejected", None, type(cause).__name__, str(cause)))
                    else:
                        canonical: dict[str, str | None] = {
                            "order_id": str(link.order_id),
                            "order_number": link.order_number,
                        }
                        done = Operation(op.source_key, None, op.values, canonical, op.row)
                        batch.append(
                            Outcome(done, "created" if link.created else "unchanged", str(link.order_id))
                        )
                if len(batch) >= 100:
                    on_batch(batch)
                    batch = []
            if batch:
                on_batch(batch)
        finally:
            writer.engine.dispose()
        return requests


TARGET_KINDS.add("erp", ErpOrdersTarget())
