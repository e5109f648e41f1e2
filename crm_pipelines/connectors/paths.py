"""Dotted paths into decoded JSON documents: the one resolver, used by every module.

A declaration names where things sit in an answer with dotted paths (``paging.next.after``,
``associations.companies.results.0.id``, ``@odata.nextLink``); :func:`resolve_path` follows one
and tells an absent value (:data:`MISSING`) from a present null. Declared paths of error bodies
(``error_body.message_paths``) are read with it too, so they match dotted keys whole and index
lists the same way as every other path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["MISSING", "resolve_path"]


class _Missing:
    """Marks a path that is absent from a document (as opposed to present with a null value)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()


def resolve_path(data: Any, path: str) -> Any:
    """Follow a dotted path through dicts and lists (numeric parts index lists).

    A key that itself contains dots (``@odata.nextLink``, ``odata.nextLink``) is matched whole: at
    each step, the rest of the path is tried as one key before it is split. The empty path is the
    document itself.

    Args:
        data: A decoded JSON document.
        path: E.g. ``properties.email``, ``associations.companies.results.0.id``, ``@odata.deltaLink``.

    Returns:
        The value, or :data:`MISSING` when any step does not exist.
    """
    if path == "":
        return data
    current = data
    parts = path.split(".")
    for index, part in enumerate(parts):
        if isinstance(current, Mapping):
            if index < len(parts) - 1:
                rest = ".".join(parts[index:])
                if rest in current:
                    return current[rest]
            if part not in current:
                return MISSING
            current = current[part]
        elif isinstance(current, list) and part.lstrip("-").isdigit():
            index = int(part)
            if not -len(current) <= index < len(current):
                return MISSING
            current = current[index]
        else:
            return MISSING
    return current
