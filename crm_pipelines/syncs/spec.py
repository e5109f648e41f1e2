"""Validated model of ``syncs.yaml``: what is written back into which system, how it is matched.

A sync reads rows from the warehouse (a golden entity, or a declared SQL model over ``core``/``marts``)
and writes fields of a target object. A declaration may name several systems: it then stands for one
sync per system (``<name>__<system>``), each its own Dagster asset. Fields reuse the mapping vocabulary
(``crm_pipelines/mapping/mappings.yaml``) in reverse: a field names the target field, the source column
it comes ``from`` and the ``transform`` that reads the target's value (so a value the system spells
differently is still the same value); writing applies the transform backwards. ``fields: mapping``
takes a system's declared mapping of the entity and reverses it.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from crm_pipelines.mapping.spec import Transform, check_identifier
from crm_pipelines.yamlfile import parse_declaration

__all__ = [
    "DEFAULT_SYNCS",
    "Match",
    "ModelSpec",
    "Source",
    "SyncDeclaration",
    "SyncField",
    "SyncSpec",
    "SyncsError",
    "SyncsFile",
    "Target",
    "load_syncs",
    "parse_syncs",
]

DEFAULT_SYNCS = Path(__file__).with_name("syncs.yaml")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
Mode = Literal["upsert", "update", "create"]


class SyncsError(ValueError):
    """The syncs declaration is invalid; the message names the file and the bad key."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SyncField(_Model):
    """One target field: where its value comes from and how the target spells it.

    Attributes:
        source_column: The source row's column (``from``).
        transform: The mapping transform that reads the target's current value into the source's
            form (``text``, ``phone``, ``country``, ``decimal``, ``date``, ``value_map`` ...); written
            values go the other way.
        country_from: ``phone``: the target field holding the record's country.
        value_map: ``value_map``: the map under ``mappings.yaml``'s ``value_maps``; written values
            take its first spelling of each canonical value, unless ``values`` says otherwise.
        values: Source value -> target value, for what the value map does not say.
        format: How the target spells a value: for ``country`` ``name``, ``alpha2`` or ``alpha3``;
            for ``date``/``timestamp`` a strftime pattern.
    """

    source_column: str = Field(alias="from")
    transform: Transform = "text"
    country_from: str | None = None
    value_map: str | None = None
    values: dict[str, str] = Field(default_factory=dict)
    format: str | None = None

    @field_validator("source_column")
    @classmethod
    def _identifier(cls, value: str) -> str:
        return check_identifier(value)

    @model_validator(mode="after")
    def _complete(self) -> SyncField:
        if self.transform in ("const", "ref"):
            raise ValueError(f"transform {self.transform!r} cannot be written back")
        if self.transform == "value_map" and self.value_map is None and not self.values:
            raise ValueError("transform 'value_map' needs 'value_map' or 'values'")
        if (
            self.format is not None
            and self.transform == "country"
            and self.format
            not in (
                "name",
                "alpha2",
                "alpha3",
            )
        ):
            raise ValueError(f"country format {self.format!r}: use name, alpha2 or alpha3")
        return self


class Source(_Model):
    """Where a sync's rows come from: a golden entity, or a declared SQL model.

    Attributes:
        entity: ``account`` or ``contact``: the golden records (``core.golden_<entity>``), keyed by
            ``golden_id``; their fields follow field ownership.
        model: A name under ``models`` (SQL over ``core``/``marts``/``ops``).
        key: The model's column identifying a row (what the sync state remembers).
        system_column: The model's column naming the system a row is for (a sync per system reads
            only its own rows); None: every row goes to every system.
    """

    entity: Literal["account", "contact"] | None = None
    model: str | None = None
    key: str = "golden_id"
    system_column: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Source:
        if (self.entity is None) == (self.model is None):
            raise ValueError("name either an entity or a model")
        if self.entity is not None and self.key != "golden_id":
            raise ValueError("a golden entity is keyed by golden_id")
        return self


class Target(_Model):
    """What a sync writes: the object each system maps onto ``entity``, or one system's object."""

    entity: str | None = None
    system: str | None = None
    object: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Target:
        if (self.entity is None) == (self.object is None):
            raise ValueError("name either the entity (each system's object for it) or an object")
        return self


class Match(_Model):
    """How a source row finds its target record.

    Attributes:
        crosswalk: The records of the target system that ``core.xref_identity`` links to the golden
            record (golden entities only).
        record_id: The source column holding the target's own id.
        external_id: The target field matched on when creating (upsert by external id): a re-run or a
            crash never creates a record twice.
        external_value: The source column whose value goes into ``external_id`` (default: the key).
        reference: For targets that recognise existing records by a reference they store (the ERP's
            orders): the source column holding the reference.
    """

    crosswalk: bool = False
    record_id: str | None = None
    external_id: str | None = None
    external_value: str | None = None
    reference: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        return {"crosswalk": True} if value == "crosswalk" else value


class ModelSpec(_Model):
    """A SQL model over the warehouse that syncs read rows from.

    Attributes:
        sql: A SELECT over ``core``, ``marts``, ``raw`` and ``ops`` tables (run read-only).
        deps: The assets whose tables it reads (``core/opportunity``): the sync runs after them.
    """

    sql: str
    deps: list[str] = Field(default_factory=list)

    @field_validator("deps")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        for key in value:
            if not re.fullmatch(r"[a-z_]+(/[a-z_]+)+", key):
                raise ValueError(f"dependency {key!r} must be an asset key like core/opportunity")
        return value


