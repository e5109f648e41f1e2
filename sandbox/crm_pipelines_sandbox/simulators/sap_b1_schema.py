"""The schema of the SAP Business One simulator: objects, enumerations, lookups and ``$metadata``.

Property names and types follow the Service Layer's ``BusinessPartner``, ``ContactEmployee`` and
``SalesOpportunity`` (see :mod:`.sap_b1` for the documents relied on).
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape

from crm_pipelines_sandbox.simulators.records import FieldDef, ObjectDef, StoreInfo

_STAMPS = (FieldDef("UpdateDate", "date"), FieldDef("UpdateTime"))
BUSINESS_PARTNERS = ObjectDef(
    name="BusinessPartners",
    key="CardCode",
    fields=(
        FieldDef("CardCode", required=True),
        FieldDef("CardName", required=True),
        FieldDef("CardType"),
        FieldDef("GroupCode", "integer"),
        FieldDef("Address"),
        FieldDef("ZipCode"),
        FieldDef("City"),
        FieldDef("Country"),
        FieldDef("Phone1"),
        FieldDef("EmailAddress"),
        FieldDef("Website"),
        FieldDef("Industry", "integer"),
        FieldDef("Currency"),
        FieldDef("Valid"),
        FieldDef("Frozen"),
        # User-defined fields (B1 has no revenue on business partners); UDFs are named U_*.
        FieldDef("U_AnnualRevenue", "number"),
        FieldDef("U_ErpCustomerNo"),  # the customer number in the billing ERP (alphanumeric, 50)
        FieldDef("CreateDate", "date"),
        FieldDef("CreateTime"),
        *_STAMPS,
    ),
)
CONTACT_EMPLOYEES = ObjectDef(
    name="ContactEmployees",
    key="InternalCode",
    fields=(
        FieldDef("InternalCode", "integer"),
        FieldDef("CardCode", required=True),
        FieldDef("Name", required=True),  # the contact's id within its business partner
        FieldDef("FirstName"),
        FieldDef("LastName"),
        FieldDef("Position"),
        FieldDef("Phone1"),
        FieldDef("MobilePhone"),
        FieldDef("E_Mail"),
        FieldDef("Address"),  # one free-text line; a contact person has no city or postcode fields
        FieldDef("DateOfBirth", "date"),
        FieldDef("Active"),
        FieldDef("CreateDate", "date"),
        FieldDef("CreateTime"),
        *_STAMPS,
    ),
)
SALES_OPPORTUNITIES = ObjectDef(
    name="SalesOpportunities",
    key="SequentialNo",
    fields=(
        FieldDef("SequentialNo", "integer"),
        FieldDef("CardCode", required=True),
        FieldDef("OpportunityName"),
        FieldDef("StartDate", "date"),
        FieldDef("PredictedClosingDate", "date"),
        FieldDef("ClosingDate", "date"),
        FieldDef("MaxLocalTotal", "number"),
        FieldDef("ClosingPercentage", "number"),
        FieldDef("CurrentStageNo", "integer"),
        FieldDef("Status"),
        # User-defined fields: the sales order and invoices the billing ERP made from the deal.
        FieldDef("U_ErpOrderNo"),
        FieldDef("U_ErpInvoiceNos"),  # comma-separated (alphanumeric, 254: the longest B1 allows)
        FieldDef("CreateDate", "date"),
        FieldDef("CreateTime"),
        *_STAMPS,
    ),
)
OBJECTS = (BUSINESS_PARTNERS, CONTACT_EMPLOYEES, SALES_OPPORTUNITIES)


@dataclass(frozen=True)
class _EntitySet:
    name: str
    type_name: str
    table: str


ENTITY_SETS = {
    "BusinessPartners": _EntitySet("BusinessPartners", "BusinessPartner", "BusinessPartners"),
    "SalesOpportunities": _EntitySet("SalesOpportunities", "SalesOpportunity", "SalesOpportunities"),
}
# $crossjoin members: a path -> its table (a collection path joins the collection's rows).
CROSSJOIN_SETS = {
    "BusinessPartners": ("BusinessPartners", "BusinessPartner"),
    "BusinessPartners/ContactEmployees": ("ContactEmployees", "ContactEmployee"),
    "SalesOpportunities": ("SalesOpportunities", "SalesOpportunity"),
}
INSTANTS = {
    "CreateDate": ("_created", "instant_date"),
    "CreateTime": ("_created", "instant_time"),
    "UpdateDate": ("_modified", "instant_date"),
    "UpdateTime": ("_modified", "instant_time"),
}
_YES_NO = {"tYES": "tYES", "tNO": "tNO", "Y": "tYES", "N": "tNO"}
ENUMS: dict[str, tuple[str, dict[str, str]]] = {
    "CardType": (
        "BoCardTypes",
        {
            "cCustomer": "cCustomer",
            "cSupplier": "cSupplier",
            "cLid": "cLid",
            "C": "cCustomer",
            "S": "cSupplier",
            "L": "cLid",
        },
    ),
    "Status": (
        "BoSoOsStatus",
        {
            "sos_Open": "sos_Open",
            "sos_Sold": "sos_Sold",
            "sos_Missed": "sos_Missed",
            "O": "sos_Open",
            "W": "sos_Sold",
            "L": "sos_Missed",
        },
    ),
    "Valid": ("BoYesNoEnum", _YES_NO),
    "Frozen": ("BoYesNoEnum", _YES_NO),
    "Active": ("BoYesNoEnum", _YES_NO),
}
_EDM = {
    "string": "Edm.String",
    "number": "Edm.Double",
    "integer": "Edm.Int32",
    "boolean": "Edm.String",
    "date": "Edm.DateTime",
    "datetime": "Edm.DateTime",
    "json": "Edm.String",
}
INDUSTRIES = ("Manufacturing", "Technology", "Retail", "Finance", "Transportation", "Services")
# Our company's sales stages (SalesStages): open stages by number; won and lost are opportunity statuses.
SALES_STAGES = (
    (1, "Lead", 10.0),
    (2, "Qualification", 25.0),
    (3, "Proposal", 50.0),
    (4, "Negotiation", 75.0),
    (5, "Order", 100.0),
)
STAGE_VALUES = {
    "prospecting": "1",
    "qualification": "2",
    "proposal": "3",
    "negotiation": "4",
    "closed_won": "sos_Sold",
    "closed_lost": "sos_Missed",
}
READ_ONLY = frozenset(INSTANTS)


def edmx(info: StoreInfo) -> str:
    """The ``$metadata`` document (OData v3 EDMX) of the objects as the store has them now (UDFs added)."""
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<edmx:Edmx Version="1.0" xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx">',
        '<edmx:DataServices m:DataServiceVersion="3.0" m:MaxDataServiceVersion="3.0"'
        ' xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata">',
        '<Schema Namespace="SAPB1" xmlns="http://schemas.microsoft.com/ado/2009/11/edm">',
    ]
    seen_enums: set[str] = set()
    for enum_name, values in ENUMS.values():
        if enum_name in seen_enums:
            continue
        seen_enums.add(enum_name)
        members = sorted({v for v in values.values()})
        lines.append(f'<EnumType Name="{enum_name}">')
        lines += [f'<Member Name="{m}" Value="{i}"/>' for i, m in enumerate(members)]
        lines.append("</EnumType>")

    def properties(obj: ObjectDef) -> list[str]:
        out = []
        for f in obj.fields:
            edm = f"SAPB1.{ENUMS[f.name][0]}" if f.name in ENUMS else _EDM[f.type]
            nullable = ' Nullable="false"' if f.name == obj.key else ""
            out.append(f'<Property Name="{escape(f.name)}" Type="{edm}"{nullable}/>')
        return out

    contact = info.objects["ContactEmployees"]
    lines += ['<ComplexType Name="ContactEmployee">', *properties(contact), "</ComplexType>"]
    for es in ENTITY_SETS.values():
        obj = info.objects[es.table]
        lines += [f'<EntityType Name="{es.type_name}">', f'<Key><PropertyRef Name="{obj.key}"/></Key>']
        lines += properties(obj)
        if es.name == "BusinessPartners":
            lines.append('<Property Name="ContactEmployees" Type="Collection(SAPB1.ContactEmployee)"/>')
        lines.append("</EntityType>")
    lines.append('<EntityContainer Name="ServiceLayer" m:IsDefaultEntityContainer="true">')
    lines += [
        f'<EntitySet Name="{es.name}" EntityType="SAPB1.{es.type_name}"/>' for es in ENTITY_SETS.values()
    ]
    lines += ["</EntityContainer>", "</Schema>", "</edmx:DataServices>", "</edmx:Edmx>"]
    return "\n".join(lines)
