"""The writer lock as a file next to the DuckDB file: every process of one host takes turns.

The default when ``CRM_PIPELINES_LOCK_URL`` is unset. The operating system holds it (``flock``) and
frees it when its holder exits, however it exits.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from filelock import FileLock, Timeout

from crm_pipelines.warehouse.locks import register_lock

__all__ = ["FileHolder"]


@register_lock("file")
class FileHolder:
    """One acquisition of the lock file ``file:///path/to/warehouse.duckdb.lock``.

    Args:
        url: ``file://`` URL of the lock file (its folder must exist).
        name: The warehouse's identity (unused: the file is the lock).
    """

    def __init__(self, url: str, *, name: str) -> None:
        self.path = Path(url2pathname(urlsplit(url).path))
        self.where = f"lock file {self.path}"
        self._lock = FileLock(str(self.path))

    def acquire(self, timeout: float) -> bool:
        try:
            self._lock.acquire(timeout=max(timeout, 0.0))
        except Timeout:
            return False
        return True

    def release(self) -> None:
        self._lock.release()
