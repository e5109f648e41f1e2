"""Cursor literal formats: how a window bound is written in a request (``incremental.format``).

A format renders an instant (UTC) as the literal a server's filter or parameter expects, rounded
down, or up to its next step (:meth:`CursorFormat.render`), and knows the step of its precision (an
exclusive lower bound is sent one step earlier). Each is registered in :data:`CURSOR_FORMATS` by the
name a declaration uses. A new format is a :class:`CursorFormat` registered under a new name here
or in a module imported here.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from datetime import datetime, timedelta

from crm_pipelines.registry import Registry

__all__ = [
    "CURSOR_FORMATS",
    "CursorFormat",
    "Days",
    "EpochMilliseconds",
    "EpochSeconds",
    "Milliseconds",
    "WholeSeconds",
]


class CursorFormat(ABC):
    """How a cursor bound is written in a request."""

    # The smallest step a literal of this format can express.
    precision: timedelta
    # Cursor values of this format are epoch milliseconds, whatever they look like.
    epoch_ms: bool = False

    @abstractmethod
    def render(self, value: datetime, *, round_up: bool) -> str:
        """``value`` (aware, UTC) as a literal: rounded down, or up to the next step with ``round_up``."""


class WholeSeconds(CursorFormat):
    """A literal with whole seconds, in a ``strftime`` pattern.

    Args:
        pattern: E.g. ``%Y-%m-%dT%H:%M:%SZ``.
    """

    precision = timedelta(seconds=1)

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def render(self, value: datetime, *, round_up: bool) -> str:
        floored = value.replace(microsecond=0)
        if round_up and floored != value:
            floored += timedelta(seconds=1)
        return floored.strftime(self.pattern)


class Milliseconds(CursorFormat):
    """ISO 8601 with milliseconds and ``Z``, as HubSpot writes its timestamps."""

    precision = timedelta(milliseconds=1)

    def render(self, value: datetime, *, round_up: bool) -> str:
        ms_floor = value.replace(microsecond=value.microsecond // 1000 * 1000)
        if round_up and ms_floor != value:
            ms_floor += timedelta(milliseconds=1)
        return ms_floor.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms_floor.microsecond // 1000:03d}Z"


class Days(CursorFormat):
    """A date (``YYYY-MM-DD``)."""

    precision = timedelta(days=1)

    def render(self, value: datetime, *, round_up: bool) -> str:
        day = value.replace(hour=0, minute=0, second=0, microsecond=0)
        if round_up and day != value:
            day += timedelta(days=1)
        return day.strftime("%Y-%m-%d")


class EpochMilliseconds(CursorFormat):
    """Milliseconds since 1970-01-01 UTC."""

    precision = timedelta(milliseconds=1)
    epoch_ms = True

    def render(self, value: datetime, *, round_up: bool) -> str:
        ms = value.timestamp() * 1000
        return str(math.ceil(ms) if round_up else math.floor(ms))


class EpochSeconds(CursorFormat):
    """Whole seconds since 1970-01-01 UTC (Zendesk's ``start_time``); record values stay ISO 8601."""

    precision = timedelta(seconds=1)

    def render(self, value: datetime, *, round_up: bool) -> str:
        seconds = value.timestamp()
        return str(math.ceil(seconds) if round_up else math.floor(seconds))


# Every cursor format, by the name ``incremental.format`` gives it.
CURSOR_FORMATS: Registry[CursorFormat] = Registry("cursor format")
# SOQL and OData dateTime literals (YYYY-MM-DDThh:mm:ssZ) carry whole seconds; SOQL's are unquoted.
CURSOR_FORMATS.add("soql_datetime", WholeSeconds("%Y-%m-%dT%H:%M:%SZ"))
CURSOR_FORMATS.add("iso8601", Milliseconds())  # 2026-11-25T10:00:00.123Z (HubSpot)
CURSOR_FORMATS.add(
    "iso8601_seconds", WholeSeconds("%Y-%m-%dT%H:%M:%SZ")
)  # OData: Dynamics, Creatio; Pipedrive
CURSOR_FORMATS.add("iso8601_offset", WholeSeconds("%Y-%m-%dT%H:%M:%S+00:00"))  # Zoho, SugarCRM
CURSOR_FORMATS.add("sql_datetime", WholeSeconds("%Y-%m-%d %H:%M:%S"))  # 2026-11-25 10:00:00
CURSOR_FORMATS.add("date", Days())  # SAP Business One UpdateDate
CURSOR_FORMATS.add("epoch_ms", EpochMilliseconds())  # 1764064800000
CURSOR_FORMATS.add("epoch_seconds", EpochSeconds())  # 1764064800 (Zendesk start_time)
CURSOR_FORMATS.add("sdata", WholeSeconds("%Y-%m-%dT%H:%M:%SZ"))  # as the SData literal @...@ carries it
