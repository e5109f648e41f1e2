"""SFTP connection to a partner's or finance system's drop server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from crm_pipelines.files.sftp import SFTPSession, connect_sftp


class SFTPResource(dg.ConfigurableResource):
    """An SFTP server reached with key authentication and a verified host key.

    Attributes:
        host: Server name or address (``SFTP_HOST``).
        port: Port (``SFTP_PORT``).
        username: Login (``SFTP_USERNAME``).
        private_key_path: Private key file (``SFTP_PRIVATE_KEY_PATH``).
        known_hosts_path: known_hosts file holding the server's host key (``SFTP_KNOWN_HOSTS``);
            unknown or changed host keys are refused.
        finance_dir: Remote folder of the finance drop (``SFTP_FINANCE_DIR``).
        stable_seconds: A file counts as completely written when its size and mtime did not change
            across two looks this far apart.
        timeout_seconds: Connect and operation timeout.
    """

    host: str
    port: int = 22
    username: str
    private_key_path: str
    known_hosts_path: str
    finance_dir: str = "/outbound/finance"
    stable_seconds: float = 2.0
    timeout_seconds: float = 30.0

    @contextmanager
    def session(self) -> Iterator[SFTPSession]:
        """An open SFTP session; closed when the block ends."""
        with connect_sftp(
            host=self.host,
            port=self.port,
            username=self.username,
            private_key_path=self.private_key_path,
            known_hosts_path=self.known_hosts_path,
            timeout=self.timeout_seconds,
        ) as session:
            yield session
