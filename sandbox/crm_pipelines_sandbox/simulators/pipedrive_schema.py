"""Pipedrive API v2 in the sandbox: object schemas, custom field keys, constants, error bodies, cursors.

Split from :mod:`.pipedrive` (the simulator) so each file stays readable; the URLs the shapes come
from are listed there.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import UTC, datetime

from crm_pipelines_sandbox.simulators.base import RateLimit, Response
from crm_pipelines_sandbox.simulators.records import FieldDef, ObjectDef

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
SEARCH_MAX_LIMIT = 100
MAX_CUSTOM_FIELD_KEYS = 15
DELETED_DEALS_DAYS = 30
OWNER_ID = 13_540_546
# Professional plan with an api_token: 80 requests per 2 s; the daily budget is 30,000 base tokens
# x plan multiplier x seats (here 4 x 10). Reported in headers when no stricter limit is configured.
NOMINAL_BURST = RateLimit(80, 2.0)
DEFAULT_DAILY_BUDGET = 1_200_000
DAILY_WRITE_REQUESTS = 10_000  # the POST/PUT fair-usage limit reported in x-daily-requests-left
# Token cost per call (the docs list a cost per endpoint; v2 lists are cheaper than v1, search dearer).
TOKEN_COSTS = {"list": 10, "get": 1, "search": 20, "write": 5, "fields": 20}
ERROR_INFO = "Please check developers.pipedrive.com for more information about Pipedrive API."


def field_hash(label: str) -> str:
    """A custom field key the way Pipedrive makes them: 40 hex characters (here always starting a-f)."""
    digest = hashlib.sha1(f"crm-pipelines:{label}".encode()).hexdigest()
    return "abcdef"[int(digest[0], 16) % 6] + digest[1:]


ORG_WEBSITE = field_hash("organizations:website")
ORG_PHONE = field_hash("organizations:phone")
ORG_INDUSTRY = field_hash("organizations:industry")
ORG_ANNUAL_REVENUE = field_hash("organizations:annual_revenue")
ORG_EXTERNAL_ID = field_hash("organizations:external_id")
PERSON_COUNTRY = field_hash("persons:country")
PERSON_EXTERNAL_ID = field_hash("persons:external_id")
DEAL_EXTERNAL_ID = field_hash("deals:external_id")
ORG_ERP_CUSTOMER_NUMBER = field_hash("organizations:erp_customer_number")
DEAL_ERP_ORDER_NUMBER = field_hash("deals:erp_order_number")
DEAL_ERP_INVOICE_NUMBERS = field_hash("deals:erp_invoice_numbers")

# Custom field labels and Pipedrive field types, for the field metadata endpoints.
CUSTOM_LABELS = {
    ORG_WEBSITE: ("Website", "varchar"),
    ORG_PHONE: ("Phone", "phone"),
    ORG_INDUSTRY: ("Industry", "varchar"),
    ORG_ANNUAL_REVENUE: ("Annual revenue", "double"),
    ORG_EXTERNAL_ID: ("External ID", "varchar"),
    PERSON_COUNTRY: ("Country", "varchar"),
    PERSON_EXTERNAL_ID: ("External ID", "varchar"),
    DEAL_EXTERNAL_ID: ("External ID", "varchar"),
    # What the ERP knows, written back by the two-way sync (text fields: at most 255 characters).
    ORG_ERP_CUSTOMER_NUMBER: ("ERP customer number", "varchar"),
    DEAL_ERP_ORDER_NUMBER: ("ERP order number", "varchar"),
    DEAL_ERP_INVOICE_NUMBERS: ("ERP invoice numbers", "varchar"),
}
MAX_TEXT_LENGTH = 255

STANDARD: dict[str, tuple[FieldDef, ...]] = {
    "organizations": (
        FieldDef("id", "integer"),
        FieldDef("name", required=True),
        FieldDef("owner_id", "integer"),
        FieldDef("add_time", "datetime"),
        FieldDef("update_time", "datetime"),
        FieldDef("visible_to", "integer"),
        FieldDef("label_ids", "json"),
        FieldDef("address", "json"),
        FieldDef("is_deleted", "boolean"),
    ),
    "persons": (
        FieldDef("id", "integer"),
        FieldDef("name", required=True),
        FieldDef("first_name"),
        FieldDef("last_name"),
        FieldDef("owner_id", "integer"),
        FieldDef("org_id", "integer"),
        FieldDef("add_time", "datetime"),
        FieldDef("update_time", "datetime"),
        FieldDef("emails", "json"),
        FieldDef("phones", "json"),
        FieldDef("job_title"),
        FieldDef("is_deleted", "boolean"),
        FieldDef("visible_to", "integer"),
        FieldDef("label_ids", "json"),
    ),
    "deals": (
        FieldDef("id", "integer"),
        FieldDef("title", required=True),
        FieldDef("owner_id", "integer"),
        FieldDef("person_id", "integer"),
        FieldDef("org_id", "integer"),
        FieldDef("pipeline_id", "integer"),
        FieldDef("stage_id", "integer"),
        FieldDef("value", "number"),
        FieldDef("currency"),
        FieldDef("add_time", "datetime"),
        FieldDef("update_time", "datetime"),
        FieldDef("is_deleted", "boolean"),
        FieldDef("status"),
        FieldDef("probability", "number"),
        FieldDef("visible_to", "integer"),
        FieldDef("close_time", "datetime"),
        FieldDef("won_time", "datetime"),
        FieldDef("lost_time", "datetime"),
        FieldDef("expected_close_date", "date"),
        FieldDef("label_ids", "json"),
    ),
}
CUSTOM: dict[str, tuple[FieldDef, ...]] = {
    "organizations": (
        FieldDef(ORG_WEBSITE),
        FieldDef(ORG_PHONE),
        FieldDef(ORG_INDUSTRY),
        FieldDef(ORG_ANNUAL_REVENUE, "number"),
        FieldDef(ORG_EXTERNAL_ID),
        FieldDef(ORG_ERP_CUSTOMER_NUMBER),
    ),
    "persons": (FieldDef(PERSON_COUNTRY), FieldDef(PERSON_EXTERNAL_ID)),
    "deals": (
        FieldDef(DEAL_EXTERNAL_ID),
        FieldDef(DEAL_ERP_ORDER_NUMBER),
        FieldDef(DEAL_ERP_INVOICE_NUMBERS),
    ),
}
OBJECTS = tuple(
    ObjectDef(
        name=name,
        key="id",
        fields=STANDARD[name] + CUSTOM[name],
        created_field="add_time",
        modified_field="update_time",
        deleted_flag="is_deleted",
    )
    for name in ("organizations", "persons", "deals")
)
# Leads (API v1 only): potential deals in the Leads Inbox, each linked to a person or an organization,
# which hold the name and e-mail. The id is a UUID; value is {amount, currency}; label_ids are lead label
# UUIDs; archived leads stay listed with is_archived. A lead converted into a deal is deleted. Leads have
# no field list of their own: their custom fields are the deals' (only those set appear on a lead).
# https://developers.pipedrive.com/docs/api/v1/Leads#getLeads
LEADS = ObjectDef(
    name="leads",
    key="id",
    fields=(
        FieldDef("id"),
        FieldDef("title", required=True),
        FieldDef("owner_id", "integer"),
        FieldDef("creator_id", "integer"),
        FieldDef("label_ids", "json"),
        FieldDef("person_id", "integer"),
        FieldDef("organization_id", "integer"),
        FieldDef("source_name"),
        FieldDef("origin"),
        FieldDef("origin_id"),
        FieldDef("channel", "integer"),
        FieldDef("channel_id"),
        FieldDef("is_archived", "boolean"),
        FieldDef("was_seen", "boolean"),
        FieldDef("value", "json"),
        FieldDef("expected_close_date", "date"),
        FieldDef("next_activity_id", "integer"),
        FieldDef("add_time", "datetime"),
        FieldDef("update_time", "datetime"),
        FieldDef("visible_to"),
        FieldDef("cc_email"),
    ),
    created_field="add_time",
    modified_field="update_time",
)
# Every company starts with the lead labels Hot, Warm and Cold (GET /v1/leadLabels); users rename,
# recolour and add their own, so a label's name says what that company means by it.
LEAD_LABELS = {
    name: {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"pipedrive:leadLabel:{name}")),
        "name": name,
        "color": color,
    }
    for name, color in (("Hot", "red"), ("Warm", "yellow"), ("Cold", "blue"))
}
LEAD_SORTS = (
    "id",
    "title",
    "owner_id",
    "creator_id",
    "was_seen",
    "expected_close_date",
    "next_activity_id",
    "add_time",
    "update_time",
)
LEADS_MAX_LIMIT = 500
STANDARD_NAMES = {name: {f.name for f in fields} for name, fields in STANDARD.items()}
SORTS = {"id": "id", "update_time": "_modified", "add_time": "_created"}
SINGULAR = {"organizations": "Organization", "persons": "Person", "deals": "Deal"}
NAME_FIELD = {"organizations": "name", "persons": "name", "deals": "title"}
FIELDS_PATHS = {"organizationFields": "organizations", "personFields": "persons", "dealFields": "deals"}
# Optional fields a list may include on request (include_fields); counts are computed from deals.
INCLUDE_FIELDS = {
    "organizations": ("open_deals_count", "closed_deals_count", "won_deals_count", "lost_deals_count"),
    "persons": ("open_deals_count", "closed_deals_count", "won_deals_count", "lost_deals_count"),
    "deals": ("first_won_time", "products_count"),
}
FIELD_TYPES = {
    "string": "varchar",
    "number": "double",
    "integer": "int",
    "boolean": "boolean",
    "date": "date",
    "datetime": "date",
    "json": "json",
}


def v1_error(status: int, message: str) -> Response:
    """The API gateway's error body (auth, limits, server faults): the v1 shape with ``errorCode``."""
    body = {
        "success": False,
        "error": message,
        "errorCode": status,
        "error_info": ERROR_INFO,
        "data": None,
        "additional_data": None,
    }
    return Response.json(status, body)


def v2_error(status: int, message: str, code: str) -> Response:
    """A v2 endpoint's error body: ``success: false``, ``error`` and a ``code``."""
    return Response.json(status, {"success": False, "error": message, "code": code})


def rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def encode_cursor(values: list[object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> list[object]:
    padded = text + "=" * (-len(text) % 4)
    values = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
    if not isinstance(values, list) or len(values) != 4:
        raise ValueError("not a cursor")
    return values


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
