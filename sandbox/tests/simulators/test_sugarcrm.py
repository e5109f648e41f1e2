"""The SugarCRM simulator over real HTTP, the way an integration drives Sugar's REST v11 API."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from crm_pipelines_sandbox.simulators import RateLimit
from crm_pipelines_sandbox.simulators.records import add_field, delete_records, fetch_records, touch_records
from crm_pipelines_sandbox.simulators.sugarcrm import SANDBOX, SugarSimulator
from crm_pipelines_sandbox.systems import build_store, sample_seeds

AS_OF = date(2026, 11, 25)
V = "/rest/v11_24"
USER, PASSWORD = "integration.admin", "s3cret-Pa55"


def token_body(**overrides: str) -> dict[str, str]:
    body = {
        "grant_type": "password",
        "client_id": "sugar",
        "client_secret": "",
        "username": USER,
        "password": PASSWORD,
        "platform": "api",
    }
    body.update(overrides)
    return body


def make_store(path: Path) -> Path:
    build_store(path, SANDBOX, sample_seeds(as_of=AS_OF))
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("sugar") / "sugar.sqlite")


@pytest.fixture(scope="module")
def sim(store: Path) -> Iterator[SugarSimulator]:
    with SugarSimulator(store, username=USER, password=PASSWORD) as running:
        yield running


def login(base_url: str) -> dict[str, object]:
    response = httpx.post(f"{base_url}{V}/oauth2/token", json=token_body())
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.fixture(scope="module")
def client(sim: SugarSimulator) -> Iterator[httpx.Client]:
    token = login(sim.base_url)["access_token"]
    with httpx.Client(base_url=sim.base_url + V, headers={"OAuth-Token": str(token)}, timeout=10) as http:
        yield http


def list_all(client: httpx.Client, module: str, **params: str) -> tuple[list[dict[str, Any]], int]:
    """Every record by following next_offset until -1; returns the records and the page count."""
    records: list[dict[str, Any]] = []
    offset, pages = 0, 0
    while offset != -1:
        response = client.get(f"/{module}", params={**params, "offset": str(offset)})
        assert response.status_code == 200, response.text
        body = response.json()
        records.extend(body["records"])
        offset, pages = body["next_offset"], pages + 1
    return records, pages


def test_password_grant_answers_the_documented_token(sim: SugarSimulator) -> None:
    token = login(sim.base_url)
    assert set(token) == {
        "access_token",
        "expires_in",
        "token_type",
        "scope",
        "refresh_token",
        "refresh_expires_in",
        "download_token",
    }
    assert token["expires_in"] == 3600
    assert token["token_type"] == "bearer"
    assert token["scope"] is None
    form = httpx.post(f"{sim.base_url}{V}/oauth2/token", data=token_body())  # a form body works too
    assert form.status_code == 200
    assert form.json()["access_token"] != token["access_token"]


def test_wrong_credentials_are_refused_as_sugar_does(sim: SugarSimulator) -> None:
    wrong = httpx.post(f"{sim.base_url}{V}/oauth2/token", json=token_body(password="nope"))
    assert wrong.status_code == 401
    assert wrong.json() == {
        "error": "need_login",
        "error_message": "You must specify a valid username and password.",
    }
    client = httpx.post(f"{sim.base_url}{V}/oauth2/token", json=token_body(client_id="other"))
    assert client.status_code == 400
    assert client.json()["error"] == "invalid_client"
    for headers in ({}, {"OAuth-Token": "not-a-token"}):
        response = httpx.get(f"{sim.base_url}{V}/Accounts", headers=headers)
        assert response.status_code == 401
        assert set(response.json()) == {"error", "error_message"}
    assert httpx.get(f"{sim.base_url}{V}/Accounts", headers={"OAuth-Token": "x"}).json() == {
        "error": "invalid_grant",
        "error_message": "The access token provided is invalid.",
    }


def test_expired_tokens_are_refused_and_refresh_rotates(sim: SugarSimulator) -> None:
    token = login(sim.base_url)
    headers = {"OAuth-Token": str(token["access_token"])}
    assert httpx.get(f"{sim.base_url}{V}/ping", headers=headers).json() == "pong"
    sim.expire_tokens()
    expired = httpx.get(f"{sim.base_url}{V}/Accounts", headers=headers)
    assert expired.status_code == 401
    assert expired.json()["error"] == "invalid_grant"
    refresh = {"grant_type": "refresh_token", "refresh_token": token["refresh_token"], "client_id": "sugar"}
    renewed = httpx.post(f"{sim.base_url}{V}/oauth2/token", json={**refresh, "client_secret": ""})
    assert renewed.status_code == 200
    fresh = {"OAuth-Token": renewed.json()["access_token"]}
    assert httpx.get(f"{sim.base_url}{V}/Accounts", headers=fresh).status_code == 200
    # The refresh token was used: a second refresh with it is an invalid grant.
    again = httpx.post(f"{sim.base_url}{V}/oauth2/token", json={**refresh, "client_secret": ""})
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def test_token_lifetime_is_configurable(store: Path) -> None:
    with SugarSimulator(store, username=USER, password=PASSWORD, token_ttl_seconds=0.3) as short:
        token = login(short.base_url)
        headers = {"OAuth-Token": str(token["access_token"])}
        assert httpx.get(f"{short.base_url}{V}/me", headers=headers).status_code == 200
        time.sleep(0.4)
        assert httpx.get(f"{short.base_url}{V}/me", headers=headers).status_code == 401


def test_paging_returns_every_live_record_exactly_once(client: httpx.Client, store: Path) -> None:
    records, pages = list_all(client, "Contacts", max_num="7", order_by="date_modified:asc")
    live = fetch_records(store, "Contacts")
    assert sorted(r["id"] for r in records) == sorted(r["id"] for r in live)
    assert len({r["id"] for r in records}) == len(records)
    assert pages == -(-len(live) // 7)
    stamps = [r["date_modified"] for r in records]
    assert stamps == sorted(stamps)
    assert all(r["_module"] == "Contacts" and r["_acl"] == {"fields": {}} for r in records)


def test_max_num_defaults_to_20_and_is_capped(client: httpx.Client, sim: SugarSimulator, store: Path) -> None:
    first = client.get("/Contacts").json()
    assert len(first["records"]) == 20
    assert first["next_offset"] == 20
    live = len(fetch_records(store, "Contacts"))
    everything = client.get("/Contacts", params={"max_num": "5000"}).json()  # past the cap: clamped
    assert len(everything["records"]) == live
    assert everything["next_offset"] == -1
    sim.max_num_limit = 10
    try:
        assert len(client.get("/Contacts", params={"max_num": "50"}).json()["records"]) == 10
    finally:
        sim.max_num_limit = 1000


def test_fields_selection_and_defaults(client: httpx.Client) -> None:
    chosen = client.get("/Accounts", params={"fields": "name,industry,no_such_field", "max_num": "3"}).json()
    for record in chosen["records"]:
        assert set(record) == {"id", "date_modified", "name", "industry", "_acl", "_module"}
    default = client.get("/Contacts", params={"max_num": "3"}).json()["records"][0]
    assert {"first_name", "last_name", "email1", "account_id", "date_entered", "sync_key"} <= set(default)
    assert default["deleted"] is False  # the whole record; with "fields" only when deleted=true
    assert "deleted" not in chosen["records"][0]
    assert default["email"][0]["email_address"] == default["email1"]
    deal = client.get("/Opportunities", params={"fields": "amount,sales_stage", "max_num": "1"}).json()
    amount = deal["records"][0]["amount"]
    assert isinstance(amount, str)
    assert amount.endswith(".000000")


def test_incremental_filter_includes_a_record_exactly_on_the_bound(client: httpx.Client, store: Path) -> None:
    rows = sorted(fetch_records(store, "Accounts", with_meta=True), key=lambda r: r["_modified"])
    pivot = rows[len(rows) // 2]
    bound = pivot["date_modified"]
    expect_from = {r["id"] for r in rows if r["_modified"] >= pivot["_modified"]}

    def ids(**params: str) -> set[str]:
        return {r["id"] for r in list_all(client, "Accounts", max_num="5", **params)[0]}

    assert ids(**{"filter[0][date_modified][$gte]": bound}) == expect_from
    assert pivot["id"] not in ids(**{"filter[0][date_modified][$gt]": bound})
    assert pivot["id"] not in ids(**{"filter[0][date_modified][$lt]": bound})
    assert pivot["id"] in ids(**{"filter[0][date_modified][$lte]": bound})
    # The same window through POST /filter with a JSON body, bounded above as the engine asks for it.
    body = {
        "filter": [
            {"date_modified": {"$gte": bound}},
            {"date_modified": {"$lt": "2099-01-01T00:00:00+00:00"}},
        ],
        "order_by": "date_modified:asc",
        "max_num": 1000,
        "fields": "id",
    }
    posted = client.post("/Accounts/filter", json=body).json()
    assert {r["id"] for r in posted["records"]} == expect_from
    assert posted["next_offset"] == -1
    bad = client.get("/Accounts", params={"filter[0][date_modified][$almost]": bound})
    assert bad.status_code == 422
    assert bad.json()["error"] == "invalid_parameter"


def test_deleted_records_are_listed_with_deleted_true(client: httpx.Client, store: Path) -> None:
    everything, _ = list_all(
        client, "Opportunities", max_num="50", deleted="true", order_by="date_modified:asc"
    )
    gone = {r["id"] for r in fetch_records(store, "Opportunities", include_deleted=True) if r["deleted"]}
    assert gone, "the sample has deleted opportunities"
    assert {r["id"] for r in everything if r["deleted"] is True} == gone
    assert all(r["deleted"] is False for r in everything if r["id"] not in gone)
    live, _ = list_all(client, "Opportunities", max_num="50")
    assert not gone & {r["id"] for r in live}


def test_fields_added_later_show_up_in_metadata_and_records(tmp_path: Path) -> None:
    path = make_store(tmp_path / "sugar.sqlite")
    with SugarSimulator(path, username=USER, password=PASSWORD) as sim:
        headers = {"OAuth-Token": str(login(sim.base_url)["access_token"])}
        add_field(path, "Accounts", "tier_c", default="Gold")
        meta = httpx.get(
            f"{sim.base_url}{V}/metadata",
            params={"type_filter": "modules", "module_filter": "Accounts"},
            headers=headers,
        ).json()
        fields = meta["modules"]["Accounts"]["fields"]
        assert fields["tier_c"]["source"] == "custom_fields"
        assert fields["tier_c"]["type"] == "varchar"
        assert fields["name"]["required"] is True
        assert "source" not in fields["name"]
        records = httpx.get(
            f"{sim.base_url}{V}/Accounts", params={"fields": "tier_c"}, headers=headers
        ).json()
        assert {r["tier_c"] for r in records["records"]} == {"Gold"}
        default = httpx.get(f"{sim.base_url}{V}/Accounts", headers=headers).json()["records"][0]
        assert default["tier_c"] == "Gold"


def test_rate_limit_answers_429_with_retry_after(client: httpx.Client, sim: SugarSimulator) -> None:
    sim.rate_limit = RateLimit(2, 30.0)
    try:
        assert [client.get("/ping").status_code for _ in range(2)] == [200, 200]
        limited = client.get("/ping")
        assert limited.status_code == 429
        assert int(limited.headers["Retry-After"]) >= 1
        assert limited.json()["error"] == "too_many_requests"
    finally:
        sim.rate_limit = None


def test_injected_faults_answer_with_sugars_error_bodies(client: httpx.Client, sim: SugarSimulator) -> None:
    sim.faults.fail_next(500, 503, 403, 404, 400, 502)
    try:
        answers = [client.get("/Accounts") for _ in range(6)]
    finally:
        sim.faults.clear()
    assert [(a.status_code, a.json()["error"]) for a in answers[:5]] == [
        (500, "fatal_error"),
        (503, "maintenance"),
        (403, "not_authorized"),
        (404, "not_found"),
        (400, "bad_request"),
    ]
    assert answers[5].status_code == 502
    assert "Bad Gateway" in answers[5].text


def test_unknown_versions_and_modules(client: httpx.Client, sim: SugarSimulator) -> None:
    headers = dict(client.headers)
    assert httpx.get(f"{sim.base_url}/rest/v11_99/Accounts", headers=headers).status_code == 301
    assert client.get("/NoSuchModule").json()["error"] == "no_method"
    assert client.get("/Accounts/00000000-0000-4000-8000-000000000000").status_code == 404


def test_upsert_by_sync_key_creates_updates_and_rejects(tmp_path: Path) -> None:
    path = make_store(tmp_path / "sugar.sqlite")
    with SugarSimulator(path, username=USER, password=PASSWORD) as sim:
        http = httpx.Client(
            base_url=sim.base_url + V, headers={"OAuth-Token": str(login(sim.base_url)["access_token"])}
        )
        created = http.patch("/Accounts/sync_key/erp-1", json={"name": "Kanal GmbH", "industry": "Retail"})
        assert created.status_code == 201
        record_id = created.json()["record"]
        stored = fetch_records(path, "Accounts", [record_id])[0]
        assert (stored["name"], stored["sync_key"], stored["industry"]) == ("Kanal GmbH", "erp-1", "Retail")
        updated = http.patch("/integrate/Accounts/sync_key/erp-1", json={"name": "Kanal AG"})
        assert updated.status_code == 200
        assert updated.json() == {"record": record_id}
        assert fetch_records(path, "Accounts", [record_id])[0]["name"] == "Kanal AG"
        refused = http.patch("/Accounts/sync_key/erp-2", json={"industry": "Retail"})
        assert refused.status_code == 422
        assert refused.json() == {
            "error": "missing_parameter",
            "error_message": "Missing required field: name",
        }
        assert not [r for r in fetch_records(path, "Accounts") if r["sync_key"] == "erp-2"]
        # A record deleted in Sugar comes back when the same sync_key is upserted again.
        delete_records(path, "Accounts", [record_id], datetime.now(UTC))
        assert http.patch("/Accounts/sync_key/erp-1", json={"name": "Kanal AG"}).status_code == 200
        assert fetch_records(path, "Accounts", [record_id])[0]["deleted"] == 0

        sim.record_faults["erp-4"] = ["edit_conflict"]
        bulk = http.post(
            "/bulk",
            json={
                "requests": [
                    {
                        "url": "/v11_24/Accounts/sync_key/erp-3",
                        "method": "PATCH",
                        "data": json.dumps({"name": "A"}),
                    },
                    {
                        "url": "/v11_24/Accounts/sync_key/erp-4",
                        "method": "PATCH",
                        "data": json.dumps({"name": "B"}),
                    },
                    {"url": "/v11_24/Accounts/sync_key/erp-5", "method": "PATCH", "data": json.dumps({})},
                    {
                        "url": "v11/integrate/Accounts/sync_key/erp-1",
                        "method": "PATCH",
                        "data": {"name": "C"},
                    },
                ]
            },
        )
        assert bulk.status_code == 200
        answers = bulk.json()
        assert [a["status"] for a in answers] == [201, 409, 422, 200]
        assert answers[1]["contents"]["error"] == "edit_conflict"
        assert answers[2]["contents"]["error"] == "missing_parameter"
        assert all(set(a) == {"contents", "headers", "status"} for a in answers)
        retried = http.post(
            "/bulk",
            json={
                "requests": [
                    {"url": "/v11_24/Accounts/sync_key/erp-4", "method": "PATCH", "data": '{"name": "B"}'}
                ]
            },
        )
        assert retried.json()[0]["status"] == 201  # the injected failure was for one attempt only
        keys = {r["sync_key"]: r["name"] for r in fetch_records(path, "Accounts") if r["sync_key"]}
        assert keys == {"erp-1": "C", "erp-3": "A", "erp-4": "B"}
        http.close()


def test_sandbox_contract_starts_with_fresh_credentials_and_a_write_case(tmp_path: Path) -> None:
    path = make_store(tmp_path / "sugar.sqlite")
    started = SANDBOX.start(path)
    try:
        env = started.env
        assert set(env) == {
            "SUGARCRM_BASE_URL",
            "SUGARCRM_USERNAME",
            "SUGARCRM_PASSWORD",
            "SUGARCRM_CLIENT_ID",
            "SUGARCRM_CLIENT_SECRET",
        }
        token = httpx.post(
            f"{env['SUGARCRM_BASE_URL']}{V}/oauth2/token",
            json=token_body(username=env["SUGARCRM_USERNAME"], password=env["SUGARCRM_PASSWORD"]),
        ).json()["access_token"]
        headers = {"OAuth-Token": token}
        case = SANDBOX.write_case(path)
        for record in case.accepted:
            body = {k: v for k, v in record.items() if k != case.external_id_field}
            url = (
                f"{env['SUGARCRM_BASE_URL']}{V}/{case.object_name}/sync_key/{record[case.external_id_field]}"
            )
            assert httpx.patch(url, json=body, headers=headers).status_code == 201
        for record in case.rejected:
            body = {k: v for k, v in record.items() if k != case.external_id_field}
            url = (
                f"{env['SUGARCRM_BASE_URL']}{V}/{case.object_name}/sync_key/{record[case.external_id_field]}"
            )
            refused = httpx.patch(url, json=body, headers=headers)
            assert refused.status_code == 422
            assert refused.json()["error"] == case.rejected_code
        assert SANDBOX.stage_values["closed_won"] == "Closed Won"
    finally:
        started.simulator.stop()


def test_a_put_by_id_updates_the_record_and_its_studio_fields_read_back(tmp_path: Path) -> None:
    path = make_store(tmp_path / "sugar.sqlite")
    with SugarSimulator(path, username=USER, password=PASSWORD) as sim:
        token = str(login(sim.base_url)["access_token"])
        with httpx.Client(base_url=sim.base_url + V, headers={"OAuth-Token": token}, timeout=10) as http:
            deal = http.get("/Opportunities", params={"max_num": "1"}).json()["records"][0]
            assert {"erp_order_number_c", "erp_invoice_numbers_c", "created_by", "modified_user_id"} <= set(
                deal
            )
            before = deal["date_modified"]
            time.sleep(1.1)  # Sugar stamps whole seconds
            changes = {
                "erp_order_number_c": "SO-24017",
                "erp_invoice_numbers_c": "INV-88001,INV-88002",
                "sales_stage": "Closed Won",
            }
            updated = http.put(f"/Opportunities/{deal['id']}", json=changes)
            assert updated.status_code == 200, updated.text
            assert updated.json()["erp_invoice_numbers_c"] == "INV-88001,INV-88002"

            # An ordinary filter on the custom field finds the record, changed and stamped.
            found = http.get(
                "/Opportunities",
                params={
                    "filter[0][erp_order_number_c]": "SO-24017",
                    "fields": "name,sales_stage,erp_order_number_c,erp_invoice_numbers_c,modified_user_id",
                },
            ).json()["records"]
            assert [r["id"] for r in found] == [deal["id"]]
            assert found[0]["sales_stage"] == "Closed Won"
            assert found[0]["erp_invoice_numbers_c"] == "INV-88001,INV-88002"
            assert found[0]["modified_user_id"] == "1"  # GET /me: the API user
            assert found[0]["date_modified"] > before
            # ... and an incremental read from before the save returns it.
            since = http.get(
                "/Opportunities", params={"filter[0][date_modified][$gt]": before, "fields": "id"}
            )
            assert deal["id"] in {r["id"] for r in since.json()["records"]}

            fields = http.get("/metadata", params={"type_filter": "modules", "module_filter": "Accounts"})
            custom = fields.json()["modules"]["Accounts"]["fields"]["erp_customer_number_c"]
            assert custom["source"] == "custom_fields"

            # An id Sugar does not have is not_found, and nothing is created.
            count = len(fetch_records(path, "Opportunities"))
            missing = http.put("/Opportunities/5f0c2e1a-0000-4000-8000-00000000dead", json=changes)
            assert missing.status_code == 404
            assert missing.json()["error"] == "not_found"
            assert len(fetch_records(path, "Opportunities")) == count
            blanked = http.put(f"/Opportunities/{deal['id']}", json={"name": ""})
            assert blanked.status_code == 422
            assert blanked.json()["error"] == "missing_parameter"


def test_cases_are_served_with_sugars_fields_values_and_metadata(client: httpx.Client, store: Path) -> None:
    cases, _ = list_all(client, "Cases", max_num="5", order_by="date_modified:asc")
    live = fetch_records(store, "Cases")
    assert len(live) > 0
    assert {c["id"] for c in cases} == {str(r["id"]) for r in live}
    numbers = [int(c["case_number"]) for c in cases]
    assert len(set(numbers)) == len(numbers)  # auto-increment: one number per case
    for case in cases:
        assert case["_module"] == "Cases"
        assert case["status"] in {"New", "Assigned", "Pending Input", "Closed", "Rejected", "Duplicate"}
        # status decides state: Open holds the open statuses, Closed the closed ones.
        assert case["state"] == (
            "Closed" if case["status"] in {"Closed", "Rejected", "Duplicate"} else "Open"
        )
        assert case["priority"] in {"P1", "P2", "P3"}
        assert case["type"] in {"Administration", "Product", "User"}
        assert case["source"] in {"Internal", "Forum", "Web", "InboundEmail", "Twitter"}
        assert case["account_id"]
        assert (case["state"] == "Closed") == bool(case["resolution"]) == bool(case["resolved_datetime"])
    accounts = {r["id"] for r in fetch_records(store, "Accounts")}
    assert {c["account_id"] for c in cases} <= accounts
    fields = client.get("/metadata", params={"type_filter": "modules", "module_filter": "Cases"}).json()
    definitions = fields["modules"]["Cases"]["fields"]
    assert definitions["zendesk_ticket_id_c"]["source"] == "custom_fields"
    assert definitions["status"]["type"] == "enum"
    assert definitions["work_log"]["type"] == definitions["resolution"]["type"] == "text"
    assert "source" not in definitions["resolution"]  # a built-in field, not a Studio one


def test_cases_are_read_incrementally_with_their_deletes(tmp_path: Path) -> None:
    path = make_store(tmp_path / "sugar.sqlite")
    with SugarSimulator(path, username=USER, password=PASSWORD) as sim:
        token = str(login(sim.base_url)["access_token"])
        with httpx.Client(base_url=sim.base_url + V, headers={"OAuth-Token": token}, timeout=10) as http:
            first, _ = list_all(http, "Cases", max_num="4", order_by="date_modified:asc")
            mark = max(c["date_modified"] for c in first)
            gone = first[0]["id"]
            delete_records(path, "Cases", [gone], datetime.now(UTC))
            window = {"filter[0][date_modified][$gt]": mark, "order_by": "date_modified:asc"}
            changed, _ = list_all(http, "Cases", max_num="4", deleted="true", **window)
            assert [(c["id"], c["deleted"]) for c in changed] == [(gone, True)]
            assert gone not in {c["id"] for c in list_all(http, "Cases", max_num="50")[0]}


def test_a_case_update_by_id_writes_status_resolution_replies_and_the_ticket(tmp_path: Path) -> None:
    """What the service-desk flow writes back into a Sugar case, through /bulk like the engine does."""
    path = make_store(tmp_path / "sugar.sqlite")
    with SugarSimulator(path, username=USER, password=PASSWORD) as sim:
        token = str(login(sim.base_url)["access_token"])
        with httpx.Client(base_url=sim.base_url + V, headers={"OAuth-Token": token}, timeout=10) as http:
            case = next(c for c in list_all(http, "Cases", max_num="50")[0] if c["state"] == "Open")
            changes = {
                "status": "Closed",
                "resolution": "Replaced the damaged unit.",
                "work_log": "2026-11-25 10:02 Agent: we are sending a replacement today.",
                "zendesk_ticket_id_c": "4711",
                "case_number": "999999",  # auto-increment: Sugar ignores it
            }
            bulk = http.post(
                "/bulk",
                json={
                    "requests": [
                        {
                            "url": f"/v11_24/Cases/{case['id']}?fields=id",
                            "method": "PUT",
                            "data": json.dumps(changes),
                        },
                        {
                            "url": "/v11_24/Cases/5f0c2e1a-0000-4000-8000-00000000dead?fields=id",
                            "method": "PUT",
                            "data": json.dumps(changes),
                        },
                    ]
                },
            )
            assert bulk.status_code == 200
            assert [part["status"] for part in bulk.json()] == [200, 404]
            assert bulk.json()[1]["contents"]["error"] == "not_found"
            after = http.get(f"/Cases/{case['id']}").json()
            assert after["status"] == "Closed"
            assert after["state"] == "Closed"  # the status's state follows
            assert after["resolved_datetime"]  # stamped on closing
            assert after["resolution"] == "Replaced the damaged unit."
            assert after["work_log"].startswith("2026-11-25 10:02 Agent:")
            assert after["zendesk_ticket_id_c"] == "4711"
            assert after["case_number"] == case["case_number"]
            assert after["date_modified"] >= case["date_modified"]
            assert len(fetch_records(path, "Cases")) == len(list_all(http, "Cases", max_num="50")[0])


# --- leads ---------------------------------------------------------------------------------------

LEAD_STATUSES = {"New", "Assigned", "In Process", "Converted", "Recycled", "Dead"}
LEAD_SOURCES = {
    "Cold Call",
    "Existing Customer",
    "Self Generated",
    "Employee",
    "Partner",
    "Public Relations",
    "Direct Mail",
    "Conference",
    "Trade Show",
    "Web Site",
    "Word of mouth",
    "Email",
    "Campaign",
    "Support Portal User",
    "Other",
}


def test_leads_are_served_with_sugars_fields_values_and_metadata(client: httpx.Client, store: Path) -> None:
    leads, _ = list_all(client, "Leads", max_num="5", order_by="date_modified:asc")
    live = fetch_records(store, "Leads")
    assert len(live) > 0
    assert {lead["id"] for lead in leads} == {str(r["id"]) for r in live}
    contacts = {str(r["id"]) for r in fetch_records(store, "Contacts", include_deleted=True)}
    for lead in leads:
        assert lead["_module"] == "Leads"
        assert lead["status"] in LEAD_STATUSES
        assert lead["lead_source"] in LEAD_SOURCES | {""}
        assert lead["last_name"]
        # Converting sets status Converted, converted and the contact it became; the lead stays.
        assert lead["converted"] is (lead["status"] == "Converted")
        if lead["converted"]:
            assert lead["contact_id"] in contacts
        else:
            assert lead["contact_id"] == ""
    assert {lead["status"] for lead in leads} >= {"New", "Converted", "Dead"}
    fields = client.get("/metadata", params={"type_filter": "modules", "module_filter": "Leads"}).json()
    definitions = fields["modules"]["Leads"]["fields"]
    assert definitions["status"]["type"] == definitions["lead_source"]["type"] == "enum"
    assert definitions["converted"]["type"] == "bool"
    assert definitions["contact_id"]["type"] == "id"
    assert definitions["last_name"]["required"] is True
    assert not any("source" in d for d in definitions.values())  # built-in fields, no Studio ones


def test_leads_are_read_incrementally_with_a_conversion_and_a_delete(tmp_path: Path) -> None:
    path = make_store(tmp_path / "sugar.sqlite")
    with SugarSimulator(path, username=USER, password=PASSWORD) as sim:
        token = str(login(sim.base_url)["access_token"])
        with httpx.Client(base_url=sim.base_url + V, headers={"OAuth-Token": token}, timeout=10) as http:
            first, _ = list_all(http, "Leads", max_num="4", order_by="date_modified:asc")
            mark = max(lead["date_modified"] for lead in first)
            open_leads = [lead["id"] for lead in first if lead["status"] != "Converted"]
            converted, gone = open_leads[:2]
            contact = sorted(str(r["id"]) for r in fetch_records(path, "Contacts"))[0]
            now = datetime.now(UTC)
            touch_records(
                path,
                "Leads",
                [converted],
                now,
                {"status": "Converted", "converted": 1, "contact_id": contact},
            )
            delete_records(path, "Leads", [gone], now + timedelta(seconds=1))
            window = {"filter[0][date_modified][$gt]": mark, "order_by": "date_modified:asc"}
            changed, _ = list_all(http, "Leads", max_num="4", deleted="true", **window)
            assert [(lead["id"], lead["deleted"]) for lead in changed] == [(converted, False), (gone, True)]
            assert (changed[0]["status"], changed[0]["converted"], changed[0]["contact_id"]) == (
                "Converted",
                True,
                contact,
            )
            assert gone not in {lead["id"] for lead in list_all(http, "Leads", max_num="50")[0]}
