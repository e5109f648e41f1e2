"""Opening one SFTP connection: verified host key, authentication, preferred ciphers, keepalive."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from crm_pipelines.files.sftp import _fastpath
from crm_pipelines.files.sftp._fastpath import _ReadAheadSocket
from crm_pipelines.files.sftp.errors import HostKeyRejected, SFTPAuthError

log = logging.getLogger(__name__)

# AES-GCM first (paramiko offers it last): an AEAD cipher authenticates each packet as part of
# decrypting it, where aes-ctr needs a separate HMAC-SHA-256 costing both ends ~0.5 CPU-seconds per
# GB. OpenSSH's sshd offers both; the rest stay in paramiko's order for servers without GCM.
PREFERRED_CIPHERS: tuple[str, ...] = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
    "aes128-cbc",
    "aes192-cbc",
    "aes256-cbc",
    "3des-cbc",
)
# Channel window and packet size big enough to keep the read requests flowing without stalls
# (_fastpath: MAX_PREFETCH_REQUESTS of READ_REQUEST_BYTES).
CHANNEL_WINDOW_BYTES = 128 * 1024 * 1024
CHANNEL_MAX_PACKET_BYTES = 256 * 1024
KEEPALIVE_SECONDS = 30
# 0 = automatic: half the CPUs, capped at 4. Each range costs a client thread and a server process;
# on 2 CPUs two streams measured no faster than one (both fight sshd for the cores), so one.
PARALLEL_CONNECTIONS = 0


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Decides about a host key that is not in the loaded known_hosts.

    Refuses by default, with a message naming the host and the key it presented. Accepts a key
    whose SHA-256 fingerprint equals the pinned one. Trusts on first use only when configured,
    writing the key to known_hosts (so a later *change* is refused) and logging a warning.
    """

    def __init__(
        self,
        *,
        where: str,
        known_hosts: Path | None,
        fingerprint: str | None,
        trust_on_first_use: bool,
    ) -> None:
        self._where = where
        self._known_hosts = known_hosts
        self._fingerprint = fingerprint
        self._tofu = trust_on_first_use

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        presented = f"{key.get_name()} {key.fingerprint}"
        if self._fingerprint is not None:
            if key.fingerprint == self._fingerprint:
                return
            raise HostKeyRejected(
                f"SFTP server {self._where} presented host key {presented}, but the pinned fingerprint "
                f"is {self._fingerprint}: refusing to connect (re-keyed server or someone in between)."
            )
        if self._tofu and self._known_hosts is not None:
            log.warning(
                "SFTP server %s is not in %s: TRUSTING ITS HOST KEY ON FIRST USE (%s) and saving it. "
                "Check this fingerprint with the server's owner; later changes will be refused.",
                self._where,
                self._known_hosts,
                presented,
            )
            client.get_host_keys().add(hostname, key.get_name(), key)
            self._known_hosts.parent.mkdir(parents=True, exist_ok=True)
            client.save_host_keys(str(self._known_hosts))
            return
        where_known = f"not in {self._known_hosts}" if self._known_hosts else "unknown (no known_hosts given)"
        raise HostKeyRejected(
            f"SFTP server {self._where} is {where_known}: it presented {presented}. Add the host key "
            "to known_hosts (or pin the fingerprint) after checking it with the server's owner."
        )


@dataclass(frozen=True)
class ConnectSettings:
    """Everything needed to open (and re-open) one SFTP connection.

    Attributes:
        host, port, username: The server and login.
        private_key_path: Private key (RSA, ECDSA or Ed25519, OpenSSH or PEM); None for password auth.
        passphrase: Passphrase of an encrypted private key.
        password: Password, when the server allows password authentication (no key given).
        known_hosts_path: known_hosts file; the server's key must be in it (unless pinned/TOFU).
        host_key_fingerprint: Pinned ``SHA256:...`` fingerprint instead of (or besides) known_hosts.
        trust_on_first_use: Accept and save an unknown host key (logged loudly); changed keys
            are still refused.
        timeout: Connect, banner, auth and per-operation timeout in seconds.
        keepalive_seconds: SSH keepalive interval (keeps NAT and firewalls from dropping idle links).
        ciphers: Ciphers offered, in order of preference (None: ``PREFERRED_CIPHERS``); the
            benchmark pins one.
        parallel_connections: Connections for files of at least ``PARALLEL_MIN_BYTES`` (1: never;
            0: automatic, see :func:`parallel_ranges`).
    """

    host: str
    port: int
    username: str
    private_key_path: Path | str | None = None
    known_hosts_path: Path | str | None = None
    timeout: float = 30.0
    passphrase: str | None = None
    password: str | None = None
    host_key_fingerprint: str | None = None
    trust_on_first_use: bool = False
    keepalive_seconds: int = KEEPALIVE_SECONDS
    ciphers: tuple[str, ...] | None = None
    parallel_connections: int = PARALLEL_CONNECTIONS

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def _transport_offering(ciphers: tuple[str, ...]) -> Callable[..., paramiko.Transport]:
    """A paramiko transport factory that offers ``ciphers``, in that order, and no others."""

    def transport(sock: Any, /, **kwargs: Any) -> paramiko.Transport:
        # paramiko only calls recv, send, settimeout and close on its socket.
        made = paramiko.Transport(_ReadAheadSocket(sock), **kwargs)  # type: ignore[arg-type]
        made.get_security_options().ciphers = ciphers  # ValueError for a name paramiko lacks
        return made

    return transport


