"""The source's field list (describe.py): JSON and XML field lists, renames, fields declared by label."""

from __future__ import annotations

import pytest

from crm_pipelines.connectors.describe import FieldList, described_names, field_names, resolve_labels
from crm_pipelines.connectors.limits import ApiRequestError, ErrorContext
from crm_pipelines.connectors.spec import DescribeSpec, ObjectSpec

CONTEXT = ErrorContext(system_name="salesforce", system_title="Salesforce", object_name="Contact")

_CREATIO_EDMX = b"""<?xml version="1.0" encoding="utf-8"?>
<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx"><edmx:DataServices>
<Schema Namespace="Terrasoft.Configuration" xmlns="http://docs.oasis-open.org/odata/ns/edm">
<EntityType Name="Account"><Key><PropertyRef Name="Id"/></Key>
<Property Name="Id" Type="Edm.Guid"/><Property Name="Name" Type="Edm.String"/>
<Property Name="CountryId" Type="Edm.Guid"/><NavigationProperty Name="Country" Type="T.Country"/></EntityType>
</Schema></edmx:DataServices></edmx:Edmx>"""
_ODATA4 = {
    "edmx": "http://docs.oasis-open.org/odata/ns/edmx",
    "edm": "http://docs.oasis-open.org/odata/ns/edm",
}
_DATAVERSE_ATTRIBUTES = {
    "value": [
        {"LogicalName": "fullname", "AttributeType": "String"},
        {"LogicalName": "parentcustomerid", "AttributeType": "Customer"},
        {"LogicalName": "owninguser", "AttributeType": "Lookup"},
        {"AttributeType": "String"},  # no name: not a field
    ]
}
_LOOKUP_VALUE = [
    {"match": {"path": "AttributeType", "equals": kind}, "to": "_{name}_value"}
    for kind in ("Lookup", "Customer")
]


@pytest.mark.parametrize(
    ("body", "describe", "expected"),
    [
        pytest.param(
            _DATAVERSE_ATTRIBUTES,
            {"names_path": "value", "name_key": "LogicalName", "renames": _LOOKUP_VALUE},
            {"fullname", "_parentcustomerid_value", "_owninguser_value"},
            id="json-lookups-as-records-carry-them",
        ),
        pytest.param(
            _CREATIO_EDMX,
            {
                "format": "xsd",
                "names_path": "edmx:DataServices/edm:Schema/edm:EntityType[@Name='Account']/edm:Property",
                "name_key": "@Name",
                "namespaces": _ODATA4,
                "renames": [{"match": {"path": "@Type", "equals": "Edm.Guid"}, "to": "{name}_guid"}],
            },
            {"Id_guid", "Name", "CountryId_guid"},  # navigation properties are not Property elements
            id="xml-renames-test-attributes",
        ),
        pytest.param(
            {"fields": {"account_id": {"type": "relate"}, "name": {"type": "name"}}},
            {
                "names_path": "fields",
                "names_from": "keys",
                "renames": [{"match": {"path": "type", "equals": "relate"}, "to": "{name}_ref"}],
            },
            {"account_id_ref", "name"},
            id="json-keys-renames-test-the-definition",
        ),
    ],
)
def test_describe_renames_give_the_names_records_carry(
    body: object, describe: dict[str, object], expected: set[str] | None
) -> None:
    spec = DescribeSpec.model_validate({"path": "/fields", **describe})
    assert field_names(body, spec, "accounts") == expected


_EDMX = b"""<?xml version="1.0" encoding="utf-8"?>
<edmx:Edmx Version="1.0" xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx">
 <edmx:DataServices>
  <Schema Namespace="SAPB1" xmlns="http://schemas.microsoft.com/ado/2008/09/edm">
   <ComplexType Name="ContactEmployee"><Property Name="InternalCode"/><Property Name="U_Tier"/></ComplexType>
   <EntityType Name="BusinessPartner"><Property Name="CardCode"/><Property Name="Country"/></EntityType>
   <EntityType Name="SAPB1.Odd"><Property Name="Dotted"/></EntityType>
  </Schema>
 </edmx:DataServices>
</edmx:Edmx>"""
_EDMX_NS = {"edmx": "http://schemas.microsoft.com/ado/2007/06/edmx"}
_XSD_DOC = b"""<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">
 <xs:complexType name="account"><xs:all><xs:element name="AccountName"/><xs:element name="Type"/></xs:all>
 </xs:complexType></xs:schema>"""


