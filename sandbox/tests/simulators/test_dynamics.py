"""The Dataverse (Dynamics 365) simulator, driven over HTTP the way a Web API client drives it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from crm_pipelines_sandbox.simulators.base import Faults, RateLimit
from crm_pipelines_sandbox.simulators.dynamics import SANDBOX, DynamicsSimulator
from crm_pipelines_sandbox.simulators.records import (
    add_field,
    count_records,
    delete_records,
    fetch_records,
    insert_records,
    touch_records,
)
from crm_pipelines_sandbox.systems import Started, build_store, sample_seeds

AS_OF = date(2026, 11, 25)
API = "/api/data/v9.2"


def make_store(path: Path) -> Path:
    build_store(path, SANDBOX, sample_seeds(accounts=40, as_of=AS_OF))
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("dynamics") / "dynamics.sqlite")


@pytest.fixture(scope="module")
def started(store: Path) -> Iterator[Started]:
    running = SANDBOX.start(store)
    yield running
    running.simulator.stop()


def token_for(env: dict[str, str], **overrides: str) -> httpx.Response:
    form = {
        "grant_type": "client_credentials",
        "client_id": env["DYNAMICS_CLIENT_ID"],
        "client_secret": env["DYNAMICS_CLIENT_SECRET"],
        "scope": f"{env['DYNAMICS_BASE_URL']}/.default",
    }
    return httpx.post(env["DYNAMICS_TOKEN_URL"], data={**form, **overrides})


def client_for(env: dict[str, str]) -> httpx.Client:
    token = token_for(env).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json", "OData-Version": "4.0"}
    return httpx.Client(base_url=env["DYNAMICS_BASE_URL"], headers=headers, timeout=10)


@pytest.fixture
def client(started: Started) -> Iterator[httpx.Client]:
    with client_for(started.env) as http:
        yield http


def read_all(
    client: httpx.Client, url: str, *, page_size: int | None = None, params: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Follow @odata.nextLink; returns the records and every page body."""
    headers = {"Prefer": f"odata.maxpagesize={page_size}"} if page_size else {}
    response = client.get(url, params=params, headers=headers)
    pages = []
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body)
        if "@odata.nextLink" not in body:
            break
        response = client.get(body["@odata.nextLink"], headers=headers)
    return [r for page in pages for r in page["value"]], pages


def test_client_credentials_token_and_aadsts_refusals(started: Started) -> None:
    env = started.env
    good = token_for(env)
    assert good.status_code == 200
    body = good.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == body["ext_expires_in"] == 3599
    assert body["access_token"].count(".") == 2  # a JWT's shape

    cases = [
        ({"client_secret": "wrong"}, 401, "invalid_client", 7000215),
        ({"client_id": "00000000-0000-0000-0000-000000000000"}, 400, "unauthorized_client", 700016),
        ({"scope": "https://other.crm4.dynamics.com/.default"}, 400, "invalid_resource", 500011),
        ({"scope": f"{env['DYNAMICS_BASE_URL']}/user_impersonation"}, 400, "invalid_scope", 1002012),
        ({"grant_type": "password"}, 400, "unsupported_grant_type", 70003),
    ]
    for override, status, error, code in cases:
        refused = token_for(env, **override)
        assert refused.status_code == status, override
        answer = refused.json()
        assert answer["error"] == error
        assert answer["error_codes"] == [code]
        assert answer["error_description"].startswith(f"AADSTS{code}:")
        assert answer["trace_id"]
        assert answer["correlation_id"]
        assert answer["timestamp"]
        assert answer["error_uri"] == f"https://login.microsoftonline.com/error?code={code}"
    wrong_tenant = httpx.post(
        env["DYNAMICS_TOKEN_URL"].replace(env["DYNAMICS_TOKEN_URL"].split("/")[3], "common2")
    )
    assert wrong_tenant.json()["error_codes"] == [90002]


