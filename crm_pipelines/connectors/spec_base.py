"""What every declaration model is built from: a strict frozen model, template checks, value matches.

The models of a system declaration live beside the code that runs them (:mod:`.spec` assembles
them); they all derive from :class:`SpecModel`, check their templates with :func:`check_template`
and test values with :class:`ValueMatch`.
"""

from __future__ import annotations

import string
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from crm_pipelines.connectors.paths import MISSING, resolve_path

__all__ = ["SpecModel", "ValueMatch", "check_template", "placeholders", "value_matches"]


class SpecModel(BaseModel):
    """Unknown keys are errors (a typo fails at load time, naming its location); declarations are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def placeholders(template: str) -> set[str]:
    """The names a format-string template uses (``"{since}"`` -> ``{"since"}``)."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def check_template(template: str, allowed: frozenset[str]) -> str:
    """Return ``template`` if it only uses ``allowed`` placeholders; else a ValueError naming the rest.

    For field validators: a typo such as ``{feilds}`` fails when the YAML loads, not mid-run.
    """
    try:
        unknown = placeholders(template) - allowed
    except ValueError as exc:  # unbalanced braces
        raise ValueError(f"template {template!r} is not a valid format string: {exc}") from exc
    if unknown:
        raise ValueError(
            f"template {template!r} uses unknown placeholder(s) {sorted(unknown)}; allowed: {sorted(allowed)}"
        )
    return template


class ValueMatch(SpecModel):
    """A test on a value found at a dotted path: equal to a value, or ending with a suffix."""

    path: str
    equals: Any = None
    suffix: str | None = None

    @model_validator(mode="after")
    def _one_test(self) -> ValueMatch:
        if (self.equals is None) == (self.suffix is None):
            raise ValueError("a match needs exactly one of equals or suffix")
        return self


def value_matches(document: Any, match: ValueMatch) -> bool:
    """Whether the value at ``match.path`` equals ``match.equals`` or ends with ``match.suffix``."""
    found = resolve_path(document, match.path)
    if found is MISSING:
        return False
    if match.suffix is not None:
        return isinstance(found, str) and found.endswith(match.suffix)
    return found == match.equals or str(found) == str(match.equals)
