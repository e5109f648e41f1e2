"""Staging state: what a night's staging of one (entity, source) was made from, so the next night can
restage only the records that changed.

Next to its outputs (``staging/canonical``, ``quarantine/quality``, ``staging/deleted``), staging
writes per (entity, source) and night:

- ``staging/state/<entity>/dt=D/<source>.parquet``: one row per record (``record_id``), the record's
  mapped row as the quality suite saw it (the newest row of its key, ``_deleted`` included), with the
  values of the derived columns that read the source row's JSON (``_source_country``) in place of
  the JSON (``_raw``), and ``_fingerprint``, DuckDB's hash of its source rows (the source SELECT's
  rows, so it covers whatever the mapping's query joined: a contact's account too). Rows without a
  source key have no fingerprint: they never count as unchanged.
- ``staging/state/<entity>/dt=D/<source>.json``, the marker, written last: the declarations digest
  (:func:`declarations_digest`), the sha256 of the four output files and the quality rules' counts
  over the night's rows. A night without a marker (a crashed run) is never a base, nor one whose
  files changed since (an erasure rewrites them) or whose declarations differ.

The state file holds personal data as the staging files do, under a folder the erasure rewrites.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from crm_pipelines.canonical import ENTITIES, QUARANTINE
from crm_pipelines.lake import LakePath, children, partition_dir, write_text
from crm_pipelines.mapping.spec import SourceMapping
from crm_pipelines.quality.rules import RuleSet

__all__ = [
    "FINGERPRINT",
    "STAGE_VERSION",
    "Base",
    "StagingMarker",
    "cross_row_rules",
    "declarations_digest",
    "file_digest",
    "find_base",
    "marker_path",
    "state_folder",
    "write_marker",
]

# Bump when what staging makes of a row changes in a way the digest below cannot see.
STAGE_VERSION = 1
FINGERPRINT = "_fingerprint"
_PARTITION = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")
# The code whose behaviour decides a staged row: its text is part of the declarations digest, so a
# changed normaliser, mapping generator or validator restages everything once.
_CODE = (
    "crm_pipelines/canonical.py",
    "crm_pipelines/mapping/build.py",
    "crm_pipelines/mapping/normalize.py",
    "crm_pipelines/mapping/stage.py",
    "crm_pipelines/mapping/state.py",
    "crm_pipelines/quality/rules.py",
    "crm_pipelines/quality/suites.py",
    "crm_pipelines/quality/validate.py",
)
# Libraries whose versions decide a normalised value or a verdict.
_LIBRARIES = ("duckdb", "phonenumbers", "pycountry", "great-expectations", "pyarrow")
# Rules that compare rows with each other; per-record reuse is exact only for rules on one row. A
# uniqueness rule on record_id is per row too: staging keeps one row per record_id.
_ROW_LOCAL_UNIQUE = frozenset({"record_id"})


def state_folder(lake_dir: LakePath, entity: str, partition: str) -> LakePath:
    """Lake folder of an entity's staging state, one Parquet file and one marker per source."""
    return partition_dir(lake_dir, "staging", "state", entity, partition)


def marker_path(lake_dir: LakePath, entity: str, partition: str, source: str) -> LakePath:
    return state_folder(lake_dir, entity, partition) / f"{source}.json"


def _code_text() -> dict[str, str]:
    root = Path(__file__).resolve().parents[2]
    texts = {}
    for relative in _CODE:
        path = root / relative
        texts[relative] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "missing"
    return texts


