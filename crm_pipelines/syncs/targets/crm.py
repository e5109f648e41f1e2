"""Every CRM as a sync target, through the connector engine's declared writes.

The target object is the one the system's declaration names (or the one its mapping of the entity
reads). Its current values are the night's raw snapshot in the lake, read through the mapping's
transforms. Existing records are updated by their id (``update:``), new ones created by an external
id (``upsert:``) so that a second attempt updates instead of duplicating.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import pyarrow as pa

from crm_pipelines.canonical import NOT_WRITTEN_BACK, SURVIVOR_FIELDS
from crm_pipelines.connectors.describe import resolved_object
from crm_pipelines.connectors.spec import ObjectSpec, SystemSpec, load_system
from crm_pipelines.connectors.writes import UpsertResult, WriteStats
from crm_pipelines.lake import DELETED, LakePath, has_parquet, parquet_glob, partition_dir, scan_parquet
from crm_pipelines.mapping.spec import load_mappings
from crm_pipelines.ownership import load_ownership
from crm_pipelines.sources import load_sources
from crm_pipelines.sql import quote_ident
from crm_pipelines.syncs.spec import SyncField, SyncSpec
from crm_pipelines.syncs.targets.base import CARRIED, TARGET_KINDS, Operation, Outcome, TargetObject
from crm_pipelines.syncs.transforms import current_sql

__all__ = ["CrmTarget", "CrmWriter", "reverse_mapping"]

# Rows per write call: outcomes are recorded (and the state committed) after each.
CHUNK = 500


class CrmWriter(Protocol):
    """What the target needs of a CRM connection (``resources.crm_api.CrmApiResource`` is one)."""

    def spec(self) -> SystemSpec: ...

    def connection(self) -> Any: ...

    def update(
        self, *, object_name: str, records: Sequence[dict[str, Any]], stats: WriteStats | None = None
    ) -> list[UpsertResult]: ...

    def upsert(
        self,
        *,
        object_name: str,
        external_id_field: str,
        records: Sequence[dict[str, Any]],
        stats: WriteStats | None = None,
    ) -> list[UpsertResult]: ...


def _object_of(sync: SyncSpec) -> tuple[str, str]:
    """(object, lake dataset) of the sync's target in its system."""
    source = load_sources().get(sync.system)
    if source is None or source.kind != "crm_api":
        raise ValueError(f"sync {sync.name}: {sync.system!r} is not a CRM in sources.yaml")
    if sync.object_name is not None:
        for dataset, declared in source.datasets.items():
            if (declared.object or dataset) == sync.object_name:
                return sync.object_name, dataset
        raise ValueError(
            f"sync {sync.name}: {sync.system} reads no object {sync.object_name!r} (sources.yaml)"
        )
    main = load_mappings().main_input(sync.target_entity or "", sync.system)
    if main is None:
        raise ValueError(f"sync {sync.name}: {sync.system} maps nothing onto {sync.target_entity!r}")
    dataset = main.split("/", 1)[1]
    declared = source.datasets[dataset]
    return declared.object or dataset, dataset


def reverse_mapping(sync: SyncSpec, obj: ObjectSpec) -> dict[str, SyncField]:
    """The system's mapping of the entity, reversed: target field -> golden column and transform."""
    entity = sync.target_entity or sync.source.entity or ""
    mapping = next((m for m in load_mappings().entities.get(entity, []) if m.source == sync.system), None)
    if mapping is None:
        return {}
    declared = {f.name for f in obj.fields}
    writable = {f.name for f in obj.fields if f.writable}
    held_back = NOT_WRITTEN_BACK.get(entity, ())
    written = tuple(c for c in SURVIVOR_FIELDS.get(entity, tuple(mapping.columns)) if c not in held_back)
    # A phone is read with the record's country; a mapping may take it from a column its query
    # derives, which the snapshot does not have: the record's country field stands in.
    country = mapping.columns.get("country")
    country_field = (
        country.source_column if country is not None and country.source_column in declared else None
    )
    fields: dict[str, SyncField] = {}
    for column, how in mapping.columns.items():
        target = how.source_column
        # Only what the object declares as a field can be written (not a column a mapping's query
        # derives), and never its id or a value the mapping makes up.
        if column not in written or target is None or target not in writable or target == obj.primary_key:
            continue
        if how.transform in ("const", "ref"):
            continue
        fields[target] = SyncField.model_validate(
            {
                "from": column,
                "transform": how.transform,
                "country_from": how.country_from if how.country_from in declared else country_field,
                "value_map": how.value_map,
            }
        )
    return fields


