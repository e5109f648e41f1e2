"""The local servers start again on a new port when another process took theirs in between.

Each test holds a listening socket on the first port the server is offered, as a test worker next
door would, and checks the server comes up on the next one.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from crm_pipelines import local_ports as ports
from crm_pipelines.local_ports import PortTaken, on_a_free_port
from crm_pipelines_sandbox.openssh_server import OpenSSHServer, sshd_unavailable_reason
from crm_pipelines_sandbox.postgres_server import running_postgres
from crm_pipelines_sandbox.redis_server import redis_unavailable_reason, running_redis


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A port something listens on, offered first; later picks are free ones."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        squatter.bind((ports.LOOPBACK, 0))
        squatter.listen()
        port = int(squatter.getsockname()[1])
        picks = iter([port])
        pick = ports.free_port
        monkeypatch.setattr(ports, "free_port", lambda: next(picks, None) or pick())
        yield port


def test_another_try_only_for_a_taken_port() -> None:
    offered: list[int] = []

    def start(port: int) -> int:
        offered.append(port)
        if len(offered) < 3:
            raise PortTaken("taken")
        return port

    assert on_a_free_port(start) == offered[-1]
    assert len(offered) == 3

    def always_taken(port: int) -> int:
        raise PortTaken(f"{port} taken")

    with pytest.raises(PortTaken):
        on_a_free_port(always_taken, attempts=2)

    calls: list[int] = []

    def broken(port: int) -> int:
        calls.append(port)
        raise RuntimeError("bad config")

    with pytest.raises(RuntimeError, match="bad config"):
        on_a_free_port(broken)
    assert len(calls) == 1


def test_postgres_starts_on_the_next_port(taken: int) -> None:
    try:
        server_context = running_postgres(database="ports")
        with server_context as server:
            assert server.port != taken
            with psycopg.connect(
                host=server.host, port=server.port, user=server.user, password=server.password, dbname="ports"
            ) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def test_sshd_starts_on_the_next_port(taken: int, tmp_path: Path) -> None:
    reason = sshd_unavailable_reason()
    if reason:
        pytest.skip(reason)
    key = tmp_path / "client_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    with OpenSSHServer(tmp_path / "sshd", authorized_key=Path(f"{key}.pub")) as sshd:
        assert sshd.port != taken
        with socket.create_connection((sshd.host, sshd.port), timeout=5) as sock:
            assert sock.recv(4) == b"SSH-"


def test_redis_starts_on_the_next_port(taken: int, tmp_path: Path) -> None:
    reason = redis_unavailable_reason()
    if reason:
        pytest.skip(reason)
    with running_redis(tmp_path) as server:
        assert server.port != taken
        client = redis.Redis.from_url(server.url())
        assert client.ping()
        client.close()
