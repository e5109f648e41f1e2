"""Staging by changed keys: night D staged in full, night D+1 restages only the records whose source rows
changed (a contact's joined account included) and writes what a full staging of D+1 writes.

The lake holds Salesforce contacts and accounts as the extract lands them (the whole object each
night, unchanged rows as they were); the packaged mappings.yaml and rules.yaml decide.
"""

from __future__ import annotations

import copy
import logging
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assets.staging import build_staging_assets
from crm_pipelines.lake import partition_dir
from crm_pipelines.mapping import stage as stage_module
from crm_pipelines.mapping.spec import load_mappings
from crm_pipelines.mapping.stage import SourceStaging, night_files, stage_entity
from crm_pipelines.mapping.state import marker_path
from crm_pipelines.quality.rules import load_rules
from resources.lake import LakeResource

D, D1, D2 = "2026-11-24", "2026-11-25", "2026-11-26"
LOG = logging.getLogger("test")
CONTACT_COLUMNS = (
    "Id",
    "AccountId",
    "FirstName",
    "LastName",
    "Email",
    "Phone",
    "Title",
    "MailingCountry",
    "MailingStreet",
    "MailingCity",
    "MailingPostalCode",
    "Birthdate",
    "SystemModstamp",
    "_extracted_at",
)


def contact(i: int | None, night: str, **values: Any) -> dict[str, Any]:
    """A Salesforce contact; contacts 10-14 have no country of their own (their account's counts)."""
    key = None if i is None else f"C{i:02d}"
    row: dict[str, Any] = {
        "Id": key,
        "AccountId": f"A{(i or 0) // 10}",
        "FirstName": f"Ada{i}",
        "LastName": f"Lovelace{i}",
        "Email": f"ada{i}@analytical.example",
        "Phone": "030 1234567",
        "Title": "CTO",
        "MailingCountry": None if i is not None and 10 <= i < 15 else "DE",
        "MailingStreet": "Hauptstr. 1",
        "MailingCity": "Berlin",
        "MailingPostalCode": "10115",
        "Birthdate": "1990-12-10",
        "SystemModstamp": "2026-11-20T08:00:00.000+0000",
        "_extracted_at": f"{night}T01:00:00+00:00",
        "_deleted": False,
    }
    row.update(values)
    return row


def night_d() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Night D: 40 contacts on accounts A0-A3, with a bad e-mail, an unknown country, an unparseable
    birth date (a warning), a deleted contact, a key written twice and a row without a key."""
    contacts = [contact(i, D) for i in range(40)]
    contacts[30] = contact(30, D, Email="not-an-email")
    contacts[29] = contact(29, D, MailingCountry="Atlantis")
    contacts[37] = contact(37, D, Birthdate="someday")
    contacts[32] = contact(32, D, _deleted=True)
    contacts.append(contact(36, D, Title="older copy", SystemModstamp="2026-11-19T08:00:00.000+0000"))
    contacts.append(contact(None, D, FirstName="Nobody"))
    accounts = [
        {
            "Id": f"A{a}",
            "Name": f"Account {a}",
            "BillingCountry": "DE",
            "_extracted_at": f"{D}T01:00:00+00:00",
        }
        for a in range(4)
    ]
    return contacts, accounts


def night_d1() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Night D+1: e-mail of 30 fixed (it passes now), 31 in Atlantis (it fails now), 33 deleted, 34 a
    new title, 35 gone, 40 and 41 new (41 with a bad e-mail and an unknown country); account A1 (of
    contacts 10-19) moved to GB, A2 renamed. The keyless row is restaged however unchanged."""
    contacts, accounts = night_d()
    contacts[30] = contact(30, D1)
    contacts[31] = contact(31, D1, MailingCountry="Atlantis")
    contacts[33] = contact(33, D1, _deleted=True)
    contacts[34] = contact(34, D1, Title="Chief Executive")
    del contacts[35]
    contacts.append(contact(40, D1))
    contacts.append(contact(41, D1, Email="nope", MailingCountry="Atlantis"))
    accounts[1] = {**accounts[1], "BillingCountry": "GB", "_extracted_at": f"{D1}T01:00:00+00:00"}
    accounts[2] = {**accounts[2], "Name": "Account 2 renamed", "_extracted_at": f"{D1}T01:00:00+00:00"}
    return contacts, accounts


# Restaged on D+1: 30, 31, 33, 34, 40, 41, the keyless row and 10-14 (their phone country is A1's).
RESTAGED_D1 = 12


