"""The sandbox generator: deterministic, dirty in documented ways, and its truth matches the stores."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sqlite3
from collections import Counter
from contextlib import closing
from datetime import date, datetime, timedelta
from pathlib import Path
from xml.etree import ElementTree

import phonenumbers
import pyarrow.parquet as pq
import pytest

from crm_pipelines.identity.references import KnownRecord, recognise
from crm_pipelines_sandbox.data import (
    COUNTRY_SPELLINGS,
    DATASETS,
    INVALID_KINDS,
    INVOICE_CSV_COLUMNS,
    LEAD_DATASETS,
    PARTY_DATASETS,
    PAYMENT_CSV_COLUMNS,
    UNKNOWN_COUNTRIES,
    SandboxLayout,
    generate_sandbox,
    salesforce_id_is_valid,
)
from crm_pipelines_sandbox.simulators.records import fetch_records, read_info
from crm_pipelines_sandbox.systems import sandbox_crm, sandbox_crms

AS_OF = date(2026, 11, 25)
CONTACTS = 2000
SPELLING_TO_CODE = {spelling: code for code, spellings in COUNTRY_SPELLINGS.items() for spelling in spellings}
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")

# (dataset, database attribute of the layout, table, key column, deleted column)
STORE_TABLES = [
    ("salesforce.Account", "salesforce_store", "Account", "Id", "IsDeleted"),
    ("salesforce.Contact", "salesforce_store", "Contact", "Id", "IsDeleted"),
    ("salesforce.Opportunity", "salesforce_store", "Opportunity", "Id", "IsDeleted"),
    ("salesforce.Lead", "salesforce_store", "Lead", "Id", "IsDeleted"),
    ("hubspot.companies", "hubspot_store", "companies", "id", "archived"),
    ("hubspot.contacts", "hubspot_store", "contacts", "id", "archived"),
    ("hubspot.deals", "hubspot_store", "deals", "id", "archived"),
    ("erp.customers", "erp_db", "customers", "customer_id", None),
    ("erp.products", "erp_db", "products", "product_id", None),
    ("erp.sales_orders", "erp_db", "sales_orders", "order_id", None),
    ("erp.sales_order_lines", "erp_db", "sales_order_lines", "line_id", None),
    ("erp.invoices", "erp_db", "invoices", "invoice_id", None),
    ("erp.payments", "erp_db", "payments", "payment_id", None),
]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> SandboxLayout:
    return generate_sandbox(tmp_path_factory.mktemp("sandbox"), contacts=CONTACTS, seed=42, as_of=AS_OF)


@pytest.fixture(scope="module")
def truth(sandbox: SandboxLayout) -> list[dict[str, object]]:
    table: list[dict[str, object]] = pq.read_table(sandbox.truth).to_pylist()
    return table


@pytest.fixture(scope="module")
def summary(sandbox: SandboxLayout) -> dict[str, object]:
    result: dict[str, object] = json.loads(sandbox.truth_summary.read_text())
    return result


def rows(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
    with closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute(sql, params).fetchall()


def truth_of(truth: list[dict[str, object]], dataset: str) -> dict[str, dict[str, object]]:
    return {str(r["source_id"]): r for r in truth if r["dataset"] == dataset}


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def xml_payments(path: Path) -> list[list[str]]:
    """The payments of the XML drop, each as its field values in PAYMENT_CSV_COLUMNS order."""
    root = ElementTree.parse(path).getroot()
    assert root.tag == "Payments"
    out = []
    for payment in root:
        assert payment.tag == "Payment"
        assert [child.tag for child in payment] == list(PAYMENT_CSV_COLUMNS[: len(payment)])
        out.append([child.text or "" for child in payment])
    return out


def csv_lines(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh))


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(
    sandbox: SandboxLayout, tmp_path: Path
) -> None:
    again = generate_sandbox(tmp_path / "again", contacts=CONTACTS, seed=42, as_of=AS_OF)
    first_root = sandbox.truth.parent
    assert digests(again.truth.parent) == digests(first_root)
    # 3 databases, 2 drop files, truth and its summary, and one store per other CRM.
    assert len(digests(first_root)) == 7 + len(sandbox_crms())

    other = generate_sandbox(tmp_path / "other", contacts=CONTACTS, seed=7, as_of=AS_OF)
    assert other.truth.read_bytes() != sandbox.truth.read_bytes()


def test_regenerating_in_place_replaces_the_sandbox(tmp_path: Path) -> None:
    first = generate_sandbox(tmp_path, contacts=100, seed=1, as_of=AS_OF)
    before = digests(tmp_path)
    second = generate_sandbox(tmp_path, contacts=100, seed=1, as_of=AS_OF)
    assert second == first
    assert digests(tmp_path) == before


def test_world_size_and_summary_reconcile_with_truth(
    sandbox: SandboxLayout, truth: list[dict[str, object]], summary: dict[str, object]
) -> None:
    assert summary["true_people"] == CONTACTS
    assert summary["true_companies"] == CONTACTS // 5
    datasets = summary["datasets"]
    assert isinstance(datasets, dict)
    assert set(datasets) == set(DATASETS)
    counts = Counter(str(r["dataset"]) for r in truth)
    invalid = Counter(str(r["dataset"]) for r in truth if r["invalid_reason"] is not None)
    deleted = Counter(str(r["dataset"]) for r in truth if r["deleted"])
    for name, stats in datasets.items():
        assert stats["rows"] == counts[name], name
        assert stats["invalid"] == invalid[name], name
        assert stats["deleted"] == deleted[name], name

    # Every true person is somewhere in a CRM, every true company in at least one system.
    people = {r["entity_id"] for r in truth if r["dataset"] in ("salesforce.Contact", "hubspot.contacts")}
    companies = {
        r["entity_id"]
        for r in truth
        if r["dataset"] in ("salesforce.Account", "hubspot.companies", "erp.customers")
    }
    assert len(people) == CONTACTS
    assert len(companies) == CONTACTS // 5
    for name in PARTY_DATASETS:
        distinct = {r["entity_id"] for r in truth if r["dataset"] == name}
        assert datasets[name]["entities"] == len(distinct)
    other_crm = {f"{s}." for s in sandbox_crms()}
    non_party = [
        r
        for r in truth
        if r["dataset"] not in (*PARTY_DATASETS, *LEAD_DATASETS)
        and not str(r["dataset"]).startswith(tuple(other_crm))
    ]
    assert all(r["entity_id"] is None for r in non_party)
    # A lead is one of the world's people (most of them also a contact somewhere).
    leads = [r for r in truth if r["dataset"] in LEAD_DATASETS]
    assert leads
    assert {r["entity_id"] for r in leads} <= people


def test_the_other_crms_hold_some_of_the_same_companies_and_people(
    sandbox: SandboxLayout, truth: list[dict[str, object]], summary: dict[str, object]
) -> None:
    """Each other CRM's store holds exactly the records the truth lists for it, each a real entity."""
    known = {r["entity_id"] for r in truth if r["dataset"] in PARTY_DATASETS}
    counts = summary["other_crms"]
    assert isinstance(counts, dict)
    assert set(counts) == set(sandbox_crms())
    for system in sandbox_crms():
        info = read_info(sandbox.crm_store(system))
        crm = sandbox_crm(system)
        for kind in ("account", "contact"):
            if kind not in crm.kinds:
                continue
            dataset = f"{system}.{crm.kinds[kind]}"
            stored = {
                str(r[info.objects[crm.kinds[kind]].key]): r["_deleted_at"] is not None
                for r in fetch_records(
                    sandbox.crm_store(system), crm.kinds[kind], include_deleted=True, with_meta=True
                )
            }
            expected = {str(r["source_id"]): bool(r["deleted"]) for r in truth if r["dataset"] == dataset}
            assert stored == expected, dataset
            assert counts[system][kind] == len(stored) > 0, dataset
            assert {r["entity_id"] for r in truth if r["dataset"] == dataset} <= known, dataset


