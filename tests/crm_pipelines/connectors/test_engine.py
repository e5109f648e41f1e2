"""The connector engine: building blocks without HTTP, then end to end against the simulators."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from crm_pipelines.connectors.auth import (
    ConnectionSettings,
    OAuth2ClientCredentials,
    Secret,
    SessionLogin,
    clear_token_cache,
)
from crm_pipelines.connectors.cursors import _format_cursor, _lower_literal, _render_where
from crm_pipelines.connectors.describe import _described_names, _field_names, _FieldList, _resolve_labels
from crm_pipelines.connectors.engine import (
    DELETED,
    EXTRACTED_AT,
    ExtractStats,
    PageInfo,
    SchemaDrift,
    check_connection,
    extract_object,
    output_schema,
    parse_cursor,
)
from crm_pipelines.connectors.limits import (
    ApiRequestError,
    AuthenticationError,
    ErrorContext,
    InsecureURLError,
    TokenBucket,
    check_url_allowed,
    describe_error_body,
    parse_retry_after,
    redact,
    shared_bucket,
)
from crm_pipelines.connectors.pages import _Chain
from crm_pipelines.connectors.paging import PageRequest
from crm_pipelines.connectors.session import render_value
from crm_pipelines.connectors.spec import (
    DescribeSpec,
    IncrementalSpec,
    ObjectSpec,
    OffsetPaging,
    SessionAuth,
    SystemSpec,
    load_system,
    parse_system,
)
from crm_pipelines_sandbox.data import SandboxLayout, generate_sandbox
from crm_pipelines_sandbox.simulators.base import RateLimit
from crm_pipelines_sandbox.simulators.hubspot import HubSpotSimulator
from crm_pipelines_sandbox.simulators.records import add_field
from crm_pipelines_sandbox.simulators.salesforce import SalesforceSimulator
from crm_pipelines_sandbox.simulators.store import count_records, fetch_records
from crm_pipelines_sandbox.systems import build_store, sample_seeds, sandbox_crm
from resources.crm_api import CrmApiResource

CONTEXT = ErrorContext(system_name="salesforce", system_title="Salesforce", object_name="Contact")


# --- building blocks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("120", 120.0, id="seconds"),
        pytest.param(" 0 ", 0.0, id="zero"),
        pytest.param(None, None, id="absent"),
        pytest.param("soon", None, id="garbage"),
        pytest.param(
            format_datetime(datetime(2026, 11, 25, 10, 0, 30, tzinfo=UTC), usegmt=True), 30.0, id="http-date"
        ),
        pytest.param(
            format_datetime(datetime(2026, 11, 25, 9, 0, 0, tzinfo=UTC), usegmt=True),
            0.0,
            id="http-date-past",
        ),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after(value=value, now=now) == expected


def test_token_bucket_paces_and_pauses() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(capacity=2, interval_seconds=1.0, clock=lambda: now[0], sleep=sleep)
    assert bucket.acquire() == 0 and bucket.acquire() == 0  # the burst
    # A token is back after 0.5 s, but two requests already went out in this 1 s window: the next
    # waits until the first leaves it (plus a small margin for the server's arrival stamp).
    assert bucket.acquire() == pytest.approx(1.02)
    bucket.pause(3.0)  # e.g. Retry-After: 3
    assert bucket.acquire() >= 3.0 - 1e-9
    assert sum(slept) == pytest.approx(now[0])


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        pytest.param("https://example.my.salesforce.com", True, id="https"),
        pytest.param("http://127.0.0.1:8123", True, id="loopback-v4"),
        pytest.param("http://127.10.0.3:8123", True, id="loopback-v4-range"),
        pytest.param("http://[::1]:8123", True, id="loopback-v6"),
        pytest.param("http://localhost:8123", True, id="localhost"),
        pytest.param("http://api.hubapi.com", False, id="plain-http-remote"),
        pytest.param("http://10.0.0.5", False, id="plain-http-private"),
        pytest.param("ftp://127.0.0.1", False, id="other-scheme"),
    ],
)
def test_plain_http_only_to_loopback(url: str, allowed: bool) -> None:
    if allowed:
        check_url_allowed(url=url, context=CONTEXT)
    else:
        with pytest.raises(InsecureURLError, match="https"):
            check_url_allowed(url=url, context=CONTEXT)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            b'[{"message":"No such column \'Foo\' on entity \'Contact\'","errorCode":"INVALID_FIELD"}]',
            ("No such column 'Foo' on entity 'Contact'", "INVALID_FIELD"),
            id="salesforce",
        ),
        pytest.param(
            b'{"status":"error","message":"Invalid input JSON","correlationId":"x","category":"VALIDATION_ERROR"}',
            ("Invalid input JSON", "VALIDATION_ERROR"),
            id="hubspot",
        ),
        pytest.param(
            b'{"error":"invalid_client","error_description":"invalid client credentials"}',
            ("invalid client credentials", "invalid_client"),
            id="oauth",
        ),
        pytest.param(b"<html>Bad gateway</html>", ("<html>Bad gateway</html>", None), id="not-json"),
    ],
)
def test_error_bodies_are_understood(body: bytes, expected: tuple[str, str | None]) -> None:
    response = httpx.Response(400, content=body, request=httpx.Request("GET", "https://x/y"))
    assert describe_error_body(response=response) == expected


def test_secrets_do_not_print() -> None:
    connection = ConnectionSettings(
        base_url="https://login.example.com/",
        client_id="cid",
        client_secret="s3cr3t-value",
        access_token="tok-123456",
    )
    for text in (
        repr(connection),
        str(connection),
        repr(connection.client_secret),
        f"{connection.access_token}",
    ):
        assert "s3cr3t-value" not in text and "tok-123456" not in text
    assert connection.base_url == "https://login.example.com"
    assert connection.client_secret == Secret("s3cr3t-value")
    assert redact("token tok-123456 and s3cr3t-value", connection.secret_values()) == "token *** and ***"


def test_oauth_token_is_cached_and_refreshed_before_expiry() -> None:
    now = [1000.0]
    answers = iter([{"expires_in": 100}, {}, {}])
    sent: list[httpx.Request] = []

    def send(build: Callable[[], httpx.Request]) -> httpx.Response:
        request = build()
        sent.append(request)
        body = {
            "access_token": f"tok-{len(sent)}",
            "instance_url": "https://na1.example.com",
            **next(answers),
        }
        return httpx.Response(200, json=body, request=request)

    auth = OAuth2ClientCredentials(
        spec=SALESFORCE.auth,  # type: ignore[arg-type]
        base_url="https://login.example.com",
        client_id="cid",
        client_secret=Secret("s3cr3t-value"),
        context=CONTEXT,
        clock=lambda: now[0],
    )
    first = auth.token(send=send)
    assert first.value.reveal() == "tok-1" and first.api_base_url == "https://na1.example.com"
    assert sent[0].url == "https://login.example.com/services/oauth2/token"
    assert (
        b"grant_type=client_credentials" in sent[0].content
        and b"client_secret=s3cr3t-value" in sent[0].content
    )
    now[0] += 40
    assert auth.token(send=send) is first  # cached
    now[0] += 15  # expires_in 100, refreshed at half-life for short lifetimes
    second = auth.token(send=send)
    assert second.value.reveal() == "tok-2"
    auth.invalidate(token=first)  # a stale 401 must not throw away the newer token
    assert auth.token(send=send) is second
    auth.invalidate(token=second)
    assert auth.token(send=send).value.reveal() == "tok-3"
    assert "s3cr3t-value" not in repr(auth) and "tok-" not in repr(second)


def test_session_login_sends_the_declared_headers_on_the_login_and_every_request() -> None:
    spec = SessionAuth.model_validate(
        {
            "kind": "session",
            "login_path": "/ServiceModel/AuthService.svc/Login",
            "body": {"UserName": "{username}", "UserPassword": "{password}"},
            "username_variable": "U",
            "password_variable": "P",
            "success": {"path": "Code", "equals": 0},
            "csrf": {"header": "BPMCSRF", "cookie": "BPMCSRF"},
            "headers": {"ForceUseSession": "true"},
        }
    )
    sent: list[httpx.Request] = []

    def send(build: Callable[[], httpx.Request]) -> httpx.Response:
        request = build()
        sent.append(request)
        cookies = [("set-cookie", ".ASPXAUTH=abc123; path=/"), ("set-cookie", "BPMCSRF=csrf-9; path=/")]
        return httpx.Response(200, json={"Code": 0}, headers=cookies, request=request)

    clear_token_cache()
    login = SessionLogin(
        spec=spec,
        connection=ConnectionSettings(
            base_url="https://acme.creatio.com", username="u", password="pw-secret"
        ),
        context=CONTEXT,
    )
    token = login.token(send=send)
    assert sent[0].headers["ForceUseSession"] == "true"
    headers = {name: value.reveal() for name, value in token.headers.items()}
    assert headers["ForceUseSession"] == "true" and headers["BPMCSRF"] == "csrf-9"
    assert ".ASPXAUTH=abc123" in headers["Cookie"]
    clear_token_cache()


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
    assert _field_names(body, spec, "accounts") == expected


def test_accounts_share_one_bucket() -> None:
    limit = HUBSPOT.rate_limit
    a = shared_bucket(base_url="https://api.hubapi.com/", fingerprint="f1", rate_limit=limit)
    assert shared_bucket(base_url="https://API.hubapi.com", fingerprint="f1", rate_limit=limit) is a
    assert shared_bucket(base_url="https://api.hubapi.com", fingerprint="f2", rate_limit=limit) is not a


@pytest.mark.parametrize(
    ("fmt", "value", "round_up", "expected"),
    [
        pytest.param(
            "soql_datetime", datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC), False, "2026-11-25T10:00:00Z"
        ),
        pytest.param(
            "soql_datetime", datetime(2026, 11, 25, 10, 0, 0, 500, tzinfo=UTC), True, "2026-11-25T10:00:01Z"
        ),
        pytest.param(
            "soql_datetime", datetime(2026, 11, 25, 11, 0, 0), False, "2026-11-25T11:00:00Z", id="naive=utc"
        ),
        pytest.param(
            "iso8601", datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC), False, "2026-11-25T10:00:00.123Z"
        ),
        pytest.param(
            "iso8601", datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC), True, "2026-11-25T10:00:00.124Z"
        ),
        pytest.param("epoch_ms", datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC), False, "1000"),
        pytest.param(
            "soql_datetime",
            datetime(2026, 11, 25, 11, 0, 0, tzinfo=UTC).astimezone(UTC.__class__(timedelta(hours=1))),
            False,
            "2026-11-25T11:00:00Z",
            id="offset-converted",
        ),
    ],
)
def test_cursor_literals(fmt: str, value: datetime, round_up: bool, expected: str) -> None:
    assert _format_cursor(value, fmt, round_up=round_up) == expected


@pytest.mark.parametrize(
    ("server_filter", "since", "until", "extra", "expected"),
    [
        pytest.param(
            {"lower": "d ge @{value}@", "upper": "d lt @{value}@", "join": " and ", "where": "{conditions}"},
            datetime(2026, 11, 25, tzinfo=UTC),
            datetime(2026, 11, 26, tzinfo=UTC),
            None,
            "d ge @2026-11-25T00:00:00Z@ and d lt @2026-11-26T00:00:00Z@",
            id="both-bounds",
        ),
        pytest.param(
            {"lower": "d ge @{value}@", "join": " and ", "where": "{conditions}"},
            datetime(2026, 11, 25, tzinfo=UTC),
            datetime(2026, 11, 26, tzinfo=UTC),
            None,
            "d ge @2026-11-25T00:00:00Z@",
            id="no-upper-template-end-left-to-the-client",
        ),
        pytest.param(
            {"lower": "d ge @{value}@", "join": " and ", "where": "{conditions}"},
            None,
            datetime(2026, 11, 26, tzinfo=UTC),
            "flag eq 1",
            "flag eq 1",
            id="no-upper-template-deleted-pass-filter-alone",
        ),
        pytest.param(
            {"lower": "d >= {value}", "where": " WHERE {conditions}"},
            None,
            datetime(2026, 11, 26, tzinfo=UTC),
            None,
            "",
            id="no-upper-template-nothing-to-filter-no-dangling-where",
        ),
    ],
)
def test_server_window_filter(
    server_filter: dict[str, str],
    since: datetime | None,
    until: datetime | None,
    extra: str | None,
    expected: str,
) -> None:
    incremental = IncrementalSpec.model_validate(
        {"cursor": "d", "format": "sdata", "server_filter": server_filter}
    )
    assert _render_where(incremental, since, until, extra) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("2026-11-25T10:00:00.000+0000", datetime(2026, 11, 25, 10, tzinfo=UTC), id="salesforce"),
        pytest.param(
            "2026-11-25T10:00:00.250Z", datetime(2026, 11, 25, 10, 0, 0, 250000, tzinfo=UTC), id="hubspot"
        ),
        pytest.param("1764064800000", datetime(2025, 11, 25, 10, tzinfo=UTC), id="epoch-ms"),
        pytest.param(None, None, id="null"),
        pytest.param("yesterday", None, id="garbage"),
    ],
)
def test_parse_cursor(raw: str | None, expected: datetime | None) -> None:
    assert parse_cursor(value=raw, fmt="iso8601") == expected


def test_values_render_as_received() -> None:
    import json

    from crm_pipelines.connectors.session import decode_json

    record = decode_json(b'{"a": 1.50, "b": 7, "c": true, "d": false, "e": null, "f": "x", "g": {"k": [1]}}')
    assert [render_value(record[k]) for k in "abcdefg"] == [
        "1.50",
        "7",
        "true",
        "false",
        None,
        "x",
        '{"k":[1]}',
    ]
    assert json.dumps(record["a"]) == '"1.50"'  # kept as text, never rounded through float


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
    assert _field_names(body, spec, "Accounts") == expected


# --- end to end against the simulators -------------------------------------------------------------

AS_OF = date(2026, 11, 25)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> SandboxLayout:
    # ~530 Salesforce contacts: three pages at the smallest batch size Salesforce accepts (200).
    return generate_sandbox(tmp_path_factory.mktemp("sandbox"), contacts=1000, seed=11, as_of=AS_OF)


@pytest.fixture(autouse=True)
def _fresh_tokens() -> Iterator[None]:
    # Token and bucket caches are process-wide by design; tests must not see each other's.
    clear_token_cache()
    yield
    clear_token_cache()


@pytest.fixture(scope="module")
def salesforce_sim(sandbox: SandboxLayout) -> Iterator[SalesforceSimulator]:
    sim = SalesforceSimulator(sandbox.salesforce_store, client_id=SF_CLIENT_ID, client_secret=SF_SECRET)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture(scope="module")
def hubspot_sim(sandbox: SandboxLayout) -> Iterator[HubSpotSimulator]:
    sim = HubSpotSimulator(sandbox.hubspot_store, access_token=HS_TOKEN)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture(autouse=True)
def _reset_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    for name in ("salesforce_sim", "hubspot_sim"):
        if name in request.fixturenames:
            sim = request.getfixturevalue(name)
            sim.faults.clear()
            sim.rate_limit = None


SF_CLIENT_ID = "3MVG9test.client"
SF_SECRET = "sf-test-secret-4e1f9c"
HS_TOKEN = "pat-eu1-test-token-8d2a71"
SALESFORCE = load_system(name="salesforce")
HUBSPOT = load_system(name="hubspot")


def _sf(sim: SalesforceSimulator, secret: str = SF_SECRET) -> ConnectionSettings:
    return ConnectionSettings(base_url=sim.base_url, client_id=SF_CLIENT_ID, client_secret=secret)


def _hs(sim: HubSpotSimulator, token: str = HS_TOKEN) -> ConnectionSettings:
    return ConnectionSettings(base_url=sim.base_url, access_token=token)


def _table(batches: Iterable[pa.RecordBatch], system: SystemSpec, object_name: str) -> pa.Table:
    return pa.Table.from_batches(list(batches), schema=output_schema(system=system, object_name=object_name))


def _with_fields(system: SystemSpec, object_name: str, fields: list[dict[str, str]]) -> SystemSpec:
    """The system with one object's field list replaced (as a user would edit the YAML)."""
    data = system.model_dump(mode="json")
    data["objects"][object_name]["fields"] = fields
    return parse_system(data=data, source="test")


