"""Reading the declaration files: YAML through libyaml's C parser, and validation errors a user reads.

The pure-Python parser takes about a quarter of a second for ``mappings.yaml``; every asset reads
declarations, so the C parser (same safe subset, same errors) is used wherever it is available.

Pydantic names a failed union member by its type (``fields.dict[str,...].salesforce.Name.form``)
and reports every member that did not fit. :func:`problems` gives one line per problem at the
YAML keys the user wrote, without the members whose shape the value does not even have.
"""

from __future__ import annotations

import re
from typing import IO, Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

__all__ = ["parse_declaration", "problems", "safe_load"]

M = TypeVar("M", bound=BaseModel)

_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# A union member's tag in an error location: a type, not a key of the document.
_TAG = re.compile(r"[\[\(]|^(?:str|int|float|bool|list|dict|none|literal)$")
# Errors that only say the value is not of a member's kind.
_WRONG_KIND = re.compile(r"_type$|^literal_error$|^union_tag_")


def safe_load(stream: str | bytes | IO[str] | IO[bytes]) -> Any:
    """``yaml.safe_load``, with the C parser when there is one."""
    return yaml.load(stream, Loader=_LOADER)


def problems(exc: ValidationError) -> list[str]:
    """``<key.path>: <message>`` per problem, at the keys of the YAML document."""
    found: list[tuple[tuple[str, ...], str, str]] = []
    for error in exc.errors():
        where = tuple(str(p) for p in error["loc"] if not (isinstance(p, str) and _TAG.search(p)))
        found.append((where, error["type"], error["msg"].removeprefix("Value error, ")))
    lines: list[str] = []
    for where, kind, message in found:
        # A member the value is not even shaped like, when another member says what is wrong inside.
        deeper = any(len(other) > len(where) and other[: len(where)] == where for other, _, _ in found)
        if _WRONG_KIND.search(kind) and deeper:
            continue
        line = f"{'.'.join(where) or '<top>'}: {message}"
        if line not in lines:
            lines.append(line)
    return lines


def parse_declaration(text: str, *, origin: str, model: type[M], error: type[Exception], what: str) -> M:
    """A YAML declaration validated as ``model``; ``error`` names ``origin`` and every bad key.

    Args:
        text: The YAML text (empty means an empty mapping).
        origin: The file (or other source) named in messages.
        model: The pydantic model of the whole document.
        error: The exception raised for invalid YAML or content.
        what: What the document declares, for messages ("syncs", "match rules" ...).
    """
    try:
        data = safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise error(f"{origin}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise error(f"{origin}: expected a mapping of {what}, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = "\n".join(f"  {line}" for line in problems(exc))
        raise error(f"{origin}: invalid {what}:\n{lines}") from None
