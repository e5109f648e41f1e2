"""Golden ids kept from night to night: growth, merges, splits, re-runs, and the history in the warehouse.

Each night resolves hand-made canonical records with ``resolve_entities``, given the ids the
warehouse holds (``previous_ids``), and loads the outputs with ``load_identity``, as the nightly job
does.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from crm_pipelines import canonical
from crm_pipelines.identity import ResolutionStats, resolve_entities
from crm_pipelines.identity.golden_ids import previous_ids
from crm_pipelines.identity.outputs import identity_files
from crm_pipelines.warehouse.connection import Warehouse
from crm_pipelines.warehouse.core import load_identity
from tests.crm_pipelines.match_by_key import RULES

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def account(source_id: str, vat: str | None, **fields: Any) -> dict[str, Any]:
    return {
        "record_id": f"crm:{source_id}",
        "source": "crm",
        "source_id": source_id,
        "name": f"Company {source_id}",
        "vat_number": vat,
        "updated_at": T0,
        **fields,
    }


def contact(source_id: str, email: str, account_id: str) -> dict[str, Any]:
    return {
        "record_id": f"crm:{source_id}",
        "source": "crm",
        "source_id": source_id,
        "first_name": "Pat",
        "last_name": source_id.title(),
        "email": email,
        "account_record_id": f"crm:{account_id}",
        "updated_at": T0,
    }


def md5_id(prefix: str, text: str) -> str:
    return prefix + hashlib.md5(text.encode()).hexdigest()[:16]


class Nights:
    """A lake and a warehouse that identity runs and loads night after night."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.lake = tmp_path / "lake"
        self.warehouse = Warehouse(f"duckdb:///{tmp_path / 'warehouse.duckdb'}")
        self.runs = 0

    def run(
        self, night: str, accounts: list[dict[str, Any]], contacts: list[dict[str, Any]] | None = None
    ) -> ResolutionStats:
        """Resolve the night's records against the warehouse's ids, then load the outputs."""
        self.runs += 1
        staged = self.tmp_path / "staged" / str(self.runs)
        globs = []
        for name, schema, rows in (
            ("account", canonical.ACCOUNT, accounts),
            ("contact", canonical.CONTACT, contacts or []),
        ):
            (staged / name).mkdir(parents=True)
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), staged / name / "part-0.parquet")
            globs.append(str(staged / name / "*.parquet"))
        with self.warehouse.connect(read_only=True) as wh:
            previous = previous_ids(wh)
        stats = resolve_entities(
            con=duckdb.connect(),
            accounts_glob=globs[0],
            contacts_glob=globs[1],
            out_dir=identity_files(self.lake, night).folder,
            rules=RULES,
            previous=previous,
        )
        with self.warehouse.transaction() as con:
            load_identity(
                con,
                lake_dir=self.lake,
                partition=night,
                run_id=f"run-{self.runs}",
                log=logging.getLogger(__name__),
            )
        return stats

    def query(self, sql: str, params: list[object] | None = None) -> list[tuple[Any, ...]]:
        with self.warehouse.connect(read_only=True) as con:
            return con.execute(sql, params or []).fetchall()

    def golden_of(self, record_id: str) -> str:
        ((golden_id,),) = self.query(
            "SELECT golden_id FROM core.xref_identity WHERE record_id = ?", [record_id]
        )
        return str(golden_id)

    def xref(self) -> dict[str, str]:
        return dict(self.query("SELECT record_id, golden_id FROM core.xref_identity ORDER BY record_id"))

    def history(self, event: str | None = None) -> list[tuple[Any, ...]]:
        """(golden_id, event, related_id, anchor_record_id, partition) in the order recorded."""
        return self.query(
            """
            SELECT golden_id, event, related_id, anchor_record_id, partition
            FROM core.golden_id_history
            WHERE ? IS NULL OR event = ?
            ORDER BY partition, event, golden_id
            """,
            [event, event],
        )

    def current(self, old_id: str) -> str:
        ((golden_id,),) = self.query(
            "SELECT golden_id FROM core.golden_id_current WHERE old_id = ?", [old_id]
        )
        return str(golden_id)


def test_the_first_night_creates_an_id_per_cluster_from_its_smallest_record(tmp_path: Path) -> None:
    nights = Nights(tmp_path)
    stats = nights.run("2026-01-01", [account("b", "V1"), account("a", "V1"), account("c", "V2")])
    assert nights.golden_of("crm:a") == nights.golden_of("crm:b") == md5_id("A-", "crm:a")
    assert nights.golden_of("crm:c") == md5_id("A-", "crm:c")
    assert sorted(nights.history(), key=lambda row: row[3]) == [
        (md5_id("A-", "crm:a"), "created", None, "crm:a", "2026-01-01"),
        (md5_id("A-", "crm:c"), "created", None, "crm:c", "2026-01-01"),
    ]
    assert (stats.account.ids.created, stats.account.ids.kept) == (2, 0)


