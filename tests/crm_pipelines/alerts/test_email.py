"""The e-mail channel against a real SMTP server on loopback (aiosmtpd), and its security rules."""

from __future__ import annotations

import logging

import pytest

from crm_pipelines import settings
from crm_pipelines.alerts import Alert, AlertConfigError, send_alert
from crm_pipelines.alerts.email import EmailChannel
from tests.crm_pipelines.alerts.receivers import SmtpServer, WebhookReceiver

FAKE_PASSWORD = "smtp-fake-password-77"


def failed_night() -> Alert:
    return Alert(
        kind="run_failure",
        job="nightly_sync",
        partition="2026-12-06",
        failed_steps=("extract_hubspot_contacts",),
        error="RuntimeError: HubSpot answered 503",
        run_id="0123-abcd",
        run_url="http://localhost:3000/runs/0123-abcd",
    )


def test_an_alert_arrives_as_a_plain_text_mail(smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    smtp.configure(monkeypatch)
    monkeypatch.setenv(settings.ALERT_SMTP_PASSWORD, FAKE_PASSWORD)  # set, but no username: no login

    assert send_alert(failed_night()) == ["email"]

    (message,) = smtp.messages
    # strip(): Python's folder puts a long subject starting with "[" on a continuation line.
    assert (
        message["Subject"].strip()
        == "[crm-pipelines] nightly_sync failed (2026-12-06): extract_hubspot_contacts"
    )
    assert message["From"] == "crm-pipelines@example.com"
    assert smtp.recipients == [["data-oncall@example.com", "lead@example.com"]]
    assert message.get_content_type() == "text/plain"
    body = message.get_content()
    for expected in (
        "Job: nightly_sync",
        "Partition: 2026-12-06",
        "Failed steps: extract_hubspot_contacts",
        "Error: RuntimeError: HubSpot answered 503",
        "Run: http://localhost:3000/runs/0123-abcd",
    ):
        assert expected in body
    assert FAKE_PASSWORD not in message.as_string()


def test_no_tls_is_refused_for_a_host_that_is_not_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    environ = {
        settings.ALERT_SMTP_HOST: "smtp.example.com",
        settings.ALERT_SMTP_TLS: "none",
        settings.ALERT_EMAIL_FROM: "crm-pipelines@example.com",
        settings.ALERT_EMAIL_TO: "oncall@example.com",
    }
    with pytest.raises(AlertConfigError, match="only allowed to a loopback host"):
        EmailChannel.from_env(environ)
    for loopback in ("localhost", "127.0.0.1", "::1"):
        channel = EmailChannel.from_env({**environ, settings.ALERT_SMTP_HOST: loopback})
        assert channel is not None
        assert channel.tls == "none"


def test_secure_defaults_and_ports() -> None:
    environ = {
        settings.ALERT_SMTP_HOST: "smtp.example.com",
        settings.ALERT_EMAIL_FROM: "crm-pipelines@example.com",
        settings.ALERT_EMAIL_TO: "oncall@example.com",
    }
    default = EmailChannel.from_env(environ)
    assert default is not None
    assert (default.tls, default.port) == ("starttls", 587)
    implicit = EmailChannel.from_env({**environ, settings.ALERT_SMTP_TLS: "ssl"})
    assert implicit is not None
    assert (implicit.tls, implicit.port) == ("ssl", 465)
    with pytest.raises(AlertConfigError, match="must be one of"):
        EmailChannel.from_env({**environ, settings.ALERT_SMTP_TLS: "maybe"})
    with pytest.raises(AlertConfigError, match="ALERT_EMAIL_TO"):
        EmailChannel.from_env({settings.ALERT_SMTP_HOST: "smtp.example.com"})
    assert EmailChannel.from_env({}) is None
    assert FAKE_PASSWORD not in repr(
        EmailChannel.from_env({**environ, settings.ALERT_SMTP_PASSWORD: FAKE_PASSWORD})
    )


def test_a_misconfigured_channel_is_a_warning_and_the_other_still_sends(
    webhook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(settings.ALERT_SMTP_HOST, "smtp.example.com")
    monkeypatch.setenv(settings.ALERT_SMTP_TLS, "none")
    monkeypatch.setenv(settings.ALERT_EMAIL_FROM, "crm-pipelines@example.com")
    monkeypatch.setenv(settings.ALERT_EMAIL_TO, "oncall@example.com")
    webhook.configure(monkeypatch)

    with caplog.at_level(logging.WARNING, logger="crm_pipelines.alerts"):
        assert send_alert(failed_night()) == ["slack"]

    assert "alert channel email is not usable" in caplog.text
    assert len(webhook.payloads) == 1


def test_a_server_without_starttls_fails_the_mail_not_the_webhook(
    smtp: SmtpServer,
    webhook: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    smtp.configure(monkeypatch)
    monkeypatch.setenv(settings.ALERT_SMTP_TLS, "starttls")  # the test server offers no STARTTLS
    monkeypatch.setenv(settings.ALERT_SMTP_USERNAME, "alerts")
    monkeypatch.setenv(settings.ALERT_SMTP_PASSWORD, FAKE_PASSWORD)
    webhook.configure(monkeypatch)

    with caplog.at_level(logging.WARNING, logger="crm_pipelines.alerts"):
        assert send_alert(failed_night()) == ["slack"]

    assert smtp.messages == []  # nothing went out in clear text
    assert "alert channel email failed" in caplog.text
    assert "STARTTLS" in caplog.text
    assert FAKE_PASSWORD not in caplog.text
    assert len(webhook.payloads) == 1
