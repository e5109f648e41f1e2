"""A real SFTP server on 127.0.0.1 for the sandbox and the tests (paramiko server side).

It serves one local folder as ``/`` to one user who logs in with one public key. Every path a
client sends is resolved inside that folder: ``..`` escapes and symlinks that lead outside are
refused with ``SFTP_PERMISSION_DENIED``, and clients cannot create symlinks. Each connection gets
a thread that does the handshake and waits (plus paramiko's transport thread and one SFTP thread
per channel); ``stop()`` closes them all.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_SUCCEEDED,
)
from paramiko.sftp import SFTP_FAILURE, SFTP_NO_SUCH_FILE, SFTP_OK, SFTP_PERMISSION_DENIED

log = logging.getLogger(__name__)
TRANSPORT_LOGGER = f"{__name__}.transport"

LOOPBACK = "127.0.0.1"


class _PathRefused(Exception):
    """A client path that resolves outside the served root."""


# --------------------------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class SandboxKeys:
    """Key files for a sandbox server and its one client (OpenSSH formats)."""

    host_key_path: Path
    host_public_key_path: Path
    client_key_path: Path
    client_public_key_path: Path
    known_hosts_path: Path

    def host_key(self) -> paramiko.PKey:
        return paramiko.PKey.from_path(self.host_key_path)

    def client_public_key(self) -> paramiko.PKey:
        return load_public_key(self.client_public_key_path)


def _write_ed25519_pair(private_path: Path, comment: str) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    # Create with 0600 from the start: ssh tools refuse private keys that others can read.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    Path(f"{private_path}.pub").write_text(f"{public.decode()} {comment}\n")


def make_keys(folder: Path, *, overwrite: bool = False) -> SandboxKeys:
    """Create (or reuse) an Ed25519 host key and client key pair under ``folder``.

    Files: ``ssh_host_ed25519_key[.pub]``, ``client_ed25519_key[.pub]``; ``known_hosts`` is only
    named here and written by :func:`write_known_hosts` once the server's port is known. Existing
    keys are kept unless ``overwrite`` so a restarted sandbox keeps its host identity.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keys = SandboxKeys(
        host_key_path=folder / "ssh_host_ed25519_key",
        host_public_key_path=folder / "ssh_host_ed25519_key.pub",
        client_key_path=folder / "client_ed25519_key",
        client_public_key_path=folder / "client_ed25519_key.pub",
        known_hosts_path=folder / "known_hosts",
    )
    for private, public, comment in (
        (keys.host_key_path, keys.host_public_key_path, "crm-pipelines-sandbox-host"),
        (keys.client_key_path, keys.client_public_key_path, "crm-pipelines-sandbox-client"),
    ):
        if overwrite or not (private.exists() and public.exists()):
            _write_ed25519_pair(private, comment)
    return keys


def load_public_key(path: Path) -> paramiko.PKey:
    """Read an OpenSSH public key file (``ssh-ed25519 AAAA... comment``)."""
    parts = Path(path).read_text().split()
    if len(parts) < 2:
        raise ValueError(f"{path}: not an OpenSSH public key file")
    return paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1]))


def known_hosts_name(host: str, port: int) -> str:
    """Host name as OpenSSH and paramiko write it in known_hosts (``[host]:port`` unless port 22)."""
    return host if port == 22 else f"[{host}]:{port}"


def write_known_hosts(path: Path, host: str, port: int, host_key: paramiko.PKey | Path) -> Path:
    """Add (or replace) the entry for ``host:port`` in the known_hosts file at ``path``."""
    key = host_key if isinstance(host_key, paramiko.PKey) else _load_any_key(Path(host_key))
    path = Path(path)
    entries = paramiko.HostKeys()
    if path.exists():
        entries.load(str(path))
    name = known_hosts_name(host, port)
    # A re-keyed sandbox must not leave the old key next to the new one.
    if name in entries:
        del entries[name]
    entries.add(name, key.get_name(), key)
    path.parent.mkdir(parents=True, exist_ok=True)
    entries.save(str(path))
    return path


def _load_any_key(path: Path) -> paramiko.PKey:
    """A private key file, or an OpenSSH ``.pub`` file."""
    text = path.read_bytes()
    if text.lstrip().startswith(b"-----BEGIN"):
        return paramiko.PKey.from_path(path)
    return load_public_key(path)


# ------------------------------------------------------------------------------------ SSH server


