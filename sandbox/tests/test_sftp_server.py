"""The sandbox SFTP server, driven by a plain paramiko client."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from crm_pipelines_sandbox.sftp_server import (
    SandboxKeys,
    SandboxSFTPServer,
    load_public_key,
    make_keys,
    write_known_hosts,
)

USER = "billing"


@dataclass
class Running:
    server: SandboxSFTPServer
    root: Path
    keys: SandboxKeys
    port: int


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    keys = make_keys(tmp_path / "keys")
    root = tmp_path / "root"
    (root / "outbound" / "finance").mkdir(parents=True)
    server = SandboxSFTPServer(
        root, username=USER, authorized_key=keys.client_public_key_path, host_key_path=keys.host_key_path
    )
    port = server.start()
    write_known_hosts(keys.known_hosts_path, "127.0.0.1", port, keys.host_public_key_path)
    try:
        yield Running(server, root, keys, port)
    finally:
        server.stop()


def ssh_client(run: Running, key_path: Path | None = None, username: str = USER) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(run.keys.known_hosts_path))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        "127.0.0.1",
        port=run.port,
        username=username,
        pkey=paramiko.PKey.from_path(key_path or run.keys.client_key_path),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    return client


def test_make_keys_reuses_existing_keys_and_writes_known_hosts(tmp_path: Path) -> None:
    first = make_keys(tmp_path)
    again = make_keys(tmp_path)
    assert first == again
    assert first.host_key_path.read_bytes() == again.host_key_path.read_bytes()
    assert oct(first.client_key_path.stat().st_mode & 0o777) == "0o600"
    old_host_key = first.host_key().asbytes()
    assert make_keys(tmp_path, overwrite=True).host_key().asbytes() != old_host_key

    write_known_hosts(first.known_hosts_path, "127.0.0.1", 2222, first.host_public_key_path)
    write_known_hosts(first.known_hosts_path, "127.0.0.1", 2223, first.host_key_path)
    text = first.known_hosts_path.read_text()
    assert "[127.0.0.1]:2222 ssh-ed25519 " in text
    assert "[127.0.0.1]:2223 ssh-ed25519 " in text
    # Re-writing one port replaces its entry instead of adding a second key.
    write_known_hosts(
        first.known_hosts_path, "127.0.0.1", 2222, load_public_key(first.client_public_key_path)
    )
    lines = first.known_hosts_path.read_text().splitlines()
    assert len([line for line in lines if line.startswith("[127.0.0.1]:2222 ")]) == 1


def test_list_download_and_upload(running: Running, tmp_path: Path) -> None:
    content = os.urandom(300_000)
    (running.root / "outbound" / "finance" / "invoices_2026-11-25.csv").write_bytes(content)
    with ssh_client(running) as client, client.open_sftp() as sftp:
        assert sftp.listdir("/outbound/finance") == ["invoices_2026-11-25.csv"]
        assert sftp.listdir("outbound") == ["finance"]
        assert sftp.stat("/outbound/finance/invoices_2026-11-25.csv").st_size == len(content)

        local = tmp_path / "copy.csv"
        sftp.get("/outbound/finance/invoices_2026-11-25.csv", str(local))
        assert local.read_bytes() == content

        with sftp.open("/outbound/finance/new.csv.tmp", "wb") as fh:
            fh.write(b"a,b\n1,2\n")
        with sftp.open("/outbound/finance/new.csv.tmp", "ab") as fh:
            fh.write(b"3,4\n")
        sftp.posix_rename("/outbound/finance/new.csv.tmp", "/outbound/finance/new.csv")
        assert (running.root / "outbound" / "finance" / "new.csv").read_bytes() == b"a,b\n1,2\n3,4\n"

        sftp.mkdir("/archive")
        sftp.rename("/outbound/finance/new.csv", "/archive/new.csv")
        assert (running.root / "archive" / "new.csv").exists()
        sftp.remove("/archive/new.csv")
        sftp.rmdir("/archive")
        assert not (running.root / "archive").exists()
        assert sftp.normalize("/outbound/finance/../finance/.") == "/outbound/finance"


def test_paths_cannot_leave_the_root(running: Running, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for clients")
    (running.root / "outbound" / "escape").symlink_to(tmp_path)
    (running.root / "outbound" / "inside").symlink_to(running.root / "outbound" / "finance")
    with ssh_client(running) as client, client.open_sftp() as sftp:
        for path in ("/../secret.txt", "../secret.txt", "/outbound/../../secret.txt"):
            with pytest.raises(PermissionError):
                sftp.open(path, "rb")
        with pytest.raises(PermissionError):
            sftp.listdir("/..")
        with pytest.raises(PermissionError):
            sftp.open("/outbound/escape/secret.txt", "rb")
        with pytest.raises(PermissionError):
            sftp.listdir("/outbound/escape")
        with pytest.raises(PermissionError):
            sftp.open("/outbound/escape/dropped.txt", "wb")
        with pytest.raises(PermissionError):
            sftp.symlink("/outbound/finance", "/outbound/link")
        # A link that stays inside the root is fine; a listing shows links as links.
        assert sftp.listdir("/outbound/inside") == []
        assert sftp.readlink("/outbound/inside") == "/outbound/finance"
        with pytest.raises(PermissionError):
            sftp.readlink("/outbound/escape")
        # "/" is the served folder, never the host's root.
        assert "etc" not in sftp.listdir("/")
    assert not (tmp_path / "dropped.txt").exists()
    assert secret.read_text() == "not for clients"


def test_wrong_key_or_user_is_refused(running: Running, tmp_path: Path) -> None:
    other = make_keys(tmp_path / "other")
    with pytest.raises(paramiko.AuthenticationException):
        ssh_client(running, key_path=other.client_key_path)
    with pytest.raises(paramiko.AuthenticationException):
        ssh_client(running, username="root")


def test_only_the_sftp_subsystem_is_served(running: Running) -> None:
    with ssh_client(running) as client:
        with pytest.raises(paramiko.SSHException):
            client.exec_command("cat /etc/passwd", timeout=5)
        transport = client.get_transport()
        assert transport is not None
        channel = transport.open_session()
        with pytest.raises(paramiko.SSHException):
            channel.invoke_shell()


def test_stop_closes_connections_and_frees_the_port(running: Running) -> None:
    client = ssh_client(running)
    sftp = client.open_sftp()
    assert sftp.listdir("/") == ["outbound"]
    running.server.stop()
    with pytest.raises((OSError, EOFError, paramiko.SSHException)):
        sftp.listdir("/")
    client.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", running.port), timeout=2).close()
