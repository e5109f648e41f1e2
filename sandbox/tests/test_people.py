"""The CRM-shaped people generator: deterministic, every documented phenomenon present, truth consistent."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest

from crm_pipelines import canonical
from crm_pipelines_sandbox.people import People, generate_people, phenomena

RECORDS = 4000


@pytest.fixture(scope="module")
def people() -> People:
    return generate_people(RECORDS, seed=7)


@pytest.fixture(scope="module")
def counts(people: People) -> dict[str, int]:
    return phenomena(people)


def test_same_seed_same_tables_other_seed_other_tables(people: People) -> None:
    again = generate_people(RECORDS, seed=7)
    assert again.contacts.equals(people.contacts)
    assert again.accounts.equals(people.accounts)
    assert not generate_people(RECORDS, seed=8).contacts.equals(people.contacts)


def test_exactly_the_requested_records_with_canonical_columns(people: People) -> None:
    assert people.contacts.num_rows == RECORDS
    assert set(canonical.CONTACT.names) <= set(people.contacts.column_names)
    assert set(canonical.ACCOUNT.names) <= set(people.accounts.column_names)
    record_ids = people.contacts["record_id"].to_pylist()
    assert len(set(record_ids)) == RECORDS
    assert set(people.contacts["source"].to_pylist()) == {"salesforce", "hubspot", "erp"}


@pytest.mark.parametrize(
    "phenomenon",
    [
        "nickname",
        "initial",
        "typo",
        "transliteration",
        "tagged_email",
        "private_email",
        "unparsable_phone",
        "missing_country",
        "namesake",
        "family_member",
        "same_named_company",
    ],
)
def test_each_phenomenon_occurs(counts: dict[str, int], phenomenon: str) -> None:
    assert counts.get(phenomenon, 0) > 0


def test_truth_is_consistent(people: People) -> None:
    contacts = people.contacts.to_pylist()
    accounts = {a["record_id"]: a for a in people.accounts.to_pylist()}
    # Every contact's account exists in its own system, and one person works at one company.
    company_of_person: dict[int, set[int]] = defaultdict(set)
    for row in contacts:
        account = accounts[row["account_record_id"]]
        assert account["source"] == row["source"]
        company_of_person[row["person_id"]].add(account["company_id"])
    assert all(len(companies) == 1 for companies in company_of_person.values())
    # One company id means one town; same-named companies in other towns have other ids.
    towns: dict[int, set[str]] = defaultdict(set)
    for account in accounts.values():
        towns[account["company_id"]].add(account["city"])
    assert all(len(t) == 1 for t in towns.values())
    # Most people are copied more than once: there is something to resolve.
    people_count = len(company_of_person)
    assert RECORDS / 3 < people_count < RECORDS * 0.8


def test_family_members_share_landline_but_are_different_people(people: People) -> None:
    accounts = {a["record_id"]: a for a in people.accounts.to_pylist()}
    by_phone: dict[tuple[int, str, str], dict[int, str]] = defaultdict(dict)
    for row in people.contacts.to_pylist():
        if row["phone"] and row["last_name"]:
            digits = re.sub(r"\D", "", row["phone"])[-8:]
            key = (accounts[row["account_record_id"]]["company_id"], row["last_name"].lower(), digits)
            by_phone[key][row["person_id"]] = row["first_name"]
    families = [members for members in by_phone.values() if len(members) > 1]
    assert families
    assert any(len(set(members.values())) > 1 for members in families)
