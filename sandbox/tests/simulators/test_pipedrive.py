"""The Pipedrive API v2 simulator, driven over HTTP the way a client of Pipedrive's REST API drives it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from crm_pipelines_sandbox.simulators import RateLimit
from crm_pipelines_sandbox.simulators.pipedrive import (
    ORG_WEBSITE,
    PERSON_COUNTRY,
    PERSON_EXTERNAL_ID,
    SANDBOX,
    PipedriveSimulator,
)
from crm_pipelines_sandbox.simulators.records import (
    add_field,
    delete_records,
    fetch_records,
    touch_records,
)
from crm_pipelines_sandbox.systems import Started, build_store, sample_seeds

# Seeds spread over the 30 days before AS_OF: deleted deals are still within the 30-day window.
AS_OF = datetime.now(UTC).date() - timedelta(days=1)
ERROR_INFO = "Please check developers.pipedrive.com for more information about Pipedrive API."


def make_store(path: Path) -> Path:
    build_store(path, SANDBOX, sample_seeds(as_of=AS_OF))
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("pipedrive") / "pipedrive.sqlite")


@pytest.fixture(scope="module")
def started(store: Path) -> Iterator[Started]:
    running = SANDBOX.start(store)
    try:
        yield running
    finally:
        running.simulator.stop()


@pytest.fixture(scope="module")
def sim(started: Started) -> PipedriveSimulator:
    assert isinstance(started.simulator, PipedriveSimulator)
    return started.simulator


def connect(started: Started) -> httpx.Client:
    return httpx.Client(
        base_url=started.env["PIPEDRIVE_BASE_URL"],
        headers={"x-api-token": started.env["PIPEDRIVE_API_TOKEN"]},
        timeout=10,
    )


@pytest.fixture
def client(started: Started) -> Iterator[httpx.Client]:
    with connect(started) as http:
        yield http


def live_ids(store: Path, object_name: str) -> set[int]:
    return {int(r["id"]) for r in fetch_records(store, object_name)}


def read_all(client: httpx.Client, object_name: str, **params: str) -> tuple[list[dict[str, Any]], int]:
    """Every record by following additional_data.next_cursor; returns the records and the pages."""
    records: list[dict[str, Any]] = []
    query = dict(params)
    pages = 0
    while True:
        response = client.get(f"/api/v2/{object_name}", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["success"] is True
        pages += 1
        records.extend(body["data"])
        cursor = body["additional_data"]["next_cursor"]
        if cursor is None:
            return records, pages
        query = {**params, "cursor": cursor}


# --- auth ----------------------------------------------------------------------------------------


def test_api_token_in_header_or_query_and_401_otherwise(started: Started) -> None:
    base, token = started.env["PIPEDRIVE_BASE_URL"], started.env["PIPEDRIVE_API_TOKEN"]
    assert httpx.get(f"{base}/api/v2/persons", headers={"x-api-token": token}).status_code == 200
    assert httpx.get(f"{base}/api/v2/persons", params={"api_token": token}).status_code == 200
    for kwargs in ({}, {"headers": {"x-api-token": "0" * 40}}, {"params": {"api_token": "nope"}}):
        denied = httpx.get(f"{base}/api/v2/persons", **kwargs)  # type: ignore[arg-type]
        assert denied.status_code == 401
        assert denied.json() == {
            "success": False,
            "error": "unauthorized access",
            "errorCode": 401,
            "error_info": ERROR_INFO,
            "data": None,
            "additional_data": None,
        }


def test_api_tokens_do_not_expire(client: httpx.Client, sim: PipedriveSimulator) -> None:
    sim.expire_tokens()  # a no-op: static tokens
    assert client.get("/api/v2/persons").status_code == 200
    assert client.get("/api/v1/users/me").json()["data"]["company_domain"] == "sandbox"


# --- lists ---------------------------------------------------------------------------------------


def test_cursor_paging_returns_exactly_the_live_records_once(client: httpx.Client, store: Path) -> None:
    for object_name in ("organizations", "persons", "deals"):
        records, pages = read_all(client, object_name, limit="7")
        ids = [r["id"] for r in records]
        assert ids == sorted(live_ids(store, object_name))
        assert pages == -(-len(ids) // 7)
        assert all(r["is_deleted"] is False for r in records)


def test_sorting_by_update_time_both_ways(client: httpx.Client, store: Path) -> None:
    ascending, _ = read_all(client, "persons", limit="5", sort_by="update_time")
    stamps = [r["update_time"] for r in ascending]
    assert stamps == sorted(stamps)
    assert {r["id"] for r in ascending} == live_ids(store, "persons")
    descending, _ = read_all(client, "persons", limit="5", sort_by="add_time", sort_direction="desc")
    added = [r["add_time"] for r in descending]
    assert added == sorted(added, reverse=True)
    first = client.get("/api/v2/persons", params={"limit": "5", "sort_by": "update_time"}).json()
    cursor = first["additional_data"]["next_cursor"]
    # A cursor belongs to its sort: reusing it with another sort is refused.
    mixed = client.get("/api/v2/persons", params={"limit": "5", "sort_by": "id", "cursor": cursor})
    assert mixed.status_code == 400
    assert mixed.json()["success"] is False


def test_limit_defaults_to_100_and_is_capped_at_500(client: httpx.Client, store: Path) -> None:
    body = client.get("/api/v2/persons").json()
    assert len(body["data"]) == min(100, len(live_ids(store, "persons")))
    assert client.get("/api/v2/persons", params={"limit": "500"}).status_code == 200
    too_big = client.get("/api/v2/persons", params={"limit": "501"})
    assert too_big.status_code == 400
    assert too_big.json()["success"] is False
    assert "limit" in too_big.json()["error"]


def test_record_shape_and_custom_field_selection(client: httpx.Client, store: Path) -> None:
    persons = client.get("/api/v2/persons", params={"limit": "500"}).json()["data"]
    person = next(p for p in persons if p["emails"])
    assert set(person) >= {
        "id",
        "name",
        "first_name",
        "last_name",
        "org_id",
        "emails",
        "phones",
        "add_time",
        "update_time",
    }
    assert person["emails"][0] == {"value": person["emails"][0]["value"], "primary": True, "label": "work"}
    assert set(person["custom_fields"]) == {PERSON_COUNTRY, PERSON_EXTERNAL_ID}
    assert datetime.fromisoformat(person["update_time"].replace("Z", "+00:00")).tzinfo is not None
    orgs = live_ids(store, "organizations") | {
        int(r["id"]) for r in fetch_records(store, "organizations", include_deleted=True)
    }
    assert all(p["org_id"] in orgs for p in persons if p["org_id"] is not None)
    only_country = client.get("/api/v2/persons", params={"custom_fields": PERSON_COUNTRY}).json()["data"]
    assert all(set(p["custom_fields"]) == {PERSON_COUNTRY} for p in only_country)
    too_many = client.get("/api/v2/persons", params={"custom_fields": ",".join(f"k{i}" for i in range(16))})
    assert too_many.status_code == 400
    organizations = client.get("/api/v2/organizations").json()["data"]
    assert all(o["custom_fields"][ORG_WEBSITE].startswith("https://") for o in organizations)
    assert all(set(o["address"]) >= {"value", "locality", "postal_code", "country"} for o in organizations)
    counted = client.get(
        "/api/v2/organizations", params={"include_fields": "open_deals_count,won_deals_count"}
    ).json()
    assert all(isinstance(o["open_deals_count"], int) for o in counted["data"])
    deals = client.get("/api/v2/deals", params={"limit": "500"}).json()["data"]
    assert {d["status"] for d in deals} <= {"open", "won", "lost"}
    assert all(isinstance(d["value"], float) and len(d["currency"]) == 3 for d in deals)


def test_updated_since_is_inclusive_and_updated_until_exclusive(tmp_path: Path) -> None:
    store = make_store(tmp_path / "pipedrive.sqlite")
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
    touched = sorted(live_ids(store, "persons"))[:3]
    touch_records(store, "persons", touched, at, {"job_title": "CFO"})
    running = SANDBOX.start(store)
    try:
        with connect(running) as http:
            stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
            since = http.get("/api/v2/persons", params={"updated_since": stamp}).json()["data"]
            assert [p["id"] for p in since] == touched  # a record exactly on the bound is included
            until = http.get("/api/v2/persons", params={"updated_until": stamp, "limit": "500"}).json()[
                "data"
            ]
            assert not {p["id"] for p in until} & set(touched)
            assert {p["id"] for p in until} == live_ids(store, "persons") - set(touched)
            later = http.get(
                "/api/v2/persons", params={"updated_since": (at + timedelta(seconds=1)).isoformat()}
            )
            assert later.json() == {"success": True, "data": [], "additional_data": {"next_cursor": None}}
            bad = http.get("/api/v2/persons", params={"updated_since": "last week"})
            assert bad.status_code == 400
    finally:
        running.simulator.stop()


# --- deletes -------------------------------------------------------------------------------------


def test_deleted_deals_are_listed_with_status_deleted_for_30_days(tmp_path: Path) -> None:
    store = make_store(tmp_path / "pipedrive.sqlite")
    all_deals = {int(r["id"]) for r in fetch_records(store, "deals", include_deleted=True)}
    deleted = all_deals - live_ids(store, "deals")
    old = sorted(live_ids(store, "deals"))[0]
    delete_records(store, "deals", [old], datetime.now(UTC) - timedelta(days=31))
    gone_person = sorted(live_ids(store, "persons"))[0]
    delete_records(store, "persons", [gone_person], datetime.now(UTC))
    running = SANDBOX.start(store)
    try:
        with connect(running) as http:
            listed, _ = read_all(http, "deals", status="deleted", limit="3")
            assert {d["id"] for d in listed} == deleted  # the deal deleted 31 days ago is past the window
            assert all(d["is_deleted"] is True for d in listed)
            live, _ = read_all(http, "deals")
            assert not {d["id"] for d in live} & (deleted | {old})
            won = http.get("/api/v2/deals", params={"status": "won,lost", "limit": "500"}).json()["data"]
            assert {d["status"] for d in won} <= {"won", "lost"}
            # Persons: no deleted listing; the record simply disappears from the list and single reads.
            persons, _ = read_all(http, "persons")
            assert gone_person not in {p["id"] for p in persons}
            missing = http.get(f"/api/v2/persons/{gone_person}")
            assert missing.status_code == 404
            assert missing.json()["error"] == "Person not found"
    finally:
        running.simulator.stop()


# --- metadata ------------------------------------------------------------------------------------


def test_field_metadata_lists_custom_fields_added_later(tmp_path: Path) -> None:
    store = make_store(tmp_path / "pipedrive.sqlite")
    running = SANDBOX.start(store)
    new_key = "c0ffee" + "0" * 34
    try:
        with connect(running) as http:
            before = http.get("/api/v2/personFields").json()
            codes = {f["field_code"]: f for f in before["data"]}
            assert {"name", "emails", "update_time", PERSON_EXTERNAL_ID} <= set(codes)
            assert codes[PERSON_EXTERNAL_ID]["is_custom_field"] is True
            assert codes["name"]["is_custom_field"] is False
            assert before["additional_data"]["next_cursor"] is None
            add_field(store, "persons", new_key, default="Gold")
            after_v2 = {f["field_code"] for f in http.get("/api/v2/personFields").json()["data"]}
            after_v1 = {f["key"]: f for f in http.get("/api/v1/personFields").json()["data"]}
            assert new_key in after_v2
            assert after_v1[new_key]["edit_flag"] is True
            persons = http.get("/api/v2/persons").json()["data"]
            assert {p["custom_fields"][new_key] for p in persons} == {"Gold"}
            paged = http.get("/api/v2/dealFields", params={"limit": "5"}).json()
            assert len(paged["data"]) == 5
            assert paged["additional_data"]["next_cursor"]
            rest = http.get(
                "/api/v2/dealFields",
                params={"limit": "500", "cursor": paged["additional_data"]["next_cursor"]},
            )
            assert rest.json()["data"][0]["field_code"] not in {f["field_code"] for f in paged["data"]}
    finally:
        running.simulator.stop()


# --- limits and faults ---------------------------------------------------------------------------


def test_burst_limit_answers_429_with_the_rate_limit_headers(
    client: httpx.Client, sim: PipedriveSimulator
) -> None:
    nominal = client.get("/api/v2/persons")
    assert nominal.headers["x-ratelimit-limit"] == "80"
    assert nominal.headers["x-ratelimit-reset"] == "2"
    assert int(nominal.headers["x-daily-requests-left"]) <= 10_000
    sim.rate_limit = RateLimit(3, 2.0)
    try:
        answers = [client.get("/api/v2/persons") for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert [a.headers["x-ratelimit-remaining"] for a in answers] == ["2", "1", "0", "0"]
        refused = answers[3]
        assert refused.json() == {
            "success": False,
            "error": "Request over limit",
            "errorCode": 429,
            "error_info": ERROR_INFO,
            "data": None,
            "additional_data": None,
        }
        assert 1 <= int(refused.headers["Retry-After"]) <= 2
    finally:
        sim.rate_limit = None


def test_daily_token_budget(client: httpx.Client, sim: PipedriveSimulator) -> None:
    left = sim.budget_left()
    client.get("/api/v2/persons")
    assert sim.budget_left() == left - 10  # a v2 list costs 10 tokens
    budget = sim.daily_budget
    sim.daily_budget = budget - sim.budget_left() + 5  # not enough for another list
    try:
        refused = client.get("/api/v2/persons")
        assert refused.status_code == 429
        assert refused.json()["error"] == "Daily API token budget exhausted"
        assert int(refused.headers["Retry-After"]) <= 86_400
        assert client.get("/api/v2/persons/1").status_code in (200, 404)  # a single read still fits
    finally:
        sim.daily_budget = budget


def test_search_has_its_own_window_when_configured(client: httpx.Client, sim: PipedriveSimulator) -> None:
    sim.search_rate_limit = RateLimit(2, 2.0)
    try:
        codes = [
            client.get("/api/v2/persons/search", params={"term": "zz", "fields": "name"}).status_code
            for _ in range(3)
        ]
        assert codes == [200, 200, 429]
        assert client.get("/api/v2/persons").status_code == 200
    finally:
        sim.search_rate_limit = None


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, "Bad request"),
        (403, "You do not have permissions to access this resource"),
        (404, "Not found"),
        (429, "Request over limit"),
        (500, "Internal Server Error"),
        (503, "Service Unavailable"),
    ],
)
def test_injected_faults_answer_pipedrives_error_bodies(
    client: httpx.Client, sim: PipedriveSimulator, status: int, message: str
) -> None:
    sim.faults.fail_next(status)
    answer = client.get("/api/v2/persons")
    assert answer.status_code == status
    assert answer.json() == {
        "success": False,
        "error": message,
        "errorCode": status,
        "error_info": ERROR_INFO,
        "data": None,
        "additional_data": None,
    }
    assert client.get("/api/v2/persons").status_code == 200


# --- write side ----------------------------------------------------------------------------------


def upsert(http: httpx.Client, record: dict[str, Any]) -> httpx.Response:
    """What the engine does for Pipedrive: find by the external-id custom field, then create or update."""
    key = record["custom_fields"][PERSON_EXTERNAL_ID]
    found = http.get(
        "/api/v2/persons/search", params={"term": key, "fields": "custom_fields", "exact_match": "true"}
    ).json()["data"]["items"]
    if found:
        return http.patch(f"/api/v2/persons/{found[0]['item']['id']}", json=record)
    return http.post("/api/v2/persons", json=record)


def test_search_then_create_or_update_per_record(tmp_path: Path) -> None:
    store = make_store(tmp_path / "pipedrive.sqlite")
    case = SANDBOX.write_case(store)
    running = SANDBOX.start(store)
    sim = running.simulator
    assert isinstance(sim, PipedriveSimulator)
    try:
        with connect(running) as http:
            created = [upsert(http, r) for r in case.accepted]
            assert [c.status_code for c in created] == [200, 200]
            first = created[0].json()["data"]
            assert first["name"] == "Lena Neumann"
            assert first["org_id"] == case.accepted[0]["org_id"]
            assert first["custom_fields"][PERSON_EXTERNAL_ID] == "ERP-C-000001"
            assert (
                first["id"]
                == max(int(r["id"]) for r in fetch_records(store, "persons", include_deleted=True)) - 1
            )
            rejected = upsert(http, case.rejected[0])
            assert rejected.status_code == 400
            assert rejected.json() == {
                "success": False,
                "error": "Validation failed: name: Parameter 'name' is required",
                "code": case.rejected_code,
            }
            assert int(created[0].headers["x-daily-requests-left"]) < 10_000
            # The same records again are found by their external id and updated, not duplicated.
            changed = {**case.accepted[0], "job_title": "CFO"}
            updated = upsert(http, changed)
            assert updated.status_code == 200
            assert updated.json()["data"]["id"] == first["id"]
            rows = [r for r in fetch_records(store, "persons") if r[PERSON_EXTERNAL_ID] == "ERP-C-000001"]
            assert len(rows) == 1
            assert rows[0]["job_title"] == "CFO"
            assert rows[0]["update_time"] >= first["update_time"]
            # Search: exact match is case-insensitive, limit at most 100, terms need 2 characters.
            hit = http.get(
                "/api/v2/persons/search",
                params={"term": "erp-c-000002", "fields": "custom_fields", "exact_match": "true"},
            )
            assert [i["item"]["id"] for i in hit.json()["data"]["items"]] == [created[1].json()["data"]["id"]]
            assert "ERP-C-000002" in hit.json()["data"]["items"][0]["item"]["custom_fields"]
            assert http.get("/api/v2/persons/search", params={"term": "x"}).status_code == 400
            assert (
                http.get("/api/v2/persons/search", params={"term": "xy", "limit": "101"}).status_code == 400
            )
            # A retryable failure injected for one record, then the retry succeeds.
            sim.record_faults["ERP-C-000002"] = ["429"]
            assert upsert(http, case.accepted[1]).status_code == 429
            assert upsert(http, case.accepted[1]).status_code == 200
            # Unknown keys and missing records are refused.
            unknown = http.post("/api/v2/persons", json={"name": "X", "custom_fields": {"f" * 40: 1}})
            assert unknown.status_code == 400
            assert unknown.json()["code"] == "ERR_SCHEMA_VALIDATION_FAILED"
            assert http.patch("/api/v2/persons/999999", json={"name": "Y"}).status_code == 404
            deal = http.post(
                "/api/v2/deals", json={"title": "New deal", "value": 1200, "org_id": first["org_id"]}
            )
            assert deal.status_code == 200
            assert deal.json()["data"]["status"] == "open"
            assert (
                http.post("/api/v2/deals", json={"value": 1})
                .json()["error"]
                .startswith("Validation failed: title")
            )
    finally:
        sim.stop()


def test_ids_are_sequential_per_object(store: Path) -> None:
    for object_name in ("organizations", "persons", "deals"):
        ids = sorted(int(r["id"]) for r in fetch_records(store, object_name, include_deleted=True))
        assert ids == list(range(ids[0], ids[0] + len(ids)))  # consecutive, from the generator's start


def test_patch_by_id_updates_custom_fields_and_refuses_an_unknown_id(tmp_path: Path) -> None:
    from crm_pipelines_sandbox.simulators.pipedrive_schema import ORG_ERP_CUSTOMER_NUMBER

    store = make_store(tmp_path / "pipedrive.sqlite")
    running = SANDBOX.start(store)
    try:
        with connect(running) as http:
            org = fetch_records(store, "organizations")[0]
            fields = http.get("/api/v2/organizationFields").json()["data"]
            erp = next(f for f in fields if f["field_name"] == "ERP customer number")
            assert erp["field_code"] == ORG_ERP_CUSTOMER_NUMBER
            assert erp["is_custom_field"] is True
            answer = http.patch(
                f"/api/v2/organizations/{org['id']}", json={"custom_fields": {ORG_ERP_CUSTOMER_NUMBER: "C-1"}}
            )
            assert answer.status_code == 200
            data = answer.json()["data"]
            assert data["custom_fields"][ORG_ERP_CUSTOMER_NUMBER] == "C-1"
            assert data["update_time"] > org["update_time"]
            with_id = http.patch(f"/api/v2/organizations/{org['id']}", json={"id": org["id"], "name": "X"})
            assert with_id.status_code == 400
            assert with_id.json()["code"] == "ERR_SCHEMA_VALIDATION_FAILED"
            count = len(fetch_records(store, "organizations"))
            missing = http.patch("/api/v2/organizations/999999999", json={"name": "Ghost"})
            assert missing.status_code == 404
            assert missing.json()["code"] == "ERR_NOT_FOUND"
            assert len(fetch_records(store, "organizations")) == count
    finally:
        running.simulator.stop()


# --- leads (v1) ----------------------------------------------------------------------------------


def read_leads(client: httpx.Client, **params: str) -> tuple[list[dict[str, Any]], int]:
    """Every lead by following start/limit until more_items_in_collection is false."""
    records: list[dict[str, Any]] = []
    start, pages = 0, 0
    while True:
        response = client.get("/api/v1/leads", params={**params, "start": str(start)})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["success"] is True
        pages += 1
        records.extend(body["data"])
        more = body["additional_data"]
        assert (more["start"], more["limit"]) == (start, int(params.get("limit", "100")))
        if not more["more_items_in_collection"]:
            return records, pages
        start += len(body["data"])


def live_lead_ids(store: Path) -> set[str]:
    return {str(r["id"]) for r in fetch_records(store, "leads")}


def test_leads_are_offset_paged_oldest_first_with_their_person(client: httpx.Client, store: Path) -> None:
    leads, pages = read_leads(client, limit="4")
    ids = [lead["id"] for lead in leads]
    assert len(ids) == len(set(ids))
    assert set(ids) == live_lead_ids(store) != set()
    assert pages > 1
    assert [lead["add_time"] for lead in leads] == sorted(lead["add_time"] for lead in leads)
    lead = leads[0]
    assert set(lead) >= {
        "id", "title", "owner_id", "creator_id", "label_ids", "person_id", "organization_id",
        "source_name", "origin", "is_archived", "was_seen", "value", "expected_close_date",
        "add_time", "update_time", "visible_to", "cc_email",
    }  # fmt: skip
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", lead["id"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", lead["update_time"])
    # The name and e-mail are the person's: a lead links to one the company holds.
    persons = {int(r["id"]): r for r in fetch_records(store, "persons", include_deleted=True)}
    linked = [lead for lead in leads if lead["person_id"] is not None]
    assert linked
    assert all(lead["person_id"] in persons for lead in linked)
    assert "email" not in lead
    assert "name" not in lead
    # Labels are lead label ids the labels endpoint names.
    labels = {label["id"]: label["name"] for label in client.get("/api/v1/leadLabels").json()["data"]}
    assert set(labels.values()) == {"Hot", "Warm", "Cold"}
    assert {label for lead in leads for label in lead["label_ids"]} <= set(labels)
    # A single lead by its UUID; a default page is 100, more than 500 is refused.
    one = client.get(f"/api/v1/leads/{lead['id']}").json()
    assert one == {"success": True, "data": lead}
    assert client.get("/api/v1/leads").json()["additional_data"]["limit"] == 100
    too_many = client.get("/api/v1/leads", params={"limit": "501"})
    assert too_many.status_code == 400
    assert too_many.json()["success"] is False


def test_leads_sort_by_update_time_and_filter_by_person(client: httpx.Client, store: Path) -> None:
    newest_first = client.get("/api/v1/leads", params={"sort": "update_time DESC", "limit": "500"}).json()
    stamps = [lead["update_time"] for lead in newest_first["data"]]
    assert stamps == sorted(stamps, reverse=True)
    person = next(lead["person_id"] for lead in newest_first["data"] if lead["person_id"] is not None)
    of_person = client.get("/api/v1/leads", params={"person_id": str(person)}).json()["data"]
    assert of_person
    assert {lead["person_id"] for lead in of_person} == {person}
    bad = client.get("/api/v1/leads", params={"sort": "value.amount ASC"})
    assert bad.status_code == 400  # first-level fields only


def test_archived_leads_are_listed_with_archived_status_and_deleted_ones_are_gone(tmp_path: Path) -> None:
    store = make_store(tmp_path / "pipedrive.sqlite")
    stored = fetch_records(store, "leads")
    archived = {str(r["id"]) for r in stored if r["is_archived"]}
    assert archived  # disqualified leads are archived, not deleted
    at = datetime.now(UTC).replace(microsecond=0)
    gone, edited = sorted(live_lead_ids(store) - archived)[:2]
    # Converted into a deal (or deleted): the lead is gone from the leads.
    delete_records(store, "leads", [gone], at)
    touch_records(store, "leads", [edited], at + timedelta(seconds=1), {"was_seen": True})
    running = SANDBOX.start(store)
    try:
        with connect(running) as http:
            everything, _ = read_leads(http, archived_status="all", limit="500")
            assert {lead["id"] for lead in everything} == live_lead_ids(store)
            assert gone not in {lead["id"] for lead in everything}
            only_archived = http.get("/api/v1/leads", params={"archived_status": "archived"}).json()["data"]
            assert {lead["id"] for lead in only_archived} == archived
            assert all(lead["is_archived"] is True for lead in only_archived)
            inbox = http.get("/api/v1/leads", params={"archived_status": "not_archived", "limit": "500"})
            assert not {lead["id"] for lead in inbox.json()["data"]} & archived
            assert http.get("/api/v1/leads", params={"archived_status": "deleted"}).status_code == 400
            missing = http.get(f"/api/v1/leads/{gone}")
            assert missing.status_code == 404
            assert missing.json()["error"] == "Lead not found"
            # No updated_since: a change shows in update_time, which a sync compares itself.
            changed = http.get(f"/api/v1/leads/{edited}").json()["data"]
            assert changed["update_time"] == (at + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
            assert changed["was_seen"] is True
    finally:
        running.simulator.stop()
