"""Scored matching: Fellegi-Sunter weights estimated from the data, and clustering that does not chain.

Written in DuckDB SQL (plus a small EM loop and a union-find in Python) rather than through Splink:
the matcher runs inside the identity step's DuckDB connection on its materialised features, reads
the declared YAML (``match_rules.yaml``: blocking, comparisons, thresholds) and must merge under a
consistency guard and honour review decisions, which Splink's clustering does not offer. Splink is
the reference it is measured against (``bench/identity.py``).

1. **Candidates**: records equal on every part of any blocking key (``scoring.blocking``), each pair
   once; blocks larger than ``max_block_size`` are skipped and counted.
2. **Settled early**: a pair that a ``review: false`` apart rule decides by equality alone (two
   resolved companies, no shared e-mail or phone) is set aside as two people before its levels are
   computed; it still holds its clusters apart.
3. **Comparison levels** per pair (``rules.COMPARISON_KINDS``): exact, nickname, initial, typo
   distance, transliteration for names; mailbox without ``+tag`` for e-mail; digits for phones.
4. **Weights**: u (how often a level occurs between two random records) from a seeded random sample
   of record pairs; m (how often between the same person) by expectation-maximisation, u held
   fixed, in one session per blocking key over the pairs that key found, leaving out the
   comparisons the key reads (every pair it finds agrees there), as Splink trains; the sessions' m
   are averaged. The prior is the share of all record pairs that are one person. An exact value is
   weighed by its frequency (term-frequency adjustment: "Okafor" says more than "Smith", a
   1 January birth date less than another), smoothed for small inputs. A level that disagrees
   has a negative weight: evidence against a match.
5. **Clustering**: pairs at or above ``merge_at`` are joined strongest first; a join is refused when
   the two clusters hold a pair scored below ``reject_below`` or a cannot-link decision (a weak
   bridge never chains two different people together). Refused joins and pairs between
   ``review_at`` and ``merge_at`` go to the review queue.
"""

from __future__ import annotations

import collections
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from crm_pipelines.identity.rules import Comparison, KeyPart, Scoring
from crm_pipelines.sql import quote_ident, quote_literal

__all__ = [
    "REFUSED",
    "SCORED_RULE",
    "ScoringParams",
    "ScoringStats",
    "features_read",
    "nickname_pairs",
    "score_and_cluster",
    "scored_partners",
]

SCORED_RULE = "match_score"  # what the crosswalk names a scored link by
#: The review reason of a link the clustering refused: the only review pairs whose outcome depends on
#: the clusters around them, not on the pair's own score.
REFUSED = "refused: the clusters hold a pair scored as different people"

_RANDOM_SAMPLE = 900  # records per side of the random pairs that estimate u (405,000 pairs)
_EM_ROUNDS = 40
_FLOOR = 1e-6  # no probability is exactly 0 or 1
# The starting m counts as at least this many pairs of the same person, and as many as the
# candidates: a small or lopsided candidate set (every pair sharing a family name and a company, or
# a mailbox like "lisa@") cannot talk EM into "people change first names".
_PSEUDO_PAIRS = 1_000.0
# Starting m per kind: how often the same person shows each level (best first, 'different' last).
_M_START: dict[str, list[float]] = {
    "given_name": [0.73, 0.02, 0.06, 0.05, 0.08, 0.03, 0.03],
    "family_name": [0.83, 0.02, 0.03, 0.06, 0.03, 0.03],
    "email": [0.6, 0.1, 0.03, 0.1, 0.17],
    "phone": [0.6, 0.1, 0.3],
    "company": [0.7, 0.1, 0.2],
    "exact": [0.9, 0.1],
    "date": [0.8, 0.08, 0.06, 0.06],
    "postcode": [0.8, 0.1, 0.1],
    "identifier": [0.9, 0.05, 0.05],
}
# The prior (the share of all record pairs that are one person) stays within these: tiny inputs
# (three records of one person) would otherwise call every pair a match before any evidence.
_MAX_PRIOR = 0.5
_FLOOR_PRIOR = 1e-12
# Features a blocking key may read that come from a compared one: a key on the initial or the
# folded family name agrees on part of that name.
_DERIVED: dict[str, tuple[str, ...]] = {
    "first_initial": ("first_name",),
    "last_name_folded": ("last_name",),
    "email_mailbox": ("email",),
    "email_local": ("email",),
    "email_domain": ("email",),
    "full_name": ("first_name", "last_name"),
    "sorted_name": ("first_name", "last_name"),
    "phone": ("phone_digits",),
    "phone_digits": ("phone",),
}
_PSEUDO_RECORDS = 1_000.0  # a value's frequency counts as this many records at the level's u
_PSEUDO_RANDOM = 10_000.0  # the starting u counts as this many random pairs (of 4M on a real input)
# Starting u per kind: how often two different people share the level, before the data says.
_U_START: dict[str, list[float]] = {
    "given_name": [0.005, 0.0001, 0.001, 0.01, 0.002, 0.01],
    "family_name": [0.001, 0.0001, 0.0005, 0.001, 0.005],
    "email": [0.0001, 0.0005, 0.01, 0.6],
    "phone": [0.0001, 0.0002],
    "company": [0.001, 0.001],
    "exact": [0.05],
    "date": [0.0005, 0.002, 0.01],
    "postcode": [0.001, 0.005],
    "identifier": [0.00001, 0.0001],
}


@dataclass
class ScoringStats:
    """What scoring did, for the asset's metadata."""

    candidate_pairs: int = 0
    pairs_by_key: dict[str, int] = field(default_factory=dict)
    skipped_blocks: int = 0
    skipped_records: int = 0
    merged_pairs: int = 0
    refused_joins: int = 0
    review_pairs: int = 0
    pairs_by_band: dict[str, int] = field(default_factory=dict)
    prior: float = 0.0
    m: dict[str, list[float]] = field(default_factory=dict)
    u: dict[str, list[float]] = field(default_factory=dict)
    #: The exact weights this run scored with (estimated tonight, or given), for the next run to reuse.
    params: ScoringParams | None = None


