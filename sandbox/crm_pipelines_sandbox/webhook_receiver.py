"""The webhook receiver as the sandbox runs it: the product's own ``crm-pipelines webhooks`` process.

The sandbox starts the real receiver (uvicorn, a process of its own, as in production) on a free
loopback port with fresh signing secrets, and hands the simulators the URL and secret to sign
their webhooks with. The event store sits in the sandbox folder; the exported variables point the
Dagster sensor (``sensors/webhook_events.py``) at it.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from crm_pipelines.webhooks.receiver import PUBLIC_URL, STORE_PATH
from crm_pipelines.webhooks.senders import SENDERS

__all__ = ["SandboxReceiver"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SandboxReceiver:
    """``crm-pipelines webhooks`` on loopback, with a secret per registered sender.

    Args:
        store_path: The event store (SQLite) the receiver writes and the sensor reads.
    """

    def __init__(self, store_path: Path) -> None:
        self.store_path = Path(store_path)
        self.secrets = {
            cls.secret_variable: (
                # Standard Webhooks secrets are base64 behind a whsec_ prefix.
                "whsec_" + secrets.token_urlsafe(24).replace("-", "+").replace("_", "/")
                if cls.secret_variable == "GENERIC_WEBHOOK_SECRET"
                else secrets.token_urlsafe(24)
            )
            for cls in SENDERS.values()
        }
        self.base_url = ""
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, sender: str) -> str:
        """Where ``sender`` posts its webhooks."""
        return f"{self.base_url}/webhooks/{sender}"

    def start(self, timeout: float = 20.0) -> dict[str, str]:
        """Start the receiver; returns the variables that configure it (and the sensor that reads it)."""
        port = _free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        self.store_path.parent.mkdir(parents=True, exist_ok=True)
        env = {STORE_PATH: str(self.store_path.resolve()), PUBLIC_URL: self.base_url, **self.secrets}
        command = Path(sys.executable).with_name("crm-pipelines")
        log = self.store_path.with_suffix(".log").open("ab")
        try:
            self._process = subprocess.Popen(
                [str(command), "webhooks", "--port", str(port), "--store", env[STORE_PATH]],
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the webhook receiver exited; see {self.store_path.with_suffix('.log')}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return env
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the webhook receiver did not answer within {timeout:.0f} s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
