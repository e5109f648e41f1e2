"""The warehouse's writer lock: one writer at a time, on one host or across several.

By default the lock is a file next to the DuckDB file (:mod:`.file`): every process of one host that
opens the warehouse takes turns. Writers on several hosts share a lock on a server named by
``CRM_PIPELINES_LOCK_URL``:

- ``postgresql://user:password@host:5432/db`` (:mod:`.postgresql`): a session-level advisory lock,
  held by one connection for as long as the write lasts; a killed holder's session ends and frees it.
- ``redis://host:6379/0`` (:mod:`.redis`): a Redis lock with a lease (``?lease_seconds=30`` by
  default) that the holder renews while it holds the lock; a killed holder's lease runs out.

Each backend is a module of this package that registers its URL schemes (:func:`register_lock`), so a
new one is a new module, not a branch here. The lock is keyed by a stable digest of the warehouse's
identity (the DuckDB file's absolute path), the same on every host that mounts it at the same path.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import pkgutil
import re
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Protocol, TypeVar

__all__ = [
    "LOCK_URL",
    "Holder",
    "LockServerError",
    "WriterLock",
    "WriterLockTimeout",
    "lock_key",
    "lock_url",
    "open_lock",
    "register_lock",
    "without_password",
]

LOCK_URL = "CRM_PIPELINES_LOCK_URL"


def lock_url() -> str | None:
    """``CRM_PIPELINES_LOCK_URL``: the server every host's writers share the lock on, or None (a lock file)."""
    return os.environ.get(LOCK_URL) or None


class WriterLockTimeout(TimeoutError):
    """The writer lock stayed taken for the whole wait: another process is writing the warehouse."""


class LockServerError(ConnectionError):
    """The lock's server could not be reached or refused us; the message carries no password."""


class Holder(Protocol):
    """One acquisition of a backend's lock: created, acquired once, released once.

    Attributes:
        where: Where the lock lives, safe to show (no password).
    """

    where: str

    def acquire(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds (0: try once) for the lock; False when it stayed taken.

        Raises:
            LockServerError: the lock's server could not be reached.
        """
        ...

    def release(self) -> None: ...


HolderFactory = Callable[..., Holder]  # (url, *, name) -> Holder
_F = TypeVar("_F", bound=HolderFactory)
_SCHEMES: dict[str, HolderFactory] = {}
_discovered = False


def register_lock(*schemes: str) -> Callable[[_F], _F]:
    """Make :func:`open_lock` answer URLs of ``schemes`` with the decorated factory ``(url, *, name)``."""

    def decorate(factory: _F) -> _F:
        for scheme in schemes:
            _SCHEMES[scheme] = factory
        return factory

    return decorate


def _discover() -> None:
    """Import every module of this package once: each registers its schemes."""
    global _discovered
    if not _discovered:
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")
        _discovered = True


def lock_key(name: str) -> bytes:
    """A stable digest of a warehouse's identity: the same in every process and on every host."""
    return hashlib.sha256(f"crm_pipelines.warehouse:{name}".encode()).digest()


def without_password(text: str, url: str) -> str:
    """``text`` with the password of ``url`` (and any ``scheme://user:password@``) masked."""
    password = re.match(r"^[^:]+://[^:/@]*:([^@/]*)@", url)
    if password and password.group(1):
        text = text.replace(password.group(1), "***")
    return re.sub(r"(://[^:/@\s]*:)[^@\s]+@", r"\1***@", text)


class WriterLock:
    """The writer lock of one warehouse, as a context manager.

    Processes and threads take turns; a thread that holds it may enter again (only the outermost
    exit releases it).

    Args:
        factory: Makes one acquisition of the backend's lock.
        url: The lock's URL (for the scheme only; never shown).
        name: The warehouse's identity, hashed into the lock's key.
        label: The warehouse as messages name it (no secrets).
        timeout: Seconds to wait before :class:`WriterLockTimeout`.
    """

    def __init__(self, factory: HolderFactory, *, url: str, name: str, label: str, timeout: float) -> None:
        self._factory = factory
        self._url = url
        self.name = name
        self.label = label
        self.timeout = timeout
        self._local = threading.local()

    def __enter__(self) -> WriterLock:
        depth: int = getattr(self._local, "depth", 0)
        if depth == 0:
            holder = self._factory(self._url, name=self.name)
            started = time.monotonic()
            try:
                acquired = holder.acquire(self.timeout)
            except LockServerError as exc:
                raise LockServerError(f"{self.label}: {exc}") from None
            if not acquired:
                waited = time.monotonic() - started
                raise WriterLockTimeout(
                    f"{self.label}: gave up after waiting {waited:.0f} s (lock_timeout {self.timeout:g} s) "
                    f"for the warehouse's writer lock ({holder.where}): another process is writing it. "
                    "The step can run again once that write ends."
                )
            self._local.holder = holder
        self._local.depth = depth + 1
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._local.depth -= 1
        if self._local.depth == 0:
            holder: Holder = self._local.holder
            del self._local.holder
            holder.release()


def open_lock(url: str, name: str, timeout: float, *, label: str | None = None) -> WriterLock:
    """The writer lock of the warehouse ``name`` on the backend ``url``'s scheme picks.

    Args:
        url: ``file:///path/to/warehouse.duckdb.lock``, ``postgresql://...`` or ``redis://...``
            (``CRM_PIPELINES_LOCK_URL``, else the lock file next to the DuckDB file).
        name: The warehouse's identity (the DuckDB file's absolute path).
        timeout: Seconds to wait for the lock.
        label: How messages name the warehouse (default ``name``).

    Raises:
        ValueError: no module of this package registers the URL's scheme.
    """
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    # The module named for the scheme first: a step opening the lock file does not import the
    # PostgreSQL and Redis clients (most of a second, in every step process).
    module = f"{__name__}.{scheme}"
    if scheme not in _SCHEMES and scheme.isidentifier() and importlib.util.find_spec(module) is not None:
        importlib.import_module(module)
    if scheme not in _SCHEMES:
        _discover()
    factory = _SCHEMES.get(scheme)
    if factory is None:
        known = ", ".join(f"{s}://" for s in sorted(_SCHEMES))
        raise ValueError(f"{LOCK_URL}: no writer lock for {scheme!r} URLs (known: {known})")
    return WriterLock(factory, url=url, name=name, label=label or name, timeout=timeout)