class CrmTarget:
    """A CRM declared for the connector engine."""

    def resolve(self, sync: SyncSpec) -> TargetObject:
        object_name, dataset = _object_of(sync)
        system = load_system(name=sync.system)
        obj = system.get_object(object_name)
        fields = dict(reverse_mapping(sync, obj)) if sync.fields is None else dict(sync.fields)
        fields.update(sync.extra_fields)
        declared = {f.name for f in obj.fields}
        unknown = sorted(set(fields) - declared)
        if unknown:
            raise ValueError(
                f"sync {sync.name}: {system.title} {object_name} declares no field(s) {unknown} "
                f"(crm_pipelines/connectors/systems/{sync.system}.yaml)"
            )
        read_only = sorted(n for n in fields if not obj.field(n).writable)
        if read_only:
            raise ValueError(
                f"sync {sync.name}: {system.title} {object_name} field(s) {read_only} are read-only"
            )
        for name, field in fields.items():
            if field.country_from is not None and field.country_from not in declared:
                raise ValueError(
                    f"sync {sync.name}: field {name}: country_from {field.country_from!r} is not declared"
                )
        if sync.mode in ("update", "upsert") and obj.update is None:
            raise ValueError(
                f"sync {sync.name}: {system.title} {object_name} declares no update ({sync.system}.yaml)"
            )
        if sync.mode in ("upsert", "create"):
            if obj.upsert is None:
                raise ValueError(f"sync {sync.name}: {system.title} {object_name} declares no upsert")
            if sync.match.external_id not in declared:
                raise ValueError(
                    f"sync {sync.name}: match.external_id {sync.match.external_id!r} is not declared"
                )
        owners: dict[str, str | None] = {}
        policies: dict[str, str] = {}
        if sync.source.entity is not None:
            ownership = load_ownership().for_entity(sync.source.entity)
            for name in list(fields):
                column = fields[name].source_column
                owners[name], policies[name] = ownership.owner(column), ownership.policy(column)
                # A sync never writes a field into the system that owns it (newest_wins: the newest
                # edit wins everywhere, the owner included).
                if owners[name] == sync.system and policies[name] != "newest_wins":
                    del fields[name]
        carried = [n for n in (obj.update.carried_fields() if obj.update else []) if n in declared]
        # Members of an object the API replaces whole travel together.
        whole = set(obj.update.replaces_whole if obj.update else [])
        members: dict[str, list[str]] = {}
        for f in obj.fields:
            parent = f.source_path.rpartition(".")[0]
            if parent in whole and f.writable:
                members.setdefault(parent, []).append(f.name)
        carried_with = {
            name: [m for m in members[parent] if m != name]
            for name in fields
            if (parent := obj.field(name).source_path.rpartition(".")[0]) in members
        }
        return TargetObject(
            system=sync.system,
            object_name=object_name,
            dataset=dataset,
            primary_key=obj.primary_key,
            fields=fields,
            owners=owners,
            policies=policies,
            carried=carried,
            carried_with=carried_with,
        )

    def current(self, target: TargetObject, *, lake_dir: LakePath, partition: str) -> str | None:
        assert target.dataset is not None
        folder = partition_dir(lake_dir, "raw", target.system, target.dataset, partition)
        if not has_parquet(folder):
            return None
        value_maps = load_mappings().value_maps
        columns = ",\n".join(
            [
                *(
                    f"{current_sql(name, field, value_maps)} AS {quote_ident(name)}"
                    for name, field in target.fields.items()
                ),
                *(
                    f"CAST({quote_ident(name)} AS VARCHAR) AS {quote_ident(CARRIED + name)}"
                    for name in target.carried_columns
                ),
            ]
        )
        pk = quote_ident(target.primary_key)
        return (
            f"SELECT CAST({pk} AS VARCHAR) AS target_id{',' if columns else ''} {columns} "
            f"FROM {scan_parquet(parquet_glob(folder))} WHERE NOT coalesce({quote_ident(DELETED)}, false)"
        )

    def existing(
        self, target: TargetObject, *, sync: SyncSpec, rows: pa.Table, client: Any
    ) -> dict[str, str]:
        return {}

    def write(
        self,
        target: TargetObject,
        *,
        sync: SyncSpec,
        operations: Sequence[Operation],
        client: Any,
        on_batch: Callable[[list[Outcome]], None],
    ) -> int:
        writer: CrmWriter = client
        system = writer.spec()
        obj = resolved_object(system=system, object_name=target.object_name, connection=writer.connection())
        style = obj.update if obj.update is not None else obj.upsert
        assert style is not None  # checked when the sync was resolved
        paths = {f.name: f.write_key or style.field_key(f.source_path) for f in obj.fields}
        # Keys sent as declared (a Dataverse lookup's name@odata.bind holds a dot but nests nothing).
        verbatim = frozenset(f.name for f in obj.fields if f.write_key is not None)
        kinds = {f.name: f.write_as for f in obj.fields if f.write_as is not None}
        templates = {f.name: f.write_template for f in obj.fields if f.write_template is not None}
        stats = WriteStats()
        updates = [op for op in operations if op.target_id is not None]
        creates = [op for op in operations if op.target_id is None]
        for start in range(0, len(updates), CHUNK):
            chunk = updates[start : start + CHUNK]
            records = [
                _record(
                    paths,
                    {target.primary_key: op.target_id, **_typed(kinds, _spelled(templates, op.values))},
                    verbatim,
                )
                for op in chunk
            ]
            results = writer.update(object_name=target.object_name, records=records, stats=stats)
            on_batch([_outcome(op, r) for op, r in zip(chunk, results, strict=True)])
        external = sync.match.external_id
        for start in range(0, len(creates), CHUNK):
            chunk = creates[start : start + CHUNK]
            assert external is not None  # validated with the declaration
            records = [
                _record(paths, _typed(kinds, _spelled(templates, op.values)), verbatim) for op in chunk
            ]
            results = writer.upsert(
                object_name=target.object_name,
                external_id_field=paths[external],
                records=records,
                stats=stats,
            )
            on_batch([_outcome(op, r) for op, r in zip(chunk, results, strict=True)])
        return stats.requests


