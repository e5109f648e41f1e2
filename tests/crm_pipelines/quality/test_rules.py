"""The declared rules: the packaged rules.yaml is valid and complete, bad rules fail with clear errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from crm_pipelines.canonical import ENTITIES
from crm_pipelines.quality.rules import (
    SUPPORTED_EXPECTATIONS,
    RulesError,
    default_rules_path,
    load_rules,
    named_value_set,
    parse_rules,
)
from crm_pipelines.quality.suites import build_suite


def test_packaged_rules_cover_all_six_entities() -> None:
    rules = load_rules()
    assert set(rules.entities) == set(ENTITIES)
    for entity in ENTITIES:
        own = rules.entities[entity].rules
        assert own, f"{entity} has no rules of its own"
        names = [rule.name for rule in rules.rules_for(entity)]
        assert len(names) == len(set(names))


def test_packaged_rules_build_gx_suites() -> None:
    rules = load_rules()
    for entity in ENTITIES:
        suite = build_suite(entity=entity, rules=rules)
        assert suite.name == f"crm_pipelines.{entity}"
        assert [(e.meta or {})["rule"] for e in suite.expectations] == [
            r.name for r in rules.rules_for(entity)
        ]
        assert {e.expectation_type for e in suite.expectations} <= set(SUPPORTED_EXPECTATIONS)


def test_named_value_sets() -> None:
    currencies = named_value_set("iso_4217")
    assert {"EUR", "USD", "CHF", "JPY"} <= set(currencies)
    assert "XTS" not in currencies
    assert "HRK" not in currencies
    assert {"DE", "US", "GB"} <= set(named_value_set("iso_3166_alpha2"))


def test_load_rules_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(default_rules_path().read_text(encoding="utf-8"), encoding="utf-8")
    assert load_rules(path=path) == load_rules()


_GOOD_RULE = """
  name: name_required
  expectation: expect_column_values_to_not_be_null
  kwargs: {column: name}
  reason: "name is null"
"""


_COMMON_NAME_REQUIRED = """common:
  - name: name_required
    expectation: expect_column_values_to_not_be_null
    kwargs: {column: name}
    reason: "name is null"
