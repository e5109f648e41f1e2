"""The marts analysts query: one SQL model each over core, built in one transaction, with column comments.

Each :class:`Mart` names the core tables it reads; :func:`build_mart` refuses to build it before they
exist, so a partial night never leaves an empty mart behind. A mart with a ``key`` (one row per key) is
merged: its model is computed in DuckDB and only the rows that differ from the ones the mart holds are
written, in the mart and in its masked table.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from crm_pipelines.privacy.masking import build_masked_view, merge_masked_view
from crm_pipelines.warehouse.connection import table_exists
from crm_pipelines.warehouse.load import MERGE_CHANGES, Merged, comment_columns, merge_table, replace_table

__all__ = ["MARTS", "Mart", "MissingCoreTable", "build_mart", "merge_mart"]


@dataclass(frozen=True)
class Mart:
    """A mart: its SQL model over core and its columns' descriptions.

    ``key``: the columns that identify a row (the model gives one row per key); with a key the mart is
    merged by it, without one it is rebuilt in full each night. A merged mart keeps no row order (the
    models have no ORDER BY, which would sort every row each night for nothing): order in the query.
    """

    name: str
    description: str
    deps: tuple[str, ...]
    sql: str
    columns: dict[str, str]
    key: tuple[str, ...] = ()


ACCOUNT_OF = """
    LEFT JOIN core.xref_identity AS x ON x.record_id = f.account_record_id AND x.entity = 'account'