@pytest.mark.parametrize("object_name", ["Account", "Contact", "Opportunity"])
def test_salesforce_full_extract_equals_store(
    salesforce_sim: SalesforceSimulator, sandbox: SandboxLayout, object_name: str
) -> None:
    pages: list[PageInfo] = []
    drift = SchemaDrift("salesforce", object_name)
    table = _table(
        extract_object(
            system=SALESFORCE,
            object_name=object_name,
            connection=_sf(salesforce_sim),
            since=None,
            until=None,
            page_size=200,
            on_page=pages.append,
            drift=drift,
        ),
        SALESFORCE,
        object_name,
    )
    ids = table.column("Id").to_pylist()
    assert len(ids) == len(set(ids)) == count_records(sandbox.salesforce_store, object_name)
    assert table.column_names == [f.name for f in SALESFORCE.get_object(object_name).fields] + [
        DELETED,
        EXTRACTED_AT,
    ]
    assert not drift.has_drift, drift.describe()
    if object_name == "Contact":
        assert len(pages) == 3  # 532 rows at batchSize=200: gaps or repeats across pages would show
    # Ordered by cursor then primary key (server-side ORDER BY).
    keys = list(zip(table.column("SystemModstamp").to_pylist(), ids, strict=True))
    assert keys == sorted(keys)
    # Deleted rows come through queryAll, flagged.
    deleted = table.filter(pc.equal(table.column("IsDeleted"), "true")).num_rows
    live = count_records(sandbox.salesforce_store, object_name, include_deleted=False)
    assert deleted == len(ids) - live