@dataclass(frozen=True)
class ScoringParams:
    """The model's weights: m and u per comparison and level, and the prior.

    Estimated from the data by a full run; an incremental run scores its few changed records with the
    weights of the last full run (:mod:`crm_pipelines.identity.incremental`), as a trained model
    scores new records.
    """

    m: list[list[float]]
    u: list[list[float]]
    prior: float

    def to_dict(self) -> dict[str, Any]:
        return {"m": self.m, "u": self.u, "prior": self.prior}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoringParams:
        return cls(
            m=[[float(v) for v in levels] for levels in data["m"]],
            u=[[float(v) for v in levels] for levels in data["u"]],
            prior=float(data["prior"]),
        )

    def fits(self, scoring: Scoring) -> bool:
        """Whether the weights have one value per level of every declared comparison."""
        sizes = [len(_levels(c)) for c in scoring.comparisons]
        return [len(levels) for levels in self.m] == sizes and [len(levels) for levels in self.u] == sizes


# -------------------------------------------------------------------------------------------------
# Levels: SQL over the left (l) and right (r) feature columns; the highest level first.


def _levels(c: Comparison) -> list[tuple[str, str]]:
    """(label, SQL condition) per level, best first; the last level is 'different' (always true)."""
    left, right = f"l.{quote_ident(c.feature)}", f"r.{quote_ident(c.feature)}"
    if c.kind == "given_name":
        return [
            ("exact", f"{left} = {right}"),
            (
                "swapped",
                f"jaro_winkler_similarity({left}, r.__family) >= 0.9 "
                f"AND jaro_winkler_similarity({right}, l.__family) >= 0.9",
            ),
            (
                "nickname",
                f"(least({left}, {right}), greatest({left}, {right})) IN (SELECT (a, b) FROM identity_nicknames)",
            ),
            ("initial", f"(length({left}) = 1 OR length({right}) = 1) AND {left}[1] = {right}[1]"),
            ("jw92", f"jaro_winkler_similarity({left}, {right}) >= 0.92"),
            ("jw80", f"jaro_winkler_similarity({left}, {right}) >= 0.80"),
            ("different", "true"),
        ]
    if c.kind == "family_name":
        return [
            ("exact", f"{left} = {right}"),
            (
                "swapped",
                f"jaro_winkler_similarity({left}, r.__given) >= 0.9 "
                f"AND jaro_winkler_similarity({right}, l.__given) >= 0.9",
            ),
            ("transliteration", "l.__folded = r.__folded"),
            ("jw92", f"jaro_winkler_similarity({left}, {right}) >= 0.92"),
            ("jw80", f"jaro_winkler_similarity({left}, {right}) >= 0.80"),
            ("different", "true"),
        ]
    if c.kind == "email":
        return [
            ("exact", f"{left} = {right}"),
            # The same mailbox (+tag stripped) at the same domain, or where one address is private
            # (free mail): two company addresses with one mailbox are namesakes at two companies as
            # often as one person who moved.
            (
                "mailbox",
                "l.__mailbox = r.__mailbox AND (l.__domain IS NULL OR r.__domain IS NULL OR l.__domain = r.__domain)",
            ),
            # Two mailboxes at one company's domain (free-mail domains are no company's).
            ("same_domain", "l.__domain = r.__domain"),
            # Two company addresses at two companies.
            ("other_domain", "l.__domain <> r.__domain"),
            ("different", "true"),
        ]
    if c.kind == "phone":
        return [
            ("exact", f"{left} = {right}"),
            ("last8", f"right({left}, 8) = right({right}, 8)"),
            ("different", "true"),
        ]
    if c.kind == "company":
        return [
            ("exact", f"{left} = {right}"),
            ("jw92", f"jaro_winkler_similarity({left}, {right}) >= 0.92"),
            ("different", "true"),
        ]
    if c.kind == "date":
        days = f"abs(date_diff('day', try_cast({left} AS DATE), try_cast({right} AS DATE)))"
        return [
            ("exact", f"{left} = {right}"),
            ("typo", _one_edit(left, right)),
            ("within_year", f"{days} <= 365"),
            ("different", "true"),
        ]
    if c.kind == "identifier":
        return [
            ("exact", f"{left} = {right}"),
            ("typo", _one_edit(left, right)),
            ("different", "true"),
        ]
    if c.kind == "postcode":
        return [
            ("exact", f"{left} = {right}"),
            (
                "same_area",
                f"length({left}) >= 4 AND length({left}) = length({right}) "
                f"AND left({left}, -2) = left({right}, -2)",
            ),
            ("different", "true"),
        ]
    return [("exact", f"{left} = {right}"), ("different", "true")]


def _one_edit(left: str, right: str) -> str:
    """At most one edit apart (Damerau-Levenshtein <= 1), the distance computed only where it can be.

    One edit (a changed, added, dropped or swapped character at p) leaves the first p characters
    equal and everything after p + 1 equal counted from the end; so with k = (shorter length - 2) / 2,
    either the first k or the last k characters agree. Most pairs of dates or ids fail that test,
    and the distance (which costs as much as every other level together) is never computed for them.
    """
    k = f"greatest((least(length({left}), length({right})) - 2) // 2, 0)"
    return (
        f"abs(length({left}) - length({right})) <= 1 "
        f"AND (left({left}, {k}) = left({right}, {k}) OR right({left}, {k}) = right({right}, {k})) "
        f"AND damerau_levenshtein({left}, {right}) <= 1"
    )


def _apart_sql(scoring: Scoring, *, settled: bool = False) -> str:
    """True for a pair at a level that makes two people (``apart_when``, unless one of its ``unless``).

    ``settled``: only the levels that settle it without review (``review: false``).
    """
    index = {c.feature: i for i, c in enumerate(scoring.comparisons)}

    def at(feature: str, label: str) -> str:
        i = index[feature]
        level = [name for name, _ in _levels(scoring.comparisons[i])].index(label)
        return f"g{i} = {level}"

    tests = []
    for apart in scoring.apart_when:
        if settled and apart.review:
            continue
        unless = "".join(f" AND NOT {at(u.feature, u.level)}" for u in apart.unless)
        tests.append(f"({at(apart.feature, apart.level)}{unless})")
    return " OR ".join(tests) or "false"