_AS: dict[str, Callable[[Any], Any]] = {
    "string": str,
    "integer": lambda v: int(float(v)) if not isinstance(v, bool) else int(v),
    "number": float,
    "boolean": lambda v: v if isinstance(v, bool) else str(v).strip().lower() in ("true", "1", "yes"),
}


def _typed(kinds: Mapping[str, str], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with each field the API types (``write_as``) in that JSON type.

    A value that is not one is sent as it is, for the vendor to reject with its own reason.
    """
    typed = dict(values)
    for name, value in values.items():
        if name in kinds and value is not None:
            with contextlib.suppress(ValueError, TypeError):
                typed[name] = _AS[kinds[name]](value)
    return typed


def _spelled(templates: Mapping[str, str], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with each field that declares a ``write_template`` spelled through it."""
    return {
        name: templates[name].format(value=value) if name in templates and value is not None else value
        for name, value in values.items()
    }


def _record(
    paths: dict[str, str], values: dict[str, Any], verbatim: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """An API record: each declared field at its path.

    A dotted path nests (``custom_fields.<key>``); a number in it is a list's first entry
    (``phones.0.value`` is ``phones: [{value: ...}]``: the list is replaced by that one entry).
    A field in ``verbatim`` goes under its key as it is.
    """
    record: dict[str, Any] = {}
    for name, value in values.items():
        if name in verbatim:
            record[paths[name]] = value
            continue
        parts = paths.get(name, name).split(".")
        node: Any = record
        for part, following in itertools.pairwise(parts):
            if following.isdigit():
                node = node.setdefault(part, [{}])[0]
            elif not part.isdigit():
                node = node.setdefault(part, {})
        node[parts[-1]] = value
    return record


def _outcome(op: Operation, result: UpsertResult) -> Outcome:
    if result.status == "rejected":
        return Outcome(op, "rejected", op.target_id, result.error_code, result.reason)
    return Outcome(op, result.status, result.record_id or op.target_id)


TARGET_KINDS.add("crm", CrmTarget())
