"""Data-quality rules per canonical entity, declared in ``rules.yaml`` and validated with pydantic.

A rule names one Great Expectations expectation (from :data:`SUPPORTED_EXPECTATIONS`), its kwargs,
``mostly`` and a reason template. Rows failing a rule are quarantined whatever ``mostly`` says;
``mostly`` only decides whether the feed as a whole passes (a failing suite stops the load).

Besides the canonical columns a rule may read *derived* columns, computed in Arrow before GX sees
the batch, for checks GX cannot express on one column:

- ``sum_gap``: ``abs(total - sum(parts))`` in exact decimal arithmetic (gross = net + tax);
- ``raw_value``: the value of one of ``keys`` in the ``_raw`` source JSON (the first occurrence in
  the text; empty strings and nulls count as absent), so a rule can tell "the source gave a value
  the mapping could not convert" from "the source gave none". Found with a vectorised regex, not a
  JSON parse per row; a key nested deeper in the JSON matches too;
- ``first_present``: the first of several columns that holds a value, so a rule can ask for any one
  of them (an e-mail or a family name) over every row.

Each kind is a declared model with its own ``derive``; a new kind is one more model in ``Derived``.

A rule may also carry ``when``: conditions (ANDed) that select the rows it applies to; they become
GX ``row_condition`` objects.

``severity: warn`` makes a rule count and report its failing rows without quarantining them or ever
failing the suite (e.g. phones kept as digits because they could not be made E.164); the default,
``error``, quarantines.

Nothing is read at import time: call :func:`load_rules`.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from crm_pipelines.canonical import ENTITIES
from crm_pipelines.lake import DELETED
from crm_pipelines.yamlfile import problems, safe_load

RAW_COLUMN = "_raw"

# Expectation type -> the kwargs naming the columns it reads. Only expectations whose failing rows
# GX can report (map expectations) make sense for row-level quarantine.
SUPPORTED_EXPECTATIONS: dict[str, tuple[str, ...]] = {
    "expect_column_values_to_not_be_null": ("column",),
    "expect_column_values_to_match_regex": ("column",),
    "expect_column_values_to_be_in_set": ("column",),
    "expect_column_values_to_be_between": ("column",),
    "expect_column_values_to_be_unique": ("column",),
    "expect_column_pair_values_a_to_be_greater_than_b": ("column_A", "column_B"),
    "expect_column_pair_values_to_be_in_set": ("column_A", "column_B"),
}
ExpectationType = Literal[
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_match_regex",
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_be_between",
    "expect_column_values_to_be_unique",
    "expect_column_pair_values_a_to_be_greater_than_b",
    "expect_column_pair_values_to_be_in_set",
]

# Kwargs the validation step owns; letting a rule set them would break quarantine bookkeeping.
_RESERVED_KWARGS = frozenset(
    {"mostly", "meta", "row_condition", "condition_parser", "result_format", "catch_exceptions", "batch_id"}
)
# Template fields every rule may use besides columns and its own kwargs.
_TEMPLATE_BUILTINS = frozenset({"value", "column", "rule", "entity"})

_NAME = r"^[a-z][a-z0-9_]*$"
_DERIVED_NAME = r"^_[a-z][a-z0-9_]*$"


class RulesError(ValueError):
    """The rules file cannot be read or does not describe valid rules."""


# Named value sets a rule can reference instead of listing hundreds of codes inline.
def _iso_4217() -> list[str]:
    import pycountry

    # XTS (testing) and XXX (no currency) are ISO codes, but never a real invoice currency.
    return sorted(c.alpha_3 for c in pycountry.currencies if c.alpha_3 not in {"XTS", "XXX"})


def _iso_3166_alpha2() -> list[str]:
    import pycountry

    return sorted(c.alpha_2 for c in pycountry.countries)


ValueSetRef = Literal["iso_4217", "iso_3166_alpha2"]
_VALUE_SETS: dict[str, Any] = {"iso_4217": _iso_4217, "iso_3166_alpha2": _iso_3166_alpha2}


@functools.cache
def named_value_set(name: str) -> tuple[str, ...]:
    """Return the members of a named value set.

    Args:
        name: ``iso_4217`` (active currency codes) or ``iso_3166_alpha2`` (country codes).

    Returns:
        The codes, sorted.
    """
    if name not in _VALUE_SETS:
        raise RulesError(f"unknown value set {name!r}; known: {sorted(_VALUE_SETS)}")
    return tuple(_VALUE_SETS[name]())


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(_Model):
    """One row condition: ``{column, is_null}`` or ``{column, op, value}``."""

    column: str
    is_null: bool | None = None
    op: Literal["==", "!=", "<", "<=", ">", ">=", "in", "not_in"] | None = None
    value: Any = None

    @model_validator(mode="after")
    def _one_form(self) -> Condition:
        if (self.is_null is None) == (self.op is None):
            raise ValueError("a condition needs exactly one of 'is_null' or 'op' (with 'value')")
        if self.op is not None and self.value is None:
            raise ValueError(f"condition on {self.column!r} with op {self.op!r} needs a 'value'")
        if self.op in ("in", "not_in") and not isinstance(self.value, list):
            raise ValueError(f"condition on {self.column!r} with op {self.op!r} needs a list 'value'")
        return self


#: Reads one column of the batch, cast to its canonical type.
ColumnReader = Callable[[str], pa.ChunkedArray]


class SumGap(_Model):
    """Derived column ``abs(total - sum(parts))``, null when any input is null."""

    kind: Literal["sum_gap"]
    name: str = Field(pattern=_DERIVED_NAME)
    total: str
    parts: list[str] = Field(min_length=1)
    reads_raw: ClassVar[bool] = False  # whether it reads the source row's JSON (``_raw``)

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.total, *self.parts)

    @property
    def arrow_type(self) -> pa.DataType:
        return pa.decimal128(38, 2)

    def derive(self, table: pa.Table, column: ColumnReader) -> pa.ChunkedArray:
        parts = [column(part) for part in self.parts]
        acc = parts[0]
        for part in parts[1:]:
            acc = pc.add(acc, part)
        # Exact decimal arithmetic: a float gap of 0.01 can come out as 0.010000000000000009.
        return pc.abs(pc.subtract(column(self.total), acc))


class RawValue(_Model):
    """Derived column: the (non-empty) value of one of ``keys`` in the ``_raw`` JSON, else null.

    The value is the JSON-escaped text (``\\u00d6sterreich``); a quarantine row shows it unescaped.
    """

    kind: Literal["raw_value"]
    name: str = Field(pattern=_DERIVED_NAME)
    keys: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+$")]] = Field(min_length=1)
    reads_raw: ClassVar[bool] = True

    @property
    def inputs(self) -> tuple[str, ...]:
        # _raw is optional: without it the column is all null and rules reading it never fire.
        return ()

    @property
    def arrow_type(self) -> pa.DataType:
        return pa.string()

    def derive(self, table: pa.Table, column: ColumnReader) -> pa.ChunkedArray:
        if self.name in table.column_names:
            # Derived before and kept in its place of the JSON (staging's state: mapping/state.py).
            return table.column(self.name).cast(pa.string())
        if RAW_COLUMN not in table.column_names:
            return pa.chunked_array([pa.nulls(table.num_rows, pa.string())])
        raw = table.column(RAW_COLUMN)
        if not pa.types.is_string(raw.type) and not pa.types.is_large_string(raw.type):
            raw = raw.cast(pa.string())
        alternatives = "|".join(self.keys)  # keys are [A-Za-z0-9_]+, nothing to escape
        # A non-empty JSON string (escapes kept) or a bare number / boolean after "key":
        pattern = (
            rf'"(?:{alternatives})"\s*:\s*'
            r'(?:"(?P<s>(?:[^"\\]|\\.)+)"|(?P<n>-?[0-9][0-9.eE+-]*|true|false))'
        )
        matches = pc.extract_regex(raw, pattern=pattern)
        text = pc.struct_field(matches, "s")
        bare = pc.struct_field(matches, "n")
        return pc.if_else(pc.equal(text, ""), bare, text)


class FirstPresent(_Model):
    """Derived column: the first of ``columns`` that holds a value (not null, not blank), as text;
    null when none does.

    A rule on it asks for any one of several columns (an e-mail or at least a family name) over every
    row. The same rule written as ``not_null(last_name) when email is null`` is judged over the rows
    without an e-mail only, so its share moves with every e-mail filled in elsewhere, and a handful of
    rows decides it.
    """

    kind: Literal["first_present"]
    name: str = Field(pattern=_DERIVED_NAME)
    columns: list[str] = Field(min_length=2)
    reads_raw: ClassVar[bool] = False

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(self.columns)

    @property
    def arrow_type(self) -> pa.DataType:
        return pa.string()

    def derive(self, table: pa.Table, column: ColumnReader) -> pa.ChunkedArray:
        present = []
        for name in self.columns:
            text = column(name).cast(pa.string())
            present.append(
                pc.if_else(pc.equal(pc.utf8_trim_whitespace(text), ""), pa.scalar(None, pa.string()), text)
            )
        return pc.coalesce(*present)


Derived = Annotated[SumGap | RawValue | FirstPresent, Field(discriminator="kind")]
DerivedColumn = SumGap | RawValue | FirstPresent


class Rule(_Model):
    """One data-quality rule: a GX expectation plus what a quarantine row says about a failure."""

    name: str = Field(pattern=_NAME)
    expectation: ExpectationType
    kwargs: dict[str, Any]
    mostly: float = Field(default=1.0, gt=0.0, le=1.0)
    reason: str = Field(min_length=1)
    when: list[Condition] = Field(default_factory=list)
    value_set_ref: ValueSetRef | None = None
    description: str | None = None
    # error: failing rows are quarantined and `mostly` decides the suite; warn: failing rows are only
    # counted (metadata), they flow on and never fail the suite.
    severity: Literal["error", "warn"] = "error"

    @field_validator("kwargs")
    @classmethod
    def _no_reserved_kwargs(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted(_RESERVED_KWARGS & kwargs.keys())
        if reserved:
            raise ValueError(f"kwargs may not set {reserved}: use the rule's own 'mostly' / 'when' fields")
        return kwargs

    @field_validator("reason")
    @classmethod
    def _reason_is_template(cls, reason: str) -> str:
        template_fields(reason)  # raises ValueError on a malformed template
        return reason

    @model_validator(mode="after")
    def _kwargs_fit_expectation(self) -> Rule:
        for key in SUPPORTED_EXPECTATIONS[self.expectation]:
            if not isinstance(self.kwargs.get(key), str):
                raise ValueError(f"{self.expectation} needs kwargs.{key} (a column name)")
        if self.value_set_ref is not None:
            if self.expectation != "expect_column_values_to_be_in_set":
                raise ValueError("value_set_ref only applies to expect_column_values_to_be_in_set")
            if "value_set" in self.kwargs:
                raise ValueError("give either kwargs.value_set or value_set_ref, not both")
        elif self.expectation == "expect_column_values_to_be_in_set" and "value_set" not in self.kwargs:
            raise ValueError("expect_column_values_to_be_in_set needs kwargs.value_set or value_set_ref")
        if self.expectation == "expect_column_values_to_match_regex":
            regex = self.kwargs.get("regex")
            if not isinstance(regex, str):
                raise ValueError("expect_column_values_to_match_regex needs kwargs.regex (a string)")
            try:
                re.compile(regex)
            except re.error as exc:
                raise ValueError(f"kwargs.regex {regex!r} does not compile: {exc}") from exc
            # GX's pandas engine uses re.search: an unanchored pattern would pass on a substring.
            if not regex.startswith("^") or not (regex.endswith("$") or regex.endswith(r"\Z")):
                raise ValueError(
                    f"kwargs.regex {regex!r} must be anchored: start with ^ and end with $ or \\Z"
                )
        if self.expectation == "expect_column_values_to_be_between" and not (
            {"min_value", "max_value"} & self.kwargs.keys()
        ):
            raise ValueError("expect_column_values_to_be_between needs kwargs.min_value and/or max_value")
        if self.expectation == "expect_column_pair_values_to_be_in_set" and not isinstance(
            self.kwargs.get("value_pairs_set"), list
        ):
            raise ValueError("expect_column_pair_values_to_be_in_set needs kwargs.value_pairs_set (a list)")
        return self

    @property
    def columns(self) -> tuple[str, ...]:
        """Columns the expectation reads (not counting ``when``)."""
        return tuple(self.kwargs[key] for key in SUPPORTED_EXPECTATIONS[self.expectation])

    @property
    def column(self) -> str:
        """The rule's primary column: ``column`` or ``column_A``."""
        return self.columns[0]

    def resolved_kwargs(self) -> dict[str, Any]:
        """The kwargs GX receives, with ``value_set_ref`` expanded and YAML lists made tuples.

        Returns:
            A fresh dict, safe to modify.
        """
        kwargs = dict(self.kwargs)
        if self.value_set_ref is not None:
            kwargs["value_set"] = list(named_value_set(self.value_set_ref))
        if "value_pairs_set" in kwargs:
            kwargs["value_pairs_set"] = [tuple(pair) for pair in kwargs["value_pairs_set"]]
        return kwargs