def test_salesforce_values_are_text_as_sent(
    salesforce_sim: SalesforceSimulator, sandbox: SandboxLayout
) -> None:
    table = _table(
        extract_object(
            system=SALESFORCE, object_name="Account", connection=_sf(salesforce_sim), since=None, until=None
        ),
        SALESFORCE,
        "Account",
    )
    assert table.schema.field(EXTRACTED_AT).type == pa.timestamp("us", tz="UTC")
    assert all(pa.types.is_string(table.schema.field(name).type) for name in table.column_names[:-2])
    stored = {str(r["Id"]): r for r in fetch_records(sandbox.salesforce_store, "Account")}
    for row in table.to_pylist():
        source = stored[row["Id"]]
        assert row["IsDeleted"] == ("true" if source["IsDeleted"] else "false")
        assert row["SystemModstamp"] == source["SystemModstamp"]
        if source["AnnualRevenue"] is None:
            assert row["AnnualRevenue"] is None
        else:  # a JSON number, kept as its text
            assert float(row["AnnualRevenue"]) == source["AnnualRevenue"]


def test_salesforce_live_only_uses_query(salesforce_sim: SalesforceSimulator, sandbox: SandboxLayout) -> None:
    table = _table(
        extract_object(
            system=SALESFORCE,
            object_name="Contact",
            connection=_sf(salesforce_sim),
            since=None,
            until=None,
            include_deleted=False,
        ),
        SALESFORCE,
        "Contact",
    )
    assert table.num_rows == count_records(sandbox.salesforce_store, "Contact", include_deleted=False)
    assert set(table.column("IsDeleted").to_pylist()) == {"false"}


