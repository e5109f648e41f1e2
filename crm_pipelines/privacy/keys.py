"""The masking key: one secret that makes every token and every suppressed identifier's hash.

Read from ``CRM_PIPELINES_MASKING_KEY``. Without it (the sandbox, a laptop) a random key is generated
once and kept in a file next to the warehouse (``.masking_key``, readable by its owner only), so
tokens stay the same from night to night. The key must never change once used: the analysts' tokens
and the suppression list (``ops.erasure_suppression``) are only comparable under the same key.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from filelock import FileLock

from crm_pipelines.settings import current_paths

__all__ = ["MASKING_KEY", "MASKING_KEY_FILE", "keyed_hash", "keyed_hash_sql", "masking_key"]

MASKING_KEY = "CRM_PIPELINES_MASKING_KEY"
# Where the generated development key is kept (default: next to the warehouse file).
MASKING_KEY_FILE = "CRM_PIPELINES_MASKING_KEY_FILE"
# Separates the key from the value hashed, in Python and in SQL alike.
SEPARATOR = "|"


def _key_file() -> Path:
    configured = os.environ.get(MASKING_KEY_FILE)
    if configured:
        return Path(configured)
    return current_paths().warehouse_path.with_name(".masking_key")


def masking_key() -> str:
    """The key from ``CRM_PIPELINES_MASKING_KEY``, else the generated development key (created once)."""
    key = os.environ.get(MASKING_KEY)
    if key:
        return key
    path = _key_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32))
        return path.read_text().strip()


def keyed_hash(key: str, value: str) -> str:
    """SHA-256 of key, separator and value, hex: what :func:`keyed_hash_sql` computes in DuckDB."""
    return hashlib.sha256(f"{key}{SEPARATOR}{value}".encode()).hexdigest()


def keyed_hash_sql(value_sql: str, key_param: str = "?") -> str:
    """DuckDB expression of :func:`keyed_hash` over ``value_sql``; the key is a bound parameter."""
    return f"sha256({key_param} || '{SEPARATOR}' || {value_sql})"