class _AuthServer(paramiko.ServerInterface):
    """Public-key auth for one user; only ``session`` channels with the ``sftp`` subsystem."""

    def __init__(self, username: str, key: paramiko.PKey) -> None:
        self._username = username
        self._key = key

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        same_key = key.get_name() == self._key.get_name() and key.asbytes() == self._key.asbytes()
        if username == self._username and same_key:
            return AUTH_SUCCESSFUL
        return AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return OPEN_SUCCEEDED
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
        if name != "sftp":
            return False
        return super().check_channel_subsystem_request(channel, name)


# ------------------------------------------------------------------------------------ SFTP side


class _LocalHandle(paramiko.SFTPHandle):
    """An open local file; paramiko's default read/write use ``readfile``/``writefile``."""

    def __init__(self, fh: Any, flags: int) -> None:
        super().__init__(flags)
        self.readfile = fh
        self.writefile = fh
        self._fh = fh

    def stat(self) -> paramiko.SFTPAttributes | int:
        try:
            return paramiko.SFTPAttributes.from_stat(os.fstat(self._fh.fileno()))
        except OSError as exc:
            return _errno_result(exc)

    def chattr(self, attr: paramiko.SFTPAttributes) -> int:
        try:
            _apply_attr(self._fh.fileno(), attr)
        except OSError as exc:
            return _errno_result(exc)
        return SFTP_OK


def _apply_attr(target: int | Path, attr: paramiko.SFTPAttributes) -> None:
    """Apply times and size from a SETSTAT request (a file descriptor or a path).

    Permission and owner changes are ignored: they make no sense for a sandbox folder.
    """
    if attr.st_atime is not None and attr.st_mtime is not None:
        os.utime(target, (attr.st_atime, attr.st_mtime))
    if attr.st_size is not None:
        os.truncate(target, attr.st_size)


def _errno_result(exc: OSError) -> int:
    if exc.errno == errno.EACCES or exc.errno == errno.EPERM:
        return SFTP_PERMISSION_DENIED
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return SFTP_NO_SUCH_FILE
    return SFTP_FAILURE