@pytest.mark.parametrize(("dataset", "db", "table", "key", "deleted_column"), STORE_TABLES)
def test_truth_lists_exactly_the_rows_in_each_store(
    sandbox: SandboxLayout,
    truth: list[dict[str, object]],
    dataset: str,
    db: str,
    table: str,
    key: str,
    deleted_column: str | None,
) -> None:
    path = getattr(sandbox, db)
    deleted_sql = f'"{deleted_column}"' if deleted_column else "0"
    stored = {str(r[0]): bool(r[1]) for r in rows(path, f'SELECT "{key}", {deleted_sql} FROM "{table}"')}
    expected = truth_of(truth, dataset)
    assert stored.keys() == expected.keys()
    assert all(stored[k] == expected[k]["deleted"] for k in stored)
    assert len(stored) > 0


def test_leads_are_hubspot_contacts_in_a_lead_stage_and_salesforce_leads(
    sandbox: SandboxLayout, truth: list[dict[str, object]]
) -> None:
    stages: dict[str, int] = {
        str(stage): int(count)
        for stage, count in rows(
            sandbox.hubspot_store, "SELECT coalesce(lifecyclestage, ''), count(*) FROM contacts GROUP BY 1"
        )
    }
    total = sum(stages.values())
    in_lead_stage = sum(stages.get(s, 0) for s in ("lead", "marketingqualifiedlead", "salesqualifiedlead"))
    assert 0.15 < in_lead_stage / total < 0.45
    assert {"customer", "opportunity", "subscriber"} <= set(stages)
    # A contact in a lead stage entered it: its entry date is set, never before the contact was made.
    for created, lead_date, sql_date, stage in rows(
        sandbox.hubspot_store,
        "SELECT createdate, hs_lifecyclestage_lead_date, hs_lifecyclestage_salesqualifiedlead_date, "
        "lifecyclestage FROM contacts WHERE lifecyclestage IN ('lead', 'salesqualifiedlead')",
    ):
        assert lead_date is not None
        assert lead_date >= created
        assert (sql_date is not None) == (stage == "salesqualifiedlead")
    # A converted Salesforce Lead points at a Contact of the same person.
    person_of = {str(r["source_id"]): r["entity_id"] for r in truth if r["dataset"] == "salesforce.Contact"}
    converted = rows(
        sandbox.salesforce_store,
        'SELECT Id, ConvertedContactId, Status FROM "Lead" WHERE IsConverted = 1',
    )
    lead_person = {str(r["source_id"]): r["entity_id"] for r in truth if r["dataset"] == "salesforce.Lead"}
    assert converted
    for lead_id, contact_id, status in converted:
        assert status == "Closed - Converted"
        assert person_of[contact_id] == lead_person[lead_id]


