"""How fresh each source and mart must be and how far a source's volume may fall (``monitoring.yaml``).

Each source and mart gets the ``defaults`` of its kind, overridden key by key by its own entry.
Three things read the result:

- the Dagster freshness policy of every extract and mart (``materialized``);
- the ``source_freshness`` check of each extract (``changed_within``, :mod:`.freshness`);
- the ``volume_drop_warn`` and ``volume_drop_block`` checks of each extract (``volume``, :mod:`.volume`).

Nothing is read at import time: call :func:`load_monitoring`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from crm_pipelines.yamlfile import parse_declaration, problems

__all__ = [
    "DEFAULT_MONITORING",
    "Materialized",
    "Monitoring",
    "MonitoringError",
    "SourceMonitoring",
    "VolumePolicy",
    "load_monitoring",
    "parse_monitoring",
]

DEFAULT_MONITORING = Path(__file__).with_name("monitoring.yaml")

M = TypeVar("M", bound=BaseModel)
_DURATION = re.compile(r"^(\d+)\s*([smhd])$")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_DROP = re.compile(r"^-(\d+(?:\.\d+)?)\s*%$")


class MonitoringError(ValueError):
    """``monitoring.yaml`` is not valid YAML or declares something wrong; the message names the key."""


def _duration(value: object) -> timedelta:
    match = _DURATION.match(str(value).strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{value!r} must be a number and a unit s, m, h or d, e.g. '26h'")
    return timedelta(**{_UNIT[match.group(2)]: int(match.group(1))})


class Materialized(BaseModel):
    """How recently the nightly run must have materialized the asset (a Dagster freshness policy).

    Attributes:
        warn_after: Older than this, the asset's freshness is a warning.
        fail_after: Older than this, it fails.
    """

    model_config = ConfigDict(extra="forbid")

    warn_after: timedelta
    fail_after: timedelta

    @field_validator("warn_after", "fail_after", mode="before")
    @classmethod
    def _window(cls, v: object) -> timedelta:
        return _duration(v)

    @model_validator(mode="after")
    def _ordered(self) -> Materialized:
        if self.warn_after >= self.fail_after:
            raise ValueError("warn_after must be shorter than fail_after")
        return self


class VolumePolicy(BaseModel):
    """How far a dataset's live rows may fall below the median of its trailing nights.

    Attributes:
        nights: How many earlier nights the median is taken over.
        min_nights: Fewer nights of history than this: no verdict (a new source is never blocked).
        warn_below: A change at or below this (a fraction, -0.5 for ``-50%``) warns.
        block_below: A change at or below this fails as an error and blocks the dependent loads.
    """

    model_config = ConfigDict(extra="forbid")

    nights: int = Field(ge=1)
    min_nights: int = Field(ge=1)
    warn_below: float
    block_below: float

    @field_validator("warn_below", "block_below", mode="before")
    @classmethod
    def _drop(cls, v: object) -> float:
        match = _DROP.match(v.strip()) if isinstance(v, str) else None
        if match is None or not 0 < float(match.group(1)) <= 100:
            raise ValueError(f"{v!r} must be a fall in percent, e.g. '-50%'")
        return -float(match.group(1)) / 100

    @model_validator(mode="after")
    def _ordered(self) -> VolumePolicy:
        if self.block_below >= self.warn_below:
            raise ValueError("block_below must be a deeper fall than warn_below")
        if self.min_nights > self.nights:
            raise ValueError("min_nights cannot exceed nights")
        return self


class SourceMonitoring(BaseModel):
    """What one source declares: its freshness policy, how recent its data must be, its volume."""

    model_config = ConfigDict(extra="forbid")

    materialized: Materialized
    changed_within: timedelta | None
    volume: VolumePolicy

    @field_validator("changed_within", mode="before")
    @classmethod
    def _within(cls, v: object) -> timedelta | None:
        return None if v is None else _duration(v)


class MartMonitoring(BaseModel):
    """What one mart declares: its freshness policy."""

    model_config = ConfigDict(extra="forbid")

    materialized: Materialized


class _Defaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: dict[str, Any]
    mart: dict[str, Any]


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid")

    defaults: _Defaults
    sources: dict[str, dict[str, Any]] = {}
    marts: dict[str, dict[str, Any]] = {}


class Monitoring(BaseModel):
    """Every declared source and mart with its defaults applied."""

    model_config = ConfigDict(extra="forbid")

    sources: dict[str, SourceMonitoring]
    marts: dict[str, MartMonitoring]

    def source(self, name: str) -> SourceMonitoring:
        return self.sources[name]

    def mart(self, name: str) -> MartMonitoring:
        return self.marts[name]


def _merged(defaults: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` with ``override`` laid over it, nested mappings key by key."""
    merged = dict(defaults)
    for key, value in override.items():
        base = merged.get(key)
        merged[key] = _merged(base, value) if isinstance(base, dict) and isinstance(value, dict) else value
    return merged


def parse_monitoring(text: str, *, origin: str, sources: list[str], marts: list[str]) -> Monitoring:
    """Validate a monitoring declaration for the given source and mart names.

    Args:
        text: The YAML text.
        origin: The file named in error messages.
        sources: The declared sources (``sources.yaml``); an entry for another name is an error.
        marts: The marts (:data:`crm_pipelines.warehouse.marts.MARTS`); likewise.

    Raises:
        MonitoringError: naming the file and every bad key.
    """
    document = parse_declaration(
        text, origin=origin, model=_Document, error=MonitoringError, what="monitoring"
    )
    unknown = [f"sources.{s}" for s in document.sources if s not in sources] + [
        f"marts.{m}" for m in document.marts if m not in marts
    ]
    if unknown:
        raise MonitoringError(f"{origin}: {', '.join(unknown)}: not a declared source or mart")
    _validated(SourceMonitoring, document.defaults.source, where="defaults.source", origin=origin)
    _validated(MartMonitoring, document.defaults.mart, where="defaults.mart", origin=origin)
    return Monitoring(
        sources={
            s: _validated(
                SourceMonitoring,
                _merged(document.defaults.source, document.sources.get(s, {})),
                where=f"sources.{s}",
                origin=origin,
            )
            for s in sources
        },
        marts={
            m: _validated(
                MartMonitoring,
                _merged(document.defaults.mart, document.marts.get(m, {})),
                where=f"marts.{m}",
                origin=origin,
            )
            for m in marts
        },
    )


def _validated(model: type[M], data: dict[str, Any], *, where: str, origin: str) -> M:
    """``data`` as ``model``; the error names the keys under ``where`` (defaults.source, sources.x)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = "\n".join(f"  {where}.{line}" for line in problems(exc))
        raise MonitoringError(f"{origin}: invalid monitoring:\n{lines}") from None


@cache
def load_monitoring(path: Path = DEFAULT_MONITORING) -> Monitoring:
    """Read and validate ``monitoring.yaml`` for the sources of ``sources.yaml`` and every mart."""
    from crm_pipelines.sources import load_sources
    from crm_pipelines.warehouse.marts import MARTS

    return parse_monitoring(
        Path(path).read_text(encoding="utf-8"),
        origin=str(path),
        sources=list(load_sources()),
        marts=[m.name for m in MARTS],
    )