"""


def _rules_text(rule: str, *, entity: str = "account", extra: str = "") -> str:
    body = textwrap.indent(textwrap.dedent(rule).strip(), "        ")
    body = "      - " + body.lstrip()
    return f"version: 1\n{extra}entities:\n  {entity}:\n    rules:\n{body}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("version: 1\nentities: [oops\n", "is not valid YAML", id="yaml-syntax"),
        pytest.param("- just a list\n", "must hold a mapping", id="not-a-mapping"),
        pytest.param(_rules_text(_GOOD_RULE).replace("version: 1", "version: 2"), "version", id="version"),
        pytest.param(
            _rules_text(_GOOD_RULE, entity="unicorn"), "entities.unicorn: unknown entity", id="unknown-entity"
        ),
        pytest.param(
            _rules_text(_GOOD_RULE.replace("{column: name}", "{column: nmae}")),
            "rule name_required: unknown column 'nmae'",
            id="unknown-column",
        ),
        pytest.param(
            _rules_text(_GOOD_RULE).replace(
                "    rules:",
                "    derived:\n      - {kind: first_present, name: _named, columns: [name, nmae]}\n    rules:",
            ),
            "entities.account.derived _named: unknown column 'nmae'",
            id="first-present-unknown-column",
        ),
        pytest.param(
            _rules_text(_GOOD_RULE).replace(
                "    rules:",
                "    derived:\n      - {kind: first_present, name: _named, columns: [name]}\n    rules:",
            ),
            "entities.account.derived.0.first_present.columns",
            id="first-present-one-column",
        ),
        pytest.param(
            _rules_text(_GOOD_RULE).replace(
                "    rules:",
                "    derived:\n      - {kind: raw_value, name: _raw, keys: [country]}\n    rules:",
            ),
            "entities.account.derived _raw: name is already a column",
            id="derived-named-like-the-source-json",
        ),
        pytest.param(
            _rules_text(_GOOD_RULE).replace(
                "    rules:",
                "    derived:\n      - {kind: first_present, name: _deleted, columns: [name, city]}\n    rules:",
            ),
            "entities.account.derived _deleted: name is already a column",
            id="derived-named-like-the-deleted-flag",
        ),
        pytest.param(
            _rules_text(
                _GOOD_RULE.replace("expect_column_values_to_not_be_null", "expect_column_to_be_pretty")
            ),
            "entities.account.rules.0.expectation",
            id="unsupported-expectation",
        ),
        pytest.param(
            _rules_text(_GOOD_RULE + "  mostly: 1.5\n"),
            "entities.account.rules.0.mostly: Input should be less than or equal to 1",
            id="mostly-above-one",
        ),
        pytest.param(
            _rules_text(_GOOD_RULE.replace('"name is null"', '"name {nmae} is null"')),
            "reason uses unknown fields ['nmae']",
            id="reason-unknown-field",
        ),
        pytest.param(
            _rules_text(_GOOD_RULE.replace('"name is null"', '"name {value.__class__}"')),
            "must be a plain name",
            id="reason-attribute-access",
        ),
        pytest.param(
            _rules_text(
                """
                name: email_format
                expectation: expect_column_values_to_match_regex
                kwargs: {column: email, regex: '[a-z]+@[a-z.]+'}
                reason: "bad email {value}"
                """
            ),
            "must be anchored",
            id="regex-unanchored",
        ),
        pytest.param(
            _rules_text(
                """
                name: email_format
                expectation: expect_column_values_to_match_regex
                kwargs: {column: email, regex: '^([a-z]+\\Z'}
                reason: "bad email {value}"
                """
            ),
            "does not compile",
            id="regex-broken",
        ),
        pytest.param(
            _rules_text(
                """
                name: name_format
                expectation: expect_column_values_to_be_between
                kwargs: {column: name, min_value: 0}
                reason: "bad name {value}"
                """
            ),
            "between on non-numeric column 'name'",
            id="between-on-string",
        ),
        pytest.param(
            _rules_text(_GOOD_RULE.replace("{column: name}", "{column: name, mostly: 0.5}")),
            "kwargs may not set ['mostly']",
            id="reserved-kwarg",
        ),
        pytest.param(
            _rules_text(_GOOD_RULE + "  value_set_ref: iso_4217\n"),
            "value_set_ref only applies to expect_column_values_to_be_in_set",
            id="value-set-ref-misplaced",
        ),
        pytest.param(
            _rules_text(_GOOD_RULE + "  when: [{column: email}]\n"),
            "exactly one of 'is_null' or 'op'",
            id="when-without-test",
        ),
        pytest.param(
            _rules_text(_GOOD_RULE, extra=_COMMON_NAME_REQUIRED),
            "duplicate rule name",
            id="duplicate-name",
        ),
        pytest.param(
            _rules_text(_GOOD_RULE.replace("name: name_required", "name: Name Required")),
            "entities.account.rules.0.name: String should match pattern",
            id="bad-rule-name",
        ),
    ],
)
def test_bad_rules_fail_with_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(data=text, origin="bad.yaml")
    assert "bad.yaml" in str(caught.value)
    assert message in str(caught.value)


def test_good_rule_template_parses() -> None:
    rules = parse_rules(data=_rules_text(_GOOD_RULE))
    assert [rule.name for rule in rules.rules_for("account")] == ["name_required"]


def test_gx_rejecting_kwargs_is_reported_against_the_rule() -> None:
    rules = parse_rules(
        data=_rules_text(
            """
            name: revenue_positive
            expectation: expect_column_values_to_be_between
            kwargs: {column: annual_revenue, min_value: 0, strict_minn: true}
            reason: "revenue {value} is negative"
            """
        )
    )
    with pytest.raises(RulesError, match=r"entities\.account rule revenue_positive: .*strict_minn"):
        build_suite(entity="account", rules=rules)


def test_missing_rules_file_is_a_rules_error(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read rules file"):
        load_rules(path=tmp_path / "nope.yaml")


def test_entity_without_rules_is_a_rules_error() -> None:
    rules = parse_rules(data=_rules_text(_GOOD_RULE))
    with pytest.raises(RulesError, match="no rules declared for entity 'invoice'"):
        rules.rules_for("invoice")