def test_drop_truth_is_keyed_by_line_number(sandbox: SandboxLayout, truth: list[dict[str, object]]) -> None:
    for dataset, path in (
        ("sftp.invoices", sandbox.invoices_file(AS_OF)),
        ("sftp.payments", sandbox.payments_file(AS_OF)),
    ):
        lines = path.read_text(encoding="utf-8").splitlines()
        assert sorted(int(k) for k in truth_of(truth, dataset)) == list(range(2, len(lines) + 1))


def test_proportions_look_like_a_real_crm_landscape(
    truth: list[dict[str, object]], summary: dict[str, object]
) -> None:
    datasets = summary["datasets"]
    assert isinstance(datasets, dict)
    companies = CONTACTS // 5
    # Each system holds a good share of the companies, none holds them all.
    for name in ("salesforce.Account", "hubspot.companies", "erp.customers"):
        assert 0.35 * companies < datasets[name]["entities"] < 0.8 * companies, name
    # About one opportunity / deal per company in that system.
    assert 0.7 < datasets["salesforce.Opportunity"]["rows"] / datasets["salesforce.Account"]["rows"] < 1.3
    assert 0.7 < datasets["hubspot.deals"]["rows"] / datasets["hubspot.companies"]["rows"] < 1.3
    # The finance drop: about contacts / 20 invoices.
    assert CONTACTS / 20 * 0.6 < datasets["sftp.invoices"]["rows"] < CONTACTS / 20 * 1.4
    # About 3% of contact rows are a second entry of the same person in the same system.
    for name in ("salesforce.Contact", "hubspot.contacts"):
        per_entity = Counter(r["entity_id"] for r in truth if r["dataset"] == name)
        extra = sum(n - 1 for n in per_entity.values())
        assert 0.01 < extra / sum(per_entity.values()) < 0.06, name


