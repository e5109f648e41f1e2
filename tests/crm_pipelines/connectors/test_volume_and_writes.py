"""Bulk API 2.0 jobs, the HubSpot search cap, write-back and faults, against the real simulators."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from crm_pipelines.connectors.auth import ConnectionSettings, clear_token_cache
from crm_pipelines.connectors.engine import (
    EXTRACTED_AT,
    ExtractStats,
    UpsertResult,
    extract_object,
    upsert_records,
)
from crm_pipelines.connectors.limits import ApiRequestError, ErrorContext
from crm_pipelines.connectors.spec import ConfirmSpec, LookupSpec, SystemSpec, load_system
from crm_pipelines.connectors.writes.base import external_id
from crm_pipelines.connectors.writes.per_record import confirmed_match
from crm_pipelines_sandbox.data import SandboxLayout, generate_sandbox
from crm_pipelines_sandbox.simulators import (
    DROP_CONNECTION,
    SLOW_RESPONSE,
    Faults,
    HubSpotSimulator,
    SalesforceSimulator,
)
from crm_pipelines_sandbox.simulators.store import add_field, fetch_records
from crm_pipelines_sandbox.systems import build_store, sample_seeds, sandbox_crm

AS_OF = date(2026, 11, 25)
SF_CLIENT_ID = "3MVG9volume.client"
SF_SECRET = "sf-volume-secret-77"
HS_TOKEN = "pat-eu1-volume-token-19"
SALESFORCE = load_system(name="salesforce")
HUBSPOT = load_system(name="hubspot")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> SandboxLayout:
    return generate_sandbox(tmp_path_factory.mktemp("volume"), contacts=800, seed=5, as_of=AS_OF)


@pytest.fixture(autouse=True)
def _fresh_tokens() -> Iterator[None]:
    clear_token_cache()
    yield
    clear_token_cache()


@pytest.fixture
def salesforce_sim(sandbox: SandboxLayout) -> Iterator[SalesforceSimulator]:
    with SalesforceSimulator(
        sandbox.salesforce_store, client_id=SF_CLIENT_ID, client_secret=SF_SECRET
    ) as sim:
        yield sim


@pytest.fixture
def hubspot_sim(sandbox: SandboxLayout) -> Iterator[HubSpotSimulator]:
    with HubSpotSimulator(sandbox.hubspot_store, access_token=HS_TOKEN) as sim:
        yield sim


def _sf(sim: SalesforceSimulator, timeout: float | None = None) -> ConnectionSettings:
    return ConnectionSettings(
        base_url=sim.base_url, client_id=SF_CLIENT_ID, client_secret=SF_SECRET, timeout_seconds=timeout
    )


def _hs(sim: HubSpotSimulator, timeout: float | None = None) -> ConnectionSettings:
    return ConnectionSettings(base_url=sim.base_url, access_token=HS_TOKEN, timeout_seconds=timeout)


def _rows(batches: Iterable[pa.RecordBatch], key: str) -> list[tuple[object, ...]]:
    """Rows without the extraction time, sorted by key: what two extracts must agree on."""
    table = pa.Table.from_batches(list(batches))
    table = table.drop_columns([EXTRACTED_AT]).sort_by(key)
    return [tuple(row.values()) for row in table.to_pylist()]


def _with_object(system: SystemSpec, name: str, **changes: object) -> SystemSpec:
    obj = system.objects[name]
    return system.model_copy(update={"objects": {**system.objects, name: obj.model_copy(update=changes)}})


def _always_bulk(page: int = 250, parallel: int = 0) -> SystemSpec:
    bulk = SALESFORCE.objects["Contact"].bulk
    assert bulk is not None
    fast = bulk.model_copy(
        update={
            "threshold_records": 1,
            "max_records_per_page": page,
            "poll_initial_seconds": 0.01,
            "parallel_results": parallel,
        }
    )
    return _with_object(SALESFORCE, "Contact", bulk=fast)


# --- Salesforce Bulk API 2.0 -----------------------------------------------------------------------


def test_bulk_job_returns_what_rest_returns(salesforce_sim: SalesforceSimulator) -> None:
    salesforce_sim.bulk_polls_to_complete = 2  # InProgress twice before JobComplete
    stats = ExtractStats()
    bulk = _rows(
        extract_object(
            system=_always_bulk(), object_name="Contact", connection=_sf(salesforce_sim), stats=stats
        ),
        "Id",
    )
    rest = _rows(
        extract_object(system=SALESFORCE, object_name="Contact", connection=_sf(salesforce_sim)), "Id"
    )
    assert stats.method == "bulk"
    assert len(stats.bulk_jobs) == 1
    assert bulk == rest
    assert len(bulk) > 300
    # queryAll as a job: deleted contacts are there, flagged.
    assert stats.deleted_rows > 0
    # Result pages were followed with Sforce-Locator: more than one results request.
    results = [r for r in salesforce_sim.request_log if r.path.endswith("/results")]
    assert len(results) == -(-len(bulk) // 250)


def test_bulk_result_pages_are_fetched_in_parallel(salesforce_sim: SalesforceSimulator) -> None:
    salesforce_sim.bulk_result_page_records = 60
    stats = ExtractStats()
    parallel = _rows(
        extract_object(
            system=_always_bulk(parallel=4),
            object_name="Contact",
            connection=_sf(salesforce_sim),
            stats=stats,
        ),
        "Id",
    )
    rest = _rows(
        extract_object(system=SALESFORCE, object_name="Contact", connection=_sf(salesforce_sim)), "Id"
    )
    assert stats.method == "bulk"
    assert parallel == rest
    # The result URLs came from 'Get Parallel Results', five per answer, each with its own locator.
    listings = [r for r in salesforce_sim.request_log if r.path.endswith("/resultPages")]
    results = [r for r in salesforce_sim.request_log if r.path.endswith("/results")]
    assert len(results) == -(-len(parallel) // 60)
    assert len(listings) == -(-len(results) // 5)


def test_small_windows_stay_on_rest(salesforce_sim: SalesforceSimulator) -> None:
    stats = ExtractStats()
    list(
        extract_object(system=SALESFORCE, object_name="Contact", connection=_sf(salesforce_sim), stats=stats)
    )
    assert stats.method == "rest"
    assert not stats.bulk_jobs


def test_failed_bulk_job_fails_the_run_with_its_message(salesforce_sim: SalesforceSimulator) -> None:
    salesforce_sim.bulk_failures.append("InternalServerError: the query timed out in the database")
    with pytest.raises(
        ApiRequestError, match="ended Failed: InternalServerError: the query timed out"
    ) as info:
        list(extract_object(system=_always_bulk(), object_name="Contact", connection=_sf(salesforce_sim)))
    assert "Salesforce Contact" in str(info.value)


def test_bulk_api_answers_like_the_docs(salesforce_sim: SalesforceSimulator) -> None:
    token = httpx.post(
        f"{salesforce_sim.base_url}/services/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": SF_CLIENT_ID, "client_secret": SF_SECRET},
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    jobs = f"{salesforce_sim.base_url}/services/data/v62.0/jobs/query"
    refused = httpx.post(
        jobs, headers=headers, json={"operation": "query", "query": "SELECT COUNT() FROM Contact"}
    )
    assert refused.status_code == 400  # aggregates are not allowed in Bulk 2.0 queries
    job = httpx.post(
        jobs, headers=headers, json={"operation": "query", "query": "SELECT Id, LastName FROM Contact"}
    ).json()
    assert job["state"] == "UploadComplete"
    assert job["id"].startswith("750")
    states = [httpx.get(f"{jobs}/{job['id']}", headers=headers).json()["state"] for _ in range(2)]
    assert states == ["InProgress", "JobComplete"]
    page = httpx.get(f"{jobs}/{job['id']}/results", headers=headers, params={"maxRecords": 10})
    assert page.headers["content-type"] == "text/csv"
    assert page.text.splitlines()[0] == "Id,LastName"
    assert len(page.text.splitlines()) == 11
    assert page.headers["Sforce-NumberOfRecords"] == "10"
    assert page.headers["Sforce-Locator"] != "null"


# --- HubSpot search and its 10,000-result cap ------------------------------------------------------


def test_search_past_the_cap_is_a_400(hubspot_sim: HubSpotSimulator) -> None:
    url = f"{hubspot_sim.base_url}/crm/v3/objects/contacts/search"
    headers = {"Authorization": f"Bearer {HS_TOKEN}"}
    assert httpx.post(url, headers=headers, json={"limit": 200, "after": "10000"}).status_code == 400
    assert httpx.post(url, headers=headers, json={"limit": 201}).status_code == 400


def test_windows_over_the_search_cap_are_split_and_nothing_is_cut_off(hubspot_sim: HubSpotSimulator) -> None:
    hubspot_sim.search_max_results = 150  # the 10,000 cap, scaled down to the sandbox
    search = HUBSPOT.objects["contacts"].search
    assert search is not None
    capped = _with_object(
        HUBSPOT, "contacts", search=search.model_copy(update={"max_results": 150, "page_size": 50})
    )
    since, until = datetime(2020, 1, 1, tzinfo=UTC), datetime(2026, 11, 26, tzinfo=UTC)
    stats = ExtractStats()
    searched = _rows(
        extract_object(
            system=capped,
            object_name="contacts",
            connection=_hs(hubspot_sim),
            since=since,
            until=until,
            stats=stats,
            include_deleted=False,
        ),
        "id",
    )
    listed = _rows(
        extract_object(
            system=HUBSPOT, object_name="contacts", connection=_hs(hubspot_sim), include_deleted=False
        ),
        "id",
    )
    assert stats.method == "search"
    assert stats.search_windows > len(listed) // 150
    assert searched == listed
    # No request ever paged past the cap.
    assert all(r.status == 200 for r in hubspot_sim.request_log if r.path.endswith("/search"))


# --- write side ------------------------------------------------------------------------------------


def test_salesforce_upsert_reports_every_record(
    salesforce_sim: SalesforceSimulator, sandbox: SandboxLayout
) -> None:
    add_field(sandbox.salesforce_store, "Account", "ERP_Id__c")
    records: list[dict[str, object]] = [
        {"ERP_Id__c": f"C{i:04d}", "Name": f"Acme {i}", "BillingCountry": "DE"} for i in range(230)
    ]
    records[5] = {"ERP_Id__c": "C0005"}  # a create without the required Name
    records[7]["Shoe_Size__c"] = 44  # a field the org does not have
    salesforce_sim.record_faults["C0009"] = ["UNABLE_TO_LOCK_ROW"]  # transient: retried
    results = upsert_records(
        system=SALESFORCE,
        object_name="Account",
        connection=_sf(salesforce_sim),
        external_id_field="ERP_Id__c",
        records=records,
    )
    assert [r.external_id for r in results] == [str(r["ERP_Id__c"]) for r in records]
    rejected = {r.external_id: r for r in results if not r.ok}
    assert set(rejected) == {"C0005", "C0007"}
    assert rejected["C0005"].error_code == "REQUIRED_FIELD_MISSING"
    assert "Name" in (rejected["C0005"].reason or "")
    assert rejected["C0007"].error_code == "INVALID_FIELD"
    assert next(r for r in results if r.external_id == "C0009").attempts == 2
    assert sum(r.status == "created" for r in results) == 228
    patches = [r for r in salesforce_sim.request_log if r.method == "PATCH"]
    assert len(patches) == 3  # 200 + 30, then the one retried record
    # Written to the CRM, and a second upsert updates instead of creating.
    again = upsert_records(
        system=SALESFORCE,
        object_name="Account",
        connection=_sf(salesforce_sim),
        external_id_field="ERP_Id__c",
        records=[{"ERP_Id__c": "C0001", "Name": "Acme renamed"}],
    )
    assert again[0].status == "updated"
    assert again[0].record_id == results[1].record_id
    stored = [r for r in fetch_records(sandbox.salesforce_store, "Account") if r["ERP_Id__c"] == "C0001"]
    assert len(stored) == 1
    assert stored[0]["Name"] == "Acme renamed"


def test_hubspot_batch_upsert_reports_every_record(
    hubspot_sim: HubSpotSimulator, sandbox: SandboxLayout
) -> None:
    records: list[dict[str, object]] = [
        {"email": f"writer{i}@example.com", "firstname": f"W{i}", "lastname": "Back"} for i in range(130)
    ]
    records[3]["shoe_size"] = "44"  # no such property
    records[50] = {"email": "not-an-email", "lastname": "Broken"}
    results = upsert_records(
        system=HUBSPOT,
        object_name="contacts",
        connection=_hs(hubspot_sim),
        external_id_field="email",
        records=records,
    )
    assert len(results) == len(records)
    rejected = {r.external_id: r for r in results if not r.ok}
    assert set(rejected) == {"writer3@example.com", "not-an-email"}
    assert all(r.error_code == "VALIDATION_ERROR" and r.reason for r in rejected.values())
    assert sum(r.status == "created" for r in results) == 128
    assert len([r for r in hubspot_sim.request_log if r.path.endswith("/batch/upsert")]) == 2  # 100 + 30
    stored = {r["email"]: r for r in fetch_records(sandbox.hubspot_store, "contacts")}
    assert stored["writer7@example.com"]["firstname"] == "W7"


def test_per_record_updates_by_key_and_creates_on_404_without_lookups(tmp_path: Path) -> None:
    # SAP Business One has no upsert: PATCH BusinessPartners('<CardCode>'), POST when that is a 404.
    crm = sandbox_crm("sap_b1")
    system = load_system(name="sap_b1")
    store = tmp_path / "b1.sqlite"
    build_store(store, crm, sample_seeds(accounts=2, as_of=AS_OF))
    started = crm.start(store)
    try:
        sim, connection = started.simulator, crm.connection(started)
        # Keys go into an OData key predicate: a quote is doubled, a space and a non-ASCII letter
        # percent-encoded, and the partner lands under exactly that code.
        records: list[dict[str, object]] = [
            {"CardCode": code, "CardName": f"Partner {n}", "Country": "DE"}
            for n, code in enumerate(["C9100", "C9'101", "C9 102 Ü"])
        ]

        def upsert(batch: list[dict[str, object]]) -> list[UpsertResult]:
            return upsert_records(
                system=system,
                object_name="BusinessPartners",
                connection=connection,
                external_id_field="CardCode",
                records=batch,
            )

        created = upsert(records)
        assert [(r.status, r.record_id) for r in created] == [("created", r["CardCode"]) for r in records]
        writes = [(r.method, r.status) for r in sim.request_log if not r.path.endswith("/Login")]
        assert writes == [("PATCH", 404), ("POST", 201)] * 3  # no lookup: a new partner costs two requests
        sim.request_log.clear()
        updated = upsert([{**r, "City": "Bremen"} for r in records])
        assert [r.status for r in updated] == ["updated"] * 3
        assert [(r.method, r.status) for r in sim.request_log] == [("PATCH", 204)] * 3  # an existing one, one
        stored = {r["CardCode"]: r for r in fetch_records(store, "BusinessPartners")}
        assert all(stored[str(r["CardCode"])]["City"] == "Bremen" for r in records)
    finally:
        started.simulator.stop()


# --- faults ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("system_name", ["salesforce", "hubspot"])
def test_with_faults_on_a_fifth_of_requests_the_result_is_the_same(
    system_name: str, salesforce_sim: SalesforceSimulator, hubspot_sim: HubSpotSimulator
) -> None:
    sim: SalesforceSimulator | HubSpotSimulator
    if system_name == "salesforce":
        sim, system, object_name, key = salesforce_sim, _always_bulk(page=100), "Contact", "Id"
        connection = _sf(salesforce_sim, timeout=0.5)
    else:
        sim, system, object_name, key = hubspot_sim, HUBSPOT, "contacts", "id"
        connection = _hs(hubspot_sim, timeout=0.5)
    fast = system.model_copy(
        update={
            "retries": system.retries.model_copy(
                update={"max_attempts": 8, "backoff_initial_seconds": 0.01, "backoff_max_seconds": 0.05}
            )
        }
    )
    # Salesforce through a Bulk job; HubSpot through the search plus the archived list pass.
    since = datetime(2020, 1, 1, tzinfo=UTC) if system_name == "hubspot" else None

    def extract() -> list[tuple[object, ...]]:
        return _rows(
            extract_object(system=fast, object_name=object_name, connection=connection, since=since), key
        )

    clean = extract()
    # A fifth of the requests: 429 with Retry-After, 500, 503, a dropped connection, or an answer
    # slower than the 0.5 s client timeout.
    sim.faults = Faults(
        error_rate=0.2, statuses=(429, 500, 503, DROP_CONNECTION, SLOW_RESPONSE), slow_seconds=0.8, seed=7
    )
    sim.request_log.clear()
    faulty = extract()
    failed = [r for r in sim.request_log if r.status != 200]
    assert faulty == clean
    assert len(failed) >= 3  # the faults did happen


class _BatchRecorder:
    """Stands in for the engine's session: keeps the $batch body and answers with canned parts."""

    def __init__(self, parts: list[str]) -> None:
        self.parts = parts
        self.body = b""

    def token(self) -> object:
        return type("Token", (), {"api_base_url": "https://org.crm4.dynamics.com"})()

    def send(self, method: str, page: object, **kwargs: object) -> httpx.Response:
        self.body = kwargs["content"]  # type: ignore[assignment]
        boundary = "batchresponse_1"
        answer = "".join(
            f"--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n{part}\r\n"
            for part in self.parts
        )
        return httpx.Response(
            200,
            content=f"{answer}--{boundary}--\r\n".encode(),
            headers={"Content-Type": f"multipart/mixed; boundary={boundary}"},
        )


