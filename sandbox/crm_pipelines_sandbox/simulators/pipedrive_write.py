"""Pipedrive API v2 in the sandbox: a create/update request body checked and turned into store values.

Split from :mod:`.pipedrive`, whose ``POST /api/v2/{object}`` and ``PATCH /api/v2/{object}/{id}``
handlers call :func:`body_values` before writing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

from crm_pipelines_sandbox.simulators.base import Response
from crm_pipelines_sandbox.simulators.pipedrive_schema import (
    CUSTOM_LABELS,
    MAX_TEXT_LENGTH,
    STANDARD_NAMES,
    v2_error,
)
from crm_pipelines_sandbox.simulators.records import ObjectDef


def body_values(obj: ObjectDef, body: Mapping[str, object]) -> dict[str, object] | Response:
    """The request body as store values; unknown or read-only keys are validation errors."""
    types = {f.name: f.type for f in obj.fields}
    standard = STANDARD_NAMES[obj.name]
    values: dict[str, object] = {}
    for name, value in body.items():
        if name == "custom_fields":
            if not isinstance(value, dict):
                return v2_error(
                    400,
                    "Validation failed: custom_fields: must be an object",
                    "ERR_SCHEMA_VALIDATION_FAILED",
                )
            for key, custom_value in value.items():
                if key not in types or key in standard:
                    return v2_error(
                        400,
                        f"Validation failed: custom_fields: Unknown custom field '{key}'",
                        "ERR_SCHEMA_VALIDATION_FAILED",
                    )
                is_text = CUSTOM_LABELS.get(key, ("", "varchar"))[1] == "varchar"
                if is_text and isinstance(custom_value, str) and len(custom_value) > MAX_TEXT_LENGTH:
                    return v2_error(
                        400,
                        f"Validation failed: custom_fields.{key}: must be at most {MAX_TEXT_LENGTH} characters",
                        "ERR_SCHEMA_VALIDATION_FAILED",
                    )
                values[key] = custom_value
            continue
        if name not in standard or name in ("id", "is_deleted"):
            return v2_error(
                400, f"Validation failed: {name}: Unknown parameter", "ERR_SCHEMA_VALIDATION_FAILED"
            )
        field_type = types[name]
        if (
            value is not None
            and field_type in ("integer", "number")
            and (isinstance(value, bool) or not isinstance(value, int | float))
        ):
            return v2_error(
                400, f"Validation failed: {name}: must be a number", "ERR_SCHEMA_VALIDATION_FAILED"
            )
        if field_type == "date" and value is not None:
            try:
                value = date.fromisoformat(str(value)).isoformat()
            except ValueError:
                return v2_error(
                    400,
                    f"Validation failed: {name}: must be a date (YYYY-MM-DD)",
                    "ERR_SCHEMA_VALIDATION_FAILED",
                )
        if name in ("emails", "phones"):
            if not isinstance(value, list) or not all(isinstance(v, dict) and "value" in v for v in value):
                return v2_error(
                    400,
                    f"Validation failed: {name}: must be a list of {{value, primary, label}}",
                    "ERR_SCHEMA_VALIDATION_FAILED",
                )
            value = [
                {
                    "value": str(v["value"]),
                    "primary": bool(v.get("primary", i == 0)),
                    "label": str(v.get("label") or "work"),
                }
                for i, v in enumerate(value)
            ]
        values[name] = value
    if (
        obj.name == "persons"
        and values.get("name") is None
        and (values.get("first_name") or values.get("last_name"))
    ):
        values["name"] = " ".join(str(values[n]) for n in ("first_name", "last_name") if values.get(n))
    return values
