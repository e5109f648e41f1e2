"""The Creatio simulator, driven over HTTP the way an OData 4 integration drives Creatio."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from crm_pipelines_sandbox.simulators.base import Faults, RateLimit
from crm_pipelines_sandbox.simulators.creatio import SANDBOX, CreatioSimulator
from crm_pipelines_sandbox.simulators.creatio_schema import (
    LEAD_SOURCES,
    MAX_ROWS,
    QUALIFY_STATUS_IDS,
    QUALIFY_STATUSES,
    STAGE_IDS,
    country_id,
)
from crm_pipelines_sandbox.simulators.records import (
    add_field,
    count_records,
    delete_records,
    fetch_records,
    touch_records,
)
from crm_pipelines_sandbox.systems import Started, build_store, sample_seeds

AS_OF = date(2026, 11, 25)
LOGIN = "/ServiceModel/AuthService.svc/Login"
ODATA = "/0/odata"


def make_store(path: Path) -> Path:
    build_store(path, SANDBOX, sample_seeds(accounts=40, as_of=AS_OF))
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("creatio") / "creatio.sqlite")


@pytest.fixture(scope="module")
def started(store: Path) -> Iterator[Started]:
    running = SANDBOX.start(store)
    yield running
    running.simulator.stop()


@contextmanager
def session_for(base_url: str, user: str, password: str) -> Iterator[httpx.Client]:
    """Log in like an integration does: keep the cookies, send BPMCSRF back as a header."""
    with httpx.Client(base_url=base_url, timeout=10, headers={"ForceUseSession": "true"}) as http:
        answer = http.post(LOGIN, json={"UserName": user, "UserPassword": password})
        assert answer.status_code == 200, answer.text
        assert answer.json()["Code"] == 0, answer.text
        http.headers["BPMCSRF"] = http.cookies["BPMCSRF"]
        yield http


def session(sim: CreatioSimulator) -> AbstractContextManager[httpx.Client]:
    return session_for(sim.base_url, sim.username, sim.password)


@pytest.fixture
def client(started: Started) -> Iterator[httpx.Client]:
    env = started.env
    with session_for(env["CREATIO_BASE_URL"], env["CREATIO_USERNAME"], env["CREATIO_PASSWORD"]) as http:
        yield http


def read_all(client: httpx.Client, collection: str, page: int, **params: str) -> list[dict[str, Any]]:
    """$top/$skip paging (Creatio sends no next links) until a short page."""
    records: list[dict[str, Any]] = []
    while True:
        answer = client.get(
            f"{ODATA}/{collection}", params={**params, "$top": str(page), "$skip": str(len(records))}
        )
        assert answer.status_code == 200, answer.text
        value = answer.json()["value"]
        assert "@odata.nextLink" not in answer.json()
        records.extend(value)
        if len(value) < page:
            return records


def test_login_sets_the_documented_cookies_and_wrong_passwords_get_code_1(started: Started) -> None:
    env = started.env
    with httpx.Client(base_url=env["CREATIO_BASE_URL"]) as http:
        wrong = http.post(LOGIN, json={"UserName": env["CREATIO_USERNAME"], "UserPassword": "nope"})
        assert wrong.status_code == 200
        body = wrong.json()
        assert body["Code"] == 1
        assert body["Message"]
        assert body["Exception"] is None
        assert "set-cookie" not in wrong.headers
        good = http.post(
            LOGIN, json={"UserName": env["CREATIO_USERNAME"], "UserPassword": env["CREATIO_PASSWORD"]}
        )
        assert good.json() == {
            "Code": 0,
            "Message": "",
            "Exception": None,
            "PasswordChangeUrl": None,
            "RedirectUrl": None,
        }
        assert {".ASPXAUTH", "BPMCSRF", "BPMLOADER", "UserName"} <= set(http.cookies)
        assert http.cookies["UserName"] == "|".join(str(ord(c)) for c in env["CREATIO_USERNAME"])
        without_csrf = http.get(f"{ODATA}/Account", params={"$top": "1"})
        assert without_csrf.status_code == 401
        assert without_csrf.json()["error"]["message"]
        with_csrf = http.get(
            f"{ODATA}/Account", params={"$top": "1"}, headers={"BPMCSRF": http.cookies["BPMCSRF"]}
        )
        assert with_csrf.status_code == 200
    assert httpx.get(f"{env['CREATIO_BASE_URL']}{ODATA}/Account").status_code == 401


def test_sessions_time_out_and_expire_tokens_ends_them(store: Path) -> None:
    with CreatioSimulator(store, session_ttl_seconds=0.3) as sim:
        with session(sim) as http:
            assert http.get(f"{ODATA}/Account", params={"$top": "1"}).status_code == 200
            time.sleep(0.2)
            assert http.get(f"{ODATA}/Account", params={"$top": "1"}).status_code == 200  # sliding timeout
            time.sleep(0.4)
            assert http.get(f"{ODATA}/Account", params={"$top": "1"}).status_code == 401
        with session(sim) as http:
            sim.expire_tokens()
            assert http.get(f"{ODATA}/Account", params={"$top": "1"}).status_code == 401
            http.post(LOGIN, json={"UserName": sim.username, "UserPassword": sim.password})
            http.headers["BPMCSRF"] = http.cookies["BPMCSRF"]
            assert http.get(f"{ODATA}/Account", params={"$top": "1"}).status_code == 200


def test_top_skip_paging_returns_each_live_record_once(client: httpx.Client, store: Path) -> None:
    records = read_all(
        client, "Contact", 9, **{"$select": "Id,Name,Email", "$orderby": "ModifiedOn asc,Id asc"}
    )
    live = {r["Id"] for r in fetch_records(store, "Contact")}
    ids = [r["Id"] for r in records]
    assert len(ids) == len(set(ids)) == len(live)
    assert set(ids) == live
    assert all(set(r) == {"Id", "Name", "Email"} for r in records)
    counted = client.get(f"{ODATA}/Contact", params={"$count": "true", "$top": "1"}).json()
    assert counted["@odata.count"] == len(live)
    assert len(counted["value"]) == 1
    assert counted["@odata.context"].endswith("/0/odata/$metadata#Contact")


def test_a_request_returns_at_most_20000_rows(client: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    import crm_pipelines_sandbox.simulators.creatio as creatio

    monkeypatch.setattr(creatio, "MAX_ROWS", 5)  # the 20,000 cap, scaled down to the sample
    assert len(client.get(f"{ODATA}/Account").json()["value"]) == 5
    assert len(client.get(f"{ODATA}/Account", params={"$top": "50"}).json()["value"]) == 5
    assert len(client.get(f"{ODATA}/Account", params={"$top": "50", "$skip": "5"}).json()["value"]) == 5
    assert MAX_ROWS == 20_000


def test_select_expand_and_unknown_properties(client: httpx.Client, store: Path) -> None:
    full = client.get(f"{ODATA}/Account", params={"$top": "1"}).json()["value"][0]
    assert {"Id", "Name", "Code", "Web", "Phone", "Address", "CountryId", "OwnerId", "ModifiedOn"} <= set(
        full
    )
    expanded = client.get(
        f"{ODATA}/Account",
        params={
            "$top": "1",
            "$select": "Name,CountryId",
            "$expand": "Country($select=Name),Industry($select=Name)",
        },
    ).json()["value"][0]
    assert expanded["Country"]["Id"] == expanded["CountryId"]
    assert expanded["Country"]["Name"]
    assert set(expanded) == {"Name", "CountryId", "Country", "Industry"}
    deal = client.get(
        f"{ODATA}/Opportunity",
        params={
            "$top": "1",
            "$select": "Amount",
            "$expand": "Stage($select=Name),Currency($select=ShortName)",
        },
        headers={"Accept": "application/json; IEEE754Compatible=true"},
    ).json()["value"][0]
    assert isinstance(deal["Amount"], str)
    assert deal["Currency"]["ShortName"] in ("EUR", "GBP", "CHF", "USD")
    assert deal["Stage"]["Name"] in (
        "Qualification",
        "Presentation",
        "Proposal",
        "Negotiation",
        "Closed won",
        "Closed lost",
    )
    bad = client.get(f"{ODATA}/Account", params={"$select": "Name,Nope"})
    assert bad.status_code == 400
    assert bad.json()["error"]["message"].endswith(
        "Could not find a property named 'Nope' on type 'Terrasoft.Configuration.Account'."
    )
    assert client.get(f"{ODATA}/Widget").status_code == 404
    countries = client.get(f"{ODATA}/Country", params={"$select": "Id,Name"}).json()["value"]
    assert {"Id": country_id("Germany"), "Name": "Germany"} in countries


def test_modified_on_filter_bounds_are_exact(client: httpx.Client, store: Path) -> None:
    rows = fetch_records(store, "Account")
    bound = sorted(r["ModifiedOn"] for r in rows)[len(rows) // 2]
    ge = read_all(client, "Account", 7, **{"$filter": f"ModifiedOn ge {bound}", "$select": "ModifiedOn"})
    gt = read_all(client, "Account", 7, **{"$filter": f"ModifiedOn gt {bound}", "$select": "ModifiedOn"})
    window = read_all(
        client,
        "Account",
        7,
        **{
            "$filter": f"ModifiedOn ge {bound} and ModifiedOn lt 2027-01-01T00:00:00Z",
            "$orderby": "ModifiedOn asc,Id asc",
        },
    )
    assert {r["ModifiedOn"] for r in ge} - {r["ModifiedOn"] for r in gt} == {bound}
    assert [r["ModifiedOn"] for r in window] == sorted(r["ModifiedOn"] for r in ge)
    lt = client.get(
        f"{ODATA}/Account", params={"$filter": f"ModifiedOn lt {bound}", "$count": "true", "$top": "0"}
    )
    assert lt.json()["@odata.count"] + len(ge) == len(rows)
    account = rows[0]
    for expression in (f"AccountId eq {account['Id']}", f"Account/Id eq {account['Id']}"):
        contacts = client.get(f"{ODATA}/Contact", params={"$filter": expression}).json()["value"]
        assert contacts
        assert {c["AccountId"] for c in contacts} == {account["Id"]}
    coded = client.get(f"{ODATA}/Account", params={"$filter": f"Code eq '{account['Code']}'"}).json()["value"]
    assert [a["Id"] for a in coded] == [account["Id"]]
    wrong = client.get(f"{ODATA}/Account", params={"$filter": "ModifiedOn ge 'yesterday'"})
    assert wrong.status_code == 400
    assert "incompatible types" in wrong.json()["error"]["message"]


def test_deleted_records_disappear_and_metadata_lists_fields_added_later(tmp_path: Path) -> None:
    path = make_store(tmp_path / "creatio.sqlite")
    add_field(path, "Account", "UsrSegment", default="Enterprise")
    with CreatioSimulator(path) as sim, session(sim) as http:
        before = read_all(http, "Account", 50, **{"$select": "Id"})
        gone = before[0]["Id"]
        delete_records(path, "Account", [gone], datetime(2026, 11, 26, tzinfo=UTC))
        after = read_all(http, "Account", 50, **{"$select": "Id"})
        assert {r["Id"] for r in before} - {r["Id"] for r in after} == {gone}  # no tombstone anywhere
        assert http.get(f"{ODATA}/Account({gone})").status_code == 404
        metadata = http.get(f"{ODATA}/$metadata")
        assert metadata.headers["Content-Type"].startswith("application/xml")
        assert '<Property Name="UsrSegment" Type="Edm.String" />' in metadata.text
        assert '<Property Name="ModifiedOn" Type="Edm.DateTimeOffset" />' in metadata.text
        assert (
            http.get(f"{ODATA}/Account", params={"$top": "1"}).json()["value"][0]["UsrSegment"]
            == "Enterprise"
        )
        names = [s["name"] for s in http.get(f"{ODATA}/").json()["value"]]
        assert {"Account", "Contact", "Opportunity", "Country"} <= set(names)


def test_rate_limit_and_injected_faults_answer_with_odata_errors(store: Path) -> None:
    faults = Faults()
    with CreatioSimulator(store, rate_limit=RateLimit(3, 1.0), faults=faults) as sim, session(sim) as http:
        answers = [http.get(f"{ODATA}/Account", params={"$top": "1"}) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert int(answers[-1].headers["Retry-After"]) >= 1
        assert answers[-1].json()["error"]["message"]
        time.sleep(1.05)
        faults.fail_next(400, 401, 403, 404, 500, 503)
        statuses = []
        for _ in range(6):
            answer = http.get(f"{ODATA}/Account", params={"$top": "1"})
            statuses.append(answer.status_code)
            assert set(answer.json()["error"]) == {"code", "message"}
        assert statuses == [400, 401, 403, 404, 500, 503]


def test_create_update_and_json_batch_with_lookup_first(tmp_path: Path) -> None:
    path = make_store(tmp_path / "creatio.sqlite")
    case = SANDBOX.write_case(path)
    baseline = count_records(path, "Account")
    with CreatioSimulator(path) as sim, session(sim) as http:
        created = http.post(f"{ODATA}/Account", json={"Name": "Fjord Maritime AS", "Code": "WB-1"})
        assert created.status_code == 201
        assert created.json()["Code"] == "WB-1"
        new_id = created.json()["Id"]
        assert created.headers["Location"].endswith(f"/0/odata/Account({new_id})")
        assert http.patch(f"{ODATA}/Account({new_id})", json={"Phone": "+47 1"}).status_code == 204
        assert (
            http.patch(
                f"{ODATA}/Account(00000000-0000-0000-0000-000000000000)", json={"Phone": "x"}
            ).status_code
            == 404
        )
        refused = http.post(f"{ODATA}/Account", json={"Code": "WB-2"})
        assert refused.status_code == 400
        assert "Name" in refused.json()["error"]["message"]
        assert http.post(f"{ODATA}/Account", json={"Name": "x", "Nope": 1}).status_code == 400

        # Upsert by Code: look the codes up, then create or update in one JSON batch.
        def upsert_batch(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            codes = " or ".join(f"Code eq '{r['Code']}'" for r in records)
            lookup = http.get(f"{ODATA}/Account", params={"$filter": codes, "$select": "Id,Code"})
            found = {r["Code"]: r["Id"] for r in lookup.json()["value"]}
            requests = [
                {"method": "PATCH", "url": f"Account({found[r['Code']]})", "id": str(n), "body": r}
                if r["Code"] in found
                else {"method": "POST", "url": "Account", "id": str(n), "body": r}
                for n, r in enumerate(records)
            ]
            answer = http.post(
                f"{ODATA}/$batch", json={"requests": requests}, headers={"Prefer": "continue-on-error"}
            )
            assert answer.status_code == 200
            return requests, answer.json()["responses"]

        sim.record_faults["WB-20002"] = ["HTTP_503"]
        requests, responses = upsert_batch([*case.accepted, *case.rejected])
        assert [(r["id"], r["status"]) for r in responses] == [("0", 201), ("1", 503), ("2", 201), ("3", 400)]
        assert responses[3]["body"]["error"]["code"] == ""
        assert case.rejected_code == "HTTP_400"
        assert responses[0]["body"]["Code"] == "WB-20001"
        assert responses[1]["body"]["error"]["code"] == ""
        retry = http.post(f"{ODATA}/$batch", json={"requests": [requests[1]]})
        assert [r["status"] for r in retry.json()["responses"]] == [201]
        _, again = upsert_batch(case.accepted)
        assert [r["status"] for r in again] == [204, 204, 204]  # found by Code: updated, not duplicated
        stored = {r["Code"]: r["Name"] for r in fetch_records(path, "Account")}
        assert stored["WB-20001"] == "Fjord Maritime AS"
        assert stored["WB-20002"] == "Tramontana Foods S.L."
        assert stored["WB-20004"] == "Kestrel Avionics Ltd"
        assert "WB-20003" not in stored

        stops = http.post(f"{ODATA}/$batch", json={"requests": [requests[3], {**requests[0], "id": "again"}]})
        assert [r["status"] for r in stops.json()["responses"]] == [400]  # the rest is not executed
        too_many = http.post(f"{ODATA}/$batch", json={"requests": [requests[0]] * 101})
        assert too_many.status_code == 400
        assert count_records(path, "Account") == baseline + 4  # WB-1 and the three new ones
        touch_records(path, "Account", [new_id], datetime(2026, 11, 27, tzinfo=UTC), {"Name": "Renamed"})
        assert http.get(f"{ODATA}/Account({new_id})").json()["Name"] == "Renamed"


def test_sandbox_contract(store: Path, started: Started) -> None:
    assert set(started.env) == {"CREATIO_BASE_URL", "CREATIO_USERNAME", "CREATIO_PASSWORD"}
    settings = SANDBOX.connection(started)
    assert settings.base_url == started.env["CREATIO_BASE_URL"]
    assert settings.username == started.env["CREATIO_USERNAME"]
    assert set(SANDBOX.stage_values) == set(STAGE_IDS)
    assert {d["StageId"] for d in fetch_records(store, "Opportunity")} <= set(STAGE_IDS.values())


def test_a_patch_by_id_updates_custom_columns_that_an_odata_query_reads_back(tmp_path: Path) -> None:
    path = make_store(tmp_path / "creatio.sqlite")
    with CreatioSimulator(path) as sim, session(sim) as http:
        deal = http.get(f"{ODATA}/Opportunity", params={"$top": "1", "$orderby": "Id asc"}).json()["value"][0]
        assert {"UsrErpOrderNumber", "UsrErpInvoiceNumbers", "CreatedById", "ModifiedById"} <= set(deal)
        time.sleep(1.05)  # ModifiedOn is shown to the second
        changes = {"UsrErpOrderNumber": "SO-24017", "UsrErpInvoiceNumbers": "INV-88001,INV-88002"}
        assert http.patch(f"{ODATA}/Opportunity({deal['Id']})", json=changes).status_code == 204

        # What a user asks OData: the deal by its ERP order number, changed after the deal's last save.
        found = http.get(
            f"{ODATA}/Opportunity",
            params={
                "$filter": f"UsrErpOrderNumber eq 'SO-24017' and ModifiedOn gt {deal['ModifiedOn']}",
                "$select": "Id,Title,UsrErpOrderNumber,UsrErpInvoiceNumbers,ModifiedOn,ModifiedById",
            },
        ).json()["value"]
        assert [r["Id"] for r in found] == [deal["Id"]]
        assert found[0]["UsrErpInvoiceNumbers"] == "INV-88001,INV-88002"
        assert found[0]["ModifiedById"] == deal["CreatedById"]  # the Supervisor's contact saved it
        metadata = http.get(f"{ODATA}/$metadata").text
        assert '<Property Name="UsrErpCustomerNumber" Type="Edm.String" />' in metadata
        assert '<NavigationProperty Name="ModifiedBy" Type="Terrasoft.Configuration.Contact" />' in metadata

        # Updates in one JSON $batch: an Id Creatio does not have is 404 and creates nothing, the
        # requests after it still run (continue-on-error).
        accounts = read_all(http, "Account", 50, **{"$select": "Id"})[:2]
        before = count_records(path, "Account")
        requests = [
            {
                "method": "PATCH",
                "url": f"/0/odata/Account({accounts[0]['Id']})",
                "id": "0",
                "body": {"UsrErpCustomerNumber": "K-1"},
            },
            {
                "method": "PATCH",
                "url": "/0/odata/Account(0b4f7f0e-0000-4000-8000-00000000dead)",
                "id": "1",
                "body": {"UsrErpCustomerNumber": "K-2"},
            },
            {
                "method": "PATCH",
                "url": f"/0/odata/Account({accounts[1]['Id']})",
                "id": "2",
                "body": {"UsrErpCustomerNumber": "K-3"},
            },
        ]
        answer = http.post(
            f"{ODATA}/$batch", json={"requests": requests}, headers={"Prefer": "continue-on-error"}
        )
        assert [(r["id"], r["status"]) for r in answer.json()["responses"]] == [
            ("0", 204),
            ("1", 404),
            ("2", 204),
        ]
        assert count_records(path, "Account") == before
        numbers = http.get(
            f"{ODATA}/Account",
            params={"$filter": "UsrErpCustomerNumber ne null", "$select": "Id,UsrErpCustomerNumber"},
        )
        assert {r["Id"]: r["UsrErpCustomerNumber"] for r in numbers.json()["value"]} == {
            accounts[0]["Id"]: "K-1",
            accounts[1]["Id"]: "K-3",
        }


# --- leads -------------------------------------------------------------------------------------


def test_leads_are_served_with_their_stage_source_and_qualified_contact(
    client: httpx.Client, store: Path
) -> None:
    leads = read_all(
        client,
        "Lead",
        4,
        **{
            "$orderby": "Id asc",
            "$expand": "Country($select=Name),QualifyStatus($select=Name),LeadSource($select=Name)",
        },
    )
    stored = {str(r["Id"]): r for r in fetch_records(store, "Lead")}
    assert [lead["Id"] for lead in leads] == sorted(stored) != []
    lead = leads[0]
    assert set(lead) >= {
        "Id", "LeadName", "Contact", "Account", "Email", "MobilePhone", "BusinessPhone", "FullJobTitle",
        "CountryId", "QualifyStatusId", "LeadSourceId", "QualifiedContactId", "CreatedOn", "ModifiedOn",
    }  # fmt: skip
    # Contact and Account are the names as typed; the stage and source are lookups $expand names.
    assert isinstance(lead["Contact"], str)
    assert " " in lead["Contact"]
    stages = {lead["QualifyStatus"]["Name"] for lead in leads}
    assert stages <= set(QUALIFY_STATUSES)
    assert {"Qualification", "Disqualified"} <= stages
    assert all(
        lead["QualifyStatus"]["Id"] == QUALIFY_STATUS_IDS[lead["QualifyStatus"]["Name"]] for lead in leads
    )
    assert {lead["LeadSource"]["Name"] for lead in leads if lead["LeadSource"]} <= set(LEAD_SOURCES)
    # The contact a converted lead was qualified into is a Contact of the same instance.
    contacts = {str(r["Id"]) for r in fetch_records(store, "Contact", include_deleted=True)}
    converted = [lead for lead in leads if lead["QualifyStatus"]["Name"] in ("Awaiting sale", "Converted")]
    assert converted
    assert all(lead["QualifiedContactId"] in contacts for lead in converted if lead["QualifiedContactId"])
    assert any(lead["QualifiedContactId"] for lead in converted)
    qualified = client.get(
        f"{ODATA}/Lead",
        params={"$filter": f"QualifyStatusId eq {QUALIFY_STATUS_IDS['Qualification']}", "$select": "Id"},
    ).json()["value"]
    assert {r["Id"] for r in qualified} == {
        i for i, r in stored.items() if r["QualifyStatusId"] == QUALIFY_STATUS_IDS["Qualification"]
    }
    # The lookup collections list their records, and $metadata the lead's properties.
    names = {r["Name"] for r in client.get(f"{ODATA}/QualifyStatus").json()["value"]}
    assert names == set(QUALIFY_STATUSES)
    metadata = client.get(f"{ODATA}/$metadata").text
    assert '<EntityType Name="Lead">' in metadata
    assert '<Property Name="QualifyStatusId" Type="Edm.Guid" />' in metadata
    assert '<NavigationProperty Name="QualifiedContact" Type="Terrasoft.Configuration.Contact" />' in metadata


def test_leads_changed_since_a_modified_on_bound_and_deleted_ones_gone(tmp_path: Path) -> None:
    path = make_store(tmp_path / "creatio.sqlite")
    keys = sorted(str(r["Id"]) for r in fetch_records(path, "Lead"))
    edited, gone = keys[:2]
    at = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    touch_records(path, "Lead", [edited], at, {"QualifyStatusId": QUALIFY_STATUS_IDS["Handoff to sales"]})
    delete_records(path, "Lead", [gone], at)
    with CreatioSimulator(path) as sim, session(sim) as http:
        changed = http.get(
            f"{ODATA}/Lead",
            params={
                "$filter": "ModifiedOn ge 2026-11-26T08:00:00Z",
                "$expand": "QualifyStatus($select=Name)",
            },
        ).json()["value"]
        assert [r["Id"] for r in changed] == [edited]
        assert changed[0]["QualifyStatus"]["Name"] == "Handoff to sales"
        assert changed[0]["ModifiedOn"] == "2026-11-26T08:00:00Z"
        every = read_all(http, "Lead", 50, **{"$select": "Id"})
        assert {r["Id"] for r in every} == set(keys) - {gone}
        assert http.get(f"{ODATA}/Lead({gone})").status_code == 404
