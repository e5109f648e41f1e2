"""The Sage CRM RESTful API simulator, driven over HTTP the way a connector drives sagecrm2."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from crm_pipelines_sandbox.simulators import Faults, RateLimit
from crm_pipelines_sandbox.simulators.records import (
    add_field,
    count_records,
    delete_records,
    fetch_records,
    keys_of,
    touch_records,
)
from crm_pipelines_sandbox.simulators.sage_crm import SANDBOX, SageCrmSimulator, split_phone
from crm_pipelines_sandbox.systems import Started, build_store, sample_seeds

AS_OF = date(2026, 11, 25)
API = "/sdata/crmj/sagecrm2/-"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sage") / "sage_crm.sqlite"
    build_store(path, SANDBOX, sample_seeds(accounts=560, as_of=AS_OF))  # 1,120 people, ~5% deleted
    return path


@pytest.fixture(scope="module")
def started(store: Path) -> Iterator[Started]:
    running = SANDBOX.start(store)
    yield running
    running.simulator.stop()


@pytest.fixture
def client(started: Started) -> Iterator[httpx.Client]:
    auth = (started.env["SAGE_CRM_USERNAME"], started.env["SAGE_CRM_PASSWORD"])
    with httpx.Client(base_url=started.env["SAGE_CRM_BASE_URL"], auth=auth, timeout=10) as http:
        yield http


def small_store(tmp_path: Path) -> Path:
    path = tmp_path / "sage_crm.sqlite"
    build_store(path, SANDBOX, sample_seeds(accounts=40, as_of=AS_OF))
    return path


def feed(client: httpx.Client, resource: str, **params: str) -> dict[str, Any]:
    response = client.get(f"{API}/{resource}", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def read_all(client: httpx.Client, resource: str, count: int, **params: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    start = 1
    while True:
        page = feed(client, resource, startIndex=str(start), count=str(count), **params)
        assert page["$startIndex"] == start
        assert page["$itemsPerPage"] == count
        out.extend(page["$resources"])
        if len(page["$resources"]) < count:
            assert len(out) == page["$totalResults"]
            return out
        start += count


def test_basic_auth_refusals_carry_a_diagnosis(started: Started) -> None:
    url = f"{started.env['SAGE_CRM_BASE_URL']}{API}/Company?count=1"
    user, password = started.env["SAGE_CRM_USERNAME"], started.env["SAGE_CRM_PASSWORD"]
    for auth in (None, (user, "wrong"), ("nobody", password)):
        refused = httpx.get(url, auth=auth)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith("Basic realm=")
        [diagnosis] = refused.json()["$diagnoses"]
        assert diagnosis["$severity"] == "Error"
        assert diagnosis["$applicationCode"] == "AuthenticationFailed"
    assert httpx.get(url, auth=(user, password)).status_code == 200
    started.simulator.expire_tokens()  # type: ignore[attr-defined]
    assert httpx.get(url, auth=(user, password)).status_code == 200  # stateless: nothing expires
    settings = SANDBOX.connection(started)
    assert (settings.base_url, settings.username) == (started.env["SAGE_CRM_BASE_URL"], user)


def test_paging_returns_each_live_record_once(client: httpx.Client, store: Path) -> None:
    people = read_all(client, "Person", 101)
    assert [p["pers_personid"] for p in people] == sorted(keys_of(store, "Person"))
    assert len(people) == count_records(store, "Person") > 1000
    first = people[0]
    assert first["$key"] == str(first["pers_personid"])
    assert first["$url"].endswith(f"{API}/Person('{first['$key']}')")
    assert first["pers_deleted"] is None
    assert isinstance(first["pers_companyid"], int)
    assert first["pers_updateddate"].endswith("Z")
    assert "T" in first["pers_updateddate"]
    assert "address" not in first  # a linked entity: only with include=address


def test_page_size_default_and_cap_and_case_insensitive_names(client: httpx.Client) -> None:
    default = feed(client, "person")
    assert default["$itemsPerPage"] == 100
    assert len(default["$resources"]) == 100
    capped = feed(client, "PERSON", count="4000")
    assert capped["$itemsPerPage"] == 1000
    assert len(capped["$resources"]) == 1000
    refused = client.get(f"{API}/Person", params={"count": "many"})
    assert refused.status_code == 400
    assert refused.json()["$diagnoses"][0]["$sdataCode"] == "BadQueryParameter"
    chosen = feed(client, "company", count="2", select="Comp_Name,COMP_WEBSITE")["$resources"]
    assert all(set(c) == {"$key", "$url", "comp_name", "comp_website"} for c in chosen)


def test_include_address_and_phone_columns(client: httpx.Client, store: Path) -> None:
    [company] = feed(client, "Company", count="1", include="address")["$resources"]
    [row] = fetch_records(store, "Company", [company["comp_companyid"]])
    assert company["address"]["addr_city"]
    assert company["address"]["addr_country"]
    assert company["comp_phonecountrycode"]
    assert company["comp_phonenumber"]
    assert split_phone("+49 40 3012 4455") == ("49", "40", "3012 4455")
    assert row["comp_name"] == company["comp_name"]
    person = feed(client, "Person", count="1", include="address", select="pers_lastname")["$resources"][0]
    assert set(person) == {"$key", "$url", "pers_lastname", "address"}
    assert person["address"]["addr_country"]


def test_updated_date_filter_is_exact_at_its_bounds(client: httpx.Client, store: Path) -> None:
    rows = fetch_records(store, "Company", with_meta=True)
    target = sorted(rows, key=lambda r: r["_modified"])[len(rows) // 3]
    stamp = target["comp_updateddate"]  # 2026-11-10T12:34:56Z: what the API shows
    later = {r["comp_companyid"] for r in rows if r["_modified"] >= target["_modified"]}

    def ids(where: str) -> set[int]:
        return {
            c["comp_companyid"]
            for c in read_all(client, "Company", 300, where=where, orderBy="comp_updateddate")
        }

    assert ids(f"comp_updateddate ge @{stamp}@") == later
    assert target["comp_companyid"] not in ids(f"comp_updateddate gt @{stamp}@")
    assert target["comp_companyid"] not in ids(f"comp_updateddate lt @{stamp}@")
    assert target["comp_companyid"] in ids(f"comp_updateddate between @{stamp}@ and @{stamp}@")
    ordered = read_all(client, "Company", 300, orderBy="comp_updateddate desc")
    assert [c["comp_updateddate"] for c in ordered] == sorted(
        (c["comp_updateddate"] for c in ordered), reverse=True
    )
    broken = client.get(f"{API}/Company", params={"where": "comp_updateddate ge @2026-11-25"})
    assert broken.status_code == 400
    assert broken.json()["$diagnoses"][0]["$sdataCode"] == "BadWhereSyntax"
    like = feed(client, "Company", where="comp_name like 'Nordwind%' and comp_sector eq 'Manufacturing'")
    assert like["$resources"]
    assert all(c["comp_name"].startswith("Nordwind") for c in like["$resources"])


def test_soft_deleted_rows_answer_a_where_on_the_deleted_flag(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    gone = keys_of(store, "Company")[0]
    delete_records(store, "Company", [gone], datetime(2026, 11, 25, 12, tzinfo=UTC))
    deleted = {
        r["comp_companyid"]
        for r in fetch_records(store, "Company", include_deleted=True)
        if r["comp_deleted"] == 1
    }
    with (
        SageCrmSimulator(store, username="u", password="p") as sim,
        httpx.Client(base_url=sim.base_url, auth=("u", "p")) as http,
    ):
        listed = http.get(f"{API}/Company", params={"count": "1000"}).json()
        assert gone not in {c["comp_companyid"] for c in listed["$resources"]}
        assert listed["$totalResults"] == count_records(store, "Company")
        flagged = http.get(f"{API}/Company", params={"count": "1000", "where": "comp_deleted eq 1"}).json()
        assert {c["comp_companyid"] for c in flagged["$resources"]} == deleted
        assert gone in deleted
        assert all(c["comp_deleted"] == 1 for c in flagged["$resources"])
        assert http.get(f"{API}/Company('{gone}')").status_code == 404


def test_fields_added_later_show_up_in_schema_and_records(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    with (
        SageCrmSimulator(store, username="u", password="p") as sim,
        httpx.Client(base_url=sim.base_url, auth=("u", "p")) as http,
    ):
        assert "comp_loyaltytier" not in http.get(f"{API}/Company/$schema").text
        add_field(store, "Company", "comp_loyaltytier", default="Gold")
        schema = http.get(f"{API}/Company/$schema")
        assert schema.headers["Content-Type"].startswith("application/xml")
        assert 'name="comp_loyaltytier"' in schema.text
        assert 'name="comp_updateddate"' in schema.text
        [company] = http.get(f"{API}/Company", params={"count": "1"}).json()["$resources"]
        assert company["comp_loyaltytier"] == "Gold"


def test_rate_limit_and_injected_faults(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    faults = Faults()
    with (
        SageCrmSimulator(
            store, username="u", password="p", rate_limit=RateLimit(3, 60.0), faults=faults
        ) as sim,
        httpx.Client(base_url=sim.base_url, auth=("u", "p")) as http,
    ):
        codes = [http.get(f"{API}/Company", params={"count": "1"}) for _ in range(4)]
        assert [r.status_code for r in codes] == [200, 200, 200, 503]
        assert int(codes[-1].headers["Retry-After"]) > 1
        assert codes[-1].json()["$diagnoses"][0]["$severity"] == "Transient"
        sim.rate_limit = None
        faults.fail_next(400, 403, 404, 429, 500)
        expected = [
            "BadQueryParameter",
            "ApplicationDiagnosis",
            "ResourceKindNotFound",
            "ApplicationUnavailable",
            "ApplicationDiagnosis",
        ]
        for status, code in zip((400, 403, 404, 429, 500), expected, strict=True):
            response = http.get(f"{API}/Company")
            assert response.status_code == status
            assert response.json()["$diagnoses"][0]["$sdataCode"] == code
        assert http.get(f"{API}/Company").status_code == 200


def test_upsert_by_external_id_creates_updates_and_rejects(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    case = SANDBOX.write_case(store)
    with (
        SageCrmSimulator(store, username="u", password="p") as sim,
        httpx.Client(base_url=sim.base_url, auth=("u", "p")) as http,
    ):

        def lookup(external_id: str) -> list[dict[str, Any]]:
            where = f"{case.external_id_field} eq '{external_id}'"
            found: list[dict[str, Any]] = http.get(f"{API}/Company", params={"where": where}).json()[
                "$resources"
            ]
            return found

        first = case.accepted[0]
        assert lookup(first["comp_externalid"]) == []
        created = http.post(f"{API}/Company", json=first)
        assert created.status_code == 201
        new_id = created.json()["comp_companyid"]
        assert new_id > max(keys_of(store, "Company")[:-1])
        assert created.json()["$key"] == str(new_id)
        [found] = lookup(first["comp_externalid"])
        assert found["comp_name"] == first["comp_name"]
        patched = http.patch(f"{API}/Company('{new_id}')", json={"Comp_Name": "Harbourside Foods"})
        assert patched.status_code == 200
        assert patched.json()["comp_name"] == "Harbourside Foods"
        put = http.put(f"{API}/Company('{new_id}')", json={"comp_sector": "Food"})
        assert put.status_code == 200
        [row] = fetch_records(store, "Company", [new_id])
        assert (row["comp_name"], row["comp_sector"], row["comp_externalid"]) == (
            "Harbourside Foods",
            "Food",
            "ERP-20001",
        )
        rejected = http.post(f"{API}/Company", json=case.rejected[0])
        assert rejected.status_code == 400
        [diagnosis] = rejected.json()["$diagnoses"]
        assert diagnosis["$applicationCode"] == case.rejected_code
        assert diagnosis["$payloadPath"] == "comp_name"
        unknown = http.post(f"{API}/Company", json={"comp_name": "A", "comp_nope": 1})
        assert unknown.json()["$diagnoses"][0]["$applicationCode"] == "PropertyNotFound"
        assert http.patch(f"{API}/Company('999999')", json={"comp_name": "x"}).status_code == 404
        sim.record_faults["ERP-20002"] = ["RecordLocked"]
        locked = http.post(f"{API}/Company", json=case.accepted[1])
        assert locked.status_code == 409
        assert locked.json()["$diagnoses"][0]["$applicationCode"] == "RecordLocked"
        assert locked.json()["$diagnoses"][0]["$severity"] == "Transient"
        assert http.post(f"{API}/Company", json=case.accepted[1]).status_code == 201
        person = http.post(f"{API}/Person", json={"pers_lastname": "Okafor", "pers_companyid": new_id})
        assert person.status_code == 201
        assert person.json()["pers_companyid"] == new_id


def test_edits_move_the_updated_date(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    key = keys_of(store, "Opportunity")[0]
    at = datetime(2026, 11, 25, 18, 30, 5, 250000, tzinfo=UTC)
    touch_records(store, "Opportunity", [key], at, {"oppo_stage": "Negotiating"})
    with (
        SageCrmSimulator(store, username="u", password="p") as sim,
        httpx.Client(base_url=sim.base_url, auth=("u", "p")) as http,
    ):
        entry = http.get(f"{API}/Opportunity('{key}')").json()
        assert entry["oppo_stage"] == "Negotiating"
        assert entry["oppo_updateddate"] == "2026-11-25T18:30:05Z"
        window = http.get(
            f"{API}/Opportunity",
            params={
                "where": "oppo_updateddate ge @2026-11-25T18:30:05.250Z@ and oppo_updateddate lt @2026-11-25T18:30:05.251Z@"
            },
        ).json()
        assert [o["oppo_opportunityid"] for o in window["$resources"]] == [key]
        assert set(SANDBOX.stage_values.values()) >= {"Sold", "NoSale"}


def test_a_patch_by_id_sets_the_erp_finance_status_that_a_where_query_reads_back(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    company_id = sorted(keys_of(store, "Company"))[0]
    with (
        SageCrmSimulator(store, username="u", password="p") as sim,
        httpx.Client(base_url=sim.base_url, auth=("u", "p")) as http,
    ):
        before = http.get(f"{API}/Company('{company_id}')").json()
        assert before["comp_updatedby"] == 1  # entered by the System Administrator
        assert before["comp_erpcustomernumber"] is None  # the custom columns exist, still empty
        status = {
            "comp_erpcustomernumber": "K-40701",
            "comp_erpopenbalance": 15250.75,
            "comp_erpopenbalance_cid": "EUR",
            "comp_erpoverdueamount": 4200.0,
            "comp_erpoverdueamount_cid": "EUR",
            "comp_erplastpaymentdate": "2026-11-20",
        }
        patched = http.patch(f"{API}/Company('{company_id}')", json=status)
        assert patched.status_code == 200, patched.text

        # A user's query: companies with an overdue amount, changed since the last read.
        found = feed(
            http,
            "Company",
            where=f"comp_erpoverdueamount gt 0 and comp_updateddate ge @{before['comp_updateddate']}@",
        )["$resources"]
        assert [r["comp_companyid"] for r in found] == [company_id]
        company = found[0]
        assert company["comp_erpcustomernumber"] == "K-40701"
        assert company["comp_erpopenbalance"] == 15250.75
        assert company["comp_erpoverdueamount_cid"] == "EUR"
        assert company["comp_erplastpaymentdate"] == "2026-11-20T00:00:00Z"  # a date: SData's ISO form
        assert company["comp_updatedby"] == 4  # the API user saved it
        assert company["comp_updateddate"] > before["comp_updateddate"]
        assert 'name="comp_erpopenbalance_cid"' in http.get(f"{API}/Company/$schema").text

        deal = sorted(keys_of(store, "Opportunity"))[0]
        invoices = {"oppo_erpordernumber": "SO-24017", "oppo_erpinvoicenumbers": "INV-88001,INV-88002"}
        assert http.patch(f"{API}/Opportunity('{deal}')", json=invoices).status_code == 200
        [row] = feed(http, "Opportunity", where="oppo_erpordernumber eq 'SO-24017'")["$resources"]
        assert row["oppo_erpinvoicenumbers"] == "INV-88001,INV-88002"

        # An id Sage CRM does not have: 404, nothing created.
        count = count_records(store, "Company")
        missing = http.patch(f"{API}/Company('987654')", json=status)
        assert missing.status_code == 404
        assert missing.json()["$diagnoses"][0]["$applicationCode"] == "NotFound"
        assert count_records(store, "Company") == count