class RootedSFTPInterface(paramiko.SFTPServerInterface):
    """SFTP operations on a local folder, confined to it.

    Client paths are POSIX, absolute or relative to ``/`` (the root folder).
    """

    def __init__(self, server: paramiko.ServerInterface, *args: Any, root: Path, **kwargs: Any) -> None:
        super().__init__(server, *args, **kwargs)
        # Resolve once: the root may itself sit behind a symlink (e.g. /tmp on macOS).
        self._root = Path(root).resolve()

    # -- path confinement ------------------------------------------------------------------------

    def _virtual(self, path: str) -> str:
        """Normalised absolute client path; ``..`` that would climb above ``/`` is refused."""
        parts: list[str] = []
        for part in path.replace("\\", "/").split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if not parts:
                    raise _PathRefused(path)
                parts.pop()
            else:
                parts.append(part)
        return "/" + "/".join(parts)

    def _inside(self, local: Path) -> bool:
        return local == self._root or self._root in local.parents

    def _local(self, path: str, *, follow: bool = True) -> Path:
        """Local path for a client path; symlinks are resolved and must stay inside the root.

        With ``follow=False`` the last component is not resolved (lstat, remove, readlink act on
        the link itself), but its parent folder still must resolve inside the root.
        """
        virtual = self._virtual(path)
        local = self._root / virtual.lstrip("/")
        if virtual == "/":
            return self._root
        if follow:
            resolved = local.resolve()
            if not self._inside(resolved):
                raise _PathRefused(path)
            return resolved
        parent = local.parent.resolve()
        if not self._inside(parent):
            raise _PathRefused(path)
        return parent / local.name

    # -- operations ------------------------------------------------------------------------------

    def canonicalize(self, path: str) -> str:
        # An escape raises; paramiko turns that into SFTP_FAILURE for the REALPATH request.
        return self._virtual(path)

    def list_folder(self, path: str) -> list[paramiko.SFTPAttributes] | int:
        try:
            folder = self._local(path)
            out = []
            with os.scandir(folder) as entries:
                for entry in entries:
                    # lstat: a symlink is listed as a link, so clients can see and skip it.
                    attr = paramiko.SFTPAttributes.from_stat(entry.stat(follow_symlinks=False), entry.name)
                    out.append(attr)
            return out
        except _PathRefused:
            return SFTP_PERMISSION_DENIED
        except OSError as exc:
            return _errno_result(exc)

    def stat(self, path: str) -> paramiko.SFTPAttributes | int:
        try:
            return paramiko.SFTPAttributes.from_stat(os.stat(self._local(path)))
        except _PathRefused:
            return SFTP_PERMISSION_DENIED
        except OSError as exc:
            return _errno_result(exc)

    def lstat(self, path: str) -> paramiko.SFTPAttributes | int:
        try:
            return paramiko.SFTPAttributes.from_stat(os.lstat(self._local(path, follow=False)))
        except _PathRefused:
            return SFTP_PERMISSION_DENIED
        except OSError as exc:
            return _errno_result(exc)

    def open(self, path: str, flags: int, attr: paramiko.SFTPAttributes) -> paramiko.SFTPHandle | int:
        try:
            local = self._local(path)
            mode = getattr(attr, "st_mode", None)
            fd = os.open(local, flags | getattr(os, "O_BINARY", 0), 0o644 if mode is None else mode & 0o777)
        except _PathRefused:
            return SFTP_PERMISSION_DENIED
        except OSError as exc:
            return _errno_result(exc)
        if flags & os.O_WRONLY:
            fmode = "ab" if flags & os.O_APPEND else "wb"
        elif flags & os.O_RDWR:
            fmode = "a+b" if flags & os.O_APPEND else "r+b"
        else:
            fmode = "rb"
        try:
            fh = os.fdopen(fd, fmode)
        except OSError as exc:
            os.close(fd)
            return _errno_result(exc)
        return _LocalHandle(fh, flags)

    def remove(self, path: str) -> int:
        try:
            local = self._local(path, follow=False)
            if local.is_dir() and not local.is_symlink():
                return SFTP_FAILURE
            local.unlink()
        except _PathRefused:
            return SFTP_PERMISSION_DENIED
        except OSError as exc:
            return _errno_result(exc)
        return SFTP_OK

    def rename(self, oldpath: str, newpath: str) -> int:
        try:
            old = self._local(oldpath, follow=False)
            new = self._local(newpath, follow=False)
            # Plain SFTP rename must not overwrite (posix_rename does).
            if new.exists() or new.is_symlink():
                return SFTP_FAILURE
            old.rename(new)
        except _PathRefused:
            return SFTP_PERMISSION_DENIED
        except OSError as exc:
            return _errno_result(exc)
        return SFTP_OK

    def posix_rename(self, oldpath: str, newpath: str) -> int:
        try:
            os.replace(self._local(oldpath, follow=False), self._local(newpath, follow=False))
        except _PathRefused:
            return SFTP_PERMISSION_DENIED
        except OSError as exc:
            return _errno_result(exc)
        return SFTP_OK

    def mkdir(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        try:
            mode = getattr(attr, "st_mode", None)
            os.mkdir(self._local(path, follow=False), 0o755 if mode is None else mode & 0o777)
        except _PathRefused:
            return SFTP_PERMISSION_DENIED
        except OSError as exc:
            return _errno_result(exc)
        return SFTP_OK

    def rmdir(self, path: str) -> int:
        try:
            local = self._local(path, follow=False)
            if local == self._root:
                return SFTP_PERMISSION_DENIED
            os.rmdir(local)
        except _PathRefused:
            return SFTP_PERMISSION_DENIED
        except OSError as exc:
            return _errno_result(exc)
        return SFTP_OK

    def chattr(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        try:
            _apply_attr(self._local(path), attr)
        except _PathRefused:
            return SFTP_PERMISSION_DENIED
        except OSError as exc:
            return _errno_result(exc)
        return SFTP_OK

    def readlink(self, path: str) -> str | int:
        try:
            link = self._local(path, follow=False)
            if not link.is_symlink():
                return SFTP_FAILURE
            target = link.resolve()
            if not self._inside(target):
                return SFTP_PERMISSION_DENIED
        except _PathRefused:
            return SFTP_PERMISSION_DENIED
        except OSError as exc:
            return _errno_result(exc)
        # Report the target as a client path, never as a local one.
        return "/" + target.relative_to(self._root).as_posix() if target != self._root else "/"

    def symlink(self, target_path: str, path: str) -> int:
        # Links are how chroot-like servers get escaped; the sandbox never needs them.
        return SFTP_PERMISSION_DENIED


# ------------------------------------------------------------------------------------- the server


class _DemoteDisconnects(logging.Filter):
    """A client that hangs up is normal; paramiko logs it as an ERROR "Socket exception"."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "Socket exception" in record.getMessage():
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def _quiet_transport_logs() -> None:
    transport_log = logging.getLogger(TRANSPORT_LOGGER)
    if not any(isinstance(f, _DemoteDisconnects) for f in transport_log.filters):
        transport_log.addFilter(_DemoteDisconnects())


class SandboxSFTPServer:
    """SFTP server on 127.0.0.1 serving ``root`` as ``/``.

    Args:
        root: Local folder served to the client.
        username: The one user allowed in.
        authorized_key: That user's public key, or the path of its OpenSSH ``.pub`` file.
        host_key_path: The server's private host key (OpenSSH or PEM).
        port: TCP port; 0 picks a free one (see the value returned by :meth:`start`).
    """

    def __init__(
        self,
        root: Path,
        *,
        username: str,
        authorized_key: paramiko.PKey | Path,
        host_key_path: Path,
        port: int = 0,
    ) -> None:
        self.root = Path(root)
        self.username = username
        self._authorized_key = authorized_key
        self.host_key_path = Path(host_key_path)
        self.port = port
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._connections: list[tuple[threading.Thread, paramiko.Transport]] = []
        self._client_key: paramiko.PKey | None = None
        self._host_key: paramiko.PKey | None = None

    @property
    def host(self) -> str:
        return LOOPBACK

    def start(self) -> int:
        """Bind, start accepting connections in the background and return the bound port."""
        if self._listener is not None:
            raise RuntimeError("server already started")
        if not self.root.is_dir():
            raise FileNotFoundError(f"SFTP root folder does not exist: {self.root}")
        key = self._authorized_key
        self._client_key = key if isinstance(key, paramiko.PKey) else load_public_key(Path(key))
        self._host_key = paramiko.PKey.from_path(self.host_key_path)
        _quiet_transport_logs()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, self.port))
        listener.listen(16)
        # A timeout lets the accept loop notice stop() without relying on close() waking it.
        listener.settimeout(0.2)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._stopping.clear()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"sftp-accept-{self.port}", daemon=True
        )
        self._accept_thread.start()
        log.info("sandbox SFTP server on %s:%d serving %s", LOOPBACK, self.port, self.root)
        return self.port

    def stop(self) -> None:
        """Stop accepting, close every open connection and wait for their threads."""
        self._stopping.set()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
            self._accept_thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        for _, transport in connections:
            transport.close()
        for thread, _ in connections:
            thread.join(timeout=5)

    def drop_connections(self) -> int:
        """Close every open client connection, as a network failure would; returns how many."""
        with self._lock:
            connections = [(t, tr) for t, tr in self._connections if tr.is_active()]
        for _, transport in connections:
            with contextlib.suppress(Exception):
                # Shut the socket down first: close() alone may wait on the transport thread.
                transport.sock.shutdown(socket.SHUT_RDWR)
            transport.close()
        return len(connections)

    def __enter__(self) -> SandboxSFTPServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            conn.settimeout(None)
            transport = paramiko.Transport(conn)
            transport.set_log_channel(TRANSPORT_LOGGER)
            thread = threading.Thread(
                target=self._serve, args=(transport,), name=f"sftp-conn-{self.port}", daemon=True
            )
            with self._lock:
                self._connections = [(t, tr) for t, tr in self._connections if t.is_alive()]
                self._connections.append((thread, transport))
            thread.start()

    def _serve(self, transport: paramiko.Transport) -> None:
        """Handshake one connection, then wait until the client or stop() closes it."""
        assert self._host_key is not None
        assert self._client_key is not None
        try:
            transport.add_server_key(self._host_key)
            transport.set_subsystem_handler("sftp", paramiko.SFTPServer, RootedSFTPInterface, root=self.root)
            transport.start_server(server=_AuthServer(self.username, self._client_key))
            # The SFTP subsystem threads serve the channels. We never call accept(): paramiko's
            # accept queue holds the only strong reference to a just-opened channel, and a
            # channel that is garbage-collected closes itself.
            while transport.is_active() and not self._stopping.is_set():
                transport.join(timeout=0.5)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            log.debug("SFTP connection ended: %s", exc)
        finally:
            with contextlib.suppress(Exception):
                transport.close()