def write_night(
    lake: Path, night: str, contacts: list[dict[str, Any]], accounts: list[dict[str, Any]]
) -> None:
    for dataset, rows, names in (
        ("contacts", contacts, CONTACT_COLUMNS),
        ("accounts", accounts, ("Id", "Name", "BillingCountry", "_extracted_at")),
    ):
        schema = pa.schema([*(pa.field(n, pa.string()) for n in names), pa.field("_deleted", pa.bool_())])
        folder = partition_dir(lake, "raw", "salesforce", dataset, night)
        folder.mkdir(parents=True, exist_ok=True)
        rows = [{"_deleted": False, **row} for row in rows]
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "part-0000.parquet")


def salesforce(outcomes: list[SourceStaging]) -> SourceStaging:
    (outcome,) = [o for o in outcomes if o.source == "salesforce"]
    return outcome


def stage(lake: Path, night: str, *, incremental: bool = True) -> SourceStaging:
    return salesforce(
        stage_entity(entity="contact", lake_dir=lake, partition=night, log=LOG, incremental=incremental)
    )


def outputs(lake: Path, night: str) -> dict[str, list[dict[str, Any]]]:
    """The night's files, rows sorted (their order is not part of the contract)."""
    found = {}
    for role, path in night_files(lake, "contact", night, "salesforce").items():
        rows = pq.read_table(path).to_pylist()
        found[role] = sorted(rows, key=lambda r: (str(r["record_id"]), str(r.get("rule"))))
    return found


def night_view(outcome: SourceStaging) -> dict[str, Any]:
    """What a full run and an incremental run must agree on: the counts and the quality verdicts."""
    counts = {
        k: v
        for k, v in outcome.counts().items()
        if k
        not in {
            "mode",
            "mode_reason",
            "base_partition",
            "records_restaged",
            "records_reused",
            "records_removed",
        }
    }
    quality = outcome.quality
    return {
        **counts,
        "quality": {
            key: quality[key]
            for key in (
                "success",
                "failed_rules",
                "rows_in",
                "rows_valid",
                "rows_quarantined",
                "quarantine_records",
                "warnings",
            )
        },
        "rules": {
            name: {k: stats[k] for k in ("evaluated", "unexpected", "unexpected_percent", "success")}
            for name, stats in quality["rules"].items()
        },
    }


def full_recompute(
    lake: Path, tmp_path: Path, night: str
) -> tuple[SourceStaging, dict[str, list[dict[str, Any]]]]:
    """Stage ``night`` in full on a copy of the lake."""
    copied = tmp_path / f"full-{night}"
    shutil.copytree(lake, copied)
    outcome = stage(copied, night, incremental=False)
    assert outcome.mode == "full"
    return outcome, outputs(copied, night)


def staged_as_a_full_recompute(
    lake: Path, tmp_path: Path, night: str
) -> tuple[SourceStaging, dict[str, list[dict[str, Any]]]]:
    """Stage ``night`` (incrementally when a base allows) and check it wrote what a full run writes."""
    full, full_files = full_recompute(lake, tmp_path, night)
    outcome = stage(lake, night)
    assert outputs(lake, night) == full_files
    assert night_view(outcome) == night_view(full)
    return outcome, full_files


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    lake = tmp_path / "lake"
    write_night(lake, D, *night_d())
    first = stage(lake, D)
    assert (first.mode, first.mode_reason) == ("full", "no earlier staging state")
    assert first.suite_success
    write_night(lake, D1, *night_d1())
    return lake


def test_changed_night_equals_a_full_recompute(lake: Path, tmp_path: Path) -> None:
    full, full_files = full_recompute(lake, tmp_path, D1)
    outcome = stage(lake, D1)
    assert (outcome.mode, outcome.base_partition) == ("incremental", D)
    assert outcome.records_restaged == RESTAGED_D1
    assert outcome.records_removed == 1
    assert outcome.records_reused + outcome.records_restaged == 42  # 41 keys and one keyless row
    files = outputs(lake, D1)
    assert files == full_files
    assert night_view(outcome) == night_view(full)

    valid = {r["record_id"]: r for r in files["staging"]}
    quarantined = {(r["record_id"], r["rule"]) for r in files["quarantine"]}
    # Fixed and newly failing records, deletes, the account's new country in its contacts' phones.
    assert "salesforce:C30" in valid
    assert ("salesforce:C31", "contact_country_iso2") in quarantined
    assert ("salesforce:C29", "contact_country_iso2") in quarantined  # reused from D
    assert {r["record_id"] for r in files["deleted"]} == {"salesforce:C32", "salesforce:C33"}
    assert "salesforce:C35" not in valid
    assert "salesforce:C35" not in {r for r, _ in quarantined}
    assert valid["salesforce:C34"]["title"] == "Chief Executive"
    assert valid["salesforce:C11"]["phone"] == "+44301234567"  # its account moved to GB
    assert valid["salesforce:C21"]["phone"] == "+49301234567"
    # Three failing rows of 40 are below the rule's mostly (0.95): the whole night's verdict, of
    # which one failing row (C29) was reused from D and not validated again.
    assert not outcome.suite_success
    assert outcome.failed_rules == ["contact_country_iso2"]
    assert outcome.quality["rules"]["contact_country_iso2"]["unexpected"] == 3
    assert outcome.quality["warnings"] == {"contact_phone_parsable": 3, "contact_birth_date_unparseable": 1}