def test_data_calls_need_a_valid_unexpired_token(store: Path) -> None:
    with DynamicsSimulator(store, token_ttl_seconds=60) as sim:
        env = {
            "DYNAMICS_BASE_URL": sim.base_url,
            "DYNAMICS_TOKEN_URL": sim.token_url,
            "DYNAMICS_CLIENT_ID": sim.client_id,
            "DYNAMICS_CLIENT_SECRET": sim.client_secret,
        }
        missing = httpx.get(f"{sim.base_url}{API}/accounts")
        assert missing.status_code == 401
        assert missing.content == b""
        challenge = missing.headers["WWW-Authenticate"]
        assert challenge.startswith("Bearer authorization_uri=")
        assert f"resource_id={sim.base_url}/" in challenge
        with client_for(env) as http:
            assert http.get(f"{API}/accounts", params={"$top": "1"}).status_code == 200
            sim.expire_tokens()
            expired = http.get(f"{API}/accounts", params={"$top": "1"})
            assert expired.status_code == 401
            assert "error=invalid_token" in expired.headers["WWW-Authenticate"]
        with client_for(env) as http:  # a new token works again
            assert http.get(f"{API}/accounts", params={"$top": "1"}).status_code == 200
    with DynamicsSimulator(store, token_ttl_seconds=0.2) as short:
        env["DYNAMICS_BASE_URL"], env["DYNAMICS_TOKEN_URL"] = short.base_url, short.token_url
        env["DYNAMICS_CLIENT_ID"], env["DYNAMICS_CLIENT_SECRET"] = short.client_id, short.client_secret
        with client_for(env) as http:
            time.sleep(0.3)
            assert http.get(f"{API}/accounts").status_code == 401