def _window(stamps: list[datetime], start: int, width: int) -> tuple[datetime, datetime]:
    ordered = sorted(set(stamps))
    return ordered[start], ordered[start + width]


def test_salesforce_incremental_window_includes_since(
    salesforce_sim: SalesforceSimulator, sandbox: SandboxLayout
) -> None:
    rows = fetch_records(sandbox.salesforce_store, "Contact")
    stamps = [datetime.strptime(str(r["SystemModstamp"]), "%Y-%m-%dT%H:%M:%S.%f%z") for r in rows]
    since, until = _window(stamps, 100, 60)
    expected = {str(r["Id"]) for r, ts in zip(rows, stamps, strict=True) if since <= ts < until}
    at_since = {str(r["Id"]) for r, ts in zip(rows, stamps, strict=True) if ts == since}
    table = _table(
        extract_object(
            system=SALESFORCE, object_name="Contact", connection=_sf(salesforce_sim), since=since, until=until
        ),
        SALESFORCE,
        "Contact",
    )
    got = table.column("Id").to_pylist()
    assert set(got) == expected and len(got) == len(expected)
    assert at_since <= set(got)  # the inclusive lower bound


def test_hubspot_full_extract_equals_store(hubspot_sim: HubSpotSimulator, sandbox: SandboxLayout) -> None:
    for object_name in ("companies", "contacts", "deals"):
        drift = SchemaDrift("hubspot", object_name)
        pages: list[PageInfo] = []
        table = _table(
            extract_object(
                system=HUBSPOT,
                object_name=object_name,
                connection=_hs(hubspot_sim),
                since=None,
                until=None,
                on_page=pages.append,
                drift=drift,
            ),
            HUBSPOT,
            object_name,
        )
        ids = table.column("id").to_pylist()
        assert len(ids) == len(set(ids)) == count_records(sandbox.hubspot_store, object_name), object_name
        archived = table.filter(pc.equal(table.column("archived"), "true")).num_rows
        assert archived == len(ids) - count_records(sandbox.hubspot_store, object_name, include_deleted=False)
        assert any(p.deleted_pass for p in pages) and any(not p.deleted_pass for p in pages)
        assert not drift.undeclared, drift.describe()
    # Deals carry their company from associations=companies.
    stored = {str(r["id"]): r["company_id"] for r in fetch_records(sandbox.hubspot_store, "deals")}
    for row in table.to_pylist():
        company = stored[row["id"]]
        assert row["company_id"] == (None if company is None else str(company))