@pytest.mark.parametrize(
    ("body", "describe", "expected"),
    [
        pytest.param(
            {"fields": [{"name": "Id"}, {"name": "Name"}, "junk"]},
            {"names_path": "fields"},
            {"Id", "Name"},
            id="json-entries",
        ),
        pytest.param(
            # SugarCRM metadata: an object keyed by field name, with a "_hash" beside the fields.
            {"modules": {"Accounts": {"fields": {"id": {"type": "id"}, "tier_c": {}, "_hash": "9f"}}}},
            {"names_path": "modules.{object}.fields", "names_from": "keys"},
            {"id", "tier_c"},
            id="json-keys",
        ),
        pytest.param(
            {"modules": {"Contacts": {"fields": {"id": {}}}}},
            {"names_path": "modules.{object}.fields", "names_from": "keys"},
            None,
            id="json-keys-of-another-object",
        ),
        pytest.param(
            _XSD_DOC,
            {"format": "xsd", "names_path": "xs:schema.xs:complexType.xs:all.xs:element"},
            {"AccountName", "Type"},
            id="xsd-dotted",
        ),
        pytest.param(
            _EDMX,
            {
                "format": "xsd",
                "namespaces": {**_EDMX_NS, "edm": "http://schemas.microsoft.com/ado/2008/09/edm"},
                "names_path": "edmx:DataServices/edm:Schema/edm:EntityType[@Name='BusinessPartner']/edm:Property",
                "name_key": "@Name",
            },
            {"CardCode", "Country"},
            id="edmx-entity-type",
        ),
        pytest.param(
            _EDMX,
            {
                "format": "xsd",
                "namespaces": {**_EDMX_NS, "edm": "*"},
                "names_path": "edmx:DataServices/edm:Schema/edm:ComplexType[@Name='ContactEmployee']/edm:Property",
                "name_key": "@Name",
            },
            {"InternalCode", "U_Tier"},
            id="edmx-any-namespace",
        ),
        pytest.param(
            _EDMX,
            {
                "format": "xsd",
                "namespaces": {**_EDMX_NS, "edm": "*"},
                "names_path": "edmx:Edmx/edmx:DataServices/edm:Schema/edm:EntityType[@Name='SAPB1.Odd']/edm:Property",
                "name_key": "@Name",
            },
            {"Dotted"},
            id="edmx-dots-inside-a-predicate",
        ),
    ],
)
def test_field_lists_are_read_from_the_describe_answer(
    body: object, describe: dict[str, object], expected: set[str] | None
) -> None:
    spec = DescribeSpec.model_validate({"path": "/describe", **describe})
    assert field_names(body, spec, "Accounts") == expected


DESCRIBE: dict[str, object] = {
    "path": "/fields",
    "names_path": "data",
    "name_key": "field_code",
    "containers": ["custom_fields"],
}


def _object(describe: dict[str, object], fields: list[dict[str, str]]) -> ObjectSpec:
    return ObjectSpec.model_validate(
        {
            "request": {"path": "/items"},
            "records_path": "data",
            "primary_key": "id",
            "incremental": {"cursor": "update_time", "format": "iso8601_seconds"},
            "describe": describe,
            "ignore_undeclared": ["visible_to"],
            "fields": [
                {"name": "id"},
                {"name": "update_time"},
                {"name": "city", "path": "address.locality"},
                {"name": "account_id", "path": "Account_Name.id", "select": "Account_Name"},
                *fields,
            ],
        }
    )


def test_the_field_list_names_a_declaration_covers() -> None:
    obj = _object(DESCRIBE, [{"name": "external_id", "path": "custom_fields.4f1c"}])
    listed = {"id", "update_time", "address", "Account_Name", "4f1c", "visible_to", "77de", "locality"}
    # Paths, the object a nested path reads part of, requested names, names under a container and
    # ignored paths are covered; the rest is drift (a new custom field, or a name seen only nested).
    assert listed - described_names(obj) == {"77de", "locality"}


# Labels: fields whose key differs per account, found by display name in the field list.
LABELLED = {**DESCRIBE, "label_key": "field_name", "label_where": {"path": "is_custom_field", "equals": True}}
LABEL_FIELDS = [
    {"name": "external_id", "path": "custom_fields.{key}", "label": "External ID"},
    {"name": "website", "path": "custom_fields.{key}", "label": "Website"},
]
FIELD_LIST = [
    {"field_code": "id", "field_name": "ID", "is_custom_field": False},
    {"field_code": "address", "field_name": "Address", "is_custom_field": False},
    {
        "field_code": "external_id",
        "field_name": "External ID",
        "is_custom_field": False,
    },  # standard, same name
    {"field_code": "4f1c", "field_name": "External ID", "is_custom_field": True},
    {"field_code": "9a2b", "field_name": "website", "is_custom_field": True},
    {"field_code": "77de", "field_name": "Shoe size", "is_custom_field": True},
]


def test_labels_take_the_key_the_field_list_gives_their_display_name() -> None:
    listing = FieldList({str(e["field_code"]) for e in FIELD_LIST}, FIELD_LIST)
    resolved = resolve_labels(_object(LABELLED, LABEL_FIELDS), listing, CONTEXT)
    # Only custom fields are candidates (label_where), and display names match regardless of case.
    assert resolved.field("external_id").source_path == "custom_fields.4f1c"
    assert resolved.field("website").source_path == "custom_fields.9a2b"
    assert not resolved.labelled()
    assert listing.names - described_names(resolved) == {"external_id", "77de"}


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        pytest.param(
            FIELD_LIST[:3], "has no field named 'External ID' \\(declared as external_id\\)", id="missing"
        ),
        pytest.param(
            [*FIELD_LIST, {"field_code": "5e5e", "field_name": "External ID", "is_custom_field": True}],
            "2 fields are named 'External ID' .*4f1c, 5e5e",
            id="ambiguous",
        ),
    ],
)
def test_a_label_no_field_or_several_fields_have_fails_naming_it(
    entries: list[dict[str, object]], expected: str
) -> None:
    entries = [*entries, {"field_code": "9a2b", "field_name": "Website", "is_custom_field": True}]
    listing = FieldList({str(e["field_code"]) for e in entries}, entries)
    with pytest.raises(ApiRequestError, match=expected):
        resolve_labels(_object(LABELLED, LABEL_FIELDS), listing, CONTEXT)
