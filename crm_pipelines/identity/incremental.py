"""Incremental identity: resolve only the records that changed and the clusters they touch.

A full identity run (:func:`crm_pipelines.identity.resolve.resolve_entities`) reads every staged
record, estimates the weights, scores every candidate pair and builds every golden record. On a
night where a few records changed, almost all of that repeats last night's work. So each run leaves,
next to its outputs, what the next one needs (``identity_records.parquet``: per record its
*fingerprint* and golden id; ``identity_state.json``, written last: the declarations' fingerprint and
the weights), and the next run resolves incrementally when it can:

1. **Changed records** (``C``): new, or whose fingerprint differs. The fingerprint covers the staged
   row, the values the syncs last wrote into it (echoes), the review decisions on it and, for a
   contact, the golden id of its account, so anything that can change its features, its pairs or its
   golden values changes it. **Deleted records** (``D``): in last night's records, not tonight's.
2. **The records to resolve** (``A``): ``C``; their *partners*, the records a changed one scores
   with as a possible match (at or above ``review_at``, not settled apart;
   :func:`~crm_pipelines.identity.scoring.scored_partners` scores each changed record against its
   blocks in the whole population); the changed records' pairs in last night's review queue; every
   member of last night's clusters of all of those and of ``D``; and, until none leads out of ``A``,
   the joins the clustering refused last night from a record in ``A`` (a refused join may go through
   once a cluster around it changed), with their clusters. A record that only shares a block with a
   changed one, at a lower score, can neither join its cluster nor be reviewed with it: its cluster
   is not resolved again. The work grows with the change and the blocks it sits in, not with the
   population.
3. ``A`` is resolved as a full run would: candidates, levels, clustering under the guard, golden ids
   (kept, merged, split or created against the previous ids), survivorship. Block sizes and value
   frequencies count the whole population; the weights are the last full run's (a trained model
   scoring new records, as Splink's incremental linking does).
4. Every other cluster is untouched: its golden record, crosswalk rows, field sources and review rows
   are last night's, carried over. So is a review pair of last night between a resolved record and
   one outside ``A``: both are unchanged and it is not a refused join, so its outcome is the same.
   The outputs are whole, as a full run writes them.

A run is **full** (weights estimated again) when there is no previous state, the match rules or the
field ownership changed, the entity is matched by rules rather than scoring, the warehouse's
crosswalk is not the one the previous run wrote (a load failed, an erasure ran), more than
``MAX_CHANGED_SHARE`` of the records changed, or the weights are older than
``RETRAIN_AFTER_DAYS`` nights. The metadata says which and why.

What an incremental run can differ in from a full run with the same weights: a pair of two
unchanged records, one resolved and one not, is not scored again; it could score differently only
through the frequency of a value that changed elsewhere (term-frequency weights), by a fraction of
its weight. The weekly full run re-estimates everything.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb

from crm_pipelines.identity.golden_ids import PREVIOUS_XREF_INPUT
from crm_pipelines.identity.outputs import IdentityFiles, identity_files
from crm_pipelines.identity.rules import Entity, EntityRules, MatchRules
from crm_pipelines.identity.scoring import REFUSED, ScoringParams, scored_partners
from crm_pipelines.lake import LakePath, children, scan_parquet, write_text
from crm_pipelines.ownership import Ownership
from crm_pipelines.sql import quote_ident, quote_literal

__all__ = [
    "MAX_CHANGED_SHARE",
    "RETRAIN_AFTER_DAYS",
    "PreviousRun",
    "Scope",
    "choose_scope",
    "declarations_fingerprint",
    "find_previous_run",
    "write_state",
]

#: Bump when what a fingerprint covers or how records are resolved changes: the next run is full.
FORMAT_VERSION = 1
#: Above this share of changed and deleted records, resolving everything costs about the same.
MAX_CHANGED_SHARE = 0.25
#: The weights are estimated again at least this often.
RETRAIN_AFTER_DAYS = 7

_PARTITION = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True)
class PreviousRun:
    """The newest earlier identity run that left its state: where, and what it was made with."""

    partition: str
    folder: LakePath
    declarations: str
    trained_on: dict[str, str]
    params: dict[str, ScoringParams]


@dataclass(frozen=True)
class Scope:
    """How an entity is resolved tonight.

    ``incremental``: only the records in the temporary table ``records`` (``rid``) are resolved, with
    ``params``; ``reason`` says why a run is full.
    """

    incremental: bool
    reason: str
    params: ScoringParams | None = None
    trained_on: str | None = None
    changed: int = 0
    deleted: int = 0
    resolved: int = 0
    records: str | None = None


def declarations_fingerprint(rules: MatchRules, ownership: Ownership) -> str:
    """What the clusters and golden values follow from, besides the data: a change means a full run."""
    text = json.dumps(
        {
            "version": FORMAT_VERSION,
            "rules": rules.model_dump(mode="json"),
            "ownership": ownership.model_dump(mode="json"),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def find_previous_run(lake_dir: LakePath, partition: str) -> PreviousRun | None:
    """The newest complete identity run of ``partition`` or an earlier night (its state file is there).

    A night run again starts from its own last run: a re-run changes nothing, and costs little.
    """
    root = identity_files(lake_dir, partition).folder.parent
    earlier = sorted(
        (m.group(1), folder)
        for folder in children(root)
        if (m := _PARTITION.match(folder.name)) is not None and m.group(1) <= partition
    )
    for day, folder in reversed(earlier):
        files = IdentityFiles(folder)
        if not files.state.exists():
            continue
        try:
            data = json.loads(files.state.read_text(encoding="utf-8"))
            if data.get("version") != FORMAT_VERSION or not files.records.exists():
                return None
            return PreviousRun(
                partition=day,
                folder=folder,
                declarations=str(data["declarations"]),
                trained_on={str(k): str(v) for k, v in data["trained_on"].items()},
                params={str(k): ScoringParams.from_dict(v) for k, v in data["params"].items()},
            )
        except (ValueError, KeyError, TypeError):
            return None  # unreadable state: resolve in full, which writes a good one
    return None


def write_state(
    out_dir: LakePath,
    *,
    partition: str,
    declarations: str,
    trained_on: dict[str, str],
    params: dict[str, ScoringParams],
) -> None:
    """The marker the next run starts from; written after every output file."""
    state: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "partition": partition,
        "declarations": declarations,
        "trained_on": trained_on,
        "params": {entity: p.to_dict() for entity, p in params.items()},
    }
    write_text(IdentityFiles(out_dir).state, json.dumps(state, indent=1, sort_keys=True))


def fingerprint_sql(
    *,
    src: str,
    columns: list[str],
    pushed: str | None,
    decisions: str | None,
    entity: Entity,
    account_xref: str | None,
) -> str:
    """One row per record: ``rid``, ``record_id`` and the fingerprint of everything resolution reads of it.

    DuckDB's 64-bit ``hash`` of the values: a change goes unseen with odds of 2**-64, and a DuckDB
    whose hash differs makes every record look changed once (a full run), never the reverse.
    ``pushed`` must hold each (record_id, field, value) once.
    """
    row = ", ".join(f"{quote_literal(name)}: s.{quote_ident(name)}" for name in columns)
    parts = [f"'row': {{{row}}}"]
    joins = []
    if pushed is not None:
        parts.append("'pushed': p.pushed")
        # The XOR of the (field, value) hashes: the rows are distinct, so it is the set's fingerprint
        # in any order, at an eighth of the CPU of an ordered list (1.6 s at 300,000 contacts).
        joins.append(
            f"LEFT JOIN (SELECT record_id, bit_xor(hash(field, value)) AS pushed FROM {pushed} "
            f"GROUP BY record_id) AS p ON p.record_id = s.record_id"
        )
    if decisions is not None:
        parts.append("'decided': d.decided")
        joins.append(
            f"""LEFT JOIN (
                SELECT record_id, list({{'other': other, 'decision': decision, 'at': decided_at}}
                                       ORDER BY other, decided_at, decision) AS decided
                FROM (
                    SELECT record_id_a AS record_id, record_id_b AS other, decision, decided_at
                    FROM {decisions} WHERE entity = {quote_literal(entity)}
                    UNION ALL
                    SELECT record_id_b, record_id_a, decision, decided_at
                    FROM {decisions} WHERE entity = {quote_literal(entity)}
                )
                GROUP BY record_id
            ) AS d ON d.record_id = s.record_id"""
        )
    if account_xref is not None:
        parts.append("'account': ax.golden_id")
        joins.append(f"LEFT JOIN {account_xref} AS ax ON ax.record_id = s.account_record_id")
    return f"""
        SELECT s.rid, s.record_id, hash({{{", ".join(parts)}}}) AS fingerprint
        FROM {src} AS s
        {" ".join(joins)}
    """


def _count(cur: duckdb.DuckDBPyConnection, sql: str, params: list[object] | None = None) -> int:
    row = cur.execute(sql, params).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _close_over_refused(
    cur: duckdb.DuckDBPyConnection, *, scope: str, review: str, entity: Entity, fingerprints: str, prev: str
) -> None:
    """Grow ``scope`` until no join the clustering refused last night leads out of it.

    A refused join is the one review pair whose outcome depends on the clusters around it: once a
    cluster in the scope changes, the join may go through. So its other record, with its cluster,
    is resolved too, and so on from the records that brings in. Every other review pair of last
    night between a resolved record and one outside depends on the two records alone; it is carried
    over as it was (:func:`crm_pipelines.identity.resolve._carry_over`).
    """
    cur.execute(
        f"CREATE OR REPLACE TEMP TABLE identity_refused AS SELECT record_id_a AS a, record_id_b AS b "
        f"FROM {review} WHERE entity = ? AND reason = ?",
        [entity, REFUSED],
    )
    size = _count(cur, f"SELECT count(*) FROM {scope}")
    while True:
        cur.execute(
            f"""
            INSERT INTO {scope}
            WITH inside AS (SELECT record_id FROM {fingerprints} WHERE rid IN (SELECT rid FROM {scope})),
            partners AS (
                SELECT b AS record_id FROM identity_refused WHERE a IN (SELECT record_id FROM inside)
                UNION SELECT a FROM identity_refused WHERE b IN (SELECT record_id FROM inside)
            ),
            clusters AS (SELECT golden_id FROM {prev} WHERE record_id IN (SELECT record_id FROM partners))
            SELECT f.rid FROM {fingerprints} AS f
            WHERE f.rid NOT IN (SELECT rid FROM {scope})
              AND (f.record_id IN (SELECT record_id FROM partners)
                   OR f.record_id IN (SELECT record_id FROM {prev} WHERE golden_id IN (SELECT golden_id FROM clusters)))
            """
        )
        grown = _count(cur, f"SELECT count(*) FROM {scope}")
        if grown == size:
            break
        size = grown
    cur.execute("DROP TABLE identity_refused")


def choose_scope(
    cur: duckdb.DuckDBPyConnection,
    *,
    entity: Entity,
    entity_rules: EntityRules,
    previous: PreviousRun | None,
    declarations: str,
    partition: str | None,
    incremental: bool,
    fingerprints: str,
    feat: str,
    table: Callable[[str], str],
) -> Scope:
    """Decide whether ``entity`` can be resolved incrementally tonight and, if so, which records.

    Args:
        cur: The identity run's cursor; :func:`crm_pipelines.identity.golden_ids.register_previous` ran.
        entity: 'account' or 'contact'.
        entity_rules: Its declared matching.
        previous: The previous run's state, if any.
        declarations: Tonight's :func:`declarations_fingerprint`.
        partition: Tonight's partition (needed to age the weights).
        incremental: False forces a full resolution (with the previous weights when they fit).
        fingerprints: Table of tonight's records (``rid``, ``record_id``, ``fingerprint``).
        feat: Features table of tonight's records.
        table: Quoted name of a temporary table of this entity for a purpose; ``table('prev')`` is
            left holding the previous run's records (``record_id``, ``fingerprint``, ``golden_id``).

    Returns:
        The scope; for an incremental one, ``records`` names a temporary table of the rids to resolve.
    """
    scoring = entity_rules.scoring
    if previous is None:
        return Scope(False, "no earlier identity run left its state")
    params = previous.params.get(entity)
    if previous.declarations != declarations:
        return Scope(False, "the match rules or the field ownership changed")
    if scoring is None or params is None or not params.fits(scoring):
        return Scope(False, "matched by rules, not scored")
    trained_on = previous.trained_on.get(entity, previous.partition)
    if not incremental:
        return Scope(False, "a full resolution was asked for", params=params, trained_on=trained_on)
    if partition is None:
        return Scope(False, "no partition given")
    age = (dt.date.fromisoformat(partition) - dt.date.fromisoformat(trained_on)).days
    if age >= RETRAIN_AFTER_DAYS:
        return Scope(False, f"the weights are {age} nights old")
    files = IdentityFiles(previous.folder)
    prev = table("prev")
    records_file = scan_parquet(str(files.records))
    cur.execute(
        f"CREATE OR REPLACE TEMP TABLE {prev} AS SELECT record_id, fingerprint, golden_id "
        f"FROM {records_file} WHERE entity = ?",
        [entity],
    )
    # The golden ids tonight keeps are the warehouse's: if it holds others than the previous run wrote
    # (that load failed, an erasure ran), last night's clusters are not the ones to carry over.
    differ = _count(
        cur,
        f"""
        SELECT count(*) FROM {prev} AS p
        FULL JOIN (SELECT record_id, golden_id FROM {PREVIOUS_XREF_INPUT} WHERE entity = ?) AS w USING (record_id)
        WHERE p.golden_id IS DISTINCT FROM w.golden_id
        """,
        [entity],
    )
    if differ:
        return Scope(False, f"the warehouse's crosswalk differs from the previous run's in {differ} records")
    changed_table = table("changed")
    cur.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {changed_table} AS
        SELECT f.rid FROM {fingerprints} AS f LEFT JOIN {prev} AS p USING (record_id)
        WHERE p.fingerprint IS DISTINCT FROM f.fingerprint
        """
    )
    changed = _count(cur, f"SELECT count(*) FROM {changed_table}")
    deleted = _count(cur, f"SELECT count(*) FROM {prev} ANTI JOIN {fingerprints} USING (record_id)")
    records = _count(cur, f"SELECT count(*) FROM {fingerprints}")
    if changed + deleted > MAX_CHANGED_SHARE * max(records, 1):
        return Scope(
            False,
            f"{changed + deleted} of {records} records changed (over {MAX_CHANGED_SHARE:.0%})",
            changed=changed,
            deleted=deleted,
        )
    partners = scored_partners(
        cur, scoring, population=feat, seeds=changed_table, limit=entity_rules.max_block_size, params=params
    )
    scope = table("scope")
    # Last night's clusters of the changed records, their partners and the deleted records: all of
    # their members are resolved again.
    cur.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {scope} AS
        WITH seeds AS (SELECT rid FROM {changed_table} UNION SELECT rid FROM {partners}),
        touched AS (
            SELECT p.golden_id FROM {prev} AS p JOIN {fingerprints} AS f USING (record_id)
            WHERE f.rid IN (SELECT rid FROM seeds)
            UNION
            SELECT golden_id FROM {prev} ANTI JOIN {fingerprints} USING (record_id)
        )
        SELECT rid FROM seeds
        UNION
        SELECT f.rid FROM {fingerprints} AS f JOIN {prev} AS p USING (record_id)
        WHERE p.golden_id IN (SELECT golden_id FROM touched)
        """
    )
    review_file = files.review
    if review_file.exists():
        # A changed record's review partners: the pair is scored again, so both records are resolved.
        cur.execute(
            f"""
            INSERT INTO {scope}
            WITH changed AS (SELECT record_id FROM {fingerprints} WHERE rid IN (SELECT rid FROM {changed_table})),
            review AS (SELECT record_id_a, record_id_b FROM {scan_parquet(str(review_file))} WHERE entity = ?),
            partners AS (
                SELECT record_id_b AS record_id FROM review WHERE record_id_a IN (SELECT record_id FROM changed)
                UNION SELECT record_id_a FROM review WHERE record_id_b IN (SELECT record_id FROM changed)
            ),
            clusters AS (SELECT golden_id FROM {prev} WHERE record_id IN (SELECT record_id FROM partners))
            SELECT f.rid FROM {fingerprints} AS f
            WHERE f.record_id IN (SELECT record_id FROM partners)
               OR f.record_id IN (SELECT record_id FROM {prev} WHERE golden_id IN (SELECT golden_id FROM clusters))
            """,
            [entity],
        )
        cur.execute(f"CREATE OR REPLACE TEMP TABLE {scope} AS SELECT DISTINCT rid FROM {scope}")
        _close_over_refused(
            cur,
            scope=scope,
            review=scan_parquet(str(review_file)),
            entity=entity,
            fingerprints=fingerprints,
            prev=prev,
        )
    resolved = _count(cur, f"SELECT count(*) FROM {scope}")
    for name in (changed_table, partners):
        cur.execute(f"DROP TABLE IF EXISTS {name}")
    return Scope(
        True,
        "",
        params=params,
        trained_on=trained_on,
        changed=changed,
        deleted=deleted,
        resolved=resolved,
        records=scope,
    )
