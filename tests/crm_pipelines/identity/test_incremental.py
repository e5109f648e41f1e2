"""Incremental identity: a night resolves only the changed records and the clusters they touch, and
its outputs are those of a full resolution with the same weights."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crm_pipelines.identity import resolve
from crm_pipelines.identity.golden_ids import EVENTS, KNOWN_IDS, PREVIOUS_XREF, PreviousIds
from crm_pipelines.identity.incremental import MAX_CHANGED_SHARE, find_previous_run
from crm_pipelines.identity.outputs import IdentityFiles, identity_files
from crm_pipelines.identity.resolve import ResolutionStats, resolve_entities
from crm_pipelines.identity.rules import MatchRules, load_match_rules
from crm_pipelines.identity.scoring import REFUSED
from crm_pipelines.lake import LakePath
from crm_pipelines_sandbox.people import generate_people

D1, D2 = "2026-11-30", "2026-12-01"
EXACT = ("golden_account", "golden_contact", "xref", "field_sources", "history", "records")


@pytest.fixture(scope="module")
def people() -> tuple[pa.Table, pa.Table]:
    generated = generate_people(2500, seed=11)
    return generated.accounts, generated.contacts


def _stage(root: Path, day: str, accounts: pa.Table, contacts: pa.Table) -> Path:
    folder = root / "staging" / f"dt={day}"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(accounts, folder / "account.parquet")
    pq.write_table(contacts, folder / "contact.parquet")
    return folder


def _night(
    lake: Path,
    day: str,
    *,
    out: Path | None = None,
    previous: PreviousIds | None = None,
    incremental: bool = True,
    rules: MatchRules | None = None,
    since: str | None = None,
) -> ResolutionStats:
    staged = lake / "staging" / f"dt={day}"
    con = duckdb.connect()
    try:
        return resolve_entities(
            con=con,
            accounts_glob=str(staged / "account.parquet"),
            contacts_glob=str(staged / "contact.parquet"),
            out_dir=out or identity_files(lake, day).folder,
            rules=rules or load_match_rules(),
            previous=previous,
            previous_run=find_previous_run(lake, since or day),
            partition=day,
            incremental=incremental,
        )
    finally:
        con.close()


@pytest.fixture
def lake(tmp_path: Path, people: tuple[pa.Table, pa.Table]) -> Path:
    """A lake whose first night was staged and resolved in full."""
    lake = tmp_path / "lake"
    _stage(lake, D1, *people)
    first = _night(lake, D1)
    assert (first.account.mode, first.contact.mode) == ("full", "full")
    return lake


def _loaded(*folders: LakePath) -> PreviousIds:
    """What the warehouse holds once the identity outputs of ``folders`` were loaded, the last one last."""
    files = [IdentityFiles(f) for f in folders]
    xref = pq.read_table(files[-1].xref).select(PREVIOUS_XREF.names).cast(PREVIOUS_XREF)
    con = duckdb.connect()
    con.register("events", pa.concat_tables(pq.read_table(f.history).cast(EVENTS) for f in files))
    known = con.sql(
        "SELECT entity, golden_id, any_value(anchor_record_id) FILTER (WHERE event IN ('created', 'split')) "
        "AS anchor_record_id, '2026-11-30' AS first_seen, bool_or(event = 'merged') AS merged FROM events GROUP BY ALL"
    ).to_arrow_table()
    return PreviousIds(xref=xref, known=known.cast(KNOWN_IDS))


def _rows(path: LakePath, *, without: tuple[str, ...] = ()) -> list[dict[str, object]]:
    table = pq.read_table(str(path))
    table = table.drop_columns([c for c in without if c in table.column_names])
    return sorted(table.to_pylist(), key=repr)


def _edited(accounts: pa.Table, contacts: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Night two: 2% of the contacts retitled, 0.5% with another e-mail, 0.4% deleted, 30 new
    duplicates of existing contacts in another system, and one company renamed."""
    con = duckdb.connect()
    con.register("c", contacts)
    con.register("a", accounts)
    edited = con.sql(
        """
        SELECT * REPLACE (
            CASE WHEN hash(record_id) % 50 = 0 THEN 'Head of ' || coalesce(title, 'Sales') ELSE title END AS title,
            CASE WHEN hash(record_id) % 200 = 1 THEN 'new.' || coalesce(email, 'x@example.org') ELSE email END AS email,
            CASE WHEN hash(record_id) % 50 = 0 OR hash(record_id) % 200 = 1
                 THEN updated_at + INTERVAL 1 DAY ELSE updated_at END AS updated_at
        )
        FROM c WHERE hash(record_id) % 250 <> 2
        UNION ALL
        SELECT * REPLACE ('zoho:dup-' || record_id AS record_id, 'zoho' AS source, 'dup-' || record_id AS source_id)
        FROM (SELECT * FROM c WHERE email IS NOT NULL ORDER BY record_id LIMIT 30)
        """
    ).to_arrow_table()
    renamed = con.sql(
        "SELECT * REPLACE (CASE WHEN record_id = (SELECT min(record_id) FROM a) THEN name || ' Holding' "
        "ELSE name END AS name) FROM a"
    ).to_arrow_table()
    return renamed, edited.cast(contacts.schema)