def test_invalid_rows_are_rare_of_every_kind_and_recorded(
    truth: list[dict[str, object]], summary: dict[str, object]
) -> None:
    datasets = summary["datasets"]
    assert isinstance(datasets, dict)
    for name, stats in datasets.items():
        assert stats["invalid"] <= max(2, 0.02 * stats["rows"]), name
        if stats["rows"] >= 200:
            assert stats["invalid"] >= 1, name
    kinds = {str(r["invalid_reason"]).split(":")[0] for r in truth if r["invalid_reason"]}
    assert kinds == set(INVALID_KINDS)
    # The files each hold exactly one line with a wrong field count.
    for name in ("sftp.invoices", "sftp.payments"):
        wrong = [
            r
            for r in truth
            if r["dataset"] == name and str(r["invalid_reason"]).startswith("wrong_field_count")
        ]
        assert len(wrong) == 1, name


def test_invalid_values_are_in_the_stores_as_the_truth_says(
    sandbox: SandboxLayout, truth: list[dict[str, object]]
) -> None:
    accounts = {r["Id"]: r for r in rows(sandbox.salesforce_store, 'SELECT * FROM "Account"')}
    contacts = {r["Id"]: r for r in rows(sandbox.salesforce_store, 'SELECT * FROM "Contact"')}
    opportunities = {r["Id"]: r for r in rows(sandbox.salesforce_store, 'SELECT * FROM "Opportunity"')}
    hs_contacts = {str(r["id"]): r for r in rows(sandbox.hubspot_store, "SELECT * FROM contacts")}
    customers = {str(r["customer_id"]): r for r in rows(sandbox.erp_db, "SELECT * FROM customers")}
    orders = {str(r["order_id"]): r for r in rows(sandbox.erp_db, "SELECT * FROM sales_orders")}
    checked: Counter[str] = Counter()
    for r in truth:
        reason = r["invalid_reason"]
        if reason is None:
            continue
        kind = str(reason).split(":")[0]
        sid = str(r["source_id"])
        dataset = r["dataset"]
        if dataset == "salesforce.Account" and kind == "missing_required":
            assert accounts[sid]["Name"] is None
        elif dataset == "salesforce.Account" and kind == "unknown_country":
            assert accounts[sid]["BillingCountry"] in UNKNOWN_COUNTRIES
        elif dataset == "salesforce.Account" and kind == "negative_amount":
            assert accounts[sid]["AnnualRevenue"] < 0
        elif dataset == "salesforce.Contact" and kind == "invalid_email":
            assert not EMAIL.match(contacts[sid]["Email"])
        elif dataset == "salesforce.Contact" and kind == "missing_required":
            assert contacts[sid]["Email"] is None
            assert contacts[sid]["LastName"] is None
        elif dataset == "salesforce.Opportunity" and kind == "unknown_currency":
            assert opportunities[sid]["CurrencyIsoCode"] == "ZZZ"
        elif dataset == "salesforce.Opportunity" and kind == "bad_date":
            with pytest.raises(ValueError, match=r"isoformat|out of range|must be in"):
                date.fromisoformat(opportunities[sid]["CloseDate"])
        elif dataset == "hubspot.contacts" and kind == "invalid_email":
            assert not EMAIL.match(hs_contacts[sid]["email"])
        elif dataset == "erp.customers" and kind == "unknown_country":
            assert customers[sid]["country"] in UNKNOWN_COUNTRIES
        elif dataset == "erp.sales_orders" and kind == "bad_date":
            # The ERP column is a DATE, but SQLite keeps what the user typed, as text.
            with pytest.raises(ValueError, match=r"isoformat|out of range|must be in"):
                date.fromisoformat(orders[sid]["order_date"])
        else:
            continue
        checked[dataset] += 1
    assert sum(checked.values()) >= 8


