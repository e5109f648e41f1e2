"""Support cases staged from each CRM's raw extract: statuses, priorities and links land canonical, and a
case the rules refuse is quarantined with its reason (the packaged mappings.yaml and rules.yaml)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

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


def stage(lake: Path, source: str) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """Stage support_case; returns the valid rows by record_id and the quarantine reasons by record_id."""
    outcomes = stage_entity(
        entity="support_case", lake_dir=lake, partition=PARTITION, log=logging.getLogger("test")
    )
    assert [o.source for o in outcomes if o.skipped is None] == [source]
    valid = pq.read_table(staging_folder(lake, "support_case", PARTITION) / f"{source}.parquet")
    quarantined = pq.read_table(
        quality_quarantine_folder(lake, "support_case", PARTITION) / f"{source}.parquet"
    )
    reasons: dict[str, list[str]] = {}
    for row in quarantined.to_pylist():
        reasons.setdefault(str(row["record_id"]), []).append(f"{row['rule']}: {row['reason']}")
    return {str(r["record_id"]): r for r in valid.to_pylist()}, reasons


def sugar_case(case_id: str, **values: str | bool | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": case_id,
        "case_number": "17",
        "name": "Printer offline",
        "description": "It stopped after the update.",
        "status": "Assigned",
        "state": "Open",
        "priority": "P1",
        "type": "Product",
        "source": "InboundEmail",
        "resolution": "",
        "work_log": "",
        "resolved_datetime": None,
        "account_id": "acc-1",
        "primary_contact_id": "con-1",
        "sync_key": "",
        "zendesk_ticket_id_c": "",
        "date_entered": "2026-11-20T09:00:00+00:00",
        "date_modified": "2026-11-21T10:00:00+00:00",
        "created_by": "1",
        "modified_user_id": "1",
        "deleted": "false",
        "_deleted": False,
    }
    row.update(values)
    return row


def test_sugar_cases_land_canonical_and_a_bad_case_is_quarantined(tmp_path: Path) -> None:
    write_raw(
        tmp_path,
        "sugarcrm",
        "cases",
        [
            sugar_case("c-open", zendesk_ticket_id_c=" 4711 "),
            sugar_case(
                "c-solved",
                case_number="18",
                status="Closed",
                state="Closed",
                priority="P3",
                source="Web",
                resolution="Replaced the toner.",
                resolved_datetime="2026-11-21T08:30:00+00:00",
            ),
            sugar_case("c-rejected", case_number="19", status="Rejected", state="Closed", priority="P2"),
            # Not a status Sugar's dropdown has: no canonical status for it.
            sugar_case("c-unknown", case_number="20", status="Escalated"),
            # Solved a day before it was opened.
            sugar_case(
                "c-time",
                case_number="21",
                status="Closed",
                state="Closed",
                resolved_datetime="2026-11-19T09:00:00+00:00",
            ),
            sugar_case("c-gone", case_number="22", deleted="true", _deleted=True),
        ],
    )
    valid, reasons = stage(tmp_path, "sugarcrm")

    open_case = valid["sugarcrm:c-open"]
    assert open_case["case_number"] == "17"
    assert open_case["subject"] == "Printer offline"
    assert (open_case["status"], open_case["priority"], open_case["origin"]) == ("open", "high", "email")
    assert open_case["account_record_id"] == "sugarcrm:acc-1"
    assert open_case["contact_record_id"] == "sugarcrm:con-1"
    assert open_case["related_record_id"] == "zendesk:4711"
    assert open_case["case_type"] == "product"
    assert open_case["resolved_at"] is None
    assert open_case["created_at"].isoformat() == "2026-11-20T09:00:00+00:00"

    solved = valid["sugarcrm:c-solved"]
    assert (solved["status"], solved["priority"], solved["origin"]) == ("solved", "low", "web")
    assert solved["resolution"] == "Replaced the toner."
    assert solved["resolved_at"].isoformat() == "2026-11-21T08:30:00+00:00"
    assert solved["related_record_id"] is None  # no ticket yet
    # Closed without Serve's stamp: its last change is when it was closed.
    rejected = valid["sugarcrm:c-rejected"]
    assert (rejected["status"], rejected["priority"]) == ("closed", "normal")
    assert rejected["resolved_at"].isoformat() == "2026-11-21T10:00:00+00:00"

    assert "sugarcrm:c-unknown" not in valid
    assert any(
        r.startswith("support_case_status_known:") and "escalated" in r for r in reasons["sugarcrm:c-unknown"]
    )
    assert "sugarcrm:c-time" not in valid
    assert any(r.startswith("support_case_resolved_after_created:") for r in reasons["sugarcrm:c-time"])
    # A delete, not a row to validate.
    assert "sugarcrm:c-gone" not in valid
    assert "sugarcrm:c-gone" not in reasons


@pytest.mark.parametrize(
    ("subject", "number", "quarantined"),
    [("Printer offline", None, False), (None, "23", False), (None, None, True)],
)
def test_a_case_needs_a_subject_or_a_number(
    tmp_path: Path, subject: str | None, number: str | None, quarantined: bool
) -> None:
    write_raw(tmp_path, "sugarcrm", "cases", [sugar_case("c-1", name=subject, case_number=number)])
    valid, reasons = stage(tmp_path, "sugarcrm")
    assert ("sugarcrm:c-1" in reasons) is quarantined
    assert ("sugarcrm:c-1" in valid) is not quarantined
    if quarantined:
        assert reasons["sugarcrm:c-1"][0].startswith("support_case_subject_or_number_required:")


def incident(case_id: str, **values: str | bool | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "incidentid": case_id,
        "ticketnumber": "CAS-01001-A1B2C3",
        "title": "Printer offline",
        "description": None,
        "statecode": "0",
        "statuscode": "2",
        "prioritycode": "1",
        "caseorigincode": "2",
        "casetypecode": "2",
        "account_id": "acc-1",
        "contact_id": "con-1",
        "createdon": "2026-11-20T09:00:00Z",
        "modifiedon": "2026-11-21T10:00:00Z",
        "_deleted": False,
    }
    row.update(values)
    return row


def test_dynamics_incidents_take_their_resolution_from_the_resolution_activity(tmp_path: Path) -> None:
    write_raw(
        tmp_path,
        "dynamics",
        "cases",
        [
            incident("i-hold"),
            incident(
                "i-solved", ticketnumber="CAS-01002-D4E5F6", statecode="1", statuscode="5", prioritycode="3"
            ),
            incident("i-cancelled", ticketnumber="CAS-01003-A7B8C9", statecode="2", statuscode="6"),
            incident("i-odd", ticketnumber="CAS-01004-AAAAAA", statuscode="42"),
        ],
    )
    resolution = {
        "activityid": "r-1",
        "subject": "Reinstalled the driver.",
        "description": None,
        "incident_id": "i-solved",
        "actualend": "2026-11-21T08:00:00Z",
        "statecode": "1",
        "modifiedon": "2026-11-21T08:00:00Z",
        "_deleted": False,
    }
    write_raw(tmp_path, "dynamics", "case_resolutions", [resolution])
    valid, reasons = stage(tmp_path, "dynamics")

    hold = valid["dynamics:i-hold"]
    assert (hold["status"], hold["priority"], hold["origin"], hold["case_type"]) == (
        "on_hold",
        "high",
        "email",
        "problem",
    )
    assert hold["case_number"] == "CAS-01001-A1B2C3"
    assert hold["account_record_id"] == "dynamics:acc-1"
    assert hold["contact_record_id"] == "dynamics:con-1"
    assert hold["resolution"] is None
    assert hold["resolved_at"] is None
    solved = valid["dynamics:i-solved"]
    assert (solved["status"], solved["priority"]) == ("solved", "low")
    assert solved["resolution"] == "Reinstalled the driver."
    assert solved["resolved_at"].isoformat() == "2026-11-21T08:00:00+00:00"
    cancelled = valid["dynamics:i-cancelled"]
    assert cancelled["status"] == "closed"
    assert cancelled["resolved_at"].isoformat() == "2026-11-21T10:00:00+00:00"
    assert "dynamics:i-odd" not in valid
    assert any(r.startswith("support_case_status_known:") for r in reasons["dynamics:i-odd"])


def test_salesforce_cases_land_canonical_with_their_closed_date(tmp_path: Path) -> None:
    base: dict[str, Any] = {
        "Id": "500A",
        "CaseNumber": "00001026",
        "AccountId": "001A",
        "ContactId": "003A",
        "Subject": "Machine stops after ten minutes",
        "Description": None,
        "Status": "Working",
        "Priority": "Medium",
        "Origin": "Phone",
        "Type": "Problem",
        "Reason": "Breakdown",
        "IsClosed": "false",
        "ClosedDate": None,
        "CreatedDate": "2026-11-20T09:00:00.000+0000",
        "SystemModstamp": "2026-11-21T10:00:00.000+0000",
        "IsDeleted": "false",
        "_deleted": False,
    }
    closed = {
        **base,
        "Id": "500B",
        "CaseNumber": "00001027",
        "Status": "Closed",
        "Priority": "High",
        "IsClosed": "true",
        "ClosedDate": "2026-11-21T08:00:00.000+0000",
    }
    # Closed before it was opened (an import that set ClosedDate wrong).
    backwards = {
        **closed,
        "Id": "500C",
        "CaseNumber": "00001028",
        "ClosedDate": "2026-11-01T08:00:00.000+0000",
    }
    write_raw(tmp_path, "salesforce", "cases", [base, closed, backwards])
    valid, reasons = stage(tmp_path, "salesforce")
    working = valid["salesforce:500A"]
    assert (working["status"], working["priority"], working["origin"], working["case_type"]) == (
        "open",
        "normal",
        "phone",
        "problem",
    )
    assert (working["account_record_id"], working["contact_record_id"]) == (
        "salesforce:001A",
        "salesforce:003A",
    )
    assert working["resolved_at"] is None
    done = valid["salesforce:500B"]
    assert (done["status"], done["priority"]) == ("closed", "high")
    assert done["resolved_at"].isoformat() == "2026-11-21T08:00:00+00:00"
    assert done["resolution"] is None  # Case has no resolution field
    assert "salesforce:500C" not in valid
    assert reasons["salesforce:500C"][0].startswith("support_case_resolved_after_created:")
