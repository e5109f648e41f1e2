"""Dotted paths into decoded JSON (paths.py): an absent value is MISSING, a present null is None."""

from __future__ import annotations

from typing import Any

import pytest

from crm_pipelines.connectors.paths import MISSING, resolve_path

DOC = {"a": {"b": None, "c": [{"id": "7"}]}, "flag": False}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("a.b", None, id="present-null"),
        pytest.param("a.c.0.id", "7", id="list-index"),
        pytest.param("a.c.1.id", MISSING, id="index-out-of-range"),
        pytest.param("a.x", MISSING, id="absent-key"),
        pytest.param("flag", False, id="false-is-a-value"),
        pytest.param("flag.deeper", MISSING, id="through-a-scalar"),
    ],
)
def test_resolve_path(path: str, expected: Any) -> None:
    assert resolve_path(DOC, path) is expected or resolve_path(DOC, path) == expected