def test_pages_can_be_grouped_into_batches(hubspot_sim: HubSpotSimulator, sandbox: SandboxLayout) -> None:
    pages: list[PageInfo] = []
    batches = list(
        extract_object(
            system=HUBSPOT,
            object_name="companies",
            connection=_hs(hubspot_sim),
            since=None,
            until=None,
            page_size=10,
            pages_per_batch=5,
            on_page=pages.append,
        )
    )
    assert len(pages) > 2 * len(batches)
    assert sum(b.num_rows for b in batches) == count_records(sandbox.hubspot_store, "companies")


def test_hubspot_incremental_window_is_applied_client_side(
    hubspot_sim: HubSpotSimulator, sandbox: SandboxLayout
) -> None:
    rows = [r for r in fetch_records(sandbox.hubspot_store, "contacts") if not r["archived"]]
    stamps = [datetime.fromisoformat(str(r["lastmodifieddate"])) for r in rows]
    since, until = _window(stamps, 200, 150)
    expected = {str(r["id"]) for r, ts in zip(rows, stamps, strict=True) if since <= ts < until}
    at_since = {str(r["id"]) for r, ts in zip(rows, stamps, strict=True) if ts == since}
    table = _table(
        extract_object(
            system=HUBSPOT,
            object_name="contacts",
            connection=_hs(hubspot_sim),
            since=since,
            until=until,
            include_deleted=False,
        ),
        HUBSPOT,
        "contacts",
    )
    got = table.column("id").to_pylist()
    assert set(got) == expected and len(got) == len(expected)
    assert at_since and at_since <= set(got)


def test_only_declared_fields_are_requested_and_drift_is_reported(hubspot_sim: HubSpotSimulator) -> None:
    narrow = _with_fields(
        HUBSPOT,
        "contacts",
        [
            {"name": "id", "path": "id"},
            {"name": "email", "path": "properties.email"},
            {"name": "lastmodifieddate", "path": "properties.lastmodifieddate"},
            {"name": "shoe_size", "path": "properties.shoe_size"},
        ],
    )
    drift = SchemaDrift("hubspot", "contacts")
    table = _table(
        extract_object(
            system=narrow,
            object_name="contacts",
            connection=_hs(hubspot_sim),
            since=None,
            until=None,
            drift=drift,
            include_deleted=False,
        ),
        narrow,
        "contacts",
    )
    assert table.column_names == ["id", "email", "lastmodifieddate", "shoe_size", DELETED, EXTRACTED_AT]
    # HubSpot always adds createdate; firstname etc. were not asked for, so they are not there.
    assert drift.undeclared == {"properties.createdate", "archived"}
    assert drift.missing == {"shoe_size"}
    assert "shoe_size" in drift.describe()


