"""Connecting: host keys (known_hosts, pinned, trust on first use), client keys, ciphers, OpenSSH's chroot.

Against the paramiko sandbox server (``drop``) and against both it and a real sshd (``drop_server``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from crm_pipelines.files.sftp import HostKeyRejected, SFTPAuthError, SFTPClient, connect_sftp
from crm_pipelines_sandbox.openssh_server import OpenSSHServer, chroot_unavailable_reason
from crm_pipelines_sandbox.sftp_server import SandboxKeys, load_public_key, make_keys, write_known_hosts

if TYPE_CHECKING:
    from conftest import Drop, DropServer

USER = "billing"
FOLDER = "/outbound/finance"


def connect_client_once(client: SFTPClient) -> None:
    with client.session():
        pass


def connect_once(drop: DropServer, **overrides: object) -> None:
    with drop.client(**overrides).session() as session:
        session.list_files(drop.remote)


def host_fingerprint(drop: DropServer) -> str:
    return load_public_key(drop.host_public_key_path).fingerprint


def test_known_host_key_connects(drop: Drop) -> None:
    with connect_sftp(
        host="127.0.0.1",
        port=drop.port,
        username=USER,
        private_key_path=drop.keys.client_key_path,
        known_hosts_path=drop.keys.known_hosts_path,
    ) as session:
        assert session.list_files(FOLDER, "*.csv") == []


def test_changed_host_key_is_refused_with_the_fingerprint(drop: Drop, tmp_path: Path) -> None:
    # known_hosts holds some other server's key for this host and port.
    impostor = make_keys(tmp_path / "impostor")
    write_known_hosts(drop.keys.known_hosts_path, "127.0.0.1", drop.port, impostor.host_public_key_path)
    with pytest.raises(HostKeyRejected) as err:
        connect_client_once(drop.client())
    message = str(err.value)
    presented = drop.keys.host_key().fingerprint
    assert f"127.0.0.1:{drop.port}" in message
    assert presented in message
    assert impostor.host_key().fingerprint in message


def test_unknown_host_is_refused_with_the_fingerprint(drop: Drop, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyRejected) as err:
        connect_client_once(drop.client(known_hosts_path=empty))
    assert f"127.0.0.1:{drop.port}" in str(err.value)
    assert drop.keys.host_key().fingerprint in str(err.value)

    with pytest.raises(HostKeyRejected, match="does not exist"):
        connect_client_once(drop.client(known_hosts_path=tmp_path / "missing"))


def test_wrong_client_key_is_refused(drop: Drop, tmp_path: Path) -> None:
    other = make_keys(tmp_path / "other")
    with pytest.raises(SFTPAuthError, match="refused user 'billing'"):
        connect_client_once(drop.client(private_key_path=other.client_key_path))


# -------------------------------------------------------------------------------------- host keys


def test_unknown_host_key_is_refused(drop_server: DropServer, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyRejected) as err:
        connect_once(drop_server, known_hosts_path=empty)
    assert host_fingerprint(drop_server) in str(err.value)
    assert empty.read_text() == ""  # nothing trusted behind our back


def test_changed_host_key_is_refused_even_with_trust_on_first_use(
    drop_server: DropServer, tmp_path: Path
) -> None:
    impostor = make_keys(tmp_path / "impostor")
    known = tmp_path / "known_hosts"
    write_known_hosts(known, drop_server.host, drop_server.port, impostor.host_public_key_path)
    with pytest.raises(HostKeyRejected, match="changed"):
        connect_once(drop_server, known_hosts_path=known, trust_on_first_use=True)


def test_pinned_fingerprint(drop_server: DropServer, tmp_path: Path) -> None:
    connect_once(drop_server, known_hosts_path=None, host_key_fingerprint=host_fingerprint(drop_server))
    other = make_keys(tmp_path / "other").host_key().fingerprint
    with pytest.raises(HostKeyRejected, match="pinned fingerprint"):
        connect_once(drop_server, known_hosts_path=None, host_key_fingerprint=other)


def test_trust_on_first_use_saves_the_key_loudly(
    drop_server: DropServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    known = tmp_path / "tofu" / "known_hosts"
    with caplog.at_level(logging.WARNING):
        connect_once(drop_server, known_hosts_path=known, trust_on_first_use=True)
    assert "TRUSTING ITS HOST KEY ON FIRST USE" in caplog.text
    assert load_public_key(drop_server.host_public_key_path).get_base64() in known.read_text()
    # From now on the saved key is what counts, without trusting anything new.
    connect_once(drop_server, known_hosts_path=known)


def test_wrong_client_key_and_password_are_refused(drop_server: DropServer, tmp_path: Path) -> None:
    other = make_keys(tmp_path / "other")
    with pytest.raises(SFTPAuthError, match="refused user"):
        connect_once(drop_server, private_key_path=other.client_key_path)
    with pytest.raises(SFTPAuthError, match="with password"):
        connect_once(drop_server, private_key_path=None, password="not-the-password")


# ------------------------------------------------------------------------------ OpenSSH only


@pytest.mark.parametrize("key_type", ["rsa", "ecdsa", "ed25519"])
def test_openssh_key_types_with_a_passphrase(
    openssh: tuple[OpenSSHServer, SandboxKeys], tmp_path: Path, key_type: str
) -> None:
    sshd, keys = openssh
    key = tmp_path / f"id_{key_type}"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", key_type, "-N", "s3cret passphrase", "-f", str(key)], check=True
    )
    sshd.stop()
    server = OpenSSHServer(sshd.work_dir, authorized_key=Path(f"{key}.pub"))
    with server:
        write_known_hosts(keys.known_hosts_path, server.host, server.port, server.host_public_key_path)
        drop = server.folder("/outbound/finance")
        (drop / "a.csv").write_text("x")
        with connect_sftp(
            host=server.host,
            port=server.port,
            username=server.username,
            private_key_path=key,
            passphrase="s3cret passphrase",
            known_hosts_path=keys.known_hosts_path,
        ) as session:
            assert [f.name for f in session.list_files(server.remote_path(drop))] == ["a.csv"]


def test_openssh_user_is_chrooted_and_sftp_only(openssh: tuple[OpenSSHServer, SandboxKeys]) -> None:
    reason = chroot_unavailable_reason()
    if reason:
        pytest.skip(f"no chroot: {reason}")
    sshd, keys = openssh
    with connect_sftp(
        host=sshd.host,
        port=sshd.port,
        username=sshd.username,
        private_key_path=keys.client_key_path,
        known_hosts_path=keys.known_hosts_path,
    ) as session:
        assert session.sftp.listdir("/") == []  # the chroot, not the machine's root
        channel = session.ssh.get_transport().open_session()  # type: ignore[union-attr]
        channel.exec_command("cat /etc/passwd")
        # ForceCommand internal-sftp: a shell command gets the SFTP server, not a shell.
        assert b"root:" not in channel.recv(1024)


@pytest.mark.parametrize(
    ("ciphers", "negotiated"),
    [
        pytest.param(None, "aes128-gcm@openssh.com", id="aes-gcm-by-default"),
        pytest.param(("aes256-ctr",), "aes256-ctr", id="pinned"),
    ],
)
def test_aes_gcm_is_preferred_and_a_pinned_cipher_is_used(
    drop_server: DropServer, tmp_path: Path, ciphers: tuple[str, ...] | None, negotiated: str
) -> None:
    content = os.urandom(3 * 1024 * 1024 + 5)
    (drop_server.local / "invoices_2026-11-25.csv").write_bytes(content)
    with connect_sftp(
        host=drop_server.host,
        port=drop_server.port,
        username=drop_server.username,
        private_key_path=drop_server.keys.client_key_path,
        known_hosts_path=drop_server.keys.known_hosts_path,
        ciphers=ciphers,
    ) as session:
        transport = session.ssh.get_transport()
        assert transport is not None
        chosen: Any = transport  # the stubs leave out what the handshake chose
        assert (chosen.local_cipher, chosen.remote_cipher) == (negotiated, negotiated)
        result = session.download(f"{drop_server.remote}/invoices_2026-11-25.csv", tmp_path / "out.csv")
    assert result.sha256 == hashlib.sha256(content).hexdigest()


def test_a_pinned_cipher_paramiko_lacks_is_an_error(drop_server: DropServer) -> None:
    with (
        pytest.raises(ValueError, match="unknown cipher"),
        connect_sftp(
            host=drop_server.host,
            port=drop_server.port,
            username=drop_server.username,
            private_key_path=drop_server.keys.client_key_path,
            known_hosts_path=drop_server.keys.known_hosts_path,
            ciphers=("chacha20-poly1305@openssh.com",),
        ),
    ):
        pass
