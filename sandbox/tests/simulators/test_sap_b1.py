"""The SAP Business One Service Layer simulator over real HTTP, the way a client drives /b1s/v1."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest

from crm_pipelines_sandbox.simulators import RateLimit
from crm_pipelines_sandbox.simulators.records import add_field, fetch_records
from crm_pipelines_sandbox.simulators.sap_b1 import SANDBOX, SapB1Simulator
from crm_pipelines_sandbox.systems import build_store, sample_seeds

AS_OF = date(2026, 11, 25)
COMPANY, USER, PASSWORD = "SBODEMODE", "manager", "B1-s3cret"
CONTACTS_XJOIN = "/$crossjoin(BusinessPartners,BusinessPartners/ContactEmployees)"


def make_store(path: Path) -> Path:
    build_store(path, SANDBOX, sample_seeds(as_of=AS_OF))
    return path


@contextmanager
def session(sim: SapB1Simulator) -> Iterator[httpx.Client]:
    """A client logged in the documented way; httpx keeps B1SESSION and ROUTEID as cookies."""
    with httpx.Client(base_url=sim.base_url + "/b1s/v1", timeout=10) as http:
        answer = http.post("/Login", json={"CompanyDB": COMPANY, "UserName": USER, "Password": PASSWORD})
        assert answer.status_code == 200, answer.text
        yield http


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("b1") / "b1.sqlite")


@pytest.fixture(scope="module")
def sim(store: Path) -> Iterator[SapB1Simulator]:
    with SapB1Simulator(store, company_db=COMPANY, username=USER, password=PASSWORD) as running:
        yield running


@pytest.fixture(scope="module")
def client(sim: SapB1Simulator) -> Iterator[httpx.Client]:
    with session(sim) as http:
        yield http


def follow(
    client: httpx.Client, path: str, headers: dict[str, str], **params: str
) -> tuple[list[dict[str, Any]], int]:
    """Every entity of a collection by following odata.nextLink (relative to /b1s/v1/)."""
    values: list[dict[str, Any]] = []
    response = client.get(path, params=params, headers=headers)
    pages = 1
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        values.extend(body["value"])
        link = body.get("odata.nextLink")
        if not link:
            return values, pages
        # Resolved against the request URL as RFC 3986 says (the engine's rule for next links).
        response = client.get(urljoin(str(response.url), link), headers=headers)
        pages += 1


def live(store: Path, object_name: str) -> list[dict[str, Any]]:
    return fetch_records(store, object_name, with_meta=True)


def test_login_sets_the_session_cookies_and_reports_the_timeout(sim: SapB1Simulator) -> None:
    answer = httpx.post(
        f"{sim.base_url}/b1s/v1/Login", json={"CompanyDB": COMPANY, "UserName": USER, "Password": PASSWORD}
    )
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"odata.metadata", "SessionId", "Version", "SessionTimeout"}
    assert body["SessionTimeout"] == 30
    assert body["odata.metadata"].endswith("$metadata#B1Sessions/@Element")
    assert answer.headers.get_list("set-cookie") == [
        f"B1SESSION={body['SessionId']};HttpOnly;",
        "ROUTEID=.node1; path=/b1s",
    ]


@pytest.mark.parametrize(
    "credentials",
    [
        {"CompanyDB": COMPANY, "UserName": USER, "Password": "wrong"},
        {"CompanyDB": "SBOOTHER", "UserName": USER, "Password": PASSWORD},
    ],
)
def test_wrong_credentials_get_login_failed(sim: SapB1Simulator, credentials: dict[str, str]) -> None:
    answer = httpx.post(f"{sim.base_url}/b1s/v1/Login", json=credentials)
    assert answer.status_code == 401
    assert answer.json() == {
        "error": {"code": 100000027, "message": {"lang": "en-us", "value": "Login failed"}}
    }


def test_calls_without_a_live_session_get_invalid_session(sim: SapB1Simulator) -> None:
    expected = {
        "error": {
            "code": 301,
            "message": {"lang": "en-us", "value": "Invalid session or session already timeout."},
        }
    }
    bare = httpx.get(f"{sim.base_url}/b1s/v1/BusinessPartners")
    assert bare.status_code == 401
    assert bare.json() == expected
    with session(sim) as http:
        assert http.get("/BusinessPartners", params={"$top": "1"}).status_code == 200
        assert http.post("/Logout").status_code == 204
        after = http.get("/BusinessPartners")
        assert after.status_code == 401
        assert after.json() == expected
    with session(sim) as http:
        sim.expire_tokens()
        assert http.get("/BusinessPartners").json()["error"]["code"] == 301


def test_session_timeout_is_an_idle_timeout(store: Path) -> None:
    with (
        SapB1Simulator(
            store, company_db=COMPANY, username=USER, password=PASSWORD, token_ttl_seconds=0.4
        ) as short,
        session(short) as http,
    ):
        for _ in range(3):  # activity keeps the session alive past its timeout
            time.sleep(0.2)
            assert http.get("/BusinessPartners", params={"$top": "1"}).status_code == 200
        time.sleep(0.5)
        assert http.get("/BusinessPartners").status_code == 401


def test_server_driven_paging_returns_every_live_partner_once(client: httpx.Client, store: Path) -> None:
    headers = {"Prefer": "odata.maxpagesize=7"}
    values, pages = follow(client, "/BusinessPartners", headers, **{"$select": "CardCode,CardName"})
    expected = sorted(r["CardCode"] for r in live(store, "BusinessPartners"))
    assert [v["CardCode"] for v in values] == expected  # key order, each once, deleted ones absent
    assert pages == -(-len(expected) // 7)
    first = client.get("/BusinessPartners", params={"$select": "CardCode"}, headers=headers)
    assert first.headers["Preference-Applied"] == "odata.maxpagesize=7"
    assert first.json()["odata.nextLink"] == "BusinessPartners?$select=CardCode&$skip=7"


def test_page_size_defaults_to_20_and_can_be_configured(client: httpx.Client, store: Path) -> None:
    default = client.get("/ContactEmployees")
    assert default.status_code == 404  # contact persons are no entity set
    opportunities = len(live(store, "SalesOpportunities"))
    assert opportunities > 20
    assert len(client.get("/SalesOpportunities").json()["value"]) == 20
    assert len(client.get("/SalesOpportunities", headers={"B1S-PageSize": "5"}).json()["value"]) == 5
    unpaged = client.get("/SalesOpportunities", headers={"Prefer": "odata.maxpagesize=0"}).json()
    assert len(unpaged["value"]) == opportunities
    assert "odata.nextLink" not in unpaged
    top = client.get("/SalesOpportunities", params={"$top": "25", "$inlinecount": "allpages"}).json()
    assert len(top["value"]) == 20
    assert top["odata.count"] == str(opportunities)
    assert top["odata.nextLink"].endswith("$top=5&$skip=20")
    assert client.get("/SalesOpportunities/$count").text == str(opportunities)
    assert client.get("/SalesOpportunities", params={"$inlinecount": "some"}).status_code == 400


def test_select_and_the_default_shape(client: httpx.Client, store: Path) -> None:
    chosen = client.get("/BusinessPartners", params={"$select": "CardCode,Country,UpdateDate,UpdateTime"})
    for value in chosen.json()["value"]:
        assert set(value) == {"CardCode", "Country", "UpdateDate", "UpdateTime"}
        assert len(value["UpdateDate"]) == 10
        assert len(value["UpdateTime"]) == 8
    card = live(store, "ContactEmployees")[0]["CardCode"]
    partner = client.get(f"/BusinessPartners('{card}')").json()
    assert partner["odata.metadata"].endswith("#BusinessPartners/@Element")
    assert partner["CardType"] == "cCustomer"
    assert isinstance(partner["U_AnnualRevenue"], float)
    expected = sorted(r["InternalCode"] for r in live(store, "ContactEmployees") if r["CardCode"] == card)
    assert [c["InternalCode"] for c in partner["ContactEmployees"]] == expected
    bad = client.get("/BusinessPartners", params={"$select": "CardCode,Nope"})
    assert bad.status_code == 400
    assert bad.json()["error"] == {
        "code": -1000,
        "message": {"lang": "en-us", "value": "Property 'Nope' of 'BusinessPartner' is invalid"},
    }


def test_update_date_filter_boundaries(client: httpx.Client, store: Path) -> None:
    rows = sorted(live(store, "BusinessPartners"), key=lambda r: r["_modified"])
    pivot = rows[len(rows) // 2]
    day, minute = pivot["_modified"][:10], pivot["_modified"][11:16]
    headers = {"Prefer": "odata.maxpagesize=0"}

    def codes(expression: str) -> set[str]:
        answer = client.get(
            "/BusinessPartners", params={"$filter": expression, "$select": "CardCode"}, headers=headers
        )
        assert answer.status_code == 200, answer.text
        return {v["CardCode"] for v in answer.json()["value"]}

    assert codes(f"UpdateDate ge '{day}'") == {r["CardCode"] for r in rows if r["_modified"][:10] >= day}
    assert pivot["CardCode"] not in codes(f"UpdateDate gt '{day}'")
    assert pivot["CardCode"] in codes(f"UpdateDate eq datetime'{day}T23:59:59'")  # the time part is ignored
    assert pivot["CardCode"] in codes(f"UpdateDate le '{day.replace('-', '')}'")
    # The window a connector asks for: later days, or the same day from the same minute on.
    precise = codes(f"UpdateDate gt '{day}' or (UpdateDate eq '{day}' and UpdateTime ge '{minute}')")
    assert pivot["CardCode"] in precise
    assert precise == {r["CardCode"] for r in rows if r["_modified"][:16] >= f"{day}T{minute}"}
    assert codes("CardType eq 'C'") == codes("CardType eq 'cCustomer'") == {r["CardCode"] for r in rows}
    assert client.get("/BusinessPartners", params={"$filter": "UpdateDate ge"}).status_code == 400


def test_deleted_records_are_simply_gone(client: httpx.Client, store: Path) -> None:
    everything = fetch_records(store, "BusinessPartners", include_deleted=True, with_meta=True)
    gone = [r["CardCode"] for r in everything if r["_deleted_at"]]
    assert gone, "the sample has deleted business partners"
    listed, _ = follow(
        client, "/BusinessPartners", {"Prefer": "odata.maxpagesize=0"}, **{"$select": "CardCode"}
    )
    assert not set(gone) & {v["CardCode"] for v in listed}
    missing = client.get(f"/BusinessPartners('{gone[0]}')")
    assert missing.status_code == 404
    assert missing.json()["error"] == {
        "code": -2028,
        "message": {"lang": "en-us", "value": "No matching records found (ODBC -2028)"},
    }


def test_contacts_read_flat_through_crossjoin(client: httpx.Client, store: Path) -> None:
    day = sorted(r["_modified"] for r in live(store, "ContactEmployees"))[10][:10]
    params = {
        "$expand": "BusinessPartners($select=CardCode),"
        "BusinessPartners/ContactEmployees($select=InternalCode,FirstName,LastName,E_Mail,UpdateDate,UpdateTime)",
        "$filter": "BusinessPartners/CardCode eq BusinessPartners/ContactEmployees/CardCode"
        f" and BusinessPartners/ContactEmployees/UpdateDate ge '{day}'",
        "$orderby": "BusinessPartners/ContactEmployees/UpdateDate,BusinessPartners/ContactEmployees/UpdateTime",
    }
    values, pages = follow(client, CONTACTS_XJOIN, {"Prefer": "odata.maxpagesize=4"}, **params)
    expected = {r["InternalCode"] for r in live(store, "ContactEmployees") if r["_modified"][:10] >= day}
    contacts = [v["BusinessPartners/ContactEmployees"] for v in values]
    assert sorted(c["InternalCode"] for c in contacts) == sorted(expected)
    assert pages > 1
    stamps = [(c["UpdateDate"], c["UpdateTime"]) for c in contacts]
    assert stamps == sorted(stamps)
    assert set(values[0]) == {"BusinessPartners", "BusinessPartners/ContactEmployees"}
    assert set(values[0]["BusinessPartners"]) == {"CardCode"}


def test_fields_added_later_show_up_in_metadata_and_entities(tmp_path: Path) -> None:
    path = make_store(tmp_path / "b1.sqlite")
    with (
        SapB1Simulator(path, company_db=COMPANY, username=USER, password=PASSWORD) as sim,
        session(sim) as http,
    ):
        before = http.get("/$metadata")
        assert before.headers["Content-Type"].startswith("application/xml")
        assert 'EntityType Name="BusinessPartner"' in before.text
        assert "U_Tier" not in before.text
        add_field(path, "BusinessPartners", "U_Tier", default="Gold")
        add_field(path, "ContactEmployees", "U_Newsletter", default="Y")
        after = http.get("/$metadata").text
        assert '<Property Name="U_Tier" Type="Edm.String"/>' in after
        assert after.index("U_Newsletter") < after.index(
            'EntityType Name="BusinessPartner"'
        )  # in ContactEmployee
        partner = http.get("/BusinessPartners", params={"$top": "1"}).json()["value"][0]
        assert partner["U_Tier"] == "Gold"
        assert partner["ContactEmployees"][0]["U_Newsletter"] == "Y"
        chosen = http.get("/BusinessPartners", params={"$select": "CardCode,U_Tier", "$top": "2"}).json()
        assert chosen["value"][0] == {"CardCode": chosen["value"][0]["CardCode"], "U_Tier": "Gold"}


def test_a_proxy_rate_limit_answers_429_with_retry_after(client: httpx.Client, sim: SapB1Simulator) -> None:
    sim.rate_limit = RateLimit(2, 30.0)
    try:
        assert [client.get("/Industries").status_code for _ in range(2)] == [200, 200]
        limited = client.get("/Industries")
        assert limited.status_code == 429
        assert int(limited.headers["Retry-After"]) >= 1
        assert "Too Many Requests" in limited.text
    finally:
        sim.rate_limit = None


def test_injected_faults_answer_with_service_layer_bodies(client: httpx.Client, sim: SapB1Simulator) -> None:
    sim.faults.fail_next(500, 400, 403, 404, 401, 503, 502)
    try:
        answers = [client.get("/BusinessPartners") for _ in range(7)]
    finally:
        sim.faults.clear()
    codes = [(a.status_code, a.json()["error"]["code"]) for a in answers[:5]]
    assert codes == [(500, -1), (400, -1000), (403, -1), (404, -2028), (401, 301)]
    assert all(a.json()["error"]["message"]["lang"] == "en-us" for a in answers[:5])
    assert [a.status_code for a in answers[5:]] == [503, 502]
    assert all(a.headers["Content-Type"].startswith("text/html") for a in answers[5:])  # the Apache front


def test_writes_create_update_and_refuse_per_record(tmp_path: Path) -> None:
    path = make_store(tmp_path / "b1.sqlite")
    with (
        SapB1Simulator(path, company_db=COMPANY, username=USER, password=PASSWORD) as sim,
        session(sim) as http,
    ):
        # Upsert by CardCode the only way B1 allows: PATCH, and POST when the PATCH finds nothing.
        patch = http.patch("/BusinessPartners('C90001')", json={"CardName": "Kanal GmbH"})
        assert patch.status_code == 404
        assert patch.json()["error"]["code"] == -2028
        body = {
            "CardCode": "C90001",
            "CardName": "Kanal GmbH",
            "Country": "DE",
            "ContactEmployees": [{"Name": "Eva Kern", "FirstName": "Eva", "LastName": "Kern"}],
        }
        created = http.post("/BusinessPartners", json=body)
        assert created.status_code == 201
        entity = created.json()
        assert entity["CardCode"] == "C90001"
        assert entity["CardType"] == "cCustomer"
        assert entity["ContactEmployees"][0]["Name"] == "Eva Kern"
        assert created.headers["Location"].endswith("/b1s/v1/BusinessPartners('C90001')")
        stored = fetch_records(path, "BusinessPartners", ["C90001"], with_meta=True)[0]
        assert stored["CardName"] == "Kanal GmbH"
        assert [
            c["FirstName"] for c in fetch_records(path, "ContactEmployees") if c["CardCode"] == "C90001"
        ] == ["Eva"]

        duplicate = http.post("/BusinessPartners", json={"CardCode": "C90001", "CardName": "Again"})
        assert duplicate.status_code == 400
        assert duplicate.json()["error"]["code"] == -10
        assert "1320000140" in duplicate.json()["error"]["message"]["value"]
        nameless = http.post("/BusinessPartners", json={"CardCode": "C90002", "City": "Bremen"})
        assert nameless.status_code == 400
        assert nameless.json()["error"]["code"] == -10
        assert not fetch_records(path, "BusinessPartners", ["C90002"])
        unknown = http.post("/BusinessPartners", json={"CardCode": "C90003", "CardName": "X", "Shoe": 1})
        assert unknown.status_code == 400
        assert unknown.json()["error"]["code"] == -1000

        sim.record_faults["C90001"] = ["-2039"]
        failed = http.patch("/BusinessPartners('C90001')", json={"CardName": "Kanal AG"})
        assert failed.status_code == 400
        assert failed.json()["error"]["code"] == -2039
        updated = http.patch("/BusinessPartners('C90001')", json={"CardName": "Kanal AG"})
        assert updated.status_code == 204
        assert updated.content == b""
        after = fetch_records(path, "BusinessPartners", ["C90001"], with_meta=True)[0]
        assert after["CardName"] == "Kanal AG"
        assert after["_modified"] >= stored["_modified"]
        today = datetime.now(UTC).date().isoformat()
        fresh = http.get(
            "/BusinessPartners", params={"$filter": f"UpdateDate ge '{today}'", "$select": "CardCode"}
        )
        assert "C90001" in {v["CardCode"] for v in fresh.json()["value"]}

        assert http.delete("/BusinessPartners('C90001')").status_code == 204
        assert http.get("/BusinessPartners('C90001')").status_code == 404
        assert not [c for c in fetch_records(path, "ContactEmployees") if c["CardCode"] == "C90001"]


def test_lookups_for_industry_stage_and_currency(client: httpx.Client) -> None:
    industries = client.get("/Industries").json()["value"]
    assert industries[0] == {
        "IndustryCode": 1,
        "IndustryName": "Manufacturing",
        "IndustryDescription": "Manufacturing",
    }
    stages = client.get("/SalesStages").json()["value"]
    assert [s["SequenceNo"] for s in stages] == [1, 2, 3, 4, 5]
    assert client.post("/CompanyService_GetAdminInfo").json()["LocalCurrency"] == "EUR"


def test_sandbox_contract_starts_with_fresh_credentials_and_a_write_case(tmp_path: Path) -> None:
    path = make_store(tmp_path / "b1.sqlite")
    codes = [r["CardCode"] for r in fetch_records(path, "BusinessPartners", include_deleted=True)]
    assert all(c.startswith("C") and c[1:].isdigit() for c in codes)
    assert len(set(codes)) == len(codes)
    started = SANDBOX.start(path)
    try:
        env = started.env
        assert set(env) == {"SAP_B1_BASE_URL", "SAP_B1_COMPANY_DB", "SAP_B1_USERNAME", "SAP_B1_PASSWORD"}
        http = httpx.Client(base_url=env["SAP_B1_BASE_URL"] + "/b1s/v1")
        login = {
            "CompanyDB": env["SAP_B1_COMPANY_DB"],
            "UserName": env["SAP_B1_USERNAME"],
            "Password": env["SAP_B1_PASSWORD"],
        }
        assert http.post("/Login", json=login).status_code == 200
        case = SANDBOX.write_case(path)
        for record in case.accepted:
            key = record[case.external_id_field]
            assert http.patch(f"/{case.object_name}('{key}')", json=record).status_code == 404
            assert http.post(f"/{case.object_name}", json=record).status_code == 201
            assert http.patch(f"/{case.object_name}('{key}')", json=record).status_code == 204
        for record in case.rejected:
            refused = http.post(f"/{case.object_name}", json=record)
            assert refused.status_code == 400
            assert str(refused.json()["error"]["code"]) == case.rejected_code
        http.close()
    finally:
        started.simulator.stop()


def test_a_patch_by_key_sets_udfs_and_contacts_that_the_next_query_reads_back(tmp_path: Path) -> None:
    path = make_store(tmp_path / "b1.sqlite")
    with (
        SapB1Simulator(path, company_db=COMPANY, username=USER, password=PASSWORD) as sim,
        session(sim) as http,
    ):
        contact = sorted(live(path, "ContactEmployees"), key=lambda r: r["InternalCode"])[0]
        card = contact["CardCode"]
        partners_before = len(live(path, "BusinessPartners"))
        patched = http.patch(f"/BusinessPartners('{card}')", json={"U_ErpCustomerNo": "K-50801"})
        assert patched.status_code == 204
        # A contact person is changed through its partner; the partner's other contacts stay.
        siblings = sorted(r["InternalCode"] for r in live(path, "ContactEmployees") if r["CardCode"] == card)
        line = {"InternalCode": contact["InternalCode"], "E_Mail": "ap@erp.example"}
        assert (
            http.patch(f"/BusinessPartners('{card}')", json={"ContactEmployees": [line]}).status_code == 204
        )
        deal = sorted(live(path, "SalesOpportunities"), key=lambda r: r["SequentialNo"])[0]["SequentialNo"]
        invoices = {"U_ErpOrderNo": "SO-24017", "U_ErpInvoiceNos": "INV-88001,INV-88002"}
        assert http.patch(f"/SalesOpportunities({deal})", json=invoices).status_code == 204

        # What a user queries: the partner by its ERP number, changed today (UpdateDate moved).
        today = datetime.now(UTC).date().isoformat()
        found = http.get(
            "/BusinessPartners",
            params={
                "$filter": f"U_ErpCustomerNo eq 'K-50801' and UpdateDate ge '{today}'",
                "$select": "CardCode,U_ErpCustomerNo,UpdateDate,UpdateTime,ContactEmployees",
            },
        ).json()["value"]
        assert [p["CardCode"] for p in found] == [card]
        assert sorted(c["InternalCode"] for c in found[0]["ContactEmployees"]) == siblings
        emails = {c["InternalCode"]: c["E_Mail"] for c in found[0]["ContactEmployees"]}
        assert emails[contact["InternalCode"]] == "ap@erp.example"
        changed = http.get(
            CONTACTS_XJOIN,
            params={
                "$expand": "BusinessPartners/ContactEmployees($select=InternalCode,E_Mail,UpdateDate)",
                "$filter": "BusinessPartners/CardCode eq BusinessPartners/ContactEmployees/CardCode"
                f" and BusinessPartners/ContactEmployees/UpdateDate ge '{today}'",
            },
        ).json()["value"]
        assert [c["BusinessPartners/ContactEmployees"]["InternalCode"] for c in changed] == [
            contact["InternalCode"]
        ]
        [opportunity] = http.get(
            "/SalesOpportunities",
            params={
                "$filter": "U_ErpOrderNo eq 'SO-24017'",
                "$select": "SequentialNo,U_ErpInvoiceNos,CreateDate",
            },
        ).json()["value"]
        assert opportunity["SequentialNo"] == deal
        assert opportunity["U_ErpInvoiceNos"] == "INV-88001,INV-88002"
        metadata = http.get("/$metadata").text
        assert '<Property Name="U_ErpCustomerNo" Type="Edm.String"/>' in metadata

        # Unknown keys are 404 -2028 and create nothing; so is a contact of another partner.
        missing = http.patch("/BusinessPartners('C00000000')", json={"U_ErpCustomerNo": "K-1"})
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == -2028
        other = next(r for r in live(path, "ContactEmployees") if r["CardCode"] != card)
        foreign = {"ContactEmployees": [{"InternalCode": other["InternalCode"], "E_Mail": "x@example.com"}]}
        refused = http.patch(f"/BusinessPartners('{card}')", json=foreign)
        assert refused.status_code == 404
        assert refused.json()["error"]["code"] == -2028
        assert (
            fetch_records(path, "ContactEmployees", [other["InternalCode"]])[0]["CardCode"]
            == other["CardCode"]
        )
        assert http.patch("/SalesOpportunities(999999999)", json=invoices).status_code == 404
        assert len(live(path, "BusinessPartners")) == partners_before
