"""SFTP servers for the file-drop tests: Debian's real OpenSSH sshd and the paramiko sandbox server.

``drop_server`` is parametrized over both, so every test using it proves the client against the
server partners actually run and against the one the sandbox ships. The sshd runs with its own
config on a free loopback port, key authentication only, ``ForceCommand internal-sftp`` and (as
root) a chrooted SFTP-only system user; it is stopped in ``finally``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from crm_pipelines.files.sftp import SFTPClient
from crm_pipelines_sandbox.openssh_server import OpenSSHServer, sshd_unavailable_reason
from crm_pipelines_sandbox.sftp_server import SandboxKeys, SandboxSFTPServer, make_keys, write_known_hosts

DROP_FOLDER = "/outbound/finance"
SANDBOX_USER = "billing"


@dataclass
class DropServer:
    """A running SFTP server with one drop folder, seen from both sides.

    Attributes:
        kind: ``openssh`` or ``paramiko``.
        host, port, username: Where and as whom the client logs in.
        keys: Client key, known_hosts (written for this server) and, for the sandbox, host key.
        host_public_key_path: The server's public host key.
        local: The drop folder on disk (tests write files here as the partner would).
        remote: The same folder as the client sees it.
        drop_connections: Kills every open client connection (the listener stays up).
    """

    kind: str
    host: str
    port: int
    username: str
    keys: SandboxKeys
    host_public_key_path: Path
    local: Path
    remote: str
    drop_connections: Callable[[], int]

    def client(self, **overrides: object) -> SFTPClient:
        """An :class:`SFTPClient` for this server; keyword arguments override its settings."""
        settings: dict[str, object] = {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "private_key_path": self.keys.client_key_path,
            "known_hosts_path": self.keys.known_hosts_path,
            "timeout": 10.0,
        }
        settings.update(overrides)
        return SFTPClient(**settings)  # type: ignore[arg-type]

    def resource_settings(self) -> dict[str, object]:
        """Keyword arguments for ``SFTPResource`` pointing at this server and drop folder."""
        return {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "private_key_path": str(self.keys.client_key_path),
            "known_hosts_path": str(self.keys.known_hosts_path),
            "finance_dir": self.remote,
            "timeout_seconds": 10.0,
        }


def start_openssh(tmp_path: Path, keys: SandboxKeys) -> Iterator[OpenSSHServer]:
    """A real sshd for the test, or a skip with the reason it cannot run here."""
    reason = sshd_unavailable_reason()
    if reason:
        pytest.skip(reason)
    server = OpenSSHServer(tmp_path / "sshd", authorized_key=keys.client_public_key_path)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["openssh", "paramiko"])
def drop_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DropServer]:
    """A drop folder ``/outbound/finance`` served by a real sshd or by the paramiko sandbox server."""
    keys = make_keys(tmp_path / "keys")
    if request.param == "openssh":
        for sshd in start_openssh(tmp_path, keys):
            local = sshd.folder(DROP_FOLDER)
            write_known_hosts(keys.known_hosts_path, sshd.host, sshd.port, sshd.host_public_key_path)
            yield DropServer(
                kind="openssh",
                host=sshd.host,
                port=sshd.port,
                username=sshd.username,
                keys=keys,
                host_public_key_path=sshd.host_public_key_path,
                local=local,
                remote=sshd.remote_path(local),
                drop_connections=sshd.drop_connections,
            )
        return
    root = tmp_path / "sftp-root"
    local = root / DROP_FOLDER.strip("/")
    local.mkdir(parents=True)
    with SandboxSFTPServer(
        root,
        username=SANDBOX_USER,
        authorized_key=keys.client_public_key_path,
        host_key_path=keys.host_key_path,
    ) as server:
        write_known_hosts(keys.known_hosts_path, server.host, server.port, keys.host_public_key_path)
        yield DropServer(
            kind="paramiko",
            host=server.host,
            port=server.port,
            username=SANDBOX_USER,
            keys=keys,
            host_public_key_path=keys.host_public_key_path,
            local=local,
            remote=DROP_FOLDER,
            drop_connections=server.drop_connections,
        )


@pytest.fixture
def openssh(tmp_path: Path) -> Iterator[tuple[OpenSSHServer, SandboxKeys]]:
    """Only the real sshd (for tests about OpenSSH behaviour: key types, chroot)."""
    keys = make_keys(tmp_path / "keys")
    for sshd in start_openssh(tmp_path, keys):
        write_known_hosts(keys.known_hosts_path, sshd.host, sshd.port, sshd.host_public_key_path)
        yield sshd, keys
