"""Identity resolution: deduplicate accounts and contacts across and within systems into golden records.

Declared match rules (``match_rules.yaml``) are validated by :func:`load_match_rules`;
:func:`resolve_entities` clusters the canonical staging records in DuckDB and writes golden accounts,
golden contacts and the identity crosswalk as Parquet.
"""

from crm_pipelines.identity.resolve import (
    GOLDEN_ACCOUNT_FILE,
    GOLDEN_CONTACT_FILE,
    XREF_FILE,
    EntityStats,
    ResolutionStats,
    RuleStats,
    SourceStats,
    normalize_company_names,
    resolve_entities,
)
from crm_pipelines.identity.rules import (
    FEATURES,
    Condition,
    EntityRules,
    KeyPart,
    MatchRule,
    MatchRules,
    MatchRulesError,
    load_match_rules,
    parse_match_rules,
)

__all__ = [
    "FEATURES",
    "GOLDEN_ACCOUNT_FILE",
    "GOLDEN_CONTACT_FILE",
    "XREF_FILE",
    "Condition",
    "EntityRules",
    "EntityStats",
    "KeyPart",
    "MatchRule",
    "MatchRules",
    "MatchRulesError",
    "ResolutionStats",
    "RuleStats",
    "SourceStats",
    "load_match_rules",
    "normalize_company_names",
    "parse_match_rules",
    "resolve_entities",
]