class SyncDeclaration(_Model):
    """One declaration in ``syncs.yaml`` (possibly several systems)."""

    description: str = ""
    enabled: bool = True
    after: list[str] = Field(default_factory=list, description="Syncs (declarations) that run first.")
    source: Source
    target: Target
    systems: list[str] = Field(default_factory=list)
    match: Match = Field(default_factory=Match)
    mode: Mode = "update"
    # mapping (the default for golden records): the reverse of each system's mapping of the entity.
    fields: Literal["mapping"] | dict[str, dict[str, SyncField]] | None = None
    extra_fields: dict[str, dict[str, SyncField]] = Field(default_factory=dict)
    # baseline: the first run records what exists and sends nothing (a back-fill is a run option).
    initial: Literal["send", "baseline"] = "send"
    batch_size: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> SyncDeclaration:
        if self.target.entity is not None and not self.systems:
            raise ValueError("a sync to an entity's objects names its systems")
        if self.fields is None and self.source.entity is not None:
            object.__setattr__(self, "fields", "mapping")
        if self.fields == "mapping" and self.source.entity is None:
            raise ValueError("fields: mapping reverses an entity's mapping: a model's sync lists its fields")
        if self.match.crosswalk and self.source.entity is None:
            raise ValueError("match: crosswalk links golden records; a model names record_id or external_id")
        if self.mode in ("upsert", "create") and not (self.match.external_id or self.match.reference):
            raise ValueError(f"mode {self.mode} creates records: match needs external_id (or reference)")
        if self.mode in ("upsert", "update") and not (
            self.match.crosswalk or self.match.record_id or self.match.external_id or self.match.reference
        ):
            raise ValueError("match names how a row finds its target: crosswalk, record_id or external_id")
        for name in self.systems:
            if not _NAME.match(name):
                raise ValueError(f"system {name!r} must be a lower case name")
        declared = set(self.fields) if isinstance(self.fields, dict) else set()
        for name in declared | set(self.extra_fields):
            if self.systems and name not in self.systems:
                raise ValueError(f"fields for {name!r}, which is not under systems")
        return self


class SyncSpec(_Model):
    """One sync to one system, as it runs."""

    name: str
    declaration: str
    description: str
    enabled: bool
    source: Source
    system: str
    object_name: str | None  # None: the object that maps onto target.entity (resolved when planned)
    target_entity: str | None
    match: Match
    mode: Mode
    fields: dict[str, SyncField] | None  # None: the reverse of the mapping (plus extra)
    extra_fields: dict[str, SyncField]
    initial: Literal["send", "baseline"]
    batch_size: int | None
    after: list[str]
    model: ModelSpec | None


class SyncsFile(_Model):
    """The whole ``syncs.yaml``."""

    models: dict[str, ModelSpec] = Field(default_factory=dict)
    syncs: dict[str, SyncDeclaration] = Field(default_factory=dict)

    @field_validator("models", "syncs")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not _NAME.match(name) or "__" in name:
                raise ValueError(f"{name!r}: names are lower case with single underscores")
        return value

    @model_validator(mode="after")
    def _models_exist(self) -> SyncsFile:
        for name, declared in self.syncs.items():
            if declared.source.model is not None and declared.source.model not in self.models:
                raise ValueError(f"syncs.{name}: no model {declared.source.model!r} under models")
            for other in declared.after:
                if other not in self.syncs:
                    raise ValueError(f"syncs.{name}.after: no sync {other!r}")
        return self

    def expand(self) -> list[SyncSpec]:
        """Every sync as it runs: one per (declaration, system)."""
        out: list[SyncSpec] = []
        for name, declared in self.syncs.items():
            systems = declared.systems or [declared.target.system or ""]
            for system in systems:
                fields = declared.fields if isinstance(declared.fields, dict) else None
                if declared.fields is None:
                    fields = {}  # a model's sync writing no field (the ERP's orders are made from the row)
                out.append(
                    SyncSpec(
                        name=f"{name}__{system}" if declared.systems else name,
                        declaration=name,
                        description=declared.description,
                        enabled=declared.enabled,
                        source=declared.source,
                        system=system,
                        object_name=declared.target.object,
                        target_entity=declared.target.entity,
                        match=declared.match,
                        mode=declared.mode,
                        fields=(fields.get(system, {}) if fields is not None else None),
                        extra_fields=declared.extra_fields.get(system, {}),
                        initial=declared.initial,
                        batch_size=declared.batch_size,
                        after=declared.after,
                        model=self.models.get(declared.source.model or ""),
                    )
                )
        return out

    def get(self, name: str) -> SyncSpec:
        """The running sync called ``name`` (``<declaration>__<system>``)."""
        for sync in self.expand():
            if sync.name == name:
                return sync
        raise KeyError(f"no sync {name!r}; declared: {', '.join(s.name for s in self.expand())}")


def parse_syncs(*, text: str, origin: str = "<string>") -> SyncsFile:
    """Parse and validate a syncs declaration.

    Raises:
        SyncsError: invalid YAML or content; the message names ``origin`` and each bad key.
    """
    return parse_declaration(text, origin=origin, model=SyncsFile, error=SyncsError, what="syncs")


@cache
def load_syncs(path: Path | None = None) -> SyncsFile:
    """The syncs declaration (``crm_pipelines/syncs/syncs.yaml`` by default)."""
    source = path or DEFAULT_SYNCS
    return parse_syncs(text=source.read_text(encoding="utf-8"), origin=str(source))
