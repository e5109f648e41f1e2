"""A real ``redis-server`` for the writer-lock tests (password, loopback, no persistence), started once
per session; PostgreSQL is the warehouse suite's ``initdb`` server (``warehouse_server``)."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from crm_pipelines_sandbox.postgres_server import free_port


@dataclass(frozen=True)
class RedisServer:
    host: str
    port: int
    password: str

    def url(self, query: str = "") -> str:
        return f"redis://:{self.password}@{self.host}:{self.port}/0{query}"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not on PATH (scripts/install-system-packages.sh installs it)")
    folder: Path = tmp_path_factory.mktemp("redis")
    server = RedisServer("127.0.0.1", free_port(), secrets.token_hex(12))
    # The password goes in a config file, not on the command line where ps shows it.
    config = folder / "redis.conf"
    config.write_text(
        f"bind {server.host}\nport {server.port}\nrequirepass {server.password}\n"
        f'save ""\nappendonly no\ndir {folder}\nlogfile {folder / "redis.log"}\n'
    )
    process = subprocess.Popen([executable, str(config)])
    try:
        client = redis.Redis.from_url(server.url(), socket_connect_timeout=1)
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    log = (folder / "redis.log").read_text()
                    raise RuntimeError(f"redis-server did not start: {log}") from None
                time.sleep(0.05)
        client.close()
        yield server
    finally:
        process.terminate()
        process.wait(timeout=10)
