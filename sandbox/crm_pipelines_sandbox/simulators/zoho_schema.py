"""Zoho CRM v8 in the sandbox: module schemas, constants, error bodies and page tokens.

Split from :mod:`.zoho` (the simulator) so each file stays readable; the URLs the shapes come from
are listed there.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from crm_pipelines_sandbox.simulators.base import Response
from crm_pipelines_sandbox.simulators.records import FieldDef, ObjectDef

API = "/crm/v8"
ORG_ID = "20104567891"
# The first seven digits of every record id in one Zoho org (ids are 19 digits, increasing).
ID_PREFIX = "5725767"
USER = {"name": "Sandbox Integration", "id": f"{ID_PREFIX}000000411001", "email": "integration@example.com"}
DEFAULT_TOKEN_TTL = 3600.0
MAX_TOKENS_PER_REFRESH_TOKEN = 10
DEFAULT_PER_PAGE = 200
MAX_PER_PAGE = 200
MAX_FIELDS = 50
DISCRETE_PAGE_LIMIT = 2000  # records reachable with ``page`` alone
PAGE_TOKEN_LIMIT = 100_000  # records one chain of page tokens reaches
PAGE_TOKEN_TTL = 86_400.0
UPSERT_MAX_RECORDS = 100
RECYCLE_BIN_DAYS = 60
# Enterprise edition: 50,000 + 1,000 per user licence, at most 2,000,000 credits per rolling 24 h;
# the default is above any edition's so that tests never run out unless they lower it.
DEFAULT_DAILY_CREDITS = 5_000_000
DEFAULT_CONCURRENCY = 20
CURRENCY_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "CHF": "CHF", "SEK": "kr"}

# Lookup fields hold the related record's id in the store and are served as {"name", "id"}.
LOOKUPS: dict[str, dict[str, tuple[str, str]]] = {
    "Contacts": {"Account_Name": ("Accounts", "Account_Name")},
    "Deals": {"Account_Name": ("Accounts", "Account_Name")},
}
# Owner and audit users are org-wide in the sandbox: served, never stored per row.
SYSTEM_USER_FIELDS = ("Owner", "Created_By", "Modified_By")
# System-defined duplicate check fields per module, then the user-defined unique fields.
SYSTEM_DUPLICATE_FIELDS = {
    "Accounts": ("Account_Name",),
    "Contacts": ("Email",),
    "Deals": ("Deal_Name",),
    "Leads": ("Email",),
}
UNIQUE_FIELDS = ("External_Id",)
DISPLAY_NAME = {
    "Accounts": ("Account_Name",),
    "Contacts": ("First_Name", "Last_Name"),
    "Deals": ("Deal_Name",),
    "Leads": ("First_Name", "Last_Name"),
}
SORT_COLUMNS = {"id": None, "Created_Time": "_created", "Modified_Time": "_modified"}
JSON_TYPES = {
    "string": "string",
    "number": "double",
    "integer": "integer",
    "boolean": "boolean",
    "date": "string",
    "datetime": "string",
    "json": "jsonobject",
}

OBJECTS = (
    ObjectDef(
        name="Accounts",
        key="id",
        fields=(
            FieldDef("id"),
            FieldDef("Account_Name", required=True),
            FieldDef("Website"),
            FieldDef("Phone"),
            FieldDef("Billing_Street"),
            FieldDef("Billing_City"),
            FieldDef("Billing_Code"),
            FieldDef("Billing_Country"),
            FieldDef("Industry"),
            FieldDef("Annual_Revenue", "number"),
            FieldDef("External_Id"),
            FieldDef("Created_Time", "datetime"),
            FieldDef("Modified_Time", "datetime"),
            FieldDef("ERP_Customer_Number"),
        ),
        created_field="Created_Time",
        modified_field="Modified_Time",
    ),
    ObjectDef(
        name="Contacts",
        key="id",
        fields=(
            FieldDef("id"),
            FieldDef("First_Name"),
            FieldDef("Last_Name", required=True),
            FieldDef("Email"),
            FieldDef("Phone"),
            FieldDef("Title"),
            FieldDef("Mailing_Street"),
            FieldDef("Mailing_City"),
            FieldDef("Mailing_Zip"),
            FieldDef("Mailing_Country"),
            FieldDef("Date_of_Birth", "date"),
            FieldDef("Account_Name"),
            FieldDef("External_Id"),
            FieldDef("Created_Time", "datetime"),
            FieldDef("Modified_Time", "datetime"),
        ),
        created_field="Created_Time",
        modified_field="Modified_Time",
    ),
    ObjectDef(
        name="Deals",
        key="id",
        fields=(
            FieldDef("id"),
            FieldDef("Deal_Name", required=True),
            FieldDef("Amount", "number"),
            FieldDef("Currency"),
            FieldDef("Stage", required=True),
            FieldDef("Closing_Date", "date"),
            FieldDef("Account_Name"),
            FieldDef("External_Id"),
            FieldDef("Created_Time", "datetime"),
            FieldDef("Modified_Time", "datetime"),
            FieldDef("ERP_Order_Number"),
            FieldDef("ERP_Invoice_Numbers"),  # comma-separated
        ),
        created_field="Created_Time",
        modified_field="Modified_Time",
    ),
    # Prospects before conversion. Converting a lead (POST /Leads/{id}/actions/convert) makes a Contact
    # (and an Account, a Deal) and takes the lead out of the default list: GET /Leads answers only
    # unconverted leads unless ``converted=true|both`` is sent. A converted lead keeps its fields and
    # carries ``$converted: true`` and ``$converted_detail`` (the contact, account and deal ids it
    # became, who converted it and when); an unconverted one ``$converted: false`` and ``{}``. The two
    # ``$`` properties live in the store columns RECORD_PROPERTIES names; they are no fields: the fields
    # metadata leaves them out and a record shows them under their ``$`` names.
    # https://www.zoho.com/crm/developer/docs/api/v8/get-records.html (parameter ``converted``),
    # https://www.zoho.com/crm/developer/docs/api/v8/convert-lead.html
    ObjectDef(
        name="Leads",
        key="id",
        fields=(
            FieldDef("id"),
            FieldDef("First_Name"),
            FieldDef("Last_Name", required=True),
            FieldDef("Email"),
            FieldDef("Phone"),
            FieldDef("Company"),
            FieldDef("Designation"),
            FieldDef("Country"),
            FieldDef("Lead_Status"),
            FieldDef("Lead_Source"),
            FieldDef("Created_Time", "datetime"),
            FieldDef("Modified_Time", "datetime"),
            FieldDef("converted_flag", "boolean"),
            FieldDef("converted_detail", "json"),
        ),
        created_field="Created_Time",
        modified_field="Modified_Time",
    ),
)
# Record properties (``$``-prefixed) the API returns beside the fields, and the store columns holding
# them (a store column cannot be named with a ``$``); never in the fields metadata.
RECORD_PROPERTIES = {"$converted": "converted_flag", "$converted_detail": "converted_detail"}
# The Lead_Status picklist of a new org, and Lead_Source's.
LEAD_STATUSES = (
    "Not Contacted",
    "Attempted to Contact",
    "Contact in Future",
    "Contacted",
    "Junk Lead",
    "Lost Lead",
    "Not Qualified",
    "Pre-Qualified",
)
LEAD_SOURCES = (
    "Advertisement",
    "Cold Call",
    "Employee Referral",
    "External Referral",
    "Online Store",
    "Partner",
    "Public Relations",
    "Sales Email Alias",
    "Seminar Partner",
    "Internal Seminar",
    "Trade Show",
    "Web Download",
    "Web Research",
    "Chat",
)
# Custom fields (Setup > Modules and Fields): API names made from their labels. External_Id is the
# one the sync upserts by; the ERP fields hold what the ERP knows.
CUSTOM_FIELDS = {
    "Accounts": {"External_Id", "ERP_Customer_Number"},
    "Contacts": {"External_Id"},
    "Deals": {"External_Id", "ERP_Order_Number", "ERP_Invoice_Numbers"},
    "Leads": set(),
}
STANDARD_FIELDS = {
    obj.name: set(obj.field_names) - CUSTOM_FIELDS[obj.name] - set(RECORD_PROPERTIES.values())
    for obj in OBJECTS
}
# Single line fields hold up to 255 characters.
MAX_TEXT_LENGTH = 255


def zoho_error(status: int, code: str, message: str, details: Mapping[str, object] | None = None) -> Response:
    """Zoho's error body: ``code``, ``details``, ``message``, ``status: "error"``."""
    body = {"code": code, "details": dict(details or {}), "message": message, "status": "error"}
    return Response.json(status, body)