def _files(folder: LakePath) -> dict[str, LakePath]:
    files = IdentityFiles(folder)
    return {
        "golden_account": files.golden_account,
        "golden_contact": files.golden_contact,
        "xref": files.xref,
        "field_sources": files.field_sources,
        "history": files.history,
        "records": files.records,
        "review": files.review,
    }


def test_an_incremental_night_equals_a_full_resolution_with_the_same_weights(
    tmp_path: Path, people: tuple[pa.Table, pa.Table], lake: Path
) -> None:
    accounts, contacts = people
    _stage(lake, D2, *_edited(accounts, contacts))
    previous = _loaded(identity_files(lake, D1).folder)

    incremental = _night(lake, D2, previous=previous)
    reference = _night(lake, D2, out=tmp_path / "full", previous=previous, incremental=False, since=D1)

    contact = incremental.contact
    assert contact.mode == "incremental", contact.mode_reason
    assert contact.records_changed > 0
    assert contact.records_deleted > 0
    # Only a part of the records is resolved again: the changed ones and the clusters they touch.
    assert contact.records_changed <= contact.records_resolved < contact.records / 2
    assert reference.contact.mode == "full"
    assert reference.contact.weights_from == D1
    assert (contact.records, contact.golden) == (reference.contact.records, reference.contact.golden)
    inc, full = _files(identity_files(lake, D2).folder), _files(tmp_path / "full")
    for name in EXACT:
        assert _rows(inc[name]) == _rows(full[name]), name
    # The review queue holds the same pairs; a pair carried over keeps last night's probability, which
    # tonight's value frequencies may move by a little.
    assert _rows(inc["review"], without=("probability",)) == _rows(full["review"], without=("probability",))
    probabilities = (
        duckdb.connect()
        .execute(
            f"SELECT max(abs(a.probability - b.probability)) FROM read_parquet('{inc['review']}') AS a "
            f"JOIN read_parquet('{full['review']}') AS b USING (entity, record_id_a, record_id_b)"
        )
        .fetchall()[0][0]
    )
    assert probabilities is None or probabilities < 0.05

    # What a user sees: the new duplicates joined their originals; the deleted records are gone.
    golden_of = {r["record_id"]: r["golden_id"] for r in pq.read_table(str(inc["xref"])).to_pylist()}
    copies = {c: c.removeprefix("zoho:dup-") for c in golden_of if c.startswith("zoho:dup-")}
    assert len(copies) == 30
    assert sum(golden_of[c] == golden_of.get(o) for c, o in copies.items()) >= 25
    con = duckdb.connect()
    con.register("c", contacts)
    deleted = {
        r for (r,) in con.execute("SELECT record_id FROM c WHERE hash(record_id) % 250 = 2").fetchall()
    }
    assert deleted
    assert not deleted & set(golden_of)


