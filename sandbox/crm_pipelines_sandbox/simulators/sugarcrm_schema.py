"""The schema of the SugarCRM simulator: modules and fields as Sugar's vardefs name them, currencies, stages.

See :mod:`.sugarcrm` for the documents relied on.
"""

from __future__ import annotations

from crm_pipelines_sandbox.simulators.records import FieldDef, ObjectDef

ACCOUNTS = ObjectDef(
    name="Accounts",
    key="id",
    fields=(
        FieldDef("id"),
        FieldDef("name", required=True),
        FieldDef("date_entered", "datetime"),
        FieldDef("date_modified", "datetime"),
        FieldDef("deleted", "boolean"),
        FieldDef("created_by"),
        FieldDef("modified_user_id"),
        FieldDef("account_type"),
        FieldDef("industry"),
        FieldDef("annual_revenue"),  # a varchar in Sugar's vardefs, not a number
        FieldDef("website"),
        FieldDef("phone_office"),
        FieldDef("email1"),
        FieldDef("billing_address_street"),
        FieldDef("billing_address_city"),
        FieldDef("billing_address_postalcode"),
        FieldDef("billing_address_country"),
        FieldDef("sync_key"),
        # Studio fields (custom_fields source): Sugar names them *_c.
        FieldDef("erp_customer_number_c"),
    ),
    created_field="date_entered",
    modified_field="date_modified",
    deleted_flag="deleted",
)
CONTACTS = ObjectDef(
    name="Contacts",
    key="id",
    fields=(
        FieldDef("id"),
        FieldDef("first_name"),
        FieldDef("last_name", required=True),
        FieldDef("date_entered", "datetime"),
        FieldDef("date_modified", "datetime"),
        FieldDef("deleted", "boolean"),
        FieldDef("created_by"),
        FieldDef("modified_user_id"),
        FieldDef("title"),
        FieldDef("phone_work"),
        FieldDef("email1"),
        FieldDef("primary_address_street"),
        FieldDef("primary_address_city"),
        FieldDef("primary_address_postalcode"),
        FieldDef("primary_address_country"),
        FieldDef("birthdate", "date"),
        FieldDef("account_id"),
        FieldDef("sync_key"),
    ),
    created_field="date_entered",
    modified_field="date_modified",
    deleted_flag="deleted",
)
OPPORTUNITIES = ObjectDef(
    name="Opportunities",
    key="id",
    fields=(
        FieldDef("id"),
        FieldDef("name", required=True),
        FieldDef("date_entered", "datetime"),
        FieldDef("date_modified", "datetime"),
        FieldDef("deleted", "boolean"),
        FieldDef("created_by"),
        FieldDef("modified_user_id"),
        FieldDef("amount", "number"),
        FieldDef("currency_id"),
        FieldDef("sales_stage"),
        FieldDef("probability", "integer"),
        FieldDef("date_closed", "date", required=True),
        FieldDef("account_id"),
        FieldDef("sync_key"),
        FieldDef("erp_order_number_c"),
        FieldDef("erp_invoice_numbers_c"),  # comma-separated, a TextField of 255
    ),
    created_field="date_entered",
    modified_field="date_modified",
    deleted_flag="deleted",
)
# The Cases module (Sugar Sell/Serve): name is the subject, case_number an auto-increment number the
# API never takes; state (Open/Closed) groups status; resolution and work_log are text areas. Serve's
# resolved_datetime is stamped when a case moves to a closed status. zendesk_ticket_id_c is the Studio
# field the service-desk flow writes the ticket id into.
CASES = ObjectDef(
    name="Cases",
    key="id",
    fields=(
        FieldDef("id"),
        FieldDef("name", required=True),
        FieldDef("case_number", "integer"),
        FieldDef("date_entered", "datetime"),
        FieldDef("date_modified", "datetime"),
        FieldDef("deleted", "boolean"),
        FieldDef("created_by"),
        FieldDef("modified_user_id"),
        FieldDef("description"),
        FieldDef("status"),
        FieldDef("state"),
        FieldDef("priority"),
        FieldDef("type"),
        FieldDef("source"),
        FieldDef("resolution"),
        FieldDef("work_log"),
        FieldDef("resolved_datetime", "datetime"),
        FieldDef("account_id"),
        FieldDef("primary_contact_id"),
        FieldDef("sync_key"),
        FieldDef("zendesk_ticket_id_c"),
    ),
    created_field="date_entered",
    modified_field="date_modified",
    deleted_flag="deleted",
)
# The Leads module: a prospect before conversion. status is lead_status_dom (New, Assigned, In Process,
# Converted, Recycled, Dead); converting a lead (Convert Lead) sets status Converted, converted 1 and the
# contact_id of the Contact it became (account_id, opportunity_id too) - the lead stays in the module.
# account_name is free text (the company the lead names), lead_source lead_source_dom. Deleting sets
# deleted = 1 like every module. (Sugar's modules/Leads/vardefs.php and the Leads chapter of the
# application guide.)
LEADS = ObjectDef(
    name="Leads",
    key="id",
    fields=(
        FieldDef("id"),
        FieldDef("first_name"),
        FieldDef("last_name", required=True),
        FieldDef("date_entered", "datetime"),
        FieldDef("date_modified", "datetime"),
        FieldDef("deleted", "boolean"),
        FieldDef("created_by"),
        FieldDef("modified_user_id"),
        FieldDef("title"),
        FieldDef("phone_work"),
        FieldDef("email1"),
        FieldDef("account_name"),
        FieldDef("primary_address_country"),
        FieldDef("status"),
        FieldDef("lead_source"),
        FieldDef("converted", "boolean"),
        FieldDef("contact_id"),
    ),
    created_field="date_entered",
    modified_field="date_modified",
    deleted_flag="deleted",
)
OBJECTS = (ACCOUNTS, CONTACTS, OPPORTUNITIES, CASES, LEADS)
READ_ONLY = frozenset(
    {"id", "date_entered", "date_modified", "deleted", "created_by", "modified_user_id", "case_number"}
)
# The user the API runs as (GET /me: the administrator); the seeded records were entered by it too.
API_USER_ID = "1"
# Sugar vardef types of the built-in fields (metadata); custom fields get theirs from the store type.
SUGAR_TYPES = {
    "id": "id",
    "name": "name",
    "date_entered": "datetime",
    "date_modified": "datetime",
    "deleted": "bool",
    "created_by": "assigned_user_name",
    "modified_user_id": "assigned_user_name",
    "account_type": "enum",
    "industry": "enum",
    "sales_stage": "enum",
    "website": "url",
    "phone_office": "phone",
    "phone_work": "phone",
    "email1": "varchar",
    "amount": "currency",
    "currency_id": "currency_id",
    "probability": "int",
    "date_closed": "date",
    "account_id": "id",
    "sync_key": "varchar",
    "case_number": "int",
    "description": "text",
    "status": "enum",
    "state": "enum",
    "priority": "enum",
    "type": "enum",
    "source": "enum",
    "resolution": "text",
    "work_log": "text",
    "resolved_datetime": "datetime",
    "primary_contact_id": "id",
    "account_name": "varchar",
    "lead_source": "enum",
    "converted": "bool",
    "contact_id": "id",
}
STORE_TO_SUGAR = {
    "string": "varchar",
    "number": "decimal",
    "integer": "int",
    "boolean": "bool",
    "date": "date",
    "datetime": "datetime",
    "json": "text",
}
# Sugar's currency ids: -99 is the system currency (US Dollar); others are UUIDs of the Currencies module.
CURRENCIES = {
    "USD": ("-99", "US Dollars", "$", 1.0),
    "EUR": ("9a5b6c7d-0001-4e2f-8a10-6b3c2d1e0f01", "Euro", "€", 0.92),
    "GBP": ("9a5b6c7d-0002-4e2f-8a10-6b3c2d1e0f02", "British Pound", "£", 0.79),
    "CHF": ("9a5b6c7d-0003-4e2f-8a10-6b3c2d1e0f03", "Swiss Franc", "CHF", 0.88),
}
# Canonical stage -> Sugar's sales_stage dropdown value, and the probability Sugar defaults it to.
STAGE_VALUES = {
    "prospecting": "Prospecting",
    "qualification": "Qualification",
    "proposal": "Proposal/Price Quote",
    "negotiation": "Negotiation/Review",
    "closed_won": "Closed Won",
    "closed_lost": "Closed Lost",
}
PROBABILITY = {
    "Prospecting": 10,
    "Qualification": 20,
    "Proposal/Price Quote": 65,
    "Negotiation/Review": 80,
    "Closed Won": 100,
    "Closed Lost": 0,
}
# Canonical case status -> Sugar's (status, state): state Open holds New, Assigned, Pending Input; state
# Closed holds Closed (solved), Rejected and Duplicate (closed without a fix). Sugar has no "on hold":
# it is Pending Input too.
CASE_STATUS_VALUES = {
    "new": ("New", "Open"),
    "open": ("Assigned", "Open"),
    "pending": ("Pending Input", "Open"),
    "on_hold": ("Pending Input", "Open"),
    "solved": ("Closed", "Closed"),
    "closed": ("Rejected", "Closed"),
}
# case_priority_dom: P1 High, P2 Medium, P3 Low.
CASE_PRIORITY_VALUES = {"urgent": "P1", "high": "P1", "normal": "P2", "low": "P3"}
# case_type_dom (Administration, Product, User) and source_dom (Internal, Forum, Web, InboundEmail,
# Twitter) for what the seeds call a case's type and channel.
CASE_TYPE_VALUES = {"question": "User", "incident": "Product", "problem": "Product", "task": "Administration"}
# Canonical lead status -> lead_status_dom values (one chosen by the lead's ref). Sugar has no funnel
# stage on a lead and no "qualified" status short of converting: a qualified lead is In Process.
LEAD_STATUS_VALUES: dict[str, tuple[str, ...]] = {
    "new": ("New",),
    "working": ("Assigned", "In Process"),
    "nurturing": ("Recycled",),
    "qualified": ("In Process",),
    "unqualified": ("Dead",),
    "converted": ("Converted",),
}
# lead_source_dom: Cold Call, Existing Customer, Self Generated, Employee, Partner, Public Relations,
# Direct Mail, Conference, Trade Show, Web Site, Word of mouth, Email, Campaign, Support Portal User,
# Other; the seeds' sources in it.
LEAD_SOURCE_VALUES = {
    "web": "Web Site",
    "trade show": "Trade Show",
    "partner": "Partner",
    "advertisement": "Campaign",
    "employee referral": "Employee",
    "seminar": "Conference",
}
CASE_SOURCE_VALUES = {
    "email": "InboundEmail",
    "web": "Web",
    "phone": "Internal",
    "chat": "Twitter",
    "api": "Web",
}