def test_an_id_survives_when_its_cluster_grows(tmp_path: Path) -> None:
    nights = Nights(tmp_path)
    nights.run("2026-01-01", [account("m", "V1")], [contact("m1", "pat@example.org", "m")])
    account_id, contact_id = nights.golden_of("crm:m"), nights.golden_of("crm:m1")
    # New records with smaller record ids join: a fresh id would now be md5('crm:a').
    stats = nights.run(
        "2026-01-02",
        [account("m", "V1"), account("a", "V1")],
        [contact("m1", "pat@example.org", "m"), contact("a1", "pat@example.org", "a")],
    )
    assert nights.xref() == {
        "crm:a": account_id,
        "crm:m": account_id,
        "crm:a1": contact_id,
        "crm:m1": contact_id,
    }
    assert account_id != md5_id("A-", "crm:a")
    ((golden_account_id,),) = nights.query("SELECT DISTINCT golden_account_id FROM core.golden_contact")
    assert golden_account_id == account_id
    assert (stats.account.ids.kept, stats.account.ids.created, stats.contact.ids.kept) == (1, 0, 1)
    assert [row[4] for row in nights.history()] == ["2026-01-01", "2026-01-01"]  # nothing new


def test_a_merge_keeps_the_id_most_members_carried_and_records_the_other(tmp_path: Path) -> None:
    nights = Nights(tmp_path)
    nights.run("2026-01-01", [account("b", "V1"), account("a", "V2"), account("c", "V2")])
    small, large = nights.golden_of("crm:b"), nights.golden_of("crm:a")
    assert small < large  # the smallest id does not win: the cluster most members came from does
    stats = nights.run("2026-01-02", [account("a", "V2"), account("b", "V2"), account("c", "V2")])
    assert set(nights.xref().values()) == {large}
    assert nights.history("merged") == [(small, "merged", large, None, "2026-01-02")]
    assert nights.current(small) == large
    assert (stats.account.ids.kept, stats.account.ids.merged) == (1, 1)


def test_a_tied_merge_keeps_the_id_seen_first(tmp_path: Path) -> None:
    nights = Nights(tmp_path)
    # Find two records whose new ids sort the other way round from their age.
    older, newer = next(
        (f"o{i}", f"n{i}") for i in range(100) if md5_id("A-", f"crm:o{i}") > md5_id("A-", f"crm:n{i}")
    )
    nights.run("2026-01-01", [account(older, "V1")])
    nights.run("2026-01-02", [account(older, "V1"), account(newer, "V2")])
    old_id, new_id = nights.golden_of(f"crm:{older}"), nights.golden_of(f"crm:{newer}")
    nights.run("2026-01-03", [account(older, "V1"), account(newer, "V1")])
    assert set(nights.xref().values()) == {old_id}
    assert nights.current(new_id) == old_id


def test_a_split_leaves_the_id_with_its_anchor_record(tmp_path: Path) -> None:
    nights = Nights(tmp_path)
    nights.run("2026-01-01", [account("a", "V1"), account("b", "V1"), account("c", "V1")])
    original = nights.golden_of("crm:a")
    assert nights.history("created") == [(original, "created", None, "crm:a", "2026-01-01")]
    # The anchor crm:a leaves alone; the other two stay together, yet they are the part that moves.
    stats = nights.run("2026-01-02", [account("a", "V1"), account("b", "V2"), account("c", "V2")])
    assert nights.golden_of("crm:a") == original
    split_off = nights.golden_of("crm:b")
    assert nights.golden_of("crm:c") == split_off == md5_id("A-", "crm:b")
    assert nights.history("split") == [(split_off, "split", original, "crm:b", "2026-01-02")]
    assert nights.current(original) == original
    assert (stats.account.ids.kept, stats.account.ids.split, stats.account.ids.created) == (1, 1, 0)


def test_without_its_anchor_an_id_stays_with_most_of_its_members(tmp_path: Path) -> None:
    nights = Nights(tmp_path)
    nights.run("2026-01-01", [account(x, "V1") for x in ("a", "b", "c", "d")])
    original = nights.golden_of("crm:a")
    # crm:a is gone; b stays apart, c and d stay together.
    nights.run("2026-01-02", [account("b", "V3"), account("c", "V1"), account("d", "V1")])
    assert nights.golden_of("crm:c") == nights.golden_of("crm:d") == original
    assert nights.golden_of("crm:b") == md5_id("A-", "crm:b")


def test_a_taken_id_is_never_given_again(tmp_path: Path) -> None:
    nights = Nights(tmp_path)
    nights.run("2026-01-01", [account("b", "V1")])
    nights.run("2026-01-02", [account("b", "V1"), account("a", "V2")])
    kept, merged = nights.golden_of("crm:b"), nights.golden_of("crm:a")
    assert merged == md5_id("A-", "crm:a")
    nights.run("2026-01-03", [account("b", "V1"), account("a", "V1")])  # tie: crm:b's id is older
    assert nights.current(merged) == kept
    # crm:a leaves again: its old id means "merged into crm:b's" now, so it gets another one.
    nights.run("2026-01-04", [account("b", "V1"), account("a", "V2")])
    assert nights.golden_of("crm:b") == kept
    assert nights.golden_of("crm:a") == md5_id("A-", "crm:a#1")
    assert nights.history("split") == [(md5_id("A-", "crm:a#1"), "split", kept, "crm:a", "2026-01-04")]


