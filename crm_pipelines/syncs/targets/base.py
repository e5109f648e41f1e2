"""What a sync target is: where its current values are read from and how rows are written to it.

A target kind registers in :data:`TARGET_KINDS` under a name; :func:`target_for` picks the kind of a
system (the ERP's orders, or any CRM declared for the connector engine). A new kind of target is one
module that registers itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from crm_pipelines.lake import LakePath
from crm_pipelines.registry import Registry
from crm_pipelines.syncs.spec import SyncField, SyncSpec

# Prefix of the snapshot columns an update carries unchanged (TargetObject.carried).
CARRIED = "__carried__"

__all__ = [
    "CARRIED",
    "TARGET_KINDS",
    "Operation",
    "Outcome",
    "TargetKind",
    "TargetObject",
    "target_for",
]


@dataclass(frozen=True)
class TargetObject:
    """A sync's target, resolved against the system's declaration.

    Attributes:
        system: The target system.
        object_name: Its object.
        dataset: The lake dataset holding the object's snapshot (``raw/<system>/<dataset>``), if any.
        primary_key: The object's id field, as the snapshot names it.
        fields: Target field (as the snapshot names it) -> how it is read and written.
        owners: Target field -> the system owning the source value (golden records), for conflicts.
        policies: Target field -> the conflict policy of the source value.
        carried: Fields each update carries as the target holds them (a parent's key), so the write
            can address the record; never compared.
        carried_with: Field -> the fields a write of it carries as the target holds them (the other
            members of an object the API replaces whole).
    """

    system: str
    object_name: str
    dataset: str | None
    primary_key: str
    fields: Mapping[str, SyncField]
    owners: Mapping[str, str | None] = field(default_factory=dict)
    policies: Mapping[str, str] = field(default_factory=dict)
    carried: Sequence[str] = ()
    carried_with: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @property
    def carried_columns(self) -> list[str]:
        """Every field an update may carry (read from the target's snapshot as it is)."""
        return sorted({*self.carried, *(n for names in self.carried_with.values() for n in names)})


@dataclass(frozen=True)
class Operation:
    """One row to write: a create (no target id yet) or an update of the changed fields.

    Attributes:
        source_key: The source row's key.
        target_id: The target record (None: create).
        values: Target field -> value to write (the API's form).
        canonical: Source column -> canonical text of what is written (the state to remember).
        row: The source row (for targets that build records from it, e.g. an order).
    """

    source_key: str
    target_id: str | None
    values: dict[str, Any]
    canonical: dict[str, str | None]
    row: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """What the target said about one operation."""

    operation: Operation
    status: str  # created, updated, unchanged or rejected
    target_id: str | None = None
    error_code: str | None = None
    reason: str | None = None


class TargetKind(Protocol):
    """A kind of target (the CRMs through the connector engine, the ERP's orders)."""

    def resolve(self, sync: SyncSpec) -> TargetObject:
        """The target object and fields of ``sync``; raises ValueError naming what is wrong."""
        ...

    def current(self, target: TargetObject, *, lake_dir: LakePath, partition: str) -> str | None:
        """SQL selecting ``target_id`` and each field's current canonical text, or None (unknown)."""
        ...

    def existing(
        self, target: TargetObject, *, sync: SyncSpec, rows: pa.Table, client: Any
    ) -> dict[str, str]:
        """Source key -> target id of records the target already holds for rows it cannot be told
        about through the crosswalk (an ERP order made by hand under another reference format)."""
        ...

    def write(
        self,
        target: TargetObject,
        *,
        sync: SyncSpec,
        operations: Sequence[Operation],
        client: Any,
        on_batch: Callable[[list[Outcome]], None],
    ) -> int:
        """Send the operations in batches, calling ``on_batch`` with each batch's outcomes.

        Returns:
            Requests made.
        """
        ...


# Every kind of sync target, by name.
TARGET_KINDS: Registry[TargetKind] = Registry("sync target kind")


def target_for(system: str) -> TargetKind:
    """The target kind writing into ``system``: a registered kind of that name, else a CRM."""
    return TARGET_KINDS.get(system if system in TARGET_KINDS else "crm")
