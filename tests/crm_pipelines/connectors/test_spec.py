"""System declarations (YAML + pydantic), tested without any HTTP."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from crm_pipelines.connectors.spec import (
    CursorPaging,
    FieldSpec,
    NextLinkPaging,
    ObjectSpec,
    SystemSpecError,
    available_systems,
    load_system,
    load_system_file,
    parse_system,
    systems_dir,
)
from crm_pipelines.connectors.writes.per_record import PerRecordUpsert

# Field lists from docs/contracts.md, the contract the YAMLs must honour.
SALESFORCE_FIELDS = {
    "Account": "Id Name Website Phone BillingStreet BillingCity BillingPostalCode BillingCountry Industry "
    "AnnualRevenue CreatedDate LastModifiedDate SystemModstamp IsDeleted "
    "ERP_Customer_Number__c Open_Balance__c Overdue_Amount__c Last_Payment_Date__c",
    "Contact": "Id AccountId FirstName LastName Email Phone Title MailingCountry MailingStreet MailingCity "
    "MailingPostalCode Birthdate CreatedDate SystemModstamp IsDeleted",
    "Opportunity": "Id AccountId Name StageName Amount CurrencyIsoCode CloseDate IsClosed IsWon CreatedDate "
    "SystemModstamp IsDeleted ERP_Order_Number__c ERP_Invoice_Numbers__c",
    "Lead": "Id FirstName LastName Email Phone Company Title Country Status LeadSource IsConverted ConvertedDate "
    "ConvertedContactId CreatedDate SystemModstamp IsDeleted",
}
HUBSPOT_PROPERTIES = {
    "companies": "name domain phone address city zip country industry annualrevenue createdate hs_lastmodifieddate "
    "erp_customer_number",
    "contacts": "firstname lastname email phone jobtitle country address city zip date_of_birth associatedcompanyid "
    "createdate lastmodifieddate lifecyclestage hs_lead_status hs_lifecyclestage_lead_date "
    "hs_lifecyclestage_marketingqualifiedlead_date hs_lifecyclestage_salesqualifiedlead_date",
    "deals": "dealname amount deal_currency_code dealstage pipeline closedate createdate hs_lastmodifieddate "
    "erp_order_number erp_invoice_numbers dynamics_opportunity_id",
}


def _raw(name: str) -> dict[str, Any]:
    data = yaml.safe_load((systems_dir() / f"{name}.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


# --- the bundled systems ---------------------------------------------------------------------------


def test_bundled_systems_are_listed() -> None:
    assert {"salesforce", "hubspot"} <= set(available_systems())


def test_salesforce_yaml_validates_and_matches_contract() -> None:
    system = load_system(name="salesforce")
    assert isinstance(system.paging, NextLinkPaging)
    assert system.page_size.default == 2000
    for object_name, fields in SALESFORCE_FIELDS.items():
        obj = system.get_object(object_name)
        assert [f.name for f in obj.fields] == fields.split()
        # Only declared fields are requested: the SOQL SELECT list is exactly the declared paths.
        assert obj.selected_names() == fields.split()
        assert obj.primary_key == "Id"
        assert obj.incremental.cursor == "SystemModstamp"
        assert obj.incremental.format == "soql_datetime"
        assert obj.deletes.mode == "flagged"
        assert obj.deletes.flag_field == "IsDeleted"
        assert obj.deletes.path == "/services/data/v62.0/queryAll"
        assert "v62.0/query" in obj.request.path
        assert f"FROM {object_name}" in obj.request.params["q"]
        assert obj.request.headers["Sforce-Query-Options"] == "batchSize={page_size}"


def test_hubspot_yaml_validates_and_matches_contract() -> None:
    system = load_system(name="hubspot")
    assert isinstance(system.paging, CursorPaging)
    assert system.page_size.maximum == 100
    for object_name, properties in HUBSPOT_PROPERTIES.items():
        obj = system.get_object(object_name)
        assert obj.selected_names() == properties.split()
        assert obj.request.path == f"/crm/v3/objects/{object_name}"
        assert obj.request.params["properties"] == "{fields}"
        assert obj.primary_key == "id"
        assert obj.deletes.mode == "deleted_pass"
        assert obj.deletes.params == {"archived": "true"}
    assert load_system(name="hubspot").get_object("contacts").incremental.cursor == "lastmodifieddate"
    deals = system.get_object("deals")
    assert deals.request.params["associations"] == "companies"
    assert deals.field("company_id").source_path == "associations.companies.results.0.id"


def _sdata_object(**overrides: Any) -> ObjectSpec:
    data: dict[str, Any] = {
        "request": {"path": "/sdata/slx/dynamic/-/contacts", "params": {"select": "{fields}"}},
        "records_path": "$resources",
        "primary_key": "id",
        "incremental": {"cursor": "ModifyDate", "format": "sdata"},
        "fields": [
            {"name": "id", "path": "$key"},
            {"name": "LastName"},
            {"name": "Country", "path": "Address.Country"},
            {"name": "account_id", "path": "Account.$key"},
            {"name": "ModifyDate"},
        ],
        **overrides,
    }
    return ObjectSpec.model_validate(data)


def test_nested_selects_and_protocol_properties() -> None:
    plain = _sdata_object(select_separator="/")
    assert plain.selected_names() == ["$key", "LastName", "Address/Country", "Account/$key", "ModifyDate"]
    # SData returns $key with every resource and reference: never asked for, the reference is.
    sdata = _sdata_object(select_separator="/", protocol_prefix="$")
    assert sdata.selected_names() == ["LastName", "Address/Country", "Account", "ModifyDate"]
    assert sdata.select_name("$key") is None
    assert sdata.select_name("Account.$key") == "Account"


def test_a_server_filter_may_leave_the_upper_bound_to_the_client() -> None:
    # Sage CRM's where documents eq, ge, gt, like, between: no "lt" for the window's end.
    obj = _sdata_object(
        incremental={
            "cursor": "ModifyDate",
            "format": "sdata",
            "server_filter": {"lower": "ModifyDate ge @{value}@", "where": "{conditions}"},
        }
    )
    assert obj.incremental.server_filter is not None
    assert obj.incremental.server_filter.upper is None


def test_unknown_object_names_the_declared_ones() -> None:
    with pytest.raises(KeyError, match="Account"):
        load_system(name="salesforce").get_object("Campaign")


@pytest.mark.parametrize("name", ["../etc/passwd", "Salesforce", "nope"])
def test_load_system_refuses_bad_or_unknown_names(name: str) -> None:
    with pytest.raises(SystemSpecError):
        load_system(name=name)


def test_page_size_is_clamped_into_the_api_range() -> None:
    page_size = load_system(name="salesforce").page_size
    assert page_size.clamp(None) == 2000
    assert page_size.clamp(10) == 200  # Salesforce's batchSize minimum
    assert page_size.clamp(50_000) == 2000


def test_a_field_with_select_false_is_read_but_not_requested() -> None:
    data = _raw("salesforce")
    data["objects"]["Account"]["fields"].append({"name": "owner_name", "path": "Owner.Name", "select": False})
    obj = parse_system(data=data, source="x").get_object("Account")
    # Owner.Name comes with another option (an expanded lookup): listing it in {fields} would be refused.
    assert "Owner.Name" not in obj.selected_names()
    assert obj.selected_names() == SALESFORCE_FIELDS["Account"].split()
    assert obj.field("owner_name").source_path == "Owner.Name"


# --- bad declarations give clear errors ------------------------------------------------------------


def _per_record(**changes: Any) -> dict[str, Any]:
    """A per_record upsert declaration (lookup by external id, then create or update)."""
    return {
        "style": "per_record",
        "lookup": {"path": "/x", "params": {"q": "{key}"}, "records_path": "value", "id_path": "Id"},
        "create": {"method": "POST", "path": "/x"},
        "update": {"method": "PATCH", "path": "/x('{key}')"},
        **changes,
    }


def _broken(mutate: Any) -> dict[str, Any]:
    data = copy.deepcopy(_raw("salesforce"))
    mutate(data)
    return data


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(
            lambda d: d["objects"]["Account"].update(primary_key="AccountNumber"),
            r"objects\.Account: .*primary_key 'AccountNumber' is not a declared field",
            id="primary-key-not-declared",
        ),
        pytest.param(
            lambda d: d["objects"]["Account"].update(recordz_path="records"),
            r"objects\.Account\.recordz_path: Extra inputs are not permitted",
            id="typo-in-key",
        ),
        pytest.param(
            lambda d: d["paging"].update(kind="link_header"),
            r"paging: .*link_header",
            id="unknown-paging-kind",
        ),
        pytest.param(
            lambda d: d["objects"]["Contact"]["request"]["params"].update(q="SELECT {feilds} FROM Contact"),
            r"objects\.Contact\.request\.params: .*unknown placeholder\(s\) \['feilds'\]",
            id="unknown-template-placeholder",
        ),
        pytest.param(
            lambda d: d["objects"]["Account"]["incremental"].update(format="iso"),
            r"objects\.Account\.incremental\.format: .*unknown cursor format 'iso'; known: soql_datetime, iso8601",
            id="unknown-cursor-format",
        ),
        pytest.param(
            lambda d: d["page_size"].update(default=5000),
            r"page_size: .*minimum <= default <= maximum",
            id="page-size-out-of-range",
        ),
        pytest.param(
            lambda d: d["objects"]["Opportunity"]["fields"].append({"name": "Id"}),
            r"duplicate field names: \['Id'\]",
            id="duplicate-field",
        ),
        pytest.param(
            lambda d: d["auth"].pop("token_path"),
            r"auth\.oauth2_client_credentials: needs token_path or token_url_variable",
            id="missing-token-endpoint",
        ),
        pytest.param(
            lambda d: d["objects"]["Account"].update(deletes={"mode": "deleted_pass", "params": {"x": "1"}}),
            r"bulk reads need deletes mode 'none' or 'flagged'",
            id="bulk-with-a-deleted-pass",
        ),
        pytest.param(
            lambda d: d["auth"].pop("client_id_variable"),
            r"auth\.oauth2_client_credentials\.client_id_variable: Field required",
            id="missing-auth-parameter",
        ),
        pytest.param(
            lambda d: d["objects"]["Account"]["describe"].update(format="xsd", names_from="keys"),
            r"objects\.Account\.describe: .*names_from 'keys' reads a JSON object",
            id="describe-keys-of-xml",
        ),
        pytest.param(
            lambda d: d["objects"]["Account"]["describe"].update(namespaces={"edm": "*"}),
            r"objects\.Account\.describe: .*namespaces apply to format 'xsd' only",
            id="describe-namespaces-of-json",
        ),
        pytest.param(
            lambda d: d["objects"]["Account"]["describe"].update(params={"module": "{module}"}),
            r"objects\.Account\.describe\.params: .*unknown placeholder\(s\) \['module'\]",
            id="describe-unknown-placeholder",
        ),
        pytest.param(
            lambda d: d["objects"]["Account"].update(upsert=_per_record(on_missing="create")),
            r"objects\.Account\.upsert\.per_record: .*on_missing 'create' replaces the lookup",
            id="on-missing-create-with-lookup",
        ),
        pytest.param(
            lambda d: d["objects"]["Account"].update(
                upsert={**_per_record(on_missing="create"), "lookup": None, "create": None}
            ),
            r"objects\.Account\.upsert\.per_record: .*on_missing 'create' needs 'create'",
            id="on-missing-create-without-create",
        ),
    ],
)
def test_bad_declaration_gives_located_error(mutate: Any, expected: str) -> None:
    with pytest.raises(SystemSpecError, match=expected) as info:
        parse_system(data=_broken(mutate), source="broken.yaml")
    assert str(info.value).startswith("broken.yaml: ")
    assert info.value.__cause__ is not None  # pydantic's ValidationError, kept for tooling


def test_unparseable_yaml_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(SystemSpecError, match=r"bad\.yaml: cannot read"):
        load_system_file(path=path)


# --- keys for chains of cursors, exclusive bounds and fields declared by label ---------------------


def _hubspot(mutate: Any) -> dict[str, Any]:
    data = copy.deepcopy(_raw("hubspot"))
    mutate(data)
    return data


def _contact_field(field: dict[str, Any]) -> Any:
    return lambda d: d["objects"]["contacts"]["fields"].append(field)


def _both(*mutations: Any) -> Any:
    def apply(data: dict[str, Any]) -> None:
        for mutate in mutations:
            mutate(data)

    return apply


def test_a_field_read_from_part_of_a_lookup_is_requested_once_by_its_select_name() -> None:
    obj = ObjectSpec.model_validate(
        {
            "request": {"path": "/crm/v8/Contacts", "params": {"fields": "{fields}"}},
            "records_path": "data",
            "primary_key": "id",
            "incremental": {"cursor": "Modified_Time", "format": "iso8601_offset"},
            "fields": [
                {"name": "id"},
                {"name": "Modified_Time"},
                {"name": "account_id", "path": "Account_Name.id", "select": "Account_Name"},
                {"name": "account_name", "path": "Account_Name.name", "select": "Account_Name"},
            ],
        }
    )
    assert obj.selected_names() == ["id", "Modified_Time", "Account_Name"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(
            lambda d: d["paging"].update(chain_limit=10_000),
            r"objects\.companies: paging\.chain_limit restarts the read .*server_order: true",
            id="chain-limit-needs-an-ordered-read",
        ),
        pytest.param(
            _both(
                lambda d: d["paging"].update(chain_limit=10_000),
                lambda d: d["objects"]["companies"]["incremental"].update(server_order=True),
            ),
            r"objects\.companies: paging\.chain_limit needs the window's lower bound in the request",
            id="chain-limit-needs-the-lower-bound-in-the-request",
        ),
        pytest.param(
            lambda d: d["objects"]["contacts"]["incremental"].update(lower_bound="after"),
            r"objects\.contacts\.incremental\.lower_bound: Input should be 'inclusive' or 'exclusive'",
            id="lower-bound-kind",
        ),
        pytest.param(
            _contact_field({"name": "x", "label": "X"}),
            r"field 'x': a label needs \{key\} in its path",
            id="label-without-key-placeholder",
        ),
        pytest.param(
            _contact_field({"name": "x", "path": "properties.{key}"}),
            r"field 'x': \{key\} in a path needs a label",
            id="key-placeholder-without-label",
        ),
        pytest.param(
            _contact_field({"name": "x", "path": "properties.{key}", "label": "X"}),
            r"objects\.contacts: .*have a label: describe with label_key must say where to find them",
            id="labels-need-a-field-list",
        ),
        pytest.param(
            lambda d: d["objects"]["contacts"]["describe"].update(format="xsd", label_key="label"),
            r"label_key needs a JSON list of entries",
            id="labels-need-json",
        ),
        pytest.param(
            _both(
                lambda d: d["objects"]["contacts"]["describe"].update(label_key="label"),
                lambda d: d["objects"]["contacts"]["fields"].__setitem__(
                    0, {"name": "id", "path": "{key}", "label": "Record ID"}
                ),
            ),
            r"the primary key cannot be declared by label",
            id="no-labelled-primary-key",
        ),
    ],
)
def test_chains_bounds_and_labels_are_checked(mutate: Any, expected: str) -> None:
    with pytest.raises(SystemSpecError, match=expected):
        parse_system(data=_hubspot(mutate), source="broken.yaml")


# --- Zoho and Pipedrive: the declarations ------------------------------------------------------------


def test_zoho_yaml_requests_lookups_once_and_restarts_long_chains() -> None:
    system = load_system(name="zoho")
    assert isinstance(system.paging, CursorPaging)
    assert system.paging.chain_limit == 100_000
    for module in ("Accounts", "Contacts", "Deals"):
        obj = system.get_object(module)
        assert obj.incremental.lower_bound == "exclusive"
        assert obj.incremental.server_order
        assert obj.request.headers["If-Modified-Since"] == "{since}"
        assert obj.deletes.mode == "deleted_pass"
        assert obj.deletes.path == f"/crm/v8/{module}/deleted"
    contacts = system.get_object("Contacts")
    assert contacts.field("account_id").source_path == "Account_Name.id"
    assert contacts.selected_names().count("Account_Name") == 1  # the lookup, once, by its API name


def test_pipedrive_yaml_declares_custom_fields_by_label_and_confirms_lookups() -> None:
    system = load_system(name="pipedrive")
    for name in ("organizations", "persons", "deals"):
        obj = system.get_object(name)
        assert obj.deletes.mode == "key_compare"
        assert obj.field("external_id").label == "External ID"
        assert obj.field("external_id").source_path == "custom_fields.{key}"
        assert isinstance(obj.upsert, PerRecordUpsert)
        assert obj.upsert.style == "per_record"
        assert obj.upsert.lookup is not None
        assert obj.upsert.lookup.confirm is not None
    deals = system.get_object("deals")
    assert {"stage_id", "status"} <= {f.name for f in deals.fields}


def test_a_write_key_and_template_say_how_a_lookup_is_written() -> None:
    account = load_system(name="dynamics").get_object("contacts").field("account_id")
    assert account.source_path == "_parentcustomerid_value"
    assert account.write_key == "parentcustomerid_account@odata.bind"
    assert account.write_template is not None
    assert account.write_template.format(value="42") == "/accounts(42)"


@pytest.mark.parametrize(
    ("template", "message"),
    [("/accounts(x)", "needs {value}"), ("/accounts({id})", "unknown placeholder")],
)
def test_a_write_template_must_spell_the_value(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FieldSpec.model_validate({"name": "account_id", "write_template": template})