def _settled_early_sql(scoring: Scoring) -> tuple[str, list[str]] | None:
    """The ``review: false`` apart rules that equality alone decides, as SQL over l and r, and the
    features it reads; or None.

    Such a rule (two resolved companies, unless the e-mail or the phone agrees) settles a pair as two
    people whatever its score: the pair is neither linked nor reviewed. On CRM data most candidate
    pairs are settled so (namesakes at other companies), and the comparison levels are the costly
    part of scoring; they are left out before it. A rule reading a fuzzy level is not decided here.
    """
    kinds = {c.feature: c for c in scoring.comparisons}

    def equal(feature: str) -> str:
        column = quote_ident(feature)
        return f"coalesce(l.{column} = r.{column}, false)"

    tests = []
    read: set[str] = set()
    for apart in scoring.apart_when:
        if apart.review or any(u.level != "exact" for u in apart.unless):
            continue
        labels = [label for label, _ in _levels(kinds[apart.feature])]
        column = quote_ident(apart.feature)
        if apart.level == "exact":
            test = equal(apart.feature)
        elif apart.level == "different" and labels == ["exact", "different"]:
            test = f"coalesce(l.{column} <> r.{column}, false)"
        else:
            continue
        tests.append("(" + " AND ".join([test, *(f"NOT {equal(u.feature)}" for u in apart.unless)]) + ")")
        read |= {apart.feature, *(u.feature for u in apart.unless)}
    return (" OR ".join(tests), sorted(read)) if tests else None


def _level_sql(c: Comparison) -> str:
    """The level index of a pair (0 = best), or -1 when either value is missing."""
    left, right = f"l.{quote_ident(c.feature)}", f"r.{quote_ident(c.feature)}"
    levels = _levels(c)
    cases = " ".join(f"WHEN {cond} THEN {i}" for i, (_, cond) in enumerate(levels[:-1]))
    return f"CASE WHEN {left} IS NULL OR {right} IS NULL THEN -1 {cases} ELSE {len(levels) - 1} END"


# Levels weighed by their value's frequency: kind -> (level, column; None: the compared feature).
_TF_LEVELS: dict[str, tuple[int, str | None]] = {
    "given_name": (0, None),
    "family_name": (0, None),
    "email": (1, "__mailbox"),
    "exact": (0, None),
    "date": (0, None),
    "postcode": (0, None),
    "identifier": (0, None),
}

# The helper columns some levels read, computed once per record.
_HELPERS: dict[str, tuple[tuple[str, str], ...]] = {
    "given_name": (("__family", "last_name"),),
    "family_name": (("__folded", "last_name_folded"), ("__given", "first_name")),
    "email": (("__mailbox", "email_mailbox"), ("__domain", "email_domain")),
}


def features_read(scoring: Scoring) -> set[str]:
    """Every feature the scoring reads: its keys, its comparisons and the helpers of their levels."""
    helpers = {feature for c in scoring.comparisons for _, feature in _HELPERS.get(c.kind, ())}
    return set(scoring.features()) | helpers


@cache
def nickname_pairs() -> list[tuple[str, str]]:
    """Name pairs where one is a nickname or diminutive of the other (a, b with a < b).

    From the ``nicknames`` package (Old Dominion University's name list, Apache-2.0), folded the way
    names are folded for matching (lower case, no accents). Two nicknames of one name are a pair as
    well: Bill and Will are both William.
    """
    text = resources.files("nicknames").joinpath("names.csv").read_text(encoding="utf-8")
    pairs: set[tuple[str, str]] = set()
    nicknames: dict[str, set[str]] = {}
    for line in text.splitlines()[1:]:
        parts = line.strip().split(",")
        if len(parts) != 3:
            continue
        a, b = parts[0].strip().lower(), parts[2].strip().lower()
        if a and b and a != b:
            pairs.add((min(a, b), max(a, b)))
            nicknames.setdefault(a, set()).add(b)
    for names in nicknames.values():
        pairs.update((x, y) for x, y in itertools.combinations(sorted(names), 2))
    return sorted(pairs)


# -------------------------------------------------------------------------------------------------


def _one(
    cur: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | dict[str, Any] | None = None
) -> tuple[Any, ...]:
    row = cur.execute(sql, params).fetchone()
    assert row is not None
    return tuple(row)


def _double(value: float) -> str:
    """A number as a DOUBLE literal: DuckDB reads ``0.5907207850620398`` as a DECIMAL, and sums of
    CASEs over DECIMALs of many scales run several times slower."""
    return f"CAST({value!r} AS DOUBLE)"


def _soundex_column(feature: str) -> str:
    return quote_ident(f"__soundex_{feature}")


def _key_sql(part: KeyPart) -> str:
    column = quote_ident(part.feature)
    if part.transform == "soundex":
        return _soundex_column(part.feature)
    if part.transform == "prefix":
        return f"nullif(left({column}, {int(part.length or 1)}), '')"
    return column


def _keyed(cur: duckdb.DuckDBPyConnection, scoring: Scoring, *, feat: str) -> None:
    """``identity_keyed``: ``feat`` plus the phonetic codes the blocking keys read.

    A phonetic code is worked out once per distinct value, not once per record.
    """
    soundexed = sorted({p.feature for key in scoring.blocking for p in key if p.transform == "soundex"})
    cur.execute(
        f"CREATE OR REPLACE TEMP TABLE identity_keyed AS SELECT f.*"
        f"{''.join(f', sx{i}.code AS {_soundex_column(name)}' for i, name in enumerate(soundexed))} "
        f"FROM {feat} AS f"
        + "".join(
            f" LEFT JOIN (SELECT v, identity_soundex(v) AS code FROM (SELECT DISTINCT {quote_ident(name)} AS v "
            f"FROM {feat})) AS sx{i} ON sx{i}.v = f.{quote_ident(name)}"
            for i, name in enumerate(soundexed)
        )
    )


