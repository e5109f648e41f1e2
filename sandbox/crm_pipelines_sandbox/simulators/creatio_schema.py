"""Creatio objects as the simulator serves them: columns, lookups, reference data, rendering, errors.

Creatio keeps countries, industries, currencies and opportunity stages as lookup records a user
picks from, so an account holds ``CountryId``/``IndustryId`` GUIDs, not text. Those reference
records are fixed in this module (an installed Creatio ships them as data), so they are the same in
every sandbox and ``$expand=Country($select=Name)`` can name them. Sources: see :mod:`.creatio`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import pycountry

from crm_pipelines_sandbox.simulators.base import Response
from crm_pipelines_sandbox.simulators.records import FieldDef, ObjectDef

ODATA = "/0/odata"
MAX_ROWS = 20_000  # MaxEntityRowCount: the most rows one request returns
MAX_BATCH_REQUESTS = 100
DEFAULT_SESSION_TTL = 3600.0
NAMESPACE = "Terrasoft.Configuration"
_NS = uuid.UUID("0b4f7f0e-6c2a-4a57-9d0e-4b1f2c3d5e6f")
SUPERVISOR_ID = str(uuid.uuid5(_NS, "Contact:Supervisor"))  # records are owned by a contact


def _ref(kind: str, name: str) -> str:
    return str(uuid.uuid5(_NS, f"{kind}:{name}"))


ACCOUNT = ObjectDef(
    name="Account",
    key="Id",
    fields=(
        FieldDef("Id"),
        FieldDef("Name", required=True),
        FieldDef("Code"),
        FieldDef("Web"),
        FieldDef("Phone"),
        FieldDef("Address"),
        FieldDef("Zip"),
        FieldDef("CountryId"),
        FieldDef("IndustryId"),
        FieldDef("UsrAnnualRevenue", "number"),
        # Custom columns (a Usr prefix, as the Object Designer names them): the ERP's customer number.
        FieldDef("UsrErpCustomerNumber"),
        FieldDef("OwnerId"),
        FieldDef("CreatedOn", "datetime"),
        FieldDef("CreatedById"),
        FieldDef("ModifiedOn", "datetime"),
        FieldDef("ModifiedById"),
    ),
    created_field="CreatedOn",
    modified_field="ModifiedOn",
)
CONTACT = ObjectDef(
    name="Contact",
    key="Id",
    fields=(
        FieldDef("Id"),
        FieldDef("Name", required=True),
        FieldDef("GivenName"),
        FieldDef("Surname"),
        FieldDef("Email"),
        FieldDef("Phone"),
        FieldDef("JobTitle"),
        FieldDef("AccountId"),
        FieldDef("Address"),
        FieldDef("Zip"),
        FieldDef("CountryId"),
        FieldDef("BirthDate", "date"),
        FieldDef("OwnerId"),
        FieldDef("CreatedOn", "datetime"),
        FieldDef("CreatedById"),
        FieldDef("ModifiedOn", "datetime"),
        FieldDef("ModifiedById"),
    ),
    created_field="CreatedOn",
    modified_field="ModifiedOn",
)
OPPORTUNITY = ObjectDef(
    name="Opportunity",
    key="Id",
    fields=(
        FieldDef("Id"),
        FieldDef("Title", required=True),
        FieldDef("Amount", "number"),
        FieldDef("CurrencyId"),
        FieldDef("StageId"),
        FieldDef("DueDate", "date"),
        FieldDef("AccountId"),
        FieldDef("OwnerId"),
        FieldDef("UsrExternalId"),
        FieldDef("UsrErpOrderNumber"),
        FieldDef("UsrErpInvoiceNumbers"),  # comma-separated, a text column of 250
        FieldDef("CreatedOn", "datetime"),
        FieldDef("CreatedById"),
        FieldDef("ModifiedOn", "datetime"),
        FieldDef("ModifiedById"),
    ),
    created_field="CreatedOn",
    modified_field="ModifiedOn",
)
# A lead (Lead management): the person and company as typed (Contact, Account: text), the stage of the
# lead's lifecycle (QualifyStatusId, a QualifyStatus lookup), where it came from (LeadSourceId) and, once
# qualified, the contact it became (QualifiedContactId). FullJobTitle is the job title as text (JobId
# would be the Job lookup). Read only here.
LEAD = ObjectDef(
    name="Lead",
    key="Id",
    fields=(
        FieldDef("Id"),
        FieldDef("LeadName"),
        FieldDef("Contact"),
        FieldDef("Account"),
        FieldDef("Email"),
        FieldDef("MobilePhone"),
        FieldDef("BusinessPhone"),
        FieldDef("FullJobTitle"),
        FieldDef("CountryId"),
        FieldDef("QualifyStatusId"),
        FieldDef("LeadSourceId"),
        FieldDef("QualifiedContactId"),
        FieldDef("OwnerId"),
        FieldDef("CreatedOn", "datetime"),
        FieldDef("CreatedById"),
        FieldDef("ModifiedOn", "datetime"),
        FieldDef("ModifiedById"),
    ),
    created_field="CreatedOn",
    modified_field="ModifiedOn",
)
OBJECTS = (ACCOUNT, CONTACT, OPPORTUNITY, LEAD)
# Lookup column -> (navigation property, collection it points to).
LOOKUPS: dict[str, dict[str, tuple[str, str]]] = {
    "Account": {
        "CountryId": ("Country", "Country"),
        "IndustryId": ("Industry", "AccountIndustry"),
        "OwnerId": ("Owner", "Contact"),
        "CreatedById": ("CreatedBy", "Contact"),
        "ModifiedById": ("ModifiedBy", "Contact"),
    },
    "Contact": {
        "AccountId": ("Account", "Account"),
        "CountryId": ("Country", "Country"),
        "OwnerId": ("Owner", "Contact"),
        "CreatedById": ("CreatedBy", "Contact"),
        "ModifiedById": ("ModifiedBy", "Contact"),
    },
    "Opportunity": {
        "AccountId": ("Account", "Account"),
        "CurrencyId": ("Currency", "Currency"),
        "StageId": ("Stage", "OpportunityStage"),
        "OwnerId": ("Owner", "Contact"),
        "CreatedById": ("CreatedBy", "Contact"),
        "ModifiedById": ("ModifiedBy", "Contact"),
    },
    "Lead": {
        "CountryId": ("Country", "Country"),
        "QualifyStatusId": ("QualifyStatus", "QualifyStatus"),
        "LeadSourceId": ("LeadSource", "LeadSource"),
        "QualifiedContactId": ("QualifiedContact", "Contact"),
        "OwnerId": ("Owner", "Contact"),
        "CreatedById": ("CreatedBy", "Contact"),
        "ModifiedById": ("ModifiedBy", "Contact"),
    },
}
# The field an integration matches records on (Code is Account's own; the others are common choices).
EXTERNAL_IDS = {"Account": "Code", "Contact": "Email", "Opportunity": "UsrExternalId"}
# Columns the server sets itself; CreatedById/ModifiedById are the contact of the user who saved.
SYSTEM_COLUMNS = frozenset({"Id", "CreatedOn", "CreatedById", "ModifiedOn", "ModifiedById"})

# The stages of Creatio's opportunity sales pipeline, as OpportunityStage records.
STAGE_NAMES = {
    "prospecting": "Qualification",
    "qualification": "Presentation",
    "proposal": "Proposal",
    "negotiation": "Negotiation",
    "closed_won": "Closed won",
    "closed_lost": "Closed lost",
}
STAGE_IDS = {stage: _ref("OpportunityStage", name) for stage, name in STAGE_NAMES.items()}
# The stages of the lead lifecycle (QualifyStatus records): a new lead is qualified by marketing,
# distributed to a salesperson, handed off to sales (an opportunity opens: awaiting sale) and converted
# when the sale is made; a disqualified lead leaves the funnel.
QUALIFY_STATUSES = (
    "Qualification",
    "Distribution",
    "Handoff to sales",
    "Awaiting sale",
    "Converted",
    "Disqualified",
)
QUALIFY_STATUS_IDS = {name: _ref("QualifyStatus", name) for name in QUALIFY_STATUSES}
# Lead sources (LeadSource records) a lead is attributed to.
LEAD_SOURCES = ("Website", "Event", "Partner", "Advertising", "Recommendation", "Call", "Email")
LEAD_SOURCE_IDS = {name: _ref("LeadSource", name) for name in LEAD_SOURCES}
INDUSTRIES = (
    "Technology",
    "Manufacturing",
    "Retail",
    "Finance",
    "Healthcare",
    "Energy",
    "Transportation",
    "Consulting",
    "Telecommunications",
    "Food & Beverage",
    "Construction",
    "Chemicals",
    "Services",
)
_NATIVE_COUNTRY_NAMES = {
    "deutschland": "DE",
    "españa": "ES",
    "schweiz": "CH",
    "suisse": "CH",
    "italia": "IT",
    "nederland": "NL",
    "österreich": "AT",
    "uk": "GB",
    "great britain": "GB",
    "england": "GB",
}


@cache
def reference_data() -> dict[str, dict[str, dict[str, object]]]:
    """The lookup collections every Creatio has from setup: collection -> Id -> record."""
    countries = {
        _ref("Country", c.alpha_2): {"Id": _ref("Country", c.alpha_2), "Name": c.name, "Code": c.alpha_2}
        for c in pycountry.countries
    }
    currencies = {
        _ref("Currency", c.alpha_3): {
            "Id": _ref("Currency", c.alpha_3),
            "Name": c.name,
            "ShortName": c.alpha_3,
        }
        for c in pycountry.currencies
    }
    industries = {
        _ref("AccountIndustry", n): {"Id": _ref("AccountIndustry", n), "Name": n} for n in INDUSTRIES
    }
    stages = {
        STAGE_IDS[stage]: {"Id": STAGE_IDS[stage], "Name": name, "End": stage.startswith("closed")}
        for stage, name in STAGE_NAMES.items()
    }
    qualify = {
        QUALIFY_STATUS_IDS[name]: {"Id": QUALIFY_STATUS_IDS[name], "Name": name} for name in QUALIFY_STATUSES
    }
    sources = {LEAD_SOURCE_IDS[name]: {"Id": LEAD_SOURCE_IDS[name], "Name": name} for name in LEAD_SOURCES}
    return {
        "Country": countries,
        "Currency": currencies,
        "AccountIndustry": industries,
        "OpportunityStage": stages,
        "QualifyStatus": qualify,
        "LeadSource": sources,
    }


def country_id(typed: str | None) -> str | None:
    """The Country record a user would pick for what they typed (None when no country matches)."""
    if not typed or not typed.strip():
        return None
    text = typed.strip()
    code = _NATIVE_COUNTRY_NAMES.get(text.lower())
    if code is None:
        try:
            code = pycountry.countries.lookup(text).alpha_2
        except LookupError:
            return None
    return _ref("Country", code)


def currency_id(typed: str | None) -> str | None:
    code = (typed or "").strip().upper()
    return _ref("Currency", code) if pycountry.currencies.get(alpha_3=code) else None


def industry_id(typed: str | None) -> str | None:
    return _ref("AccountIndustry", typed) if typed in INDUSTRIES else None


@dataclass(frozen=True)
class Session:
    user: str
    csrf: str
    expires: float


def odata_error(
    status: int, message: str, code: str = "", headers: Mapping[str, str] | None = None
) -> Response:
    """An OData 4 error body (``{"error": {"code", "message"}}``) as Creatio's ASP.NET OData sends it."""
    body = json.dumps({"error": {"code": code, "message": message}}, ensure_ascii=False).encode("utf-8")
    return Response(
        status,
        body,
        {
            "Content-Type": "application/json; odata.metadata=minimal",
            "OData-Version": "4.0",
            **(headers or {}),
        },
    )