def test_valid_party_rows_are_messy_but_usable(
    sandbox: SandboxLayout, truth: list[dict[str, object]]
) -> None:
    valid = {
        str(r["source_id"])
        for r in truth
        if r["dataset"] == "salesforce.Account" and r["invalid_reason"] is None
    }
    accounts = [r for r in rows(sandbox.salesforce_store, 'SELECT * FROM "Account"') if r["Id"] in valid]
    # Countries come in many spellings, all of them resolvable.
    spellings = {r["BillingCountry"] for r in accounts}
    assert spellings <= set(SPELLING_TO_CODE)
    assert len(spellings) >= 12
    # Phone numbers come in several formats and are real numbers of the account's country.
    phones = [(r["Phone"], SPELLING_TO_CODE[r["BillingCountry"]]) for r in accounts if r["Phone"]]
    shapes = {re.sub(r"\d", "9", phone)[:6] for phone, _ in phones}
    assert len(shapes) >= 10
    parsed = [phonenumbers.parse("+" + p[2:] if p.startswith("00") else p, region) for p, region in phones]
    valid_share = sum(phonenumbers.is_valid_number(n) for n in parsed) / len(parsed)
    assert valid_share > 0.99
    # Valid contacts have a well-formed e-mail when they have one, in varying case.
    emails = [
        r["Email"]
        for r in rows(sandbox.salesforce_store, 'SELECT * FROM "Contact"')
        if r["Email"] and truth_of(truth, "salesforce.Contact")[r["Id"]]["invalid_reason"] is None
    ]
    assert all(EMAIL.match(e) for e in emails)
    assert any(e != e.lower() for e in emails)


def test_the_same_company_is_spelled_differently_across_systems(
    sandbox: SandboxLayout, truth: list[dict[str, object]]
) -> None:
    names: dict[object, set[str]] = {}
    for dataset, db, table, key, column in (
        ("salesforce.Account", sandbox.salesforce_store, "Account", "Id", "Name"),
        ("hubspot.companies", sandbox.hubspot_store, "companies", "id", "name"),
        ("erp.customers", sandbox.erp_db, "customers", "customer_id", "name"),
    ):
        entity = {k: r["entity_id"] for k, r in truth_of(truth, dataset).items()}
        for r in rows(db, f'SELECT "{key}", "{column}" FROM "{table}"'):
            if r[1]:
                names.setdefault(entity[str(r[0])], set()).add(r[1])
    multi = [n for n in names.values() if len(n) > 1]
    assert len(multi) > 50
    assert any(any(n.isupper() for n in group) for group in multi)
    assert any(len({n.lower() for n in group}) < len(group) for group in multi)  # case-only variants


def test_a_person_has_one_mailing_address_and_birth_date_typed_differently_per_system(
    sandbox: SandboxLayout, truth: list[dict[str, object]]
) -> None:
    facts: dict[object, dict[str, set[str]]] = {}
    typed: dict[str, list[str | None]] = {"city": [], "postal": [], "birth": []}
    for dataset, db, table, key, city, postal, birth in (
        ("salesforce.Contact", sandbox.salesforce_store, "Contact", "Id", "MailingCity", "MailingPostalCode", "Birthdate"),
        ("hubspot.contacts", sandbox.hubspot_store, "contacts", "id", "city", "zip", "date_of_birth"),
    ):  # fmt: skip
        entity = {k: r["entity_id"] for k, r in truth_of(truth, dataset).items()}
        for r in rows(db, f'SELECT "{key}", "{city}", "{postal}", "{birth}" FROM "{table}"'):
            person = facts.setdefault(entity[str(r[0])], {"city": set(), "postal": set(), "birth": set()})
            typed["city"].append(r[1])
            typed["postal"].append(r[2])
            typed["birth"].append(r[3])
            if r[1]:
                person["city"].add(r[1].lower())
            if r[2]:
                person["postal"].add(re.sub(r"\s", "", r[2]).upper())
            if r[3]:
                day = datetime.strptime(r[3], "%d.%m.%Y").date() if "." in r[3] else date.fromisoformat(r[3])
                person["birth"].add(day.isoformat())
    in_both = [p for p in facts.values() if any(len(v) for v in p.values())]
    assert len(in_both) > 100
    # The same facts wherever a person is held, once spelling is set aside.
    assert all(len(values) <= 1 for p in facts.values() for values in p.values())
    # Some missing, some spelled differently.
    for name, values in typed.items():
        assert 0.1 < sum(v is None for v in values) / len(values) < 0.9, name
    assert any(v and v.isupper() for v in typed["city"])
    assert any(v and v != v.strip() for v in typed["postal"])
    assert any(v and "." in v for v in typed["birth"])


