"""Identity resolution: deduplicate accounts and contacts into golden records, all in DuckDB.

Steps per entity, each a SQL statement over temporary tables (nothing is pulled into Python):

1. load the canonical staging Parquet and drop repeated ``record_id`` s (the newest row wins);
2. compute the *features* the rules read (cleaned names, normalised company name, e-mail parts ...);
3. per declared rule, join records sharing the blocking key and keep the pairs that pass the
   conditions. A rule without conditions links each record to one record of its block instead of
   building all pairs: the clusters are the same and the cost stays linear;
4. cluster: connected components by min-label propagation with pointer jumping, iterated in SQL
   until no label changes;
5. survivorship per field by field ownership (``crm_pipelines/ownership.yaml``: the owner, then the
   fallbacks, then the most recently updated non-null value; or the newest edit), then the
   smallest record_id) and one survivor per cluster, then the golden records and the crosswalk.
   Records that matched nothing (usually most of them) skip the aggregation and pass straight through.
   Golden ids persist from run to run (``golden_ids.py``): a cluster keeps the id its members carried,
   and merges and splits are recorded.

Nothing depends on the order rows arrive in: a new golden id comes from the smallest record_id of a
cluster, and every choice between records ends in a record_id comparison. Accounts are resolved
first; contacts read the account crosswalk (``golden_account`` feature, ``golden_account_id``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from crm_pipelines import canonical
from crm_pipelines.canonical import SURVIVOR_FIELDS
from crm_pipelines.identity.golden_ids import (
    EVENTS,
    GoldenIdStats,
    PreviousIds,
    assign_golden_ids,
    register_previous,
)
from crm_pipelines.identity.incremental import (
    PreviousRun,
    choose_scope,
    declarations_fingerprint,
    fingerprint_sql,
    write_state,
)
from crm_pipelines.identity.outputs import IdentityFiles
from crm_pipelines.identity.rules import (
    FEATURES,
    Entity,
    EntityRules,
    KeyPart,
    MatchRule,
    MatchRules,
)
from crm_pipelines.identity.scoring import (
    SCORED_RULE,
    ScoringParams,
    ScoringStats,
    features_read,
    score_and_cluster,
)
from crm_pipelines.lake import LakePath, local_copy, make_dirs, publish, scan_parquet
from crm_pipelines.ownership import EntityOwnership, Ownership, load_ownership
from crm_pipelines.sql import quote_ident, quote_literal

GOLDEN_ACCOUNT_FILE = "golden_account.parquet"
GOLDEN_CONTACT_FILE = "golden_contact.parquet"
XREF_FILE = "xref_identity.parquet"
REVIEW_FILE = "match_review.parquet"
GOLDEN_ID_HISTORY_FILE = "golden_id_history.parquet"
FIELD_SOURCES_FILE = "golden_field_sources.parquet"

_ID_PREFIX: dict[Entity, str] = {"account": "A-", "contact": "C-"}
_SCHEMAS: dict[Entity, pa.Schema] = {"account": canonical.ACCOUNT, "contact": canonical.CONTACT}
_LINEAGE = ("record_id", "source", "source_id")
# Survivorship key: source rank * 2**32 + recency position within the cluster (clusters are far smaller).
_RANK_SCALE = 1 << 32
# Pointer jumping halves distances each round, so even long chains settle in a few dozen rounds.
_MAX_CC_ROUNDS = 200
# Features computed from other features (second layer of the feature query), with what they read.
_DERIVED_FEATURES: dict[str, tuple[str, ...]] = {
    "email_local": ("email",),
    "email_domain": ("email",),
    "web_domain": ("domain", "email"),
    "full_name": ("first_name", "last_name"),
    "sorted_name": ("first_name", "last_name"),
    "first_initial": ("first_name",),
    "email_mailbox": ("email",),
}

# Scalar macros shared by the feature SQL; created on the private cursor of a run, so they vanish
# with it and never clash with the caller's catalog.
_MACROS = (
    # Lower case, accents stripped, every run of non-letters/digits folded to one space; '' -> null.
    r"""
    CREATE OR REPLACE TEMP MACRO identity_clean(x) AS
        nullif(trim(regexp_replace(lower(strip_accents(x)), '[^\pL\pN]+', ' ', 'g')), '')
    """,
    # As identity_clean, but dots and apostrophes vanish first so that "G.m.b.H." folds to "gmbh"
    # and "McDonald's" to "mcdonalds".
    r"""
    CREATE OR REPLACE TEMP MACRO identity_fold(x) AS
        trim(regexp_replace(
            regexp_replace(lower(strip_accents(x)), '[.''`´’]', '', 'g'), '[^\pL\pN]+', ' ', 'g'))
    """,
    r"""
    CREATE OR REPLACE TEMP MACRO identity_company(x, suffix_re, prefix_re) AS
        nullif(trim(regexp_replace(regexp_replace(identity_fold(x), suffix_re, ''), prefix_re, '')), '')
    """,
    r"""
    CREATE OR REPLACE TEMP MACRO identity_email(x) AS
        CASE WHEN contains(lower(trim(x)), '@') THEN lower(trim(x)) END
    """,
    r"""
    CREATE OR REPLACE TEMP MACRO identity_domain(x, free_mail) AS
        CASE WHEN NOT list_contains(free_mail, x) THEN nullif(x, '') END
    """,
    # E.164 keeps '+' and digits; fewer than 6 digits is a placeholder ("+1", "0000"), not a number.
    r"""
    CREATE OR REPLACE TEMP MACRO identity_phone(x) AS
        CASE WHEN length(regexp_replace(x, '[^0-9]', '', 'g')) >= 6
             THEN regexp_replace(x, '[^0-9+]', '', 'g') END
    """,
    # American Soundex (R163 for Robert and Rupert): the first letter, then the codes of the other
    # consonants with H and W dropped (they do not separate equal codes), runs of one code collapsed,
    # vowels removed, padded to three digits.
    # Transliteration before folding: Müller and Mueller, Strauß and Strauss fold alike.
    r"""
    CREATE OR REPLACE TEMP MACRO identity_translit(x) AS
        identity_clean(replace(replace(replace(replace(replace(replace(replace(replace(lower(x),
            'ä', 'ae'), 'ö', 'oe'), 'ü', 'ue'), 'ß', 'ss'), 'æ', 'ae'), 'ø', 'oe'), 'å', 'aa'), 'œ', 'oe'))
    """,
    r"""
    CREATE OR REPLACE TEMP MACRO identity_digits(x) AS
        CASE WHEN length(regexp_replace(x, '[^0-9]', '', 'g')) >= 6 THEN regexp_replace(x, '[^0-9]', '', 'g') END
    """,
    r"""
    CREATE OR REPLACE TEMP MACRO identity_letters(x) AS
        nullif(upper(regexp_replace(strip_accents(x), '[^A-Za-z]', '', 'g')), '')
    """,
    r"""
    CREATE OR REPLACE TEMP MACRO identity_soundex_codes(s) AS
        regexp_replace(
            translate(s[1] || regexp_replace(s[2:], '[HW]', '', 'g'),
                      'ABCDEFGHIJKLMNOPQRSTUVWXYZ', '01230120022455012623010202'),
            '(1)1*|(2)2*|(3)3*|(4)4*|(5)5*|(6)6*', '\1\2\3\4\5\6', 'g')
    """,
    r"""
    CREATE OR REPLACE TEMP MACRO identity_soundex_of(s) AS
        s[1] || rpad(left(replace(identity_soundex_codes(s)[2:], '0', ''), 3), 3, '0')
    """,
    r"""
    CREATE OR REPLACE TEMP MACRO identity_soundex(x) AS identity_soundex_of(identity_letters(x))
    """,
)


# --------------------------------------------------------------------------------------------------
# Statistics


@dataclass(frozen=True)
class SourceStats:
    """Records of one source and how many of them were folded into another record's golden record."""

    records: int
    merged: int