"""

MARTS = (
    Mart(
        name="dim_account",
        description="One row per real-world customer company (golden record), merged across CRM and ERP.",
        deps=("identity",),
        sql="""
            SELECT g.golden_id AS account_id, g.name, g.domain, g.phone, g.email, g.street, g.city,
                   g.postal_code, g.country, g.industry, g.vat_number, g.annual_revenue,
                   g.sources, g.record_count AS source_records,
                   erp.erp_customer_id,
                   coalesce(c.contacts, 0) AS contacts
            FROM core.golden_account AS g
            LEFT JOIN (
                SELECT golden_id, min(source_id) AS erp_customer_id
                FROM core.xref_identity WHERE entity = 'account' AND source = 'erp' GROUP BY golden_id
            ) AS erp USING (golden_id)
            LEFT JOIN (
                SELECT golden_account_id AS golden_id, count(*) AS contacts
                FROM core.golden_contact GROUP BY golden_account_id
            ) AS c USING (golden_id)
        """,
        columns={
            "account_id": (
                "Golden account id; join key of every fact. Kept from night to night while the company's "
                "records stay together; an id merged into another or split off is in core.golden_id_history, "
                "and core.golden_id_current maps any earlier id to today's."
            ),
            "name": "Company name, from the system that owns it (crm_pipelines/ownership.yaml).",
            "domain": "Web domain.",
            "phone": "Main phone in E.164.",
            "email": "Main e-mail address.",
            "street": "Street address.",
            "city": "City.",
            "postal_code": "Postal code.",
            "country": "ISO 3166-1 alpha-2 country code.",
            "industry": "Industry.",
            "vat_number": "VAT registration number (from the ERP).",
            "annual_revenue": "Annual revenue as the CRM records it.",
            "sources": "Systems that hold this customer, comma separated.",
            "source_records": "Number of source records merged into this golden record.",
            "erp_customer_id": "ERP customer id, when the customer exists in the ERP.",
            "contacts": "Number of golden contacts at this account.",
        },
        key=("account_id",),
    ),
    Mart(
        name="dim_contact",
        description="One row per real-world person (golden record), merged across every connected CRM.",
        deps=("identity",),
        sql="""
            SELECT g.golden_id AS contact_id, g.golden_account_id AS account_id, g.first_name, g.last_name,
                   g.email, g.phone, g.title, g.city, g.postal_code, g.country, g.sources,
                   g.record_count AS source_records
            FROM core.golden_contact AS g
        """,
        columns={
            "contact_id": (
                "Golden contact id. Kept from night to night while the person's records stay together; "
                "core.golden_id_current maps any earlier id (merged into another since) to today's."
            ),
            "account_id": "Golden account the person works for.",
            "first_name": "Given name.",
            "last_name": "Family name.",
            "email": "E-mail address, lower case.",
            "phone": "Phone in E.164.",
            "title": "Job title.",
            "city": "Mailing city (street and birth date are personal data: in core.golden_contact only).",
            "postal_code": "Mailing postal code.",
            "country": "Mailing country: ISO 3166-1 alpha-2 code.",
            "sources": "Systems that hold this person, comma separated.",
            "source_records": "Number of source records merged into this golden record.",
        },
        key=("contact_id",),
    ),
    Mart(
        name="dim_account_history",
        description=(
            "Every version of every golden account (SCD type 2): what dim_account said on any night. "
            "As of a night d: valid_from <= d AND (valid_to IS NULL OR d < valid_to)."
        ),
        deps=("identity",),
        sql="""
            SELECT h.golden_id AS account_id, h.valid_from, h.valid_to, h.is_current,
                   h.name, h.domain, h.phone, h.email, h.street, h.city, h.postal_code, h.country,
                   h.industry, h.vat_number, h.annual_revenue, h.sources, h.record_count AS source_records,
                   h.run_id, h.loaded_at
            FROM core.golden_account_history AS h
        """,
        columns={
            "account_id": "Golden account id (dim_account.account_id); one row per version of it.",
            "valid_from": "First night (partition, business day) this version held.",
            "valid_to": (
                "Night the next version took over, or the id was merged away or gone (exclusive); "
                "null while current."
            ),
            "is_current": "The version dim_account shows today.",
            "name": "Company name, from the system that owns it (crm_pipelines/ownership.yaml).",
            "domain": "Web domain.",
            "phone": "Main phone in E.164.",
            "email": "Main e-mail address.",
            "street": "Street address.",
            "city": "City.",
            "postal_code": "Postal code.",
            "country": "ISO 3166-1 alpha-2 country code.",
            "industry": "Industry.",
            "vat_number": "VAT registration number (from the ERP).",
            "annual_revenue": "Annual revenue as the CRM records it.",
            "sources": "Systems that held this customer, comma separated.",
            "source_records": "Number of source records merged into this version.",
            "run_id": "Dagster run whose identity load opened this version.",
            "loaded_at": "When that load committed it (UTC).",
        },
        key=("account_id", "valid_from"),
    ),
    Mart(
        name="dim_contact_history",
        description=(
            "Every version of every golden contact (SCD type 2): what dim_contact said on any night. "
            "As of a night d: valid_from <= d AND (valid_to IS NULL OR d < valid_to)."
        ),
        deps=("identity",),
        sql="""
            SELECT h.golden_id AS contact_id, h.valid_from, h.valid_to, h.is_current,
                   h.golden_account_id AS account_id, h.first_name, h.last_name, h.email, h.phone, h.title,
                   h.city, h.postal_code, h.country, h.sources, h.record_count AS source_records,
                   h.run_id, h.loaded_at
            FROM core.golden_contact_history AS h
        """,
        columns={
            "contact_id": "Golden contact id (dim_contact.contact_id); one row per version of it.",
            "valid_from": "First night (partition, business day) this version held.",
            "valid_to": (
                "Night the next version took over, or the id was merged away or gone (exclusive); "
                "null while current."
            ),
            "is_current": "The version dim_contact shows today.",
            "account_id": "Golden account the person worked for in this version.",
            "first_name": "Given name.",
            "last_name": "Family name.",
            "email": "E-mail address, lower case.",
            "phone": "Phone in E.164.",
            "title": "Job title.",
            "city": "Mailing city (street and birth date: in core.golden_contact_history only).",
            "postal_code": "Mailing postal code.",
            "country": "Mailing country: ISO 3166-1 alpha-2 code.",
            "sources": "Systems that held this person, comma separated.",
            "source_records": "Number of source records merged into this version.",
            "run_id": "Dagster run whose identity load opened this version.",
            "loaded_at": "When that load committed it (UTC).",
        },
        key=("contact_id", "valid_from"),
    ),
    Mart(
        name="fact_opportunity",
        description="The sales pipeline: every CRM opportunity and deal, on golden accounts.",
        deps=("identity", "opportunity"),
        sql=f"""
            SELECT f.record_id AS opportunity_id, f.source, f.source_id,
                   coalesce(x.golden_id, mx.golden_id) AS account_id,
                   f.name, f.stage, f.amount, f.currency, f.close_date, f.is_closed, f.is_won,
                   f.mirrors_record_id AS mirrors_opportunity_id, f.updated_at,
                   coalesce(f.is_deleted, false) AS is_deleted
            FROM core.opportunity AS f {ACCOUNT_OF}
            LEFT JOIN core.opportunity AS m ON m.record_id = f.mirrors_record_id
            LEFT JOIN core.xref_identity AS mx ON mx.record_id = m.account_record_id AND mx.entity = 'account'
        """,
        columns={
            "opportunity_id": "Opportunity id: `<source>:<id in the CRM>`.",
            "source": "CRM the opportunity lives in.",
            "source_id": "Id in that CRM.",
            "account_id": "Golden account.",
            "name": "Opportunity name.",
            "stage": "Canonical stage: prospecting, qualification, proposal, negotiation, closed_won, closed_lost.",
            "amount": "Amount.",
            "currency": "ISO 4217 currency.",
            "close_date": "Expected or actual close date.",
            "is_closed": "Closed (won or lost).",
            "is_won": "Closed and won.",
            "mirrors_opportunity_id": (
                "The opportunity this row mirrors in another CRM (a HubSpot deal kept in step with a "
                "Dynamics 365 opportunity): sum pipeline over the rows where it is null, to count each once."
            ),
            "updated_at": "Last modified in the CRM (UTC).",
            "is_deleted": "Deleted in the CRM (kept as a soft delete).",
        },
        key=("opportunity_id",),
    ),
    Mart(
        name="fact_sales_order",
        description="ERP sales orders with their totals, on golden accounts and linked to CRM opportunities.",
        deps=("identity", "sales_order", "opportunity", "order_links"),
        sql=f"""
            SELECT f.record_id AS sales_order_id, f.order_number, x.golden_id AS account_id, f.order_date,
                   f.currency, f.status, f.amount, f.line_count,
                   o.record_id AS opportunity_id, f.updated_at, coalesce(f.is_deleted, false) AS is_deleted
            FROM core.sales_order AS f {ACCOUNT_OF}
            LEFT JOIN core.order_links AS ol ON ol.order_record_id = f.record_id
            LEFT JOIN core.opportunity AS o ON o.record_id = ol.opportunity_record_id
        """,
        columns={
            "sales_order_id": "Order id: `erp:<order id>`.",
            "order_number": "ERP order number.",
            "account_id": "Golden account that ordered.",
            "order_date": "Order date.",
            "currency": "ISO 4217 currency.",
            "status": "open, shipped, invoiced or cancelled.",
            "amount": "Order total (sum of lines).",
            "line_count": "Number of lines.",
            "opportunity_id": "CRM opportunity the order came from, when known.",
            "updated_at": "Last modified in the ERP (UTC).",
            "is_deleted": "Deleted in the ERP (kept as a soft delete).",
        },
        key=("sales_order_id",),
    ),
    Mart(
        name="fact_invoice",
        description="Invoices from the ERP and the billing system's SFTP files, with what has been paid.",
        deps=("identity", "invoice", "payment"),
        sql=f"""
            SELECT f.record_id AS invoice_id, f.source, f.invoice_number, x.golden_id AS account_id,
                   f.order_number, f.invoice_date, f.due_date, f.currency, f.amount_net, f.amount_tax,
                   f.amount_gross,
                   coalesce(p.amount_paid, 0)::DECIMAL(18, 2) AS amount_paid,
                   (f.amount_gross - coalesce(p.amount_paid, 0))::DECIMAL(18, 2) AS amount_open,
                   f.status, coalesce(f.is_deleted, false) AS is_deleted
            FROM core.invoice AS f {ACCOUNT_OF}
            LEFT JOIN (
                SELECT invoice_number, sum(amount) AS amount_paid FROM core.payment
                WHERE NOT coalesce(is_deleted, false) GROUP BY invoice_number
            ) AS p USING (invoice_number)
        """,
        columns={
            "invoice_id": "Invoice id: `<source>:<id>`.",
            "source": "erp or finance_sftp (the billing system's files).",
            "invoice_number": "Invoice number.",
            "account_id": "Golden account invoiced.",
            "order_number": "Sales order billed, when known.",
            "invoice_date": "Invoice date.",
            "due_date": "Due date.",
            "currency": "ISO 4217 currency.",
            "amount_net": "Net amount.",
            "amount_tax": "Tax amount.",
            "amount_gross": "Gross amount.",
            "amount_paid": "Sum of payments received for this invoice.",
            "amount_open": "Gross amount minus payments.",
            "status": "open, paid or cancelled, as the source says.",
            "is_deleted": "Deleted in the source (kept as a soft delete).",
        },
        key=("invoice_id",),
    ),
    Mart(
        name="fact_lead_funnel",
        description=(
            "The marketing-to-sales funnel: every lead (HubSpot contacts in a lead stage, CRM leads) with "
            "its stage, whether and when it converted, and the golden person it is or became."
        ),
        deps=("identity", "lead"),
        sql="""
            SELECT f.record_id AS lead_id, f.source, f.source_id, c.golden_id AS contact_id,
                   f.lifecycle_stage,
                   CASE f.lifecycle_stage WHEN 'lead' THEN 1 WHEN 'mql' THEN 2 WHEN 'sql' THEN 3
                        WHEN 'opportunity' THEN 4 WHEN 'customer' THEN 5 END AS stage_rank,
                   f.status, f.lead_source, f.country,
                   coalesce(f.is_converted, false) AS is_converted,
                   f.created_at, f.converted_at,
                   CASE WHEN f.converted_at >= f.created_at
                        THEN round(epoch(f.converted_at - f.created_at) / 86400.0, 2) END AS days_to_convert,
                   f.updated_at, coalesce(f.is_deleted, false) AS is_deleted
            FROM core.lead AS f
            LEFT JOIN core.xref_identity AS c ON c.record_id = f.contact_record_id AND c.entity = 'contact'
        """,
        columns={
            "lead_id": "Lead id: `<source>:<id>` (a HubSpot lead is its contact's id).",
            "source": "System the lead lives in.",
            "source_id": "Id in that system.",
            "contact_id": "Golden contact the lead is, or was converted into, when known.",
            "lifecycle_stage": "Funnel stage: lead, mql, sql, opportunity, customer.",
            "stage_rank": "The stage's place in the funnel, 1 (lead) to 5 (customer): count leads at or past a stage.",
            "status": "Lead status: new, working, nurturing, qualified, unqualified, converted.",
            "lead_source": "Where the lead came from, as the source names it.",
            "country": "ISO 3166-1 alpha-2 country code.",
            "is_converted": "Converted into a contact/opportunity, or qualified for sales.",
            "created_at": "When the lead was captured (UTC).",
            "converted_at": "When it converted or was qualified (UTC), when known.",
            "days_to_convert": "Days from capture to conversion.",
            "updated_at": "Last modified in the source (UTC).",
            "is_deleted": "Deleted in the source (kept as a soft delete).",
        },
        key=("lead_id",),
    ),
    Mart(
        name="fact_case",
        description=(
            "Support cases and service-desk tickets on golden accounts and people, with the time from "
            "opened to resolved; a CRM case and the ticket opened for it are linked by related_case_id."
        ),
        deps=("identity", "support_case"),
        sql=f"""
            SELECT f.record_id AS case_id, f.source, f.source_id, f.case_number,
                   x.golden_id AS account_id, c.golden_id AS contact_id,
                   f.related_record_id AS related_case_id,
                   f.status, f.priority, f.case_type, f.origin,
                   f.status IN ('solved', 'closed') AS is_resolved,
                   f.created_at, f.resolved_at,
                   CASE WHEN f.resolved_at >= f.created_at
                        THEN round(epoch(f.resolved_at - f.created_at) / 3600.0, 2) END AS hours_to_resolve,
                   f.updated_at, coalesce(f.is_deleted, false) AS is_deleted
            FROM core.support_case AS f {ACCOUNT_OF}
            LEFT JOIN core.xref_identity AS c ON c.record_id = f.contact_record_id AND c.entity = 'contact'
        """,
        columns={
            "case_id": "Case id: `<source>:<id>` (a CRM case or a service-desk ticket).",
            "source": "System the case lives in.",
            "source_id": "Id in that system.",
            "case_number": "Number people quote (case number, ticket number).",
            "account_id": "Golden account the case is for.",
            "contact_id": "Golden contact who raised it.",
            "related_case_id": "The same case in the other system (the ticket of a CRM case, or the reverse).",
            "status": "new, open, pending, on_hold, solved or closed.",
            "priority": "low, normal, high or urgent.",
            "case_type": "question, incident, problem or task, as the source names it.",
            "origin": "Channel: email, web, phone, chat, api.",
            "is_resolved": "Solved or closed.",
            "created_at": "Opened (UTC).",
            "resolved_at": "Solved or closed (UTC).",
            "hours_to_resolve": "Hours from opened to resolved.",
            "updated_at": "Last modified in the source (UTC).",
            "is_deleted": "Deleted in the source (kept as a soft delete).",
        },
        key=("case_id",),
    ),
)

REQUIRED_CORE = {"identity": ("golden_account", "golden_contact", "xref_identity")}


class MissingCoreTable(Exception):
    """A core table a mart reads has not been loaded yet."""


def build_mart(con: duckdb.DuckDBPyConnection, mart: Mart) -> int:
    """Build one mart inside the caller's transaction (:func:`merge_mart`); returns its rows."""
    return merge_mart(con, mart).rows


