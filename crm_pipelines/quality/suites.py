"""Great Expectations 1.x expectation suites built from the declared rules.

Every expectation carries ``meta["rule"]``, the rule name, so validation results map back to rules.
Suites are plain in-memory objects: they are never saved to a GX store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crm_pipelines.quality.rules import Condition, Rule, RulesError, RuleSet, load_rules

if TYPE_CHECKING:
    import great_expectations as gx
    from great_expectations.expectations.expectation import Expectation
    from great_expectations.expectations.row_conditions import Condition as GxCondition

SUITE_PREFIX = "crm_pipelines."
RULE_META_KEY = "rule"


def suite_name(*, entity: str) -> str:
    """Name of an entity's suite.

    Args:
        entity: Canonical entity name.

    Returns:
        E.g. ``crm_pipelines.account``.
    """
    return f"{SUITE_PREFIX}{entity}"


def _class_name(expectation_type: str) -> str:
    # expect_column_pair_values_a_to_be_greater_than_b -> ExpectColumnPairValuesAToBeGreaterThanB
    return "".join(part.capitalize() for part in expectation_type.split("_"))


def _gx_condition(condition: Condition) -> GxCondition:
    from great_expectations.expectations.row_conditions import Column

    column = Column(condition.column)
    if condition.is_null is not None:
        return column.is_null() if condition.is_null else column.is_not_null()
    value = condition.value
    if condition.op == "in":
        return column.is_in(value)
    if condition.op == "not_in":
        return column.is_not_in(value)
    comparisons: dict[str, Any] = {
        "==": column.__eq__,
        "!=": column.__ne__,
        "<": column.__lt__,
        "<=": column.__le__,
        ">": column.__gt__,
        ">=": column.__ge__,
    }
    result: GxCondition = comparisons[str(condition.op)](value)
    return result


def row_condition(*, rule: Rule) -> GxCondition | None:
    """The GX row condition selecting the rows a rule applies to.

    Args:
        rule: The rule.

    Returns:
        ``None`` when the rule applies to every row, else a GX ``Condition`` (an ``AndCondition`` for
        several ``when`` entries).
    """
    if not rule.when:
        return None
    conditions = [_gx_condition(condition) for condition in rule.when]
    if len(conditions) == 1:
        return conditions[0]
    from great_expectations.expectations.row_conditions import AndCondition

    return AndCondition(conditions=conditions)


def build_expectation(*, rule: Rule, entity: str = "?") -> Expectation:
    """Make the GX expectation of one rule.

    Args:
        rule: The rule.
        entity: Entity the rule belongs to, for error messages only.

    Returns:
        The expectation, with ``meta["rule"]`` set to the rule name.

    Raises:
        RulesError: GX rejects the rule's kwargs (unknown or mistyped argument).
    """
    import great_expectations as gx

    cls = getattr(gx.expectations, _class_name(rule.expectation))
    kwargs = rule.resolved_kwargs()
    condition = row_condition(rule=rule)
    if condition is not None:
        kwargs["row_condition"] = condition
    if rule.description:
        kwargs["description"] = rule.description
    try:
        expectation: Expectation = cls(**kwargs, mostly=rule.mostly, meta={RULE_META_KEY: rule.name})
    except Exception as exc:  # GX raises pydantic v1 errors; report them against the rule
        raise RulesError(
            f"entities.{entity} rule {rule.name}: {rule.expectation} rejects its kwargs: {_one_line(exc)}"
        ) from exc
    return expectation


def _one_line(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            return "; ".join(
                f"{'.'.join(str(p) for p in error.get('loc', ()))}: {error.get('msg')}" for error in errors()
            )
        except Exception:  # not a pydantic error after all: fall back to its text
            pass
    return " ".join(str(exc).split())


def build_suite(*, entity: str, rules: RuleSet | None = None) -> gx.ExpectationSuite:
    """Build the GX expectation suite of a canonical entity from its rules.

    Args:
        entity: Canonical entity name (``account``, ``contact``, ...).
        rules: Rule set to use; ``None`` for the packaged ``rules.yaml``.

    Returns:
        An unsaved ``gx.ExpectationSuite`` named ``crm_pipelines.<entity>``, one expectation per rule,
        in rule order.

    Raises:
        RulesError: No rules are declared for the entity, or GX rejects a rule.
    """
    import great_expectations as gx

    rule_set = rules if rules is not None else load_rules()
    expectations = [build_expectation(rule=rule, entity=entity) for rule in rule_set.rules_for(entity)]
    # Passing the expectations to the constructor, not add_expectation(): the latter looks for a
    # store to save into, which needs an active data context; this suite is never saved.
    return gx.ExpectationSuite(name=suite_name(entity=entity), expectations=expectations)