def test_odata_batch_parts_carry_the_declared_headers_and_parameters() -> None:
    from crm_pipelines.connectors.spec import ODataBatchUpsert
    from crm_pipelines.connectors.writes.base import Batch

    spec = ODataBatchUpsert.model_validate(
        {
            "style": "odata_batch",
            "path": "/api/data/v9.2/$batch",
            "item_path": "/api/data/v9.2/{object}({id_field}='{key}')",
            "item_headers": {"Prefer": "return=representation"},
            "item_params": {"$select": "accountid"},
            "id_path": "accountid",
        }
    )
    created = 'HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n\r\n{"accountid":"a-1"}'
    # No body to read the id from: the OData-EntityId header names the record.
    updated = (
        "HTTP/1.1 200 OK\r\nOData-EntityId: https://org.crm4.dynamics.com/api/data/v9.2/accounts(a-2)\r\n\r\n"
    )
    session = _BatchRecorder([created, updated])
    context = ErrorContext(system_name="dynamics", system_title="Dynamics", object_name="accounts")
    outcomes = spec.upsert_batch(
        session,  # type: ignore[arg-type]
        Batch(
            object_name="accounts",
            id_field="accountnumber",
            records=[{"accountnumber": "A-1", "name": "x"}, {"accountnumber": "A-2", "name": "y"}],
            keys=["A-1", "A-2"],
            context=context,
        ),
    )
    assert [o[:2] for o in outcomes] == [("created", "a-1"), ("updated", "a-2")]
    sent = session.body.decode()
    assert "PATCH /api/data/v9.2/accounts(accountnumber='A-1')?$select=accountid HTTP/1.1" in sent
    assert sent.count("Prefer: return=representation\r\n") == 2