def json_value(field_type: str, value: object, *, ieee754: bool) -> object:
    """A column as OData 4 JSON writes it; ``IEEE754Compatible=true`` asks for decimals as strings."""
    if value is None:
        return None
    if field_type == "number" and isinstance(value, int | float):
        return str(value) if ieee754 else float(value)
    if field_type == "integer" and isinstance(value, int | float):
        return int(value)
    if field_type == "boolean":
        return bool(value)
    return value


def now_seconds() -> datetime:
    # Creatio shows instants to the second here; stamping writes at whole seconds keeps the shown
    # ModifiedOn equal to the store's canonical _modified, so a filter on the shown value is exact.
    return datetime.now(UTC).replace(microsecond=0)


_EDM = {
    "string": "Edm.String",
    "number": "Edm.Decimal",
    "integer": "Edm.Int32",
    "boolean": "Edm.Boolean",
    "date": "Edm.Date",
    "datetime": "Edm.DateTimeOffset",
    "json": "Edm.String",
}


def edm_type(obj_name: str, field_name: str, field_type: str) -> str:
    if field_name == "Id" or field_name in LOOKUPS.get(obj_name, {}):
        return "Edm.Guid"
    return _EDM[field_type]


def metadata_xml(objects: Mapping[str, ObjectDef]) -> bytes:
    """The EDMX service metadata (``$metadata``): every entity type and its properties."""
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">',
        "<edmx:DataServices>",
        f'<Schema Namespace="{NAMESPACE}" xmlns="http://docs.oasis-open.org/odata/ns/edm">',
    ]
    references = {name: ("Id", *next(iter(rows.values())).keys()) for name, rows in reference_data().items()}
    for obj in objects.values():
        parts.append(f'<EntityType Name="{obj.name}"><Key><PropertyRef Name="Id" /></Key>')
        for f in obj.fields:
            nullable = ' Nullable="false"' if f.name == "Id" else ""
            parts.append(
                f'<Property Name="{f.name}" Type="{edm_type(obj.name, f.name, f.type)}"{nullable} />'
            )
        for nav, target in LOOKUPS.get(obj.name, {}).values():
            parts.append(f'<NavigationProperty Name="{nav}" Type="{NAMESPACE}.{target}" />')
        parts.append("</EntityType>")
    for name, columns in references.items():
        parts.append(f'<EntityType Name="{name}"><Key><PropertyRef Name="Id" /></Key>')
        for column in dict.fromkeys(columns):
            kind = "Edm.Guid" if column == "Id" else "Edm.Boolean" if column == "End" else "Edm.String"
            parts.append(f'<Property Name="{column}" Type="{kind}" />')
        parts.append("</EntityType>")
    parts.append('<EntityContainer Name="DefaultContainer">')
    for name in [*objects, *references]:
        parts.append(f'<EntitySet Name="{name}" EntityType="{NAMESPACE}.{name}" />')
    parts += ["</EntityContainer>", "</Schema>", "</edmx:DataServices>", "</edmx:Edmx>"]
    return "".join(parts).encode("utf-8")


def user_name_cookie(user: str) -> str:
    """Creatio's ``UserName`` cookie: the name's character codes joined by ``|``."""
    return "|".join(str(ord(c)) for c in user)


def first(mapping: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in mapping:
            return mapping[name]
    return None
