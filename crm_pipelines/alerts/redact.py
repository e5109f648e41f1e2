"""Secrets out of the text an alert or a log line carries.

Error messages quote what failed: a connection URL with its password, a request's ``Authorization``
header, a token in a query string. Everything an alert takes from an error, and every channel
failure it logs, goes through :func:`redact` first.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

__all__ = ["MASK", "SECRET_NAME_PARTS", "first_error_line", "redact"]

MASK = "***"
# An environment variable whose name contains one of these holds a secret: its value never appears.
SECRET_NAME_PARTS = ("PASSWORD", "SECRET", "TOKEN", "KEY")
# Shorter values (``on``, ``1``, ``UTC``) would mask ordinary words.
MIN_SECRET_LENGTH = 6
# The first error line an alert carries, at most.
MAX_ERROR_LINE = 300

# scheme://user:password@host, scheme://token@host: the whole user information.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@")
# Authorization: Basic ..., authorization=...: the rest of the line.
_AUTHORIZATION = re.compile(r"(?i)(?P<name>\bauthorization[\"']?\s*[:=]\s*)[^\r\n]+")
_BEARER = re.compile(r"(?i)(?P<name>\bbearer\s+)[A-Za-z0-9._~+/=-]+")
# password=..., "client_secret": "...", access_token: ..., api_key=...: the value.
_KEY_VALUE = re.compile(
    r"(?i)(?P<name>\b[\w.-]*(?:password|passwd|pwd|secret|token|api[_-]?key)[\w.-]*[\"']?\s*[=:]\s*)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s,;&\"')\]}>]+)"
)


def _secret_values(environ: Mapping[str, str]) -> list[str]:
    values = {
        value
        for name, value in environ.items()
        if len(value) >= MIN_SECRET_LENGTH and any(part in name.upper() for part in SECRET_NAME_PARTS)
    }
    return sorted(values, key=len, reverse=True)  # longest first: a secret containing another


def redact(text: str, *, environ: Mapping[str, str] | None = None, secrets: Iterable[str] = ()) -> str:
    """``text`` without credentials: URL user information, key=value secrets, ``Authorization``
    headers, bearer tokens, and the values of secret environment variables.

    Args:
        text: An error message, a log line.
        environ: The environment whose secret variables' values are masked (default ``os.environ``).
        secrets: Further values to mask (a channel's own password or webhook URL).

    Returns:
        The text with each secret replaced by ``***``.
    """
    environment = os.environ if environ is None else environ
    extra = sorted((value for value in secrets if value), key=len, reverse=True)
    for value in [*extra, *_secret_values(environment)]:
        text = text.replace(value, MASK)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = _AUTHORIZATION.sub(lambda m: f"{m['name']}{MASK}", text)
    text = _BEARER.sub(lambda m: f"{m['name']}{MASK}", text)
    return _KEY_VALUE.sub(lambda m: f"{m['name']}{MASK}", text)


def first_error_line(message: str | None, *, environ: Mapping[str, str] | None = None) -> str | None:
    """The first non-empty line of an error message, redacted and cut to about 300 characters.

    Redacted before it is cut, so a secret is never left half-masked.
    """
    if not message:
        return None
    redacted = redact(message, environ=environ)
    line = next((line.strip() for line in redacted.splitlines() if line.strip()), None)
    if line is None:
        return None
    return line if len(line) <= MAX_ERROR_LINE else line[: MAX_ERROR_LINE - 1].rstrip() + "…"
