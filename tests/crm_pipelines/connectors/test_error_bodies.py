"""What an error answer says (error_bodies.py): the message and code of each shape we know."""

from __future__ import annotations

import httpx
import pytest

from crm_pipelines.connectors.error_bodies import describe_error_body


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
