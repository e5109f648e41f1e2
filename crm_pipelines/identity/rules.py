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

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from crm_pipelines.yamlfile import parse_declaration

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
        "first_name": "Given name, cleaned, without leading honorifics (Dr. Anna -> anna).",
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
        "last_name_folded": "Family name transliterated (ä -> ae, ß -> ss, ø -> oe ...), then cleaned: "
        "Müller and Mueller fold alike.",
        "first_initial": "First letter of the given name.",
        "email_mailbox": "Mailbox of the e-mail address: the part before the '@' without a '+tag'.",
        "phone_digits": "Digits of the phone, whatever its format (national, E.164 or unparsable); "
        "null below 6 digits.",
        "birth_date": "Birth date (ISO).",
        "government_id": "Government id (national id, social security number): letters and digits, upper case.",
        "postal_code": "Mailing postal code, upper case without spaces or dashes.",
        "city": "Mailing city, cleaned.",
        "street": "Mailing street line, cleaned.",
    },
}

# The levels of each comparison kind, best first (scoring.py holds their SQL).
COMPARISON_LEVELS: dict[str, tuple[str, ...]] = {
    "given_name": ("exact", "swapped", "nickname", "initial", "jw92", "jw80", "different"),
    "family_name": ("exact", "swapped", "transliteration", "jw92", "jw80", "different"),
    "email": ("exact", "mailbox", "same_domain", "other_domain", "different"),
    "phone": ("exact", "last8", "different"),
    "company": ("exact", "jw92", "different"),
    "exact": ("exact", "different"),
    "date": ("exact", "typo", "within_year", "different"),
    "postcode": ("exact", "same_area", "different"),
    "identifier": ("exact", "typo", "different"),
}