def test_server_driven_paging_returns_every_live_record_once(client: httpx.Client, store: Path) -> None:
    records, pages = read_all(
        client, f"{API}/contacts", page_size=7, params={"$select": "fullname,emailaddress1"}
    )
    live = {r["contactid"] for r in fetch_records(store, "contacts")}
    ids = [r["contactid"] for r in records]
    assert len(ids) == len(set(ids)) == len(live)
    assert set(ids) == live
    assert len(pages) == -(-len(live) // 7)
    assert all(len(p["value"]) == 7 for p in pages[:-1])
    next_link = pages[0]["@odata.nextLink"]
    assert "$skiptoken=" in next_link
    assert "%3Ccookie" in next_link
    assert next_link.startswith(client.base_url.__str__())
    assert all(set(r) == {"@odata.etag", "fullname", "emailaddress1", "contactid"} for r in records)
    assert pages[0]["@odata.context"].endswith("/$metadata#contacts(fullname,emailaddress1)")


def test_page_size_default_maximum_and_preference_applied(client: httpx.Client) -> None:
    asked = client.get(f"{API}/accounts", headers={"Prefer": "odata.maxpagesize=3"})
    assert len(asked.json()["value"]) == 3
    assert asked.headers["Preference-Applied"] == "odata.maxpagesize=3"
    default = client.get(f"{API}/accounts")
    assert "@odata.nextLink" not in default.json()
    assert "Preference-Applied" not in default.headers
    too_big = client.get(f"{API}/accounts", headers={"Prefer": "odata.maxpagesize=9000"})
    assert too_big.status_code == 200
    assert "Preference-Applied" not in too_big.headers
    top = client.get(f"{API}/accounts", params={"$top": "2"}, headers={"Prefer": "odata.maxpagesize=1"})
    assert len(top.json()["value"]) == 2
    assert "@odata.nextLink" not in top.json()
    skip = client.get(f"{API}/accounts", params={"$skip": "2"})
    assert skip.status_code == 400
    assert skip.json()["error"]["message"]


def test_select_default_lookups_and_unknown_columns(client: httpx.Client) -> None:
    everything = client.get(f"{API}/contacts", params={"$top": "1"}).json()["value"][0]
    assert {"contactid", "lastname", "emailaddress1", "_parentcustomerid_value", "modifiedon"} <= set(
        everything
    )
    assert "parentcustomerid" not in everything
    assert everything["@odata.etag"].startswith('W/"')
    bad = client.get(f"{API}/contacts", params={"$select": "lastname,nope"})
    assert bad.status_code == 400
    assert bad.json() == {
        "error": {
            "code": "0x80060888",
            "message": "Could not find a property named 'nope' on type 'Microsoft.Dynamics.CRM.contact'.",
        }
    }
    opportunity = client.get(
        f"{API}/opportunities",
        params={
            "$top": "1",
            "$select": "name,estimatedvalue,_transactioncurrencyid_value",
            "$expand": "transactioncurrencyid($select=isocurrencycode)",
        },
    ).json()["value"][0]
    assert isinstance(opportunity["estimatedvalue"], float)
    assert opportunity["transactioncurrencyid"]["isocurrencycode"] in ("EUR", "GBP", "CHF", "USD")
    # The currency list resolves an opportunity's _transactioncurrencyid_value to its ISO code.
    currencies = client.get(
        f"{API}/transactioncurrencies", params={"$select": "isocurrencycode,modifiedon"}
    ).json()["value"]
    by_id = {c["transactioncurrencyid"]: c["isocurrencycode"] for c in currencies}
    assert (
        by_id[opportunity["_transactioncurrencyid_value"]]
        == opportunity["transactioncurrencyid"]["isocurrencycode"]
    )
    assert all(
        set(c) == {"@odata.etag", "transactioncurrencyid", "isocurrencycode", "modifiedon"}
        for c in currencies
    )
    assert client.get(f"{API}/transactioncurrencies", params={"$select": "nope"}).status_code == 400
    annotated = client.get(
        f"{API}/accounts",
        params={"$top": "1", "$select": "industrycode"},
        headers={"Prefer": 'odata.include-annotations="*"'},
    ).json()["value"][0]
    assert annotated["industrycode@OData.Community.Display.V1.FormattedValue"]


def test_modifiedon_filter_bounds_are_exact(client: httpx.Client, store: Path) -> None:
    rows = fetch_records(store, "accounts", with_meta=True)
    bound = sorted(r["modifiedon"] for r in rows)[len(rows) // 2]
    ge, _ = read_all(
        client, f"{API}/accounts", params={"$filter": f"modifiedon ge {bound}", "$select": "modifiedon"}
    )
    gt, _ = read_all(
        client, f"{API}/accounts", params={"$filter": f"modifiedon gt {bound}", "$select": "modifiedon"}
    )
    lt, _ = read_all(
        client, f"{API}/accounts", params={"$filter": f"modifiedon lt {bound}", "$select": "modifiedon"}
    )
    assert {r["modifiedon"] for r in ge} - {r["modifiedon"] for r in gt} == {bound}
    assert len(ge) + len(lt) == len(rows)
    assert all(r["modifiedon"] >= bound for r in ge)
    assert all(r["modifiedon"] < bound for r in lt)
    window, _ = read_all(
        client,
        f"{API}/accounts",
        page_size=2,
        params={
            "$filter": f"modifiedon ge {bound} and modifiedon lt 2026-12-31T00:00:00Z",
            "$orderby": "modifiedon asc,accountid asc",
        },
    )
    assert [r["modifiedon"] for r in window] == sorted(r["modifiedon"] for r in ge)
    wrong_type = client.get(f"{API}/accounts", params={"$filter": f"modifiedon ge '{bound}'"})
    assert wrong_type.status_code == 400
    assert "incompatible types" in wrong_type.json()["error"]["message"]
    account = rows[0]
    by_lookup = client.get(
        f"{API}/contacts", params={"$filter": f"_parentcustomerid_value eq {account['accountid']}"}
    )
    assert {c["_parentcustomerid_value"] for c in by_lookup.json()["value"]} <= {account["accountid"]}
    by_name = client.get(
        f"{API}/accounts", params={"$filter": f"name eq '{account['name'].upper()}'"}
    ).json()["value"]
    assert [a["accountid"] for a in by_name] == [account["accountid"]]  # string comparisons ignore case
    count = client.get(f"{API}/accounts", params={"$count": "true", "$top": "1"}).json()["@odata.count"]
    assert count == len(rows)


def test_change_tracking_delta_links_report_changes_and_deletions(tmp_path: Path) -> None:
    path = make_store(tmp_path / "dynamics.sqlite")
    running = SANDBOX.start(path)
    try:
        with client_for(running.env) as http:
            refused = http.get(
                f"{API}/accounts",
                params={"$filter": "statecode eq 0"},
                headers={"Prefer": "odata.track-changes"},
            )
            assert refused.status_code == 400
            assert refused.json()["error"]["message"] == (
                'The "$filter" query parameter isn\'t supported when Change Tracking is enabled.'
            )
            first, _ = read_all(http, f"{API}/accounts", page_size=10, params={"$select": "name"})
            tracked = http.get(
                f"{API}/accounts",
                params={"$select": "name"},
                headers={"Prefer": "odata.track-changes,odata.maxpagesize=10"},
            )
            assert "odata.track-changes" in tracked.headers["Preference-Applied"]
            body = tracked.json()
            while "@odata.nextLink" in body:
                assert "@odata.deltaLink" not in body
                body = http.get(body["@odata.nextLink"]).json()
            delta_link = body["@odata.deltaLink"]
            assert "$deltatoken=" in delta_link
            assert "$select=name" in delta_link
            assert len(first) == count_records(path, "accounts")

            keys = [r["accountid"] for r in first]
            at = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
            touch_records(path, "accounts", [keys[0]], at, {"name": "Renamed AG"})
            delete_records(path, "accounts", [keys[1]], at)
            insert_records(
                path,
                "accounts",
                [{"accountid": "2e451703-c686-e711-80e5-00155db19e6d", "name": "Newco"}],
                at=at,
            )

            delta = http.get(delta_link).json()
            assert delta["@odata.context"].endswith("$metadata#accounts(name)/$delta")
            changed = {r["accountid"]: r["name"] for r in delta["value"] if "accountid" in r}
            assert changed == {keys[0]: "Renamed AG", "2e451703-c686-e711-80e5-00155db19e6d": "Newco"}
            deleted = [r for r in delta["value"] if r.get("reason") == "deleted"]
            assert deleted == [
                {
                    "@odata.context": f"{running.env['DYNAMICS_BASE_URL']}{API}/$metadata#accounts/$deletedEntity",
                    "id": keys[1],
                    "reason": "deleted",
                }
            ]
            again = http.get(delta["@odata.deltaLink"]).json()
            assert again["value"] == []  # nothing changed since

            assert isinstance(running.simulator, DynamicsSimulator)
            running.simulator.expire_delta_links()
            expired = http.get(delta["@odata.deltaLink"])
            assert expired.status_code == 410
            assert expired.json()["error"]["code"] == "0x80044352"
            assert http.get(f"{API}/accounts", params={"$deltatoken": "garbage"}).status_code == 400
    finally:
        running.simulator.stop()


def test_attribute_metadata_lists_fields_added_later(tmp_path: Path) -> None:
    path = make_store(tmp_path / "dynamics.sqlite")
    add_field(path, "accounts", "new_customertier", default="Gold")
    with DynamicsSimulator(path) as sim:
        env = {
            "DYNAMICS_BASE_URL": sim.base_url,
            "DYNAMICS_TOKEN_URL": sim.token_url,
            "DYNAMICS_CLIENT_ID": sim.client_id,
            "DYNAMICS_CLIENT_SECRET": sim.client_secret,
        }
        with client_for(env) as http:
            attrs = http.get(
                f"{API}/EntityDefinitions(LogicalName='account')/Attributes",
                params={"$select": "LogicalName,AttributeType"},
            ).json()
            names = {a["LogicalName"]: a["AttributeType"] for a in attrs["value"]}
            assert names["new_customertier"] == "String"
            assert names["accountid"] == "Uniqueidentifier"
            assert names["industrycode"] == "Picklist"
            assert "modifiedon" in names
            contact_attrs = http.get(f"{API}/EntityDefinitions(LogicalName='contact')/Attributes").json()[
                "value"
            ]
            assert {"LogicalName": "parentcustomerid", "AttributeType": "Customer"}.items() <= next(
                a for a in contact_attrs if a["LogicalName"] == "parentcustomerid"
            ).items()
            listed = http.get(f"{API}/accounts", params={"$top": "2"}).json()["value"]
            assert all(r["new_customertier"] == "Gold" for r in listed)
            chosen = http.get(f"{API}/accounts", params={"$top": "1", "$select": "new_customertier"}).json()[
                "value"
            ][0]
            assert set(chosen) == {"@odata.etag", "new_customertier", "accountid"}


def test_service_protection_429_and_headers(store: Path) -> None:
    with DynamicsSimulator(store, rate_limit=RateLimit(3, 1.0)) as sim:
        env = {
            "DYNAMICS_BASE_URL": sim.base_url,
            "DYNAMICS_TOKEN_URL": sim.token_url,
            "DYNAMICS_CLIENT_ID": sim.client_id,
            "DYNAMICS_CLIENT_SECRET": sim.client_secret,
        }
        with client_for(env) as http:
            answers = [http.get(f"{API}/accounts", params={"$top": "1"}) for _ in range(4)]
            assert [a.status_code for a in answers] == [200, 200, 200, 429]
            assert [a.headers["x-ms-ratelimit-burst-remaining-xrm-requests"] for a in answers[:3]] == [
                "2",
                "1",
                "0",
            ]
            assert all("x-ms-ratelimit-time-remaining-xrm-requests" in a.headers for a in answers)
            limited = answers[-1]
            assert int(limited.headers["Retry-After"]) >= 1
            assert limited.json() == {
                "error": {
                    "code": "0x80072322",
                    "message": "Number of requests exceeded the limit of 3 over time window of 1 seconds.",
                }
            }
            time.sleep(1.05)
            assert http.get(f"{API}/accounts", params={"$top": "1"}).status_code == 200
            sim.execution_seconds = 0.0  # the combined execution time is used up
            spent = http.get(f"{API}/accounts", params={"$top": "1"})
            assert spent.status_code == 429
            assert spent.json()["error"]["code"] == "0x80072321"


def test_injected_faults_answer_with_dataverse_error_bodies(store: Path) -> None:
    faults = Faults()
    with DynamicsSimulator(store, faults=faults) as sim:
        env = {
            "DYNAMICS_BASE_URL": sim.base_url,
            "DYNAMICS_TOKEN_URL": sim.token_url,
            "DYNAMICS_CLIENT_ID": sim.client_id,
            "DYNAMICS_CLIENT_SECRET": sim.client_secret,
        }
        with client_for(env) as http:
            faults.fail_next(400, 401, 403, 404, 429, 500, 503)
            answers = [http.get(f"{API}/accounts", params={"$top": "1"}) for _ in range(7)]
            assert [a.status_code for a in answers] == [400, 401, 403, 404, 429, 500, 503]
            for answer in answers:
                if answer.status_code == 401:
                    assert answer.content == b""
                    assert answer.headers["WWW-Authenticate"].startswith("Bearer ")
                    continue
                error = answer.json()["error"]
                assert set(error) == {"code", "message"}
                assert error["code"].startswith("0x")
                assert error["message"]
            assert answers[4].headers["Retry-After"]
            assert http.get(f"{API}/accounts", params={"$top": "1"}).status_code == 200


def test_upsert_by_alternate_key(tmp_path: Path) -> None:
    path = make_store(tmp_path / "dynamics.sqlite")
    running = SANDBOX.start(path)
    try:
        with client_for(running.env) as http:
            url = f"{API}/accounts(accountnumber='WB-1')"
            created = http.patch(url, json={"name": "Fjord Maritime AS"})
            assert created.status_code == 204
            assert created.content == b""
            entity_id = created.headers["OData-EntityId"]
            assert entity_id.startswith(f"{running.env['DYNAMICS_BASE_URL']}{API}/accounts(")
            updated = http.patch(url, json={"telephone1": "+47 22 33 44 55"})
            assert updated.status_code == 204
            assert updated.headers["OData-EntityId"] == entity_id
            [row] = [r for r in fetch_records(path, "accounts") if r["accountnumber"] == "WB-1"]
            assert row["name"] == "Fjord Maritime AS"
            assert row["telephone1"] == "+47 22 33 44 55"

            represented = http.patch(
                f"{API}/accounts(accountnumber='WB-2')",
                params={"$select": "accountid,name"},
                json={"name": "Tramontana Foods"},
                headers={"Prefer": "return=representation"},
            )
            assert represented.status_code == 201
            assert represented.json()["name"] == "Tramontana Foods"
            assert represented.headers["Preference-Applied"] == "return=representation"
            again = http.patch(
                f"{API}/accounts(accountnumber='WB-2')",
                params={"$select": "accountid"},
                json={"revenue": 10.5},
                headers={"Prefer": "return=representation"},
            )
            assert again.status_code == 200
            assert set(again.json()) == {
                "@odata.context",
                "@odata.etag",
                "accountid",
            }

            no_create = http.patch(
                f"{API}/accounts(accountnumber='WB-404')", json={"name": "x"}, headers={"If-Match": "*"}
            )
            assert no_create.status_code == 404
            assert no_create.json()["error"]["code"] == "0x80060891"
            no_update = http.patch(url, json={"name": "y"}, headers={"If-None-Match": "*"})
            assert no_update.status_code == 412
            assert no_update.json()["error"]["message"] == "A record with matching key values already exists."

            missing_name = http.patch(
                f"{API}/accounts(accountnumber='WB-3')", json={"websiteurl": "https://x.example"}
            )
            assert missing_name.status_code == 400
            assert missing_name.json()["error"]["code"] == "0x80040203"
            unknown = http.patch(url, json={"nope": 1})
            assert unknown.status_code == 400
            assert "does not exist on type" in unknown.json()["error"]["message"]
            bad_key = http.patch(f"{API}/accounts(name='x')", json={"name": "x"})
            assert bad_key.status_code == 400
            # A text key is a string literal: unquoted it is a syntax error, not a match.
            unquoted = http.patch(f"{API}/accounts(accountnumber=WB-1)", json={"name": "x"})
            assert unquoted.status_code == 400
            assert "syntax" in unquoted.json()["error"]["message"]

            contact = http.patch(
                f"{API}/contacts(emailaddress1='ola@fjord.example')",
                json={
                    "lastname": "Nordmann",
                    "firstname": "Ola",
                    "parentcustomerid_account@odata.bind": "/accounts(accountnumber='WB-1')",
                },
            )
            assert contact.status_code == 204
            [stored] = [
                c for c in fetch_records(path, "contacts") if c["emailaddress1"] == "ola@fjord.example"
            ]
            assert stored["parentcustomerid"] == row["accountid"]
            assert stored["fullname"] == "Ola Nordmann"
    finally:
        running.simulator.stop()


def batch_body(
    boundary: str,
    parts: Sequence[tuple[str, str, dict[str, Any] | None]],
    changeset: Sequence[tuple[str, str, dict[str, Any]]] | None = None,
) -> str:
    lines: list[str] = []
    for method, url, payload in parts:
        lines += [f"--{boundary}", "Content-Type: application/http", "Content-Transfer-Encoding: binary", ""]
        lines += [f"{method} {url} HTTP/1.1", "Content-Type: application/json; type=entry", ""]
        lines.append(json.dumps(payload) if payload is not None else "")
    if changeset:
        inner = "changeset_1"
        lines += [f"--{boundary}", f"Content-Type: multipart/mixed; boundary={inner}", ""]
        for n, (method, url, payload) in enumerate(changeset, 1):
            lines += [
                f"--{inner}",
                "Content-Type: application/http",
                "Content-Transfer-Encoding: binary",
                f"Content-ID: {n}",
                "",
            ]
            lines += [
                f"{method} {url} HTTP/1.1",
                "Content-Type: application/json; type=entry",
                "",
                json.dumps(payload),
            ]
        lines.append(f"--{inner}--")
    lines.append(f"--{boundary}--")
    return "\r\n".join(lines) + "\r\n"


def parse_parts(response: httpx.Response) -> list[tuple[int, dict[str, Any] | None]]:
    boundary = response.headers["Content-Type"].split("boundary=")[1]
    out = []
    for chunk in response.text.split(f"--{boundary}")[1:-1]:
        status_line = next(line for line in chunk.splitlines() if line.startswith("HTTP/1.1"))
        body = chunk.strip().rsplit("\r\n\r\n", 1)[-1].strip()
        out.append((int(status_line.split()[1]), json.loads(body) if body.startswith("{") else None))
    return out


def test_batch_upsert_continue_on_error_and_record_faults(tmp_path: Path) -> None:
    path = make_store(tmp_path / "dynamics.sqlite")
    running = SANDBOX.start(path)
    sim = running.simulator
    assert isinstance(sim, DynamicsSimulator)
    case = SANDBOX.write_case(path)
    try:
        with client_for(running.env) as http:
            parts = [
                (
                    "PATCH",
                    f"{API}/accounts(accountnumber='{r['accountnumber']}')",
                    {k: v for k, v in r.items() if k != "accountnumber"},
                )
                for r in [*case.accepted, *case.rejected]
            ]
            sim.record_faults["WB-10002"] = ["0x80044150"]
            headers = {
                "Content-Type": "multipart/mixed; boundary=batch_abc",
                "Prefer": "odata.continue-on-error",
            }
            first = http.post(f"{API}/$batch", content=batch_body("batch_abc", parts), headers=headers)
            assert first.status_code == 200
            assert first.headers["Content-Type"].startswith("multipart/mixed; boundary=batchresponse_")
            answers = parse_parts(first)
            assert [status for status, _ in answers] == [204, 500, 204, 400]
            assert answers[1][1] == {
                "error": {"code": "0x80044150", "message": "Injected failure for WB-10002."}
            }
            assert answers[3][1] is not None
            assert answers[3][1]["error"]["code"] == case.rejected_code
            retried = http.post(f"{API}/$batch", content=batch_body("batch_abc", parts[1:2]), headers=headers)
            assert parse_parts(retried) == [(204, None)]
            numbers = {r["accountnumber"]: r["name"] for r in fetch_records(path, "accounts")}
            assert numbers["WB-10001"] == "Fjord Maritime AS"
            assert numbers["WB-10002"] == "Tramontana Foods S.L."
            assert numbers["WB-10004"] == "Kestrel Avionics Ltd"
            updated = http.post(f"{API}/$batch", content=batch_body("batch_abc", parts[:1]), headers=headers)
            assert parse_parts(updated) == [(204, None)]  # the same key again updates
            assert [r["accountnumber"] for r in fetch_records(path, "accounts")].count("WB-10001") == 1
            assert "WB-10003" not in numbers

            stop = http.post(
                f"{API}/$batch",
                content=batch_body("b2", [parts[3], parts[0]]),
                headers={"Content-Type": "multipart/mixed; boundary=b2"},
            )
            assert stop.status_code == 400
            assert [s for s, _ in parse_parts(stop)] == [400]

            atomic = http.post(
                f"{API}/$batch",
                content=batch_body(
                    "b3",
                    [],
                    changeset=[
                        ("PATCH", f"{API}/accounts(accountnumber='CS-1')", {"name": "Changeset One"}),
                        ("PATCH", f"{API}/accounts(accountnumber='CS-2')", {"telephone1": "no name"}),
                    ],
                ),
                headers={"Content-Type": "multipart/mixed; boundary=b3", "Prefer": "odata.continue-on-error"},
            )
            assert [s for s, _ in parse_parts(atomic)] == [400]
            assert "CS-1" not in {r["accountnumber"] for r in fetch_records(path, "accounts")}  # rolled back
    finally:
        sim.stop()


def test_sandbox_contract(store: Path, started: Started) -> None:
    assert set(started.env) == {
        "DYNAMICS_BASE_URL",
        "DYNAMICS_TOKEN_URL",
        "DYNAMICS_CLIENT_ID",
        "DYNAMICS_CLIENT_SECRET",
    }
    assert urlsplit(started.env["DYNAMICS_TOKEN_URL"]).path.endswith("/oauth2/v2.0/token")
    assert set(SANDBOX.stage_values) == {
        "prospecting",
        "qualification",
        "proposal",
        "negotiation",
        "closed_won",
        "closed_lost",
    }
    deals = fetch_records(store, "opportunities")
    assert {d["stepname"] for d in deals} <= set(SANDBOX.stage_values.values())
    assert all(len(d["opportunityid"]) == 36 for d in deals)
    settings = SANDBOX.connection(started)
    assert settings.base_url == started.env["DYNAMICS_BASE_URL"]
    assert settings.token_url == started.env["DYNAMICS_TOKEN_URL"]
    assert settings.client_id == started.env["DYNAMICS_CLIENT_ID"]
    assert settings.client_secret is not None
    assert settings.client_secret.reveal() == started.env["DYNAMICS_CLIENT_SECRET"]


def test_an_update_by_id_with_if_match_never_creates_and_raises_the_row_version(tmp_path: Path) -> None:
    store = make_store(tmp_path / "dynamics.sqlite")
    running = SANDBOX.start(store)
    try:
        with client_for(running.env) as http:
            account_id = str(fetch_records(store, "accounts")[0]["accountid"])
            url = f"{API}/accounts({account_id})"
            columns = "new_erpcustomernumber,new_openbalance,new_lastpaymentdate,versionnumber,modifiedon"
            before = http.get(url, params={"$select": columns})
            version = before.json()["versionnumber"]
            # The row version is database-wide: every later write anywhere has a higher one.
            highest = max(
                r["versionnumber"]
                for r in http.get(f"{API}/accounts", params={"$select": "versionnumber"}).json()["value"]
            )
            assert before.headers["ETag"] == f'W/"{version}"'
            changes = {
                "new_erpcustomernumber": "C-1",
                "new_openbalance": 10.5,
                "new_lastpaymentdate": "2026-11-20",
            }
            assert http.patch(url, json=changes, headers={"If-Match": "*"}).status_code == 204
            after = http.get(url, params={"$select": columns}).json()
            assert {k: after[k] for k in changes} == changes
            assert after["versionnumber"] > version
            assert after["modifiedon"] > before.json()["modifiedon"]
            newer = http.get(
                f"{API}/accounts", params={"$filter": f"versionnumber gt {highest}", "$select": "accountid"}
            ).json()["value"]
            assert [r["accountid"] for r in newer] == [account_id]

            count = count_records(store, "accounts")
            missing = http.patch(
                f"{API}/accounts(00000000-0000-4000-8000-000000000001)",
                json=changes,
                headers={"If-Match": "*"},
            )
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] == "0x80040217"
            too_long = http.patch(url, json={"new_erpcustomernumber": "C" * 256}, headers={"If-Match": "*"})
            assert too_long.status_code == 400
            assert too_long.json()["error"]["code"] == "0x80044331"
            assert count_records(store, "accounts") == count
    finally:
        running.simulator.stop()


def test_incidents_and_their_resolutions_are_served_with_dataverse_choices(
    client: httpx.Client, store: Path
) -> None:
    incidents, _ = read_all(client, f"{API}/incidents", page_size=5)
    assert {r["incidentid"] for r in incidents} == {
        str(r["incidentid"]) for r in fetch_records(store, "incidents")
    }
    assert incidents
    states = {1: 0, 2: 0, 3: 0, 4: 0, 5: 1, 1000: 1, 6: 2, 2000: 2}
    accounts = {str(r["accountid"]) for r in fetch_records(store, "accounts", include_deleted=True)}
    for case in incidents:
        assert states[case["statuscode"]] == case["statecode"]  # a status reason belongs to one state
        assert case["prioritycode"] in {1, 2, 3}
        assert case["caseorigincode"] in {1, 2, 3}
        assert case["casetypecode"] in {1, 2, 3}
        assert case["ticketnumber"].startswith("CAS-")
        assert case["_customerid_value"] in accounts  # a lookup, read as _<name>_value
        assert "customerid" not in case
    resolutions, _ = read_all(client, f"{API}/incidentresolutions")
    resolved = {r["incidentid"] for r in incidents if r["statecode"] == 1}
    # Resolving leaves one resolution activity per case; cancelling leaves none.
    assert sorted(r["_incidentid_value"] for r in resolutions) == sorted(resolved) != []
    assert all(r["subject"] and r["actualend"] and r["statecode"] == 1 for r in resolutions)
    labelled = client.get(
        f"{API}/incidents",
        params={"$top": "1", "$select": "statuscode,prioritycode"},
        headers={"Prefer": 'odata.include-annotations="*"'},
    ).json()["value"][0]
    assert labelled["prioritycode@OData.Community.Display.V1.FormattedValue"] in {"High", "Normal", "Low"}
    attributes = client.get(
        f"{API}/EntityDefinitions(LogicalName='incident')/Attributes",
        params={"$select": "LogicalName,AttributeType"},
    ).json()["value"]
    kinds = {a["LogicalName"]: a["AttributeType"] for a in attributes}
    assert (kinds["customerid"], kinds["primarycontactid"], kinds["statecode"]) == (
        "Customer",
        "Lookup",
        "State",
    )


def test_incident_changes_and_deletes_arrive_through_the_delta_link(tmp_path: Path) -> None:
    path = make_store(tmp_path / "dynamics.sqlite")
    running = SANDBOX.start(path)
    try:
        with client_for(running.env) as http:
            tracked = {"Prefer": "odata.track-changes,odata.maxpagesize=5"}
            response = http.get(f"{API}/incidents", params={"$select": "title,statuscode"}, headers=tracked)
            while "@odata.nextLink" in response.json():
                response = http.get(response.json()["@odata.nextLink"], headers=tracked)
            delta_link = response.json()["@odata.deltaLink"]
            edited, gone = sorted(str(r["incidentid"]) for r in fetch_records(path, "incidents"))[:2]
            touch_records(path, "incidents", [edited], datetime.now(UTC), {"statuscode": 2})
            delete_records(path, "incidents", [gone], datetime.now(UTC))
            changes = http.get(delta_link).json()["value"]
            assert [(c["incidentid"], c["statuscode"]) for c in changes if "incidentid" in c] == [(edited, 2)]
            assert [c["id"] for c in changes if c.get("reason") == "deleted"] == [gone]

            # An update by id (If-Match: *) changes the case; an unknown id is 404, never a create.
            update = http.patch(
                f"{API}/incidents({edited})",
                json={"title": "Printer offline again", "prioritycode": 1},
                headers={"If-Match": "*"},
            )
            assert update.status_code == 204, update.text
            assert http.get(f"{API}/incidents({edited})").json()["title"] == "Printer offline again"
            bad_choice = http.patch(
                f"{API}/incidents({edited})", json={"prioritycode": 7}, headers={"If-Match": "*"}
            )
            assert bad_choice.status_code == 400
            before = count_records(path, "incidents", include_deleted=True)
            missing = http.patch(
                f"{API}/incidents(5f0c2e1a-0000-4000-8000-00000000dead)",
                json={"title": "x"},
                headers={"If-Match": "*"},
            )
            assert missing.status_code == 404
            assert count_records(path, "incidents", include_deleted=True) == before
    finally:
        running.simulator.stop()
