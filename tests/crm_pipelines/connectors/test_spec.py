"""System declarations (YAML + pydantic) and the paginators, tested without any HTTP."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from crm_pipelines.connectors.paging import (
    MISSING,
    CursorPaginator,
    KeysetPaginator,
    NextLinkPaginator,
    OffsetPaginator,
    PageNumberPaginator,
    PageRequest,
    Paginator,
    make_paginator,
    resolve_path,
)
from crm_pipelines.connectors.spec import (
    CursorPaging,
    KeysetPaging,
    NextLinkPaging,
    ObjectSpec,
    SystemSpecError,
    available_systems,
    load_system,
    load_system_file,
    parse_system,
    systems_dir,
)

# Field lists from docs/contracts.md, the contract the YAMLs must honour.
SALESFORCE_FIELDS = {
    "Account": "Id Name Website Phone BillingStreet BillingCity BillingPostalCode BillingCountry Industry "
    "AnnualRevenue CreatedDate LastModifiedDate SystemModstamp IsDeleted",
    "Contact": "Id AccountId FirstName LastName Email Phone Title MailingCountry CreatedDate SystemModstamp IsDeleted",
    "Opportunity": "Id AccountId Name StageName Amount CurrencyIsoCode CloseDate IsClosed IsWon CreatedDate "
    "SystemModstamp IsDeleted",
}
HUBSPOT_PROPERTIES = {
    "companies": "name domain phone address city zip country industry annualrevenue createdate hs_lastmodifieddate",
    "contacts": "firstname lastname email phone jobtitle country associatedcompanyid createdate lastmodifieddate",
    "deals": "dealname amount deal_currency_code dealstage pipeline closedate createdate hs_lastmodifieddate",
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
        assert obj.deletes.mode == "flagged" and obj.deletes.flag_field == "IsDeleted"
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
        assert obj.deletes.mode == "deleted_pass" and obj.deletes.params == {"archived": "true"}
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
    assert sdata.select_name("$key") is None and sdata.select_name("Account.$key") == "Account"


def test_a_server_filter_may_leave_the_upper_bound_to_the_client() -> None:
    # Sage CRM's where documents eq, ge, gt, like, between: no "lt" for the window's end.
    obj = _sdata_object(
        incremental={
            "cursor": "ModifyDate",
            "format": "sdata",
            "server_filter": {"lower": "ModifyDate ge @{value}@", "where": "{conditions}"},
        }
    )
    assert obj.incremental.server_filter is not None and obj.incremental.server_filter.upper is None


def test_unknown_object_names_the_declared_ones() -> None:
    with pytest.raises(KeyError, match="Account"):
        load_system(name="salesforce").get_object("Lead")


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
            r"auth\.oauth2_client_credentials: Value error, needs token_path or token_url_variable",
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
    with pytest.raises(SystemSpecError, match="bad.yaml: cannot read"):
        load_system_file(path=path)


# --- resolve_path ----------------------------------------------------------------------------------

DOC = {"a": {"b": None, "c": [{"id": "7"}]}, "flag": False}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("a.b", None, id="present-null"),
        pytest.param("a.c.0.id", "7", id="list-index"),
        pytest.param("a.c.1.id", MISSING, id="index-out-of-range"),
        pytest.param("a.x", MISSING, id="absent-key"),
        pytest.param("flag", False, id="false-is-a-value"),
        pytest.param("flag.deeper", MISSING, id="through-a-scalar"),
    ],
)
def test_resolve_path(path: str, expected: Any) -> None:
    assert resolve_path(DOC, path) is expected or resolve_path(DOC, path) == expected


# --- paginators: (paginator, previous request, body, records, page size) -> next request ------------

FIRST = PageRequest(url="/items", params={"limit": "2"}, headers={"X-Page": "h"})


@pytest.mark.parametrize(
    ("paginator", "previous", "body", "n_records", "expected"),
    [
        # next link (Salesforce)
        pytest.param(
            NextLinkPaginator(next_path="nextRecordsUrl", done_path="done"),
            FIRST,
            {"done": False, "nextRecordsUrl": "/services/data/v62.0/query/01g-2000"},
            2,
            PageRequest(url="/services/data/v62.0/query/01g-2000", params={}, headers={"X-Page": "h"}),
            id="next-link-follows",
        ),
        pytest.param(
            NextLinkPaginator(next_path="nextRecordsUrl", done_path="done"),
            FIRST,
            {"done": True, "nextRecordsUrl": "/stale"},
            2,
            None,
            id="next-link-done-wins",
        ),
        pytest.param(
            NextLinkPaginator(next_path="nextRecordsUrl", done_path="done"),
            FIRST,
            {"done": False},
            2,
            None,
            id="next-link-absent",
        ),
        # cursor (HubSpot)
        pytest.param(
            CursorPaginator(cursor_path="paging.next.after", cursor_param="after"),
            FIRST,
            {"paging": {"next": {"after": "NTI1", "link": "?after=NTI1"}}},
            2,
            PageRequest(url="/items", params={"limit": "2", "after": "NTI1"}, headers={"X-Page": "h"}),
            id="cursor-follows",
        ),
        pytest.param(
            CursorPaginator(cursor_path="paging.next.after", cursor_param="after"),
            PageRequest(url="/items", params={"limit": "2", "after": "NTI1"}),
            {"paging": {"next": {"after": "OTk5"}}},
            2,
            PageRequest(url="/items", params={"limit": "2", "after": "OTk5"}),
            id="cursor-replaces-previous",
        ),
        pytest.param(
            CursorPaginator(cursor_path="paging.next.after", cursor_param="after"),
            FIRST,
            {"results": []},
            0,
            None,
            id="cursor-no-paging-block",
        ),
        # offset
        pytest.param(
            OffsetPaginator(),
            PageRequest(url="/items", params={"offset": "0", "limit": "2"}),
            {},
            2,
            PageRequest(url="/items", params={"offset": "2", "limit": "2"}),
            id="offset-full-page-advances",
        ),
        pytest.param(
            OffsetPaginator(),
            PageRequest(url="/items", params={"offset": "4", "limit": "2"}),
            {},
            1,
            None,
            id="offset-short-page-stops",
        ),
        pytest.param(
            OffsetPaginator(total_path="meta.total"),
            PageRequest(url="/items", params={"offset": "2", "limit": "2"}),
            {"meta": {"total": 4}},
            2,
            None,
            id="offset-total-reached",
        ),
        pytest.param(
            OffsetPaginator(total_path="meta.total"),
            PageRequest(url="/items", params={"offset": "0", "limit": "2"}),
            {"meta": {"total": 5}},
            1,
            PageRequest(url="/items", params={"offset": "1", "limit": "2"}),
            id="offset-server-capped-page-continues-by-total",
        ),
        pytest.param(
            OffsetPaginator(),
            PageRequest(url="/items", params={"offset": "0", "limit": "2"}),
            {},
            0,
            None,
            id="offset-empty-stops",
        ),
        pytest.param(
            OffsetPaginator(offset_param="startIndex", start=1, total_path="$totalResults"),
            PageRequest(url="/items", params={"startIndex": "3", "limit": "2"}),
            {"$totalResults": 5},
            2,
            PageRequest(url="/items", params={"startIndex": "5", "limit": "2"}),
            id="offset-one-based-last-record-still-read",
        ),
        pytest.param(
            OffsetPaginator(offset_param="startIndex", start=1, total_path="$totalResults"),
            PageRequest(url="/items", params={"startIndex": "3", "limit": "2"}),
            {"$totalResults": 4},
            2,
            None,
            id="offset-one-based-total-reached",
        ),
        # page number
        pytest.param(
            PageNumberPaginator(),
            PageRequest(url="/items", params={"page": "1"}),
            {},
            2,
            PageRequest(url="/items", params={"page": "2"}),
            id="page-number-advances",
        ),
        pytest.param(
            PageNumberPaginator(),
            PageRequest(url="/items", params={"page": "3"}),
            {},
            1,
            None,
            id="page-number-short-page-stops",
        ),
        pytest.param(
            PageNumberPaginator(start=0, total_pages_path="total_pages"),
            PageRequest(url="/items", params={"page": "2"}),
            {"total_pages": 3},
            2,
            None,
            id="page-number-zero-based-last-page",
        ),
        pytest.param(
            PageNumberPaginator(total_pages_path="total_pages"),
            PageRequest(url="/items", params={"page": "1"}),
            {"total_pages": 3},
            2,
            PageRequest(url="/items", params={"page": "2"}),
            id="page-number-before-total",
        ),
    ],
)
def test_paginator_next_request(
    paginator: Paginator, previous: PageRequest, body: Any, n_records: int, expected: PageRequest | None
) -> None:
    records = [{"id": str(i)} for i in range(n_records)]
    assert paginator.next_request(previous=previous, body=body, records=records, page_size=2) == expected


@pytest.mark.parametrize(
    ("paginator", "expected_params"),
    [
        pytest.param(NextLinkPaginator(next_path="n"), {"q": "x"}, id="next-link"),
        pytest.param(CursorPaginator(cursor_path="c", cursor_param="after"), {"q": "x"}, id="cursor"),
        pytest.param(OffsetPaginator(start=0), {"q": "x", "offset": "0", "limit": "50"}, id="offset"),
        pytest.param(PageNumberPaginator(start=1), {"q": "x", "page": "1"}, id="page-number"),
    ],
)
def test_paginator_first_request(paginator: Paginator, expected_params: dict[str, str]) -> None:
    first = paginator.first_request(request=PageRequest(url="/items", params={"q": "x"}), page_size=50)
    assert dict(first.params) == expected_params


def test_offset_paging_walks_a_list_without_gaps_or_duplicates() -> None:
    rows = [str(i) for i in range(7)]
    paginator = make_paginator(spec=parse_system(data=_raw("salesforce"), source="x").paging)
    assert isinstance(paginator, NextLinkPaginator)
    offset = OffsetPaginator()
    request: PageRequest | None = offset.first_request(request=PageRequest(url="/items"), page_size=3)
    seen: list[str] = []
    while request is not None:
        start = int(request.params["offset"])
        page = rows[start : start + int(request.params["limit"])]
        seen += page
        request = offset.next_request(previous=request, body={}, records=page, page_size=3)
    assert seen == rows


def _keyset() -> KeysetPaginator:
    return KeysetPaginator(
        key_path="Id", filter_param="$filter", condition="Id gt {last}", limit_param="$top"
    )


def test_keyset_pages_add_the_last_key_to_the_request_filter() -> None:
    paginator = _keyset()
    first = paginator.first_request(
        request=PageRequest(url="/Account", params={"$filter": "ModifiedOn ge X", "$orderby": "Id asc"}),
        page_size=2,
    )
    assert dict(first.params) == {"$filter": "ModifiedOn ge X", "$orderby": "Id asc", "$top": "2"}
    second = paginator.next_request(previous=first, body={}, records=[{"Id": "a"}, {"Id": "b"}], page_size=2)
    assert second is not None and second.params["$filter"] == "(ModifiedOn ge X) and Id gt b"
    # The condition replaces the previous page's: it is added to the first request's filter only.
    third = paginator.next_request(previous=second, body={}, records=[{"Id": "c"}, {"Id": "d"}], page_size=2)
    assert third is not None and third.params["$filter"] == "(ModifiedOn ge X) and Id gt d"
    assert paginator.next_request(previous=third, body={}, records=[{"Id": "e"}], page_size=2) is None
    # A full read has no filter of its own: the condition stands alone.
    full = _keyset()
    start = full.first_request(request=PageRequest(url="/Account"), page_size=1)
    assert "$filter" not in start.params
    following = full.next_request(previous=start, body={}, records=[{"Id": "a"}], page_size=1)
    assert following is not None and following.params["$filter"] == "Id gt a"
    with pytest.raises(ValueError, match="no key at 'Id'"):
        full.next_request(previous=start, body={}, records=[{"Name": "x"}], page_size=1)


def _walk(paginator: Paginator, rows: list[str], delete_after_first_page: str) -> list[str]:
    """Read ``rows`` (sorted keys) page by page as a server would answer, deleting one row mid-read."""
    live = list(rows)
    request: PageRequest | None = paginator.first_request(request=PageRequest(url="/items"), page_size=3)
    seen: list[str] = []
    while request is not None:
        after = str(request.params.get("$filter", "")).rpartition("Id gt ")[2]
        matching = [r for r in live if not after or r > after]
        start = int(request.params.get("offset", 0))
        page = matching[start : start + 3] if after else live[start : start + 3]
        seen += page
        if delete_after_first_page in live and len(seen) == 3:
            live.remove(delete_after_first_page)  # a row already read is deleted: the rest shift
        request = paginator.next_request(
            previous=request, body={}, records=[{"Id": r} for r in page], page_size=3
        )
    return seen


def test_keyset_paging_misses_nothing_when_a_row_is_deleted_during_the_read() -> None:
    rows = [f"k{i}" for i in range(8)]
    assert _walk(_keyset(), rows, "k1") == rows
    # What offset paging does in the same situation: the row after the deleted one is never read.
    assert "k3" not in _walk(OffsetPaginator(), rows, "k1")


def test_keyset_paging_is_declared_with_a_condition_on_the_last_key() -> None:
    spec = KeysetPaging.model_validate(
        {"kind": "keyset", "key_path": "Id", "filter_param": "$filter", "condition": "Id gt {last}"}
    )
    assert isinstance(make_paginator(spec=spec), KeysetPaginator)
    with pytest.raises(ValueError, match="must use"):
        KeysetPaging.model_validate(
            {"kind": "keyset", "key_path": "Id", "filter_param": "$filter", "condition": "Id gt 0"}
        )


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
    assert isinstance(system.paging, CursorPaging) and system.paging.chain_limit == 100_000
    for module in ("Accounts", "Contacts", "Deals"):
        obj = system.get_object(module)
        assert obj.incremental.lower_bound == "exclusive" and obj.incremental.server_order
        assert obj.request.headers["If-Modified-Since"] == "{since}"
        assert obj.deletes.mode == "deleted_pass" and obj.deletes.path == f"/crm/v8/{module}/deleted"
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
        assert obj.upsert is not None and obj.upsert.style == "per_record"
        assert obj.upsert.lookup is not None and obj.upsert.lookup.confirm is not None
    deals = system.get_object("deals")
    assert {"stage_id", "status"} <= {f.name for f in deals.fields}
