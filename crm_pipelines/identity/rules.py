"""Declared match rules for identity resolution, validated with pydantic.

The rules live in YAML (``match_rules.yaml`` in this package is the default) and never contain SQL:
a blocking key is a list of *features* from a small fixed vocabulary (below), each optionally
transformed (``soundex``, ``prefix``), and a rule's conditions are exact equality or a string
similarity threshold on such a feature. :mod:`crm_pipelines.identity.resolve` compiles them to DuckDB SQL.

Example::

    account:
      rules:
        - name: phone_similar_name
          block: [phone]
          conditions:
            - {similar: normalized_name, method: jaro_winkler, threshold: 0.85}

Which value a golden record keeps is field ownership: ``crm_pipelines/ownership.yaml``.
"""

from __future__ import annotations

import difflib
import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from crm_pipelines.yamlfile import problems, safe_load

Entity = Literal["account", "contact"]
ENTITIES: tuple[Entity, ...] = ("account", "contact")

# The feature vocabulary: what a blocking key or a condition may refer to, per entity. Every feature
# is a cleaned value (lower case, accents stripped, punctuation folded to spaces, empty -> null), so
# nulls never link. The SQL behind each name is in resolve.py; a test keeps the two in step.
FEATURES: dict[Entity, dict[str, str]] = {
    "account": {
        "name": "Company name, cleaned.",
        "normalized_name": "Company name without punctuation and legal-form words (GmbH, Ltd, Inc ...).",
        "domain": "Web domain; null for free-mail domains.",
        "email": "Main e-mail address.",
        "email_local": "Part of the e-mail address before the '@'.",
        "email_domain": "Domain of the e-mail address; null for free-mail domains.",
        "web_domain": "Web domain, else the e-mail domain; null for free-mail domains.",
        "phone": "Phone in E.164; null when shorter than 6 digits (placeholders).",
        "street": "Street line, cleaned.",
        "city": "City, cleaned.",
        "postal_code": "Postal code, upper case without spaces or dashes.",
        "country": "ISO 3166-1 alpha-2 country code.",
        "industry": "Industry, cleaned.",
        "vat_number": "VAT number, upper case, letters and digits only.",
    },
    "contact": {
        "first_name": "Given name, cleaned.",
        "last_name": "Family name, cleaned.",
        "full_name": "'first last', cleaned; null unless both parts are present.",
        "sorted_name": "First and last name in alphabetical order (tolerates swapped first/last names); "
        "null unless both parts are present.",
        "email": "E-mail address.",
        "email_local": "Part of the e-mail address before the '@'.",
        "email_domain": "Domain of the e-mail address; null for free-mail domains.",
        "phone": "Phone in E.164; null when shorter than 6 digits (placeholders).",
        "title": "Job title, cleaned.",
        "country": "ISO 3166-1 alpha-2 country code.",
        "account": "record_id of the contact's account in its own source.",
        "golden_account": "Golden id of the contact's account after account resolution "
        "(the account record_id when the account is unknown).",
    },
}

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_DOMAIN_RE = re.compile(r"^[a-z0-9-]+(\.[a-z0-9-]+)+$")
# A legal-form word after folding, as company names are folded before matching: "g.m.b.h." -> "gmbh".
_LEGAL_WORD_RE = re.compile(r"^[^\W_]+( [^\W_]+)*$")