# --- a per-record lookup that confirms the external id -----------------------------------------------


def test_a_lookup_takes_the_first_match_that_carries_theexternal_id() -> None:
    matches = [
        {"item": {"id": 7, "custom_fields": {"a1": "ERP-1", "b2": None}}},  # ERP-1 in another field
        {"item": {"id": 9, "custom_fields": {"a1": None, "b2": "ERP-1"}}},
    ]
    context = ErrorContext(system_name="pipedrive", system_title="Pipedrive", object_name="persons")
    plain = LookupSpec.model_validate({"path": "/search", "records_path": "items", "id_path": "item.id"})
    checked = plain.model_copy(update={"confirm": ConfirmSpec(value_path="item.{id_field}")})

    def found(lookup: LookupSpec, key: str) -> str | None:
        # Without confirm.path the matches themselves are checked: no request, no session needed.
        return confirmed_match(None, lookup, "persons", "custom_fields.b2", key, matches, context)  # type: ignore[arg-type]

    assert found(plain, "ERP-1") == "7"  # the first match, whatever it matched on
    assert found(checked, "ERP-1") == "9"
    assert found(checked, "ERP-2") is None  # nothing carries it: the record is created


def test_an_external_id_may_sit_in_a_nested_object() -> None:
    record = {"name": "Lena", "custom_fields": {"b2": "ERP-1"}}
    assert external_id(record, "custom_fields.b2") == "ERP-1"
    assert external_id({"AccountNumber": 42}, "AccountNumber") == "42"