def test_a_rerun_of_the_night_resolves_nothing_and_changes_nothing(lake: Path) -> None:
    before = {name: _rows(path) for name, path in _files(identity_files(lake, D1).folder).items()}

    again = _night(lake, D1, previous=_loaded(identity_files(lake, D1).folder))

    for entity in (again.account, again.contact):
        assert (entity.mode, entity.records_changed, entity.records_resolved) == ("incremental", 0, 0)
    after = {name: _rows(path) for name, path in _files(identity_files(lake, D1).folder).items()}
    assert after.pop("history") == []  # no id changed tonight
    assert before.pop("history") != []
    assert after == before


def test_changed_declarations_stale_state_or_many_changes_resolve_in_full(
    tmp_path: Path, people: tuple[pa.Table, pa.Table], lake: Path
) -> None:
    accounts, contacts = people
    loaded = _loaded(identity_files(lake, D1).folder)

    rules = load_match_rules()
    contact_rules = rules.contact.model_copy(update={"max_block_size": rules.contact.max_block_size + 1})
    other = rules.model_copy(update={"contact": contact_rules})
    changed_rules = _night(lake, D1, out=tmp_path / "a", previous=loaded, rules=other)
    assert changed_rules.contact.mode_reason == "the match rules or the field ownership changed"

    # The warehouse holds other ids than the previous run wrote (its load failed): full.
    unloaded = _night(lake, D1, out=tmp_path / "b", previous=PreviousIds.empty())
    assert unloaded.contact.mode == "full"
    assert "crosswalk differs" in unloaded.contact.mode_reason

    # Most records changed: resolving everything costs about the same, and the weights follow the data.
    con = duckdb.connect()
    con.register("c", contacts)
    half = con.sql("SELECT * FROM c WHERE hash(record_id) % 2 = 0").to_arrow_table()
    _stage(lake, D2, accounts, half)
    many = _night(lake, D2, previous=loaded)
    assert many.contact.mode == "full"
    assert f"over {MAX_CHANGED_SHARE:.0%}" in many.contact.mode_reason
    assert many.contact.weights_from is None  # estimated again

    # No state left (a crashed run's folder): full, from the data.
    IdentityFiles(identity_files(lake, D2).folder).state.unlink()
    IdentityFiles(identity_files(lake, D1).folder).state.unlink()
    assert _night(lake, D2, previous=loaded).contact.mode_reason == "no earlier identity run left its state"