@dataclass(frozen=True)
class RuleStats:
    """Matched record pairs of one rule (before clustering) and blocks skipped as too large."""

    pairs: int
    skipped_blocks: int


@dataclass(frozen=True)
class EntityStats:
    """Outcome of resolving one entity."""

    records: int
    golden: int
    merged: int
    largest_cluster: int
    by_source: dict[str, SourceStats]
    rules: dict[str, RuleStats]
    dropped_without_id: int
    dropped_duplicate_ids: int
    cluster_rounds: int
    ids: GoldenIdStats
    scoring: ScoringStats | None = None
    #: 'incremental' (only ``records_resolved`` records resolved, the other clusters carried over) or
    #: 'full'; ``mode_reason`` says why a run was full.
    mode: str = "full"
    mode_reason: str = ""
    records_changed: int = 0
    records_deleted: int = 0
    records_resolved: int = 0
    #: The night whose full run estimated the weights scored with, when they were reused.
    weights_from: str | None = None

    @property
    def pairs_by_rule(self) -> dict[str, int]:
        return {name: rule.pairs for name, rule in self.rules.items()}


@dataclass(frozen=True)
class ResolutionStats:
    """Counts of one :func:`resolve_entities` run."""

    account: EntityStats
    contact: EntityStats
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """Plain nested dict (for logs and Dagster metadata)."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------------
# SQL helpers


class _Params:
    """Bound values of one statement; ``bind`` returns the ``$name`` to put in the SQL text."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}

    def bind(self, value: object) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f"${name}"

    def bind_once(self, name: str, value: object) -> str:
        """Bind a value shared by several expressions under a fixed name."""
        self.values.setdefault(name, value)
        return f"${name}"


def _run(
    cur: duckdb.DuckDBPyConnection, sql: str, params: _Params | None = None
) -> duckdb.DuckDBPyConnection:
    return cur.execute(sql, params.values if params and params.values else None)


def _one(cur: duckdb.DuckDBPyConnection, sql: str, params: _Params | None = None) -> tuple[Any, ...]:
    row = _run(cur, sql, params).fetchone()
    if row is None:
        raise RuntimeError(f"query returned no row: {sql}")
    return tuple(row)


def _sql_type(dtype: pa.DataType) -> str:
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "VARCHAR"
    if pa.types.is_decimal(dtype):
        return f"DECIMAL({dtype.precision}, {dtype.scale})"
    if pa.types.is_timestamp(dtype):
        return "TIMESTAMPTZ" if dtype.tz else "TIMESTAMP"
    raise TypeError(f"no DuckDB type for {dtype}")


class _Tables:
    """Names of one entity's temporary tables: ``t.src`` is the quoted name, ``t.bare("src")`` the plain one."""

    def __init__(self, entity: Entity) -> None:
        self.entity = entity

    def bare(self, purpose: str) -> str:
        return f"identity_{self.entity}_{purpose}"

    def __getattr__(self, purpose: str) -> str:
        if purpose.startswith("_"):
            raise AttributeError(purpose)
        return quote_ident(self.bare(purpose))


def _suffix_regex(rules: MatchRules) -> str:
    # Legal words are letters, digits and single spaces (validated), so they need no escaping.
    if not rules.legal_suffixes:
        return "$^"
    return "( (" + "|".join(rules.legal_suffixes) + "))+$"


def _prefix_regex(rules: MatchRules) -> str:
    if not rules.legal_prefixes:
        return "$^"
    return "^((" + "|".join(rules.legal_prefixes) + ") )+"


def _honorific_regex(rules: MatchRules) -> str:
    # Honorifics are validated like legal words (letters, digits, single spaces).
    if not rules.honorifics:
        return "$^"
    return "^((" + "|".join(rules.honorifics) + ") )+"


def _base_feature_sql(entity: Entity, feature: str, rules: MatchRules, params: _Params) -> str:
    """SQL of a feature read from the source row ``s`` (contacts: account crosswalk ``ax``)."""

    def col(name: str) -> str:
        return f"s.{quote_ident(name)}"

    def account() -> str:
        return f"nullif(trim({col('account_record_id')}), '')"

    sql: dict[str, Callable[[], str]] = {
        "email": lambda: f"identity_email({col('email')})",
        "phone": lambda: f"identity_phone({col('phone')})",
        "country": lambda: f"nullif(upper(trim({col('country')})), '')",
    }
    if entity == "account":
        sql |= {
            "name": lambda: f"identity_clean({col('name')})",
            "normalized_name": lambda: (
                f"identity_company({col('name')}, {params.bind_once('suffix_re', _suffix_regex(rules))}, "
                f"{params.bind_once('prefix_re', _prefix_regex(rules))})"
            ),
            "domain": lambda: (
                f"identity_domain(regexp_replace(lower(trim({col('domain')})), '^www\\.', ''), "
                f"{params.bind_once('free_mail', rules.free_mail_domains)}::VARCHAR[])"
            ),
            "street": lambda: f"identity_clean({col('street')})",
            "city": lambda: f"identity_clean({col('city')})",
            "postal_code": lambda: (
                f"nullif(upper(regexp_replace({col('postal_code')}, '[\\s-]+', '', 'g')), '')"
            ),
            "industry": lambda: f"identity_clean({col('industry')})",
            "vat_number": lambda: (
                f"nullif(upper(regexp_replace({col('vat_number')}, '[^A-Za-z0-9]', '', 'g')), '')"
            ),
        }
    else:
        sql |= {
            # "Dr. Anna" is Anna; "Sir" alone is no given name.
            "first_name": lambda: (
                f"nullif(regexp_replace(identity_fold({col('first_name')}), "
                f"{params.bind_once('honorific_re', _honorific_regex(rules))}, ''), '')"
            ),
            "last_name": lambda: f"identity_clean({col('last_name')})",
            "title": lambda: f"identity_clean({col('title')})",
            "account": account,
            "golden_account": lambda: f"coalesce(ax.golden_id, {account()})",
            "last_name_folded": lambda: f"identity_translit({col('last_name')})",
            # A phone staging could not make E.164 keeps its digits (``phone_digits``): they count too.
            "phone_digits": lambda: (
                f"identity_digits(coalesce({col('phone')}, {col('phone_digits')}))"
                if "phone_digits" in _SCHEMAS[entity].names
                else f"identity_digits({col('phone')})"
            ),
            "birth_date": lambda: f"nullif(trim(CAST({col('birth_date')} AS VARCHAR)), '')",
            "government_id": lambda: (
                f"nullif(upper(regexp_replace({col('government_id')}, '[^A-Za-z0-9]', '', 'g')), '')"
            ),
            "postal_code": lambda: (
                f"nullif(upper(regexp_replace({col('postal_code')}, '[\\s-]+', '', 'g')), '')"
            ),
            "city": lambda: f"identity_clean({col('city')})",
            "street": lambda: f"identity_clean({col('street')})",
        }
    if feature not in sql:
        raise KeyError(f"{entity} feature {feature!r} has no SQL")
    return sql[feature]()