class EntityRules(_Model):
    """Derived columns and rules of one canonical entity."""

    derived: list[Derived] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)


class RuleSet(_Model):
    """The whole rules file: rules every entity shares plus per-entity rules."""

    version: Literal[1]
    # A feed of a few dozen rows with one bad row is not broken, though 1 in 13 is below any
    # sensible `mostly`: this many failing rows per rule never fail the suite on their own.
    tolerated_failures: int = Field(default=2, ge=0)
    common: list[Rule] = Field(default_factory=list)
    entities: dict[str, EntityRules]

    @model_validator(mode="after")
    def _fit_canonical_schemas(self) -> RuleSet:
        problems: list[str] = []
        for entity, spec in self.entities.items():
            schema = ENTITIES.get(entity)
            if schema is None:
                problems.append(f"entities.{entity}: unknown entity; known: {sorted(ENTITIES)}")
                continue
            problems.extend(_entity_problems(entity, schema, spec, self.common))
        if problems:
            raise ValueError("\n  ".join(["rules do not fit the canonical schemas:", *problems]))
        return self

    def rules_for(self, entity: str) -> list[Rule]:
        """Common rules followed by the entity's own rules.

        Args:
            entity: Canonical entity name.

        Returns:
            The rules, in declaration order.
        """
        return [*self.common, *self._entity(entity).rules]

    def derived_for(self, entity: str) -> list[DerivedColumn]:
        """Derived columns the entity's rules may read.

        Args:
            entity: Canonical entity name.

        Returns:
            The derived column specs, in declaration order.
        """
        return list(self._entity(entity).derived)

    def derived_from_raw(self, entity: str) -> list[DerivedColumn]:
        """The derived columns of ``entity`` that read the source row's JSON (``_raw``)."""
        return [derived for derived in self.derived_for(entity) if derived.reads_raw]

    def _entity(self, entity: str) -> EntityRules:
        if entity not in self.entities:
            raise RulesError(f"no rules declared for entity {entity!r}; declared: {sorted(self.entities)}")
        return self.entities[entity]


