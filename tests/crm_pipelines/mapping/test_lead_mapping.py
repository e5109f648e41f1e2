"""Leads staged from HubSpot contacts in a lead stage, Salesforce Leads, Dynamics 365 leads, Zoho CRM and
SugarCRM Leads: stages and statuses land canonical, HubSpot contacts that never were leads stay out, and
a lead the rules refuse is quarantined with its reason while the others flow on (the packaged
mappings.yaml and rules.yaml)."""

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


def zoho_lead(lead_id: str, status: str | None, **values: str | bool | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": lead_id,
        "First_Name": "Hedy",
        "Last_Name": "Lamarr",
        "Email": "Hedy@Frequency.example",
        "Phone": "01 5123 4567",
        "Company": "Frequency Hopping GmbH",
        "Designation": "Inventor",
        "Country": "Austria",
        "Lead_Status": status,
        "Lead_Source": "Trade Show",
        "converted": "false",
        "converted_contact_id": None,
        "converted_time": None,
        "Created_Time": "2026-11-01T09:00:00+01:00",
        "Modified_Time": "2026-11-20T09:00:00+01:00",
        "_deleted": False,
    }
    row.update(values)
    return row


def test_zoho_leads_map_lead_status_and_conversion(tmp_path: Path) -> None:
    write_raw(
        tmp_path,
        "zoho",
        "leads",
        [
            zoho_lead("z-1", "Not Contacted"),
            zoho_lead("z-2", "Contacted"),
            zoho_lead("z-3", "Contact in Future"),
            zoho_lead("z-4", "Pre-Qualified"),
            zoho_lead("z-5", "Junk Lead"),
            zoho_lead("z-6", None),  # no status set (-None-): a new lead
            # Converted: read with converted=both, it keeps its last status; $converted decides.
            zoho_lead(
                "z-7",
                "Contacted",
                converted="true",
                converted_contact_id="c-77",
                converted_time="2026-11-18T10:30:00+01:00",
            ),
            # Deleted (the recycle bin): a soft delete, not a valid row.
            zoho_lead("z-8", "Not Contacted", _deleted=True),
            # An org's own status value the mapping does not know: quarantined with it.
            zoho_lead("z-9", "Webinar Attendee"),
        ],
    )
    valid, reasons, deleted = stage(tmp_path)
    by_id = {k: (v["lifecycle_stage"], v["status"], v["is_converted"]) for k, v in valid.items()}
    assert by_id == {
        "zoho:z-1": ("lead", "new", False),
        "zoho:z-2": ("mql", "working", False),
        "zoho:z-3": ("lead", "nurturing", False),
        "zoho:z-4": ("mql", "qualified", False),
        "zoho:z-5": ("lead", "unqualified", False),
        "zoho:z-6": ("lead", "new", False),
        "zoho:z-7": ("sql", "converted", True),
    }
    assert deleted["zoho"] == 1
    converted = valid["zoho:z-7"]
    assert converted["contact_record_id"] == "zoho:c-77"
    assert converted["converted_at"].isoformat() == "2026-11-18T09:30:00+00:00"
    assert converted["created_at"].isoformat() == "2026-11-01T08:00:00+00:00"
    assert (converted["email"], converted["phone"], converted["country"]) == (
        "hedy@frequency.example",
        "+43151234567",
        "AT",
    )
    assert (converted["company"], converted["title"], converted["lead_source"]) == (
        "Frequency Hopping GmbH",
        "Inventor",
        "Trade Show",
    )
    assert valid["zoho:z-1"]["contact_record_id"] is None
    assert sorted(reasons["zoho:z-9"]) == [
        'lead_stage_known: lifecycle_stage "webinar attendee" must be one of lead, mql, sql, opportunity, '
        "customer",
        'lead_status_known: status "webinar attendee" must be one of '
        "new, working, nurturing, qualified, unqualified, converted",
    ]
    assert set(reasons) == {"zoho:z-9"}


def sugarcrm_lead(lead_id: str, status: str, **values: str | bool | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": lead_id,
        "first_name": "Margaret",
        "last_name": "Hamilton",
        "email1": "margaret@apollo.example",
        "phone_work": "+1 617 555 0142",
        "account_name": "Apollo Software Inc.",
        "title": "Director",
        "primary_address_country": "USA",
        "status": status,
        "lead_source": "Web Site",
        "converted": "false",
        "contact_id": "",
        "date_entered": "2026-11-01T08:00:00+00:00",
        "date_modified": "2026-11-20T08:00:00+00:00",
        "deleted": "false",
        "_deleted": False,
    }
    row.update(values)
    return row


