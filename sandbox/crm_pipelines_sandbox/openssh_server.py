"""A real OpenSSH ``sshd`` on 127.0.0.1 serving SFTP only, for the tests and the benchmark.

The paramiko sandbox server (``sftp_server.py``) is ours; this one is what partners actually run
(Debian's openssh-server), so the client is proven against both. The server gets its own
``sshd_config`` (key authentication only, ``internal-sftp``, ``ForceCommand internal-sftp``) and,
when we run as root, a dedicated system user locked into a ``ChrootDirectory``.

Chroot needs every component of the chroot path to be root-owned and not writable by others;
``/tmp`` is world-writable, so the chroot and the ``authorized_keys`` file live in a private folder
under ``/run`` (root-owned, 0755) that :meth:`OpenSSHServer.stop` removes again.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from crm_pipelines.local_ports import PortTaken, address_in_use, log_since, on_a_free_port

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = "ssh-keygen"
SFTP_USER = "crmpipelines-sftp"
LOOPBACK = "127.0.0.1"
# sshd needs its privilege separation folder even with -D -e.
PRIVSEP_DIR = Path("/run/sshd")


def sshd_unavailable_reason() -> str | None:
    """Why a real sshd cannot be started here, or None when it can."""
    if not SSHD.exists():
        return f"{SSHD} is missing: run `bash scripts/install-system-packages.sh` as root (openssh-server)"
    if shutil.which(SSH_KEYGEN) is None:
        return "ssh-keygen is missing (openssh-client)"
    return None


def chroot_unavailable_reason() -> str | None:
    """Why the chrooted SFTP-only user cannot be set up, or None (it needs root for useradd and chroot)."""
    if os.geteuid() != 0:
        return "not running as root: sshd runs as the current user without ChrootDirectory"
    if shutil.which("useradd") is None:
        return "useradd is missing"
    return None


def _ensure_sftp_user() -> None:
    """Create the SFTP-only system user once (no home, no shell, not password-locked for sshd)."""
    try:
        subprocess.run(["id", SFTP_USER], check=True, capture_output=True)
    except subprocess.CalledProcessError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SFTP_USER],
            check=True,
            capture_output=True,
        )
    # useradd leaves "!" (locked) in /etc/shadow, and sshd without PAM refuses locked accounts even
    # for key logins; "*" means "no password" without "locked".
    subprocess.run(["usermod", "-p", "*", SFTP_USER], check=True, capture_output=True)


class OpenSSHServer:
    """Debian's sshd, SFTP only, on a free loopback port.

    Args:
        work_dir: Folder for the config, host key and log (e.g. a test's ``tmp_path``).
        authorized_key: The client's OpenSSH public key file (``.pub``).
        host_key_type: ``ed25519``, ``ecdsa`` or ``rsa``.
        chroot: Lock the user into a chroot (needs root; see :func:`chroot_unavailable_reason`).

    After :meth:`start`: ``port``, ``username``, ``root`` (the local folder the client sees as
    ``/`` with a chroot, or ``remote_base`` otherwise) and ``host_public_key_path``.
    """

    def __init__(
        self,
        work_dir: Path,
        *,
        authorized_key: Path,
        host_key_type: str = "ed25519",
        chroot: bool = True,
    ) -> None:
        self.work_dir = Path(work_dir)
        self.authorized_key = Path(authorized_key)
        self.host_key_type = host_key_type
        self.chroot = chroot and chroot_unavailable_reason() is None
        self.port = 0
        self.username = SFTP_USER if self.chroot else getpass.getuser()
        self.host_key_path = self.work_dir / f"ssh_host_{host_key_type}_key"
        self.host_public_key_path = Path(f"{self.host_key_path}.pub")
        self._private_dir: Path | None = None
        self.root = self.work_dir / "sftp-root"
        self._process: subprocess.Popen[bytes] | None = None
        self.log_path = self.work_dir / "sshd.log"

    @property
    def host(self) -> str:
        return LOOPBACK

    def remote_path(self, local: Path) -> str:
        """The path the client uses for a local path under :attr:`root`."""
        relative = Path(local).relative_to(self.root).as_posix()
        if self.chroot:
            return "/" + ("" if relative == "." else relative)
        return str(Path(local))

    def folder(self, remote: str) -> Path:
        """Create a folder the SFTP user may write (``/outbound/finance``) and return its local path."""
        local = self.root / remote.strip("/")
        local.mkdir(parents=True, exist_ok=True)
        if self.chroot:
            # The chroot itself must stay root-owned; folders below it belong to the user.
            current = local
            while current != self.root:
                shutil.chown(current, user=SFTP_USER, group=SFTP_USER)
                current = current.parent
        return local

    def start(self) -> int:
        """Write the config, start ``sshd -D -e`` and wait until it accepts connections."""
        reason = sshd_unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if not self.host_key_path.exists():
            subprocess.run(
                [SSH_KEYGEN, "-q", "-t", self.host_key_type, "-N", "", "-f", str(self.host_key_path)],
                check=True,
                capture_output=True,
            )
        if self.chroot:
            _ensure_sftp_user()
            PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
            self._private_dir = Path(tempfile.mkdtemp(prefix="crm-pipelines-sshd-", dir="/run"))
            self._private_dir.chmod(0o755)
            self.root = self._private_dir / "chroot"
            self.root.mkdir(mode=0o755)
            authorized_keys = self._private_dir / "authorized_keys"
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            authorized_keys = self.work_dir / "authorized_keys"
        shutil.copyfile(self.authorized_key, authorized_keys)
        authorized_keys.chmod(0o644)
        self.port = on_a_free_port(lambda port: self._listen(port, authorized_keys))
        return self.port

    def _listen(self, port: int, authorized_keys: Path) -> int:
        """Start sshd on ``port`` and wait until it greets a client (a port taken meanwhile: :class:`PortTaken`)."""
        config = self.work_dir / "sshd_config"
        lines = [
            f"Port {port}",
            f"ListenAddress {LOOPBACK}",
            f"HostKey {self.host_key_path}",
            "PidFile none",
            f"AuthorizedKeysFile {authorized_keys}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            # Test folders live under /tmp; ownership checks are the chroot's job here.
            "StrictModes no",
            "LogLevel VERBOSE",
            "Subsystem sftp internal-sftp",
            f"AllowUsers {self.username}",
            "AllowTcpForwarding no",
            "X11Forwarding no",
            "PermitTTY no",
            "ForceCommand internal-sftp",
        ]
        if self.chroot:
            lines += [f"Match User {self.username}", f"    ChrootDirectory {self.root}"]
        config.write_text("\n".join(lines) + "\n")
        seen = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed in stop()
        self._process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)], stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                written = log_since(self.log_path, seen)
                if address_in_use(written):
                    raise PortTaken(f"port {port} was taken before sshd bound it")
                raise RuntimeError(f"sshd exited at start: {written[-2000:]}")
            # Its banner, not just a connection: a process that took the port would accept one too.
            with (
                contextlib.suppress(OSError),
                socket.create_connection((LOOPBACK, port), timeout=0.2) as sock,
            ):
                if sock.recv(4) == b"SSH-":
                    return port
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not listen on {port}: {self.log_path.read_text()[-2000:]}")

    def session_pids(self) -> list[int]:
        """Process ids serving client connections: every descendant of the listening sshd.

        Each connection has a privileged monitor (child) and the user's process (grandchild) that
        holds the socket; a dropped connection means killing both.
        """
        if self._process is None:
            return []
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
        found: list[int] = []
        frontier = [self._process.pid]
        while frontier:
            parent = frontier.pop()
            children = [pid for pid, ppid in parents.items() if ppid == parent]
            found += children
            frontier += children
        return found

    def drop_connections(self) -> int:
        """Kill every open client connection (the listener stays up); returns how many."""
        pids = self.session_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def stop(self) -> None:
        """Stop sshd and its connections; remove the private chroot folder."""
        if self._process is not None:
            self.drop_connections()
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
            self._process = None
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None

    def __enter__(self) -> OpenSSHServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
