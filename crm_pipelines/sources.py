"""Validated model of ``sources.yaml``: which datasets each source system contributes."""

from __future__ import annotations

import datetime as dt
import itertools
import posixpath
import re
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from crm_pipelines.sql import check_identifier
from crm_pipelines.yamlfile import safe_load

DEFAULT_SOURCES = Path(__file__).with_name("sources.yaml")


_DURATION = re.compile(r"^(\d+)\s*([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Incremental(BaseModel):
    """How a database table is read incrementally.

    Attributes:
        cursor: Column that grows when a row changes (modified-at timestamp or rowversion/sequence).
        kind: ``timestamp`` or ``integer``.
        lookback: How far behind the watermark to read again, e.g. ``2h``: a transaction that
            commits late carries a cursor value below rows already read.
    """

    model_config = ConfigDict(extra="forbid")

    cursor: str
    kind: Literal["timestamp", "integer"] = "timestamp"
    lookback: str = "0s"

    @field_validator("cursor")
    @classmethod
    def _cursor(cls, v: str) -> str:
        return check_identifier(v)

    @field_validator("lookback")
    @classmethod
    def _lookback(cls, v: str) -> str:
        if not _DURATION.match(v.strip()):
            raise ValueError(f"lookback {v!r} must be a number and a unit s, m, h or d, e.g. '2h'")
        return v

    @property
    def lookback_seconds(self) -> int:
        """The lookback in seconds (for an integer cursor: the number of sequence values)."""
        match = _DURATION.match(self.lookback.strip())
        assert match is not None  # validated
        return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


class FixedWidthField(BaseModel):
    """One field of a fixed-width layout: where it sits on the line (characters, counted from 1).

    Attributes:
        name: Column name (normalised like a CSV header).
        start: Position of its first character on the line, from 1.
        width: Characters it takes; values are trimmed of the padding around them.
        header: Its label in the header line, when it is not the name (e.g. ``CUR`` for
            ``currency``); checked only with ``header_names``.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    start: int = Field(ge=1)
    width: int = Field(ge=1)
    header: str | None = None

    @property
    def end(self) -> int:
        """Position of its last character."""
        return self.start + self.width - 1


class FixedWidthLayout(BaseModel):
    """The declared layout of a fixed-width file.

    Attributes:
        fields: The fields, in any order; they must not overlap.
        header_lines: Lines before the data (titles, a header); skipped.
        header_names: The last header line labels every field at its own start position; it is
            checked, so a file whose columns moved is rejected whole instead of loaded shifted.
        line_length: Exact characters per data line, when the writer pads every line; a line of
            another length is quarantined. Without it a line must reach the end of the last field.
    """

    model_config = ConfigDict(extra="forbid")

    fields: list[FixedWidthField] = Field(min_length=1)
    header_lines: int = Field(0, ge=0)
    header_names: bool = False
    line_length: int | None = Field(None, ge=1)

    @property
    def end(self) -> int:
        """Position of the last character of the rightmost field."""
        return max(f.end for f in self.fields)

    @model_validator(mode="after")
    def _consistent(self) -> FixedWidthLayout:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"fixed-width field names must be unique: {names}")
        ordered = sorted(self.fields, key=lambda f: f.start)
        for left, right in itertools.pairwise(ordered):
            if right.start <= left.end:
                raise ValueError(
                    f"fixed-width fields {left.name} ({left.start}-{left.end}) and {right.name} "
                    f"({right.start}-{right.end}) overlap"
                )
        if self.header_names and self.header_lines < 1:
            raise ValueError("header_names needs header_lines >= 1 (the last header line holds the names)")
        if self.line_length is not None and self.line_length < self.end:
            raise ValueError(
                f"line_length {self.line_length} is shorter than the layout ({self.end} characters)"
            )
        return self


class Dataset(BaseModel):
    """One dataset: an API object, a table, or a file drop."""

    model_config = ConfigDict(extra="forbid")

    object: str | None = None
    table: str | None = None
    order_by: list[str] = []
    # Database tables only (kind database): key, incremental cursor and delete detection.
    primary_key: list[str] = []
    incremental: Incremental | None = None
    deletes: Literal["key_compare"] | None = None
    pattern: str | None = None
    columns: list[str] = []
    # File drops only (kind sftp): where the files are, when one is complete, where it goes after.
    folder: str | None = None
    # One of the registered file formats (crm_pipelines/files/formats.py), csv by default.
    format: str = "csv"
    # format json: dot path of the array holding the records (None: the document is the array).
    records_path: str | None = None
    # format xml: element path from the root to one record.
    record_path: str | None = None
    # format fixed_width: where each field sits; the columns are its field names.
    layout: FixedWidthLayout | None = None
    # None: detected per file (UTF-8 with or without BOM, else cp1252; , ; tab or |).
    encoding: str | None = None
    delimiter: str | None = None
    complete_when: Literal["stable", "marker", "rename"] = "stable"
    # complete_when stable: how long a file must stay unchanged; None takes SFTP_STABLE_SECONDS. A partner
    # writing slowly (a row every few seconds) needs more than the default.
    stable_seconds: float | None = Field(default=None, gt=0)
    markers: list[str] = [".done", ".ok"]
    after_load: Literal["move", "leave"] = "move"
    processed_folder: str = "processed"
    error_folder: str = "error"
    # A compressed drop is refused as a bomb past either limit while it is unpacked (never inflated whole).
    max_unpacked_mb: int = Field(default=4096, gt=0)
    max_compression_ratio: int = Field(default=200, gt=1)

    @field_validator("folder")
    @classmethod
    def _folder(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith("/") or ".." in v.split("/")):
            raise ValueError(f"drop folder {v!r} must be an absolute remote path without '..'")
        return None if v is None else posixpath.normpath(v)

    @field_validator("processed_folder", "error_folder")
    @classmethod
    def _subfolder(cls, v: str) -> str:
        # Relative to the drop folder (or absolute); never climbing out with '..'.
        if not v or ".." in v.split("/") or any(ord(c) < 32 for c in v):
            raise ValueError(f"folder {v!r} must be a plain folder name or path without '..'")
        return v

    @field_validator("markers")
    @classmethod
    def _markers(cls, v: list[str]) -> list[str]:
        for marker in v:
            if not re.fullmatch(r"\.[A-Za-z0-9_]+", marker):
                raise ValueError(f"marker suffix {marker!r} must look like '.done'")
        return v

    @field_validator("table")
    @classmethod
    def _table(cls, v: str | None) -> str | None:
        return None if v is None else check_identifier(v)

    @field_validator("order_by", "primary_key")
    @classmethod
    def _key_columns(cls, v: list[str]) -> list[str]:
        return [check_identifier(c) for c in v]

    @model_validator(mode="after")
    def _format_settings(self) -> Dataset:
        # Imported here: the readers import this module (a drop's declaration is what they read).
        from crm_pipelines.files.formats import FORMAT_SETTINGS
        from crm_pipelines.files.readers import FILE_FORMATS

        if self.format not in FILE_FORMATS:
            raise ValueError(FILE_FORMATS.unknown(self.format))
        file_format = FILE_FORMATS.get(self.format)
        stray = [s for s in FORMAT_SETTINGS if getattr(self, s) is not None and s not in file_format.settings]
        if stray:
            raise ValueError(f"{', '.join(stray)} does not apply to format {self.format}")
        return file_format.check(self) if file_format.check is not None else self

    @model_validator(mode="after")
    def _keys_for_merging(self) -> Dataset:
        if (self.incremental is not None or self.deletes is not None) and not self.primary_key:
            raise ValueError("incremental and deletes need primary_key: the snapshot is merged by key")
        return self

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str | None) -> str | None:
        if v is not None and ("/" in v or "{date}" not in v):
            raise ValueError(f"file pattern {v!r} must be a bare file name containing {{date}}")
        return v

    def remote_folder(self, default: str, which: Literal["processed", "error"]) -> str:
        """Absolute remote folder for processed or rejected files of a drop living in ``default``."""
        sub = self.processed_folder if which == "processed" else self.error_folder
        return sub if sub.startswith("/") else posixpath.join(self.folder or default, sub)

    def file_name(self, date: str) -> str:
        return (self.pattern or "").replace("{date}", date)

    def date_from_name(self, name: str) -> str | None:
        """The partition date a file name carries, if it matches the pattern with a real calendar date.

        ASCII digits only (``\\d`` would take other scripts' digits too) and a date that exists: a name
        like ``invoices_2025-13-45.csv`` or one in full-width digits names no night, so it is no file of
        the drop (:meth:`date_problem` says why).
        """
        match = re.fullmatch(self._name_regex(), name)
        if match is None:
            return None
        try:
            return dt.date.fromisoformat(match.group(1)).isoformat()
        except ValueError:
            return None

    def date_problem(self, name: str) -> str | None:
        """Why a name shaped like the pattern carries no usable date (``None`` if it does or is not shaped so)."""
        shaped = re.fullmatch(self._name_regex(date=r"(.{10})"), name)
        if shaped is None or self.date_from_name(name) is not None:
            return None
        return f"{shaped.group(1)!r} in the name is not a calendar date (YYYY-MM-DD in ASCII digits)"

    def _name_regex(self, date: str = r"([0-9]{4}-[0-9]{2}-[0-9]{2})") -> str:
        return re.escape(self.pattern or "").replace(re.escape("{date}"), date)


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["crm_api", "database", "sftp"]
    title: str
    datasets: dict[str, Dataset]

    @field_validator("datasets")
    @classmethod
    def _names(cls, v: dict[str, Dataset]) -> dict[str, Dataset]:
        for name in v:
            check_identifier(name)
        return v


@cache
def load_sources(path: Path = DEFAULT_SOURCES) -> dict[str, Source]:
    """Read and validate the source catalog."""
    with open(path, encoding="utf-8") as handle:
        raw = safe_load(handle)
    return {check_identifier(name): Source.model_validate(spec) for name, spec in raw.items()}