def _connect(settings: ConnectSettings) -> tuple[paramiko.SSHClient, paramiko.SFTPClient]:
    where = settings.where
    known_hosts = Path(settings.known_hosts_path) if settings.known_hosts_path else None
    fingerprint = settings.host_key_fingerprint
    if fingerprint is not None and not fingerprint.startswith("SHA256:"):
        raise HostKeyRejected(f"SFTP server {where}: pinned fingerprint must look like 'SHA256:...'")
    if (
        known_hosts is not None
        and not known_hosts.is_file()
        and not settings.trust_on_first_use
        and fingerprint is None
    ):
        raise HostKeyRejected(f"SFTP server {where}: known_hosts file {known_hosts} does not exist")
    if known_hosts is None and fingerprint is None:
        raise HostKeyRejected(
            f"SFTP server {where}: give a known_hosts file or a pinned host key fingerprint"
        )
    if settings.private_key_path is None and settings.password is None:
        raise SFTPAuthError(f"SFTP server {where}: give a private key or a password")
    pkey = (
        paramiko.PKey.from_path(
            Path(settings.private_key_path),
            # paramiko's hint says str, but cryptography underneath needs bytes.
            settings.passphrase.encode("utf-8") if settings.passphrase else None,  # type: ignore[arg-type]
        )
        if settings.private_key_path is not None
        else None
    )
    ssh = paramiko.SSHClient()
    # Only the given known_hosts counts: ~/.ssh/known_hosts of whoever runs the job must not.
    if known_hosts is not None and known_hosts.is_file():
        ssh.load_host_keys(str(known_hosts))
    ssh.set_missing_host_key_policy(
        _HostKeyPolicy(
            where=where,
            known_hosts=known_hosts,
            fingerprint=fingerprint,
            trust_on_first_use=settings.trust_on_first_use,
        )
    )
    try:
        ssh.connect(
            settings.host,
            port=settings.port,
            username=settings.username,
            pkey=pkey,
            password=settings.password if pkey is None else None,
            look_for_keys=False,
            allow_agent=False,
            transport_factory=_transport_offering(settings.ciphers or PREFERRED_CIPHERS),
            timeout=settings.timeout,
            banner_timeout=settings.timeout,
            auth_timeout=settings.timeout,
            channel_timeout=settings.timeout,
        )
    except paramiko.BadHostKeyException as exc:
        ssh.close()
        raise HostKeyRejected(
            f"SFTP server {where} presented host key {exc.key.get_name()} {exc.key.fingerprint}, but "
            f"{known_hosts} expects {exc.expected_key.fingerprint}. The host key changed: refusing "
            "to connect (either the server was re-keyed or someone is in between)."
        ) from exc
    except paramiko.AuthenticationException as exc:
        ssh.close()
        how = f"key {settings.private_key_path}" if pkey is not None else "password"
        raise SFTPAuthError(
            f"SFTP server {where} refused user {settings.username!r} with {how}: {exc}"
        ) from exc
    except BaseException:
        ssh.close()
        raise
    try:
        transport = ssh.get_transport()
        assert transport is not None
        transport.set_keepalive(settings.keepalive_seconds)
        # What SFTPClient.from_transport does, with our channel buffer put in before any data flows.
        channel = transport.open_session(
            window_size=CHANNEL_WINDOW_BYTES, max_packet_size=CHANNEL_MAX_PACKET_BYTES
        )
        if _fastpath.available():
            _fastpath.install_channel_buffer(channel)
        channel.settimeout(settings.timeout)
        channel.invoke_subsystem("sftp")
        sftp = paramiko.SFTPClient(channel)
    except BaseException:
        ssh.close()
        raise
    return ssh, sftp
