"""SFTP connection to a partner's or finance system's drop server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from crm_pipelines.files.sftp import KEEPALIVE_SECONDS, SFTPSession, connect_sftp


class SFTPResource(dg.ConfigurableResource["SFTPResource"]):
    """An SFTP drop server reached with a verified host key and key (or password) authentication.

    Attributes:
        host: Server name or address (``SFTP_HOST``).
        port: Port (``SFTP_PORT``).
        username: Login (``SFTP_USERNAME``).
        private_key_path: Private key file, RSA, ECDSA or Ed25519 (``SFTP_PRIVATE_KEY_PATH``).
        private_key_passphrase: Passphrase of an encrypted key (``SFTP_PRIVATE_KEY_PASSPHRASE``).
        password: Password, used only when no key is given (``SFTP_PASSWORD``).
        known_hosts_path: known_hosts file holding the server's host key (``SFTP_KNOWN_HOSTS``);
            unknown or changed host keys are refused.
        host_key_fingerprint: Pinned host key fingerprint ``SHA256:...``
            (``SFTP_HOST_KEY_FINGERPRINT``), an alternative to known_hosts.
        trust_on_first_use: Accept and save an unknown host key into known_hosts, logged as a
            warning (``SFTP_TRUST_ON_FIRST_USE=1``); a changed key is still refused.
        finance_dir: Remote folder of drops that declare no folder of their own (``SFTP_FINANCE_DIR``).
        stable_seconds: For drops with the ``stable`` rule: a file is completely written when its
            size and mtime did not change across two looks this far apart.
        timeout_seconds: Connect and per-operation timeout (``SFTP_TIMEOUT_SECONDS``).
        keepalive_seconds: SSH keepalive interval.
        download_retries: Reconnect-and-resume attempts after a dropped connection mid-download.
    """

    host: str
    port: int = 22
    username: str
    private_key_path: str | None = None
    private_key_passphrase: str | None = None
    password: str | None = None
    known_hosts_path: str | None = None
    host_key_fingerprint: str | None = None
    trust_on_first_use: bool = False
    finance_dir: str = "/outbound/finance"
    stable_seconds: float = 2.0
    timeout_seconds: float = 30.0
    keepalive_seconds: int = KEEPALIVE_SECONDS
    download_retries: int = 3

    @contextmanager
    def session(self) -> Iterator[SFTPSession]:
        """An open SFTP session (it reconnects itself to resume downloads); closed when the block ends."""
        with connect_sftp(
            host=self.host,
            port=self.port,
            username=self.username,
            private_key_path=self.private_key_path,
            passphrase=self.private_key_passphrase,
            password=self.password,
            known_hosts_path=self.known_hosts_path,
            host_key_fingerprint=self.host_key_fingerprint,
            trust_on_first_use=self.trust_on_first_use,
            timeout=self.timeout_seconds,
            keepalive_seconds=self.keepalive_seconds,
        ) as session:
            yield session

    def folder_of(self, declared_folder: str | None) -> str:
        """The remote folder of a drop: its own declared folder, else ``finance_dir``."""
        return declared_folder or self.finance_dir
