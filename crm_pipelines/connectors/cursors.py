"""Cursor values: literals for the server, parsing what records carry, and the server-side filter.

Incremental windows are ``since <= cursor < until``. Where the endpoint can filter (SOQL WHERE) the
window is pushed to the server, widened to the literal's precision, and then applied exactly on the
client too (by the collector in :mod:`.collect`); where it cannot (the HubSpot list endpoint) it is
applied on the client only.

A bound is rendered in the declared literal format (:func:`format_cursor`, the formats are in
:mod:`.cursor_formats`), rounded outward so the server never drops a record the client window keeps; an exclusive lower bound ("modified after") is
sent one literal step earlier (:func:`lower_literal`). :func:`parse_cursor` reads record values:
ISO 8601 with or without an offset, epoch ms, ASP.NET ``/Date(ms)/``, and a date plus a separate
time of day.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from crm_pipelines.connectors.cursor_formats import CURSOR_FORMATS
from crm_pipelines.connectors.paths import MISSING
from crm_pipelines.connectors.spec import IncrementalSpec

__all__ = [
    "format_cursor",
    "lower_literal",
    "parse_cursor",
    "render_where",
    "utc",
]


def utc(value: datetime) -> datetime:
    """An aware UTC datetime; naive datetimes are taken as UTC, the warehouse's convention."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def format_cursor(value: datetime, fmt: str, *, round_up: bool) -> str:
    """Render a bound in the literal format ``fmt``, widened outward to that format's precision."""
    return CURSOR_FORMATS.get(fmt).render(utc(value), round_up=round_up)


def lower_literal(since: datetime, incremental: IncrementalSpec) -> str:
    """The window's lower bound as the server reads it: an exclusive bound ("modified after") is
    moved one literal step earlier, so a record stamped exactly at ``since`` is still returned."""
    fmt = incremental.format
    if incremental.lower_bound == "exclusive":
        # Floor first, then step back: the literal then lies strictly before every instant >= since.
        floored = parse_cursor(value=format_cursor(since, fmt, round_up=False), fmt=fmt) or since
        return format_cursor(floored - CURSOR_FORMATS.get(fmt).precision, fmt, round_up=False)
    return format_cursor(since, fmt, round_up=False)


_MS_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")


def parse_cursor(*, value: Any, fmt: str, time_of_day: Any = None) -> datetime | None:
    """Parse a cursor value from a record into an aware UTC datetime.

    Args:
        value: The raw value (Salesforce ``2026-11-25T10:00:00.000+0000``, ISO 8601 with or without an
            offset or time, ``2026-11-25 10:00:00``, epoch ms, SData/ASP.NET ``/Date(1764064800000)/``).
        fmt: The declared cursor format.
        time_of_day: A separate time of day (``10:15:00``, or seconds since midnight) for a date
            cursor (SAP Business One ``UpdateDate`` + ``UpdateTime``).

    Returns:
        The datetime, or ``None`` when null or unparseable.
    """
    if value is None or value is MISSING or isinstance(value, bool):
        return None
    text = str(value).strip()
    if not text:
        return None
    # Epoch milliseconds of any date since 2001 have 13 digits; shorter digit strings (a compact
    # YYYYMMDD) are not instants in milliseconds.
    if CURSOR_FORMATS.get(fmt).epoch_ms or (text.isdigit() and len(text) >= 12):
        try:
            return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
        except (ValueError, OverflowError):
            return None
    ms_date = _MS_DATE.match(text)
    if ms_date:
        return datetime.fromtimestamp(int(ms_date.group(1)) / 1000, tz=UTC)
    try:
        moment = utc(datetime.fromisoformat(text))
    except ValueError:
        return None
    if time_of_day is not None and time_of_day is not MISSING:
        moment = _with_time(moment, time_of_day)
    return moment


def _with_time(day: datetime, time_of_day: Any) -> datetime:
    text = str(time_of_day).strip()
    if not text:
        return day
    midnight = day.replace(hour=0, minute=0, second=0, microsecond=0)
    if text.isdigit():
        # SAP Business One's DI API keeps times as HHMM or seconds; the Service Layer sends "10:15:00".
        number = int(text)
        seconds = number if number >= 2400 else (number // 100) * 3600 + (number % 100) * 60
        return midnight + timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(f"2000-01-01T{text}" if ":" in text and "T" not in text else text)
    except ValueError:
        return day
    return midnight + timedelta(
        hours=parsed.hour, minutes=parsed.minute, seconds=parsed.second, microseconds=parsed.microsecond
    )


def render_where(
    incremental: IncrementalSpec, since: datetime | None, until: datetime | None, extra: str | None = None
) -> str:
    """The rendered ``server_filter`` of the window (and ``extra``), or ``extra`` alone without one."""
    server = incremental.server_filter
    if server is None:
        return extra or ""
    conditions = [extra] if extra else []
    if since is not None:
        conditions.append(
            server.lower.format(value=lower_literal(since, incremental), cursor=incremental.cursor)
        )
    if until is not None and server.upper is not None:
        conditions.append(
            server.upper.format(
                value=format_cursor(until, incremental.format, round_up=True), cursor=incremental.cursor
            )
        )
    if not conditions:
        return ""  # nothing to filter on: no " WHERE " left dangling
    return server.where.format(conditions=server.join.join(conditions), cursor=incremental.cursor)
