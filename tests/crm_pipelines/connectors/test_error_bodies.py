"""What an error answer says (error_bodies.py): the message and code of each shape we know."""

from __future__ import annotations

import httpx
import pytest

from crm_pipelines.connectors.error_bodies import ERROR_SHAPES, describe_error_body


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


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            {"$diagnoses": [{"$message": "a", "$applicationCode": "A"}, {"$message": "b"}]},
            ("a; b", "A"),
            id="sdata-diagnoses",
        ),
        pytest.param([{"$message": "bad", "$sdataCode": "X"}], ("bad", "X"), id="sdata-bare-list"),
        pytest.param(
            {"error": {"code": "-1", "message": {"lang": "en-us", "value": "Invalid CardCode"}}},
            ("Invalid CardCode", "-1"),
            id="odata-sap-b1",
        ),
        pytest.param(
            {
                "error": "RecordInvalid",
                "description": "Record validation errors",
                "details": {
                    "priority": [{"description": "Priority: critical is not valid", "error": "InvalidValue"}]
                },
            },
            ("Record validation errors; Priority: critical is not valid", "RecordInvalid"),
            id="zendesk-record-invalid",
        ),
        pytest.param(
            {"error": "RecordNotFound", "description": "Not found"},
            ("Not found", "RecordNotFound"),
            id="zendesk-404",
        ),
        pytest.param(
            {"error": "Couldn't authenticate you"},
            ("Couldn't authenticate you", "Couldn't authenticate you"),
            id="zendesk-401",
        ),
        pytest.param({"Message": "Creatio says no"}, ("Creatio says no", None), id="message-capitalised"),
        pytest.param({"nothing": 1}, ('{"nothing": 1}', None), id="unknown-shape-quoted"),
    ],
)
def test_each_known_shape_is_tried_in_turn(body: object, expected: tuple[str, str | None]) -> None:
    response = httpx.Response(400, json=body, request=httpx.Request("GET", "https://x/y"))
    assert describe_error_body(response=response) == expected


def test_the_shapes_are_registered_in_the_order_they_are_tried() -> None:
    assert ERROR_SHAPES.names() == ["sdata", "salesforce", "odata", "zendesk", "oauth", "message"]