def _block_sql(key: list[KeyPart], *, carry: str = "") -> str:
    """One blocking key over ``identity_keyed``: each record with a full key, its parts and block size."""
    cols = ", ".join(f"{_key_sql(p)} AS k{i}" for i, p in enumerate(key))
    keys = [f"k{i}" for i in range(len(key))]
    return f"""
        SELECT rid, {", ".join(keys)}, count(*) OVER (PARTITION BY {", ".join(keys)}) AS n{carry}
        FROM (SELECT rid, {cols}{carry} FROM identity_keyed)
        WHERE {" AND ".join(f"{k} IS NOT NULL" for k in keys)}
    """


def scored_partners(
    cur: duckdb.DuckDBPyConnection,
    scoring: Scoring,
    *,
    population: str,
    seeds: str,
    limit: int,
    params: ScoringParams,
) -> str:
    """Every record that a seed record scores with as a possible match: the records whose clusters a
    change to the seeds can move.

    The seeds' candidate pairs with the whole population are found per blocking key (a block of more
    than ``limit`` records is skipped, as :func:`score_and_cluster` skips it) and scored with
    ``params``, each value weighed by its frequency in the population. A partner is a record whose pair
    with a seed scores at or above ``review_at`` and is not settled apart: a link or a pair for review.
    A record a seed merely shares a block with, at a lower score, can neither join a seed's cluster
    nor go to review with it, so its cluster stays as it was. The work grows with the seeds and the
    blocks they sit in, not with the population.

    Args:
        cur: The identity run's cursor (macros created).
        scoring: The entity's declared scoring.
        population: Features table of every record (``rid`` and the features).
        seeds: Table with the seed records' ``rid``.
        limit: ``max_block_size``.
        params: The weights to score with (the last full run's).

    Returns:
        The name of a temporary table of ``rid`` (seeds not included unless they are a partner).
        ``identity_keyed`` (the population with its phonetic codes) is left for
        :func:`score_and_cluster` (``keyed=True``), so the codes are worked out once.
    """
    _keyed(cur, scoring, feat=population)
    _create_nicknames(cur)
    settled_sql, carried = _settled_early_sql(scoring) or ("false", [])
    carry = "".join(f", {quote_ident(c)}" for c in carried)
    pairs, gammas = "identity_seed_pairs", "identity_seed_gammas"
    cur.execute(f"CREATE OR REPLACE TEMP TABLE {pairs} (a BIGINT, b BIGINT, settled BOOLEAN)")
    for key in scoring.blocking:
        keys = [f"k{i}" for i in range(len(key))]
        # l is a seed; r any other record of its block. Each pair is kept as (a < b).
        cur.execute(
            f"""
            INSERT INTO {pairs}
            WITH block AS ({_block_sql(key, carry=carry)})
            SELECT least(l.rid, r.rid), greatest(l.rid, r.rid), {settled_sql}
            FROM (SELECT * FROM block WHERE n <= ? AND rid IN (SELECT rid FROM {seeds})) AS l
            JOIN block AS r ON {" AND ".join(f"l.{k} = r.{k}" for k in keys)} AND l.rid <> r.rid
            """,
            [limit],
        )
    cur.execute(
        f"CREATE OR REPLACE TEMP TABLE {pairs} AS SELECT a, b, bool_or(settled) AS settled FROM {pairs} GROUP BY a, b"
    )
    cur.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE identity_seed_feat AS
        SELECT * FROM {population} WHERE rid IN (SELECT a FROM {pairs} WHERE NOT settled UNION SELECT b FROM {pairs} WHERE NOT settled)
        """
    )
    tf_columns = _gammas(
        cur, scoring, feat="identity_seed_feat", counted=population, pairs=pairs, gammas=gammas
    )
    _weigh(cur, scoring, gammas=gammas, counted=population, tf_columns=tf_columns, params=params)
    found = "identity_partners"
    cur.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {found} AS
        WITH possible AS (SELECT a, b FROM identity_scores WHERE p >= ? AND NOT settled)
        SELECT a AS rid FROM possible UNION SELECT b FROM possible
        """,
        [min(scoring.review_at, scoring.merge_at)],
    )
    for table in (
        pairs,
        gammas,
        "identity_seed_feat",
        "identity_scored_feat",
        "identity_scores",
        "identity_nicknames",
    ):
        cur.execute(f"DROP TABLE IF EXISTS {table}")
    return found


