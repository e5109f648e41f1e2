"""Great Expectations 1.x expectation suites built from the declared rules, and the same rules as SQL.

Every expectation carries ``meta["rule"]``, the rule name, so validation results map back to rules.
Suites are plain in-memory objects: they are never saved to a GX store.

:func:`rule_sql` compiles a rule to DuckDB SQL predicates that select the rows GX's pandas engine
counts and fails for its expectation (row condition, missing values, ``ignore_row_if``), so the rows
can be checked where they are instead of as a pandas DataFrame; a rule it cannot express with the
same result is left to GX.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from crm_pipelines.quality.rules import Condition, Rule, RulesError, RuleSet, load_rules
from crm_pipelines.sql import quote_ident, quote_literal

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


# ---------------------------------------------------------------------------------------------------
# The rules as DuckDB SQL predicates


# The table (or view) the predicates of :func:`rule_sql` read.
RULE_ROWS = "rule_rows"


@dataclass(frozen=True)
class RuleSql:
    """One rule as SQL boolean expressions over the validated rows, the table :data:`RULE_ROWS`.

    Attributes:
        rule: Rule name.
        domain: Rows the rule applies to (its ``when``): GX's ``element_count``.
        evaluated: Rows whose values are checked (the domain without missing values, or without the
            rows ``ignore_row_if`` drops): GX's non-null count.
        unexpected: Rows that fail the rule.
        reports_missing: False where GX reports no ``missing_count`` (``expect_column_values_to_not_be_null``).
        regex: For a regex rule, the Python pattern whose ``re.search`` verdict per value the caller
            provides as the boolean column :attr:`match_column` (GX's pandas engine uses Python's
            ``re``, which RE2 does not match exactly).
        match_column: Name of that column.
        regex_re2: :func:`re2_for_ascii` of the regex: the same verdict for ASCII values, or None.
    """

    rule: str
    domain: str
    evaluated: str
    unexpected: str
    reports_missing: bool = True
    regex: str | None = None
    match_column: str | None = None
    regex_re2: str | None = None


# Python's white space among ASCII characters (str.isspace, which re's \s follows); RE2's \s lacks \v
# and \x1c-\x1f.
_ASCII_SPACE = "\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f "
_RE2_ESCAPES = {"d": "[0-9]", "s": f"[{_ASCII_SPACE}]", "S": f"[^{_ASCII_SPACE}]", "Z": "\\z"}
_REPEAT = re.compile(r"\{[0-9]+(?:,[0-9]*)?\}")
_LITERAL_ESCAPES = set(".-+*?()[]{}|^$\\/")


def re2_for_ascii(regex: str) -> str | None:
    """An RE2 pattern that ``re.search``-matches exactly the ASCII strings ``regex`` matches in Python.

    Only a plain subset is translated (literals, classes of literals and ranges, groups, alternation,
    quantifiers, ``\\d \\s \\S`` outside classes, ``^`` first, ``\\Z`` or ``$`` last); anything
    else returns None and the regex stays with Python's ``re``. Non-ASCII strings are never given to
    the RE2 pattern: Python's classes are Unicode-aware there.

    Args:
        regex: A Python regular expression.

    Returns:
        The RE2 pattern, or None.
    """
    out: list[str] = []
    i, n = 0, len(regex)
    in_class = False
    while i < n:
        char = regex[i]
        if not char.isascii() or not (char.isprintable()):
            return None
        if char == "\\":
            if i + 1 >= n:
                return None
            escaped = regex[i + 1]
            if escaped in _LITERAL_ESCAPES:
                out.append(char + escaped)
            elif escaped in _RE2_ESCAPES and not in_class:
                if escaped == "Z" and i + 2 != n:
                    return None
                out.append(_RE2_ESCAPES[escaped])
            else:
                return None
            i += 2
            continue
        if in_class:
            if char == "[":
                return None  # [[:alpha:]] is a POSIX class to RE2, literal characters to Python
            if char == "]":
                in_class = False
            out.append(char)
        elif char == "[":
            in_class = True
            start = i + 2 if regex[i + 1 : i + 2] == "^" else i + 1
            if regex[start : start + 1] == "]":
                return None  # a leading ']' is a literal to Python
            out.append(regex[i:start])
            i = start
            continue
        elif char == "{":
            repeat = _REPEAT.match(regex, i)
            if repeat is None:
                return None  # '{,n}' and a stray '{' differ between Python and RE2
            out.append(repeat.group())
            i = repeat.end()
            continue
        elif char == "(":
            if regex[i + 1 : i + 2] == "?" and regex[i + 2 : i + 3] != ":":
                return None  # look-arounds, flags, named groups
            out.append(char)
        elif char == "^":
            if i != 0:
                return None
            out.append(char)
        elif char == "$":
            if i != n - 1:
                return None
            out.append("\\n?\\z")  # Python's $ also matches before a final newline
        else:
            out.append(char)
        i += 1
    return None if in_class else "".join(out)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _numeric(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_integer(dtype) or pa.types.is_floating(dtype))


def _missing(column: str, dtype: pa.DataType) -> str:
    # pandas' isnull: NULL, and NaN in float columns.
    name = quote_ident(column)
    return f"({name} IS NULL OR isnan({name}))" if pa.types.is_floating(dtype) else f"({name} IS NULL)"


def _number(value: Any) -> str:
    return str(value) if isinstance(value, int) else f"CAST({float(value)!r} AS DOUBLE)"


def rule_sql(*, rule: Rule, types: dict[str, pa.DataType], position: int) -> RuleSql | None:
    """Compile one rule to SQL predicates over rows typed as GX sees them.

    Args:
        rule: The rule.
        types: Column types of the rows as they would reach GX's pandas engine (decimals as float64).
        position: The rule's position, to name its helper column.

    Returns:
        The predicates, or None when the rule uses something compiled here would not decide exactly
        as GX does (then GX validates it).
    """
    if any(c not in types for c in [*rule.columns, *(w.column for w in rule.when)]):
        return None
    domain_parts: list[str] = []
    for condition in rule.when:
        if condition.is_null is None:
            return None  # comparisons follow pandas' query semantics: left to GX
        missing = _missing(condition.column, types[condition.column])
        domain_parts.append(missing if condition.is_null else f"NOT {missing}")
    domain = " AND ".join(domain_parts) or "true"
    kwargs = rule.resolved_kwargs()
    column = rule.column
    dtype = types[column]
    name = quote_ident(column)
    present = f"({domain}) AND NOT {_missing(column, dtype)}"
    expectation = rule.expectation
    if expectation == "expect_column_values_to_not_be_null":
        if set(kwargs) != {"column"}:
            return None
        return RuleSql(rule.name, domain, domain, f"({domain}) AND {_missing(column, dtype)}", False)
    if expectation == "expect_column_values_to_match_regex":
        if set(kwargs) != {"column", "regex"} or not pa.types.is_string(dtype):
            return None
        match = f"__match_{position}"
        return RuleSql(
            rule.name,
            domain,
            present,
            f"{present} AND NOT coalesce({quote_ident(match)}, false)",
            regex=str(kwargs["regex"]),
            match_column=match,
            regex_re2=re2_for_ascii(str(kwargs["regex"])),
        )
    if expectation == "expect_column_values_to_be_in_set":
        values = kwargs.get("value_set")
        if (
            set(kwargs) != {"column", "value_set"}
            or not pa.types.is_string(dtype)
            or not isinstance(values, list | tuple)
            or not values
            or not all(isinstance(v, str) for v in values)
        ):
            return None
        # A list subquery is hashed once; a long IN (...) list is tested member by member.
        members = ", ".join(quote_literal(v) for v in values)
        listed = f"{name} IN (SELECT unnest([{members}]))"
        return RuleSql(rule.name, domain, present, f"{present} AND NOT coalesce({listed}, false)")
    if expectation == "expect_column_values_to_be_between":
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        bounds = [v for v in (low, high) if v is not None]
        if (
            not set(kwargs) <= {"column", "min_value", "max_value", "strict_min", "strict_max"}
            or not _numeric(dtype)
            or not bounds
            or not all(_is_number(v) for v in bounds)
            or (low is not None and high is not None and low > high)
        ):
            return None
        # pandas compares an int column with a float bound as floats.
        value = f"CAST({name} AS DOUBLE)" if any(isinstance(v, float) for v in bounds) else name
        checks = []
        if low is not None:
            checks.append(f"{value} {'>' if kwargs.get('strict_min') else '>='} {_number(low)}")
        if high is not None:
            checks.append(f"{value} {'<' if kwargs.get('strict_max') else '<='} {_number(high)}")
        return RuleSql(rule.name, domain, present, f"{present} AND NOT ({' AND '.join(checks)})")
    if expectation == "expect_column_values_to_be_unique":
        if set(kwargs) != {"column"} or not (pa.types.is_string(dtype) or pa.types.is_integer(dtype)):
            return None
        # pandas' duplicated(keep=False) over the checked rows: every copy fails.
        copies = f"SELECT {name} FROM {RULE_ROWS} WHERE {present} GROUP BY {name} HAVING count(*) > 1"
        return RuleSql(rule.name, domain, present, f"{present} AND coalesce({name} IN ({copies}), false)")
    # Column pairs: only rows with both values are compared (ignore_row_if: either_value_is_missing).
    if kwargs.get("ignore_row_if") != "either_value_is_missing":
        return None
    column_b = str(kwargs["column_B"])
    type_b = types[column_b]
    pair = f"({domain}) AND NOT {_missing(column, dtype)} AND NOT {_missing(column_b, type_b)}"
    name_b = quote_ident(column_b)
    if expectation == "expect_column_pair_values_a_to_be_greater_than_b":
        if not set(kwargs) <= {"column_A", "column_B", "ignore_row_if", "or_equal"}:
            return None
        if _numeric(dtype) and _numeric(type_b):
            a, b = f"CAST({name} AS DOUBLE)", f"CAST({name_b} AS DOUBLE)"
        elif dtype == type_b and (pa.types.is_date(dtype) or pa.types.is_timestamp(dtype)):
            a, b = name, name_b
        else:
            return None
        operator = ">=" if kwargs.get("or_equal") else ">"
        return RuleSql(rule.name, domain, pair, f"{pair} AND NOT ({a} {operator} {b})")
    if expectation == "expect_column_pair_values_to_be_in_set":
        pairs = kwargs.get("value_pairs_set") or []
        if (
            not set(kwargs) <= {"column_A", "column_B", "ignore_row_if", "value_pairs_set"}
            or not pa.types.is_boolean(dtype)
            or not pa.types.is_boolean(type_b)
            or not pairs
            or not all(len(p) == 2 and all(isinstance(v, bool) for v in p) for p in pairs)
        ):
            return None
        listed = " OR ".join(f"({name} = {str(x).lower()} AND {name_b} = {str(y).lower()})" for x, y in pairs)
        return RuleSql(rule.name, domain, pair, f"{pair} AND NOT ({listed})")
    return None