def test_a_record_deleted_and_restored_gets_its_id_back_and_a_merged_one_does_not(tmp_path: Path) -> None:
    nights = Nights(tmp_path)
    nights.run("2026-01-01", [account("a", "V1"), account("b", "V2"), account("e", "V3")])
    a, b, e = nights.golden_of("crm:a"), nights.golden_of("crm:b"), nights.golden_of("crm:e")
    # crm:a is deleted in its CRM; crm:b merges into crm:e's id (same VAT number; the tie goes to the
    # smaller id, crm:e's).
    nights.run("2026-01-02", [account("b", "V3"), account("e", "V3")])
    assert nights.current(b) == e

    # Both come back on their own: crm:a was restored, crm:b split off again.
    stats = nights.run("2026-01-03", [account("a", "V1"), account("b", "V2"), account("e", "V3")])

    assert nights.golden_of("crm:a") == a
    assert nights.history("returned") == [(a, "returned", None, "crm:a", "2026-01-03")]
    # crm:b's old id means "merged into crm:e's" now: it gets another one.
    assert nights.golden_of("crm:b") == md5_id("A-", "crm:b#1")
    assert nights.golden_of("crm:e") == e
    assert (stats.account.ids.returned, stats.account.ids.split) == (1, 1)
    # An unchanged night after that keeps every id and records nothing.
    nights.run("2026-01-04", [account("a", "V1"), account("b", "V2"), account("e", "V3")])
    assert [row for row in nights.history() if row[4] == "2026-01-04"] == []


def test_running_a_night_again_keeps_every_id_and_records_nothing(tmp_path: Path) -> None:
    nights = Nights(tmp_path)
    first = [account("a", "V1"), account("b", "V2"), account("c", "V2")]
    second = [account("a", "V2"), account("b", "V2"), account("c", "V3"), account("d", "V4")]
    contacts = [contact("p", "p@example.org", "a"), contact("q", "p@example.org", "b")]
    nights.run("2026-01-01", first, contacts)
    nights.run("2026-01-02", second, contacts)
    xref, history = nights.xref(), nights.history()
    again = nights.run("2026-01-02", second, contacts)
    assert nights.xref() == xref
    assert nights.history() == history
    for ids in (again.account.ids, again.contact.ids):
        assert (ids.created, ids.merged, ids.split) == (0, 0, 0)
    assert again.account.ids.kept == 3


def test_the_history_follows_an_old_id_through_merges_to_todays(tmp_path: Path) -> None:
    nights = Nights(tmp_path)
    a = [account("a", "V1")]
    b = [account(f"b{i}", "V2") for i in range(2)]
    c = [account(f"c{i}", "V3") for i in range(4)]
    nights.run("2026-01-01", a + b + c)
    id_a, id_b, id_c = (nights.golden_of(r) for r in ("crm:a", "crm:b0", "crm:c0"))
    nights.run("2026-01-02", [account("a", "V2"), *b, *c])  # a joins b
    nights.run("2026-01-03", [account("a", "V3"), *(account(f"b{i}", "V3") for i in range(2)), *c])
    assert set(nights.xref().values()) == {id_c}
    assert nights.history("merged") == [
        (id_a, "merged", id_b, None, "2026-01-02"),
        (id_b, "merged", id_c, None, "2026-01-03"),
    ]
    assert nights.query("SELECT old_id, golden_id, merges FROM core.golden_id_current ORDER BY merges") == [
        (id_c, id_c, 0),
        (id_b, id_c, 1),
        (id_a, id_c, 2),
    ]
    # Every row says which run recorded it, and when.
    assert nights.query(
        "SELECT DISTINCT run_id FROM core.golden_id_history WHERE partition = '2026-01-03'"
    ) == [("run-3",)]
    ((unstamped,),) = nights.query("SELECT count(*) FROM core.golden_id_history WHERE recorded_at IS NULL")
    assert unstamped == 0


def test_ids_made_before_the_history_existed_are_kept_and_recorded_once(tmp_path: Path) -> None:
    nights = Nights(tmp_path)
    nights.run("2026-01-01", [account("a", "V1"), account("b", "V1")])
    legacy = nights.golden_of("crm:a")
    with nights.warehouse.transaction() as con:  # a warehouse from before golden ids were kept
        con.execute("DROP VIEW core.golden_id_current")
        con.execute("DROP TABLE core.golden_id_history")
    nights.run("2026-01-02", [account("0", "V1"), account("a", "V1"), account("b", "V1")])
    assert set(nights.xref().values()) == {legacy}
    assert nights.history() == [(legacy, "created", None, "crm:a", "2026-01-02")]
