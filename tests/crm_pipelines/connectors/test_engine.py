"""The connector engine: building blocks without HTTP, then end to end against the simulators."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from crm_pipelines.connectors.auth import ConnectionSettings, Secret
from crm_pipelines.connectors.engine import _format_cursor, _render, parse_cursor
from crm_pipelines.connectors.limits import (
    ErrorContext,
    InsecureURLError,
    TokenBucket,
    check_url_allowed,
    describe_error_body,
    parse_retry_after,
    redact,
)

CONTEXT = ErrorContext(system_name="salesforce", system_title="Salesforce", object_name="Contact")


# --- building blocks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("120", 120.0, id="seconds"),
        pytest.param(" 0 ", 0.0, id="zero"),
        pytest.param(None, None, id="absent"),
        pytest.param("soon", None, id="garbage"),
        pytest.param(
            format_datetime(datetime(2026, 11, 25, 10, 0, 30, tzinfo=UTC), usegmt=True), 30.0, id="http-date"
        ),
        pytest.param(
            format_datetime(datetime(2026, 11, 25, 9, 0, 0, tzinfo=UTC), usegmt=True), 0.0, id="http-date-past"
        ),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after(value=value, now=now) == expected


def test_token_bucket_paces_and_pauses() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(capacity=2, interval_seconds=1.0, clock=lambda: now[0], sleep=sleep)
    assert bucket.acquire() == 0 and bucket.acquire() == 0  # the burst
    assert bucket.acquire() == pytest.approx(0.5)  # then one token every 0.5 s
    bucket.pause(3.0)  # e.g. Retry-After: 3
    assert bucket.acquire() >= 3.0
    assert sum(slept) == pytest.approx(now[0])


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        pytest.param("https://example.my.salesforce.com", True, id="https"),
        pytest.param("http://127.0.0.1:8123", True, id="loopback-v4"),
        pytest.param("http://127.10.0.3:8123", True, id="loopback-v4-range"),
        pytest.param("http://[::1]:8123", True, id="loopback-v6"),
        pytest.param("http://localhost:8123", True, id="localhost"),
        pytest.param("http://api.hubapi.com", False, id="plain-http-remote"),
        pytest.param("http://10.0.0.5", False, id="plain-http-private"),
        pytest.param("ftp://127.0.0.1", False, id="other-scheme"),
    ],
)
def test_plain_http_only_to_loopback(url: str, allowed: bool) -> None:
    if allowed:
        check_url_allowed(url=url, context=CONTEXT)
    else:
        with pytest.raises(InsecureURLError, match="https"):
            check_url_allowed(url=url, context=CONTEXT)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            b'[{"message":"No such column \'Foo\' on entity \'Contact\'","errorCode":"INVALID_FIELD"}]',
            ("No such column 'Foo' on entity 'Contact'", "INVALID_FIELD"),
            id="salesforce",
        ),
        pytest.param(
            b'{"status":"error","message":"Invalid input JSON","correlationId":"x","category":"VALIDATION_ERROR"}',
            ("Invalid input JSON", "VALIDATION_ERROR"),
            id="hubspot",
        ),
        pytest.param(
            b'{"error":"invalid_client","error_description":"invalid client credentials"}',
            ("invalid client credentials", "invalid_client"),
            id="oauth",
        ),
        pytest.param(b"<html>Bad gateway</html>", ("<html>Bad gateway</html>", None), id="not-json"),
    ],
)
def test_error_bodies_are_understood(body: bytes, expected: tuple[str, str | None]) -> None:
    response = httpx.Response(400, content=body, request=httpx.Request("GET", "https://x/y"))
    assert describe_error_body(response=response) == expected


def test_secrets_do_not_print() -> None:
    connection = ConnectionSettings(
        base_url="https://login.example.com/", client_id="cid", client_secret="s3cr3t-value", access_token="tok-123456"
    )
    for text in (repr(connection), str(connection), repr(connection.client_secret), f"{connection.access_token}"):
        assert "s3cr3t-value" not in text and "tok-123456" not in text
    assert connection.base_url == "https://login.example.com"
    assert connection.client_secret == Secret("s3cr3t-value")
    assert redact("token tok-123456 and s3cr3t-value", connection.secret_values()) == "token *** and ***"


@pytest.mark.parametrize(
    ("fmt", "value", "round_up", "expected"),
    [
        pytest.param("soql_datetime", datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC), False, "2026-11-25T10:00:00Z"),
        pytest.param("soql_datetime", datetime(2026, 11, 25, 10, 0, 0, 500, tzinfo=UTC), True, "2026-11-25T10:00:01Z"),
        pytest.param("soql_datetime", datetime(2026, 11, 25, 11, 0, 0), False, "2026-11-25T11:00:00Z", id="naive=utc"),
        pytest.param("iso8601", datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC), False, "2026-11-25T10:00:00.123Z"),
        pytest.param("iso8601", datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC), True, "2026-11-25T10:00:00.124Z"),
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
    assert _format_cursor(value, fmt, round_up=round_up) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("2026-11-25T10:00:00.000+0000", datetime(2026, 11, 25, 10, tzinfo=UTC), id="salesforce"),
        pytest.param("2026-11-25T10:00:00.250Z", datetime(2026, 11, 25, 10, 0, 0, 250000, tzinfo=UTC), id="hubspot"),
        pytest.param("1764064800000", datetime(2025, 11, 25, 10, tzinfo=UTC), id="epoch-ms"),
        pytest.param(None, None, id="null"),
        pytest.param("yesterday", None, id="garbage"),
    ],
)
def test_parse_cursor(raw: str | None, expected: datetime | None) -> None:
    assert parse_cursor(value=raw, fmt="iso8601") == expected


def test_values_render_as_received() -> None:
    import json

    from crm_pipelines.connectors.engine import _decode

    record = _decode(b'{"a": 1.50, "b": 7, "c": true, "d": false, "e": null, "f": "x", "g": {"k": [1]}}')
    assert [_render(record[k]) for k in "abcdefg"] == ["1.50", "7", "true", "false", None, "x", '{"k":[1]}']
    assert json.dumps(record["a"]) == '"1.50"'  # kept as text, never rounded through float
