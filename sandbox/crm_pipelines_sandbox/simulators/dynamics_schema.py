"""Dataverse tables as the simulator serves them: columns, lookups, alternate keys, choices, rendering.

The read side (:mod:`.dynamics`) and the write side (:mod:`.dynamics_write`) share these rules, so a
record looks the same whether it comes from a query, a ``Prefer: return=representation`` upsert or
a ``$batch`` part. Sources: see :mod:`.dynamics`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import sqlite3
import uuid
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from crm_pipelines_sandbox.simulators.base import RateLimit, Response
from crm_pipelines_sandbox.simulators.odata import BatchResponse, ODataError, split_list
from crm_pipelines_sandbox.simulators.records import FieldDef, ObjectDef, open_store, store_info
from crm_pipelines_sandbox.simulators.records import quote as quote_name

API = "/api/data/v9.2"
MAX_PAGE_SIZE = 5000  # also the default: "up to 5,000 rows", larger odata.maxpagesize ignored
MAX_COUNT = 5000  # @odata.count stops at 5000
MAX_BATCH_OPERATIONS = 1000
DEFAULT_TOKEN_TTL = 3599.0
CHANGE_TRACKING_DAYS = 7  # Organization.ExpireChangeTrackingInDays default
# Service protection defaults per user and web server (api-limits): requests and execution time per
# 300 s sliding window, and concurrent requests.
DEFAULT_PROTECTION = RateLimit(6000, 300.0)
DEFAULT_EXECUTION_SECONDS = 1200.0
DEFAULT_CONCURRENCY = 52
JSON_TYPE = "application/json; odata.metadata=minimal"
FORMATTED = "OData.Community.Display.V1.FormattedValue"
LOOKUP_NAME = "Microsoft.Dynamics.CRM.lookuplogicalname"
NAMESPACE = uuid.UUID("5f0c4b0e-3d6a-4d8e-9a51-7c9e2b1f0d11")


# --- the objects -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lookup:
    """A lookup column: stored under its logical name, shown as ``_<name>_value``."""

    target: str  # entity set it points to
    target_logical: str
    bind: str  # navigation property used in <bind>@odata.bind
    # AttributeType in the metadata: "Customer" for a lookup to account or contact (parentcustomerid).
    attribute_type: str = "Lookup"


@dataclass(frozen=True)
class Entity:
    """What Dataverse knows about an entity set beyond its columns."""

    set_name: str
    logical: str
    alternate_keys: tuple[str, ...]
    required: tuple[str, ...]  # a create without them is refused
    lookups: Mapping[str, Lookup] = field(default_factory=dict)
    picklists: Mapping[str, Mapping[int, str]] = field(default_factory=dict)

    @property
    def type_name(self) -> str:
        return f"Microsoft.Dynamics.CRM.{self.logical}"


ACCOUNTS = ObjectDef(
    name="accounts",
    key="accountid",
    fields=(
        FieldDef("accountid"),
        FieldDef("name", required=True),
        FieldDef("accountnumber"),
        FieldDef("websiteurl"),
        FieldDef("telephone1"),
        FieldDef("address1_line1"),
        FieldDef("address1_city"),
        FieldDef("address1_postalcode"),
        FieldDef("address1_country"),
        FieldDef("industrycode", "integer"),
        FieldDef("revenue", "number"),
        FieldDef("statecode", "integer"),
        FieldDef("createdon", "datetime"),
        FieldDef("modifiedon", "datetime"),
        FieldDef("versionnumber", "integer"),
        # Custom columns (publisher prefix new_) the ERP sync fills in: customer number, finance status.
        FieldDef("new_erpcustomernumber"),
        FieldDef("new_openbalance", "number"),
        FieldDef("new_overdueamount", "number"),
        FieldDef("new_lastpaymentdate", "date"),
    ),
    created_field="createdon",
    modified_field="modifiedon",
)
CONTACTS = ObjectDef(
    name="contacts",
    key="contactid",
    fields=(
        FieldDef("contactid"),
        FieldDef("firstname"),
        FieldDef("lastname", required=True),
        FieldDef("fullname"),
        FieldDef("emailaddress1"),
        FieldDef("telephone1"),
        FieldDef("jobtitle"),
        FieldDef("address1_line1"),
        FieldDef("address1_city"),
        FieldDef("address1_postalcode"),
        FieldDef("address1_country"),
        FieldDef("birthdate", "date"),
        FieldDef("governmentid"),
        FieldDef("parentcustomerid"),
        FieldDef("statecode", "integer"),
        FieldDef("createdon", "datetime"),
        FieldDef("modifiedon", "datetime"),
        FieldDef("versionnumber", "integer"),
        # Custom column (an alternate key): the HubSpot contact a contact was created from by the
        # leads sync (syncs.yaml hubspot_leads_to_dynamics), so a second attempt updates it.
        FieldDef("new_hubspotcontactid"),
    ),
    created_field="createdon",
    modified_field="modifiedon",
)
# A prospect before qualification. Qualifying it (statecode 1) makes the contact, account and
# opportunity; statuscode is the status reason within the state.
# https://learn.microsoft.com/power-apps/developer/data-platform/reference/entities/lead
LEADS = ObjectDef(
    name="leads",
    key="leadid",
    fields=(
        FieldDef("leadid"),
        FieldDef("firstname"),
        FieldDef("lastname", required=True),
        FieldDef("fullname"),
        FieldDef("emailaddress1"),
        FieldDef("telephone1"),
        FieldDef("companyname"),
        FieldDef("jobtitle"),
        FieldDef("address1_country"),
        FieldDef("statecode", "integer"),
        FieldDef("statuscode", "integer"),
        FieldDef("leadsourcecode", "integer"),
        FieldDef("parentcontactid"),
        FieldDef("createdon", "datetime"),
        FieldDef("modifiedon", "datetime"),
        FieldDef("versionnumber", "integer"),
    ),
    created_field="createdon",
    modified_field="modifiedon",
)
# The lead table's status reasons (statuscode) and the state each belongs to, and its lead sources.
LEAD_STATES = {0: "Open", 1: "Qualified", 2: "Disqualified"}
LEAD_STATUS_REASONS = {
    1: ("New", 0),
    2: ("Contacted", 0),
    3: ("Qualified", 1),
    4: ("Lost", 2),
    5: ("Cannot Contact", 2),
    6: ("No Longer Interested", 2),
    7: ("Canceled", 2),
}
LEAD_SOURCES = {
    1: "Advertisement",
    2: "Employee Referral",
    3: "External Referral",
    4: "Partner",
    5: "Public Relations",
    6: "Seminar",
    7: "Trade Show",
    8: "Web",
    9: "Word of Mouth",
    10: "Other",
}
OPPORTUNITIES = ObjectDef(
    name="opportunities",
    key="opportunityid",
    fields=(
        FieldDef("opportunityid"),
        FieldDef("name", required=True),
        FieldDef("estimatedvalue", "number"),
        FieldDef("transactioncurrencyid"),
        FieldDef("stepname"),
        FieldDef("statecode", "integer"),
        FieldDef("estimatedclosedate", "date"),
        FieldDef("parentaccountid"),
        FieldDef("new_externalid"),
        FieldDef("createdon", "datetime"),
        FieldDef("modifiedon", "datetime"),
        FieldDef("versionnumber", "integer"),
        FieldDef("new_erpordernumber"),
        FieldDef("new_erpinvoicenumbers"),  # comma-separated, 255 characters
    ),
    created_field="createdon",
    modified_field="modifiedon",
)

# The default industrycode choices of the account table, for the industries the sample uses.
INDUSTRY_CODES = {
    "Broadcasting Printing and Publishing": 3,
    "Business Services": 6,
    "Consulting": 7,
    "Doctor's Offices and Clinics": 11,
    "Durable Manufacturing": 12,
    "Financial": 16,
    "Food and Tobacco Processing": 17,
    "Petrochemical Extraction and Distribution": 24,
    "Service Retail": 25,
    "Special Outbound Trade Contractors": 28,
    "Transportation": 30,
    "Utility Creation and Distribution": 31,
}
# What a user picks among those choices for the industries the sandbox's companies are in.
INDUSTRY_FROM_SEED = {
    "Technology": "Business Services",
    "Manufacturing": "Durable Manufacturing",
    "Retail": "Service Retail",
    "Finance": "Financial",
    "Healthcare": "Doctor's Offices and Clinics",
    "Energy": "Utility Creation and Distribution",
    "Transportation": "Transportation",
    "Consulting": "Consulting",
    "Telecommunications": "Broadcasting Printing and Publishing",
    "Food & Beverage": "Food and Tobacco Processing",
    "Construction": "Special Outbound Trade Contractors",
    "Chemicals": "Petrochemical Extraction and Distribution",
}
# Opportunities move through the "Opportunity Sales Process" steps; closing sets statecode (1 won, 2 lost).
STAGE_VALUES = {
    "prospecting": "1-Qualify",
    "qualification": "2-Develop",
    "proposal": "3-Propose",
    "negotiation": "4-Close",
    "closed_won": "Won",
    "closed_lost": "Lost",
}
_CURRENCY_NAMES = {
    "EUR": "Euro",
    "USD": "US Dollar",
    "GBP": "Pound Sterling",
    "CHF": "Swiss Franc",
    "SEK": "Swedish Krona",
    "NOK": "Norwegian Krone",
    "DKK": "Danish Krone",
    "PLN": "Zloty",
    "JPY": "Yen",
    "CAD": "Canadian Dollar",
}
# transactioncurrency rows are reference data an org has from setup: fixed ids per ISO code.
CURRENCIES = {
    str(uuid.uuid5(NAMESPACE, f"transactioncurrency:{code}")): {"isocurrencycode": code, "currencyname": name}
    for code, name in _CURRENCY_NAMES.items()
}
CURRENCY_IDS = {row["isocurrencycode"]: key for key, row in CURRENCIES.items()}
ORG_CREATED = "2020-01-06T09:00:00Z"  # when the sandbox org (and its reference rows) was set up

ENTITIES = {
    "accounts": Entity(
        "accounts",
        "account",
        alternate_keys=("accountnumber",),
        required=("name",),
        picklists={
            "industrycode": {code: label for label, code in INDUSTRY_CODES.items()},
            "statecode": {0: "Active", 1: "Inactive"},
        },
    ),
    "contacts": Entity(
        "contacts",
        "contact",
        alternate_keys=("emailaddress1", "new_hubspotcontactid"),
        required=("lastname",),
        lookups={"parentcustomerid": Lookup("accounts", "account", "parentcustomerid_account", "Customer")},
        picklists={"statecode": {0: "Active", 1: "Inactive"}},
    ),
    "leads": Entity(
        "leads",
        "lead",
        alternate_keys=(),
        required=("lastname",),
        lookups={"parentcontactid": Lookup("contacts", "contact", "parentcontactid")},
        picklists={
            "statecode": LEAD_STATES,
            "statuscode": {code: label for code, (label, _) in LEAD_STATUS_REASONS.items()},
            "leadsourcecode": LEAD_SOURCES,
        },
    ),
    "opportunities": Entity(
        "opportunities",
        "opportunity",
        alternate_keys=("new_externalid",),
        required=("name",),
        lookups={
            "parentaccountid": Lookup("accounts", "account", "parentaccountid"),
            "transactioncurrencyid": Lookup(
                "transactioncurrencies", "transactioncurrency", "transactioncurrencyid"
            ),
        },
        picklists={"statecode": {0: "Open", 1: "Won", 2: "Lost"}},
    ),
}
BY_LOGICAL = {entity.logical: entity for entity in ENTITIES.values()}
READ_ONLY = frozenset({"createdon", "modifiedon", "fullname", "versionnumber"})
# The row version: every write raises it, and a row's @odata.etag is W/"<versionnumber>". Served
# from the store's change sequence, so it is never stale.
VERSION_COLUMN = "versionnumber"
MAX_TEXT_LENGTH = 255  # single-line text columns (MaxLength of these tables' text columns)
ATTRIBUTE_TYPES = {
    "string": "String",
    "number": "Money",
    "integer": "Integer",
    "boolean": "Boolean",
    "date": "DateTime",
    "datetime": "DateTime",
    "json": "Memo",
}


def error_json(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    body = json.dumps({"error": {"code": code, "message": message}}, ensure_ascii=False).encode("utf-8")
    return Response(status, body, {"Content-Type": JSON_TYPE, "OData-Version": "4.0", **(headers or {})})


def odata_error_json(exc: ODataError) -> Response:
    return error_json(exc.status, exc.code or "0x80060888", exc.message)


def now_seconds() -> datetime:
    # Dataverse shows instants to the second; stamping writes at whole seconds keeps the shown
    # modifiedon and the store's canonical _modified equal, so a filter on the shown value is exact.
    return datetime.now(UTC).replace(microsecond=0)


def _json_value(field_type: str, value: object) -> object:
    if value is None:
        return None
    if field_type == "boolean":
        return bool(value)
    if field_type == "integer" and isinstance(value, int | float):
        return int(value)
    if field_type == "number" and isinstance(value, int | float):
        return float(value)
    return value


def encode_cookie(state: Mapping[str, object]) -> str:
    raw = base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode()
    tracking = "True" if state.get("k") else "False"
    return f'<cookie pagenumber="{state.get("n", 2)}" pagingcookie="{raw}" istracking="{tracking}" />'


def decode_cookie(token: str) -> dict[str, Any]:
    match = re.search(r'pagingcookie="([^"]+)"', token)
    if match is None:
        raise ODataError("The $skiptoken is not a paging cookie this service issued.")
    try:
        state = json.loads(base64.urlsafe_b64decode(match.group(1).encode()))
    except (ValueError, binascii.Error) as exc:
        raise ODataError("The $skiptoken is not a paging cookie this service issued.") from exc
    if not isinstance(state, dict):
        raise ODataError("The $skiptoken is not a paging cookie this service issued.")
    return state


_SAFE = "$,()'=:/"


def query_string(params: list[tuple[str, str]]) -> str:
    return "&".join(f"{k}={quote(v, safe=_SAFE)}" for k, v in params)


# --- rendering and errors ------------------------------------------------------------------------------------

STANDARD_COLUMNS = {
    obj.name: frozenset(obj.field_names) for obj in (ACCOUNTS, CONTACTS, OPPORTUNITIES, LEADS)
}


def ok_json(body: Mapping[str, object], headers: Mapping[str, str] | None = None) -> Response:
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(200, payload, {"Content-Type": JSON_TYPE, "OData-Version": "4.0", **(headers or {})})


def first_param(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def wants_annotations(prefer: Mapping[str, str]) -> bool:
    value = prefer.get("odata.include-annotations")
    return value is not None and ("*" in value or "FormattedValue" in value)


def part_error(status: int, code: str, message: str) -> BatchResponse:
    body = json.dumps({"error": {"code": code, "message": message}}, ensure_ascii=False).encode("utf-8")
    return BatchResponse(status, {"Content-Type": JSON_TYPE, "OData-Version": "4.0"}, body)


def to_response(part: BatchResponse) -> Response:
    return Response(part.status, part.body, dict(part.headers))


def not_found_json(entity: Entity, keys: str) -> Response:
    if "=" in keys:
        return error_json(
            404,
            "0x80060891",
            f"A record with the specified key values does not exist in {entity.logical} entity",
        )
    return error_json(404, "0x80040217", f"{entity.logical} With Id = {keys} Does Not Exist")


def required_error(entity: Entity, name: str) -> BatchResponse:
    return part_error(
        400,
        "0x80040203",
        f"Invalid argument: attribute '{name}' is required to create a record of type '{entity.logical}'.",
    )


def checked_value(entity: Entity, name: str, field_type: str, value: object) -> object:
    def wrong(expected: str) -> ODataError:
        return ODataError(
            f"Cannot convert the literal '{value}' to the expected type '{expected}'.", code="0x80048d19"
        )

    if value is None:
        return None
    if field_type in ("number",):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise wrong("Edm.Decimal")
        try:
            return float(value)
        except ValueError as exc:
            raise wrong("Edm.Decimal") from exc
    if field_type == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong("Edm.Int32")
        if name in entity.picklists and value not in entity.picklists[name]:
            raise ODataError(f"{value} is not a valid value for the {name} choice column.", code="0x8004431a")
        return value
    if field_type == "date":
        if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise wrong("Edm.Date")
        return value
    if field_type == "boolean":
        if not isinstance(value, bool):
            raise wrong("Edm.Boolean")
        return value
    if not isinstance(value, str):
        raise wrong("Edm.String")
    if len(value) > MAX_TEXT_LENGTH:
        raise ODataError(
            f"A validation error occurred. The length of the '{name}' attribute of the '{entity.logical}' "
            f"entity exceeded the maximum allowed length of '{MAX_TEXT_LENGTH}'.",
            code="0x80044331",
        )
    return value


def derived_columns(
    object_name: str, conn: sqlite3.Connection | None, record_id: str | None, values: dict[str, object]
) -> dict[str, object]:
    """Columns Dataverse computes itself: a contact's or lead's fullname from its first and last name."""
    if object_name not in ("contacts", "leads") or not ({"firstname", "lastname"} & set(values)):
        return values
    current: dict[str, object] = {}
    if conn is not None and record_id is not None:
        key = "contactid" if object_name == "contacts" else "leadid"
        row = conn.execute(
            f"SELECT firstname, lastname FROM {object_name} WHERE {key} = ?", (record_id,)
        ).fetchone()
        current = {"firstname": row[0], "lastname": row[1]} if row else {}
    merged = {**current, **values}
    full = " ".join(str(v) for v in (merged.get("firstname"), merged.get("lastname")) if v)
    return {**values, "fullname": full or None}


def ensure_indexes(path: Path) -> None:
    """Indexes for the orders a sync asks for (``modifiedon, <key>``), so every page is an index range."""
    with closing(open_store(path)) as conn, conn:
        info = store_info(conn)
        for obj in info.objects.values():
            conn.execute(
                f"CREATE INDEX IF NOT EXISTS {quote_name(obj.name + '__modified_key')}"
                f" ON {quote_name(obj.name)} (_modified, {quote_name(obj.key)})"
            )


def key_condition(entity: Entity, obj: ObjectDef, keys: str) -> tuple[str, list[object], dict[str, str]]:
    """``(<guid>)`` or ``(accountnumber='A-1')`` -> SQL, params, and the alternate key values."""
    text = keys.strip()
    if re.fullmatch(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", text):
        return f"{quote_name(obj.key)} = ?", [text.lower()], {obj.key: text.lower()}
    pairs: dict[str, str] = {}
    for match in re.finditer(r"(\w+)=(?:'((?:[^']|'')*)'|([^,']+))\s*(?:,|$)", text):
        if match.group(2) is not None:
            pairs[match.group(1)] = match.group(2).replace("''", "'")
            continue
        bare = match.group(3).strip()
        # An unquoted key value is a number or a GUID literal; text must be a quoted string literal.
        if not re.fullmatch(r"-?\d+(?:\.\d+)?|[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", bare):
            raise ODataError(f"Bad Request - Error in query syntax: '{keys}'.", code="0x80060888")
        pairs[match.group(1)] = bare
    if not pairs:
        raise ODataError(f"Bad Request - Error in query syntax: '{keys}'.")
    bad = [name for name in pairs if name not in entity.alternate_keys]
    if bad:
        raise ODataError(
            f"The key attribute '{bad[0]}' is not defined as an alternate key for the entity {entity.logical}.",
            code="0x80060888",
        )
    conditions = [f"{quote_name(name)} = ?" for name in pairs]
    return " AND ".join(conditions), list(pairs.values()), pairs


def record_json(
    entity: Entity,
    obj: ObjectDef,
    columns: list[str],
    row: tuple[object, ...],
    seq: int,
    *,
    expand: Mapping[str, list[str]],
    annotate: bool,
    hidden: frozenset[str] | set[str] = frozenset(),
) -> dict[str, object]:
    types = {f.name: f.type for f in obj.fields}
    record: dict[str, object] = {"@odata.etag": f'W/"{seq}"'}
    for name, value in zip(columns, row, strict=True):
        if name in hidden:
            continue
        if name == VERSION_COLUMN:
            record[name] = seq
            continue
        if name in entity.lookups:
            api = f"_{name}_value"
            record[api] = value
            if annotate and value is not None:
                target = entity.lookups[name]
                if target.target == "transactioncurrencies" and value in CURRENCIES:
                    record[f"{api}@{FORMATTED}"] = CURRENCIES[str(value)]["currencyname"]
                record[f"{api}@{LOOKUP_NAME}"] = target.target_logical
            continue
        record[name] = _json_value(types.get(name, "string"), value)
        if annotate and name in entity.picklists and value is not None:
            label = entity.picklists[name].get(value) if isinstance(value, int) else None
            record[f"{name}@{FORMATTED}"] = label or str(value)
    for nav, wanted in expand.items():
        currency_id = row[columns.index(nav)] if nav in columns else None
        currency = CURRENCIES.get(str(currency_id)) if currency_id else None
        record[nav] = (
            None
            if currency is None
            else {w: (currency_id if w == "transactioncurrencyid" else currency[w]) for w in wanted}
            | {"transactioncurrencyid": currency_id}
        )
    record.setdefault(obj.key, row[columns.index(obj.key)] if obj.key in columns else None)
    return record


def unknown_property(entity: Entity) -> Any:
    def build(name: str) -> ODataError:
        return ODataError(
            f"Could not find a property named '{name}' on type '{entity.type_name}'.", code="0x80060888"
        )

    return build


def select_names(entity: Entity, obj: ObjectDef, query: Mapping[str, list[str]]) -> list[str]:
    names = split_list(first_param(query, "$select"))
    out = []
    for name in names or list(obj.field_names):
        match = re.fullmatch(r"_(\w+)_value", name)
        column = match.group(1) if match and match.group(1) in entity.lookups else name
        if column not in obj.field_names:
            raise unknown_property(entity)(name)
        out.append(column)
    return out
