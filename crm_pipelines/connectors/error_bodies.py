"""What an error answer says: its message and code, at declared paths or in a shape we know.

A system may declare where its error bodies put the message and the code (``error_body``); else each
shape registered in :data:`ERROR_SHAPES` is asked in turn, the first that recognises the body
answering. A shape is a function of the decoded body returning ``(message, code)``, or None when
the body is not of its shape. A new one registers itself with ``@ERROR_SHAPES.register(name)`` here
or in a module imported here; the order of registration is the order they are tried.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import httpx

from crm_pipelines.connectors.paths import MISSING, resolve_path
from crm_pipelines.registry import Registry

__all__ = ["ERROR_SHAPES", "ErrorShape", "describe_error_body"]

# Reads (message, code) from a decoded error body, or None when the body is not of its shape.
ErrorShape = Callable[[Any], "tuple[str, str | None] | None"]

# Every error body shape we know, by name, tried in the order registered.
ERROR_SHAPES: Registry[ErrorShape] = Registry("error body shape")

# Longest excerpt of an unparseable error body kept in a message.
_BODY_EXCERPT = 300


def _text(value: Any) -> str | None:
    """A message that may be a string, an OData ``{"lang", "value"}`` object or a list of those."""
    if value is None or value is MISSING:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return _text(value.get("value") or value.get("message") or value.get("$message"))
    if isinstance(value, list):
        parts = [t for t in (_text(v) for v in value) if t]
        return "; ".join(parts) or None
    return str(value)


def describe_error_body(
    *, response: httpx.Response, message_paths: Iterable[str] = (), code_paths: Iterable[str] = ()
) -> tuple[str, str | None]:
    """Pull the message and code out of an error response.

    The system's declared paths are tried first; then each shape in :data:`ERROR_SHAPES`, in the
    order registered, until one recognises the body: SData diagnoses, Salesforce's error list, OData,
    OAuth, ``{"message", "code"}``. Anything else is quoted (shortened).

    Args:
        response: An error response (its body is read).
        message_paths: Dotted paths of the message, tried first.
        code_paths: Dotted paths of the code, tried first.

    Returns:
        ``(message, code)``; ``code`` is ``None`` when the body has none.
    """
    try:
        data: Any = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        text = response.text.strip()
        return (text[:_BODY_EXCERPT] or response.reason_phrase or "no response body"), None
    declared_message = next((t for p in message_paths if (t := _text(resolve_path(data, p)))), None)
    declared_code = next(
        (str(c) for p in code_paths if (c := resolve_path(data, p)) is not MISSING and c not in (None, "")),
        None,
    )
    message, code = next(
        (found for shape in ERROR_SHAPES.values() if (found := shape(data)) is not None),
        (json.dumps(data)[:_BODY_EXCERPT], None),
    )
    return declared_message or message, declared_code or code


# --- the shapes the bundled systems answer with, in the order they are tried -----------------------


@ERROR_SHAPES.register("sdata")
def sdata_diagnoses(data: Any) -> tuple[str, str | None] | None:
    """SData ``{"$diagnoses": [{"$sdataCode", "$message"}]}``, or the bare list of diagnoses."""
    if isinstance(data, list) and data and all(isinstance(item, dict) for item in data):
        if not any("$message" in item or "$sdataCode" in item for item in data):
            return None
        diagnoses: Any = data
    elif isinstance(data, dict):
        diagnoses = data.get("$diagnoses") or data.get("diagnoses")
        if not (isinstance(diagnoses, list) and diagnoses):
            return None
    else:
        return None
    first = diagnoses[0] if isinstance(diagnoses[0], dict) else {}
    code = first.get("$sdataCode") or first.get("$applicationCode")
    return _text(diagnoses) or "no message", (str(code) if code else None)


@ERROR_SHAPES.register("salesforce")
def salesforce_errors(data: Any) -> tuple[str, str | None] | None:
    """Salesforce ``[{"message", "errorCode"}]``: every message, the first code."""
    if not (isinstance(data, list) and data and all(isinstance(item, dict) for item in data)):
        return None
    messages = [str(item.get("message", "")).strip() for item in data]
    codes = [str(item["errorCode"]) for item in data if item.get("errorCode")]
    return "; ".join(m for m in messages if m) or "no message", (codes[0] if codes else None)


@ERROR_SHAPES.register("odata")
def odata_error(data: Any) -> tuple[str, str | None] | None:
    """OData ``{"error": {"code", "message"}}`` (SAP Business One's message is ``{"lang", "value"}``)."""
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None
    code = error.get("code")
    return _text(error.get("message")) or "no message", (str(code) if code not in (None, "") else None)


@ERROR_SHAPES.register("zendesk")
def zendesk_error(data: Any) -> tuple[str, str | None] | None:
    """Zendesk ``{"error": "RecordInvalid", "description", "details": {field: [{description, error}]}}``:
    the description and every field's reason, the error as the code."""
    if not isinstance(data, dict) or not isinstance(data.get("error"), str):
        return None
    description, details = data.get("description"), data.get("details")
    if not isinstance(description, str) and not isinstance(details, dict):
        return None  # an OAuth-style body: {"error", "error_description"}
    reasons = [
        str(entry.get("description") or entry.get("error"))
        for entries in (details.values() if isinstance(details, dict) else ())
        if isinstance(entries, list)
        for entry in entries
        if isinstance(entry, dict) and (entry.get("description") or entry.get("error"))
    ]
    message = "; ".join([m for m in (description if isinstance(description, str) else None, *reasons) if m])
    return message or data["error"], data["error"]


@ERROR_SHAPES.register("oauth")
def oauth_error(data: Any) -> tuple[str, str | None] | None:
    """OAuth ``{"error", "error_description"}`` (SugarCRM ``error_message``, Pipedrive ``error_info``)."""
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, str):
        return None
    detail = data.get("error_description") or data.get("error_message") or data.get("error_info")
    return str(detail or error), error


@ERROR_SHAPES.register("message")
def message_and_code(data: Any) -> tuple[str, str | None] | None:
    """HubSpot, Zoho and most others: ``{"message", "category"|"errorCode"|"code"}``."""
    if not isinstance(data, dict):
        return None
    message = data.get("message") or data.get("Message")
    if message is None:
        return None
    code = data.get("category") or data.get("errorCode") or data.get("code")
    return str(_text(message)), (str(code) if code is not None else None)