def merge_mart(con: duckdb.DuckDBPyConnection, mart: Mart) -> Merged:
    """Bring one mart and its masked table to its model inside the caller's transaction; comment its columns.

    A mart with a key is merged (:func:`~crm_pipelines.warehouse.load.merge_table`): only the keys whose
    row differs are written, and only theirs in ``analyst.<mart>``; the comments are written only where
    they differ. It ends as a full rebuild would leave it. A mart without a key is rebuilt in full.

    Returns:
        Rows held and the keys inserted, updated and deleted (a rebuild counts every row inserted).

    Raises:
        MissingCoreTable: a core table it reads does not exist yet.
    """
    for dep in mart.deps:
        for table in REQUIRED_CORE.get(dep, (dep,)):
            if not table_exists(con, "core", table):
                raise MissingCoreTable(f"core.{table} does not exist yet: load core/{dep} first")
    if mart.key:
        merged = merge_table(con, schema="marts", table=mart.name, select_sql=mart.sql, key=mart.key)
    else:
        rows = replace_table(con, schema="marts", table=mart.name, select_sql=mart.sql)
        merged = Merged(rows=rows, inserted=rows, updated=0, deleted=0, rebuilt=True)
    comment_columns(con, schema="marts", table=mart.name, descriptions=mart.columns)
    # The analysts' view of it, personal data masked as declared (crm_pipelines/privacy/masking.py).
    if merged.rebuilt:
        build_masked_view(con, mart=mart.name, descriptions=mart.columns)
    else:
        merge_masked_view(con, mart=mart.name, descriptions=mart.columns, key=mart.key, changes=MERGE_CHANGES)
    return merged