def template_fields(template: str) -> set[str]:
    """Field names used by a ``str.format`` reason template.

    Args:
        template: E.g. ``"amount {value} must be >= {min_value}"``.

    Returns:
        The field names.

    Raises:
        ValueError: The template does not parse, or uses attribute / index access or positional fields
            (reasons are formatted from plain values only).
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"reason template {template!r} does not parse: {exc}") from exc
    names: set[str] = set()
    for _literal, field, _spec, _conversion in parsed:
        if field is None:
            continue
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", field):
            raise ValueError(f"reason template {template!r}: field {{{field}}} must be a plain name")
        names.add(field)
    return names


_NUMERIC_OR_TEMPORAL = (pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal, pa.types.is_temporal)


def _entity_problems(entity: str, schema: pa.Schema, spec: EntityRules, common: Iterable[Rule]) -> list[str]:
    """Cross-checks pydantic cannot do field by field: columns exist, names are unique, types fit."""
    problems: list[str] = []
    where = f"entities.{entity}"
    types: dict[str, pa.DataType] = {field.name: field.type for field in schema}
    for derived in spec.derived:
        # The source JSON and the deleted flag travel beside the canonical columns of a staged row.
        if derived.name in types or derived.name in (RAW_COLUMN, DELETED):
            problems.append(f"{where}.derived {derived.name}: name is already a column")
        for column in derived.inputs:
            if column not in schema.names:
                problems.append(f"{where}.derived {derived.name}: unknown column {column!r}")
            elif isinstance(derived, SumGap) and not pa.types.is_decimal(types[column]):
                problems.append(f"{where}.derived {derived.name}: column {column!r} is not a decimal")
        types[derived.name] = derived.arrow_type
    seen: set[str] = set()
    for rule in [*common, *spec.rules]:
        at = f"{where} rule {rule.name}"
        if rule.name in seen:
            problems.append(f"{at}: duplicate rule name (common rules apply to every entity)")
        seen.add(rule.name)
        for column in [*rule.columns, *(c.column for c in rule.when)]:
            if column not in types:
                problems.append(f"{at}: unknown column {column!r}; columns: {sorted(types)}")
        kwarg_names = set(rule.kwargs) | ({"value_set"} if rule.value_set_ref else set())
        unknown = template_fields(rule.reason) - set(types) - kwarg_names - _TEMPLATE_BUILTINS
        if unknown:
            problems.append(f"{at}: reason uses unknown fields {sorted(unknown)}")
        column_type = types.get(rule.column)
        if column_type is None:
            continue
        if rule.expectation == "expect_column_values_to_match_regex" and not pa.types.is_string(column_type):
            problems.append(f"{at}: regex on non-string column {rule.column!r} ({column_type})")
        if rule.expectation == "expect_column_values_to_be_between" and not any(
            check(column_type) for check in _NUMERIC_OR_TEMPORAL
        ):
            problems.append(f"{at}: between on non-numeric column {rule.column!r} ({column_type})")
    return problems


def _format_validation_error(origin: str, exc: ValidationError) -> str:
    return "\n".join([f"rules file {origin} is invalid:", *(f"  {line}" for line in problems(exc))])


def parse_rules(*, data: Mapping[str, Any] | str, origin: str = "<string>") -> RuleSet:
    """Validate rules given as YAML text or as an already-parsed mapping.

    Args:
        data: YAML text, or the mapping it parses to.
        origin: Where the rules came from, for error messages.

    Returns:
        The validated rule set.

    Raises:
        RulesError: The YAML does not parse or the rules are invalid; the message lists every problem
            with its location.
    """
    if isinstance(data, str):
        try:
            data = safe_load(data)
        except yaml.YAMLError as exc:
            raise RulesError(f"rules file {origin} is not valid YAML: {exc}") from exc
    if not isinstance(data, Mapping):
        raise RulesError(f"rules file {origin} must hold a mapping with 'version' and 'entities'")
    try:
        return RuleSet.model_validate(data)
    except ValidationError as exc:
        raise RulesError(_format_validation_error(origin, exc)) from exc


def default_rules_path() -> Path:
    """Path of the packaged ``rules.yaml``.

    Returns:
        The path (inside the installed package).
    """
    return Path(str(resources.files("crm_pipelines.quality").joinpath("rules.yaml")))


@functools.cache
def _load_default() -> RuleSet:
    path = default_rules_path()
    return parse_rules(data=path.read_text(encoding="utf-8"), origin=str(path))


def load_rules(*, path: Path | str | None = None) -> RuleSet:
    """Read and validate a rules file.

    Args:
        path: A rules YAML file; ``None`` for the packaged ``rules.yaml`` (read once per process).

    Returns:
        The validated rule set.

    Raises:
        RulesError: The file is missing, is not YAML, or its rules are invalid.
    """
    if path is None:
        return _load_default()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"cannot read rules file {path}: {exc}") from exc
    return parse_rules(data=text, origin=str(path))