def test_a_night_after_an_incremental_night_equals_a_full_recompute(lake: Path, tmp_path: Path) -> None:
    stage(lake, D1)
    contacts, accounts = night_d1()
    contacts[31] = contact(31, D2)  # back from Atlantis: the verdict passes again
    contacts[37] = contact(37, D2)  # the birth date warning goes
    write_night(lake, D2, contacts, accounts)
    outcome, _ = staged_as_a_full_recompute(lake, tmp_path, D2)
    assert (outcome.mode, outcome.base_partition, outcome.records_restaged) == ("incremental", D1, 3)
    assert outcome.suite_success
    assert outcome.quality["warnings"] == {"contact_phone_parsable": 2, "contact_birth_date_unparseable": 0}


def test_rerunning_a_night_changes_nothing(lake: Path) -> None:
    first = stage(lake, D1)
    first_files = outputs(lake, D1)
    again = stage(lake, D1)
    # The re-run builds on the night's own last run: only the keyless row is staged again.
    assert (again.mode, again.base_partition, again.records_restaged) == ("incremental", D1, 1)
    assert outputs(lake, D1) == first_files
    assert {
        k: v
        for k, v in again.counts().items()
        if k not in ("mode_reason", "base_partition", "records_restaged", "records_reused", "records_removed")
    } == {
        k: v
        for k, v in first.counts().items()
        if k not in ("mode_reason", "base_partition", "records_restaged", "records_reused", "records_removed")
    }
    assert night_view(again) == night_view(first)
    assert not (lake / "staging" / "rerun").exists() or not any(
        (lake / "staging" / "rerun").rglob("*.parquet")
    )


def test_a_night_run_again_after_more_edits_builds_on_its_last_run(lake: Path, tmp_path: Path) -> None:
    stage(lake, D1)
    contacts, accounts = night_d1()
    contacts[34] = contact(34, D1, Title="Chief Operating Officer")  # edited again since the first run
    contacts[20] = contact(20, D1, MailingCountry="Atlantis")  # newly failing
    write_night(lake, D1, contacts, accounts)
    again, _ = staged_as_a_full_recompute(lake, tmp_path, D1)
    assert (again.mode, again.base_partition, again.records_restaged) == ("incremental", D1, 3)
    assert {r["record_id"]: r["title"] for r in outputs(lake, D1)["staging"]}["salesforce:C34"] == (
        "Chief Operating Officer"
    )


def test_an_unchanged_night_restages_only_the_keyless_row(lake: Path, tmp_path: Path) -> None:
    write_night(lake, D1, *night_d())
    full, full_files = full_recompute(lake, tmp_path, D1)
    outcome = stage(lake, D1)
    assert (outcome.mode, outcome.records_restaged, outcome.records_removed) == ("incremental", 1, 0)
    assert outputs(lake, D1) == full_files
    assert outputs(lake, D1) == {role: rows for role, rows in outputs(lake, D).items()}
    assert night_view(outcome) == night_view(full)