def _derived_feature_sql(feature: str, rules: MatchRules, params: _Params) -> str:
    """SQL of a feature computed from the base features (see ``_DERIVED_FEATURES``)."""

    def email_domain() -> str:
        free_mail = params.bind_once("free_mail", rules.free_mail_domains)
        return f"identity_domain(split_part(\"email\", '@', 2), {free_mail}::VARCHAR[])"

    sql: dict[str, Callable[[], str]] = {
        "email_local": lambda: "nullif(split_part(\"email\", '@', 1), '')",
        "email_mailbox": lambda: "nullif(regexp_replace(split_part(\"email\", '@', 1), '\\+.*$', ''), '')",
        "first_initial": lambda: "nullif(left(\"first_name\", 1), '')",
        "email_domain": email_domain,
        "web_domain": lambda: f'coalesce("domain", {email_domain()})',
        "full_name": lambda: '("first_name" || \' \' || "last_name")',
        # The two parts in alphabetical order, so "Imogen Braithwaite" and "Braithwaite Imogen" compare equal.
        "sorted_name": lambda: (
            'CASE WHEN "first_name" <= "last_name" THEN "first_name" || \' \' || "last_name" '
            'ELSE "last_name" || \' \' || "first_name" END'
        ),
    }
    return sql[feature]()


def _part_sql(part: KeyPart, params: _Params) -> str:
    """SQL of a (transformed) feature column of the features table."""
    column = quote_ident(part.feature)
    if part.transform == "soundex":
        return f"identity_soundex({column})"
    if part.transform == "prefix":
        return f"nullif(left({column}, {params.bind(part.length)}), '')"
    return column


def _rank_sql(priority: Sequence[str], params: _Params) -> str:
    """Rank of ``s.source`` in a priority list (unlisted sources after listed ones)."""
    if not priority:
        return "0"
    listed = params.bind(list(priority))
    return f"coalesce(list_position({listed}::VARCHAR[], s.source), {params.bind(len(priority) + 1)})"


def _order_sql(priority: Sequence[str], params: _Params) -> str:
    """Survivorship order of a linked record ``s``/``k``: best source, then newest, then smallest record_id.

    ``k.recency`` already orders a cluster's records by (newest, smallest record_id), so one BIGINT
    carries the whole order; arg_min over it is about twice as fast as over a (rank, time, id) struct.
    """
    return (
        f"{_rank_sql(priority, params)}::BIGINT * {params.bind_once('rank_scale', _RANK_SCALE)} + k.recency"
    )


# --------------------------------------------------------------------------------------------------
# Steps


def _create_macros(cur: duckdb.DuckDBPyConnection) -> None:
    # One round trip for all of them: small runs (tests, daily deltas) are dominated by statement count.
    _run(cur, ";\n".join(sql.strip() for sql in _MACROS))


def _load_source(cur: duckdb.DuckDBPyConnection, *, entity: Entity, glob: str, t: _Tables) -> tuple[int, int]:
    """Load one entity's staging Parquet into ``t.src``; returns (rows without id, repeated ids dropped)."""
    schema = _SCHEMAS[entity]
    params = _Params()
    pattern = params.bind(glob)
    (files,) = _one(cur, f"SELECT count(*) FROM glob({pattern})", params)
    present: set[str] = set()
    if files:
        described = _run(cur, f"DESCRIBE SELECT * FROM read_parquet({pattern}, union_by_name = true)", params)
        present = {row[0] for row in described.fetchall()}
        missing = [name for name in _LINEAGE if name not in present]
        if missing:
            raise ValueError(f"{entity} input {glob!r} lacks required columns {missing}")
        # The file position is a free unique row key; nothing downstream depends on its order.
        source = f"read_parquet({pattern}, union_by_name = true)"
        rid = "(file_index::BIGINT << 40) | file_row_number"
    else:
        # No staging files yet (no source delivers this entity): resolve an empty input, so the
        # outputs still exist with their schema.
        params, source, rid = _Params(), "(SELECT 1 WHERE false)", "NULL"
    columns = "".join(
        f",\n            CAST({quote_ident(f.name) if f.name in present else 'NULL'} AS {_sql_type(f.type)}) AS {quote_ident(f.name)}"
        for f in schema
    )
    _run(
        cur,
        f"""
        CREATE OR REPLACE TEMP TABLE {t.src} AS
        SELECT
            CAST({rid} AS BIGINT) AS rid{columns}
        FROM {source}
        """,
        params,
    )
    without_id, rows, distinct_ids = _one(
        cur,
        f"SELECT count(*) FILTER (WHERE record_id IS NULL), count(*), count(DISTINCT record_id) FROM {t.src}",
    )
    if without_id:
        _run(cur, f"DELETE FROM {t.src} WHERE record_id IS NULL")
    repeated = rows - without_id - distinct_ids
    if repeated:
        # The same record delivered twice (overlapping extracts): keep the newest row; the other
        # columns only break ties between otherwise identical timestamps.
        tie_break = ", ".join(
            quote_ident(f.name) for f in schema if f.name not in ("record_id", "updated_at")
        )
        _run(
            cur,
            f"""
            DELETE FROM {t.src}
            WHERE rid IN (
                SELECT rid FROM {t.src}
                QUALIFY row_number() OVER (
                    PARTITION BY record_id ORDER BY updated_at DESC NULLS LAST, {tie_break}
                ) > 1
            )
            """,
        )
    return int(without_id), int(repeated)


def _build_features(
    cur: duckdb.DuckDBPyConnection, *, entity: Entity, rules: MatchRules, t: _Tables, account_xref: str | None
) -> None:
    """Materialise the features the entity's rules read, one row per record (``t.feat``).

    Materialised once rather than computed inline by each rule: DuckDB would evaluate the cleaning
    expressions again for the null filter and the block-size window of every rule.
    """
    entity_rules = rules.for_entity(entity)
    if entity_rules.scoring is not None:
        used = sorted(features_read(entity_rules.scoring))
    else:
        used = sorted({part.feature for rule in entity_rules.rules for part in rule.parts()})
    base = sorted({dep for name in used for dep in _DERIVED_FEATURES.get(name, (name,))})
    params = _Params()
    inner = "".join(
        f",\n                {_base_feature_sql(entity, name, rules, params)} AS {quote_ident(name)}"
        for name in base
    )
    outer = "".join(
        f",\n            {_derived_feature_sql(name, rules, params) if name in _DERIVED_FEATURES else quote_ident(name)}"
        f" AS {quote_ident(name)}"
        for name in used
    )
    join = ""
    if "golden_account" in base:
        if account_xref is None:
            raise ValueError("feature golden_account needs the account crosswalk")
        join = f"LEFT JOIN {account_xref} AS ax ON ax.record_id = s.account_record_id"
    _run(
        cur,
        f"""
        CREATE OR REPLACE TEMP TABLE {t.feat} AS
        SELECT
            rid{outer}
        FROM (
            SELECT
                s.rid{inner}
            FROM {t.src} AS s
            {join}
        )
        """,
        params,
    )


