"""What an error answer says: its message and code, at declared paths or in a shape we know."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import httpx

from crm_pipelines.connectors.paths import MISSING, resolve_path

__all__ = ["describe_error_body"]

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

    The system's declared paths are tried first; then the shapes the bundled systems use:
    Salesforce ``[{"message", "errorCode"}]``; HubSpot, Zoho ``{"message", "category"|"code"}``; OAuth
    ``{"error", "error_description"}`` (SugarCRM ``error_message``, Pipedrive ``error_info``); OData
    ``{"error": {"code", "message"}}`` (SAP Business One's message is ``{"lang", "value"}``); SData
    ``{"$diagnoses": [{"$sdataCode", "$message"}]}``. Anything else is quoted (shortened).

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
    message, code = _known_shapes(data)
    return declared_message or message, declared_code or code


def _known_shapes(data: Any) -> tuple[str, str | None]:
    if isinstance(data, list) and data and all(isinstance(item, dict) for item in data):
        if any("$message" in item or "$sdataCode" in item for item in data):
            return _known_shapes({"$diagnoses": data})
        messages = [str(item.get("message", "")).strip() for item in data]
        codes = [str(item["errorCode"]) for item in data if item.get("errorCode")]
        return "; ".join(m for m in messages if m) or "no message", (codes[0] if codes else None)
    if isinstance(data, dict):
        diagnoses = data.get("$diagnoses") or data.get("diagnoses")
        if isinstance(diagnoses, list) and diagnoses:
            first = diagnoses[0] if isinstance(diagnoses[0], dict) else {}
            code = first.get("$sdataCode") or first.get("$applicationCode")
            return _text(diagnoses) or "no message", (str(code) if code else None)
        error = data.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            return _text(error.get("message")) or "no message", (
                str(code) if code not in (None, "") else None
            )
        if isinstance(error, str):
            detail = data.get("error_description") or data.get("error_message") or data.get("error_info")
            return str(detail or error), error
        message = data.get("message") or data.get("Message")
        code = data.get("category") or data.get("errorCode") or data.get("code")
        if message is not None:
            return str(_text(message)), (str(code) if code is not None else None)
    return json.dumps(data)[:_BODY_EXCERPT], None
