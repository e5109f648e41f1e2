"""Validated model of ``sources.yaml``: which datasets each source system contributes."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, field_validator

from crm_pipelines.sql import check_identifier

DEFAULT_SOURCES = Path(__file__).with_name("sources.yaml")


class Dataset(BaseModel):
    """One dataset: an API object, a table, or a file drop."""

    model_config = ConfigDict(extra="forbid")

    object: str | None = None
    table: str | None = None
    order_by: list[str] = []
    pattern: str | None = None
    columns: list[str] = []

    @field_validator("table")
    @classmethod
    def _table(cls, v: str | None) -> str | None:
        return None if v is None else check_identifier(v)

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str | None) -> str | None:
        if v is not None and ("/" in v or "{date}" not in v):
            raise ValueError(f"file pattern {v!r} must be a bare file name containing {{date}}")
        return v

    def file_name(self, date: str) -> str:
        return (self.pattern or "").replace("{date}", date)

    def date_from_name(self, name: str) -> str | None:
        """The partition date a file name carries, if it matches the pattern."""
        regex = re.escape(self.pattern or "").replace(re.escape("{date}"), r"(\d{4}-\d{2}-\d{2})")
        match = re.fullmatch(regex, name)
        return match.group(1) if match else None


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
        raw = yaml.safe_load(handle)
    return {check_identifier(name): Source.model_validate(spec) for name, spec in raw.items()}