def test_timestamps_lie_in_the_two_years_before_as_of(sandbox: SandboxLayout) -> None:
    end = datetime(AS_OF.year, AS_OF.month, AS_OF.day) + timedelta(days=1)
    start = end - timedelta(days=732)
    checks = [
        (
            sandbox.salesforce_store,
            'SELECT "CreatedDate", "SystemModstamp" FROM "Contact"',
            "%Y-%m-%dT%H:%M:%S.000+0000",
        ),
        (
            sandbox.salesforce_store,
            'SELECT "CreatedDate", "LastModifiedDate" FROM "Account"',
            "%Y-%m-%dT%H:%M:%S.000+0000",
        ),
        (sandbox.hubspot_store, 'SELECT "createdAt", "updatedAt" FROM contacts', "%Y-%m-%dT%H:%M:%S.%fZ"),
        (sandbox.erp_db, "SELECT created_at, updated_at FROM customers", "%Y-%m-%d %H:%M:%S"),
        (sandbox.erp_db, "SELECT updated_at, updated_at FROM invoices", "%Y-%m-%d %H:%M:%S"),
    ]
    for path, sql, fmt in checks:
        for created, modified in rows(path, sql):
            c, m = datetime.strptime(created, fmt), datetime.strptime(modified, fmt)
            assert start <= c <= m < end, (sql, created, modified)


def test_ids_look_like_the_real_systems(sandbox: SandboxLayout) -> None:
    for table, prefix in (("Account", "001"), ("Contact", "003"), ("Opportunity", "006")):
        ids = [r[0] for r in rows(sandbox.salesforce_store, f'SELECT "Id" FROM "{table}"')]
        assert all(len(i) == 18 and i.startswith(prefix) and salesforce_id_is_valid(i) for i in ids)
        assert len(set(ids)) == len(ids)
    for table in ("companies", "contacts", "deals"):
        types = {r[0] for r in rows(sandbox.hubspot_store, f"SELECT typeof(id) FROM {table}")}
        assert types == {"integer"}
    codes = [r[0] for r in rows(sandbox.erp_db, "SELECT customer_code FROM customers")]
    assert all(re.fullmatch(r"C\d{6}", c) for c in codes)


def _shape(reference: str) -> str:
    """The format of a stored reference, for counting formats."""
    if ":" in reference:
        return "prefixed"
    if reference.startswith("SF-"):
        return "sf-15"
    return f"{len(reference)}{'-lower' if reference.islower() else ''}"


def test_erp_orders_reference_won_opportunities_of_the_same_company(
    sandbox: SandboxLayout, truth: list[dict[str, object]]
) -> None:
    opportunities = {
        r["Id"]: r
        for r in rows(sandbox.salesforce_store, 'SELECT "Id", "AccountId", "StageName" FROM "Opportunity"')
    }
    account_entity = {k: r["entity_id"] for k, r in truth_of(truth, "salesforce.Account").items()}
    customer_entity = {k: r["entity_id"] for k, r in truth_of(truth, "erp.customers").items()}
    refs = rows(
        sandbox.erp_db,
        "SELECT customer_id, crm_opportunity_ref FROM sales_orders WHERE crm_opportunity_ref IS NOT NULL",
    )
    assert len(refs) >= 10
    known = [KnownRecord(f"salesforce:{i}", "salesforce", str(i)) for i in opportunities]
    found = recognise([str(ref) for _, ref in refs], known)
    # Typed in several formats, as people do; every one points to exactly one opportunity.
    assert len({_shape(str(ref)) for _, ref in refs}) >= 3
    for (customer_id, _), link in zip(refs, found, strict=True):
        assert link.record_id is not None, link
        opportunity = opportunities[link.record_id.split(":", 1)[1]]
        assert opportunity["StageName"] == "Closed Won"
        assert account_entity[opportunity["AccountId"]] == customer_entity[str(customer_id)]


