"""Free TCP ports for the local servers (the local deployment's S3, the tests' PostgreSQL, sshd and
Redis), and another try when one was taken.

A port is picked by binding port 0 and closing the socket; between that and the server's own bind,
another process (a test worker next door) may take it. The server then fails saying so in its log,
its start raises :class:`PortTaken`, and :func:`retry_when_port_taken` starts it again on newly
picked ports, up to ``attempts`` times. Any other failure goes straight to the caller.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

__all__ = [
    "LOOPBACK",
    "PortTaken",
    "address_in_use",
    "free_port",
    "log_since",
    "on_a_free_port",
    "retry_when_port_taken",
]

T = TypeVar("T")
LOOPBACK = "127.0.0.1"
ATTEMPTS = 3


class PortTaken(RuntimeError):
    """The server could not bind a port it was given: something else listens on it."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def address_in_use(log: str) -> bool:
    """Whether a server's log says a listening address was taken (PostgreSQL, sshd, Redis, weed)."""
    return "address already in use" in log.lower()


def log_since(log: Path, offset: int) -> str:
    """What a log file gained after ``offset`` bytes (empty when it does not exist)."""
    if not log.exists():
        return ""
    with log.open("rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")


def retry_when_port_taken(start: Callable[[], T], *, attempts: int = ATTEMPTS) -> T:
    """``start()``, which picks its own ports, again when it raises :class:`PortTaken`.

    Raises:
        PortTaken: Every attempt found a port taken.
    """
    for _ in range(attempts - 1):
        try:
            return start()
        except PortTaken:
            continue
    return start()


def on_a_free_port(start: Callable[[int], T], *, attempts: int = ATTEMPTS) -> T:
    """``start(port)`` on a newly picked free port, again on another when it raises :class:`PortTaken`."""
    return retry_when_port_taken(lambda: start(free_port()), attempts=attempts)
