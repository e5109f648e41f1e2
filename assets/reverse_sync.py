"""Reverse sync: closed-won CRM opportunities become ERP sales orders (order-to-cash)."""

from decimal import Decimal

import dagster as dg

from crm_pipelines.databases.order_to_cash import Opportunity, OrderWriter
from crm_pipelines.partitions import NIGHTLY_PARTITIONS
from crm_pipelines.warehouse.connection import table_exists
from resources.erp_database import ErpDatabaseResource
from resources.lake import WarehouseResource

# Closed-won opportunities without an ERP order, with the ERP customer their account resolved to.
CANDIDATES_SQL = """
SELECT o.record_id, o.amount, o.currency, o.close_date, o.name, min(TRY_CAST(e.source_id AS BIGINT))
FROM core.opportunity AS o
JOIN core.xref_identity AS a ON a.record_id = o.account_record_id AND a.entity = 'account'
JOIN core.xref_identity AS e ON e.golden_id = a.golden_id AND e.entity = 'account' AND e.source = 'erp'
WHERE o.stage = 'closed_won' AND o.amount IS NOT NULL
GROUP BY ALL
ORDER BY o.record_id
"""

LINK_DDL = """
CREATE TABLE IF NOT EXISTS core.erp_order_link (
    crm_opportunity_ref VARCHAR PRIMARY KEY,  -- '<source>:<opportunity id>'
    erp_order_id BIGINT NOT NULL,
    erp_order_number VARCHAR NOT NULL,
    partition VARCHAR NOT NULL
)
"""


class SalesOrdersConfig(dg.Config):
    """Writing into the ERP is opt-in: a run writes orders only when ``create_orders`` is true."""

    create_orders: bool = False


@dg.asset(
    key=["erp", "sales_orders_from_crm"],
    deps=[dg.AssetKey(["core", "opportunity"])],
    group_name="reverse_sync",
    partitions_def=NIGHTLY_PARTITIONS,
    kinds={"sql"},
    pool="warehouse",
    description="Creates an ERP sales order for each closed-won opportunity, once; order numbers land in core.erp_order_link.",
)
def erp_sales_orders_from_crm(
    context: dg.AssetExecutionContext,
    config: SalesOrdersConfig,
    erp_database: ErpDatabaseResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult[None]:
    with warehouse.get().connect(read_only=True) as con:
        ready = table_exists(con, "core", "opportunity") and table_exists(con, "core", "xref_identity")
        rows = con.execute(CANDIDATES_SQL).fetchall() if ready else []
    candidates = [
        Opportunity(str(r[0]), int(r[5]), Decimal(str(r[1])), str(r[2] or ""), r[3], str(r[4] or ""))
        for r in rows
        if r[5] is not None
    ]
    if not config.create_orders:
        context.log.info(f"{len(candidates)} closed-won opportunities; create_orders is off, nothing written")
        return dg.MaterializeResult(
            metadata={"candidates": dg.MetadataValue.int(len(candidates)), "orders_created": 0}
        )
    writer = OrderWriter(erp_database.engine())
    links = [writer.create(opportunity) for opportunity in candidates]
    writer.engine.dispose()
    with warehouse.get().transaction() as con:
        con.execute(LINK_DDL)
        for link in links:
            con.execute(
                "INSERT OR REPLACE INTO core.erp_order_link VALUES (?, ?, ?, ?)",
                [link.crm_opportunity_ref, link.order_id, link.order_number, context.partition_key],
            )
    created = sum(link.created for link in links)
    return dg.MaterializeResult(
        metadata={
            "candidates": dg.MetadataValue.int(len(candidates)),
            "orders_created": dg.MetadataValue.int(created),
            "orders_already_there": dg.MetadataValue.int(len(links) - created),
        }
    )
