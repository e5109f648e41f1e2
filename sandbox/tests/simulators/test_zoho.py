"""The Zoho CRM v8 simulator, driven over HTTP the way a client of Zoho's REST API drives it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from crm_pipelines_sandbox.simulators import RateLimit
from crm_pipelines_sandbox.simulators.records import (
    add_field,
    delete_records,
    fetch_records,
    insert_records,
    touch_records,
)
from crm_pipelines_sandbox.simulators.zoho import SANDBOX, ZohoSimulator
from crm_pipelines_sandbox.systems import Started, build_store, sample_seeds

# Seeds spread over the 30 days before AS_OF, so deleted ones are still in the 60-day recycle bin.
AS_OF = datetime.now(UTC).date()
API = "/crm/v8"


def make_store(path: Path) -> Path:
    build_store(path, SANDBOX, sample_seeds(as_of=AS_OF))
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("zoho") / "zoho.sqlite")


@pytest.fixture(scope="module")
def started(store: Path) -> Iterator[Started]:
    running = SANDBOX.start(store)
    try:
        yield running
    finally:
        running.simulator.stop()


@pytest.fixture(scope="module")
def sim(started: Started) -> ZohoSimulator:
    assert isinstance(started.simulator, ZohoSimulator)
    return started.simulator


def refresh(base_url: str, env: dict[str, str], **overrides: str) -> httpx.Response:
    params = {
        "grant_type": "refresh_token",
        "client_id": env["ZOHO_CLIENT_ID"],
        "client_secret": env["ZOHO_CLIENT_SECRET"],
        "refresh_token": env["ZOHO_REFRESH_TOKEN"],
        **overrides,
    }
    return httpx.post(f"{base_url}/oauth/v2/token", params=params)


def login(started: Started) -> httpx.Client:
    answer = refresh(started.env["ZOHO_ACCOUNTS_URL"], started.env)
    token = answer.json()["access_token"]
    return httpx.Client(
        base_url=answer.json()["api_domain"],
        headers={"Authorization": f"Zoho-oauthtoken {token}"},
        timeout=10,
    )


@pytest.fixture
def client(started: Started) -> Iterator[httpx.Client]:
    with login(started) as http:
        yield http


def live_ids(store: Path, module: str) -> set[str]:
    return {str(r["id"]) for r in fetch_records(store, module)}


def read_all(client: httpx.Client, module: str, **params: str) -> tuple[list[dict[str, Any]], int]:
    """Every record by following info.next_page_token; returns the records and the number of pages."""
    records: list[dict[str, Any]] = []
    query = dict(params)
    pages = 0
    while True:
        response = client.get(f"{API}/{module}", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        records.extend(body["data"])
        if not body["info"]["more_records"]:
            assert body["info"]["next_page_token"] is None
            return records, pages
        query = {**params, "page_token": body["info"]["next_page_token"]}


# --- auth ----------------------------------------------------------------------------------------


def test_refresh_token_grant_answers_a_token_and_the_api_domain(started: Started) -> None:
    answer = refresh(started.env["ZOHO_ACCOUNTS_URL"], started.env)
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) >= {"access_token", "api_domain", "token_type", "expires_in"}
    assert body["api_domain"] == started.env["ZOHO_BASE_URL"]
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    # The same grant as a form body.
    form = httpx.post(
        f"{started.env['ZOHO_ACCOUNTS_URL']}/oauth/v2/token",
        data={
            "grant_type": "refresh_token",
            "client_id": started.env["ZOHO_CLIENT_ID"],
            "client_secret": started.env["ZOHO_CLIENT_SECRET"],
            "refresh_token": started.env["ZOHO_REFRESH_TOKEN"],
        },
    )
    assert form.status_code == 200
    assert form.json()["access_token"] != body["access_token"]


def test_wrong_credentials_are_refused_with_zohos_error_keys(started: Started) -> None:
    base = started.env["ZOHO_ACCOUNTS_URL"]
    # Zoho's accounts server answers these refusals with HTTP 200 and an "error" key.
    assert refresh(base, started.env, client_id="1000.WRONG").json() == {"error": "invalid_client"}
    assert refresh(base, started.env, client_secret="wrong").json() == {"error": "invalid_client"}
    assert refresh(base, started.env, refresh_token="1000.dead.beef").json() == {"error": "invalid_code"}
    assert refresh(base, started.env, grant_type="password").json() == {"error": "unsupported_grant_type"}


def test_data_calls_need_a_valid_zoho_oauthtoken(started: Started, client: httpx.Client) -> None:
    url = f"{started.env['ZOHO_BASE_URL']}{API}/Accounts"
    params = {"fields": "Account_Name"}
    token = client.headers["Authorization"].split(" ", 1)[1]
    for headers in ({}, {"Authorization": f"Bearer {token}"}):
        denied = httpx.get(url, params=params, headers=headers)
        assert denied.status_code == 401
        assert denied.json() == {
            "code": "AUTHENTICATION_FAILURE",
            "details": {},
            "message": "Authentication failed",
            "status": "error",
        }
    wrong = httpx.get(url, params=params, headers={"Authorization": "Zoho-oauthtoken 1000.abc.def"})
    assert wrong.status_code == 401
    assert wrong.json() == {
        "code": "INVALID_TOKEN",
        "details": {},
        "message": "invalid oauth token",
        "status": "error",
    }
    assert client.get(f"{API}/Accounts", params=params).status_code == 200


def test_tokens_expire_by_ttl_and_on_demand(store: Path) -> None:
    running = SANDBOX.start(store, token_ttl_seconds=0.5)
    try:
        sim = running.simulator
        assert isinstance(sim, ZohoSimulator)
        with login(running) as http:
            assert refresh(running.env["ZOHO_ACCOUNTS_URL"], running.env).json()["expires_in"] == 0
            assert http.get(f"{API}/Accounts", params={"fields": "id"}).status_code == 200
            time.sleep(0.6)
            assert http.get(f"{API}/Accounts", params={"fields": "id"}).json()["code"] == "INVALID_TOKEN"
        sim.token_ttl_seconds = 3600
        with login(running) as http:
            assert http.get(f"{API}/Accounts", params={"fields": "id"}).status_code == 200
            sim.expire_tokens()  # "token expiry in the middle of a run"
            assert http.get(f"{API}/Accounts", params={"fields": "id"}).status_code == 401
        with login(running) as http:
            assert http.get(f"{API}/Accounts", params={"fields": "id"}).status_code == 200
    finally:
        running.simulator.stop()


def test_an_eleventh_access_token_evicts_the_oldest(started: Started) -> None:
    clients = [login(started) for _ in range(11)]
    try:
        assert clients[0].get(f"{API}/Accounts", params={"fields": "id"}).json()["code"] == "INVALID_TOKEN"
        assert all(c.get(f"{API}/Accounts", params={"fields": "id"}).status_code == 200 for c in clients[1:])
    finally:
        for c in clients:
            c.close()


# --- reads ---------------------------------------------------------------------------------------


def test_page_tokens_return_exactly_the_live_records_once(client: httpx.Client, store: Path) -> None:
    for module in ("Accounts", "Contacts", "Deals"):
        records, pages = read_all(
            client, module, fields="Modified_Time", per_page="7", sort_by="Modified_Time", sort_order="asc"
        )
        ids = [r["id"] for r in records]
        assert len(ids) == len(set(ids))
        assert set(ids) == live_ids(store, module)
        assert pages == -(-len(ids) // 7)
        stamps = [r["Modified_Time"] for r in records]
        assert stamps == sorted(stamps)


def test_page_numbers_and_the_2000_record_limit(client: httpx.Client, store: Path) -> None:
    seen: list[str] = []
    page = 1
    while True:
        body = client.get(
            f"{API}/Contacts", params={"fields": "Last_Name", "per_page": "10", "page": str(page)}
        ).json()
        assert body["info"]["page"] == page
        assert body["info"]["sort_by"] == "id"
        assert body["info"]["sort_order"] == "desc"
        seen.extend(r["id"] for r in body["data"])
        if not body["info"]["more_records"]:
            break
        assert body["info"]["next_page_token"]  # a token is offered on every page with more to come
        page += 1
    assert seen == sorted(live_ids(store, "Contacts"), reverse=True)
    beyond = client.get(f"{API}/Contacts", params={"fields": "Last_Name", "per_page": "200", "page": "11"})
    assert beyond.status_code == 400
    assert beyond.json() == {
        "code": "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
        "details": {"limit": 2000},
        "message": "You can only get the first 2000 records without using page_token param",
        "status": "error",
    }


def test_per_page_defaults_to_200_and_is_capped(client: httpx.Client, store: Path) -> None:
    body = client.get(f"{API}/Contacts", params={"fields": "Email"}).json()
    assert body["info"]["per_page"] == 200
    assert body["info"]["count"] == len(live_ids(store, "Contacts"))
    too_big = client.get(f"{API}/Contacts", params={"fields": "Email", "per_page": "201"})
    assert too_big.status_code == 400
    assert too_big.json()["code"] == "INVALID_DATA"
    assert too_big.json()["details"] == {"param_name": "per_page"}


def test_fields_are_mandatory_limited_and_select_what_is_returned(client: httpx.Client, store: Path) -> None:
    missing = client.get(f"{API}/Accounts")
    assert missing.status_code == 400
    assert missing.json() == {
        "code": "REQUIRED_PARAM_MISSING",
        "status": "error",
        "details": {"param_name": "fields"},
        "message": "required param is missing",
    }
    many = client.get(f"{API}/Accounts", params={"fields": ",".join(f"F{i}" for i in range(51))})
    assert many.status_code == 400
    assert many.json()["details"] == {"limit": 50, "param_name": "fields"}
    accounts = client.get(f"{API}/Accounts", params={"fields": "Account_Name,Billing_Country"}).json()["data"]
    assert all(set(r) == {"Account_Name", "Billing_Country", "id"} for r in accounts)
    names = {str(r["id"]): r["Account_Name"] for r in fetch_records(store, "Accounts", include_deleted=True)}
    contacts = client.get(f"{API}/Contacts", params={"fields": "Last_Name,Account_Name,Owner"}).json()["data"]
    for contact in contacts:
        lookup = contact["Account_Name"]
        assert lookup == {"name": names[lookup["id"]], "id": lookup["id"]}
        assert set(contact["Owner"]) == {"name", "id", "email"}
    deals = client.get(
        f"{API}/Deals", params={"fields": "Deal_Name,Amount,Currency,Stage,Closing_Date"}
    ).json()["data"]
    assert all(isinstance(d["Amount"], float) and d["$currency_symbol"] for d in deals)
    assert {d["Stage"] for d in deals} <= set(SANDBOX.stage_values.values())


def test_if_modified_since_is_exclusive_and_304_when_nothing_changed(tmp_path: Path) -> None:
    store = make_store(tmp_path / "zoho.sqlite")
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    touched = sorted(live_ids(store, "Contacts"))[:3]
    touch_records(store, "Contacts", touched, at, {"Title": "CFO"})
    running = SANDBOX.start(store)
    try:
        with login(running) as http:

            def since(instant: datetime) -> httpx.Response:
                stamp = instant.isoformat()
                return http.get(
                    f"{API}/Contacts", params={"fields": "Title"}, headers={"If-Modified-Since": stamp}
                )

            before = since(at - timedelta(seconds=1))
            assert before.status_code == 200
            assert {r["id"] for r in before.json()["data"]} == set(touched)
            on_the_bound = since(at)  # "modified after" the instant: a record exactly on it is not returned
            assert on_the_bound.status_code == 304
            assert on_the_bound.content == b""
            in_berlin = since((at - timedelta(seconds=1)).astimezone(datetime.now().astimezone().tzinfo))
            assert {r["id"] for r in in_berlin.json()["data"]} == set(touched)
            bad = http.get(
                f"{API}/Contacts", params={"fields": "Title"}, headers={"If-Modified-Since": "yesterday"}
            )
            assert bad.status_code == 400
            assert bad.json()["code"] == "INVALID_DATA"
    finally:
        running.simulator.stop()


def test_page_tokens_are_bound_expire_and_stop_at_the_chain_limit(
    client: httpx.Client, sim: ZohoSimulator
) -> None:
    params = {"fields": "id", "per_page": "5", "sort_by": "Modified_Time", "sort_order": "asc"}
    first = client.get(f"{API}/Contacts", params=params).json()["info"]
    token = first["next_page_token"]
    assert datetime.fromisoformat(first["page_token_expiry"]) > datetime.now(UTC) + timedelta(hours=23)
    mismatch = client.get(f"{API}/Contacts", params={**params, "sort_order": "desc", "page_token": token})
    assert mismatch.status_code == 400
    assert mismatch.json()["code"] == "TOKEN_BOUND_DATA_MISMATCH"
    assert mismatch.json()["details"] == {"param_name": "sort_order"}
    second = client.get(f"{API}/Contacts", params={**params, "page_token": token}).json()["info"]
    assert second["page"] == 2
    assert second["previous_page_token"] == token
    sim.page_token_limit = 10
    try:
        capped = client.get(f"{API}/Contacts", params={**params, "page_token": second["next_page_token"]})
        assert capped.status_code == 400
        assert capped.json() == {
            "code": "PAGINATION_LIMIT_EXCEEDED",
            "message": "You can only get upto 10 records using page_token param",
            "status": "error",
            "details": {"param_name": "page_token"},
        }
    finally:
        sim.page_token_limit = 100_000
    sim.page_token_ttl_seconds = 0
    try:
        stale = client.get(f"{API}/Contacts", params=params).json()["info"]["next_page_token"]
        expired = client.get(f"{API}/Contacts", params={**params, "page_token": stale})
        assert expired.status_code == 400
        assert expired.json()["code"] == "EXPIRED_VALUE"
        assert expired.json()["details"] == {"api_name": "page_token", "json_path": "$.query.page_token"}
    finally:
        sim.page_token_ttl_seconds = 86_400


def test_unknown_modules_and_sorts(client: httpx.Client) -> None:
    module = client.get(f"{API}/Potentials", params={"fields": "id"})
    assert module.status_code == 400
    assert module.json()["code"] == "INVALID_MODULE"
    sort = client.get(f"{API}/Accounts", params={"fields": "id", "sort_by": "Account_Name"})
    assert sort.status_code == 400
    assert sort.json()["details"] == {
        "param_name": "sort_by",
        "supported_values": ["id", "Created_Time", "Modified_Time"],
    }


# --- deletes -------------------------------------------------------------------------------------


def test_deleted_records_list_the_recycle_bin_and_permanent_deletes(tmp_path: Path) -> None:
    store = make_store(tmp_path / "zoho.sqlite")
    deleted = {str(r["id"]) for r in fetch_records(store, "Contacts", include_deleted=True)} - live_ids(
        store, "Contacts"
    )
    long_ago = datetime.now(UTC) - timedelta(days=90)
    purged = sorted(live_ids(store, "Contacts"))[0]
    delete_records(store, "Contacts", [purged], long_ago)
    running = SANDBOX.start(store)
    try:
        with login(running) as http:
            everything = http.get(f"{API}/Contacts/deleted").json()
            assert {r["id"] for r in everything["data"]} == deleted | {purged}
            assert everything["info"] == {
                "per_page": 200,
                "count": len(deleted) + 1,
                "page": 1,
                "more_records": False,
            }
            recycled = http.get(f"{API}/Contacts/deleted", params={"type": "recycle"}).json()["data"]
            assert {r["id"] for r in recycled} == deleted
            assert all(
                r["type"] == "recycle" and r["display_name"] and r["deleted_by"]["name"] for r in recycled
            )
            permanent = http.get(f"{API}/Contacts/deleted", params={"type": "permanent"}).json()["data"]
            assert permanent == [
                {
                    "deleted_by": None,
                    "id": purged,
                    "display_name": None,
                    "type": "permanent",
                    "created_by": None,
                    "deleted_time": long_ago.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
                }
            ]
            paged = http.get(f"{API}/Contacts/deleted", params={"per_page": "1", "page": "2"}).json()
            assert paged["info"]["count"] == 1
            assert paged["info"]["more_records"] is (len(deleted) + 1 > 2)
            recent = http.get(
                f"{API}/Contacts/deleted",
                headers={"If-Modified-Since": (long_ago + timedelta(days=1)).isoformat()},
            ).json()["data"]
            assert {r["id"] for r in recent} == deleted
            future = http.get(
                f"{API}/Contacts/deleted", headers={"If-Modified-Since": datetime.now(UTC).isoformat()}
            )
            assert future.status_code == 304
            # Deleted records never show up in the normal listing.
            listed, _ = read_all(http, "Contacts", fields="id")
            assert not {r["id"] for r in listed} & (deleted | {purged})
    finally:
        running.simulator.stop()


# --- metadata ------------------------------------------------------------------------------------


def test_field_metadata_includes_custom_fields_added_later(tmp_path: Path) -> None:
    store = make_store(tmp_path / "zoho.sqlite")
    running = SANDBOX.start(store)
    try:
        with login(running) as http:
            before = http.get(f"{API}/settings/fields", params={"module": "Accounts"}).json()["fields"]
            names = [f["api_name"] for f in before]
            assert {"id", "Account_Name", "Annual_Revenue", "Modified_Time", "Owner"} <= set(names)
            # The org's own custom fields (the external id and the ERP customer number) are custom already.
            custom = {f["api_name"] for f in before if f["custom_field"]}
            assert custom == {"External_Id", "ERP_Customer_Number"}
            add_field(store, "Accounts", "Customer_Tier", default="Gold")
            after = http.get(f"{API}/settings/fields", params={"module": "Accounts"}).json()["fields"]
            tier = next(f for f in after if f["api_name"] == "Customer_Tier")
            assert tier["custom_field"] is True
            assert tier["data_type"] == "text"
            rows = http.get(f"{API}/Accounts", params={"fields": "Account_Name,Customer_Tier"}).json()["data"]
            assert {r["Customer_Tier"] for r in rows} == {"Gold"}
            missing = http.get(f"{API}/settings/fields")
            assert missing.status_code == 400
            assert missing.json()["details"] == {"param_name": "module"}
    finally:
        running.simulator.stop()


# --- limits and faults ---------------------------------------------------------------------------


def test_window_limit_answers_429_with_headers(client: httpx.Client, sim: ZohoSimulator) -> None:
    sim.rate_limit = RateLimit(3, 30.0)
    try:
        answers = [client.get(f"{API}/Accounts", params={"fields": "id"}) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert [a.headers["X-RATELIMIT-REMAINING"] for a in answers[:3]] == ["2", "1", "0"]
        assert answers[0].headers["X-RATELIMIT-LIMIT"] == "3"
        refused = answers[3]
        assert refused.json()["code"] == "TOO_MANY_REQUESTS"
        assert refused.json()["status"] == "error"
        assert int(refused.headers["Retry-After"]) >= 1
    finally:
        sim.rate_limit = None


def test_credits_and_concurrency_limits(client: httpx.Client, sim: ZohoSimulator) -> None:
    first = client.get(f"{API}/Accounts", params={"fields": "id"})
    assert first.headers["X-RATELIMIT-DAY-LIMIT"] == str(sim.daily_credits)
    remaining = int(first.headers["X-RATELIMIT-DAY-REMAINING"])
    assert (
        int(client.get(f"{API}/Accounts", params={"fields": "id"}).headers["X-RATELIMIT-DAY-REMAINING"])
        == remaining - 1
    )
    assert datetime.fromisoformat(first.headers["X-ACCESSTOKEN-RESET"]) > datetime.now(UTC)
    budget = sim.daily_credits
    sim.daily_credits = budget - remaining + 2  # the two calls above leave one credit
    try:
        assert client.get(f"{API}/Accounts", params={"fields": "id"}).status_code == 200
        refused = client.get(f"{API}/Accounts", params={"fields": "id"})
        assert refused.status_code == 429
        assert refused.json()["code"] == "TOO_MANY_REQUESTS"
        assert "credits" in refused.json()["message"]
        assert int(refused.headers["Retry-After"]) > 3600
    finally:
        sim.daily_credits = budget
    sim.concurrency_limit = 0  # every request finds the limit taken
    try:
        busy = client.get(f"{API}/Accounts", params={"fields": "id"})
        assert busy.status_code == 429
        assert "concurrency" in busy.json()["message"]
    finally:
        sim.concurrency_limit = 20


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "INVALID_REQUEST"),
        (401, "INVALID_TOKEN"),
        (403, "NO_PERMISSION"),
        (404, "INVALID_URL_PATTERN"),
        (429, "TOO_MANY_REQUESTS"),
        (500, "INTERNAL_ERROR"),
        (503, "SERVICE_UNAVAILABLE"),
    ],
)
def test_injected_faults_answer_zohos_error_bodies(
    client: httpx.Client, sim: ZohoSimulator, status: int, code: str
) -> None:
    sim.faults.fail_next(status)
    answer = client.get(f"{API}/Accounts", params={"fields": "id"})
    assert answer.status_code == status
    body = answer.json()
    assert body["code"] == code
    assert body["status"] == "error"
    assert isinstance(body["details"], dict)
    assert client.get(f"{API}/Accounts", params={"fields": "id"}).status_code == 200


# --- upsert --------------------------------------------------------------------------------------


def test_upsert_creates_updates_and_rejects_per_record(tmp_path: Path) -> None:
    store = make_store(tmp_path / "zoho.sqlite")
    case = SANDBOX.write_case(store)
    running = SANDBOX.start(store)
    sim = running.simulator
    assert isinstance(sim, ZohoSimulator)
    try:
        with login(running) as http:
            body = {"data": case.accepted + case.rejected, "duplicate_check_fields": [case.external_id_field]}
            first = http.post(f"{API}/{case.object_name}/upsert", json=body)
            assert first.status_code == 207
            results = first.json()["data"]
            assert [r["status"] for r in results] == ["success", "success", "error"]
            assert all(r["action"] == "insert" and r["message"] == "record added" for r in results[:2])
            assert results[0]["duplicate_field"] is None
            assert results[2] == {
                "code": case.rejected_code,
                "details": {"api_name": "Last_Name", "json_path": "$.data[2].Last_Name"},
                "message": "required field not found",
                "status": "error",
            }
            created = fetch_records(store, "Contacts", [results[0]["details"]["id"]])[0]
            assert created["Last_Name"] == "Neumann"
            assert created["Account_Name"] == case.accepted[0]["Account_Name"]["id"]
            assert len(created["id"]) == 19
            # The same external ids again: updates, matched on the duplicate check field.
            changed = [{**case.accepted[0], "Title": "CFO"}, case.accepted[1]]
            second = http.post(f"{API}/Contacts/upsert", json={**body, "data": changed})
            assert second.status_code == 200
            assert [(r["action"], r["duplicate_field"]) for r in second.json()["data"]] == [
                ("update", "External_Id"),
                ("update", "External_Id"),
            ]
            assert fetch_records(store, "Contacts", [results[0]["details"]["id"]])[0]["Title"] == "CFO"
            # The new records are listed like any other.
            listed, _ = read_all(http, "Contacts", fields="External_Id")
            assert {r["External_Id"] for r in listed} >= {"ERP-C-000001", "ERP-C-000002"}
            # A retryable failure injected for one record, then the retry succeeds.
            sim.record_faults["ERP-C-000002"] = ["RECORD_LOCKED"]
            retry = http.post(f"{API}/Contacts/upsert", json={**body, "data": case.accepted})
            assert retry.status_code == 207
            assert retry.json()["data"][1]["code"] == "RECORD_LOCKED"
            again = http.post(f"{API}/Contacts/upsert", json={**body, "data": case.accepted[1:]})
            assert again.status_code == 200
            # Wrong types and unknown fields are per-record errors; all failing answers 400.
            bad = http.post(
                f"{API}/Accounts/upsert",
                json={
                    "data": [
                        {"Account_Name": "X", "Annual_Revenue": "lots"},
                        {"Account_Name": "Y", "Nope": 1},
                    ]
                },
            )
            assert bad.status_code == 400
            assert [r["details"] for r in bad.json()["data"]] == [
                {
                    "api_name": "Annual_Revenue",
                    "expected_data_type": "double",
                    "json_path": "$.data[0].Annual_Revenue",
                },
                {"api_name": "Nope", "json_path": "$.data[1].Nope"},
            ]
            too_many = http.post(f"{API}/Contacts/upsert", json={"data": [{"Last_Name": "x"}] * 101})
            assert too_many.status_code == 400
            assert too_many.json()["code"] == "LIMIT_EXCEEDED"
            wrong_check = http.post(
                f"{API}/Contacts/upsert", json={**body, "duplicate_check_fields": ["Title"]}
            )
            assert wrong_check.status_code == 400
            assert wrong_check.json()["code"] == "INVALID_DATA"
    finally:
        sim.stop()


def test_ids_are_19_digits_and_unique_across_modules(store: Path) -> None:
    ids = [
        str(r["id"])
        for m in ("Accounts", "Contacts", "Deals", "Leads")
        for r in fetch_records(store, m, include_deleted=True)
    ]
    assert len(ids) == len(set(ids))
    assert all(len(i) == 19 and i.isdigit() for i in ids)


def test_records_inserted_later_are_served(tmp_path: Path) -> None:
    store = make_store(tmp_path / "zoho.sqlite")
    insert_records(store, "Accounts", [{"id": "5725767999999999999", "Account_Name": "Late GmbH"}])
    running = SANDBOX.start(store)
    try:
        with login(running) as http:
            top = http.get(f"{API}/Accounts", params={"fields": "Account_Name", "per_page": "1"}).json()[
                "data"
            ]
            assert top == [{"Account_Name": "Late GmbH", "id": "5725767999999999999"}]
    finally:
        running.simulator.stop()


def test_update_by_id_answers_per_record_and_never_creates(tmp_path: Path) -> None:
    store = make_store(tmp_path / "zoho.sqlite")
    running = SANDBOX.start(store)
    try:
        with login(running) as http:
            accounts = fetch_records(store, "Accounts")[:2]
            deleted = [r["id"] for r in fetch_records(store, "Accounts", include_deleted=True)][-1]
            delete_records(store, "Accounts", [deleted], datetime.now(UTC))
            count = len(fetch_records(store, "Accounts", include_deleted=True))
            answer = http.put(
                "/crm/v8/Accounts",
                json={
                    "data": [
                        {"id": accounts[0]["id"], "ERP_Customer_Number": "C-1", "Phone": "+49 89 1"},
                        {"id": accounts[1]["id"], "Account_Name": ""},
                        {"id": "5725767999999999999", "ERP_Customer_Number": "C-3"},
                        {"id": deleted, "ERP_Customer_Number": "C-4"},
                        {"ERP_Customer_Number": "C-5"},
                    ]
                },
            )
            assert answer.status_code == 207
            results = answer.json()["data"]
            assert [(r["status"], r["code"]) for r in results] == [
                ("success", "SUCCESS"),
                ("error", "MANDATORY_NOT_FOUND"),
                ("error", "INVALID_DATA"),
                ("error", "INVALID_DATA"),
                ("error", "MANDATORY_NOT_FOUND"),
            ]
            assert results[0]["details"]["id"] == accounts[0]["id"]
            assert results[2]["details"] == {"api_name": "id", "json_path": "$.data[2].id"}
            stored = fetch_records(store, "Accounts", [accounts[0]["id"]])[0]
            assert stored["ERP_Customer_Number"] == "C-1"
            assert stored["Modified_Time"] == results[0]["details"]["Modified_Time"]
            none = http.put("/crm/v8/Accounts", json={"data": [{"id": "5725767999999999998", "Phone": "1"}]})
            assert none.status_code == 400
            assert len(fetch_records(store, "Accounts", include_deleted=True)) == count
    finally:
        running.simulator.stop()


# --- leads ---------------------------------------------------------------------------------------


def test_leads_list_the_unconverted_by_default_and_converted_ones_on_request(
    client: httpx.Client, store: Path
) -> None:
    """GET /Leads answers unconverted leads; converted=true the converted, both all (the docs' values)."""
    rows = fetch_records(store, "Leads")
    converted_ids = {str(r["id"]) for r in rows if r["converted_flag"]}
    assert converted_ids
    assert converted_ids != live_ids(store, "Leads")
    fields = "First_Name,Last_Name,Email,Company,Designation,Country,Lead_Status,Lead_Source,$converted"
    default, _ = read_all(client, "Leads", fields=fields, per_page="7")
    assert {r["id"] for r in default} == live_ids(store, "Leads") - converted_ids
    assert all(r["$converted"] is False for r in default)
    statuses = {
        "Not Contacted",
        "Attempted to Contact",
        "Contact in Future",
        "Contacted",
        "Junk Lead",
        "Lost Lead",
        "Not Qualified",
        "Pre-Qualified",
    }
    assert {r["Lead_Status"] for r in default} <= statuses
    only, _ = read_all(client, "Leads", fields=f"{fields},$converted_detail", converted="true")
    assert {r["id"] for r in only} == converted_ids
    contacts = {str(r["id"]) for r in fetch_records(store, "Contacts", include_deleted=True)}
    for lead in only:
        detail = lead["$converted_detail"]
        assert lead["$converted"] is True
        assert detail["contact"] in contacts
        assert set(detail) == {"convert_user", "contact", "account", "deal", "converted_time"}
        assert datetime.fromisoformat(detail["converted_time"]).tzinfo is not None
    both, _ = read_all(client, "Leads", fields="Last_Name,$converted_detail", converted="both")
    assert {r["id"] for r in both} == live_ids(store, "Leads")
    assert all(r["$converted_detail"] == {} for r in both if r["id"] not in converted_ids)
    bad = client.get(f"{API}/Leads", params={"fields": "Last_Name", "converted": "maybe"})
    assert bad.status_code == 400
    assert (bad.json()["code"], bad.json()["details"]["param_name"]) == ("INVALID_DATA", "converted")


def test_a_lead_converted_after_a_read_leaves_the_default_list_but_is_no_delete(tmp_path: Path) -> None:
    store = make_store(tmp_path / "zoho.sqlite")
    open_leads = sorted(str(r["id"]) for r in fetch_records(store, "Leads") if not r["converted_flag"])
    converted, gone = open_leads[:2]
    contact = sorted(live_ids(store, "Contacts"))[0]
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    detail = {"contact": contact, "account": None, "deal": None, "converted_time": at.isoformat()}
    touch_records(store, "Leads", [converted], at, {"converted_flag": 1, "converted_detail": detail})
    delete_records(store, "Leads", [gone], at + timedelta(minutes=1))
    running = SANDBOX.start(store)
    try:
        with login(running) as http:
            since = {"If-Modified-Since": (at - timedelta(seconds=1)).isoformat()}
            params = {"fields": "Last_Name,$converted,$converted_detail", "sort_by": "Modified_Time"}
            # The default list no longer has it and nothing else changed: 304.
            assert http.get(f"{API}/Leads", params=params, headers=since).status_code == 304
            changed = http.get(f"{API}/Leads", params={**params, "converted": "both"}, headers=since).json()
            assert [r["id"] for r in changed["data"]] == [converted]
            assert changed["data"][0]["$converted"] is True
            assert changed["data"][0]["$converted_detail"]["contact"] == contact
            # Deleting is what the deleted list shows; converting is not.
            deleted = http.get(f"{API}/Leads/deleted", headers=since).json()["data"]
            assert [(r["id"], r["type"]) for r in deleted] == [(gone, "recycle")]
            assert deleted[0]["display_name"]
    finally:
        running.simulator.stop()


def test_lead_field_metadata_lists_the_fields_not_the_record_properties(client: httpx.Client) -> None:
    fields = client.get(f"{API}/settings/fields", params={"module": "Leads"}).json()["fields"]
    names = {f["api_name"] for f in fields}
    assert {
        "First_Name",
        "Last_Name",
        "Email",
        "Company",
        "Designation",
        "Lead_Status",
        "Lead_Source",
    } <= names
    assert not {n for n in names if n.startswith("$") or n.startswith("converted")}
    assert next(f for f in fields if f["api_name"] == "Last_Name")["system_mandatory"] is True
    assert not any(f["custom_field"] for f in fields)
