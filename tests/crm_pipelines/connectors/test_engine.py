"""The connector engine end to end against the simulators: extracts, windows, tokens, retries, doctor."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from crm_pipelines.connectors.auth import ConnectionSettings, clear_token_cache
from crm_pipelines.connectors.engine import (
    DELETED,
    EXTRACTED_AT,
    PageInfo,
    SchemaDrift,
    check_connection,
    extract_object,
    output_schema,
)
from crm_pipelines.connectors.limits import ApiRequestError, AuthenticationError, InsecureURLError
from crm_pipelines.connectors.spec import OffsetPaging, SystemSpec, load_system, parse_system
from crm_pipelines_sandbox.data import SandboxLayout, generate_sandbox
from crm_pipelines_sandbox.simulators.base import RateLimit
from crm_pipelines_sandbox.simulators.hubspot import HubSpotSimulator
from crm_pipelines_sandbox.simulators.records import add_field
from crm_pipelines_sandbox.simulators.salesforce import SalesforceSimulator
from crm_pipelines_sandbox.simulators.store import count_records, fetch_records
from crm_pipelines_sandbox.systems import build_store, sample_seeds, sandbox_crm
from resources.crm_api import CrmApiResource

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
    assert set(got) == expected
    assert len(got) == len(expected)
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
        assert any(p.deleted_pass for p in pages)
        assert any(not p.deleted_pass for p in pages)
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
    assert set(got) == expected
    assert len(got) == len(expected)
    assert at_since
    assert at_since <= set(got)


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
    assert 429 in statuses
    assert 503 in statuses
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
    assert info.value.status == 400
    assert info.value.code == "INVALID_FIELD"
    assert message.startswith(
        "Salesforce Contact: GET /services/data/v62.0/queryAll failed: HTTP 400 INVALID_FIELD"
    )
    assert "Fax__c" in message
    assert "Fix: check the declared fields" in message
    assert "systems/salesforce.yaml" in message


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
    assert "invalid_client" in text
    assert "SALESFORCE_CLIENT_SECRET" in text
    assert wrong not in text
    assert SF_SECRET not in text


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
    assert "HTTP 401 INVALID_AUTHENTICATION" in str(info.value)
    assert "HUBSPOT_ACCESS_TOKEN" in str(info.value)
    assert wrong not in str(info.value)
    assert wrong not in repr(info.value)


def test_check_connection(salesforce_sim: SalesforceSimulator, hubspot_sim: HubSpotSimulator) -> None:
    ok = check_connection(system=SALESFORCE, connection=_sf(salesforce_sim))
    assert ok.ok
    assert ok.fix == ""
    assert salesforce_sim.base_url in ok.detail
    assert check_connection(system=HUBSPOT, connection=_hs(hubspot_sim)).ok

    refused = check_connection(system=SALESFORCE, connection=_sf(salesforce_sim, secret="nope-nope-nope"))
    assert refused.reachable
    assert not refused.authenticated
    assert "SALESFORCE_CLIENT_SECRET" in refused.fix
    assert "nope-nope-nope" not in refused.detail + refused.fix

    bad_token = check_connection(system=HUBSPOT, connection=_hs(hubspot_sim, "pat-bad-token"))
    assert bad_token.reachable
    assert not bad_token.authenticated
    assert "HUBSPOT_ACCESS_TOKEN" in bad_token.fix

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = check_connection(
        system=HUBSPOT, connection=ConnectionSettings(base_url=f"http://127.0.0.1:{port}", access_token="x")
    )
    assert not down.reachable
    assert "HUBSPOT_BASE_URL" in down.fix

    insecure = check_connection(
        system=HUBSPOT, connection=ConnectionSettings(base_url="http://api.hubapi.com", access_token="x")
    )
    assert not insecure.reachable
    assert "https" in insecure.fix

    missing = check_connection(
        system=SALESFORCE, connection=ConnectionSettings(base_url=salesforce_sim.base_url)
    )
    assert not missing.authenticated
    assert "SALESFORCE_CLIENT_ID" in missing.fix


def test_resource_extracts_checks_and_hides_secrets(
    hubspot_sim: HubSpotSimulator, sandbox: SandboxLayout
) -> None:
    resource = CrmApiResource(system="hubspot", base_url=hubspot_sim.base_url, access_token=HS_TOKEN)
    assert HS_TOKEN not in repr(resource)
    assert HS_TOKEN not in str(resource)
    assert resource.check().ok
    batches = list(resource.extract(object_name="companies", since=None, until=None))
    assert sum(b.num_rows for b in batches) == count_records(sandbox.hubspot_store, "companies")
    assert batches[0].schema == resource.output_schema(object_name="companies")


def test_bad_arguments_fail_at_the_call_not_mid_iteration() -> None:
    connection = ConnectionSettings(base_url="https://login.example.com", client_id="c", client_secret="s")
    t0 = datetime(2026, 11, 25, tzinfo=UTC)
    with pytest.raises(KeyError, match="Campaign"):
        extract_object(
            system=SALESFORCE, object_name="Campaign", connection=connection, since=None, until=None
        )
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
    assert info.value.status == 429
    assert "REQUEST_LIMIT_EXCEEDED" in str(info.value)
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
        assert isinstance(paging, OffsetPaging)
        assert paging.concurrency > 1
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
    assert declared & drift.source_fields
    assert not declared & drift.not_selected