def _candidates(
    cur: duckdb.DuckDBPyConnection,
    scoring: Scoring,
    *,
    feat: str,
    pairs: str,
    limit: int,
    stats: ScoringStats,
    early: tuple[str, list[str]] | None,
    population: str | None = None,
    keyed: bool = False,
) -> None:
    """Candidate pairs (a < b) from every blocking key, each pair once, with ``settled``: whether
    ``early`` (:func:`_settled_early_sql`) already says two people.

    ``{pairs}_keys`` keeps (a, b, key) of the unsettled pairs: which keys found each pair, for
    training the weights one key at a time. With ``population`` (a features table holding every
    record, ``feat`` a part of it), a block's size counts the whole population, so a block too large
    to compare stays skipped whichever of its records are resolved.
    """
    cur.execute(
        f"CREATE OR REPLACE TEMP TABLE {pairs}_keys (a BIGINT, b BIGINT, key INTEGER, settled BOOLEAN)"
    )
    settled_sql, carried = early or ("false", [])
    carry = "".join(f", {quote_ident(c)}" for c in carried)
    # A phonetic code is worked out once per distinct value, not once per record.
    if not keyed:
        _keyed(cur, scoring, feat=population or feat)
    for index, key in enumerate(scoring.blocking):
        label = "+".join(p.label for p in key)
        keys = [f"k{i}" for i in range(len(key))]
        block = _block_sql(key, carry=carry)
        if population is not None:
            block = f"SELECT * FROM ({block}) WHERE rid IN (SELECT rid FROM {feat})"
        cur.execute(f"CREATE OR REPLACE TEMP TABLE identity_block AS {block}")
        # Per block: the records it holds; its pairs follow (n * (n - 1) / 2), no join needed.
        skipped, skipped_records, found = _one(
            cur,
            "SELECT count(*) FILTER (WHERE n > $limit), coalesce(sum(n) FILTER (WHERE n > $limit), 0), "
            "coalesce(sum(n * (n - 1) // 2) FILTER (WHERE n <= $limit), 0) "
            f"FROM (SELECT any_value(n) AS n FROM identity_block GROUP BY {', '.join(keys)})",
            {"limit": limit},
        )
        stats.skipped_blocks += int(skipped)
        stats.skipped_records += int(skipped_records)
        stats.pairs_by_key[label] = int(found)
        cur.execute(
            f"""
            INSERT INTO {pairs}_keys
            SELECT l.rid, r.rid, {index}, {settled_sql} FROM identity_block AS l JOIN identity_block AS r
              ON {" AND ".join(f"l.{k} = r.{k}" for k in keys)} AND l.rid < r.rid
            WHERE l.n <= ?
            """,
            [limit],
        )
    cur.execute("DROP TABLE IF EXISTS identity_block")
    cur.execute("DROP TABLE identity_keyed")
    cur.execute(
        f"CREATE OR REPLACE TEMP TABLE {pairs} AS SELECT a, b, bool_or(settled) AS settled "
        f"FROM {pairs}_keys GROUP BY a, b"
    )
    cur.execute(f"DELETE FROM {pairs}_keys WHERE settled")
    candidates, settled = _one(cur, f"SELECT count(*), count(*) FILTER (WHERE settled) FROM {pairs}")
    stats.candidate_pairs = int(candidates)
    stats.pairs_by_band["settled_apart"] = int(settled)


def _gamma_select(scoring: Scoring) -> str:
    return ", ".join(f"{_level_sql(c)} AS g{i}" for i, c in enumerate(scoring.comparisons))


def _blocked(scoring: Scoring, key: list[KeyPart]) -> set[int]:
    """The comparisons a blocking key reads: every pair the key finds agrees on them."""
    read = {p.feature for p in key}
    read |= {source for p in key for source in _DERIVED.get(p.feature, ())}
    return {i for i, c in enumerate(scoring.comparisons) if c.feature in read}


def _em(
    patterns: list[tuple[Any, ...]], active: list[int], m_start: list[list[float]], u: list[list[float]]
) -> tuple[list[list[float]], list[float]]:
    """m of the ``active`` comparisons by EM over level patterns (levels..., count), u held fixed.

    Returns m (the start values where not active) and, per comparison, the expected number of pairs
    of the same person that had a value on both sides (the estimate's weight).
    """
    m = [list(levels) for levels in m_start]
    seen = [0.0] * len(m)
    if not patterns:
        return m, seen
    table = np.asarray(patterns, dtype=np.float64)
    levels, counts = table[:, :-1].astype(np.int64), table[:, -1]
    prior = 0.1
    for _ in range(_EM_ROUNDS):
        log_odds = np.full(len(counts), math.log(prior / (1 - prior)))
        for i in active:
            known = levels[:, i] >= 0
            ratio = np.log(np.asarray(m[i]) / np.asarray(u[i]))
            log_odds[known] += ratio[levels[known, i]]
        posterior = 1.0 / (1.0 + np.exp(-np.clip(log_odds, -700, 700)))
        weighted = posterior * counts
        for i in active:
            known = levels[:, i] >= 0
            sums = np.bincount(levels[known, i], weights=weighted[known], minlength=len(m[i]))
            seen[i] = float(sums.sum())
            m[i] = [
                max((float(total) + _PSEUDO_PAIRS * m_start[i][j]) / (seen[i] + _PSEUDO_PAIRS), _FLOOR)
                for j, total in enumerate(sums)
            ]
        prior = min(max(float(weighted.sum() / counts.sum()), _FLOOR), 1 - _FLOOR)
    return m, seen


