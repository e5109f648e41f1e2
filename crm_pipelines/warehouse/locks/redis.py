"""The writer lock in Redis, with a lease its holder renews: a killed holder's lock runs out.

``CRM_PIPELINES_LOCK_URL=redis://[:password@]host:6379/0`` (``rediss://`` for TLS). The lock is
redis-py's :class:`redis.lock.Lock` (``SET NX PX`` with a random token; release and renewal check the
token). The lease is ``lease_seconds`` from the URL's query string (default 30): while the lock is
held, a thread renews it every third of the lease, so a write may last any time, while a holder that
died (killed, its host gone) frees the lock within one lease. A holder stalled longer than its lease
loses the lock; that is logged as an error.
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.exceptions import LockError, LockNotOwnedError, RedisError

from crm_pipelines.warehouse.locks import LockServerError, lock_key, register_lock, without_password

__all__ = ["DEFAULT_LEASE_SECONDS", "RedisHolder"]

log = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 30.0


def _split_lease(url: str) -> tuple[str, float]:
    """The URL without ``lease_seconds`` (redis-py would refuse it), and the lease."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    lease = DEFAULT_LEASE_SECONDS
    for key, value in query:
        if key == "lease_seconds":
            try:
                lease = float(value)
            except ValueError:
                lease = 0.0
            if not lease > 0:
                raise ValueError(
                    f"CRM_PIPELINES_LOCK_URL: lease_seconds must be a positive number, not {value!r}"
                )
    rest = urlencode([(k, v) for k, v in query if k != "lease_seconds"])
    return urlunsplit(parts._replace(query=rest)), lease


@register_lock("redis", "rediss")
class RedisHolder:
    """One acquisition of the warehouse's lock on the Redis server ``url`` names.

    Args:
        url: ``redis://[:password@]host:6379/0[?lease_seconds=30]``.
        name: The warehouse's identity, hashed into the key.
    """

    def __init__(self, url: str, *, name: str) -> None:
        self._url = url
        server_url, self.lease = _split_lease(url)
        self.key = f"crm_pipelines:warehouse_lock:{lock_key(name).hex()[:32]}"
        self._client = redis.Redis.from_url(server_url, socket_connect_timeout=30, socket_timeout=30)
        kwargs = self._client.connection_pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
        self.where = f"Redis lock {self.key} on {where}/{kwargs.get('db', 0)}, lease {self.lease:g} s"
        self._lock = self._client.lock(self.key, timeout=self.lease, sleep=0.1, thread_local=False)
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _server_error(self, exc: Exception) -> LockServerError:
        return LockServerError(
            f"could not reach the warehouse's writer lock ({self.where}): "
            f"{type(exc).__name__}: {without_password(str(exc), self._url)}"
        )

    def acquire(self, timeout: float) -> bool:
        try:
            acquired = bool(self._lock.acquire(blocking=True, blocking_timeout=max(timeout, 0.0)))
        except RedisError as exc:
            self._client.close()
            raise self._server_error(exc) from None
        if not acquired:
            self._client.close()
            return False
        self._renewer = threading.Thread(target=self._renew, name="warehouse-lock-lease", daemon=True)
        self._renewer.start()
        return True

    def _renew(self) -> None:
        """Reset the lease to its full length every third of it, until released or lost."""
        while not self._stop.wait(self.lease / 3):
            try:
                self._lock.reacquire()
            except LockNotOwnedError:
                log.error(
                    f"the warehouse's writer lock ({self.where}) ran out before it was renewed: "
                    "another writer may have taken it"
                )
                return
            except RedisError as exc:  # a blip: the next renewal tries again, within the lease
                log.warning(
                    f"could not renew the warehouse's writer lock ({self.where}): {type(exc).__name__}"
                )

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            self._lock.release()
        except LockError as exc:
            log.error(f"the warehouse's writer lock ({self.where}) was no longer ours at release: {exc}")
        except RedisError as exc:
            log.error(
                f"could not release the warehouse's writer lock ({self.where}); its lease frees it: {exc}"
            )
        finally:
            self._client.close()
