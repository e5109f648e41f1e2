"""Free TCP ports for the local servers the tests start, and another try when one was taken.

A port is picked by binding port 0 and closing the socket; between that and the server's own bind,
another process (a test worker next door) may take it. The server then fails saying so, and
:func:`on_a_free_port` starts it again on a newly picked port, up to ``attempts`` times. Any other
failure goes straight to the caller.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TypeVar

__all__ = ["PortTaken", "address_in_use", "free_port", "on_a_free_port"]

T = TypeVar("T")
LOOPBACK = "127.0.0.1"
ATTEMPTS = 3


class PortTaken(RuntimeError):
    """The server could not bind its port: something else listens on it."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def address_in_use(log: str) -> bool:
    """Whether a server's log says its listening address was taken (PostgreSQL, sshd, Redis)."""
    return "address already in use" in log.lower()


def on_a_free_port(start: Callable[[int], T], *, attempts: int = ATTEMPTS) -> T:
    """``start(port)`` on a newly picked free port, again when it raises :class:`PortTaken`.

    Raises:
        PortTaken: Every attempt found its port taken.
    """
    for _ in range(attempts - 1):
        try:
            return start(free_port())
        except PortTaken:
            continue
    return start(free_port())