def _estimate(
    cur: duckdb.DuckDBPyConnection,
    scoring: Scoring,
    *,
    feat: str,
    gammas: str,
    pair_keys: str,
    stats: ScoringStats,
) -> tuple[list[list[float]], list[list[float]], float]:
    """u from random pairs, then m and the prior by EM over the candidates' level patterns."""
    comps = scoring.comparisons
    sizes = [len(_levels(c)) for c in comps]
    g_cols = [f"g{i}" for i in range(len(comps))]
    # Two seeded samples, materialised first: a sample inside the join is drawn again per probe.
    for side, seed in (("l", 42), ("r", 7)):
        cur.execute(
            f"CREATE OR REPLACE TEMP TABLE identity_sample_{side} AS "
            f"SELECT * FROM {feat} USING SAMPLE reservoir({_RANDOM_SAMPLE} ROWS) REPEATABLE ({seed})"
        )
    random_counts = cur.execute(
        f"""
        SELECT {", ".join(g_cols)}, count(*) FROM (
            SELECT {_gamma_select(scoring)}
            FROM identity_sample_l AS l JOIN identity_sample_r AS r ON l.rid < r.rid
        ) GROUP BY ALL
        """
    ).fetchall()
    cur.execute("DROP TABLE identity_sample_l")
    cur.execute("DROP TABLE identity_sample_r")
    u: list[list[float]] = []
    for i, n_levels in enumerate(sizes):
        counts = [0.0] * n_levels
        for row in random_counts:
            if row[i] >= 0:
                counts[row[i]] += row[-1]
        start = [*_U_START[comps[i].kind], 0.0]
        start[-1] = 1.0 - sum(start)
        total = sum(counts)
        u.append(
            [
                max((c + _PSEUDO_RANDOM * start[j]) / (total + _PSEUDO_RANDOM), _FLOOR)
                for j, c in enumerate(counts)
            ]
        )
    # m: one EM session per blocking key, over the pairs that key found, leaving out the comparisons
    # the key reads (all its pairs agree there, so they say nothing about m), as Splink trains. The
    # sessions' m are averaged, each weighed by the pairs of the same person it saw.
    sessions = cur.execute(
        f"SELECT k.key, {', '.join(f'g.{c}' for c in g_cols)}, count(*) "
        f"FROM {pair_keys} AS k JOIN {gammas} AS g ON g.a = k.a AND g.b = k.b GROUP BY ALL"
    ).fetchall()
    m_start = [list(_M_START[c.kind]) for c in comps]
    sums = [[0.0] * n for n in sizes]
    weights = [0.0] * len(comps)
    for index, key in enumerate(scoring.blocking):
        patterns = [row[1:] for row in sessions if row[0] == index]
        active = [i for i in range(len(comps)) if i not in _blocked(scoring, key)]
        if not patterns or not active:
            continue
        m_key, seen = _em(patterns, active, m_start, u)
        for i in active:
            for j in range(sizes[i]):
                sums[i][j] += m_key[i][j] * seen[i]
            weights[i] += seen[i]
    m = [
        [sums[i][j] / weights[i] for j in range(sizes[i])] if weights[i] > 0 else m_start[i]
        for i in range(len(comps))
    ]
    # The prior: the share of all record pairs that are one person. Pairs that no key found are
    # taken to be two people; the candidates' expected matches over all pairs, to a fixed point.
    patterns = cur.execute(f"SELECT {', '.join(g_cols)}, count(*) FROM {gammas} GROUP BY ALL").fetchall()
    (records,) = _one(cur, f"SELECT count(*) FROM {feat}")
    all_pairs = max(records * (records - 1) / 2, 1.0)
    candidates = float(sum(row[-1] for row in patterns))
    prior = min(max(0.5 * candidates / all_pairs, _FLOOR_PRIOR), _MAX_PRIOR)
    table = np.asarray(patterns, dtype=np.float64).reshape(len(patterns), len(comps) + 1)
    levels, pattern_counts = table[:, :-1].astype(np.int64), table[:, -1]
    log_factor = np.zeros(len(pattern_counts))
    for i in range(len(comps)):
        known = levels[:, i] >= 0
        log_factor[known] += np.log(np.asarray(m[i]) / np.asarray(u[i]))[levels[known, i]]
    for _ in range(_EM_ROUNDS):
        log_odds = np.clip(log_factor + math.log(prior / (1 - prior)), -700, 700)
        matched = float((pattern_counts / (1.0 + np.exp(-log_odds))).sum())
        prior = min(max(matched / all_pairs, _FLOOR_PRIOR), _MAX_PRIOR)
    stats.prior = prior
    stats.m = {f"{c.feature}:{c.kind}": [round(v, 6) for v in m[i]] for i, c in enumerate(comps)}
    stats.u = {f"{c.feature}:{c.kind}": [round(v, 6) for v in u[i]] for i, c in enumerate(comps)}
    return m, u, prior


def _create_nicknames(cur: duckdb.DuckDBPyConnection) -> None:
    """``identity_nicknames`` (a, b): the name pairs the given-name levels read."""
    cur.register(
        "identity_nickname_input",
        pa.table({"a": [a for a, _ in nickname_pairs()], "b": [b for _, b in nickname_pairs()]}),
    )
    cur.execute("CREATE OR REPLACE TEMP TABLE identity_nicknames AS SELECT * FROM identity_nickname_input")
    cur.unregister("identity_nickname_input")


def _gammas(
    cur: duckdb.DuckDBPyConnection, scoring: Scoring, *, feat: str, counted: str, pairs: str, gammas: str
) -> dict[int, str]:
    """The comparison levels of every unsettled pair of ``pairs`` into ``gammas``.

    Leaves ``identity_scored_feat``: per record of ``feat``, only what the levels read (the compared
    features, their helper columns, and how many records of ``counted`` share the value of each
    frequency-weighted level, counted once per record, not per pair). Returns the frequency-weighted
    comparisons and the column each counts.
    """
    helpers = {helper for c in scoring.comparisons for helper in _HELPERS.get(c.kind, ())}
    source_of = dict(helpers)
    tf_columns = {
        i: source_of.get(tf_level[1] or c.feature, tf_level[1] or c.feature)
        for i, c in enumerate(scoring.comparisons)
        if (tf_level := _TF_LEVELS.get(c.kind)) is not None
    }
    compared = dict.fromkeys(c.feature for c in scoring.comparisons)
    counts = "".join(
        f" LEFT JOIN (SELECT {quote_ident(col)} AS v, count(*) AS n FROM {counted} GROUP BY 1) AS tfc{i} "
        f"ON tfc{i}.v = f.{quote_ident(col)}"
        for i, col in tf_columns.items()
    )
    cur.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE identity_scored_feat AS
        SELECT f.rid{"".join(f", f.{quote_ident(x)}" for x in compared)}
               {"".join(f", f.{quote_ident(src)} AS {name}" for name, src in helpers)}
               {"".join(f", tfc{i}.n AS __tfc{i}" for i in tf_columns)}
        FROM {feat} AS f{counts}
        """
    )
    cur.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {gammas} AS
        SELECT p.a, p.b, {_gamma_select(scoring)}{"".join(f", l.__tfc{i} AS tfc{i}" for i in tf_columns)}
        FROM {pairs} AS p JOIN identity_scored_feat AS l ON l.rid = p.a JOIN identity_scored_feat AS r ON r.rid = p.b
        WHERE NOT p.settled
        """
    )
    return tf_columns


