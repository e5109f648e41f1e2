"""Data quality: rules per canonical entity as Great Expectations 1.x suites, with row-level quarantine.

- :mod:`.rules`: the declared rules (``rules.yaml``), validated with pydantic.
- :mod:`.suites`: ``gx.ExpectationSuite`` objects built from the rules.
- :mod:`.validate`: streaming validation that splits rows into valid and quarantined.

Importing this package neither imports Great Expectations nor reads any file.
"""

from crm_pipelines.quality.rules import Rule, RulesError, RuleSet, load_rules, parse_rules
from crm_pipelines.quality.suites import build_suite
from crm_pipelines.quality.validate import (
    BatchResult,
    QualityError,
    TableValidation,
    ValidationRun,
    ValidationSummary,
    gx_context,
    validate_batches,
    validate_table,
)

__all__ = [
    "BatchResult",
    "QualityError",
    "Rule",
    "RuleSet",
    "RulesError",
    "TableValidation",
    "ValidationRun",
    "ValidationSummary",
    "build_suite",
    "gx_context",
    "load_rules",
    "parse_rules",
    "validate_batches",
    "validate_table",
]