def _library_versions() -> dict[str, str]:
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def declarations_digest(
    *, entity: str, mapping: SourceMapping, value_maps: dict[str, dict[str, str]], rules: RuleSet
) -> str:
    """A digest of everything besides the source rows that decides one source's staged rows.

    The source's mapping, the value maps it uses, the entity's rules and derived columns (with their
    value sets resolved), the canonical and quarantine schemas, :data:`STAGE_VERSION`, the staging
    and quality code and the versions of the libraries that normalise and validate.

    Returns:
        A hex sha256.
    """
    used_maps = sorted({c.value_map for c in mapping.columns.values() if c.value_map})
    declared = {
        "stage_version": STAGE_VERSION,
        "mapping": mapping.model_dump(mode="json", by_alias=True),
        "value_maps": {name: value_maps.get(name) for name in used_maps},
        "tolerated_failures": rules.tolerated_failures,
        "rules": [
            {**rule.model_dump(mode="json"), "resolved_kwargs": rule.resolved_kwargs()}
            for rule in rules.rules_for(entity)
        ],
        "derived": [d.model_dump(mode="json") for d in rules.derived_for(entity)],
        "schema": ENTITIES[entity].to_string(show_schema_metadata=True, show_field_metadata=True),
        "quarantine": QUARANTINE.to_string(show_field_metadata=False),
        "code": _code_text(),
        "libraries": _library_versions(),
    }
    text = json.dumps(declared, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def cross_row_rules(entity: str, rules: RuleSet) -> list[str]:
    """Rules of ``entity`` whose verdict on a row depends on other rows (uniqueness but of record_id)."""
    return [
        rule.name
        for rule in rules.rules_for(entity)
        if rule.expectation == "expect_column_values_to_be_unique" and rule.column not in _ROW_LOCAL_UNIQUE
    ]


def file_digest(path: LakePath) -> str | None:
    """sha256 of a lake file's bytes; None when it does not exist."""
    if not path.exists():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class StagingMarker:
    """The marker of one (entity, source, night): written after its files, read to pick a base.

    Attributes:
        partition: The night.
        declarations: :func:`declarations_digest` of the run.
        files: Role (``staging``, ``quarantine``, ``deleted``, ``state``) -> sha256 of the file.
        rules: Rule -> ``{"evaluated": n, "unexpected": n}`` over every validated row of the night.
    """

    partition: str
    declarations: str
    files: dict[str, str]
    rules: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"version": STAGE_VERSION, **asdict(self)}, sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> StagingMarker | None:
        try:
            data = json.loads(text)
            if data.get("version") != STAGE_VERSION:
                return None
            return cls(
                partition=str(data["partition"]),
                declarations=str(data["declarations"]),
                files={str(k): str(v) for k, v in data["files"].items()},
                rules={
                    str(name): {"evaluated": int(c["evaluated"]), "unexpected": int(c["unexpected"])}
                    for name, c in data["rules"].items()
                },
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


def write_marker(lake_dir: LakePath, entity: str, source: str, marker: StagingMarker) -> None:
    """Write the marker; call it after every file it names is in place."""
    write_text(marker_path(lake_dir, entity, marker.partition, source), marker.to_json())


@dataclass(frozen=True)
class Base:
    """An earlier night whose staging of the source can be reused record by record."""

    marker: StagingMarker
    files: dict[str, LakePath]

    @property
    def partition(self) -> str:
        return self.marker.partition


def find_base(
    *,
    lake_dir: LakePath,
    entity: str,
    source: str,
    partition: str,
    declarations: str,
    output_files: Callable[[str], dict[str, LakePath]],
    same_night: bool = False,
) -> tuple[Base | None, str]:
    """The newest night before ``partition`` whose staging of ``source`` is complete, unchanged since
    it was written and made under the same declarations.

    Args:
        lake_dir: Lake root.
        entity: Canonical entity.
        source: Source of the mapping.
        partition: The night being staged.
        declarations: Its :func:`declarations_digest`.
        output_files: A night -> its output files by role (``staging``, ``quarantine``, ``deleted``,
            ``state``).
        same_night: Also take ``partition`` itself (an earlier run of the night, kept aside by
            :func:`crm_pipelines.mapping.stage.stage_entity` while it is run again).

    Returns:
        The base, or None and why none could be used.
    """
    root = state_folder(lake_dir, entity, partition).parent
    reason = "no earlier staging state"
    for folder in reversed(children(root)):
        match = _PARTITION.match(folder.name)
        if not match or match.group(1) > partition or (match.group(1) == partition and not same_night):
            continue
        night = match.group(1)
        marker_file = folder / f"{source}.json"
        if not marker_file.exists():
            continue
        marker = StagingMarker.from_json(marker_file.read_text(encoding="utf-8"))
        if marker is None or marker.partition != night:
            continue
        if marker.declarations != declarations:
            if reason == "no earlier staging state":
                reason = f"mappings, rules or code changed since {night}"
            continue
        paths = output_files(night)
        changed = sorted(role for role, path in paths.items() if file_digest(path) != marker.files.get(role))
        if changed:
            if reason == "no earlier staging state":
                reason = f"{', '.join(changed)} of {night} changed since they were written"
            continue
        return Base(marker, paths), ""
    return None, reason