def test_sugarcrm_leads_map_status_and_conversion(tmp_path: Path) -> None:
    write_raw(
        tmp_path,
        "sugarcrm",
        "leads",
        [
            sugarcrm_lead("s-1", "New"),
            sugarcrm_lead("s-2", "Assigned"),
            sugarcrm_lead("s-3", "In Process"),
            sugarcrm_lead("s-4", "Recycled"),
            sugarcrm_lead("s-5", "Dead"),
            # Converted: Sugar keeps the lead, status Converted, converted 1 and the contact it became.
            sugarcrm_lead("s-6", "Converted", converted="true", contact_id="c-6"),
            # Deleted (deleted = 1): a soft delete, not a valid row.
            sugarcrm_lead("s-7", "New", deleted="true", _deleted=True),
            # A country no one recognises: quarantined with it, the others flow on.
            sugarcrm_lead("s-8", "New", primary_address_country="Middle Earth"),
        ],
    )
    valid, reasons, deleted = stage(tmp_path)
    by_id = {k: (v["lifecycle_stage"], v["status"], v["is_converted"]) for k, v in valid.items()}
    assert by_id == {
        "sugarcrm:s-1": ("lead", "new", False),
        "sugarcrm:s-2": ("lead", "working", False),
        "sugarcrm:s-3": ("mql", "working", False),
        "sugarcrm:s-4": ("lead", "nurturing", False),
        "sugarcrm:s-5": ("lead", "unqualified", False),
        "sugarcrm:s-6": ("sql", "converted", True),
    }
    assert deleted["sugarcrm"] == 1
    converted = valid["sugarcrm:s-6"]
    assert converted["contact_record_id"] == "sugarcrm:c-6"
    assert valid["sugarcrm:s-1"]["contact_record_id"] is None
    assert (converted["phone"], converted["country"], converted["company"]) == (
        "+16175550142",
        "US",
        "Apollo Software Inc.",
    )
    assert converted["lead_source"] == "Web Site"
    assert converted["converted_at"] is None
    assert reasons == {
        "sugarcrm:s-8": ['lead_country_iso2: country "MIDDLE EARTH" is not an ISO 3166-1 alpha-2 code']
    }


PIPEDRIVE_LEAD_IDS = {
    name: f"{n:08x}-5b0c-4d6e-8f10-2a3b4c5d6e7f"
    for n, name in enumerate(("unseen", "seen", "archived", "bad_mail", "deleted"), start=1)
}


def pipedrive_lead(name: str, person_id: str | None, **values: str | bool | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": PIPEDRIVE_LEAD_IDS[name],
        "title": "Navy Labs lead",
        "person_id": person_id,
        "organization_id": None,
        "owner_id": "13540546",
        "source_name": "Manually created",
        "origin": "ManuallyCreated",
        "channel": None,
        "is_archived": "false",
        "was_seen": "false",
        "amount": None,
        "currency": None,
        "expected_close_date": None,
        "add_time": "2026-11-01T08:00:00Z",
        "update_time": "2026-11-20T08:00:00Z",
        "_deleted": False,
    }
    row.update(values)
    return row


def test_pipedrive_leads_take_their_person_and_derive_status_from_seen_and_archived(tmp_path: Path) -> None:
    write_raw(
        tmp_path,
        "pipedrive",
        "leads",
        [
            pipedrive_lead("unseen", "11"),
            # Opened by a salesperson, and linked to an organization of its own.
            pipedrive_lead("seen", "11", was_seen="true", organization_id="22", source_name="Web forms"),
            pipedrive_lead("archived", "11", was_seen="true", is_archived="true"),
            # Its person's e-mail is no address: quarantined, the others flow on.
            pipedrive_lead("bad_mail", "12"),
            # Deleted (or converted into a deal): gone from the leads, a soft delete.
            pipedrive_lead("deleted", "11", _deleted=True),
        ],
    )
    person = {"phone": "+1 202 555 0143", "job_title": "Rear Admiral", "_deleted": False}
    write_raw(
        tmp_path,
        "pipedrive",
        "persons",
        [
            {"id": "11", "first_name": "Grace", "last_name": "Hopper", "email": "Grace@Navy.example",
             "country": None, "org_id": "21", **person},
            {"id": "12", "first_name": "Alan", "last_name": "Turing", "email": "alan@@bletchley.example",
             "country": "United Kingdom", "org_id": "22", **person},
        ],
    )  # fmt: skip
    write_raw(
        tmp_path,
        "pipedrive",
        "organizations",
        [
            {"id": "21", "name": "Navy Labs", "country": "United States", "_deleted": False},
            {"id": "22", "name": "Bletchley Park Ltd", "country": "United Kingdom", "_deleted": False},
        ],
    )
    valid, reasons, deleted = stage(tmp_path)
    ids = {name: f"pipedrive:{lead_id}" for name, lead_id in PIPEDRIVE_LEAD_IDS.items()}
    by_id = {k: (v["lifecycle_stage"], v["status"], v["is_converted"]) for k, v in valid.items()}
    assert by_id == {
        ids["unseen"]: ("lead", "new", False),
        ids["seen"]: ("lead", "working", False),
        ids["archived"]: ("lead", "unqualified", False),
    }
    unseen = valid[ids["unseen"]]
    assert unseen["contact_record_id"] == "pipedrive:11"
    assert (unseen["first_name"], unseen["last_name"]) == ("Grace", "Hopper")
    assert unseen["email"] == "grace@navy.example"
    assert unseen["phone"] == "+12025550143"
    # No country on the person: the organization's.
    assert (unseen["company"], unseen["country"], unseen["title"]) == ("Navy Labs", "US", "Rear Admiral")
    assert unseen["created_at"].isoformat() == "2026-11-01T08:00:00+00:00"
    assert unseen["converted_at"] is None
    seen = valid[ids["seen"]]
    assert (seen["company"], seen["lead_source"]) == ("Bletchley Park Ltd", "Web forms")
    assert reasons == {
        ids["bad_mail"]: [
            'lead_email_format: email "alan@@bletchley.example" is not a valid lower-case e-mail address'
        ]
    }
    assert deleted["pipedrive"] == 1


