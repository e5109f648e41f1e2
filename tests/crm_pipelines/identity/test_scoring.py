"""Scored matching, one phenomenon at a time: what must merge, what must not, what goes to review.

Each case sits among 300 unrelated people (distinct names, companies and mailboxes) so that names
have realistic frequencies and the random pairs that estimate u look like a CRM's.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crm_pipelines import canonical
from crm_pipelines.identity import XREF_FILE, MatchRules, load_match_rules, resolve_entities
from crm_pipelines.identity.resolve import REVIEW_FILE, ResolutionStats
from crm_pipelines.identity.review import Decision, decisions_table, load_review, record_decisions
from crm_pipelines.identity.scoring import _one_edit, nickname_pairs
from crm_pipelines.warehouse.connection import Warehouse

T0 = datetime(2026, 11, 20, tzinfo=UTC)
FIRST = ["Amara", "Bodhi", "Cosima", "Dario", "Elin", "Fenna", "Gideon", "Hanne", "Ilian", "Jovana"]
LAST = [
    "Okafor",
    "Lindqvist",
    "Barros",
    "Nakamura",
    "Hollis",
    "Vasquez",
    "Petrov",
    "Adeyemi",
    "Quist",
    "Rahal",
]


def person(source: str, sid: str, **fields: Any) -> dict[str, Any]:
    fields.setdefault("updated_at", T0)
    return {"record_id": f"{source}:{sid}", "source": source, "source_id": sid, **fields}


def background() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rng = random.Random(3)
    accounts = [
        {
            "record_id": f"erp:B{i}",
            "source": "erp",
            "source_id": f"B{i}",
            "name": f"Firm {i}",
            "updated_at": T0,
        }
        for i in range(60)
    ]
    people = [
        person(
            "erp",
            f"p{i}",
            first_name=f"{FIRST[i % 10]}{'abcdefghijklmnopqrstuvwxyz'[i // 10 % 26]}",
            last_name=f"{LAST[i % 7]}{i}",
            email=f"p{i}@firm{i % 60}.example",
            phone=f"+44207{rng.randrange(1_000_000, 9_999_999)}",
            country="GB",
            account_record_id=f"erp:B{i % 60}",
        )
        for i in range(300)
    ]
    return accounts, people


ACME = {
    "record_id": "salesforce:A1",
    "source": "salesforce",
    "source_id": "A1",
    "name": "Acme",
    "domain": "acme.example",
    "country": "DE",
    "updated_at": T0,
}
ACME_HS = {
    "record_id": "hubspot:H1",
    "source": "hubspot",
    "source_id": "H1",
    "name": "ACME Ltd",
    "domain": "acme.example",
    "country": "DE",
    "updated_at": T0,
}


class Outcome:
    def __init__(self, stats: ResolutionStats, out: Path) -> None:
        self.stats = stats
        self.xref = pq.read_table(out / XREF_FILE).to_pylist()
        self.review = pq.read_table(out / REVIEW_FILE).to_pylist()

    def together(self, a: str, b: str) -> bool:
        golden = {x["record_id"]: x["golden_id"] for x in self.xref}
        return bool(golden[a] == golden[b])

    def queued(self, a: str, b: str) -> bool:
        return any({r["record_id_a"], r["record_id_b"]} == {a, b} for r in self.review)


def resolve(
    tmp_path: Path,
    contacts: list[dict[str, Any]],
    decisions: pa.Table | None = None,
    rules: MatchRules | None = None,
) -> Outcome:
    accounts, people = background()
    folder = tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
    for name, schema, rows in (
        ("accounts", canonical.ACCOUNT, [*accounts, ACME, ACME_HS]),
        ("contacts", canonical.CONTACT, [*people, *contacts]),
    ):
        (folder / name).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / name / "part-0.parquet")
    stats = resolve_entities(
        con=duckdb.connect(),
        accounts_glob=str(folder / "accounts" / "*.parquet"),
        contacts_glob=str(folder / "contacts" / "*.parquet"),
        out_dir=folder / "out",
        rules=rules or load_match_rules(),
        decisions=decisions,
    )
    return Outcome(stats, folder / "out")


def at_acme(source: str, sid: str, **fields: Any) -> dict[str, Any]:
    account = "salesforce:A1" if source == "salesforce" else "hubspot:H1"
    return person(source, sid, account_record_id=account, country="DE", **fields)


def namesakes() -> list[dict[str, Any]]:
    """Two John Smiths at Acme with other mailboxes and other phones."""
    return [
        at_acme(
            "salesforce",
            "1",
            first_name="John",
            last_name="Smith",
            email="john.smith@acme.example",
            phone="+4930100100",
        ),
        at_acme(
            "hubspot",
            "2",
            first_name="John",
            last_name="Smith",
            email="jsmith2@acme.example",
            phone="+4930200200",
        ),
    ]


def test_the_one_edit_level_agrees_with_the_edit_distance_everywhere() -> None:
    # The cheap test in front of damerau_levenshtein may only skip pairs that are more than one edit
    # apart: every kind of single edit, at every position, of dates, ids and short strings.
    rng = random.Random(11)
    alphabet = "0123456789-ab"
    pairs: list[tuple[str, str]] = []
    for _ in range(4000):
        word = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 13)))
        p = rng.randrange(0, len(word) + 1)
        edits = [
            word[:p] + rng.choice(alphabet) + word[p + 1 :],
            word[:p] + rng.choice(alphabet) + word[p:],
            word[:p] + word[p + 1 :],
            word[:p] + word[p + 1 : p + 2] + word[p : p + 1] + word[p + 2 :],
            "".join(rng.choice(alphabet) for _ in range(len(word))),
        ]
        pairs.extend((word, other) for other in edits)
    con = duckdb.connect()
    con.register("pairs", pa.table({"l": [a for a, _ in pairs], "r": [b for _, b in pairs]}))
    cheap, exact = con.execute(
        f"SELECT count(*) FILTER (WHERE {_one_edit('l', 'r')}), "
        "count(*) FILTER (WHERE damerau_levenshtein(l, r) <= 1) FROM pairs"
    ).fetchone() or (0, 0)
    assert cheap == exact > 12_000


def test_the_nickname_list_is_the_maintained_one() -> None:
    pairs = set(nickname_pairs())
    assert ("kate", "katherine") in pairs
    assert ("bill", "william") in pairs
    assert len(pairs) > 1000


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param(
            {"first_name": "Katherine", "last_name": "Okafor", "phone": "+4930111222"},
            {"first_name": "Kate", "last_name": "Okafor", "email": "kate.okafor@acme.example"},
            id="nickname",
        ),
        pytest.param(
            {"first_name": "Maggie", "last_name": "Okafor", "phone": "+4930111333"},
            {
                "first_name": "Peggy",
                "last_name": "Okafor",
                "email": "peggy.okafor@acme.example",
                "phone": "+4930111333",
            },
            id="two-nicknames-of-one-name",
        ),
        pytest.param(
            {"first_name": "Dr. Anna", "last_name": "Wolanski", "email": "anna.wolanski@acme.example"},
            {"first_name": "Anna", "last_name": "Wolanski", "email": "anna.wolanski@acme.example"},
            id="title-in-the-given-name",
        ),
        pytest.param(
            {"first_name": "Thomas", "last_name": "Campbell", "email": "t.campbell@acme.example"},
            {"first_name": "T.", "last_name": "Campbell", "email": "t.campbell+crm@acme.example"},
            id="initial-and-tagged-email",
        ),
        pytest.param(
            {"first_name": "Jürgen", "last_name": "Müller", "phone": "+49301234567"},
            {"first_name": "Juergen", "last_name": "Mueller", "phone": "030 1234567"},
            id="transliteration-and-national-phone",
        ),
        pytest.param(
            {"first_name": "Siobhan", "last_name": "Adebayo", "email": "siobhan.adebayo@acme.example"},
            {"first_name": "Siobhan", "last_name": "Adebayo", "email": "siobhan.adebayo@gmail.com"},
            id="private-address-same-mailbox",
        ),
        pytest.param(
            {"first_name": "Marguerite", "last_name": "Oyelaran", "phone": "+4930777888"},
            {"first_name": "Margeurite", "last_name": "Oyelaran", "phone": "+4930777888"},
            id="typo",
        ),
        pytest.param(
            {"first_name": "Okonkwo", "last_name": "Chidinma", "email": "c.okonkwo@acme.example"},
            {"first_name": "Chidinma", "last_name": "Okonkow", "email": "c.okonkwo@acme.example"},
            id="first-and-last-swapped-with-a-typo",
        ),
        pytest.param(
            {
                "first_name": "Dariusz",
                "last_name": "Wolanski",
                "birth_date": "1986-03-12",
                "postal_code": "10115",
            },
            {
                "first_name": "Dariusz",
                "last_name": "Wolanski",
                "birth_date": "1986-03-21",
                "postal_code": "10117",
            },
            id="birth-date-typo-and-neighbouring-postcode",
        ),
        pytest.param(
            {
                "first_name": "Halima",
                "last_name": "Okafor",
                "government_id": "AB 12 34 56 C",
                "postal_code": "10115",
            },
            {
                "first_name": "Halima",
                "last_name": "Brandauer",
                "government_id": "ab123456c",
                "postal_code": "10115",
            },
            id="married-name-same-government-id",
        ),
    ],
)
def test_the_same_person_written_another_way_merges(
    tmp_path: Path, a: dict[str, Any], b: dict[str, Any]
) -> None:
    run = resolve(tmp_path, [at_acme("salesforce", "1", **a), at_acme("hubspot", "2", **b)])
    assert run.together("salesforce:1", "hubspot:2")


def test_a_national_phone_without_a_country_still_matches_by_its_digits(tmp_path: Path) -> None:
    """No country, so staging cannot make the phone E.164: its digits are still compared."""
    run = resolve(
        tmp_path,
        [
            at_acme("salesforce", "1", first_name="Ngozi", last_name="Eze", phone="+4930555123"),
            person(
                "hubspot",
                "2",
                first_name="Ngozi",
                last_name="Eze",
                phone="(030) 555-123",
                account_record_id="hubspot:H1",
            ),
        ],
    )
    assert run.together("salesforce:1", "hubspot:2")


def test_a_placeholder_birth_date_shared_by_many_is_no_evidence(tmp_path: Path) -> None:
    """Forty people entered with 1900-01-01 and one postcode: their candidate pairs come from the
    birth-date key, which must not teach the model that agreeing on it makes one person."""
    people = [
        person(
            "erp",
            f"x{i}",
            first_name=FIRST[i % 10],
            last_name=LAST[(i % 10 + 3 * (i // 10)) % 10],
            birth_date="1900-01-01",
            postal_code="10115",
            country="DE",
        )
        for i in range(40)
    ]
    run = resolve(tmp_path, people)
    golden = {x["golden_id"] for x in run.xref if x["record_id"].startswith("erp:x")}
    assert len(golden) == 40


def test_family_members_sharing_the_landline_and_company_do_not_merge(tmp_path: Path) -> None:
    run = resolve(
        tmp_path,
        [
            at_acme("salesforce", "1", first_name="Anna", last_name="Lindqvist", phone="+4930555000"),
            at_acme("hubspot", "2", first_name="Peter", last_name="Lindqvist", phone="+4930555000"),
        ],
    )
    assert not run.together("salesforce:1", "hubspot:2")


def test_namesakes_at_one_company_with_other_mailboxes_and_phones_are_not_merged_automatically(
    tmp_path: Path,
) -> None:
    run = resolve(tmp_path, namesakes())
    assert not run.together("salesforce:1", "hubspot:2") or run.queued("salesforce:1", "hubspot:2")


def test_a_weak_bridge_does_not_chain_two_people_together(tmp_path: Path) -> None:
    # "J. Hollis" shares the desk phone of John and of Jane; John and Jane are different people.
    run = resolve(
        tmp_path,
        [
            at_acme(
                "salesforce",
                "john",
                first_name="John",
                last_name="Hollis",
                phone="+4930999111",
                email="john.hollis@acme.example",
            ),
            at_acme("hubspot", "j", first_name="J.", last_name="Hollis", phone="+4930999111"),
            at_acme(
                "salesforce",
                "jane",
                first_name="Jane",
                last_name="Hollis",
                phone="+4930999111",
                email="jane.hollis@acme.example",
            ),
        ],
    )
    assert not run.together("salesforce:john", "salesforce:jane")
    assert run.stats.contact.scoring is not None


def test_a_pair_settled_apart_before_scoring_still_guards_its_cluster(tmp_path: Path) -> None:
    # Anna at Acme and Anna at Firm 5 share no e-mail and no phone: two resolved companies settle
    # them as two people before any level is computed. A record without a company shares Acme
    # Anna's e-mail and Firm 5 Anna's phone; it may join one of them, never both.
    run = resolve(
        tmp_path,
        [
            at_acme(
                "salesforce",
                "acme",
                first_name="Anna",
                last_name="Berglund",
                email="anna.berglund@acme.example",
                phone="+4930777111",
            ),
            person(
                "hubspot",
                "bridge",
                first_name="Anna",
                last_name="Berglund",
                email="anna.berglund@acme.example",
                phone="+4930777222",
                country="DE",
            ),
            person(
                "erp",
                "firm5",
                first_name="Anna",
                last_name="Berglund",
                email="a.berglund@firm5.example",
                phone="+4930777222",
                country="DE",
                account_record_id="erp:B5",
            ),
        ],
    )
    scoring = run.stats.contact.scoring
    assert scoring is not None
    assert scoring.pairs_by_band["settled_apart"] > 0
    assert run.together("salesforce:acme", "hubspot:bridge") or run.together("hubspot:bridge", "erp:firm5")
    assert not run.together("salesforce:acme", "erp:firm5")
    assert not run.queued("salesforce:acme", "erp:firm5")


def test_decisions_are_honoured_and_leave_the_queue(tmp_path: Path) -> None:
    contacts = [
        *namesakes(),
        at_acme("salesforce", "3", first_name="Katherine", last_name="Okafor", phone="+4930111222"),
        at_acme("hubspot", "4", first_name="Kate", last_name="Okafor", phone="+4930111222"),
    ]
    warehouse = Warehouse(f"duckdb:///{tmp_path}/warehouse.duckdb")
    with warehouse.transaction() as con:
        record_decisions(
            con,
            [
                Decision("contact", "hubspot:2", "salesforce:1", "must_link", "analyst"),
                Decision("contact", "salesforce:3", "hubspot:4", "cannot_link", "analyst"),
            ],
        )
        decided = decisions_table(con)
    run = resolve(tmp_path, contacts, decisions=decided)
    assert run.together("salesforce:1", "hubspot:2")
    assert not run.together("salesforce:3", "hubspot:4")
    # Tonight's queue in the warehouse leaves decided pairs out.
    out = next(tmp_path.glob("run*")) / "out"
    with warehouse.transaction() as con:
        load_review(con, path=out / REVIEW_FILE, partition="2026-11-25", run_id="r")
        queued = con.execute("SELECT record_id_a, record_id_b FROM ops.match_review").fetchall()
    assert {frozenset(p) for p in queued}.isdisjoint(
        {frozenset({"salesforce:1", "hubspot:2"}), frozenset({"salesforce:3", "hubspot:4"})}
    )


def test_scoring_reports_candidates_per_key_and_bands(tmp_path: Path) -> None:
    run = resolve(
        tmp_path, [at_acme("salesforce", "1", first_name="Ada", last_name="Quist", phone="+4930123123")]
    )
    scoring = run.stats.contact.scoring
    assert scoring is not None
    assert set(scoring.pairs_by_key) == {
        "+".join(p.label for p in key)
        for key in load_match_rules().contact.scoring.blocking  # type: ignore[union-attr]
    }
    assert sum(scoring.pairs_by_band.values()) == scoring.candidate_pairs
    assert scoring.prior > 0


def test_every_block_too_large_to_compare_is_counted(tmp_path: Path) -> None:
    shipped = load_match_rules()
    small = shipped.model_copy(update={"contact": shipped.contact.model_copy(update={"max_block_size": 2})})
    shared = [
        at_acme(
            "salesforce",
            f"{mailbox}{n}",
            first_name=f"N{n}",
            last_name="Quist",
            email=f"{mailbox}@shared.example",
        )
        for mailbox in ("sales", "info")
        for n in range(3)
    ]
    run = resolve(tmp_path, shared, rules=small)
    scoring = run.stats.contact.scoring
    assert scoring is not None
    # Each key's large blocks count, not one per key: sales@ and info@ alone are two in the address
    # key and two in the mailbox key; the name and company keys add theirs.
    assert scoring.skipped_blocks >= 5
    assert scoring.skipped_records >= 2 * scoring.skipped_blocks


def test_the_review_queue_shows_both_records_as_they_were_read(tmp_path: Path) -> None:
    run = resolve(tmp_path, namesakes())
    [pair] = [r for r in run.review if {r["record_id_a"], r["record_id_b"]} == {"salesforce:1", "hubspot:2"}]
    shown = {
        pair["record_id_a"]: json.loads(pair["record_a"]),
        pair["record_id_b"]: json.loads(pair["record_b"]),
    }
    assert shown["salesforce:1"]["email"] == "john.smith@acme.example"
    assert shown["hubspot:2"]["email"] == "jsmith2@acme.example"
    assert shown["hubspot:2"]["record_id"] == "hubspot:2"
    assert "rid" not in shown["salesforce:1"]  # the run's row number, which follows scan order
