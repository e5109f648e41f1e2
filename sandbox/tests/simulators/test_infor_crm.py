"""The Infor CRM SData simulator, driven over HTTP the way a connector drives /sdata/slx/dynamic/-."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from crm_pipelines_sandbox.simulators import Faults, RateLimit
from crm_pipelines_sandbox.simulators.infor_crm import SANDBOX, InforCrmSimulator
from crm_pipelines_sandbox.simulators.records import (
    add_field,
    count_records,
    delete_records,
    fetch_records,
    keys_of,
    touch_records,
)
from crm_pipelines_sandbox.systems import Started, build_store, sample_seeds

AS_OF = date(2026, 11, 25)
API = "/sdata/slx/dynamic/-"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("infor") / "infor_crm.sqlite"
    build_store(path, SANDBOX, sample_seeds(accounts=560, as_of=AS_OF))  # 1,120 contacts, ~5% deleted
    return path


@pytest.fixture(scope="module")
def started(store: Path) -> Iterator[Started]:
    running = SANDBOX.start(store)
    yield running
    running.simulator.stop()


@pytest.fixture
def client(started: Started) -> Iterator[httpx.Client]:
    auth = (started.env["INFOR_CRM_USERNAME"], started.env["INFOR_CRM_PASSWORD"])
    with httpx.Client(base_url=started.env["INFOR_CRM_BASE_URL"], auth=auth, timeout=10) as http:
        yield http


def small_store(tmp_path: Path) -> Path:
    path = tmp_path / "infor_crm.sqlite"
    build_store(path, SANDBOX, sample_seeds(accounts=12, as_of=AS_OF))
    return path


def feed(client: httpx.Client, resource: str, **params: str) -> dict[str, Any]:
    response = client.get(f"{API}/{resource}", params={"format": "json", **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def read_all(client: httpx.Client, resource: str, count: int, **params: str) -> list[dict[str, Any]]:
    """Every entry by startIndex paging until a short page, checking the paging numbers on the way."""
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


def test_basic_auth_is_checked_on_every_request(started: Started) -> None:
    url = f"{started.env['INFOR_CRM_BASE_URL']}{API}/accounts?format=json&count=1"
    for auth in (
        None,
        (started.env["INFOR_CRM_USERNAME"], "wrong"),
        ("someone", started.env["INFOR_CRM_PASSWORD"]),
    ):
        refused = httpx.get(url, auth=auth)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"] == 'Basic realm="SData"'
        [diagnosis] = refused.json()
        assert diagnosis["severity"] == "Error"
        assert diagnosis["sdataCode"] == "ApplicationDiagnosis"
        assert diagnosis["applicationCode"] == "AuthenticationFailed"
        assert diagnosis["message"]
    ok = httpx.get(url, auth=(started.env["INFOR_CRM_USERNAME"], started.env["INFOR_CRM_PASSWORD"]))
    assert ok.status_code == 200
    # Basic has no token to expire: the same credentials keep working.
    started.simulator.expire_tokens()  # type: ignore[attr-defined]
    assert (
        httpx.get(
            url, auth=(started.env["INFOR_CRM_USERNAME"], started.env["INFOR_CRM_PASSWORD"])
        ).status_code
        == 200
    )
    settings = SANDBOX.connection(started)
    assert settings.base_url == started.env["INFOR_CRM_BASE_URL"]
    assert settings.username == started.env["INFOR_CRM_USERNAME"]


def test_paging_returns_each_live_record_once(client: httpx.Client, store: Path) -> None:
    entries = read_all(client, "contacts", 97)
    assert [e["$key"] for e in entries] == sorted(keys_of(store, "contacts"))  # key order by default
    assert len(entries) == count_records(store, "contacts") > 1000
    first = entries[0]
    assert first["$url"].endswith(f"{API}/contacts('{first['$key']}')")
    assert len(first["$key"]) == 12
    assert first["$key"].startswith("C")
    assert first["$descriptor"] == f"{first['FirstName']} {first['LastName']}"
    assert set(first["Account"]) == {"$key", "$url"}
    assert first["Account"]["$key"].startswith("A")
    assert first["CreateDate"].startswith("/Date(")
    assert first["ModifyDate"].endswith(")/")


def test_page_size_default_and_cap(client: httpx.Client) -> None:
    default = feed(client, "contacts")
    assert default["$itemsPerPage"] == 100
    assert len(default["$resources"]) == 100
    capped = feed(client, "contacts", count="5000")
    assert capped["$itemsPerPage"] == 1000
    assert len(capped["$resources"]) == 1000
    assert feed(client, "contacts", count="0")["$resources"] == []
    for bad in ({"count": "ten"}, {"startIndex": "0"}, {"count": "-1"}):
        refused = client.get(f"{API}/contacts", params={"format": "json", **bad})
        assert refused.status_code == 400
        assert refused.json()[0]["sdataCode"] == "BadQueryParameter"


def test_select_returns_only_the_named_properties(client: httpx.Client) -> None:
    page = feed(client, "accounts", count="3", select="AccountName,Address/Country")
    for entry in page["$resources"]:
        assert set(entry) == {"$key", "$url", "$descriptor", "$etag", "AccountName", "Address"}
        assert set(entry["Address"]) == {"$key", "Country"}
    everything = feed(client, "accounts", count="1")["$resources"][0]
    assert {"AccountName", "WebAddress", "MainPhone", "Industry", "Revenue", "Address", "ModifyDate"} <= set(
        everything
    )
    assert isinstance(everything["Revenue"], float)
    refused = client.get(f"{API}/accounts", params={"format": "json", "select": "AccountName,Nope"})
    assert refused.status_code == 400
    assert "Nope" in refused.json()[0]["message"]


def test_precedence_zero_answers_keys_only_in_key_order(client: httpx.Client, store: Path) -> None:
    # What the keys read of delete detection asks for: no payload (SData core 6.5), ordered by Id.
    entries = read_all(client, "contacts", 250, precedence="0", orderBy="Id")
    assert {frozenset(e) for e in entries} == {frozenset({"$key", "$url", "$descriptor", "$etag"})}
    assert [e["$key"] for e in entries] == sorted(keys_of(store, "contacts"))
    assert feed(client, "contacts", count="1", precedence="2")["$resources"][0]["LastName"]
    refused = client.get(f"{API}/contacts", params={"format": "json", "precedence": "none"})
    assert refused.status_code == 400
    assert refused.json()[0]["sdataCode"] == "BadQueryParameter"


def test_modify_date_filter_is_exact_at_its_bounds(client: httpx.Client, store: Path) -> None:
    rows = fetch_records(store, "accounts", with_meta=True)
    target = sorted(rows, key=lambda r: r["_modified"])[len(rows) // 2]
    stamp = datetime.fromisoformat(target["_modified"]).strftime("%Y-%m-%dT%H:%M:%S")
    later = {r["Id"] for r in rows if r["_modified"] >= target["_modified"]}

    def keys(where: str) -> set[str]:
        return {e["$key"] for e in read_all(client, "accounts", 250, where=where, orderBy="ModifyDate")}

    assert keys(f"ModifyDate ge @{stamp}@") == later
    assert target["Id"] not in keys(f"ModifyDate gt @{stamp}@")
    assert target["Id"] not in keys(f"ModifyDate lt @{stamp}@")
    assert target["Id"] in keys(f"ModifyDate ge @{stamp}Z@ and ModifyDate lt @2100-01-01@")
    ordered = read_all(client, "accounts", 250, orderBy="ModifyDate desc")
    stamps = [int(e["ModifyDate"][6:-2]) for e in ordered]
    assert stamps == sorted(stamps, reverse=True)
    broken = client.get(f"{API}/accounts", params={"format": "json", "where": "ModifyDate ge 2026-11-25"})
    assert broken.status_code == 400
    assert broken.json()[0]["sdataCode"] == "BadWhereSyntax"


def test_references_filter_by_key(client: httpx.Client, store: Path) -> None:
    account = keys_of(store, "accounts")[3]
    contacts = feed(client, "contacts", where=f"Account.Id eq '{account}'")["$resources"]
    expected = {r["Id"] for r in fetch_records(store, "contacts") if r["Account"] == account}
    assert {c["$key"] for c in contacts} == expected
    assert expected
    found = feed(client, "accounts", where=f"Id in ('{account}', 'AXXXX0000000')")["$resources"]
    assert [a["$key"] for a in found] == [account]


def test_deleted_records_disappear(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    gone = keys_of(store, "accounts")[0]
    delete_records(store, "accounts", [gone], datetime(2026, 11, 25, 12, tzinfo=UTC))
    with (
        InforCrmSimulator(store, username="u", password="p") as sim,
        httpx.Client(base_url=sim.base_url, auth=("u", "p")) as http,
    ):
        listed = http.get(f"{API}/accounts", params={"format": "json", "count": "1000"}).json()
        assert gone not in {e["$key"] for e in listed["$resources"]}
        assert listed["$totalResults"] == count_records(store, "accounts")
        missing = http.get(f"{API}/accounts('{gone}')", params={"format": "json"})
        assert missing.status_code == 404
        assert missing.json()[0]["severity"] == "Error"


def test_fields_added_later_show_up_in_schema_and_records(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    with (
        InforCrmSimulator(store, username="u", password="p") as sim,
        httpx.Client(base_url=sim.base_url, auth=("u", "p")) as http,
    ):
        before = http.get(f"{API}/accounts/$schema")
        assert before.status_code == 200
        assert before.headers["Content-Type"].startswith("application/xml")
        assert 'name="ModifyDate"' in before.text
        assert "CustomerTier" not in before.text
        add_field(store, "accounts", "CustomerTier", default="Gold")
        assert 'name="CustomerTier"' in http.get(f"{API}/accounts/$schema").text
        entry = http.get(f"{API}/accounts", params={"format": "json", "count": "1"}).json()["$resources"][0]
        assert entry["CustomerTier"] == "Gold"
        chosen = http.get(
            f"{API}/accounts", params={"format": "json", "count": "1", "select": "CustomerTier"}
        )
        assert set(chosen.json()["$resources"][0]) == {"$key", "$url", "$descriptor", "$etag", "CustomerTier"}


def test_rate_limit_answers_503_with_retry_after(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    for status in (503, 429):
        with (
            InforCrmSimulator(
                store, username="u", password="p", rate_limit=RateLimit(3, 1.0), throttle_status=status
            ) as sim,
            httpx.Client(base_url=sim.base_url, auth=("u", "p")) as http,
        ):
            codes = [http.get(f"{API}/accounts", params={"format": "json", "count": "1"}) for _ in range(4)]
            assert [r.status_code for r in codes] == [200, 200, 200, status]
            assert int(codes[-1].headers["Retry-After"]) >= 1
            [diagnosis] = codes[-1].json()
            assert diagnosis["severity"] == "Transient"
            assert diagnosis["sdataCode"] == "ApplicationUnavailable"
    time.sleep(1.05)


def test_injected_faults_answer_sdata_diagnoses(tmp_path: Path) -> None:
    faults = Faults()
    store = small_store(tmp_path)
    with (
        InforCrmSimulator(store, username="u", password="p", faults=faults) as sim,
        httpx.Client(base_url=sim.base_url, auth=("u", "p")) as http,
    ):
        faults.fail_next(400, 401, 403, 404, 429, 500, 503)
        expected = {
            400: "BadQueryParameter",
            401: "ApplicationDiagnosis",
            403: "ApplicationDiagnosis",
            404: "ResourceKindNotFound",
            429: "ApplicationUnavailable",
            500: "ApplicationDiagnosis",
            503: "ApplicationUnavailable",
        }
        for status, code in expected.items():
            response = http.get(f"{API}/accounts", params={"format": "json"})
            assert response.status_code == status
            assert response.json()[0]["sdataCode"] == code
            if status in (429, 503):
                assert response.headers["Retry-After"] == "1"
        assert http.get(f"{API}/accounts", params={"format": "json"}).status_code == 200
        assert (
            http.get(f"{API}/widgets", params={"format": "json"}).json()[0]["sdataCode"]
            == "ResourceKindNotFound"
        )


def test_upsert_by_external_id_creates_updates_and_rejects(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    case = SANDBOX.write_case(store)
    with (
        InforCrmSimulator(store, username="u", password="p") as sim,
        httpx.Client(base_url=sim.base_url, auth=("u", "p")) as http,
    ):

        def lookup(external_id: str) -> list[dict[str, Any]]:
            where = f"{case.external_id_field} eq '{external_id}'"
            found: list[dict[str, Any]] = http.get(
                f"{API}/accounts", params={"format": "json", "where": where}
            ).json()["$resources"]
            return found

        first = case.accepted[0]
        assert lookup(first["ExternalAccountNo"]) == []
        created = http.post(f"{API}/accounts", params={"format": "json"}, json=first)
        assert created.status_code == 201
        key = created.json()["$key"]
        assert created.headers["Location"].endswith(f"accounts('{key}')")
        assert len(key) == 12
        assert key.startswith("A")
        [found] = lookup(first["ExternalAccountNo"])
        assert found["$key"] == key
        assert found["AccountName"] == first["AccountName"]
        updated = http.put(
            f"{API}/accounts('{key}')",
            params={"format": "json"},
            json={"AccountName": "Fjordline AS", "Revenue": 12.5},
        )
        assert updated.status_code == 200
        assert updated.json()["AccountName"] == "Fjordline AS"
        [row] = fetch_records(store, "accounts", [key])
        assert row["AccountName"] == "Fjordline AS"
        assert row["Revenue"] == 12.5
        assert row["ExternalAccountNo"] == "ERP-10001"
        # Rejected per record: the documented diagnosis, nothing written.
        rejected = http.post(f"{API}/accounts", params={"format": "json"}, json=case.rejected[0])
        assert rejected.status_code == 400
        [diagnosis] = rejected.json()
        assert diagnosis["applicationCode"] == case.rejected_code
        assert diagnosis["payloadPath"] == "AccountName"
        unknown = http.post(
            f"{API}/accounts", params={"format": "json"}, json={"AccountName": "A", "Nope": 1}
        )
        assert unknown.status_code == 400
        assert unknown.json()[0]["applicationCode"] == "PropertyNotFound"
        cleared = http.put(f"{API}/accounts('{key}')", params={"format": "json"}, json={"AccountName": ""})
        assert cleared.status_code == 400
        assert (
            http.put(
                f"{API}/accounts('AXXXX0000000')", params={"format": "json"}, json={"AccountName": "x"}
            ).status_code
            == 404
        )
        assert not [r for r in fetch_records(store, "accounts") if r["ExternalAccountNo"] == "ERP-10003"]
        # A retryable per-record failure, then success on the next attempt.
        sim.record_faults["ERP-10002"] = ["RecordLocked"]
        locked = http.post(f"{API}/accounts", params={"format": "json"}, json=case.accepted[1])
        assert locked.status_code == 409
        assert locked.json()[0] == {
            "severity": "Transient",
            "sdataCode": "ApplicationDiagnosis",
            "applicationCode": "RecordLocked",
            "message": "Injected failure RecordLocked for ERP-10002",
        }
        assert (
            http.post(f"{API}/accounts", params={"format": "json"}, json=case.accepted[1]).status_code == 201
        )
        contact = {"LastName": "Berg", "Account": {"$key": key}}
        made = http.post(f"{API}/contacts", params={"format": "json"}, json=contact)
        assert made.status_code == 201
        assert made.json()["Account"]["$key"] == key
        orphan = http.post(f"{API}/contacts", params={"format": "json"}, json={"LastName": "Solo"})
        assert orphan.status_code == 400
        assert orphan.json()[0]["payloadPath"] == "Account"


def test_edits_move_modify_date(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    key = keys_of(store, "opportunities")[0]
    at = datetime(2026, 11, 25, 18, 30, 5, 250000, tzinfo=UTC)
    touch_records(store, "opportunities", [key], at, {"Stage": "5-Negotiation"})
    with (
        InforCrmSimulator(store, username="u", password="p") as sim,
        httpx.Client(base_url=sim.base_url, auth=("u", "p")) as http,
    ):
        entry = http.get(f"{API}/opportunities('{key}')", params={"format": "json"}).json()
        assert entry["Stage"] == "5-Negotiation"
        assert entry["ModifyDate"] == f"/Date({int(at.timestamp() * 1000)})/"
        window = http.get(
            f"{API}/opportunities",
            params={
                "format": "json",
                "where": "ModifyDate ge @2026-11-25T18:30:05.250@ and ModifyDate lt @2026-11-25T18:30:05.251@",
            },
        ).json()
        assert [e["$key"] for e in window["$resources"]] == [key]
        assert set(SANDBOX.stage_values) == {
            "prospecting",
            "qualification",
            "proposal",
            "negotiation",
            "closed_won",
            "closed_lost",
        }


def test_a_put_by_key_updates_custom_properties_read_back_by_a_where_query(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    key = sorted(keys_of(store, "opportunities"))[0]
    with (
        InforCrmSimulator(store, username="u", password="p") as sim,
        httpx.Client(base_url=sim.base_url, auth=("u", "p"), params={"format": "json"}) as http,
    ):
        # Read, then PUT what changed with the entry's $etag in If-Match (SData's concurrency check).
        read = http.get(f"{API}/opportunities('{key}')")
        entry = read.json()
        assert read.headers["ETag"] == entry["$etag"]
        assert {"ErpOrderNumber", "ErpInvoiceNumbers", "CreateUser", "ModifyUser"} <= set(entry)
        assert entry["ModifyUser"] == "ADMIN       "  # Saleslogix user ids are 12 characters, padded
        changes = {"ErpOrderNumber": "SO-24017", "ErpInvoiceNumbers": "INV-88001,INV-88002"}
        updated = http.put(
            f"{API}/opportunities('{key}')", json=changes, headers={"If-Match": entry["$etag"]}
        )
        assert updated.status_code == 200, updated.text
        assert updated.json()["$etag"] != entry["$etag"]
        assert updated.json()["ModifyUser"] == "UQSIM0000001"  # the API user saved it

        # A user's query: the deal by its ERP order number, changed since the read before the PUT.
        since = datetime.fromtimestamp(int(entry["ModifyDate"][6:-2]) / 1000, UTC).isoformat()
        found = feed(
            http,
            "opportunities",
            where=f"ErpOrderNumber eq 'SO-24017' and ModifyDate gt @{since}@",
            select="Description,ErpOrderNumber,ErpInvoiceNumbers,ModifyDate",
        )["$resources"]
        assert [e["$key"] for e in found] == [key]
        assert found[0]["ErpInvoiceNumbers"] == "INV-88001,INV-88002"
        assert 'name="ErpCustomerNumber"' in http.get(f"{API}/accounts/$schema").text

        # The stale $etag now loses: 412 with the entry as it is, nothing written.
        stale = http.put(
            f"{API}/opportunities('{key}')",
            json={"ErpOrderNumber": "SO-1"},
            headers={"If-Match": entry["$etag"]},
        )
        assert stale.status_code == 412
        assert stale.json()["ErpOrderNumber"] == "SO-24017"
        # A key Infor CRM does not have: 404, and nothing is created.
        before = count_records(store, "opportunities")
        missing = http.put(f"{API}/opportunities('OQSIMZZZZZZZ')", json=changes)
        assert missing.status_code == 404
        assert missing.json()[0]["applicationCode"] == "NotFound"
        assert count_records(store, "opportunities") == before
