"""Cursor values (cursors.py): literals for the server, the window filter, parsing what records carry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from crm_pipelines.connectors.cursors import format_cursor, lower_literal, parse_cursor, render_where
from crm_pipelines.connectors.spec import IncrementalSpec


@pytest.mark.parametrize(
    ("fmt", "value", "round_up", "expected"),
    [
        pytest.param(
            "soql_datetime", datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC), False, "2026-11-25T10:00:00Z"
        ),
        pytest.param(
            "soql_datetime", datetime(2026, 11, 25, 10, 0, 0, 500, tzinfo=UTC), True, "2026-11-25T10:00:01Z"
        ),
        pytest.param(
            "soql_datetime", datetime(2026, 11, 25, 11, 0, 0), False, "2026-11-25T11:00:00Z", id="naive=utc"
        ),
        pytest.param(
            "iso8601", datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC), False, "2026-11-25T10:00:00.123Z"
        ),
        pytest.param(
            "iso8601", datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC), True, "2026-11-25T10:00:00.124Z"
        ),
        pytest.param("epoch_ms", datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC), False, "1000"),
        pytest.param(
            "soql_datetime",
            datetime(2026, 11, 25, 11, 0, 0, tzinfo=UTC).astimezone(UTC.__class__(timedelta(hours=1))),
            False,
            "2026-11-25T11:00:00Z",
            id="offset-converted",
        ),
    ],
)
def test_cursor_literals(fmt: str, value: datetime, round_up: bool, expected: str) -> None:
    assert format_cursor(value, fmt, round_up=round_up) == expected


@pytest.mark.parametrize(
    ("server_filter", "since", "until", "extra", "expected"),
    [
        pytest.param(
            {"lower": "d ge @{value}@", "upper": "d lt @{value}@", "join": " and ", "where": "{conditions}"},
            datetime(2026, 11, 25, tzinfo=UTC),
            datetime(2026, 11, 26, tzinfo=UTC),
            None,
            "d ge @2026-11-25T00:00:00Z@ and d lt @2026-11-26T00:00:00Z@",
            id="both-bounds",
        ),
        pytest.param(
            {"lower": "d ge @{value}@", "join": " and ", "where": "{conditions}"},
            datetime(2026, 11, 25, tzinfo=UTC),
            datetime(2026, 11, 26, tzinfo=UTC),
            None,
            "d ge @2026-11-25T00:00:00Z@",
            id="no-upper-template-end-left-to-the-client",
        ),
        pytest.param(
            {"lower": "d ge @{value}@", "join": " and ", "where": "{conditions}"},
            None,
            datetime(2026, 11, 26, tzinfo=UTC),
            "flag eq 1",
            "flag eq 1",
            id="no-upper-template-deleted-pass-filter-alone",
        ),
        pytest.param(
            {"lower": "d >= {value}", "where": " WHERE {conditions}"},
            None,
            datetime(2026, 11, 26, tzinfo=UTC),
            None,
            "",
            id="no-upper-template-nothing-to-filter-no-dangling-where",
        ),
    ],
)
def test_server_window_filter(
    server_filter: dict[str, str],
    since: datetime | None,
    until: datetime | None,
    extra: str | None,
    expected: str,
) -> None:
    incremental = IncrementalSpec.model_validate(
        {"cursor": "d", "format": "sdata", "server_filter": server_filter}
    )
    assert render_where(incremental, since, until, extra) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("2026-11-25T10:00:00.000+0000", datetime(2026, 11, 25, 10, tzinfo=UTC), id="salesforce"),
        pytest.param(
            "2026-11-25T10:00:00.250Z", datetime(2026, 11, 25, 10, 0, 0, 250000, tzinfo=UTC), id="hubspot"
        ),
        pytest.param("1764064800000", datetime(2025, 11, 25, 10, tzinfo=UTC), id="epoch-ms"),
        pytest.param(None, None, id="null"),
        pytest.param("yesterday", None, id="garbage"),
    ],
)
def test_parse_cursor(raw: str | None, expected: datetime | None) -> None:
    assert parse_cursor(value=raw, fmt="iso8601") == expected


@pytest.mark.parametrize(
    ("fmt", "lower_bound", "expected"),
    [
        pytest.param("iso8601_offset", "inclusive", "2026-11-25T10:00:00+00:00", id="inclusive-as-is"),
        pytest.param(
            "iso8601_offset", "exclusive", "2026-11-25T09:59:59+00:00", id="after-one-second-earlier"
        ),
        pytest.param("iso8601", "exclusive", "2026-11-25T09:59:59.999Z", id="after-one-millisecond-earlier"),
        pytest.param("date", "exclusive", "2026-11-24", id="after-one-day-earlier"),
        pytest.param("epoch_ms", "exclusive", "1795600799999", id="epoch-ms"),
    ],
)
def test_an_exclusive_lower_bound_is_sent_one_literal_step_earlier(
    fmt: str, lower_bound: str, expected: str
) -> None:
    incremental = IncrementalSpec.model_validate(
        {"cursor": "Modified_Time", "format": fmt, "lower_bound": lower_bound}
    )
    # Sub-second parts are floored first: the literal then lies before every instant >= since.
    since = datetime(2026, 11, 25, 10, 0, 0, 400 if fmt == "iso8601" else 0, tzinfo=UTC)
    assert lower_literal(since, incremental) == expected
