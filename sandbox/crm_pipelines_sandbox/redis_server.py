"""A real ``redis-server`` on 127.0.0.1 (password, no persistence), for the writer-lock tests.

The password goes in a config file, not on the command line where ``ps`` shows it. A port another
process took between picking and binding gets the server started again on a new one
(:func:`crm_pipelines.local_ports.on_a_free_port`).
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from crm_pipelines.local_ports import LOOPBACK, PortTaken, address_in_use, log_since, on_a_free_port

__all__ = ["RedisServer", "redis_unavailable_reason", "running_redis"]


@dataclass(frozen=True)
class RedisServer:
    host: str
    port: int
    password: str

    def url(self, query: str = "") -> str:
        return f"redis://:{self.password}@{self.host}:{self.port}/0{query}"


def redis_unavailable_reason() -> str | None:
    """Why a redis-server cannot be started here, or None when it can."""
    if shutil.which("redis-server") is None:
        return "redis-server is not on PATH (scripts/install-system-packages.sh installs it)"
    return None


@contextmanager
def running_redis(folder: Path) -> Iterator[RedisServer]:
    """Start ``redis-server`` with its config and log in ``folder``, yield it, then stop it."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise FileNotFoundError(redis_unavailable_reason())
    password = secrets.token_hex(12)
    log = folder / "redis.log"

    def start(port: int) -> tuple[RedisServer, subprocess.Popen[bytes]]:
        server = RedisServer(LOOPBACK, port, password)
        config = folder / "redis.conf"
        config.write_text(
            f"bind {server.host}\nport {port}\nrequirepass {password}\n"
            f'save ""\nappendonly no\ndir {folder}\nlogfile {log}\n'
        )
        seen = log.stat().st_size if log.exists() else 0
        process = subprocess.Popen([executable, str(config)])
        client = redis.Redis.from_url(server.url(), socket_connect_timeout=1, socket_timeout=1)
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    client.ping()  # authenticated: a process that took the port would not answer it
                    return server, process
                except redis.RedisError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        process.terminate()
                        process.wait(timeout=10)
                        written = log_since(log, seen)
                        if address_in_use(written):
                            raise PortTaken(f"port {port} was taken before redis-server bound it") from None
                        raise RuntimeError(f"redis-server did not start: {written[-2000:]}") from None
                    time.sleep(0.05)
        finally:
            client.close()

    server, process = on_a_free_port(start)
    try:
        yield server
    finally:
        process.terminate()
        process.wait(timeout=10)