def test_changed_rules_restage_in_full(lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rules = load_rules().model_copy(deep=True)
    contact_rules = rules.entities["contact"].rules
    index = next(i for i, r in enumerate(contact_rules) if r.name == "contact_country_iso2")
    contact_rules[index] = contact_rules[index].model_copy(update={"mostly": 0.5})
    monkeypatch.setattr(stage_module, "load_rules", lambda: rules)
    outcome = stage(lake, D1)
    assert outcome.mode == "full"
    assert outcome.mode_reason == f"mappings, rules or code changed since {D}"
    assert outcome.suite_success  # 3 of 40 failing pass a mostly of 0.5
    full, full_files = full_recompute(lake, tmp_path, D1)
    assert outputs(lake, D1) == full_files
    assert night_view(outcome) == night_view(full)
    assert night_view(outcome) == night_view(full)
    # The night after, under the same rules, builds on D+1.
    write_night(lake, D2, *night_d1())
    after = stage(lake, D2)
    assert (after.mode, after.base_partition) == ("incremental", D1)


def test_a_changed_mapping_restages_in_full(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mappings = copy.deepcopy(load_mappings())
    (salesforce_contact,) = [m for m in mappings.entities["contact"] if m.source == "salesforce"]
    salesforce_contact.columns["title"] = salesforce_contact.columns["title"].model_copy(
        update={"transform": "upper"}
    )
    monkeypatch.setattr(stage_module, "load_mappings", lambda: mappings)
    outcome = stage(lake, D1)
    assert (outcome.mode, outcome.records_reused) == ("full", 0)
    assert {r["title"] for r in outputs(lake, D1)["staging"]} == {"CTO", "CHIEF EXECUTIVE"}


def test_a_night_without_its_marker_is_no_base(lake: Path) -> None:
    """A run that died before its marker (written last) is never built on."""
    marker_path(lake, "contact", D, "salesforce").unlink()
    outcome = stage(lake, D1)
    assert (outcome.mode, outcome.mode_reason) == ("full", "no earlier staging state")


def test_a_base_rewritten_since_is_no_base(lake: Path, tmp_path: Path) -> None:
    """An erasure rewrites the earlier night's files: their counts no longer hold, staging is full."""
    path = night_files(lake, "contact", D, "salesforce")["staging"]
    table = pq.read_table(path)
    pq.write_table(table.filter(pa.compute.not_equal(table["record_id"], "salesforce:C01")), path)
    outcome = stage(lake, D1)
    assert (outcome.mode, outcome.mode_reason) == ("full", f"staging of {D} changed since they were written")
    full, full_files = full_recompute(lake, tmp_path, D1)
    assert outputs(lake, D1) == full_files
    assert night_view(outcome) == night_view(full)


def test_most_records_changed_restages_in_full(lake: Path) -> None:
    contacts, accounts = night_d1()
    write_night(lake, D1, [{**c, "Title": "new"} for c in contacts], accounts)
    outcome = stage(lake, D1)
    assert outcome.mode == "full"
    assert outcome.mode_reason == f"42 of 42 records changed since {D}"


def test_the_staging_asset_shows_what_was_restaged(lake: Path, tmp_path: Path) -> None:
    """The asset's metadata says which night each source built on; its check is the whole night's."""
    (asset,) = [a for a in build_staging_assets() if a.key.to_user_string() == "staging/contact"]
    result = dg.materialize(
        [asset], partition_key=D1, resources={"lake": LakeResource(root=str(lake))}, raise_on_error=False
    )
    (materialization,) = result.asset_materializations_for_node(asset.node_def.name)
    metadata = materialization.metadata
    assert metadata["staging_mode"].value == {"salesforce": f"incremental: from {D}"}
    assert metadata["records_restaged"].value == RESTAGED_D1
    assert metadata["records_reused"].value == 42 - RESTAGED_D1
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed
    assert "contact_country_iso2" in (check.description or "")


def test_the_state_keeps_what_rules_derive_from_the_source_json_not_the_json(
    lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The contact rules derive the source's country and birth date from ``_raw``: the state keeps those
    values, not the JSON (two thirds of the file); without such rules it keeps neither. The nights
    built on either state equal a full recompute (the suite reads the kept values as they are)."""
    rules = load_rules()
    from_json = [d.name for d in rules.derived_from_raw("contact")]
    assert from_json == ["_source_country", "_source_birth_date"]
    names = pq.read_schema(night_files(lake, "contact", D, "salesforce")["state"]).names
    assert "_raw" not in names
    assert set(from_json) <= set(names)
    state = {
        r["record_id"]: r
        for r in pq.read_table(night_files(lake, "contact", D, "salesforce")["state"]).to_pylist()
    }
    assert state["salesforce:C29"]["_source_country"] == "Atlantis"
    assert state["salesforce:C11"]["_source_country"] is None  # no country of its own
    assert state["salesforce:C37"]["_source_birth_date"] == "someday"

    without = rules.model_copy(deep=True)
    contact_rules = without.entities["contact"]
    without.entities["contact"] = contact_rules.model_copy(
        update={
            "derived": [d for d in contact_rules.derived if not d.reads_raw],
            "rules": [r for r in contact_rules.rules if not any(n in r.model_dump_json() for n in from_json)],
        }
    )
    monkeypatch.setattr(stage_module, "load_rules", lambda: without)
    assert stage(lake, D1).mode == "full"  # the rules changed
    names = pq.read_schema(night_files(lake, "contact", D1, "salesforce")["state"]).names
    assert "_raw" not in names
    assert not set(from_json) & set(names)

    contacts, accounts = night_d1()
    contacts[31] = contact(31, D2)
    contacts[30] = contact(30, D2, Email="broken again")  # fails a rule that reads no JSON
    write_night(lake, D2, contacts, accounts)
    outcome, full_files = staged_as_a_full_recompute(lake, tmp_path, D2)
    assert (outcome.mode, outcome.base_partition, outcome.records_restaged) == ("incremental", D1, 3)
    assert ("salesforce:C30", "contact_email_format") in {
        (r["record_id"], r["rule"]) for r in full_files["quarantine"]
    }
