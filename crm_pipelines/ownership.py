"""Validated model of ``ownership.yaml``: which system masters each field of a golden record.

One declaration drives survivorship (which value a golden record keeps) and the syncs (which
fields a sync may write where, and what an edit made elsewhere means). See the YAML file's header.
"""

from __future__ import annotations

import difflib
import re
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from crm_pipelines.canonical import SURVIVOR_FIELDS
from crm_pipelines.yamlfile import parse_declaration

__all__ = [
    "ConflictPolicy",
    "EntityOwnership",
    "FieldOwnership",
    "Ownership",
    "OwnershipError",
    "load_ownership",
    "owned_fields",
    "parse_ownership",
]

DEFAULT_OWNERSHIP = Path(__file__).with_name("ownership.yaml")
ConflictPolicy = Literal["owner_wins", "newest_wins"]
_SYSTEM = re.compile(r"^[a-z][a-z0-9_]*$")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class OwnershipError(ValueError):
    """The ownership declaration is invalid; the message names the file and the bad key."""


def owned_fields(entity: str) -> tuple[str, ...]:
    """The fields of a golden ``entity`` that a system can own (what survivorship chooses)."""
    return SURVIVOR_FIELDS["account" if entity == "account" else "contact"]


def _check_systems(systems: list[str], where: str) -> list[str]:
    bad = [s for s in systems if not _SYSTEM.match(s)]
    if bad:
        raise ValueError(f"{where}: system names are lower case identifiers, got {bad}")
    twice = sorted({s for s in systems if systems.count(s) > 1})
    if twice:
        raise ValueError(f"{where}: {twice} listed twice")
    return systems


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldOwnership(_Model):
    """One field: its owner first, then the systems that fill in when the owner has no value."""

    systems: list[str] = Field(min_length=1)
    conflicts: ConflictPolicy | None = Field(
        default=None, description="How an edit made outside the owner is decided (default: the entity's)."
    )

    @field_validator("systems")
    @classmethod
    def _valid(cls, value: list[str]) -> list[str]:
        return _check_systems(value, "systems")


class EntityOwnership(_Model):
    """Ownership of one entity's fields."""

    default: list[str] = Field(default_factory=list)
    conflicts: ConflictPolicy = "owner_wins"
    clock_skew: str = "5m"
    fields: dict[str, FieldOwnership] = Field(default_factory=dict)

    @field_validator("default")
    @classmethod
    def _valid_default(cls, value: list[str]) -> list[str]:
        return _check_systems(value, "default")

    @field_validator("fields", mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        # `name: [erp, salesforce]` is the short form of `name: {systems: [erp, salesforce]}`.
        if isinstance(value, dict):
            return {k: {"systems": v} if isinstance(v, list) else v for k, v in value.items()}
        return value

    @field_validator("clock_skew")
    @classmethod
    def _valid_skew(cls, value: str) -> str:
        if not _DURATION.match(value):
            raise ValueError(f"clock_skew {value!r} must be a number and a unit s, m, h or d, e.g. '5m'")
        return value

    @property
    def clock_skew_seconds(self) -> int:
        match = _DURATION.match(self.clock_skew)
        assert match is not None  # validated
        return int(match.group(1)) * _SECONDS[match.group(2)]

    def priority(self, field: str) -> list[str]:
        """The systems whose values win for ``field``, best first (the owner, then the fallbacks).

        An empty list for a ``newest_wins`` field: recency decides, the owner winning within the
        clock skew (see :meth:`owner`).
        """
        if self.policy(field) == "newest_wins":
            return []
        declared = self.fields.get(field)
        return list(declared.systems) if declared is not None else list(self.default)

    def owner(self, field: str) -> str | None:
        """The system that owns ``field`` (never written by a sync, except under ``newest_wins``)."""
        declared = self.fields.get(field)
        systems = declared.systems if declared is not None else self.default
        return systems[0] if systems else None

    def policy(self, field: str) -> ConflictPolicy:
        """How an edit of ``field`` made outside its owner is decided."""
        declared = self.fields.get(field)
        return declared.conflicts if declared is not None and declared.conflicts else self.conflicts


class Ownership(_Model):
    """The whole ownership declaration, one section per golden entity."""

    account: EntityOwnership = Field(default_factory=EntityOwnership)
    contact: EntityOwnership = Field(default_factory=EntityOwnership)

    @model_validator(mode="after")
    def _known_fields(self) -> Ownership:
        problems = []
        for entity in ("account", "contact"):
            fields = owned_fields(entity)
            for name in self.for_entity(entity).fields:
                if name not in fields:
                    close = difflib.get_close_matches(name, fields, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    problems.append(
                        f"{entity}.fields: unknown field {name!r}{hint}; known: {', '.join(fields)}"
                    )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def for_entity(self, entity: str) -> EntityOwnership:
        """Ownership of ``entity`` ('account' or 'contact')."""
        if entity not in ("account", "contact"):
            raise KeyError(f"no ownership is declared for {entity!r}")
        return self.account if entity == "account" else self.contact


def parse_ownership(*, text: str, origin: str = "<string>") -> Ownership:
    """Parse and validate an ownership declaration.

    Raises:
        OwnershipError: invalid YAML or content; the message names ``origin`` and each bad key.
    """
    return parse_declaration(text, origin=origin, model=Ownership, error=OwnershipError, what="ownership")


@cache
def load_ownership(path: Path | None = None) -> Ownership:
    """The ownership declaration (``crm_pipelines/ownership.yaml`` by default)."""
    source = path or DEFAULT_OWNERSHIP
    return parse_ownership(text=source.read_text(encoding="utf-8"), origin=str(source))
