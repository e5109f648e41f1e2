"""The Salesforce simulator, driven over real HTTP the way a connector drives Salesforce."""

from __future__ import annotations

import base64
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from crm_pipelines_sandbox.data import SandboxLayout, generate_sandbox
from crm_pipelines_sandbox.simulators import Faults, RateLimit, SalesforceSimulator
from crm_pipelines_sandbox.simulators.store import add_field, sf_datetime, touch_records

AS_OF = date(2026, 11, 25)
API = "/services/data/v62.0"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> SandboxLayout:
    return generate_sandbox(tmp_path_factory.mktemp("sf"), contacts=2000, seed=11, as_of=AS_OF)


@pytest.fixture(scope="module")
def sim(sandbox: SandboxLayout) -> Iterator[SalesforceSimulator]:
    with SalesforceSimulator(sandbox.salesforce_store) as running:
        yield running


def login(client: httpx.Client, sim: SalesforceSimulator) -> str:
    response = client.post(
        "/services/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": sim.client_id,
            "client_secret": sim.client_secret,
        },
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    client.headers["Authorization"] = f"Bearer {token}"
    return token


@pytest.fixture
def client(sim: SalesforceSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.base_url, timeout=10) as http:
        login(http, sim)
        yield http


def store_rows(path: Path, sql: str) -> list[sqlite3.Row]:
    with closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute(sql).fetchall()


def query_all_pages(
    client: httpx.Client, soql: str, *, endpoint: str = "query", batch: int | None = None
) -> list[dict[str, Any]]:
    headers = {"Sforce-Query-Options": f"batchSize={batch}"} if batch else {}
    response = client.get(f"{API}/{endpoint}", params={"q": soql}, headers=headers)
    assert response.status_code == 200, response.text
    page = response.json()
    records = list(page["records"])
    total = page["totalSize"]
    while not page["done"]:
        assert batch is None or len(page["records"]) <= batch
        response = client.get(page["nextRecordsUrl"])
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["totalSize"] == total
        records.extend(page["records"])
    assert "nextRecordsUrl" not in page
    assert len(records) == total
    return records


def test_client_credentials_token_response(sim: SalesforceSimulator) -> None:
    with httpx.Client(base_url=sim.base_url) as http:
        response = http.post(
            "/services/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": sim.client_id,
                "client_secret": sim.client_secret,
            },
        )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["instance_url"] == sim.base_url
    assert body["issued_at"].isdigit()
    assert body["id"].startswith("https://login.salesforce.com/id/00D")
    assert base64.b64decode(body["signature"])
    assert body["access_token"].startswith("00D")


def test_bad_credentials_and_grants_are_refused_like_salesforce(sim: SalesforceSimulator) -> None:
    with httpx.Client(base_url=sim.base_url) as http:
        wrong = http.post(
            "/services/oauth2/token",
            data={"grant_type": "client_credentials", "client_id": sim.client_id, "client_secret": "nope"},
        )
        assert wrong.status_code == 400
        assert wrong.json()["error"] == "invalid_client"
        assert wrong.json()["error_description"]
        unsupported = http.post("/services/oauth2/token", data={"grant_type": "magic"})
        assert unsupported.status_code == 400
        assert unsupported.json()["error"] == "unsupported_grant_type"
        refreshed = http.post(
            "/services/oauth2/token",
            data={
                "grant_type": "refresh_token",
                "client_id": sim.client_id,
                "refresh_token": sim.refresh_token,
            },
        )
        assert refreshed.status_code == 200
        assert refreshed.json()["access_token"]
        stale = http.post(
            "/services/oauth2/token",
            data={"grant_type": "refresh_token", "client_id": sim.client_id, "refresh_token": "old"},
        )
        assert stale.status_code == 400
        assert stale.json()["error"] == "invalid_grant"
        basic = base64.b64encode(f"{sim.client_id}:{sim.client_secret}".encode()).decode()
        via_header = http.post(
            "/services/oauth2/token",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": f"Basic {basic}"},
        )
        assert via_header.status_code == 200