def _apply_rule(
    cur: duckdb.DuckDBPyConnection, *, index: int, rule: MatchRule, limit: int, t: _Tables
) -> tuple[int, int]:
    """Insert the rule's links into ``t.edges``; returns (matched pairs, skipped blocks)."""
    params = _Params()
    keys = [f"k{i}" for i in range(len(rule.block))]
    partition = ", ".join(keys)
    key_cols = ", ".join(
        f"{_part_sql(part, params)} AS {k}" for part, k in zip(rule.block, keys, strict=True)
    )
    cond_cols = "".join(f", {_part_sql(c.part, params)} AS c{i}" for i, c in enumerate(rule.conditions))
    # Never link on a null: a record takes part only when every key part has a value.
    _run(
        cur,
        f"""
        CREATE OR REPLACE TEMP TABLE {t.block} AS
        SELECT *, count(*) OVER (PARTITION BY {partition}) AS n
        FROM (SELECT rid, {key_cols}{cond_cols} FROM {t.feat})
        WHERE {" AND ".join(f"{k} IS NOT NULL" for k in keys)}
        """,
        params,
    )
    params = _Params()
    limit_sql = params.bind(limit)
    skipped, block_pairs = _one(
        cur,
        f"""
        SELECT
            count(*) FILTER (WHERE n > {limit_sql}),
            coalesce(sum(n * (n - 1) // 2) FILTER (WHERE n BETWEEN 2 AND {limit_sql}), 0)
        FROM (SELECT any_value(n) AS n FROM {t.block} GROUP BY {partition})
        """,
        params,
    )

    params = _Params()
    limit_sql, rule_index = params.bind(limit), params.bind(index)
    if not rule.conditions:
        # Equality alone: a star to the block's smallest rid links the block as all pairs would.
        _run(
            cur,
            f"""
            INSERT INTO {t.edges}
            SELECT rid, hub, {rule_index}
            FROM (
                SELECT rid, min(rid) OVER (PARTITION BY {partition}) AS hub
                FROM {t.block}
                WHERE n BETWEEN 2 AND {limit_sql}
            )
            WHERE rid <> hub
            """,
            params,
        )
        return int(block_pairs), int(skipped)

    tests = []
    for i, cond in enumerate(rule.conditions):
        if cond.equal is not None:
            tests.append(f"l.c{i} = r.c{i}")
        elif cond.compatible is not None:
            tests.append(f"(l.c{i} IS NULL OR r.c{i} IS NULL OR l.c{i} = r.c{i})")
        else:
            threshold = params.bind(cond.threshold)
            # With a cut-off DuckDB returns 0 below it and can stop early on hopeless pairs.
            tests.append(f"{cond.similarity_method}_similarity(l.c{i}, r.c{i}, {threshold}) >= {threshold}")
    (inserted,) = _one(
        cur,
        f"""
        INSERT INTO {t.edges}
        SELECT l.rid, r.rid, {rule_index}
        FROM (SELECT * FROM {t.block} WHERE n BETWEEN 2 AND {limit_sql}) AS l
        JOIN (SELECT * FROM {t.block} WHERE n BETWEEN 2 AND {limit_sql}) AS r
          ON {" AND ".join(f"l.{k} = r.{k}" for k in keys)} AND l.rid < r.rid
        WHERE {" AND ".join(tests)}
        """,
        params,
    )
    return int(inserted), int(skipped)


def _connected_components(cur: duckdb.DuckDBPyConnection, *, t: _Tables) -> int:
    """Label every linked record with the smallest rid of its component; returns the rounds needed.

    Leaves ``t.linked`` (rid, cluster, rule_index, recency): only records with at least one link, each
    with the first rule (in declared order) that linked it.
    """
    _run(
        cur,
        f"""
        CREATE OR REPLACE TEMP TABLE {t.adj} AS
        SELECT a, b FROM {t.edges} UNION ALL SELECT b, a FROM {t.edges}
        """,
    )
    _run(
        cur,
        f"CREATE OR REPLACE TEMP TABLE {t.labels} AS SELECT a AS node, least(a, min(b)) AS c FROM {t.adj} GROUP BY a",
    )
    rounds = 0
    while True:
        rounds += 1
        if rounds > _MAX_CC_ROUNDS:
            raise RuntimeError(f"clustering did not settle in {_MAX_CC_ROUNDS} rounds")
        # One round: take the smallest label among the neighbours, then jump to the label's label.
        _run(
            cur,
            f"""
            CREATE OR REPLACE TEMP TABLE {t.labels_next} AS
            WITH hop AS (
                SELECT adj.a AS node, min(l.c) AS c
                FROM {t.adj} AS adj JOIN {t.labels} AS l ON l.node = adj.b
                GROUP BY adj.a
            ),
            merged AS (
                SELECT l.node, least(l.c, h.c) AS c
                FROM {t.labels} AS l JOIN hop AS h USING (node)
            )
            SELECT m.node, least(m.c, j.c) AS c
            FROM merged AS m JOIN merged AS j ON j.node = m.c
            """,
        )
        (changed,) = _one(
            cur,
            f"""
            SELECT count(*)
            FROM {t.labels_next} AS n JOIN {t.labels} AS o USING (node)
            WHERE n.c <> o.c
            """,
        )
        _run(cur, f"DROP TABLE {t.labels}")
        _run(cur, f"ALTER TABLE {t.labels_next} RENAME TO {quote_ident(t.bare('labels'))}")
        if not changed:
            break
    # recency: position in the cluster by (newest first, no timestamp last, smallest record_id), the
    # tie-break of every survivorship choice.
    _run(
        cur,
        f"""
        CREATE OR REPLACE TEMP TABLE {t.linked} AS
        SELECT
            l.node AS rid,
            l.c AS cluster,
            r.rule_index,
            row_number() OVER (
                PARTITION BY l.c ORDER BY s.updated_at DESC NULLS LAST, s.record_id
            ) AS recency
        FROM {t.labels} AS l
        JOIN (
            SELECT node, min(rule_index) AS rule_index
            FROM (SELECT a AS node, rule_index FROM {t.edges} UNION ALL SELECT b, rule_index FROM {t.edges})
            GROUP BY node
        ) AS r USING (node)
        JOIN {t.src} AS s ON s.rid = l.node
        """,
    )
    for table in (t.adj, t.labels):
        _run(cur, f"DROP TABLE {table}")
    return rounds


