"""The SFTP client against a real OpenSSH sshd and the paramiko sandbox server (``drop_server``).

Host keys, resume after a dropped connection, the completeness rules, refused names and the
processed/error moves, each checked on what the server ends up holding.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from crm_pipelines.files.sftp import HostKeyRejected, SFTPAuthError, connect_sftp, find_complete_files
from crm_pipelines_sandbox.openssh_server import OpenSSHServer, chroot_unavailable_reason
from crm_pipelines_sandbox.sftp_server import SandboxKeys, load_public_key, make_keys, write_known_hosts

if TYPE_CHECKING:
    from conftest import DropServer


def connect_once(drop: DropServer, **overrides: object) -> None:
    with drop.client(**overrides).session() as session:
        session.list_files(drop.remote)


def host_fingerprint(drop: DropServer) -> str:
    return load_public_key(drop.host_public_key_path).fingerprint


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


# ------------------------------------------------------------------------- resume after a drop


# paramiko's prefetch thread dies with the connection and reports it; the download itself resumes.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_dropped_connection_mid_download_is_resumed(drop_server: DropServer, tmp_path: Path) -> None:
    content = os.urandom(12 * 1024 * 1024 + 5)
    (drop_server.local / "invoices_2026-11-25.csv").write_bytes(content)
    dropped: list[int] = []

    def cut_the_line_once(written: int) -> None:
        if not dropped and written >= 3 * 1024 * 1024:
            dropped.append(written)
            assert drop_server.drop_connections() >= 1

    with drop_server.client().session() as session:
        result = session.download(
            f"{drop_server.remote}/invoices_2026-11-25.csv",
            tmp_path / "landing" / "invoices.csv",
            on_progress=cut_the_line_once,
        )
        assert session.reconnects == 1
    assert dropped, "the connection was never cut"
    assert result.sha256 == hashlib.sha256(content).hexdigest()
    assert result.local_path.read_bytes() == content


# ---------------------------------------------------------------------------- complete files


def test_a_file_still_being_written_waits_for_the_stable_rule(drop_server: DropServer) -> None:
    growing = drop_server.local / "invoices_2026-11-25.csv"
    growing.write_bytes(b"invoice_number\n" + b"BIL-1\n" * 100)

    def writer_appends(seconds: float) -> None:
        with growing.open("ab") as fh:
            fh.write(b"BIL-2\n" * 100)
        # SFTP v3 mtimes have whole seconds: the size change is what shows the write here.

    with drop_server.client().session() as session:
        assert (
            find_complete_files(session, drop_server.remote, "*.csv", stable_seconds=1, sleep=writer_appends)
            == []
        )
        complete = find_complete_files(session, drop_server.remote, "*.csv", stable_seconds=0.1)
    assert [(f.name, f.size) for f in complete] == [(growing.name, growing.stat().st_size)]


def test_marker_and_rename_conventions(drop_server: DropServer) -> None:
    folder = drop_server.local
    (folder / "invoices_2026-11-24.csv").write_text("a\n1\n")
    (folder / "invoices_2026-11-24.csv.done").write_text("")
    (folder / "invoices_2026-11-25.csv").write_text("a\n1\n")  # no marker yet
    (folder / "invoices_2026-11-26.csv").write_text("a\n1\n")
    (folder / "invoices_2026-11-26.csv.ok").write_text("")
    (folder / "invoices_2026-11-27.csv.part").write_text("a\n")
    (folder / "invoices_2026-11-28.csv.filepart").write_text("a\n")
    (folder / "invoices_2026-11-29.csv.tmp").write_text("a\n")
    with drop_server.client().session() as session:
        marked = find_complete_files(
            session, drop_server.remote, "invoices_*.csv", stable_seconds=0, rule="marker"
        )
        assert [f.name for f in marked] == ["invoices_2026-11-24.csv", "invoices_2026-11-26.csv"]
        renamed = find_complete_files(
            session, drop_server.remote, "invoices_*", stable_seconds=0, rule="rename"
        )
        assert [f.name for f in renamed] == [
            "invoices_2026-11-24.csv",
            "invoices_2026-11-24.csv.done",
            "invoices_2026-11-25.csv",
            "invoices_2026-11-26.csv",
            "invoices_2026-11-26.csv.ok",
        ]
        # The writer renames its upload: now it counts.
        session.sftp.rename(
            f"{drop_server.remote}/invoices_2026-11-27.csv.part",
            f"{drop_server.remote}/invoices_2026-11-27.csv",
        )
        renamed = find_complete_files(session, drop_server.remote, "*.csv", stable_seconds=0, rule="rename")
        assert "invoices_2026-11-27.csv" in [f.name for f in renamed]


def test_names_escaping_the_folder_are_refused_and_reported(drop_server: DropServer) -> None:
    folder = drop_server.local
    (folder / "invoices_2026-11-25.csv").write_text("a\n1\n")
    (folder / "invoices..csv").write_text("x")
    # Links pointing outside the drop (and outside the chroot): never followed.
    (folder / "invoices_passwd.csv").symlink_to("/etc/passwd")
    (folder / "invoices_up.csv").symlink_to("../../secret.csv")
    with drop_server.client().session() as session:
        listing = session.list_files(drop_server.remote, "invoices*")
    assert [f.name for f in listing] == ["invoices_2026-11-25.csv"]
    reasons = {r.name: r.reason for r in listing.rejected}
    assert reasons["invoices..csv"] == "contains '..'"
    assert reasons["invoices_passwd.csv"].startswith("symbolic link")
    assert reasons["invoices_up.csv"].startswith("symbolic link")


# ------------------------------------------------------------------------------ moves on server


def test_moves_are_idempotent_and_keep_earlier_versions(drop_server: DropServer) -> None:
    folder = drop_server.local
    remote = drop_server.remote
    (folder / "payments_2026-11-25.csv").write_text("v1")
    with drop_server.client().session() as session:
        first = session.move(f"{remote}/payments_2026-11-25.csv", f"{remote}/processed")
        assert first == f"{remote}/processed/payments_2026-11-25.csv"
        assert session.move(f"{remote}/payments_2026-11-25.csv", f"{remote}/processed") == ""  # retried step
        (folder / "payments_2026-11-25.csv").write_text("v2")  # a corrected file, same name
        second = session.move(f"{remote}/payments_2026-11-25.csv", f"{remote}/processed")
    assert second == f"{remote}/processed/payments_2026-11-25.1.csv"
    assert (folder / "processed" / "payments_2026-11-25.csv").read_text() == "v1"
    assert (folder / "processed" / "payments_2026-11-25.1.csv").read_text() == "v2"
    assert not (folder / "payments_2026-11-25.csv").exists()


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


@pytest.mark.parametrize("drop_server", ["openssh"], indirect=True)
def test_large_files_come_as_parallel_ranges(drop_server: DropServer, tmp_path: Path) -> None:
    from crm_pipelines.files.sftp import PARALLEL_MIN_BYTES

    content = os.urandom(PARALLEL_MIN_BYTES + 3 * 1024 * 1024 + 11)
    (drop_server.local / "big.csv").write_bytes(content)
    with connect_sftp(
        host=drop_server.host,
        port=drop_server.port,
        username=drop_server.username,
        private_key_path=drop_server.keys.client_key_path,
        known_hosts_path=drop_server.keys.known_hosts_path,
        parallel_connections=3,
    ) as session:
        result = session.download(f"{drop_server.remote}/big.csv", tmp_path / "big.csv")
    assert result.size == len(content)
    assert result.sha256 == hashlib.sha256(content).hexdigest()
    assert list(tmp_path.glob(".big.csv.download")) == []


@pytest.mark.parametrize("drop_server", ["openssh"], indirect=True)
def test_reads_larger_than_the_server_serves_still_come_in_order(
    drop_server: DropServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crm_pipelines.files import sftp

    # OpenSSH's sftp-server answers at most 255 KiB per read; asking for 1 MiB makes every answer
    # short, and the rest of each block must be asked for before the next one is used.
    monkeypatch.setattr(sftp, "READ_REQUEST_BYTES", 1024 * 1024)
    content = os.urandom(5 * 1024 * 1024 + 123)
    (drop_server.local / "invoices_2026-11-25.csv").write_bytes(content)
    with drop_server.client().session() as session:
        result = session.download(f"{drop_server.remote}/invoices_2026-11-25.csv", tmp_path / "out.csv")
    assert result.sha256 == hashlib.sha256(content).hexdigest()
    assert (tmp_path / "out.csv").read_bytes() == content


def test_a_file_that_grows_during_the_download_is_refused(drop_server: DropServer, tmp_path: Path) -> None:
    from crm_pipelines.files.sftp import DownloadError

    growing = drop_server.local / "invoices_2026-11-25.csv"
    growing.write_bytes(os.urandom(6 * 1024 * 1024))

    def writer_appends(written: int) -> None:
        if written < 2 * 1024 * 1024:
            with growing.open("ab") as fh:
                fh.write(b"late line\n")

    with drop_server.client().session() as session, pytest.raises(DownloadError, match="changed"):
        session.download(
            f"{drop_server.remote}/invoices_2026-11-25.csv",
            tmp_path / "landing" / "out.csv",
            on_progress=writer_appends,
        )
    assert list((tmp_path / "landing").iterdir()) == []  # no partial file left behind


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
        assert (transport.local_cipher, transport.remote_cipher) == (negotiated, negotiated)
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