def test_missing_unknown_and_expired_tokens_get_401(sandbox: SandboxLayout) -> None:
    with (
        SalesforceSimulator(sandbox.salesforce_store, token_ttl=0.3) as short,
        httpx.Client(base_url=short.base_url) as http,
    ):
        url = f"{API}/query"
        params = {"q": "SELECT Id FROM Account LIMIT 1"}
        for headers in ({}, {"Authorization": "Bearer 00Dfake!token"}):
            response = http.get(url, params=params, headers=headers)
            assert response.status_code == 401
            assert response.json() == [
                {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
            ]
        login(http, short)
        assert http.get(url, params=params).status_code == 200
        time.sleep(0.4)
        assert http.get(url, params=params).status_code == 401
        login(http, short)
        assert http.get(url, params=params).status_code == 200
        short.revoke_tokens()
        assert http.get(url, params=params).status_code == 401


def test_paging_through_contacts_returns_exactly_the_store(
    client: httpx.Client, sandbox: SandboxLayout
) -> None:
    records = query_all_pages(client, "SELECT Id, Email, IsDeleted FROM Contact", batch=200)
    live = {
        r["Id"]
        for r in store_rows(sandbox.salesforce_store, 'SELECT "Id" FROM "Contact" WHERE "IsDeleted" = 0')
    }
    ids = [r["Id"] for r in records]
    assert len(ids) == len(set(ids)) == len(live) > 1000
    assert set(ids) == live
    assert all(
        r["attributes"] == {"type": "Contact", "url": f"{API}/sobjects/Contact/{r['Id']}"} for r in records
    )
    assert all(r["IsDeleted"] is False for r in records)
    default_pages = client.get(f"{API}/query", params={"q": "SELECT Id FROM Contact"}).json()
    assert len(default_pages["records"]) == min(2000, len(live))


def test_query_all_includes_deleted_rows(client: httpx.Client, sandbox: SandboxLayout) -> None:
    everything = query_all_pages(client, "SELECT Id, IsDeleted FROM Account", endpoint="queryAll", batch=200)
    stored = store_rows(sandbox.salesforce_store, 'SELECT "Id", "IsDeleted" FROM "Account"')
    assert {r["Id"] for r in everything} == {r["Id"] for r in stored}
    deleted = {r["Id"] for r in everything if r["IsDeleted"] is True}
    assert deleted
    assert deleted == {r["Id"] for r in stored if r["IsDeleted"]}
    visible = query_all_pages(client, "SELECT Id FROM Account")
    assert {r["Id"] for r in visible} == {r["Id"] for r in stored if not r["IsDeleted"]}


def test_where_order_by_and_limit(client: httpx.Client, sandbox: SandboxLayout) -> None:
    since = "2026-06-01T00:00:00.000+0000"
    soql = (
        "SELECT Id, SystemModstamp, Amount, StageName FROM Opportunity "
        "WHERE SystemModstamp >= 2026-06-01T02:00:00+02:00 AND IsClosed = true "
        "ORDER BY SystemModstamp DESC, Id ASC LIMIT 25"
    )
    records = query_all_pages(client, soql)
    expected = store_rows(
        sandbox.salesforce_store,
        f"""SELECT "Id" FROM "Opportunity" WHERE "SystemModstamp" >= '{since}' AND "IsClosed" = 1
        AND "IsDeleted" = 0 ORDER BY "SystemModstamp" DESC, "Id" ASC LIMIT 25""",
    )
    assert [r["Id"] for r in records] == [r["Id"] for r in expected]
    assert len(records) == 25
    stamps = [r["SystemModstamp"] for r in records]
    assert stamps == sorted(stamps, reverse=True)
    assert all(r["StageName"].startswith("Closed") for r in records)
    assert all(r["Amount"] is None or isinstance(r["Amount"], float) for r in records)


def test_filters_behave_like_soql(client: httpx.Client, sandbox: SandboxLayout) -> None:
    accounts = store_rows(sandbox.salesforce_store, 'SELECT * FROM "Account" WHERE "IsDeleted" = 0')
    named = next(r for r in accounts if r["Name"])

    def ids(soql: str) -> set[str]:
        return {r["Id"] for r in query_all_pages(client, soql)}

    # String equality ignores case, as in Salesforce.
    assert named["Id"] in ids(f"SELECT Id FROM Account WHERE Name = '{named['Name'].swapcase()}'")
    # != also matches records whose field is null.
    without_site = {r["Id"] for r in accounts if r["Website"] is None}
    assert without_site <= ids("SELECT Id FROM Account WHERE Website != 'x'")
    assert ids("SELECT Id FROM Account WHERE Website = null") == without_site
    # IN compares without case too: 'germany' is in ('Germany', 'DE').
    assert ids("SELECT Id FROM Account WHERE BillingCountry IN ('Germany', 'DE')") == {
        r["Id"] for r in accounts if r["BillingCountry"].lower() in ("germany", "de")
    }
    assert ids(
        "SELECT Id FROM Account WHERE Name LIKE 'n%' OR (AnnualRevenue > 100000000 AND NOT Industry = null)"
    ) == {
        r["Id"]
        for r in accounts
        if (r["Name"] or "").lower().startswith("n")
        or (r["AnnualRevenue"] is not None and r["AnnualRevenue"] > 100_000_000 and r["Industry"] is not None)
    }
    count = client.get(
        f"{API}/query", params={"q": "SELECT COUNT() FROM Account WHERE IsDeleted = false"}
    ).json()
    assert count == {"totalSize": len(accounts), "done": True, "records": []}


def test_json_types_follow_the_field_types(client: httpx.Client) -> None:
    records = query_all_pages(
        client, "SELECT Id, AnnualRevenue, IsDeleted, CreatedDate, Name FROM Account LIMIT 200"
    )
    assert any(isinstance(r["AnnualRevenue"], float) for r in records)
    assert any(r["AnnualRevenue"] is None for r in records)
    assert all(isinstance(r["IsDeleted"], bool) for r in records)
    assert all(datetime.strptime(r["CreatedDate"], "%Y-%m-%dT%H:%M:%S.%f%z") for r in records)
    assert list(records[0]) == ["attributes", "Id", "AnnualRevenue", "IsDeleted", "CreatedDate", "Name"]


@pytest.mark.parametrize(
    ("soql", "code", "fragment"),
    [
        ("SELECT Id, Foo FROM Account", "INVALID_FIELD", "No such column 'Foo' on entity 'Account'"),
        ("SELECT Id FROM Account WHERE Bar = 1", "INVALID_FIELD", "No such column 'Bar'"),
        ("SELECT Id FROM Widget__c", "INVALID_TYPE", "sObject type 'Widget__c' is not supported"),
        ("SELECT Id FROM Account WHERE", "MALFORMED_QUERY", ""),
        ("SELECT FROM Account", "MALFORMED_QUERY", ""),
        ("SELECT Id FROM Account LIMIT ten", "MALFORMED_QUERY", ""),
        (
            "SELECT Id FROM Account WHERE CreatedDate > '2026-01-01'",
            "INVALID_FIELD",
            "must be of type dateTime",
        ),
        ("SELECT Id FROM Account WHERE Name = 5", "INVALID_FIELD", "must be of type string"),
    ],
)
def test_bad_queries_get_salesforce_errors(client: httpx.Client, soql: str, code: str, fragment: str) -> None:
    response = client.get(f"{API}/query", params={"q": soql})
    assert response.status_code == 400
    [error] = response.json()
    assert error["errorCode"] == code
    assert fragment in error["message"]


def test_unknown_query_locator(client: httpx.Client) -> None:
    response = client.get(f"{API}/query/01gQy0000000000ZZZ-2000")
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_locator_pages_stay_consistent_while_records_change(sandbox: SandboxLayout, tmp_path: Path) -> None:
    store = tmp_path / "salesforce.sqlite"
    store.write_bytes(sandbox.salesforce_store.read_bytes())
    with SalesforceSimulator(store) as sim, httpx.Client(base_url=sim.base_url) as http:
        login(http, sim)
        soql = "SELECT Id, SystemModstamp FROM Contact ORDER BY SystemModstamp"
        first = http.get(
            f"{API}/query", params={"q": soql}, headers={"Sforce-Query-Options": "batchSize=200"}
        ).json()
        # Users edit the records already read; an OFFSET-based cursor would serve them again.
        touched = [r["Id"] for r in first["records"]]
        assert touch_records(store, "Contact", touched, datetime(2026, 11, 25, 12, tzinfo=UTC)) == 200
        records = list(first["records"])
        page = first
        while not page["done"]:
            page = http.get(page["nextRecordsUrl"]).json()
            records.extend(page["records"])
        ids = [r["Id"] for r in records]
        assert len(ids) == len(set(ids)) == first["totalSize"]
        # A new query sees the edits.
        fresh = http.get(
            f"{API}/query",
            params={
                "q": f"SELECT Id FROM Contact WHERE SystemModstamp >= {sf_datetime(datetime(2026, 11, 25, 12, tzinfo=UTC))[:19]}Z"
            },
        ).json()
        assert set(touched) <= {r["Id"] for r in fresh["records"]}


def test_fields_added_in_the_store_are_served(sandbox: SandboxLayout, tmp_path: Path) -> None:
    store = tmp_path / "salesforce.sqlite"
    store.write_bytes(sandbox.salesforce_store.read_bytes())
    with SalesforceSimulator(store) as sim, httpx.Client(base_url=sim.base_url) as http:
        login(http, sim)
        missing = http.get(f"{API}/query", params={"q": "SELECT Id, Tier__c FROM Account LIMIT 1"})
        assert missing.status_code == 400
        add_field(store, "Account", "Tier__c", "double", default=2)
        added = http.get(
            f"{API}/query", params={"q": "SELECT Id, Tier__c FROM Account WHERE Tier__c = 2 LIMIT 1"}
        )
        assert added.status_code == 200
        assert added.json()["records"][0]["Tier__c"] == 2.0
        describe = http.get(f"{API}/sobjects/Account/describe").json()
        assert {"name": "Tier__c", "type": "double", "nillable": True, "label": "Tier__c"} in describe[
            "fields"
        ]


def test_rate_limit_answers_429_with_retry_after(sandbox: SandboxLayout) -> None:
    with (
        SalesforceSimulator(sandbox.salesforce_store, rate_limit=RateLimit(3, 60)) as sim,
        httpx.Client(base_url=sim.base_url) as http,
    ):
        login(http, sim)
        statuses = [http.get(f"{API}/limits").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        limited = http.get(f"{API}/limits")
        assert limited.status_code == 429
        assert int(limited.headers["Retry-After"]) >= 1
        assert limited.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
        assert limited.headers["Sforce-Limit-Info"].startswith("api-usage=")


def test_every_response_reports_api_usage(client: httpx.Client) -> None:
    before = client.get(f"{API}/limits")
    after = client.get(f"{API}/query", params={"q": "SELECT Id FROM Account LIMIT 1"})
    used_before = int(before.headers["Sforce-Limit-Info"].split("=")[1].split("/")[0])
    used_after, limit = map(int, after.headers["Sforce-Limit-Info"].split("=")[1].split("/"))
    assert used_after == used_before + 1
    assert before.json()["DailyApiRequests"]["Max"] == limit
    assert "Sforce-Limit-Info" in client.get("/services/data/").headers


def test_faults_can_be_injected(sandbox: SandboxLayout) -> None:
    faults = Faults()
    with (
        SalesforceSimulator(sandbox.salesforce_store, faults=faults) as sim,
        httpx.Client(base_url=sim.base_url) as http,
    ):
        login(http, sim)
        faults.fail_next(503, 500, 429)
        responses = [http.get(f"{API}/limits") for _ in range(4)]
        assert [r.status_code for r in responses] == [503, 500, 429, 200]
        assert responses[0].json()[0]["errorCode"] == "SERVER_UNAVAILABLE"
        assert "Retry-After" in responses[2].headers
        faults.latency_seconds = 0.2
        started = time.monotonic()
        assert http.get(f"{API}/limits").status_code == 200
        assert time.monotonic() - started >= 0.2


def test_connectivity_endpoints(client: httpx.Client, sim: SalesforceSimulator) -> None:
    versions = httpx.get(f"{sim.base_url}/services/data/").json()
    assert {"label": "Winter '25", "url": API, "version": "62.0"} in versions
    resources = client.get(f"{API}/").json()
    assert resources["query"] == f"{API}/query"
    assert client.get("/services/data/v12.0/limits").status_code == 404
    objects = {o["name"]: o["keyPrefix"] for o in client.get(f"{API}/sobjects").json()["sobjects"]}
    assert {
        "Account": "001",
        "Contact": "003",
        "Opportunity": "006",
        "Lead": "00Q",
    }.items() <= objects.items()
    some = client.get(f"{API}/query", params={"q": "SELECT Id, Name FROM Account LIMIT 1"}).json()["records"][
        0
    ]
    record = client.get(some["attributes"]["url"], params={"fields": "Name,IsDeleted"}).json()
    assert record == {"attributes": some["attributes"], "Name": some["Name"], "IsDeleted": False}
    assert client.get(f"{API}/sobjects/Account/001Qy0000000000AAA").status_code == 404


def test_cases_are_served_as_the_case_object_documents_them(
    client: httpx.Client, sandbox: SandboxLayout
) -> None:
    fields = "Id, CaseNumber, AccountId, ContactId, Subject, Status, Priority, Origin, IsClosed, ClosedDate, IsDeleted"
    live = query_all_pages(
        client, f"SELECT {fields} FROM Case ORDER BY SystemModstamp ASC, Id ASC", batch=200
    )
    everything = query_all_pages(client, f"SELECT {fields} FROM Case", endpoint="queryAll", batch=200)
    stored = store_rows(sandbox.salesforce_store, 'SELECT "Id", "IsDeleted" FROM "Case"')
    assert {r["Id"] for r in everything} == {r["Id"] for r in stored}
    assert {r["Id"] for r in live} == {r["Id"] for r in stored if not r["IsDeleted"]}
    assert 50 < len(stored) < 400  # a share of ~400 accounts with one to three cases each: modest
    accounts = {r["Id"] for r in store_rows(sandbox.salesforce_store, 'SELECT "Id" FROM "Account"')}
    numbers = [r["CaseNumber"] for r in everything]
    assert len(set(numbers)) == len(numbers)
    for case in live:
        assert case["Id"].startswith("500")
        assert case["AccountId"] in accounts
        assert case["Status"] in {"New", "Working", "Escalated", "Closed"}
        assert case["Priority"] in {"High", "Medium", "Low"}
        assert case["Origin"] in {"Phone", "Email", "Web"}
        assert case["IsClosed"] is (case["Status"] == "Closed")
        assert (case["ClosedDate"] is not None) is case["IsClosed"]
    described = client.get(f"{API}/sobjects/Case/describe").json()
    assert described["keyPrefix"] == "500"
    assert {"CaseNumber", "IsClosed", "ClosedDate", "Reason"} <= {f["name"] for f in described["fields"]}


def test_closing_a_case_by_id_sets_is_closed_and_closed_date(sandbox: SandboxLayout, tmp_path: Path) -> None:
    store = tmp_path / "salesforce.sqlite"
    store.write_bytes(sandbox.salesforce_store.read_bytes())
    with SalesforceSimulator(store) as sim, httpx.Client(base_url=sim.base_url, timeout=10) as http:
        login(http, sim)
        soql = "SELECT Id, CaseNumber, SystemModstamp FROM Case WHERE IsClosed = false AND IsDeleted = false"
        case = query_all_pages(http, soql)[0]
        closed = http.patch(f"{API}/sobjects/Case/{case['Id']}", json={"Status": "Closed", "Priority": "Low"})
        assert closed.status_code == 204, closed.text
        after = http.get(f"{API}/sobjects/Case/{case['Id']}").json()
        assert (after["Status"], after["Priority"], after["IsClosed"]) == ("Closed", "Low", True)
        assert after["ClosedDate"] is not None
        assert after["SystemModstamp"] > case["SystemModstamp"]
        assert after["CaseNumber"] == case["CaseNumber"]
        # The auto-number and the closed flags are the platform's: a write naming them is refused.
        refused = http.patch(
            f"{API}/composite/sobjects",
            json={"records": [{"attributes": {"type": "Case"}, "Id": case["Id"], "IsClosed": False}]},
        ).json()
        assert refused[0]["success"] is False
        assert refused[0]["errors"][0]["statusCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
        reopened = http.patch(f"{API}/sobjects/Case/{case['Id']}", json={"Status": "Working"})
        assert reopened.status_code == 204
        again = http.get(f"{API}/sobjects/Case/{case['Id']}").json()
        assert (again["IsClosed"], again["ClosedDate"]) == (False, None)