def test_token_expiry_mid_run_recovers(salesforce_sim: SalesforceSimulator, sandbox: SandboxLayout) -> None:
    expired: list[int] = []

    def expire_after_first_page(info: PageInfo) -> None:
        if info.page_number == 1:
            salesforce_sim.expire_tokens()  # the session times out between two pages
            expired.append(info.page_number)

    before = len(salesforce_sim.request_log)
    table = _table(
        extract_object(
            system=SALESFORCE,
            object_name="Contact",
            connection=_sf(salesforce_sim),
            since=None,
            until=None,
            page_size=200,
            on_page=expire_after_first_page,
        ),
        SALESFORCE,
        "Contact",
    )
    log = list(salesforce_sim.request_log)[before:]
    assert expired == [1]
    assert table.num_rows == count_records(sandbox.salesforce_store, "Contact")
    assert [r.status for r in log if r.status == 401] == [401]
    assert sum(1 for r in log if r.path == "/services/oauth2/token") == 2


def test_token_is_cached_between_extracts(salesforce_sim: SalesforceSimulator) -> None:
    before = len(salesforce_sim.request_log)
    for _ in range(2):
        list(
            extract_object(
                system=SALESFORCE,
                object_name="Account",
                connection=_sf(salesforce_sim),
                since=None,
                until=None,
            )
        )
    log = list(salesforce_sim.request_log)[before:]
    assert sum(1 for r in log if r.path == "/services/oauth2/token") == 1


def test_rate_limited_hubspot_still_completes(hubspot_sim: HubSpotSimulator, sandbox: SandboxLayout) -> None:
    hubspot_sim.rate_limit = RateLimit(max_requests=3, interval_seconds=1.0)
    hubspot_sim.faults.fail_next(429, 503)
    before = len(hubspot_sim.request_log)
    table = _table(
        extract_object(
            system=HUBSPOT, object_name="contacts", connection=_hs(hubspot_sim), since=None, until=None
        ),
        HUBSPOT,
        "contacts",
    )
    statuses = [r.status for r in list(hubspot_sim.request_log)[before:]]
    assert 429 in statuses and 503 in statuses
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == count_records(sandbox.hubspot_store, "contacts")


def test_transient_salesforce_errors_are_retried(
    salesforce_sim: SalesforceSimulator, sandbox: SandboxLayout
) -> None:
    salesforce_sim.faults.fail_next(503, 429, 502)  # token request included: it retries too
    table = _table(
        extract_object(
            system=SALESFORCE,
            object_name="Opportunity",
            connection=_sf(salesforce_sim),
            since=None,
            until=None,
        ),
        SALESFORCE,
        "Opportunity",
    )
    assert table.num_rows == count_records(sandbox.salesforce_store, "Opportunity")


def test_bad_request_names_system_object_and_fix(salesforce_sim: SalesforceSimulator) -> None:
    broken = _with_fields(
        SALESFORCE,
        "Contact",
        [{"name": "Id"}, {"name": "Fax__c"}, {"name": "SystemModstamp"}, {"name": "IsDeleted"}],
    )
    with pytest.raises(ApiRequestError) as info:
        list(
            extract_object(
                system=broken, object_name="Contact", connection=_sf(salesforce_sim), since=None, until=None
            )
        )
    message = str(info.value)
    assert info.value.status == 400 and info.value.code == "INVALID_FIELD"
    assert message.startswith(
        "Salesforce Contact: GET /services/data/v62.0/queryAll failed: HTTP 400 INVALID_FIELD"
    )
    assert "Fax__c" in message
    assert "Fix: check the declared fields" in message and "systems/salesforce.yaml" in message


def test_wrong_secret_fails_clearly_without_leaking(salesforce_sim: SalesforceSimulator) -> None:
    wrong = "wrong-secret-5b7c2d9e"
    connection = _sf(salesforce_sim, secret=wrong)
    with pytest.raises(AuthenticationError) as info:
        list(
            extract_object(
                system=SALESFORCE, object_name="Account", connection=connection, since=None, until=None
            )
        )
    text = f"{info.value} {info.value!r} {connection!r}"
    assert "invalid_client" in text and "SALESFORCE_CLIENT_SECRET" in text
    assert wrong not in text and SF_SECRET not in text


def test_wrong_hubspot_token_fails_clearly_without_leaking(hubspot_sim: HubSpotSimulator) -> None:
    wrong = "pat-eu1-wrong-0f3c9a"
    with pytest.raises(AuthenticationError) as info:
        list(
            extract_object(
                system=HUBSPOT,
                object_name="deals",
                connection=_hs(hubspot_sim, wrong),
                since=None,
                until=None,
            )
        )
    assert "HTTP 401 INVALID_AUTHENTICATION" in str(info.value) and "HUBSPOT_ACCESS_TOKEN" in str(info.value)
    assert wrong not in str(info.value) and wrong not in repr(info.value)