class MatchRulesError(ValueError):
    """The match-rules file is missing, not YAML, or does not validate."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeyPart(_Model):
    """One feature of a blocking key or condition, optionally transformed.

    In YAML either a plain feature name (``country``) or a mapping
    (``{feature: last_name, transform: soundex}``, ``{feature: normalized_name, transform: prefix, length: 3}``).
    """

    feature: str
    transform: Literal["value", "soundex", "prefix"] = "value"
    length: int | None = Field(default=None, ge=1, le=64, description="Characters kept by 'prefix'.")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"feature": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _length_goes_with_prefix(self) -> KeyPart:
        if self.transform == "prefix" and self.length is None:
            raise ValueError(f"feature {self.feature!r}: transform 'prefix' needs a length")
        if self.transform != "prefix" and self.length is not None:
            raise ValueError(f"feature {self.feature!r}: length only applies to transform 'prefix'")
        return self

    @property
    def label(self) -> str:
        """Readable form for messages, e.g. ``prefix3(normalized_name)``."""
        if self.transform == "value":
            return self.feature
        suffix = str(self.length) if self.transform == "prefix" else ""
        return f"{self.transform}{suffix}({self.feature})"


class Condition(_Model):
    """A test on a candidate pair: ``equal: <feature>`` or ``similar: <feature>`` with a threshold."""

    equal: KeyPart | None = None
    similar: KeyPart | None = None
    method: Literal["jaro_winkler", "jaro"] | None = None
    threshold: float | None = Field(default=None, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _one_kind(self) -> Condition:
        if (self.equal is None) == (self.similar is None):
            raise ValueError("a condition needs exactly one of 'equal' or 'similar'")
        if self.equal is not None and (self.threshold is not None or self.method is not None):
            raise ValueError("'method' and 'threshold' only apply to 'similar' conditions")
        if self.similar is not None and self.threshold is None:
            raise ValueError(f"similar {self.similar.label}: a threshold (0 < t <= 1) is required")
        return self

    @property
    def part(self) -> KeyPart:
        """The feature this condition compares."""
        part = self.equal if self.equal is not None else self.similar
        assert part is not None  # guaranteed by _one_kind
        return part

    @property
    def similarity_method(self) -> Literal["jaro_winkler", "jaro"]:
        return self.method or "jaro_winkler"


class MatchRule(_Model):
    """Records sharing the blocking key (all parts non-null) and passing every condition match."""

    name: str
    block: list[KeyPart] = Field(min_length=1)
    conditions: list[Condition] = Field(default_factory=list)
    max_block_size: int | None = Field(
        default=None,
        ge=2,
        description="Blocks with more records are skipped (placeholder values, huge cities); "
        "defaults to the entity's max_block_size.",
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(f"rule name {value!r} must be lower case letters, digits and '_'")
        if value == "self":
            raise ValueError("rule name 'self' is reserved for singletons and survivors")
        return value

    def parts(self) -> list[KeyPart]:
        """Every feature the rule reads (block then conditions)."""
        return [*self.block, *(c.part for c in self.conditions)]


class EntityRules(_Model):
    """Match rules of one entity. Rule order is precedence in the crosswalk.

    Which value a golden record keeps is field ownership (``crm_pipelines/ownership.yaml``).
    """

    max_block_size: int = Field(default=1000, ge=2)
    rules: list[MatchRule] = Field(default_factory=list)

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, value: list[MatchRule]) -> list[MatchRule]:
        names = [rule.name for rule in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"rule names must be unique, repeated: {twice}")
        return value

    def block_limit(self, rule: MatchRule) -> int:
        return rule.max_block_size or self.max_block_size


def _fold_legal_word(word: str) -> str:
    """Fold a legal-form word the way names are folded for matching: 'G.m.b.H.' -> 'gmbh'."""
    folded = re.sub(r"[.'`´’]", "", word.strip().lower())
    return " ".join(re.sub(r"[\W_]+", " ", folded).split())


class MatchRules(_Model):
    """The whole match-rules file."""

    version: Literal[1] = 1
    free_mail_domains: list[str] = Field(
        default_factory=list, description="Mail providers whose domain never identifies a company."
    )
    legal_suffixes: list[str] = Field(
        default_factory=list, description="Legal-form words removed from the end of company names."
    )
    legal_prefixes: list[str] = Field(
        default_factory=list, description="Legal-form words removed from the start (AB Volvo, PT ...)."
    )
    account: EntityRules = Field(default_factory=EntityRules)
    contact: EntityRules = Field(default_factory=EntityRules)

    @field_validator("free_mail_domains")
    @classmethod
    def _valid_domains(cls, value: list[str]) -> list[str]:
        domains = [d.strip().lower() for d in value]
        bad = [d for d in domains if not _DOMAIN_RE.match(d)]
        if bad:
            raise ValueError(f"not domains: {bad}")
        return sorted(set(domains))

    @field_validator("legal_suffixes", "legal_prefixes")
    @classmethod
    def _valid_legal_words(cls, value: list[str]) -> list[str]:
        folded = [_fold_legal_word(w) for w in value]
        bad = [w for w, f in zip(value, folded, strict=True) if not _LEGAL_WORD_RE.match(f)]
        if bad:
            raise ValueError(f"legal-form words must contain letters or digits: {bad}")
        # Longest first, so "pty ltd" is tried before "ltd" in the alternation.
        return sorted(set(folded), key=lambda w: (-len(w), w))

    @model_validator(mode="after")
    def _known_names(self) -> MatchRules:
        problems: list[str] = []
        for entity in ENTITIES:
            entity_rules = self.for_entity(entity)
            vocabulary = FEATURES[entity]
            for rule in entity_rules.rules:
                for part in rule.parts():
                    if part.feature not in vocabulary:
                        problems.append(
                            f"{entity} rule {rule.name!r}: unknown feature {part.feature!r}"
                            f"{_did_you_mean(part.feature, vocabulary)}; known: {', '.join(sorted(vocabulary))}"
                        )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def for_entity(self, entity: Entity) -> EntityRules:
        """Rules of ``entity`` ('account' or 'contact')."""
        return self.account if entity == "account" else self.contact


def _did_you_mean(name: str, choices: Any) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def default_rules_text() -> str:
    """Text of the match_rules.yaml shipped with the package."""
    return resources.files("crm_pipelines.identity").joinpath("match_rules.yaml").read_text(encoding="utf-8")


def parse_match_rules(*, text: str, origin: str = "<string>") -> MatchRules:
    """Parse and validate match rules from YAML text.

    Args:
        text: The YAML document.
        origin: Where the text came from, for error messages.

    Returns:
        The validated rules.

    Raises:
        MatchRulesError: The text is not YAML or does not validate; the message names every problem.
    """
    try:
        data = safe_load(text)
    except yaml.YAMLError as exc:
        raise MatchRulesError(f"{origin}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise MatchRulesError(f"{origin}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return MatchRules.model_validate(data)
    except ValidationError as exc:
        lines = "\n".join(f"  {line}" for line in problems(exc))
        raise MatchRulesError(f"{origin}: invalid match rules:\n{lines}") from exc


@cache
def load_match_rules(path: Path | None = None) -> MatchRules:
    """Load and validate the match rules.

    Args:
        path: YAML file to read; ``None`` reads the ``match_rules.yaml`` shipped with the package.

    Returns:
        The validated rules.

    Raises:
        MatchRulesError: The file is missing, not YAML, or does not validate.
    """
    if path is None:
        return parse_match_rules(text=default_rules_text(), origin="crm_pipelines/identity/match_rules.yaml")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise MatchRulesError(f"{path}: cannot read match rules: {exc}") from exc
    return parse_match_rules(text=text, origin=str(path))