def creatio_lead(lead_id: str, stage: str, **values: str | bool | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "Id": lead_id,
        "LeadName": "Margaret Hamilton, Apollo Software Inc",
        "Contact": "Margaret Hamilton",
        "Account": "Apollo Software Inc",
        "Email": "margaret@apollo.example",
        "MobilePhone": "+1 617 555 0170",
        "BusinessPhone": None,
        "FullJobTitle": "Director of Software Engineering",
        "CountryId": "6e1c8f4a-0000-4000-8000-000000000001",
        "country": "United States",
        "QualifyStatusId": "6e1c8f4a-0000-4000-8000-000000000002",
        "qualify_status": stage,
        "LeadSourceId": "6e1c8f4a-0000-4000-8000-000000000003",
        "lead_source": "Event",
        "QualifiedContactId": None,
        "CreatedOn": "2026-11-01T08:00:00Z",
        "CreatedById": None,
        "ModifiedOn": "2026-11-20T08:00:00Z",
        "ModifiedById": None,
        "_deleted": False,
    }
    row.update(values)
    return row


def test_creatio_leads_map_their_stage_lookup(tmp_path: Path) -> None:
    write_raw(
        tmp_path,
        "creatio",
        "leads",
        [
            creatio_lead("c-1", "Qualification"),
            creatio_lead("c-2", "Distribution"),
            creatio_lead("c-3", "Handoff to sales"),
            creatio_lead("c-4", "Awaiting sale", QualifiedContactId="k-9"),
            creatio_lead("c-5", "Converted", QualifiedContactId="k-8"),
            creatio_lead("c-6", "Disqualified", lead_source=None, Contact="Hamilton"),
            # A stage this instance added (the QualifyStatus lookup is editable): quarantined with it.
            creatio_lead("c-7", "Nurture later"),
            creatio_lead("c-8", "Qualification", _deleted=True),
        ],
    )
    valid, reasons, deleted = stage(tmp_path)
    by_id = {k: (v["lifecycle_stage"], v["status"], v["is_converted"]) for k, v in valid.items()}
    assert by_id == {
        "creatio:c-1": ("lead", "new", False),
        "creatio:c-2": ("mql", "working", False),
        "creatio:c-3": ("sql", "qualified", False),
        "creatio:c-4": ("opportunity", "converted", True),
        "creatio:c-5": ("customer", "converted", True),
        "creatio:c-6": ("lead", "unqualified", False),
    }
    one = valid["creatio:c-1"]
    assert (one["first_name"], one["last_name"], one["company"]) == (
        "Margaret",
        "Hamilton",
        "Apollo Software Inc",
    )
    assert (one["email"], one["phone"], one["country"]) == ("margaret@apollo.example", "+16175550170", "US")
    assert (one["title"], one["lead_source"], one["contact_record_id"]) == (
        "Director of Software Engineering",
        "Event",
        None,
    )
    assert valid["creatio:c-4"]["contact_record_id"] == "creatio:k-9"
    assert valid["creatio:c-4"]["converted_at"] is None
    # A one-word contact name is taken as the given name only.
    assert (valid["creatio:c-6"]["first_name"], valid["creatio:c-6"]["last_name"]) == ("Hamilton", None)
    assert sorted(reasons["creatio:c-7"]) == [
        'lead_stage_known: lifecycle_stage "nurture later" must be one of lead, mql, sql, opportunity, customer',
        'lead_status_known: status "nurture later" must be one of '
        "new, working, nurturing, qualified, unqualified, converted",
    ]
    assert set(reasons) == {"creatio:c-7"}
    assert deleted["creatio"] == 1