def _weigh(
    cur: duckdb.DuckDBPyConnection,
    scoring: Scoring,
    *,
    gammas: str,
    counted: str,
    tf_columns: dict[int, str],
    params: ScoringParams,
) -> None:
    """``identity_scores``: each pair of ``gammas`` with its weight ``w``, probability ``p``, levels,
    how many comparisons it could make, and whether an apart rule holds it apart."""
    m, u, prior = params.m, params.u, params.prior
    # The weight of each level (log2 m/u), and the frequency-weighted exact values.
    terms = []
    for i, c in enumerate(scoring.comparisons):
        cases = " ".join(f"WHEN {j} THEN {_double(math.log2(m[i][j] / u[i][j]))}" for j in range(len(m[i])))
        weight = f"CASE g.g{i} {cases} ELSE 0 END"
        if i in tf_columns:
            # A level weighed by its value's frequency: m over how often two random records share
            # this very value ("Okafor" says more than "Smith", "priya.patel@" more than "lisa@").
            # Smoothed towards the level's u as if _PSEUDO_RECORDS more records had been seen: in a
            # small input one name in five is no evidence that the name is common.
            level = _TF_LEVELS[c.kind][0]
            (with_value,) = _one(cur, f"SELECT count({quote_ident(tf_columns[i])}) FROM {counted}")
            tf = f"(g.tfc{i} + {_double(_PSEUDO_RECORDS * u[i][level])}) / {_double(with_value + _PSEUDO_RECORDS)}"
            weight = (
                f"CASE WHEN g.g{i} = {level} THEN log2({_double(m[i][level])} / greatest({tf}, "
                f"{_double(u[i][level] / 4)})) ELSE {weight} END"
            )
        terms.append(weight)
    prior_weight = math.log2(prior / (1 - prior))
    g_cols = ", ".join(f"g{i}" for i in range(len(terms)))
    cur.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE identity_scores AS
        SELECT a, b, w, 1 / (1 + pow(2, -w)) AS p, {g_cols},
               {" + ".join(f"(g{i} >= 0)::INTEGER" for i in range(len(terms)))} AS compared,
               {_apart_sql(scoring)} AS apart, {_apart_sql(scoring, settled=True)} AS settled
        FROM (SELECT g.a, g.b, {g_cols}, {_double(prior_weight)} + {" + ".join(terms)} AS w FROM {gammas} AS g)
        """
    )


def score_and_cluster(
    cur: duckdb.DuckDBPyConnection,
    scoring: Scoring,
    *,
    feat: str,
    edges: str,
    review: str,
    rule_index: int,
    max_block_size: int,
    decisions: Iterable[tuple[int, int, str]] = (),
    population: str | None = None,
    params: ScoringParams | None = None,
    keyed: bool = False,
) -> ScoringStats:
    """Score candidate pairs of ``feat`` (rid + features) and insert the accepted links into ``edges``.

    Args:
        cur: The identity run's cursor (macros created).
        scoring: The entity's declared scoring.
        feat: Features table (``rid`` and every feature the scoring reads).
        edges: Table (a, b, rule_index) receiving the links that build clusters.
        review: Table created with the pairs for review (a, b, probability, reason, levels as JSON).
        rule_index: The index the crosswalk names these links by.
        max_block_size: Blocks with more records are skipped (and counted).
        decisions: (rid, rid, 'must_link' | 'cannot_link') a person decided; honoured over scores.
        population: Features of every record when ``feat`` holds only the records to resolve
            (an incremental run): block sizes and value frequencies count the whole population.
        params: Weights to score with instead of estimating them (a full run's, reused).
        keyed: ``identity_keyed`` already holds the population with its phonetic codes
            (:func:`scored_partners` left it).

    Returns:
        Candidate pairs (per key, skipped blocks), merges, refused joins, review size, the weights.
    """
    stats = ScoringStats()
    _create_nicknames(cur)
    pairs, gammas = "identity_pairs", "identity_gammas"
    _candidates(
        cur,
        scoring,
        feat=feat,
        pairs=pairs,
        limit=max_block_size,
        stats=stats,
        early=_settled_early_sql(scoring),
        population=population,
        keyed=keyed,
    )
    counted = population or feat
    tf_columns = _gammas(cur, scoring, feat=feat, counted=counted, pairs=pairs, gammas=gammas)
    feat = "identity_scored_feat"
    if params is None:
        m, u, prior = _estimate(
            cur, scoring, feat=feat, gammas=gammas, pair_keys=f"{pairs}_keys", stats=stats
        )
    else:
        m, u, prior = params.m, params.u, params.prior
        stats.prior = prior
        stats.m = {
            f"{c.feature}:{c.kind}": [round(v, 6) for v in m[i]] for i, c in enumerate(scoring.comparisons)
        }
        stats.u = {
            f"{c.feature}:{c.kind}": [round(v, 6) for v in u[i]] for i, c in enumerate(scoring.comparisons)
        }
    stats.params = ScoringParams(m=m, u=u, prior=prior)
    _weigh(cur, scoring, gammas=gammas, counted=counted, tf_columns=tf_columns, params=stats.params)
    for band, low, high in (
        ("merge", scoring.merge_at, 2.0),
        ("review", scoring.review_at, scoring.merge_at),
        ("unsure", scoring.reject_below, scoring.review_at),
        ("reject", -1.0, scoring.reject_below),
    ):
        (n,) = _one(cur, "SELECT count(*) FROM identity_scores WHERE p >= ? AND p < ?", [low, high])
        stats.pairs_by_band[band] = int(n)
    accepted, refused = _cluster(cur, scoring, decisions, pairs=pairs)
    stats.merged_pairs = len(accepted)
    stats.refused_joins = len(refused)
    cur.register(
        "identity_accepted_input",
        pa.table(
            {"a": [a for a, _ in accepted], "b": [b for _, b in accepted]},
            schema=pa.schema([("a", pa.int64()), ("b", pa.int64())]),
        ),
    )
    cur.execute(f"INSERT INTO {edges} SELECT a, b, {int(rule_index)} FROM identity_accepted_input")
    cur.unregister("identity_accepted_input")
    cur.register(
        "identity_refused_input",
        pa.table(
            {"a": [a for a, _ in refused], "b": [b for _, b in refused]},
            schema=pa.schema([("a", pa.int64()), ("b", pa.int64())]),
        ),
    )
    labels = [[lbl for lbl, _ in _levels(c)] for c in scoring.comparisons]
    level_json = ", ".join(
        f"{quote_literal(c.feature)}: CASE WHEN s.g{i} < 0 THEN NULL ELSE "
        f"({labels[i]!r}::VARCHAR[])[s.g{i} + 1] END"
        for i, c in enumerate(scoring.comparisons)
    )
    cur.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {review} AS
        SELECT s.a, s.b, s.p AS probability,
               CASE WHEN f.a IS NOT NULL THEN {quote_literal(REFUSED)}
                    WHEN s.apart THEN 'scores as a match, but a field says two people'
                    WHEN s.p >= ? THEN 'too little compared to merge on its own'
                    ELSE 'between review_at and merge_at' END AS reason,
               to_json({{{level_json}}}) AS levels
        FROM identity_scores AS s
        LEFT JOIN identity_refused_input AS f ON f.a = s.a AND f.b = s.b
        WHERE NOT s.settled
          AND ((s.p >= ? AND s.p < ?) OR f.a IS NOT NULL OR (s.p >= ? AND (s.compared < ? OR s.apart)))
        """,
        [scoring.merge_at, scoring.review_at, scoring.merge_at, scoring.merge_at, scoring.min_compared],
    )
    cur.unregister("identity_refused_input")
    stats.review_pairs = int(_one(cur, f"SELECT count(*) FROM {review}")[0])
    for table in (
        pairs,
        f"{pairs}_keys",
        gammas,
        "identity_scores",
        feat,
        "identity_nicknames",
    ):
        cur.execute(f"DROP TABLE IF EXISTS {table}")
    return stats


