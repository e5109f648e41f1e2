"""Real receivers on loopback for the alert tests: an SMTP server (aiosmtpd) and a webhook (http.server).

Shared by ``tests/crm_pipelines/alerts`` (fixtures in its conftest) and ``tests/sensors/test_alerts.py``.
"""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from crm_pipelines import settings

ALERT_VARIABLES = (
    settings.ALERT_SMTP_HOST,
    settings.ALERT_SMTP_PORT,
    settings.ALERT_SMTP_USERNAME,
    settings.ALERT_SMTP_PASSWORD,
    settings.ALERT_SMTP_TLS,
    settings.ALERT_EMAIL_FROM,
    settings.ALERT_EMAIL_TO,
    settings.ALERT_SLACK_WEBHOOK_URL,
    settings.DAGSTER_UI_URL,
)


@dataclass
class SmtpServer:
    """An SMTP server on 127.0.0.1 that keeps every message it accepts."""

    host: str
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    recipients: list[list[str]] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 OK"

    def configure(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point the e-mail channel at this server (no TLS: loopback; no login)."""
        monkeypatch.setenv(settings.ALERT_SMTP_HOST, self.host)
        monkeypatch.setenv(settings.ALERT_SMTP_PORT, str(self.port))
        monkeypatch.setenv(settings.ALERT_SMTP_TLS, "none")
        monkeypatch.setenv(settings.ALERT_EMAIL_FROM, "crm-pipelines@example.com")
        monkeypatch.setenv(settings.ALERT_EMAIL_TO, "data-oncall@example.com, lead@example.com")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def smtp_server() -> Iterator[SmtpServer]:
    """A running aiosmtpd server on a free loopback port, stopped on exit."""
    server = SmtpServer(host="127.0.0.1", port=_free_port())
    controller = Controller(server, hostname=server.host, port=server.port, ready_timeout=10)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


@dataclass
class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that keeps every JSON body posted to it and answers ``status``."""

    url: str = ""
    payloads: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    status: int = 200

    def configure(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point the Slack channel at this receiver."""
        monkeypatch.setenv(settings.ALERT_SLACK_WEBHOOK_URL, self.url)


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A running webhook receiver on a free loopback port, stopped on exit."""
    receiver = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            receiver.paths.append(self.path)
            receiver.payloads.append(json.loads(body))
            self.send_response(receiver.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet test output

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/not-a-real-secret"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def clear_alert_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No alert variable from the surrounding environment: each test sets its own."""
    for name in ALERT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
