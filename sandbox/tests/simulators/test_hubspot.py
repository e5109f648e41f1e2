"""The HubSpot simulator, driven over real HTTP the way a connector drives the CRM v3 API."""

from __future__ import annotations

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
from crm_pipelines_sandbox.simulators import Faults, HubSpotSimulator, RateLimit
from crm_pipelines_sandbox.simulators.store import delete_records, insert_records, touch_records

AS_OF = date(2026, 11, 25)
RATE_HEADERS = (
    "X-HubSpot-RateLimit-Daily",
    "X-HubSpot-RateLimit-Daily-Remaining",
    "X-HubSpot-RateLimit-Interval-Milliseconds",
    "X-HubSpot-RateLimit-Max",
    "X-HubSpot-RateLimit-Remaining",
)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> SandboxLayout:
    return generate_sandbox(tmp_path_factory.mktemp("hs"), contacts=2000, seed=5, as_of=AS_OF)


@pytest.fixture(scope="module")
def sim(sandbox: SandboxLayout) -> Iterator[HubSpotSimulator]:
    with HubSpotSimulator(sandbox.hubspot_store) as running:
        yield running


@pytest.fixture
def client(sim: HubSpotSimulator) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {sim.access_token}"}
    with httpx.Client(base_url=sim.base_url, headers=headers, timeout=10) as http:
        yield http


def store_rows(path: Path, sql: str) -> list[sqlite3.Row]:
    with closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute(sql).fetchall()