def _cluster(
    cur: duckdb.DuckDBPyConnection,
    scoring: Scoring,
    decisions: Iterable[tuple[int, int, str]],
    *,
    pairs: str,
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Join pairs strongest first unless the two clusters hold a pair of different people.

    ``pairs``: the candidate pairs; one settled apart before scoring (:func:`_settled_early_sql`)
    inside a component holds it apart too.

    Returns the accepted links (a spanning forest of the clusters) and the refused ones.
    """
    must = [(a, b) for a, b, d in decisions if d == "must_link"]
    cannot: dict[int, set[int]] = {}
    for a, b, d in decisions:
        if d == "cannot_link":
            cannot.setdefault(a, set()).add(b)
            cannot.setdefault(b, set()).add(a)
    strong = cur.execute(
        "SELECT a, b FROM identity_scores WHERE p >= ? AND compared >= ? AND NOT apart ORDER BY w DESC, a, b",
        [scoring.merge_at, scoring.min_compared],
    ).fetchall()
    # Components of the strong and must links, joined in order: the links that joined two parts
    # are a spanning forest. Only pairs inside one component can ever stand between two joins.
    component: dict[int, int] = {}

    def component_of(x: int) -> int:
        while component[x] != x:
            component[x] = component[component[x]]
            x = component[x]
        return x

    forest: list[tuple[int, int]] = []
    for a, b in [*must, *strong]:
        component.setdefault(a, a)
        component.setdefault(b, b)
        ra, rb = component_of(a), component_of(b)
        if ra != rb:
            component[max(ra, rb)] = min(ra, rb)
            forest.append((a, b))
    roots = {x: component_of(x) for x in component}
    cur.register(
        "identity_component_input",
        pa.table(
            {"rid": list(roots), "comp": list(roots.values())},
            schema=pa.schema([("rid", pa.int64()), ("comp", pa.int64())]),
        ),
    )
    for a, b in cur.execute(
        "SELECT s.a, s.b FROM identity_scores AS s "
        "JOIN identity_component_input AS ca ON ca.rid = s.a JOIN identity_component_input AS cb ON cb.rid = s.b "
        "WHERE (s.p < ? OR s.apart) AND ca.comp = cb.comp"
        f" UNION ALL SELECT p.a, p.b FROM {pairs} AS p "
        "JOIN identity_component_input AS ca ON ca.rid = p.a "
        "JOIN identity_component_input AS cb ON cb.rid = p.b AND cb.comp = ca.comp "
        "WHERE p.settled",
        [scoring.reject_below],
    ).fetchall():
        cannot.setdefault(a, set()).add(b)
        cannot.setdefault(b, set()).add(a)
    cur.unregister("identity_component_input")
    # A component that holds no pair of different people and fits max_cluster_size joins whole,
    # whatever the order: its spanning forest is accepted as it is. Only the others (most nights a
    # few hundred) are joined pair by pair, strongest first, under the guard.
    sizes = collections.Counter(roots.values())
    guarded = {root for root, n in sizes.items() if n > scoring.max_cluster_size}
    guarded.update(
        roots[x]
        for x, others in cannot.items()
        if x in roots and any(roots.get(y) == roots[x] for y in others)
    )
    accepted = [(a, b) for a, b in forest if roots[a] not in guarded]
    refused: list[tuple[int, int]] = []
    parent: dict[int, int] = {}
    members: dict[int, list[int]] = {}

    def find(x: int) -> int:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:
            parent[x], x = root, parent[x]
        return root

    def apart(ra: int, rb: int) -> bool:
        small, other = (ra, rb) if len(members.get(ra, [ra])) <= len(members.get(rb, [rb])) else (rb, ra)
        return any(find(n) == other for x in members.get(small, [small]) for n in cannot.get(x, ()))

    forced = {(min(a, b), max(a, b)) for a, b in must}
    for a, b in [*sorted(forced), *((a, b) for a, b in strong if (a, b) not in forced)]:
        if roots[a] not in guarded:
            continue
        ra, rb = find(a), find(b)
        if ra == rb:
            continue
        too_big = len(members.get(ra, [ra])) + len(members.get(rb, [rb])) > scoring.max_cluster_size
        if (a, b) not in forced and (too_big or apart(ra, rb)):
            refused.append((a, b))
            continue
        big, small = (ra, rb) if len(members.get(ra, [ra])) >= len(members.get(rb, [rb])) else (rb, ra)
        parent[small] = big
        members[big] = members.pop(big, [big]) + members.pop(small, [small])
        accepted.append((a, b))
    return accepted, refused