# How a scored comparison reads a pair of values, each with its levels from best to worst (the
# SQL is in scoring.py). A null on either side is no evidence either way.
COMPARISON_KINDS: dict[str, str] = {
    "given_name": "exact (weighted by the name's frequency), swapped with the family name, give or "
    "take a typo (imports swap the two fields), nickname or diminutive (nicknames "
    "package), initial of the other, Jaro-Winkler >= 0.92, >= 0.80, different",
    "family_name": "exact (weighted by the name's frequency), swapped with the given name, same transliteration, Jaro-Winkler >= 0.92, "
    ">= 0.80, different",
    "email": "exact, same mailbox (+tag stripped) where one address is private (free mail), another "
    "mailbox at the same company domain, two company domains, different",
    "phone": "same digits, same last 8 digits (national against international), different",
    "exact": "equal (weighted by the value's frequency), different",
    "company": "equal, Jaro-Winkler >= 0.92, different",
    "date": "equal (weighted by the date's frequency: 1 January stands in for unknown days), one "
    "typing error apart (1986-03-12 / 1986-03-21), within a year, different",
    "postcode": "equal (weighted by the code's frequency), same area (all but the last two "
    "characters: DT6 5LB / DT6 5JZ, 10115 / 10117), different",
    "identifier": "equal (weighted by the value's frequency), one typing error apart (a digit "
    "changed, dropped or two swapped), different",
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
    """A test on a candidate pair: ``equal: <feature>``, ``similar: <feature>`` with a threshold, or
    ``compatible: <feature>`` (equal where both records have a value: two towns say two companies,
    a missing town says nothing)."""

    equal: KeyPart | None = None
    similar: KeyPart | None = None
    compatible: KeyPart | None = None
    method: Literal["jaro_winkler", "jaro"] | None = None
    threshold: float | None = Field(default=None, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _one_kind(self) -> Condition:
        if sum(kind is not None for kind in (self.equal, self.similar, self.compatible)) != 1:
            raise ValueError("a condition needs exactly one of 'equal', 'similar' or 'compatible'")
        if self.similar is None and (self.threshold is not None or self.method is not None):
            raise ValueError("'method' and 'threshold' only apply to 'similar' conditions")
        if self.similar is not None and self.threshold is None:
            raise ValueError(f"similar {self.similar.label}: a threshold (0 < t <= 1) is required")
        return self

    @property
    def part(self) -> KeyPart:
        """The feature this condition compares."""
        part = self.equal or self.similar or self.compatible
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


class Comparison(_Model):
    """One scored comparison: a feature and how its values are compared (``COMPARISON_KINDS``)."""

    feature: str
    kind: Literal[
        "given_name", "family_name", "email", "phone", "exact", "company", "date", "postcode", "identifier"
    ]


class Level(_Model):
    """A comparison's level: ``{feature: email, level: exact}``."""

    feature: str
    level: str


class Apart(Level):
    """A comparison level that says two records are two people, unless one of ``unless`` holds.

    ``review: false``: the level settles it (given names that disagree are two people); such pairs
    never reach the review queue. Otherwise a pair that scores as a match goes to review.
    """

    unless: list[Level] = Field(default_factory=list)
    review: bool = True


class Scoring(_Model):
    """Fellegi-Sunter scoring of candidate pairs (weights estimated from the data, no labels).

    Attributes:
        blocking: Candidate pairs: records equal (and non-null) on every part of any one key.
        comparisons: The evidence compared on each candidate pair.
        merge_at: Match probability at or above which a pair links (if its clusters are consistent).
        review_at: Pairs from here up to ``merge_at`` (and consistent-check refusals) go to
            ``ops.match_review`` for a person to decide.
        reject_below: A pair scoring below this is evidence that the two are different people: their
            clusters never merge through other records.
        min_compared: A pair with fewer comparisons that both records have values for never merges
            on its own (two "Ann"s at one company with nothing else known go to review).
        apart_when: Comparison levels that make two records two people (given names that disagree
            outright: family members share a landline, an address and a company): such a pair never
            merges, and no other pair joins their clusters.
        max_cluster_size: A join that would make a cluster larger is refused (and queued for review):
            one person with more records than this is a chain of look-alikes, not a person.
        max_review: The review queue's size above which its asset check warns.
    """

    blocking: list[list[KeyPart]] = Field(min_length=1)
    comparisons: list[Comparison] = Field(min_length=2)
    merge_at: float = Field(default=0.95, gt=0.0, lt=1.0)
    review_at: float = Field(default=0.5, gt=0.0, lt=1.0)
    reject_below: float = Field(default=0.01, gt=0.0, lt=1.0)
    min_compared: int = Field(default=3, ge=1)
    apart_when: list[Apart] = Field(default_factory=list)
    max_cluster_size: int = Field(default=50, ge=2)
    max_review: int = Field(default=500, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Scoring:
        if not self.reject_below < self.review_at <= self.merge_at:
            raise ValueError("thresholds must satisfy reject_below < review_at <= merge_at")
        for key in self.blocking:
            if not key:
                raise ValueError("a blocking key needs at least one feature")
        kinds = {c.feature: c.kind for c in self.comparisons}
        for level in [*self.apart_when, *(u for a in self.apart_when for u in a.unless)]:
            if level.feature not in kinds:
                raise ValueError(f"apart_when: {level.feature!r} is not a comparison")
            if level.level not in COMPARISON_LEVELS[kinds[level.feature]]:
                raise ValueError(
                    f"apart_when: {level.feature} ({kinds[level.feature]}) has no level {level.level!r}; "
                    f"levels: {', '.join(COMPARISON_LEVELS[kinds[level.feature]])}"
                )
        return self

    def features(self) -> list[str]:
        return [*(p.feature for key in self.blocking for p in key), *(c.feature for c in self.comparisons)]


class EntityRules(_Model):
    """Match rules of one entity. Rule order is precedence in the crosswalk.

    With ``scoring``, pairs are scored (Fellegi-Sunter) instead and the rules are not applied.
    Which value a golden record keeps is field ownership (``crm_pipelines/ownership.yaml``).
    """

    max_block_size: int = Field(default=1000, ge=2)
    rules: list[MatchRule] = Field(default_factory=list)
    scoring: Scoring | None = None

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
    honorifics: list[str] = Field(
        default_factory=list,
        description="Titles and ordinals removed from the start of given names (Dr, Sir, 1st).",
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

    @field_validator("legal_suffixes", "legal_prefixes", "honorifics")
    @classmethod
    def _valid_legal_words(cls, value: list[str]) -> list[str]:
        folded = [_fold_legal_word(w) for w in value]
        bad = [w for w, f in zip(value, folded, strict=True) if not _LEGAL_WORD_RE.match(f)]
        if bad:
            raise ValueError(f"words must contain letters or digits: {bad}")
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
            for feature in entity_rules.scoring.features() if entity_rules.scoring else []:
                if feature not in vocabulary:
                    problems.append(
                        f"{entity} scoring: unknown feature {feature!r}"
                        f"{_did_you_mean(feature, vocabulary)}; known: {', '.join(sorted(vocabulary))}"
                    )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def for_entity(self, entity: Entity) -> EntityRules:
        """Rules of ``entity`` ('account' or 'contact')."""
        return self.account if entity == "account" else self.contact


def review_limit(rules: MatchRules) -> int:
    """The review queue's size past which its check warns (the entities' ``max_review`` together)."""
    return sum(r.scoring.max_review for r in (rules.account, rules.contact) if r.scoring is not None)


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
    return parse_declaration(text, origin=origin, model=MatchRules, error=MatchRulesError, what="match rules")


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