def test_check_connection(salesforce_sim: SalesforceSimulator, hubspot_sim: HubSpotSimulator) -> None:
    ok = check_connection(system=SALESFORCE, connection=_sf(salesforce_sim))
    assert ok.ok and ok.fix == "" and salesforce_sim.base_url in ok.detail
    assert check_connection(system=HUBSPOT, connection=_hs(hubspot_sim)).ok

    refused = check_connection(system=SALESFORCE, connection=_sf(salesforce_sim, secret="nope-nope-nope"))
    assert refused.reachable and not refused.authenticated and "SALESFORCE_CLIENT_SECRET" in refused.fix
    assert "nope-nope-nope" not in refused.detail + refused.fix

    bad_token = check_connection(system=HUBSPOT, connection=_hs(hubspot_sim, "pat-bad-token"))
    assert bad_token.reachable and not bad_token.authenticated and "HUBSPOT_ACCESS_TOKEN" in bad_token.fix

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = check_connection(
        system=HUBSPOT, connection=ConnectionSettings(base_url=f"http://127.0.0.1:{port}", access_token="x")
    )
    assert not down.reachable and "HUBSPOT_BASE_URL" in down.fix

    insecure = check_connection(
        system=HUBSPOT, connection=ConnectionSettings(base_url="http://api.hubapi.com", access_token="x")
    )
    assert not insecure.reachable and "https" in insecure.fix

    missing = check_connection(
        system=SALESFORCE, connection=ConnectionSettings(base_url=salesforce_sim.base_url)
    )
    assert not missing.authenticated and "SALESFORCE_CLIENT_ID" in missing.fix


def test_resource_extracts_checks_and_hides_secrets(
    hubspot_sim: HubSpotSimulator, sandbox: SandboxLayout
) -> None:
    resource = CrmApiResource(system="hubspot", base_url=hubspot_sim.base_url, access_token=HS_TOKEN)
    assert HS_TOKEN not in repr(resource) and HS_TOKEN not in str(resource)
    assert resource.check().ok
    batches = list(resource.extract(object_name="companies", since=None, until=None))
    assert sum(b.num_rows for b in batches) == count_records(sandbox.hubspot_store, "companies")
    assert batches[0].schema == resource.output_schema(object_name="companies")


def test_bad_arguments_fail_at_the_call_not_mid_iteration() -> None:
    connection = ConnectionSettings(base_url="https://login.example.com", client_id="c", client_secret="s")
    t0 = datetime(2026, 11, 25, tzinfo=UTC)
    with pytest.raises(KeyError, match="Lead"):
        extract_object(system=SALESFORCE, object_name="Lead", connection=connection, since=None, until=None)
    with pytest.raises(ValueError, match="empty window"):
        extract_object(system=SALESFORCE, object_name="Account", connection=connection, since=t0, until=t0)
    with pytest.raises(InsecureURLError):
        extract_object(
            system=HUBSPOT,
            object_name="deals",
            connection=ConnectionSettings(base_url="http://api.hubapi.com", access_token="t"),
            since=None,
            until=None,
        )
    with pytest.raises(AuthenticationError, match="HUBSPOT_ACCESS_TOKEN"):
        extract_object(
            system=HUBSPOT,
            object_name="deals",
            connection=ConnectionSettings(base_url="https://api.hubapi.com"),
            since=None,
            until=None,
        )


def test_too_long_retry_after_fails_fast_with_advice(salesforce_sim: SalesforceSimulator) -> None:
    salesforce_sim.rate_limit = RateLimit(max_requests=1, interval_seconds=900.0)
    started = time.monotonic()
    with pytest.raises(ApiRequestError) as info:
        list(
            extract_object(
                system=SALESFORCE,
                object_name="Contact",
                connection=_sf(salesforce_sim),
                since=None,
                until=None,
                page_size=200,
            )
        )
    assert time.monotonic() - started < 5
    assert info.value.status == 429 and "REQUEST_LIMIT_EXCEEDED" in str(info.value)
    assert "asked to wait" in info.value.fix