def list_all(client: httpx.Client, object_type: str, **params: str) -> tuple[list[dict[str, Any]], int]:
    """Every record by following paging.next.after; returns the records and the number of pages."""
    records: list[dict[str, Any]] = []
    pages = 0
    after: str | None = None
    while True:
        query = dict(params, **({"after": after} if after else {}))
        response = client.get(f"/crm/v3/objects/{object_type}", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        records.extend(body["results"])
        if "paging" not in body:
            return records, pages
        after = body["paging"]["next"]["after"]


def test_header_names_are_case_insensitive(sim: HubSpotSimulator) -> None:
    response = httpx.get(
        f"{sim.base_url}/crm/v3/objects/contacts", headers={"authorization": f"bearer {sim.access_token}"}
    )
    assert response.status_code == 200


def test_missing_or_wrong_token_gets_hubspots_401(sim: HubSpotSimulator) -> None:
    for headers in ({}, {"Authorization": "Bearer pat-eu1-wrong"}, {"Authorization": sim.access_token}):
        response = httpx.get(f"{sim.base_url}/crm/v3/objects/contacts", headers=headers)
        assert response.status_code == 401
        body = response.json()
        assert body["status"] == "error"
        assert body["category"] == "INVALID_AUTHENTICATION"
        assert body["message"].startswith("Authentication credentials not found")
        assert len(body["correlationId"]) == 36


def test_paging_through_contacts_returns_exactly_the_store(
    client: httpx.Client, sandbox: SandboxLayout
) -> None:
    records, pages = list_all(client, "contacts", limit="100")
    live = [r["id"] for r in store_rows(sandbox.hubspot_store, "SELECT id FROM contacts WHERE archived = 0")]
    assert [r["id"] for r in records] == [str(i) for i in sorted(live)]
    assert pages == -(-len(live) // 100)
    assert all(r["archived"] is False for r in records)
    assert all(set(r) == {"id", "properties", "createdAt", "updatedAt", "archived"} for r in records)


def test_next_link_and_opaque_cursor(client: httpx.Client) -> None:
    first = client.get("/crm/v3/objects/companies", params={"limit": "5", "properties": "name"}).json()
    assert len(first["results"]) == 5
    following = first["paging"]["next"]
    assert not following["after"].isdigit()  # an opaque cursor, not an id to compute with
    by_link = client.get(following["link"]).json()
    by_after = client.get(
        "/crm/v3/objects/companies", params={"limit": "5", "properties": "name", "after": following["after"]}
    ).json()
    assert by_link == by_after
    assert int(by_link["results"][0]["id"]) > int(first["results"][-1]["id"])
    bad = client.get("/crm/v3/objects/companies", params={"after": "%%%"})
    assert bad.status_code == 400
    assert bad.json()["category"] == "VALIDATION_ERROR"


def test_limit_defaults_to_10_and_is_capped_at_100(client: httpx.Client) -> None:
    assert len(client.get("/crm/v3/objects/contacts").json()["results"]) == 10
    assert len(client.get("/crm/v3/objects/contacts", params={"limit": "500"}).json()["results"]) == 100
    assert client.get("/crm/v3/objects/contacts", params={"limit": "ten"}).status_code == 400


def test_properties_selection(client: httpx.Client, sandbox: SandboxLayout) -> None:
    default = client.get("/crm/v3/objects/contacts", params={"limit": "3"}).json()["results"]
    assert set(default[0]["properties"]) == {
        "createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"
    }  # fmt: skip
    chosen = client.get(
        "/crm/v3/objects/contacts", params={"limit": "50", "properties": "phone,country,no_such_property"}
    ).json()["results"]
    for record in chosen:
        assert set(record["properties"]) == {
            "phone",
            "country",
            "createdate",
            "lastmodifieddate",
            "hs_object_id",
        }
        assert record["properties"]["hs_object_id"] == record["id"]
        assert record["properties"]["lastmodifieddate"] == record["updatedAt"]
        assert all(v is None or isinstance(v, str) for v in record["properties"].values())
    assert any(r["properties"]["phone"] is None for r in chosen)
    # Numbers are strings too, as HubSpot sends them; repeated parameters work like a list.
    deals = client.get(
        "/crm/v3/objects/deals",
        params=[("properties", "amount"), ("properties", "dealstage"), ("limit", "50")],
    ).json()["results"]
    assert any(isinstance(d["properties"]["amount"], str) for d in deals)
    assert all("dealstage" in d["properties"] for d in deals)


def test_deal_associations_name_their_company(client: httpx.Client, sandbox: SandboxLayout) -> None:
    deals, _ = list_all(client, "deals", limit="100", associations="companies")
    stored = {
        str(r["id"]): r["company_id"]
        for r in store_rows(sandbox.hubspot_store, "SELECT id, company_id FROM deals")
    }
    assert deals
    for deal in deals:
        [link] = deal["associations"]["companies"]["results"]
        assert link == {"id": str(stored[deal["id"]]), "type": "deal_to_company"}
    without = client.get("/crm/v3/objects/deals", params={"limit": "5"}).json()["results"]
    assert all("associations" not in d for d in without)


def test_archived_true_returns_only_archived(client: httpx.Client, sandbox: SandboxLayout) -> None:
    archived, _ = list_all(client, "contacts", limit="100", archived="true")
    expected = {
        str(r[0]) for r in store_rows(sandbox.hubspot_store, "SELECT id FROM contacts WHERE archived = 1")
    }
    assert archived
    assert {r["id"] for r in archived} == expected
    assert all(r["archived"] is True and r["archivedAt"] for r in archived)


def test_rate_limit_headers_on_every_response(client: httpx.Client) -> None:
    first = client.get("/crm/v3/objects/deals", params={"limit": "1"})
    second = client.get("/account-info/v3/details")
    for response in (first, second):
        assert all(name in response.headers for name in RATE_HEADERS)
        assert response.headers["X-HubSpot-Correlation-Id"]
    assert int(second.headers["X-HubSpot-RateLimit-Daily-Remaining"]) == (
        int(first.headers["X-HubSpot-RateLimit-Daily-Remaining"]) - 1
    )
    assert second.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    details = second.json()
    assert isinstance(details["portalId"], int)
    assert details["timeZone"]
    assert details["companyCurrency"]


def test_rate_limit_answers_429_with_retry_after(sandbox: SandboxLayout) -> None:
    with (
        HubSpotSimulator(sandbox.hubspot_store, rate_limit=RateLimit(4, 1.0)) as sim,
        httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {sim.access_token}"}) as http,
    ):
        responses = [http.get("/crm/v3/objects/companies", params={"limit": "1"}) for _ in range(5)]
        assert [r.status_code for r in responses] == [200, 200, 200, 200, 429]
        assert [r.headers["X-HubSpot-RateLimit-Remaining"] for r in responses] == ["3", "2", "1", "0", "0"]
        limited = responses[-1]
        assert int(limited.headers["Retry-After"]) >= 1
        body = limited.json()
        assert body["errorType"] == "RATE_LIMIT"
        assert body["policyName"] == "SECONDLY"
        assert body["status"] == "error"
        assert body["correlationId"]
        time.sleep(1.05)
        assert http.get("/crm/v3/objects/companies", params={"limit": "1"}).status_code == 200


def test_faults_can_be_injected(sandbox: SandboxLayout) -> None:
    faults = Faults()
    with (
        HubSpotSimulator(sandbox.hubspot_store, faults=faults) as sim,
        httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {sim.access_token}"}) as http,
    ):
        faults.fail_next(429, 503)
        codes = [http.get("/crm/v3/objects/deals").status_code for _ in range(3)]
        assert codes == [429, 503, 200]
        faults.error_rate = 1.0
        faults.statuses = (500,)
        assert http.get("/crm/v3/objects/deals").json()["category"] == "INTERNAL_ERROR"
        faults.clear()
        assert http.get("/crm/v3/objects/deals").status_code == 200


def test_store_changes_are_served_without_restart(sandbox: SandboxLayout, tmp_path: Path) -> None:
    store = tmp_path / "hubspot.sqlite"
    store.write_bytes(sandbox.hubspot_store.read_bytes())
    with (
        HubSpotSimulator(store) as sim,
        httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {sim.access_token}"}) as http,
    ):
        first = http.get("/crm/v3/objects/companies", params={"limit": "2"}).json()["results"]
        edited, removed = first[0]["id"], first[1]["id"]
        at = datetime(2026, 11, 25, 18, 30, 5, 123000, tzinfo=UTC)
        touch_records(store, "companies", [edited], at, {"name": "Renamed GmbH"})
        delete_records(store, "companies", [removed], at)
        record = http.get(f"/crm/v3/objects/companies/{edited}", params={"properties": "name"}).json()
        assert record["properties"]["name"] == "Renamed GmbH"
        assert (
            record["updatedAt"] == record["properties"]["hs_lastmodifieddate"] == "2026-11-25T18:30:05.123Z"
        )
        assert http.get(f"/crm/v3/objects/companies/{removed}").status_code == 404
        archived = http.get(f"/crm/v3/objects/companies/{removed}", params={"archived": "true"}).json()
        assert archived["archived"] is True
        # A record created in the CRM shows up at the end of the next full listing.
        stamp = "2026-11-25T19:00:00.000Z"
        new_id = 99_000_000_000
        record = {"id": new_id, "createdAt": stamp, "updatedAt": stamp, "name": "Newco AG"}
        assert (
            insert_records(store, "companies", [record | {"createdate": stamp, "hs_lastmodifieddate": stamp}])
            == 1
        )
        listed, _ = list_all(http, "companies", limit="100", properties="name")
        assert listed[-1]["id"] == str(new_id)
        assert listed[-1]["properties"]["name"] == "Newco AG"


def test_unknown_object_type_and_path(client: httpx.Client) -> None:
    unknown = client.get("/crm/v3/objects/widgets")
    assert unknown.status_code == 400
    assert unknown.json()["category"] == "OBJECT_NOT_FOUND"
    assert client.get("/crm/v3/nothing-here").status_code == 404
    assert client.get("/crm/v3/objects/0-1", params={"limit": "1"}).json()["results"][0]["properties"][
        "email"
    ]


def test_a_v4_default_association_gives_a_deal_its_company(sandbox: SandboxLayout, tmp_path: Path) -> None:
    store = tmp_path / "hubspot.sqlite"
    store.write_bytes(sandbox.hubspot_store.read_bytes())
    with (
        HubSpotSimulator(store) as sim,
        httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {sim.access_token}"}) as http,
    ):
        deal = http.get("/crm/v3/objects/deals", params={"limit": "1"}).json()["results"][0]["id"]
        companies = http.get("/crm/v3/objects/companies", params={"limit": "2"}).json()["results"]
        company = companies[1]["id"]
        path = "/crm/v4/associations/deals/companies/batch/associate/default"
        answer = http.post(
            path,
            json={
                "inputs": [
                    {"from": {"id": deal}, "to": {"id": company}},
                    {"from": {"id": "999999999"}, "to": {"id": company}},
                ]
            },
        )
        # The known pair is associated; the unknown deal is an error of a 207 answer, by its id.
        assert answer.status_code == 207, answer.text
        body = answer.json()
        assert body["results"] == [{"from": {"id": deal}, "to": {"id": company}, "associationSpec": []}]
        assert [e["context"]["ids"] for e in body["errors"]] == [["999999999"]]
        read = http.get(f"/crm/v3/objects/deals/{deal}", params={"associations": "companies"}).json()
        assert read["associations"]["companies"]["results"][0]["id"] == company
        refused = http.post(
            "/crm/v4/associations/companies/deals/batch/associate/default",
            json={"inputs": [{"from": {"id": company}, "to": {"id": deal}}]},
        )
        assert refused.status_code == 400
