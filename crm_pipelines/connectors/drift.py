"""Schema drift: fields the API returns that are not declared, and declared fields it never returns.

Fields present in responses but not declared, and declared fields absent from every record, are
collected in a :class:`SchemaDrift` (pass one in to :func:`~.engine.extract_object` to read it) and
logged; drift never fails a run. The collector in :mod:`.collect` shows every live record to a
:class:`DriftTracker`; the fields the source lists but nobody declared come from its field list
(:mod:`.describe`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from crm_pipelines.connectors.spec import ObjectSpec

__all__ = [
    "DriftTracker",
    "SchemaDrift",
]


@dataclass
class SchemaDrift:
    """Differences between the declared fields and what the API actually returned.

    Attributes:
        system: System name.
        object_name: Object name.
        undeclared: Response paths present in records but not declared (nor ignored).
        missing: Declared field names whose path was absent from every record seen.
        records_seen: Records inspected.
        source_fields: Every field the source lists for the object (its describe), when declared.
        not_selected: Source fields neither declared nor ignored: what a new custom field looks like.
    """

    system: str
    object_name: str
    undeclared: set[str] = field(default_factory=set)
    missing: set[str] = field(default_factory=set)
    records_seen: int = 0
    source_fields: set[str] = field(default_factory=set)
    not_selected: set[str] = field(default_factory=set)

    @property
    def has_drift(self) -> bool:
        return bool(self.undeclared or self.missing or self.not_selected)

    def describe(self) -> str:
        """One line for logs and run metadata."""
        if not self.has_drift:
            return f"{self.system} {self.object_name}: no schema drift in {self.records_seen} records"
        parts = []
        if self.undeclared:
            parts.append(f"not declared: {', '.join(sorted(self.undeclared))}")
        if self.missing:
            parts.append(f"declared but absent: {', '.join(sorted(self.missing))}")
        if self.not_selected:
            parts.append(f"in the source, not declared: {', '.join(sorted(self.not_selected))}")
        return f"{self.system} {self.object_name}: schema drift in {self.records_seen} records ({'; '.join(parts)})"


class DriftTracker:
    """Compares the records of an extract with the declared fields and fills a :class:`SchemaDrift`."""

    def __init__(self, obj: ObjectSpec, drift: SchemaDrift) -> None:
        self.drift = drift
        self.declared = [f.source_path for f in obj.fields if not f.write_only]
        self.ignored = list(obj.ignore_undeclared)
        self.present: set[str] = set()
        self.names = {f.source_path: f.name for f in obj.fields}
        self._covered: dict[str, bool] = {}
        self._shapes: set[tuple[object, ...]] = set()

    def _is_covered(self, path: str) -> bool:
        known = self._covered.get(path)
        if known is None:
            known = any(
                d == path or d.startswith(path + ".") or path.startswith(d + ".") for d in self.declared
            ) or any(path == i or path.startswith(i + ".") for i in self.ignored)
            self._covered[path] = known
        return known

    def observe(self, record: Any) -> None:
        self.drift.records_seen += 1
        if not isinstance(record, dict):
            return
        shape = _shape(record)
        if shape in self._shapes:
            return
        if len(self._shapes) < 10_000:  # bounded: pathological key churn must not grow memory
            self._shapes.add(shape)
        for path in _leaf_paths(record, ""):
            if not self._is_covered(path):
                self.drift.undeclared.add(path)

    def finish(self) -> None:
        if self.drift.records_seen:
            self.drift.missing |= {self.names[p] for p in self.declared if p not in self.present}


def _leaf_paths(data: dict[str, Any], prefix: str) -> Iterator[str]:
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _leaf_paths(value, path + ".")
        else:
            yield path


def _shape(record: dict[str, Any]) -> tuple[object, ...]:
    """The keys of a record and of its nested objects, one level down: records of one shape have the
    same leaf paths, so drift is only walked once per shape."""
    return tuple((k, tuple(v) if type(v) is dict else None) for k, v in record.items())