def test_erp_invoices_and_payments_follow_the_orders(
    sandbox: SandboxLayout, truth: list[dict[str, object]]
) -> None:
    statuses = {r[0]: r[1] for r in rows(sandbox.erp_db, "SELECT order_id, status FROM sales_orders")}
    invoices = rows(sandbox.erp_db, "SELECT * FROM invoices")
    assert invoices
    assert {statuses[i["order_id"]] for i in invoices} <= {"shipped", "invoiced"}
    invoiced = [o for o, s in statuses.items() if s == "invoiced"]
    assert {i["order_id"] for i in invoices} >= set(invoiced)
    bad_invoices = {k for k, r in truth_of(truth, "erp.invoices").items() if r["invalid_reason"]}
    bad_payments = {k for k, r in truth_of(truth, "erp.payments").items() if r["invalid_reason"]}
    paid: dict[int, float] = {}
    for p in rows(sandbox.erp_db, "SELECT * FROM payments"):
        if str(p["payment_id"]) not in bad_payments:
            paid[p["invoice_id"]] = paid.get(p["invoice_id"], 0.0) + float(p["amount"])
    by_id = {i["invoice_id"]: i for i in invoices}
    assert set(paid) <= {i for i, r in by_id.items() if r["status"] == "paid"}
    for invoice_id, amount in paid.items():
        if str(invoice_id) not in bad_invoices:
            assert amount == pytest.approx(float(by_id[invoice_id]["amount_gross"]), abs=0.011)


def test_finance_drop_files(sandbox: SandboxLayout, truth: list[dict[str, object]]) -> None:
    assert sandbox.finance_dir == sandbox.sftp_root / "outbound" / "finance"
    invoices = csv_lines(sandbox.invoices_file(AS_OF))
    payments = xml_payments(sandbox.payments_file(AS_OF))
    assert tuple(invoices[0]) == INVOICE_CSV_COLUMNS
    codes = {r[0] for r in rows(sandbox.erp_db, "SELECT customer_code FROM customers")}
    erp_invoices = {r[0] for r in rows(sandbox.erp_db, "SELECT invoice_number FROM invoices")}
    bil = set()
    for line_no, fields in enumerate(invoices[1:], start=2):
        reason = truth_of(truth, "sftp.invoices")[str(line_no)]["invalid_reason"]
        if reason and str(reason).startswith("wrong_field_count"):
            assert len(fields) != len(INVOICE_CSV_COLUMNS)
            bil.add(fields[0])  # the line is broken, the invoice it reports is real
            continue
        assert len(fields) == len(INVOICE_CSV_COLUMNS)
        assert fields[0].startswith("BIL-")
        assert fields[1] in codes
        bil.add(fields[0])
    referenced: Counter[str] = Counter()
    for fields in payments:
        if len(fields) == len(PAYMENT_CSV_COLUMNS):
            assert fields[1] in erp_invoices or fields[1] in bil
            referenced[fields[1][:4]] += 1
    assert referenced["INV-"] > 0
    assert referenced["BIL-"] > 0


def test_tiny_sandbox_still_works(tmp_path: Path) -> None:
    layout = generate_sandbox(tmp_path, contacts=7, seed=3, as_of=AS_OF)
    summary = json.loads(layout.truth_summary.read_text())
    assert summary["true_people"] == 7
    people = {
        r["entity_id"]
        for r in pq.read_table(layout.truth).to_pylist()
        if r["dataset"] in ("salesforce.Contact", "hubspot.contacts")
    }
    assert len(people) == 7
