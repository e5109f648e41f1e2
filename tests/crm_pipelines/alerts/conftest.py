"""Fixtures of the alert tests: a clean environment, an SMTP server and a webhook receiver on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.crm_pipelines.alerts.receivers import (
    SmtpServer,
    WebhookReceiver,
    clear_alert_env,
    smtp_server,
    webhook_receiver,
)


@pytest.fixture(autouse=True)
def _no_alert_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_alert_env(monkeypatch)


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with smtp_server() as server:
        yield server


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as receiver:
        yield receiver
