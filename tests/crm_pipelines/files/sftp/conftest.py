"""The paramiko sandbox SFTP server with one drop folder (``drop``), and a session on it.

The fixtures for the real sshd and for both servers (``drop_server``, ``openssh``) are one level up.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from crm_pipelines.files.sftp import SFTPClient, SFTPSession
from crm_pipelines_sandbox.sftp_server import SandboxKeys, SandboxSFTPServer, make_keys, write_known_hosts

USER = "billing"
FOLDER = "/outbound/finance"


@dataclass
class Drop:
    keys: SandboxKeys
    folder: Path  # local side of FOLDER
    port: int

    def client(self, **overrides: object) -> SFTPClient:
        settings: dict[str, object] = {
            "host": "127.0.0.1",
            "port": self.port,
            "username": USER,
            "private_key_path": self.keys.client_key_path,
            "known_hosts_path": self.keys.known_hosts_path,
            "timeout": 10.0,
        }
        settings.update(overrides)
        return SFTPClient(**settings)  # type: ignore[arg-type]


@pytest.fixture
def drop(tmp_path: Path) -> Iterator[Drop]:
    keys = make_keys(tmp_path / "keys")
    root = tmp_path / "sftp-root"
    folder = root / "outbound" / "finance"
    folder.mkdir(parents=True)
    with SandboxSFTPServer(
        root, username=USER, authorized_key=keys.client_public_key_path, host_key_path=keys.host_key_path
    ) as server:
        write_known_hosts(keys.known_hosts_path, "127.0.0.1", server.port, keys.host_public_key_path)
        yield Drop(keys, folder, server.port)


@pytest.fixture
def session(drop: Drop) -> Iterator[SFTPSession]:
    with drop.client().session() as s:
        yield s