def test_offset_pages_in_flight_at_once_come_back_in_order_and_stop_at_the_total(tmp_path: Path) -> None:
    """Infor CRM (SData): startIndex/count paging with $totalResults, four pages in flight."""
    from crm_pipelines_sandbox.systems import build_store, sample_seeds, sandbox_crm

    crm = sandbox_crm("infor_crm")
    store = tmp_path / "infor.sqlite"
    build_store(store, crm, sample_seeds(accounts=30, as_of=date(2026, 11, 25)))
    started = crm.start(store)
    try:
        system = load_system(name="infor_crm")
        paging = system.paging_of("contacts")
        assert isinstance(paging, OffsetPaging) and paging.concurrency > 1
        sequential = system.model_copy(update={"paging": paging.model_copy(update={"concurrency": 1})})

        def read(spec: SystemSpec) -> list[str]:
            batches = extract_object(
                system=spec,
                object_name="contacts",
                connection=crm.connection(started),
                page_size=7,
                include_deleted=False,
            )
            return [str(k) for b in batches for k in b.column("id").to_pylist()]

        started.simulator.request_log.clear()
        in_flight = read(system)
        pages = [r for r in started.simulator.request_log if r.path.endswith("/contacts")]
        assert in_flight == read(sequential)  # same records, same order
        assert len(in_flight) == len(set(in_flight)) > 50
        assert len(pages) == -(-len(in_flight) // 7)  # no request past the reported total
    finally:
        started.simulator.stop()


@pytest.mark.parametrize(
    ("system_name", "object_name", "custom_field"),
    [
        # Sugar lists a module's fields as an object keyed by name (a Studio field ends in _c).
        pytest.param("sugarcrm", "Accounts", "tier_c", id="sugarcrm-metadata"),
        # B1 lists them in its EDMX; a contact person's fields are a complex type.
        pytest.param("sap_b1", "BusinessPartners", "U_Tier", id="sap_b1-edmx-entity"),
        pytest.param("sap_b1", "ContactEmployees", "U_Tier", id="sap_b1-edmx-complex-type"),
    ],
)
def test_a_field_added_in_the_crm_is_reported_though_not_requested(
    tmp_path: Path, system_name: str, object_name: str, custom_field: str
) -> None:
    crm = sandbox_crm(system_name)
    store = tmp_path / f"{system_name}.sqlite"
    build_store(store, crm, sample_seeds(accounts=4, as_of=AS_OF))
    add_field(store, object_name, custom_field, default="Gold")
    started = crm.start(store)
    try:
        system = load_system(name=system_name)
        drift = SchemaDrift(system_name, object_name)
        table = _table(
            extract_object(
                system=system, object_name=object_name, connection=crm.connection(started), drift=drift
            ),
            system,
            object_name,
        )
    finally:
        started.simulator.stop()
    assert table.num_rows > 0
    assert custom_field not in table.column_names  # only declared fields are read ...
    assert custom_field in drift.not_selected  # ... and the source's field list tells of the new one
    declared = {f.source_path.rsplit(".", 1)[-1] for f in system.get_object(object_name).fields}
    assert declared & drift.source_fields and not declared & drift.not_selected


# --- bounds, field lists and labels as declared (no HTTP) ------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "lower_bound", "expected"),
    [
        pytest.param("iso8601_offset", "inclusive", "2026-11-25T10:00:00+00:00", id="inclusive-as-is"),
        pytest.param(
            "iso8601_offset", "exclusive", "2026-11-25T09:59:59+00:00", id="after-one-second-earlier"
        ),
        pytest.param("iso8601", "exclusive", "2026-11-25T09:59:59.999Z", id="after-one-millisecond-earlier"),
        pytest.param("date", "exclusive", "2026-11-24", id="after-one-day-earlier"),
        pytest.param("epoch_ms", "exclusive", "1795600799999", id="epoch-ms"),
    ],
)
def test_an_exclusive_lower_bound_is_sent_one_literal_step_earlier(
    fmt: str, lower_bound: str, expected: str
) -> None:
    incremental = IncrementalSpec.model_validate(
        {"cursor": "Modified_Time", "format": fmt, "lower_bound": lower_bound}
    )
    # Sub-second parts are floored first: the literal then lies before every instant >= since.
    since = datetime(2026, 11, 25, 10, 0, 0, 400 if fmt == "iso8601" else 0, tzinfo=UTC)
    assert _lower_literal(since, incremental) == expected


def test_a_cursor_chain_goes_on_from_the_highest_cursor_read_and_never_in_place() -> None:
    stats = ExtractStats()
    moved: list[datetime] = []

    def restart_from(since: datetime) -> PageRequest:
        moved.append(since)
        return PageRequest(url="/items", headers={"If-Modified-Since": since.isoformat()})

    chain = _Chain(
        limit=4,
        cursor_path="Modified_Time",
        fmt="iso8601_offset",
        since=None,
        restart_from=restart_from,
        stats=stats,
        cursor_name="Modified_Time",
    )
    chain.observe(
        [{"Modified_Time": "2026-11-25T10:00:00+00:00"}, {"Modified_Time": "2026-11-25T10:00:05+00:00"}]
    )
    chain.observe([{"Modified_Time": "2026-11-25T10:00:07+00:00"}, {"Modified_Time": None}])
    chain.restart(CONTEXT)
    assert moved == [datetime(2026, 11, 25, 10, 0, 7, tzinfo=UTC)]
    assert chain.count == 0 and stats.chain_restarts == 1
    # A chain whose records all share the value it started from cannot move on: it says so.
    chain.observe([{"Modified_Time": "2026-11-25T10:00:07+00:00"}] * 4)
    with pytest.raises(ApiRequestError, match="4 records in a row share Modified_Time 2026-11-25T10:00:07"):
        chain.restart(CONTEXT)


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
    assert listed - _described_names(obj) == {"77de", "locality"}


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
    listing = _FieldList({str(e["field_code"]) for e in FIELD_LIST}, FIELD_LIST)
    resolved = _resolve_labels(_object(LABELLED, LABEL_FIELDS), listing, CONTEXT)
    # Only custom fields are candidates (label_where), and display names match regardless of case.
    assert resolved.field("external_id").source_path == "custom_fields.4f1c"
    assert resolved.field("website").source_path == "custom_fields.9a2b"
    assert not resolved.labelled()
    assert listing.names - _described_names(resolved) == {"external_id", "77de"}


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
    listing = _FieldList({str(e["field_code"]) for e in entries}, entries)
    with pytest.raises(ApiRequestError, match=expected):
        _resolve_labels(_object(LABELLED, LABEL_FIELDS), listing, CONTEXT)