def _present_sql(entity: Entity, name: str, column: str) -> str:
    """Condition under which a field counts as having a value (blank strings do not)."""
    if _SCHEMAS[entity].field(name).type == pa.string():
        return f"{column} IS NOT NULL AND trim({column}) <> ''"
    return f"{column} IS NOT NULL"


def _survivor_sql(
    entity: Entity,
    name: str,
    ownership: EntityOwnership,
    params: _Params,
    echoes: bool,
    taken: str | None = None,
) -> str:
    """The value a golden record keeps for ``name`` (field ownership, ``crm_pipelines/ownership.yaml``).

    ``owner_wins``: the first listed system with a value, newest record first. ``newest_wins``: the
    newest edit, the owner's counting as newer within the clock skew. A value that is only what a sync
    last wrote into that record (an echo, ``t.pushed``) is no edit: it never outweighs one, and is kept
    only when there is nothing else (the owner's first).

    ``taken`` is what to take from the winning record: its value of the field by default,
    ``s.record_id`` to name the record that supplies it (the audit trail of a golden field).
    """
    column = f"s.{quote_ident(name)}"
    taken = taken or column
    present = _present_sql(entity, name, column)
    newest_wins = ownership.policy(name) == "newest_wins"
    owner_first = [ownership.owner(name) or ""] if newest_wins else ownership.priority(name)
    ordered = f"arg_min({taken}, {_order_sql(owner_first, params)}) FILTER (WHERE {present})"
    if not newest_wins:
        return ordered
    owner = params.bind(ownership.owner(name) or "")
    skew = params.bind(ownership.clock_skew_seconds)
    edited = f"{present}"
    if echoes:
        edited += (
            f" AND NOT EXISTS (SELECT 1 FROM {_Tables(entity).pushed} AS p WHERE p.record_id = s.record_id "
            f"AND p.field = {params.bind(name)} AND p.value = CAST({column} AS VARCHAR))"
        )
    newest = (
        f"arg_min({taken}, {{'t': -(coalesce(epoch(s.updated_at), 0) + CASE WHEN s.source = {owner} "
        f"THEN {skew} ELSE 0 END), 'r': k.recency}}) FILTER (WHERE {edited})"
    )
    return f"coalesce({newest}, {ordered})"


def _build_golden(
    cur: duckdb.DuckDBPyConnection,
    *,
    entity: Entity,
    ownership: EntityOwnership,
    t: _Tables,
    echoes: bool,
) -> None:
    """Survivorship over every cluster of two or more records (``t.golden``)."""
    params = _Params()
    fields = "".join(
        f",\n            {_survivor_sql(entity, name, ownership, params, echoes)} AS {quote_ident(name)}"
        for name in SURVIVOR_FIELDS[entity]
    )
    supplied_by = ", ".join(
        f"{quote_literal(name)}: {_survivor_sql(entity, name, ownership, params, echoes, taken='s.record_id')}"
        for name in SURVIVOR_FIELDS[entity]
    )
    _run(
        cur,
        f"""
        CREATE OR REPLACE TEMP TABLE {t.golden} AS
        SELECT
            k.cluster,
            any_value(i.golden_id) AS golden_id,
            arg_min(s.rid, {_order_sql(ownership.default, params)}) AS survivor_rid{fields},
            max(s.updated_at) AS updated_at,
            list_sort(list_distinct(list(s.source))) AS source_list,
            count(*) AS record_count,
            {{{supplied_by}}} AS supplied_by
        FROM {t.src} AS s JOIN {t.linked} AS k USING (rid) JOIN {t.ids} AS i USING (cluster)
        GROUP BY k.cluster
        """,
        params,
    )


def _build_xref(
    cur: duckdb.DuckDBPyConnection, *, entity: Entity, entity_rules: EntityRules, t: _Tables
) -> None:
    """Crosswalk rows of every record of the entity (``t.xref``)."""
    params = _Params()
    names = params.bind([*(rule.name for rule in entity_rules.rules), SCORED_RULE])
    entity_sql = params.bind(entity)
    _run(
        cur,
        f"""
        CREATE OR REPLACE TEMP TABLE {t.xref} AS
        SELECT
            g.golden_id,
            {entity_sql} AS entity,
            s.source,
            s.source_id,
            s.record_id,
            s.rid = g.survivor_rid AS is_survivor,
            CASE
                WHEN s.rid = g.survivor_rid THEN 'self'
                ELSE list_extract({names}::VARCHAR[], k.rule_index + 1)
            END AS match_rule
        FROM {t.src} AS s
        JOIN {t.linked} AS k USING (rid)
        JOIN {t.golden} AS g USING (cluster)
        UNION ALL
        SELECT
            i.golden_id,
            {entity_sql},
            s.source,
            s.source_id,
            s.record_id,
            true,
            'self'
        FROM {t.src} AS s
        ANTI JOIN {t.linked} AS k USING (rid)
        JOIN {t.ids} AS i ON i.cluster = s.rid
        """,
        params,
    )


def _build_contact_accounts(cur: duckdb.DuckDBPyConnection, *, t: _Tables, account_xref: str) -> None:
    """Golden account of each multi-record golden contact: the most common among its members, ties by smallest id."""
    _run(
        cur,
        f"""
        CREATE OR REPLACE TEMP TABLE {t.golden_account} AS
        WITH votes AS (
            SELECT k.cluster, ax.golden_id AS golden_account_id, count(*) AS n
            FROM {t.src} AS s
            JOIN {t.linked} AS k USING (rid)
            JOIN {account_xref} AS ax ON ax.record_id = s.account_record_id
            GROUP BY ALL
        )
        SELECT cluster, golden_account_id
        FROM votes
        QUALIFY row_number() OVER (PARTITION BY cluster ORDER BY n DESC, golden_account_id) = 1
        """,
    )


def _golden_query(entity: Entity, t: _Tables, account_xref: str | None) -> str:
    """The golden records of an entity: clusters from ``t.golden`` plus every unmatched record as is."""
    names = SURVIVOR_FIELDS[entity]
    fields = ", ".join(quote_ident(name) for name in names)
    single_fields = ", ".join(
        f"CASE WHEN {_present_sql(entity, name, f's.{quote_ident(name)}')} THEN s.{quote_ident(name)} END AS {quote_ident(name)}"
        for name in names
    )
    account_multi = account_single = account_join = vote_join = ""
    if account_xref is not None:
        account_multi, account_single = "v.golden_account_id, ", "ax.golden_id, "
        account_join = f"LEFT JOIN {account_xref} AS ax ON ax.record_id = s.account_record_id"
        vote_join = f"LEFT JOIN {t.golden_account} AS v USING (cluster)"
    return f"""
        SELECT
            g.golden_id, {account_multi}{fields}, g.updated_at,
            len(g.source_list) AS source_count,
            g.record_count,
            array_to_string(g.source_list, ',') AS sources
        FROM {t.golden} AS g
        {vote_join}
        UNION ALL
        SELECT
            i.golden_id, {account_single}{single_fields},
            s.updated_at,
            1::BIGINT,
            1::BIGINT,
            s.source
        FROM {t.src} AS s
        ANTI JOIN {t.linked} AS k USING (rid)
        JOIN {t.ids} AS i ON i.cluster = s.rid
        {account_join}
    """


