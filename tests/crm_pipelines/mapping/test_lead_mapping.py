"""Leads staged from HubSpot contacts in a lead stage, Salesforce Leads and Dynamics 365 leads: stages and
statuses land canonical, HubSpot contacts that never were leads stay out, and a lead the rules refuse is
quarantined with its reason while the others flow on (the packaged mappings.yaml and rules.yaml)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from crm_pipelines.lake import partition_dir
from crm_pipelines.mapping.stage import quality_quarantine_folder, stage_entity, staging_folder

PARTITION = "2026-11-25"


def write_raw(lake: Path, source: str, dataset: str, rows: list[dict[str, Any]]) -> None:
    """A raw snapshot as the extract writes it: every field as text, plus the _deleted flag."""
    names = [n for n in rows[0] if n != "_deleted"]
    schema = pa.schema([*(pa.field(n, pa.string()) for n in names), pa.field("_deleted", pa.bool_())])
    folder = partition_dir(lake, "raw", source, dataset, PARTITION)
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "part-0000.parquet")


def stage(lake: Path) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]], dict[str, int]]:
    """Stage lead; the valid rows and the quarantine reasons by record_id, and the deletes per source."""
    outcomes = stage_entity(entity="lead", lake_dir=lake, partition=PARTITION, log=logging.getLogger("test"))
    valid: dict[str, dict[str, Any]] = {}
    reasons: dict[str, list[str]] = {}
    for outcome in outcomes:
        if outcome.skipped is not None:
            continue
        table = pq.read_table(staging_folder(lake, "lead", PARTITION) / f"{outcome.source}.parquet")
        valid.update({str(r["record_id"]): r for r in table.to_pylist()})
        quarantined = pq.read_table(
            quality_quarantine_folder(lake, "lead", PARTITION) / f"{outcome.source}.parquet"
        )
        for row in quarantined.to_pylist():
            reasons.setdefault(str(row["record_id"]), []).append(f"{row['rule']}: {row['reason']}")
    return valid, reasons, {o.source: o.rows_deleted for o in outcomes}


def hubspot_contact(contact_id: str, stage: str | None, **values: str | bool | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": contact_id,
        "firstname": "Ada",
        "lastname": "Lovelace",
        "email": f"ada{contact_id}@analytical.example",
        "phone": "030 1234567",
        "jobtitle": "CTO",
        "country": "Germany",
        "address": None,
        "city": None,
        "zip": None,
        "date_of_birth": None,
        "associatedcompanyid": "900",
        "createdate": "2026-11-01T08:00:00.000Z",
        "lastmodifieddate": "2026-11-20T08:00:00.000Z",
        "lifecyclestage": stage,
        "hs_lead_status": None,
        "hs_lifecyclestage_lead_date": None,
        "hs_lifecyclestage_marketingqualifiedlead_date": None,
        "hs_lifecyclestage_salesqualifiedlead_date": None,
        "archived": "false",
        "_deleted": False,
    }
    row.update(values)
    return row


def test_hubspot_leads_are_the_contacts_in_or_through_a_lead_stage(tmp_path: Path) -> None:
    write_raw(
        tmp_path,
        "hubspot",
        "contacts",
        [
            hubspot_contact(
                "1",
                "lead",
                hs_lead_status="ATTEMPTED_TO_CONTACT",
                hs_lifecyclestage_lead_date="2026-11-02T09:00:00.000Z",
            ),
            hubspot_contact("2", "marketingqualifiedlead", hs_lead_status="BAD_TIMING"),
            hubspot_contact(
                "3",
                "salesqualifiedlead",
                hs_lead_status="OPEN_DEAL",
                hs_lifecyclestage_salesqualifiedlead_date="2026-11-15T10:00:00.000Z",
            ),
            # Came through the funnel and became a customer: still a lead, converted.
            hubspot_contact(
                "4",
                "customer",
                hs_lifecyclestage_lead_date="2026-11-03T09:00:00.000Z",
                hs_lifecyclestage_salesqualifiedlead_date="2026-11-10T09:00:00.000Z",
            ),
            # Created as a customer, or only a subscriber: never leads.
            hubspot_contact("5", "customer"),
            hubspot_contact("6", "subscriber"),
            hubspot_contact("7", None),
            # A lead with an e-mail no one can write to: quarantined, the others flow on.
            hubspot_contact("8", "lead", email="ada@@analytical.example"),
            # Deleted in HubSpot while a lead: a soft delete, not a valid row.
            hubspot_contact("9", "lead", archived="true", _deleted=True),
        ],
    )
    write_raw(
        tmp_path,
        "hubspot",
        "companies",
        [{"id": "900", "name": "Analytical Engines GmbH", "country": "DE", "_deleted": False}],
    )
    valid, reasons, deleted = stage(tmp_path)

    assert set(valid) == {"hubspot:1", "hubspot:2", "hubspot:3", "hubspot:4"}
    assert set(reasons) == {"hubspot:8"}
    assert reasons["hubspot:8"] == [
        'lead_email_format: email "ada@@analytical.example" is not a valid lower-case e-mail address'
    ]
    assert deleted["hubspot"] == 1
    one = valid["hubspot:1"]
    assert one["contact_record_id"] == "hubspot:1"
    assert (one["lifecycle_stage"], one["status"], one["is_converted"]) == ("lead", "working", False)
    assert one["company"] == "Analytical Engines GmbH"
    assert one["phone"] == "+49301234567"
    assert one["created_at"].isoformat() == "2026-11-02T09:00:00+00:00"
    assert (valid["hubspot:2"]["lifecycle_stage"], valid["hubspot:2"]["status"]) == ("mql", "nurturing")
    three = valid["hubspot:3"]
    assert (three["lifecycle_stage"], three["status"], three["is_converted"]) == ("sql", "qualified", True)
    assert three["converted_at"].isoformat() == "2026-11-15T10:00:00+00:00"
    four = valid["hubspot:4"]
    assert (four["lifecycle_stage"], four["is_converted"]) == ("customer", True)
    assert four["created_at"].isoformat() == "2026-11-03T09:00:00+00:00"


def salesforce_lead(lead_id: str, status: str, **values: str | bool | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "Id": lead_id,
        "FirstName": "Grace",
        "LastName": "Hopper",
        "Email": "Grace.Hopper@Cobol.example",
        "Phone": "(212) 555-0100",
        "Company": "Cobol Inc.",
        "Title": "Rear Admiral",
        "Country": "United States",
        "Status": status,
        "LeadSource": "Web",
        "IsConverted": "false",
        "ConvertedDate": None,
        "ConvertedContactId": None,
        "CreatedDate": "2026-11-01T08:00:00.000+0000",
        "SystemModstamp": "2026-11-20T08:00:00.000+0000",
        "IsDeleted": "false",
        "_deleted": False,
    }
    row.update(values)
    return row


def test_salesforce_leads_map_status_to_stage_and_status(tmp_path: Path) -> None:
    write_raw(
        tmp_path,
        "salesforce",
        "leads",
        [
            salesforce_lead("00Q1", "Open - Not Contacted"),
            salesforce_lead("00Q2", "Working - Contacted"),
            salesforce_lead(
                "00Q3",
                "Closed - Converted",
                IsConverted="true",
                ConvertedDate="2026-11-18",
                ConvertedContactId="003A",
            ),
            salesforce_lead("00Q4", "Closed - Not Converted"),
            # A status the mapping does not know (an org's own picklist value): quarantined with it.
            salesforce_lead("00Q5", "Nurture Later"),
        ],
    )
    valid, reasons, _ = stage(tmp_path)
    by_id = {k: (v["lifecycle_stage"], v["status"], v["is_converted"]) for k, v in valid.items()}
    assert by_id == {
        "salesforce:00Q1": ("lead", "new", False),
        "salesforce:00Q2": ("mql", "working", False),
        "salesforce:00Q3": ("sql", "converted", True),
        "salesforce:00Q4": ("lead", "unqualified", False),
    }
    converted = valid["salesforce:00Q3"]
    assert converted["contact_record_id"] == "salesforce:003A"
    assert converted["converted_at"].isoformat() == "2026-11-18T00:00:00+00:00"
    assert converted["email"] == "grace.hopper@cobol.example"
    assert converted["phone"] == "+12125550100"
    assert (converted["country"], converted["lead_source"]) == ("US", "Web")
    assert sorted(reasons["salesforce:00Q5"]) == [
        'lead_stage_known: lifecycle_stage "nurture later" must be one of lead, mql, sql, opportunity, customer',
        'lead_status_known: status "nurture later" must be one of '
        "new, working, nurturing, qualified, unqualified, converted",
    ]


def dynamics_lead(lead_id: str, statecode: str, statuscode: str, **values: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "leadid": lead_id,
        "firstname": "Katherine",
        "lastname": "Johnson",
        "emailaddress1": "katherine@orbits.example",
        "telephone1": "+1 757 555 0199",
        "companyname": "Orbits LLC",
        "jobtitle": "Mathematician",
        "address1_country": "US",
        "statecode": statecode,
        "statuscode": statuscode,
        "leadsourcecode": "7",
        "contact_id": None,
        "createdon": "2026-11-01T08:00:00Z",
        "modifiedon": "2026-11-20T08:00:00Z",
        "_deleted": False,
    }
    row.update(values)
    return row


def test_dynamics_leads_map_status_reasons(tmp_path: Path) -> None:
    write_raw(
        tmp_path,
        "dynamics",
        "leads",
        [
            dynamics_lead("l-1", "0", "1"),
            dynamics_lead("l-2", "0", "2"),
            dynamics_lead("l-3", "1", "3", contact_id="c-9"),
            dynamics_lead("l-4", "2", "6", leadsourcecode=None),
            dynamics_lead("l-5", "0", "1", address1_country="Atlantis"),
        ],
    )
    valid, reasons, _ = stage(tmp_path)
    by_id = {k: (v["lifecycle_stage"], v["status"], v["is_converted"]) for k, v in valid.items()}
    assert by_id == {
        "dynamics:l-1": ("lead", "new", False),
        "dynamics:l-2": ("lead", "working", False),
        "dynamics:l-3": ("sql", "converted", True),
        "dynamics:l-4": ("lead", "unqualified", False),
    }
    assert valid["dynamics:l-3"]["contact_record_id"] == "dynamics:c-9"
    assert valid["dynamics:l-1"]["lead_source"] == "Trade Show"
    assert valid["dynamics:l-4"]["lead_source"] is None
    assert reasons == {
        "dynamics:l-5": ['lead_country_iso2: country "ATLANTIS" is not an ISO 3166-1 alpha-2 code']
    }
