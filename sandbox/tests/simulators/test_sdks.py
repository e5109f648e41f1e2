"""The vendors' own clients against the simulators, used the way their documentation shows.

simple-salesforce (the de-facto Salesforce client; Salesforce publishes none for Python) and
HubSpot's official SDK (hubspot-api-client) send what they send to the real services: their auth
headers, URL shapes and API versions. The simulators must answer them as Salesforce and HubSpot do.
simple-salesforce only speaks https, so its simulator serves TLS with a loopback certificate that
the client's requests session trusts; HubSpot's SDK takes the simulator as its configured host.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any, cast

import pytest
import requests
from hubspot import HubSpot
from hubspot.crm.companies import (
    BatchInputSimplePublicObjectBatchInput,
    Filter,
    FilterGroup,
    PublicObjectSearchRequest,
    SimplePublicObjectBatchInput,
)
from hubspot.crm.deals import SimplePublicObjectInput
from simple_salesforce import Salesforce, SalesforceResourceNotFound, SFType

from crm_pipelines_sandbox.data import SandboxLayout, generate_sandbox
from crm_pipelines_sandbox.simulators import HubSpotSimulator, SalesforceSimulator
from crm_pipelines_sandbox.simulators.store import count_records, fetch_records
from crm_pipelines_sandbox.tls import loopback_certificate

AS_OF = date(2026, 11, 25)
HS_TOKEN = "pat-eu1-sdk-token-0001"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> SandboxLayout:
    return generate_sandbox(tmp_path_factory.mktemp("sdks"), contacts=900, seed=23, as_of=AS_OF)


# --- simple-salesforce ---------------------------------------------------------------------------


@pytest.fixture
def sf_store(sandbox: SandboxLayout, tmp_path: Path) -> Path:
    store = tmp_path / "salesforce.sqlite"
    shutil.copy(sandbox.salesforce_store, store)
    return store


@pytest.fixture
def sf(sf_store: Path, tmp_path: Path) -> Iterator[Salesforce]:
    certificate = loopback_certificate(tmp_path / "tls")
    simulator = SalesforceSimulator(sf_store)
    simulator.tls_context = certificate.server_context()
    with simulator, requests.Session() as session:
        # requests lets REQUESTS_CA_BUNDLE (and proxy variables) override a session's own settings
        # unless the session ignores the environment: the loopback certificate is the one to trust.
        session.trust_env = False
        session.verify = str(certificate.certificate)
        # The OAuth flow a connected app runs; simple-salesforce then takes the session it issued.
        token = session.post(
            f"{simulator.base_url}/services/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": simulator.client_id,
                "client_secret": simulator.client_secret,
            },
            timeout=10,
        )
        token.raise_for_status()
        answer = token.json()
        yield Salesforce(
            instance_url=answer["instance_url"], session_id=answer["access_token"], session=session
        )


def _live(store: Path, table: str) -> list[dict[str, object]]:
    return [r for r in fetch_records(store, table) if not r["IsDeleted"]]


def test_simple_salesforce_queries_standard_and_custom_fields(sf: Salesforce, sf_store: Path) -> None:
    result = sf.query(
        "SELECT Id, Name, CreatedDate, LastModifiedDate, SystemModstamp, ERP_Customer_Number__c FROM Account"
    )
    live = _live(sf_store, "Account")
    assert result["done"] is True
    assert result["totalSize"] == len(live)
    first = result["records"][0]
    assert first["attributes"]["type"] == "Account"
    assert set(first) == {
        "attributes",
        "Id",
        "Name",
        "CreatedDate",
        "LastModifiedDate",
        "SystemModstamp",
        "ERP_Customer_Number__c",
    }
    # Every sObject has the audit fields, Contact and Opportunity included.
    for sobject in ("Contact", "Opportunity"):
        rows = sf.query(
            f"SELECT Id, CreatedDate, CreatedById, LastModifiedDate, LastModifiedById, SystemModstamp, "
            f"IsDeleted FROM {sobject} LIMIT 3"
        )["records"]
        assert len(rows) == 3
        assert all(r["CreatedById"].startswith("005") and r["LastModifiedDate"] for r in rows)


def test_simple_salesforce_query_all_follows_every_page(sf: Salesforce, sf_store: Path) -> None:
    contacts = sf.query_all("SELECT Id FROM Contact", headers={"Sforce-Query-Options": "batchSize=200"})
    assert len(_live(sf_store, "Contact")) > 200  # more than one page
    assert sorted(r["Id"] for r in contacts["records"]) == sorted(
        str(r["Id"]) for r in _live(sf_store, "Contact")
    )
    with_deleted = sf.query_all("SELECT Id, IsDeleted FROM Contact", include_deleted=True)
    assert with_deleted["totalSize"] == count_records(sf_store, "Contact")
    assert any(r["IsDeleted"] for r in with_deleted["records"])


def test_simple_salesforce_updates_a_record_and_the_next_query_sees_it(
    sf: Salesforce, sf_store: Path
) -> None:
    account = _live(sf_store, "Account")[0]
    accounts = cast(SFType, sf.Account)  # an sObject's name on the client is its SFType
    status = accounts.update(
        str(account["Id"]),
        {
            "ERP_Customer_Number__c": "C-7001",
            "Open_Balance__c": 1250.5,
            "Overdue_Amount__c": 0,
            "Last_Payment_Date__c": "2026-11-20",
        },
    )
    assert status == 204
    record: dict[str, Any] = accounts.get(str(account["Id"]))
    assert record["ERP_Customer_Number__c"] == "C-7001"
    assert record["Open_Balance__c"] == 1250.5
    assert record["Last_Payment_Date__c"] == "2026-11-20"
    changed = sf.query(
        f"SELECT Id, ERP_Customer_Number__c FROM Account WHERE SystemModstamp > {account['SystemModstamp']}"
        " AND ERP_Customer_Number__c = 'C-7001'"
    )
    assert [r["Id"] for r in changed["records"]] == [account["Id"]]
    with pytest.raises(SalesforceResourceNotFound):
        accounts.update("001Qy00000ZZZZZAAA", {"ERP_Customer_Number__c": "C-7002"})
    assert count_records(sf_store, "Account") == len(fetch_records(sf_store, "Account"))


def test_simple_salesforce_collections_update_answers_per_record(sf: Salesforce, sf_store: Path) -> None:
    opportunities = _live(sf_store, "Opportunity")[:2]
    before = count_records(sf_store, "Opportunity")
    results = sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={
            "allOrNone": False,
            "records": [
                *(
                    {"attributes": {"type": "Opportunity"}, "id": o["Id"], "ERP_Order_Number__c": f"SO-{n}"}
                    for n, o in enumerate(opportunities)
                ),
                {
                    "attributes": {"type": "Opportunity"},
                    "id": "006Qy00000ZZZZZAAA",
                    "ERP_Order_Number__c": "x",
                },
            ],
        },
    )
    assert results is not None
    assert [r["success"] for r in results] == [True, True, False]
    assert results[2]["errors"][0]["statusCode"] == "INVALID_CROSS_REFERENCE_KEY"
    stored = fetch_records(sf_store, "Opportunity", [str(o["Id"]) for o in opportunities])
    assert sorted(str(r["ERP_Order_Number__c"]) for r in stored) == ["SO-0", "SO-1"]
    assert count_records(sf_store, "Opportunity") == before


# --- HubSpot's SDK -------------------------------------------------------------------------------


@pytest.fixture
def hs_store(sandbox: SandboxLayout, tmp_path: Path) -> Path:
    store = tmp_path / "hubspot.sqlite"
    shutil.copy(sandbox.hubspot_store, store)
    return store


@pytest.fixture
def hubspot(hs_store: Path) -> Iterator[Any]:
    with HubSpotSimulator(hs_store, access_token=HS_TOKEN) as simulator:
        # The SDK's documented way to another host: a Configuration field, passed through the client.
        yield HubSpot(access_token=HS_TOKEN, host=simulator.base_url)


def _hs_live(store: Path, table: str) -> list[dict[str, object]]:
    return [r for r in fetch_records(store, table) if not r["archived"]]


def test_hubspot_sdk_pages_contacts_with_the_standard_properties(hubspot: Any, hs_store: Path) -> None:
    seen: list[Any] = []
    after = None
    while True:
        page = hubspot.crm.contacts.basic_api.get_page(
            limit=100, after=after, properties=["email", "hs_lastmodifieddate"], archived=False
        )
        seen.extend(page.results)
        if page.paging is None:
            break
        after = page.paging.next.after
    assert sorted(int(c.id) for c in seen) == sorted(
        int(str(r["id"])) for r in _hs_live(hs_store, "contacts")
    )
    first = seen[0]
    assert {"hs_object_id", "createdate", "hs_lastmodifieddate", "email"} <= set(first.properties)
    assert first.properties["hs_object_id"] == first.id
    assert first.created_at is not None
    assert first.updated_at is not None
    assert first.archived is False
    assert len(hubspot.crm.contacts.get_all()) == len(seen)  # the SDK's own paging helper agrees


def test_hubspot_sdk_batch_update_and_search_see_the_custom_property(hubspot: Any, hs_store: Path) -> None:
    companies = _hs_live(hs_store, "companies")[:2]
    before = count_records(hs_store, "companies")
    done = hubspot.crm.companies.batch_api.update(
        BatchInputSimplePublicObjectBatchInput(
            inputs=[
                SimplePublicObjectBatchInput(id=str(c["id"]), properties={"erp_customer_number": f"C-80{n}"})
                for n, c in enumerate(companies)
            ]
        )
    )
    assert done.status == "COMPLETE"
    assert sorted(r.properties["erp_customer_number"] for r in done.results) == ["C-800", "C-801"]

    found = hubspot.crm.companies.search_api.do_search(
        public_object_search_request=PublicObjectSearchRequest(
            filter_groups=[
                FilterGroup(
                    filters=[Filter(property_name="erp_customer_number", operator="EQ", value="C-801")]
                )
            ],
            properties=["name", "erp_customer_number"],
            limit=10,
        )
    )
    assert found.total == 1
    assert found.results[0].id == str(companies[1]["id"])
    assert found.results[0].properties["erp_customer_number"] == "C-801"

    partly = hubspot.crm.companies.batch_api.update(
        BatchInputSimplePublicObjectBatchInput(
            inputs=[
                SimplePublicObjectBatchInput(
                    id=str(companies[0]["id"]), properties={"erp_customer_number": "C-810"}
                ),
                SimplePublicObjectBatchInput(id="999999999", properties={"erp_customer_number": "C-811"}),
            ]
        )
    )
    assert [r.id for r in partly.results] == [str(companies[0]["id"])]
    assert partly.num_errors == 1
    assert partly.errors[0].category == "OBJECT_NOT_FOUND"
    assert partly.errors[0].context == {"ids": ["999999999"]}
    assert count_records(hs_store, "companies") == before  # nothing was created


def test_hubspot_sdk_updates_one_deal_and_reads_it_back(hubspot: Any, hs_store: Path) -> None:
    deal = _hs_live(hs_store, "deals")[0]
    updated = hubspot.crm.deals.basic_api.update(
        str(deal["id"]),
        SimplePublicObjectInput(
            properties={"erp_order_number": "SO-2026-0042", "erp_invoice_numbers": "INV-1,INV-2"}
        ),
    )
    assert updated.properties["erp_order_number"] == "SO-2026-0042"
    read = hubspot.crm.deals.basic_api.get_by_id(
        str(deal["id"]), properties=["erp_order_number", "erp_invoice_numbers", "hs_lastmodifieddate"]
    )
    assert read.properties["erp_invoice_numbers"] == "INV-1,INV-2"
    assert (
        read.properties["hs_lastmodifieddate"] == read.updated_at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    )