def _field_sources_query(entity: Entity, t: _Tables) -> str:
    """Which record supplied each golden field: ``supplied_by`` maps a field to that record's record_id."""
    names = SURVIVOR_FIELDS[entity]

    def entries(record_of: Callable[[str], str]) -> str:
        pairs = ", ".join(f"{{'key': {quote_literal(n)}, 'value': {record_of(n)}}}" for n in names)
        return f"[{pairs}]"

    clustered = entries(lambda n: f"struct_extract(g.supplied_by, {quote_literal(n)})")
    single = entries(
        lambda n: f"CASE WHEN {_present_sql(entity, n, f's.{quote_ident(n)}')} THEN s.record_id END"
    )
    return f"""
        SELECT {quote_literal(entity)} AS entity, golden_id,
               map_from_entries(list_filter(entries, lambda e: e.value IS NOT NULL)) AS supplied_by
        FROM (
            SELECT g.golden_id, {clustered} AS entries FROM {t.golden} AS g
            UNION ALL
            SELECT i.golden_id, {single}
            FROM {t.src} AS s
            ANTI JOIN {t.linked} AS k USING (rid)
            JOIN {t.ids} AS i ON i.cluster = s.rid
        )
    """


def _resolve_entity(
    cur: duckdb.DuckDBPyConnection,
    *,
    entity: Entity,
    glob: str,
    rules: MatchRules,
    ownership: EntityOwnership,
    echoes: bool,
    account_xref: str | None,
    decisions: bool = False,
    previous: PreviousRun | None = None,
    declarations: str = "",
    partition: str | None = None,
    incremental: bool = True,
) -> EntityStats:
    t = _Tables(entity)
    entity_rules = rules.for_entity(entity)
    without_id, repeated = _load_source(cur, entity=entity, glob=glob, t=t)
    _build_features(cur, entity=entity, rules=rules, t=t, account_xref=account_xref)
    _run(
        cur,
        f"CREATE OR REPLACE TEMP TABLE {t.fingerprints} AS "
        + fingerprint_sql(
            src=t.src,
            columns=_SCHEMAS[entity].names,
            pushed=t.pushed if echoes else None,
            decisions="identity_decisions_input" if decisions else None,
            entity=entity,
            account_xref=account_xref,
        ),
    )
    scope = choose_scope(
        cur,
        entity=entity,
        entity_rules=entity_rules,
        previous=previous,
        declarations=declarations,
        partition=partition,
        incremental=incremental,
        fingerprints=t.fingerprints,
        feat=t.feat,
        table=lambda purpose: quote_ident(t.bare(purpose)),
    )
    if scope.incremental:
        # Resolve the scope only; the whole population stays for block sizes and value frequencies.
        for name in ("src", "feat"):
            _run(cur, f"ALTER TABLE {getattr(t, name)} RENAME TO {quote_ident(t.bare(name + '_all'))}")
            _run(
                cur,
                f"CREATE TEMP TABLE {getattr(t, name)} AS SELECT * FROM {getattr(t, name + '_all')} "
                f"WHERE rid IN (SELECT rid FROM {scope.records})",
            )
    _run(cur, f"CREATE OR REPLACE TEMP TABLE {t.edges} (a BIGINT, b BIGINT, rule_index INTEGER)")
    rule_stats: dict[str, RuleStats] = {}
    scored: ScoringStats | None = None
    if entity_rules.scoring is not None:
        scored = score_and_cluster(
            cur,
            entity_rules.scoring,
            feat=t.feat,
            edges=t.edges,
            review=t.review,
            rule_index=len(entity_rules.rules),
            max_block_size=entity_rules.max_block_size,
            decisions=_decided(cur, entity=entity, decisions=decisions, t=t),
            population=t.feat_all if scope.incremental else None,
            params=scope.params,
            keyed=scope.incremental,
        )
    else:
        for index, rule in enumerate(entity_rules.rules):
            pairs, skipped = _apply_rule(
                cur, index=index, rule=rule, limit=entity_rules.block_limit(rule), t=t
            )
            rule_stats[rule.name] = RuleStats(pairs=pairs, skipped_blocks=skipped)
        _run(
            cur,
            f"CREATE OR REPLACE TEMP TABLE {t.review} AS SELECT NULL::BIGINT AS a, NULL::BIGINT AS b, "
            "NULL::DOUBLE AS probability, NULL::VARCHAR AS reason, NULL::JSON AS levels WHERE false",
        )
    for table in (t.block, t.feat, t.feat_all):
        _run(cur, f"DROP TABLE IF EXISTS {table}")
    rounds = _connected_components(cur, t=t)
    _run(cur, f"DROP TABLE {t.edges}")
    ids = assign_golden_ids(
        cur,
        entity=entity,
        prefix=_ID_PREFIX[entity],
        src=t.src,
        linked=t.linked,
        table=lambda purpose: quote_ident(t.bare(purpose)),
    )
    _build_golden(cur, entity=entity, ownership=ownership, t=t, echoes=echoes)
    _build_xref(cur, entity=entity, entity_rules=entity_rules, t=t)
    if account_xref is not None:
        _build_contact_accounts(cur, t=t, account_xref=account_xref)
    _run(cur, f"CREATE OR REPLACE TEMP TABLE {t.golden_out} AS {_golden_query(entity, t, account_xref)}")
    _run(cur, f"CREATE OR REPLACE TEMP TABLE {t.sources_out} AS {_field_sources_query(entity, t)}")
    _run(cur, f"CREATE OR REPLACE TEMP TABLE {t.review_out} AS {_review_query(entity, t)}")
    resolved_clusters = 0
    if scope.incremental and previous is not None:
        (resolved_clusters,) = _one(cur, f"SELECT count(*) FROM {t.golden_out}")
        _carry_over(cur, entity=entity, t=t, folder=previous.folder)
    _run(
        cur,
        f"""
        CREATE OR REPLACE TEMP TABLE {t.records_out} AS
        SELECT {quote_literal(entity)} AS entity, f.record_id, f.fingerprint, x.golden_id
        FROM {t.fingerprints} AS f JOIN {t.xref} AS x USING (record_id)
        """,
    )
    for table in (t.fingerprints, t.src_all, t.prev, t.scope):
        _run(cur, f"DROP TABLE IF EXISTS {table}")

    records, golden, largest = _one(
        cur,
        f"SELECT (SELECT count(*) FROM {t.xref}), count(*), coalesce(max(record_count), 0) FROM {t.golden_out}",
    )
    by_source = {
        source: SourceStats(records=int(n), merged=int(merged))
        for source, n, merged in _run(
            cur,
            f"""
            SELECT source, count(*), count(*) FILTER (WHERE NOT is_survivor)
            FROM {t.xref} GROUP BY source ORDER BY source
            """,
        ).fetchall()
    }
    if scope.incremental:
        # The clusters carried over keep their ids.
        ids = dataclasses.replace(ids, kept=ids.kept + int(golden) - int(resolved_clusters))
    return EntityStats(
        records=int(records),
        golden=int(golden),
        merged=int(records - golden),
        largest_cluster=int(largest),
        by_source=by_source,
        rules=rule_stats,
        dropped_without_id=without_id,
        dropped_duplicate_ids=repeated,
        cluster_rounds=rounds,
        ids=ids,
        scoring=scored,
        mode="incremental" if scope.incremental else "full",
        mode_reason=scope.reason,
        records_changed=scope.changed,
        records_deleted=scope.deleted,
        records_resolved=scope.resolved if scope.incremental else int(records),
        weights_from=scope.trained_on if scope.params is not None else None,
    )