def record_error(code: str, message: str, details: Mapping[str, object]) -> dict[str, object]:
    return {"code": code, "details": dict(details), "message": message, "status": "error"}


def time_text(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def parse_instant(text: str) -> datetime | None:
    """An ISO 8601 instant with offset (``Z`` accepted); None when it is not one."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


@dataclass(frozen=True)
class PageToken:
    """What a page token carries: where the chain stands and what it is bound to."""

    module: str
    sort_by: str
    sort_order: str
    since: str  # canonical lower bound from If-Modified-Since, "" when none
    last_value: str
    last_rowid: int
    served: int
    expires: float  # epoch seconds

    def encode(self) -> str:
        payload = json.dumps(
            [
                self.module,
                self.sort_by,
                self.sort_order,
                self.since,
                self.last_value,
                self.last_rowid,
                self.served,
                self.expires,
            ],
            separators=(",", ":"),
        )
        return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> PageToken:
        padded = text + "=" * (-len(text) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
        module, sort_by, sort_order, since, last_value, last_rowid, served, expires = values
        return cls(
            str(module),
            str(sort_by),
            str(sort_order),
            str(since),
            str(last_value),
            int(last_rowid),
            int(served),
            float(expires),
        )


def json_value(field_type: str, value: object) -> object:
    if value is None:
        return None
    if field_type == "number":
        return float(value) if isinstance(value, int | float) else value
    if field_type == "integer":
        return int(value) if isinstance(value, int | float) else value
    if field_type == "boolean":
        return bool(value)
    if field_type == "json":
        return json.loads(str(value))
    return value
