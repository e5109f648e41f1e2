"""Where callers start: connection settings for one server, and sessions opened from them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crm_pipelines.files.sftp.connection import (
    KEEPALIVE_SECONDS,
    PARALLEL_CONNECTIONS,
    ConnectSettings,
    _connect,
)
from crm_pipelines.files.sftp.session import SFTPSession


@dataclass(frozen=True)
class SFTPClient(ConnectSettings):
    """Connection settings for one SFTP server (see :class:`ConnectSettings`); :meth:`session` connects."""

    @contextmanager
    def session(self) -> Iterator[SFTPSession]:
        """An open session, closed when the block ends."""
        session = self.open()
        try:
            yield session
        finally:
            session.close()

    def open(self) -> SFTPSession:
        """Connect and authenticate; the caller closes the session."""
        ssh, sftp = _connect(self)
        return SFTPSession(ssh, sftp, self.where, self)


def open_sftp(
    *,
    host: str,
    port: int,
    username: str,
    private_key_path: Path | str | None = None,
    known_hosts_path: Path | str | None = None,
    timeout: float = 30.0,
    passphrase: str | None = None,
    password: str | None = None,
    host_key_fingerprint: str | None = None,
    trust_on_first_use: bool = False,
    keepalive_seconds: int = KEEPALIVE_SECONDS,
    ciphers: tuple[str, ...] | None = None,
    parallel_connections: int = PARALLEL_CONNECTIONS,
) -> SFTPSession:
    """Connect and authenticate; the caller closes the returned session (see :class:`ConnectSettings`)."""
    return SFTPClient(
        host=host,
        port=port,
        username=username,
        private_key_path=private_key_path,
        known_hosts_path=known_hosts_path,
        timeout=timeout,
        passphrase=passphrase,
        password=password,
        host_key_fingerprint=host_key_fingerprint,
        trust_on_first_use=trust_on_first_use,
        keepalive_seconds=keepalive_seconds,
        ciphers=ciphers,
        parallel_connections=parallel_connections,
    ).open()


@contextmanager
def connect_sftp(**kwargs: Any) -> Iterator[SFTPSession]:
    """Open an SFTP session (verified host key, keepalive) and close it afterwards.

    Takes the keyword arguments of :func:`open_sftp`.
    """
    session = open_sftp(**kwargs)
    try:
        yield session
    finally:
        session.close()
