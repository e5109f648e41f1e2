"""One HTTP conversation (session.py): JSON values land exactly as the API sent them."""

from __future__ import annotations

from crm_pipelines.connectors.session import render_value


def test_values_render_as_received() -> None:
    import json

    from crm_pipelines.connectors.session import decode_json

    record = decode_json(b'{"a": 1.50, "b": 7, "c": true, "d": false, "e": null, "f": "x", "g": {"k": [1]}}')
    assert [render_value(record[k]) for k in "abcdefg"] == [
        "1.50",
        "7",
        "true",
        "false",
        None,
        "x",
        '{"k":[1]}',
    ]
    assert json.dumps(record["a"]) == '"1.50"'  # kept as text, never rounded through float