def _carry_over(cur: duckdb.DuckDBPyConnection, *, entity: Entity, t: _Tables, folder: LakePath) -> None:
    """Add last night's untouched clusters to tonight's outputs of the resolved scope.

    Untouched: no member in tonight's scope (``t.src``) and none deleted. The scope holds whole
    clusters of last night, so a cluster is either resolved again or carried over as it was.
    """
    files = IdentityFiles(folder)
    entity_sql = quote_literal(entity)
    golden_file = files.golden_account if entity == "account" else files.golden_contact
    _run(
        cur,
        f"""
        CREATE OR REPLACE TEMP TABLE {t.touched} AS
        SELECT golden_id FROM {t.prev} SEMI JOIN {t.src} USING (record_id)
        UNION
        SELECT golden_id FROM {t.prev} ANTI JOIN {t.src_all} USING (record_id)
        """,
    )
    _run(
        cur,
        f"""
        INSERT INTO {t.golden_out} BY NAME
        SELECT g.* FROM {scan_parquet(str(golden_file))} AS g ANTI JOIN {t.touched} AS t USING (golden_id)
        """,
    )
    _run(
        cur,
        f"""
        INSERT INTO {t.xref} BY NAME
        SELECT x.* FROM (SELECT * FROM {scan_parquet(str(files.xref))} WHERE entity = {entity_sql}) AS x
        SEMI JOIN {t.src_all} AS a USING (record_id)
        ANTI JOIN {t.src} AS s USING (record_id)
        """,
    )
    _run(
        cur,
        f"""
        INSERT INTO {t.sources_out} BY NAME
        SELECT f.* FROM (SELECT * FROM {scan_parquet(str(files.field_sources))} WHERE entity = {entity_sql}) AS f
        ANTI JOIN {t.touched} AS t USING (golden_id)
        """,
    )
    # A review pair of last night stays unless tonight scored it again (both records resolved) or a
    # record of it is gone. A pair with one record resolved and one not is two unchanged records (a
    # changed record's review partners are resolved with it): its score is last night's, and it is
    # not a refused join (the scope holds both records of those).
    resolved = f"(SELECT record_id FROM {t.src})"
    gone = f"(SELECT record_id FROM {t.prev} WHERE record_id NOT IN (SELECT record_id FROM {t.src_all}))"
    if files.review.exists():
        _run(
            cur,
            f"""
            INSERT INTO {t.review_out} BY NAME
            SELECT * FROM {scan_parquet(str(files.review))}
            WHERE entity = {entity_sql}
              AND NOT (record_id_a IN {resolved} AND record_id_b IN {resolved})
              AND record_id_a NOT IN {gone} AND record_id_b NOT IN {gone}
            """,
        )
    _run(cur, f"DROP TABLE {t.touched}")


def _decided(
    cur: duckdb.DuckDBPyConnection, *, entity: Entity, decisions: bool, t: _Tables
) -> list[tuple[int, int, str]]:
    """The review decisions (``identity_decisions_input``) between records of tonight, by rid."""
    if not decisions:
        return []
    rows = _run(
        cur,
        f"""
        SELECT least(a.rid, b.rid), greatest(a.rid, b.rid), d.decision
        FROM identity_decisions_input AS d
        JOIN {t.src} AS a ON a.record_id = d.record_id_a
        JOIN {t.src} AS b ON b.record_id = d.record_id_b
        WHERE d.entity = {quote_literal(entity)}
        ORDER BY d.decided_at
        """,
    ).fetchall()
    # The latest decision on a pair stands.
    return list({(a, b): (a, b, str(d)) for a, b, d in rows}.values())


def _review_query(entity: Entity, t: _Tables) -> str:
    """The review queue's rows: both records side by side, the probability and each field's level."""
    # The records as JSON, without the run's internal row number (``rid``, which follows scan order),
    # for the queued pairs' records only. Aliases ra/rb: ``to_json(a)`` would read the review's column
    # ``a`` (that number).
    shown = f"""(
            SELECT rid, record_id, to_json(struct_pack(*COLUMNS(* EXCLUDE (rid)))) AS record
            FROM {t.src}
            WHERE rid IN (SELECT a FROM {t.review} UNION SELECT b FROM {t.review})
        )"""
    return f"""
        SELECT {quote_literal(entity)} AS entity, ra.record_id AS record_id_a, rb.record_id AS record_id_b,
               r.probability, r.reason, r.levels, ra.record AS record_a, rb.record AS record_b
        FROM {t.review} AS r
        JOIN {shown} AS ra ON ra.rid = r.a
        JOIN {shown} AS rb ON rb.rid = r.b
    """


def _copy_to(cur: duckdb.DuckDBPyConnection, *, query: str, path: LakePath, params: _Params) -> None:
    """COPY a query to Parquet under a temporary name, published on success (no half-written files)."""
    tmp = local_copy(path)
    target = params.bind(str(tmp))
    try:
        _run(cur, f"COPY ({query}) TO {target} (FORMAT parquet, COMPRESSION zstd)", params)
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_outputs(cur: duckdb.DuckDBPyConnection, *, out_dir: LakePath) -> None:
    accounts, contacts = _Tables("account"), _Tables("contact")
    files = IdentityFiles(out_dir)
    # Row order in the files is not meaningful (sorting 1M string keys would double the write time).
    both = {
        files.xref: "xref",
        files.field_sources: "sources_out",
        files.review: "review_out",
        files.records: "records_out",
    }
    for path, query in (
        (files.golden_account, f"SELECT * FROM {accounts.golden_out}"),
        (files.golden_contact, f"SELECT * FROM {contacts.golden_out}"),
        *(
            (
                path,
                f"SELECT * FROM {getattr(accounts, name)} UNION ALL SELECT * FROM {getattr(contacts, name)}",
            )
            for path, name in both.items()
        ),
    ):
        _copy_to(cur, query=query, path=path, params=_Params())
    columns = ", ".join(quote_ident(name) for name in EVENTS.names)
    _copy_to(
        cur,
        query=f"SELECT {columns} FROM {accounts.id_events} UNION ALL SELECT {columns} FROM {contacts.id_events}",
        path=files.history,
        params=_Params(),
    )


# --------------------------------------------------------------------------------------------------
# Public API