def test_a_run_that_fails_while_writing_leaves_no_state_to_start_from(
    lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_to = resolve._copy_to
    written: list[str] = []

    def fail_on_third(cur: duckdb.DuckDBPyConnection, *, query: str, path: Path, params: object) -> None:
        written.append(path.name)
        if len(written) == 3:
            raise OSError("disk full")
        copy_to(cur, query=query, path=path, params=params)  # type: ignore[arg-type]

    monkeypatch.setattr(resolve, "_copy_to", fail_on_third)
    with pytest.raises(OSError, match="disk full"):
        _night(lake, D1, previous=_loaded(identity_files(lake, D1).folder))
    monkeypatch.undo()

    # Two of the night's files were replaced, the others are last run's: no base for the next run.
    assert not IdentityFiles(identity_files(lake, D1).folder).state.exists()
    assert find_previous_run(lake, D2) is None


def _pairs(path: LakePath) -> set[tuple[str, str, str]]:
    """The review queue's pairs and reasons, whichever way round a run wrote each pair."""
    return {
        (min(r["record_id_a"], r["record_id_b"]), max(r["record_id_a"], r["record_id_b"]), r["reason"])
        for r in pq.read_table(str(path), columns=["record_id_a", "record_id_b", "reason"]).to_pylist()
    }


def test_a_change_resolves_its_cluster_and_partners_and_keeps_the_review_pairs_around_them(
    tmp_path: Path, people: tuple[pa.Table, pa.Table], lake: Path
) -> None:
    accounts, contacts = people
    first = IdentityFiles(identity_files(lake, D1).folder)
    # A contact in a cluster of several whose cluster-mate is queued for review with a record of
    # another cluster: the edit resolves the cluster again, the queued pair's other record is not.
    con = duckdb.connect()
    picked = con.execute(
        f"""
        WITH xref AS (SELECT record_id, golden_id FROM read_parquet('{first.xref}') WHERE entity = 'contact'),
        review AS (
            SELECT record_id_a AS mate, record_id_b AS other FROM read_parquet('{first.review}')
            WHERE entity = 'contact' AND reason <> ?
            UNION ALL
            SELECT record_id_b, record_id_a FROM read_parquet('{first.review}') WHERE entity = 'contact' AND reason <> ?
        )
        SELECT x.record_id, r.mate, r.other FROM review AS r
        JOIN xref AS m ON m.record_id = r.mate
        JOIN xref AS o ON o.record_id = r.other AND o.golden_id <> m.golden_id
        JOIN xref AS x ON x.golden_id = m.golden_id AND x.record_id NOT IN (r.mate, r.other)
        ORDER BY ALL LIMIT 1
        """,
        [REFUSED, REFUSED],
    ).fetchall()
    assert picked
    edited_id, mate, other = picked[0]
    con.register("c", contacts)
    edited = con.sql(
        "SELECT * REPLACE (CASE WHEN record_id = $id THEN 'Chief Testing Officer' ELSE title END AS title) FROM c",
        params={"id": edited_id},
    ).to_arrow_table()
    _stage(lake, D2, accounts, edited.cast(contacts.schema))
    previous = _loaded(first.folder)

    incremental = _night(lake, D2, previous=previous)
    reference = _night(lake, D2, out=tmp_path / "full", previous=previous, incremental=False, since=D1)

    contact = incremental.contact
    assert (contact.mode, contact.records_changed) == ("incremental", 1)
    assert reference.contact.mode == "full"
    # The edited record's cluster and the records it could match, not every record of its blocks.
    assert contact.records_resolved < 20
    inc, full = _files(identity_files(lake, D2).folder), _files(tmp_path / "full")
    for name in EXACT:
        assert _rows(inc[name]) == _rows(full[name]), name
    queued = _pairs(inc["review"])
    assert queued == _pairs(full["review"])
    assert any({mate, other} == {a, b} for a, b, _ in queued)


def test_refused_joins_are_followed_from_the_scope_until_none_leads_out(tmp_path: Path) -> None:
    from crm_pipelines.identity.incremental import _close_over_refused

    # Clusters G1 {a}, G2 {b, c}, G3 {d, e}, G4 {f}, G5 {g}. Last night refused a-b and c-d; b-f was
    # held for review between the thresholds (its outcome is the pair's own); g is unrelated.
    review = tmp_path / "match_review.parquet"
    pq.write_table(
        pa.table(
            {
                "entity": ["contact"] * 3 + ["account"],
                "record_id_a": ["a", "c", "b", "g"],
                "record_id_b": ["b", "d", "f", "a"],
                "reason": [REFUSED, REFUSED, "between review_at and merge_at", REFUSED],
            }
        ),
        review,
    )
    con = duckdb.connect()
    ids = ["a", "b", "c", "d", "e", "f", "g"]
    con.register("f_in", pa.table({"rid": list(range(len(ids))), "record_id": ids}))
    con.register(
        "p_in", pa.table({"record_id": ids, "golden_id": ["G1", "G2", "G2", "G3", "G3", "G4", "G5"]})
    )
    con.execute("CREATE TEMP TABLE fp AS SELECT * FROM f_in; CREATE TEMP TABLE prev AS SELECT * FROM p_in")
    con.execute("CREATE TEMP TABLE scope AS SELECT 0::BIGINT AS rid")  # a changed

    _close_over_refused(
        con,
        scope="scope",
        review=f"read_parquet('{review}')",
        entity="contact",
        fingerprints="fp",
        prev="prev",
    )

    scoped = {ids[rid] for (rid,) in con.execute("SELECT rid FROM scope").fetchall()}
    assert scoped == {"a", "b", "c", "d", "e"}
