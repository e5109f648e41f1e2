"""Validated model of ``mappings.yaml``: how each source dataset maps onto a canonical entity."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from crm_pipelines.canonical import ENTITIES, PHONE_DERIVED
from crm_pipelines.yamlfile import safe_load

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DATASET = re.compile(r"^[a-z][a-z0-9_]*/[a-z][a-z0-9_]*$")
DEFAULT_MAPPINGS = Path(__file__).with_name("mappings.yaml")

Transform = Literal[
    "text",
    "lower",
    "upper",
    "email",
    "phone",
    "country",
    "domain",
    "decimal",
    "int",
    "date",
    "timestamp",
    "bool",
    "ref",
    "value_map",
    "const",
    "code",
]


def check_identifier(name: str) -> str:
    if not IDENTIFIER.match(name):
        raise ValueError(f"{name!r} is not a valid column name (letters, digits, underscore)")
    return name


class ColumnMapping(BaseModel):
    """One canonical column: which source column feeds it and how the value is converted."""

    model_config = ConfigDict(extra="forbid")

    source_column: str | None = Field(default=None, alias="from")
    transform: Transform = "text"
    country_from: str | None = None  # phone: column holding the record's country, for national formats
    ref: str | None = None  # ref: source whose record_id the value points to
    value_map: str | None = None  # value_map: name of a map under value_maps
    value: str | None = None  # const: the literal

    @field_validator("source_column", "country_from")
    @classmethod
    def _identifier(cls, v: str | None) -> str | None:
        return None if v is None else check_identifier(v)

    @field_validator("value", "ref")
    @classmethod
    def _literal(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Za-z0-9_ .:-]*$", v):
            raise ValueError(f"{v!r}: literals may hold letters, digits, space and _ . : - only")
        return v

    @model_validator(mode="after")
    def _complete(self) -> ColumnMapping:
        if self.transform == "const":
            if self.value is None:
                raise ValueError("transform 'const' needs 'value'")
        elif self.source_column is None:
            raise ValueError(f"transform {self.transform!r} needs 'from'")
        if self.transform == "phone" and self.country_from is None:
            raise ValueError("transform 'phone' needs 'country_from' (the column with the record's country)")
        if self.transform == "ref" and self.ref is None:
            raise ValueError("transform 'ref' needs 'ref' (the source the id belongs to)")
        if self.transform == "value_map" and self.value_map is None:
            raise ValueError("transform 'value_map' needs 'value_map' (a name under value_maps)")
        return self


class SourceMapping(BaseModel):
    """How one source feeds one canonical entity."""

    model_config = ConfigDict(extra="forbid")

    source: str
    inputs: dict[str, str]  # alias used in `query` -> lake dataset "<source dir>/<dataset>"
    query: str | None = (
        None  # optional SELECT over {alias} placeholders; default: SELECT * FROM the one input
    )
    # Optional SQL condition over the main input's columns: the entity takes only the rows it holds
    # (HubSpot contacts that are leads). Applied to the main input before the query, and counted the
    # same way by the reconciliation, so the rows it leaves out are not missing rows.
    where: str | None = None
    id: str
    columns: dict[str, ColumnMapping]

    @field_validator("where")
    @classmethod
    def _where(cls, v: str | None) -> str | None:
        if v is not None and (";" in v or not v.strip()):
            raise ValueError("where is one SQL condition (no ';')")
        return v

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        return check_identifier(v)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return check_identifier(v)

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, v: dict[str, str]) -> dict[str, str]:
        for alias, dataset in v.items():
            check_identifier(alias)
            if not DATASET.match(dataset):
                raise ValueError(f"input {alias}: {dataset!r} must look like 'salesforce/accounts'")
        if not v:
            raise ValueError("a mapping needs at least one input")
        return v

    @model_validator(mode="after")
    def _query(self) -> SourceMapping:
        if self.query is None and len(self.inputs) != 1:
            raise ValueError("several inputs need a 'query' that combines them")
        if self.query is not None:
            for alias in re.findall(r"\{(\w+)\}", self.query):
                if alias not in self.inputs:
                    raise ValueError(f"query uses {{{alias}}} which is not under inputs")
        return self


class Mappings(BaseModel):
    """The whole mappings file."""

    model_config = ConfigDict(extra="forbid")

    value_maps: dict[str, dict[str, str]] = Field(default_factory=dict)
    entities: dict[str, list[SourceMapping]]

    @model_validator(mode="after")
    def _consistent(self) -> Mappings:
        for entity, sources in self.entities.items():
            if entity not in ENTITIES:
                raise ValueError(f"unknown entity {entity!r}; known: {sorted(ENTITIES)}")
            allowed = set(ENTITIES[entity].names) - {"record_id", "source", "source_id"}
            for mapping in sources:
                unknown = set(mapping.columns) - allowed
                if unknown:
                    raise ValueError(f"{entity} from {mapping.source}: unknown columns {sorted(unknown)}")
                derived = sorted(set(mapping.columns) & set(PHONE_DERIVED))
                if derived:
                    raise ValueError(
                        f"{entity} from {mapping.source}: {derived} are derived from 'phone' "
                        "(transform phone), not declared"
                    )
                for column in mapping.columns.values():
                    if column.value_map and column.value_map not in self.value_maps:
                        raise ValueError(f"{entity} from {mapping.source}: no value map {column.value_map!r}")
        return self

    def entity_of(self, dataset: str) -> str | None:
        """The entity whose mapping reads ``dataset`` as its main (first) input."""
        for entity, sources in self.entities.items():
            for mapping in sources:
                if next(iter(mapping.inputs.values())) == dataset:
                    return entity
        return None

    def main_input(self, entity: str, source: str) -> str | None:
        for mapping in self.entities.get(entity, []):
            if mapping.source == source:
                return next(iter(mapping.inputs.values()))
        return None

    def datasets(self) -> set[str]:
        return {d for sources in self.entities.values() for m in sources for d in m.inputs.values()}


@cache
def load_mappings(path: Path | None = None) -> Mappings:
    """Read and validate a mappings file (default: the packaged ``mappings.yaml``), once per process."""
    with open(path or DEFAULT_MAPPINGS, encoding="utf-8") as handle:
        return Mappings.model_validate(safe_load(handle))