def resolve_entities(
    *,
    con: duckdb.DuckDBPyConnection,
    accounts_glob: str,
    contacts_glob: str,
    out_dir: LakePath,
    rules: MatchRules,
    ownership: Ownership | None = None,
    pushed: pa.Table | None = None,
    previous: PreviousIds | None = None,
    decisions: pa.Table | None = None,
    previous_run: PreviousRun | None = None,
    partition: str | None = None,
    incremental: bool = True,
) -> ResolutionStats:
    """Deduplicate accounts and contacts into golden records and write them with a crosswalk.

    Writes ``golden_account.parquet``, ``golden_contact.parquet``, ``xref_identity.parquet``,
    ``golden_id_history.parquet`` (tonight's created, split and merged ids) and
    ``golden_field_sources.parquet`` (the record that supplied each golden field) into ``out_dir`` with
    DuckDB ``COPY``; each file appears atomically. A cluster keeps the golden id its members carried in
    ``previous`` (:mod:`crm_pipelines.identity.golden_ids`); a new id is ``'A-'``/``'C-'`` plus the first
    16 hex digits of the md5 of the smallest record_id in the cluster, so a re-run on the same data
    gives the same ids whatever the row order. Work happens on a private cursor of ``con``
    (its temporary tables and macros vanish with it); the caller's settings (threads, memory_limit,
    temp_directory) apply.

    Args:
        con: DuckDB connection to run on.
        accounts_glob: Parquet glob of canonical accounts (schema ``canonical.ACCOUNT``).
        contacts_glob: Parquet glob of canonical contacts (schema ``canonical.CONTACT``).
        out_dir: Folder for the three output files (created when missing).
        rules: Match rules, e.g. from :func:`~crm_pipelines.identity.rules.load_match_rules`.
        ownership: Field ownership (default: ``crm_pipelines/ownership.yaml``).
        pushed: What the syncs last wrote into each record (``record_id``, ``field``, ``value`` as
            text; :func:`crm_pipelines.syncs.state.pushed_values`): those values are echoes, not edits.
        previous: The golden ids of earlier runs
            (:func:`crm_pipelines.identity.golden_ids.previous_ids`); none on the first night.
        decisions: Review decisions (``entity``, ``record_id_a``, ``record_id_b``, ``decision``
            must_link | cannot_link, ``decided_at``), honoured by scored matching over any score.
        previous_run: The state an earlier run left
            (:func:`crm_pipelines.identity.incremental.find_previous_run`): with it, an entity is
            resolved incrementally when it can be (:mod:`crm_pipelines.identity.incremental`).
        partition: Tonight's partition; with it the run leaves its state for the next run.
        incremental: False resolves every record (with ``previous_run``'s weights when they still fit).

    Returns:
        Counts per entity (records, golden records, merged duplicates per source, pairs per rule)
        and the run time in seconds.
    """
    started = time.perf_counter()
    make_dirs(out_dir)
    owned = ownership or load_ownership()
    cur = con.cursor()
    try:
        _create_macros(cur)
        register_previous(cur, previous)
        echoes = pushed is not None and pushed.num_rows > 0
        decided = decisions is not None and decisions.num_rows > 0
        if decided:
            cur.register("identity_decisions_input", decisions)
        if echoes:
            cur.register("identity_pushed_input", pushed)
            for entity in ("account", "contact"):
                _run(
                    cur,
                    f"CREATE OR REPLACE TEMP TABLE {_Tables(entity).pushed} AS SELECT DISTINCT record_id, field, "
                    f"value FROM identity_pushed_input WHERE entity = {quote_literal(entity)}",
                )
        declarations = declarations_fingerprint(rules, owned)
        resolved: dict[Entity, EntityStats] = {}
        order: list[tuple[Entity, str, str | None]] = [
            ("account", accounts_glob, None),
            ("contact", contacts_glob, _Tables("account").xref),
        ]
        for entity, glob, account_xref in order:
            resolved[entity] = _resolve_entity(
                cur,
                entity=entity,
                glob=glob,
                rules=rules,
                ownership=owned.account if entity == "account" else owned.contact,
                echoes=echoes,
                account_xref=account_xref,
                decisions=decided,
                previous=previous_run,
                declarations=declarations,
                partition=partition,
                incremental=incremental,
            )
        account, contact = resolved["account"], resolved["contact"]
        # Everything of a previous run in this folder has been read. Its state goes first: outputs
        # half replaced by a crash must not look like a complete run to the next one.
        state = IdentityFiles(out_dir).state
        if state.exists():
            state.unlink()
        _write_outputs(cur, out_dir=out_dir)
        if partition is not None:
            params: dict[str, ScoringParams] = {}
            trained_on: dict[str, str] = {}
            for entity, stats in resolved.items():
                if stats.scoring is not None and stats.scoring.params is not None:
                    params[entity] = stats.scoring.params
                    trained_on[entity] = stats.weights_from or partition
            write_state(
                out_dir, partition=partition, declarations=declarations, trained_on=trained_on, params=params
            )
    finally:
        cur.close()
    return ResolutionStats(account=account, contact=contact, seconds=round(time.perf_counter() - started, 3))


def scoring_metadata(stats: ResolutionStats) -> dict[str, int]:
    """Numeric figures of scored matching per entity, for Dagster to plot over time."""
    out: dict[str, int] = {}
    for entity, entity_stats in (("account", stats.account), ("contact", stats.contact)):
        scored = entity_stats.scoring
        skipped = sum(r.skipped_blocks for r in entity_stats.rules.values())
        if scored is not None:
            skipped += scored.skipped_blocks
            out[f"{entity}_candidate_pairs"] = scored.candidate_pairs
            out[f"{entity}_review_pairs"] = scored.review_pairs
            out[f"{entity}_refused_joins"] = scored.refused_joins
            out.update({f"{entity}_pairs_{band}": n for band, n in scored.pairs_by_band.items()})
        out[f"{entity}_skipped_blocks"] = skipped
    return out


def normalize_company_names(
    *, con: duckdb.DuckDBPyConnection, names: Sequence[str | None], rules: MatchRules
) -> list[str | None]:
    """Apply the matching normalisation of company names (the ``normalized_name`` feature).

    Meant for checking a rules file and for debugging why two accounts did or did not match.

    Args:
        con: DuckDB connection to run on (a private cursor is used).
        names: Company names as sources spell them.
        rules: Match rules (their legal suffixes and prefixes apply).

    Returns:
        The normalised names, in input order (``None`` where nothing is left).
    """
    cur = con.cursor()
    try:
        _create_macros(cur)
        params = _Params()
        values = params.bind(list(names))
        suffix_re, prefix_re = params.bind(_suffix_regex(rules)), params.bind(_prefix_regex(rules))
        (result,) = _one(
            cur,
            f"SELECT list_transform({values}::VARCHAR[], lambda x: identity_company(x, {suffix_re}, {prefix_re}))",
            params,
        )
    finally:
        cur.close()
    return list(result or [])


def features_with_sql(entity: Entity) -> frozenset[str]:
    """Features of ``entity`` that compile to SQL (to check them against the declared vocabulary).

    Args:
        entity: 'account' or 'contact'.

    Returns:
        The feature names.
    """
    names = set()
    for name in FEATURES[entity]:
        try:
            if name in _DERIVED_FEATURES:
                _derived_feature_sql(name, MatchRules(), _Params())
            else:
                _base_feature_sql(entity, name, MatchRules(), _Params())
        except KeyError:
            continue
        names.add(name)
    return frozenset(names)
