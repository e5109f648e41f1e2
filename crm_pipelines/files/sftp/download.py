"""What a download returns and how large files are split; the reading itself is in the session."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Bytes per local read when hashing a finished file.
READ_SIZE = 1024 * 1024
# Large files are fetched as byte ranges over several connections: one paramiko transport does its
# crypto in one thread, so a single stream is CPU-bound well below what sshd can send.
PARALLEL_MIN_BYTES = 64 * 1024 * 1024
# 0 = automatic: half the CPUs, capped at 4. Each range costs a client thread and a server process;
# on 2 CPUs two streams measured no faster than one (both fight sshd for the cores), so one.
PARALLEL_CONNECTIONS = 0
# Reconnects per download before giving up: enough for a flapping link, not for a dead server.
DOWNLOAD_RETRIES = 3


def parallel_ranges(configured: int) -> int:
    """How many byte ranges a large download uses (``configured``, or automatic when 0)."""
    return configured if configured > 0 else max(1, min(4, (os.cpu_count() or 1) // 2))


@dataclass
class PartialChecksum:
    """A SHA-256 of a remote file computed in steps (a sensor tick may end before the file does).

    Attributes:
        size, mtime: The file as it was when hashing began; a change means starting over.
        offset: Bytes hashed so far.
    """

    size: int
    mtime: float
    offset: int = 0
    digest: Any = field(default_factory=hashlib.sha256)

    @property
    def done(self) -> bool:
        return self.offset >= self.size

    def hexdigest(self) -> str:
        return str(self.digest.hexdigest())


@dataclass(frozen=True)
class DownloadResult:
    local_path: Path
    size: int
    sha256: str
