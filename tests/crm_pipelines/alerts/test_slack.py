"""The Slack channel against a real HTTP receiver on loopback, and its URL rules."""

from __future__ import annotations

import logging

import pytest

from crm_pipelines import settings
from crm_pipelines.alerts import Alert, AlertConfigError, send_alert
from crm_pipelines.alerts.slack import SlackChannel
from tests.crm_pipelines.alerts.receivers import WebhookReceiver


def failed_check() -> Alert:
    return Alert(
        kind="check_failure",
        job="nightly_sync",
        partition="2026-12-06",
        error="contacts fell 85% below the 7-night median <1,200 rows> & more",
        run_id="0123-abcd",
        run_url="http://localhost:3000/runs/0123-abcd",
        asset_key="raw/hubspot",
        check_name="volume_drop_block",
        severity="ERROR",
    )


def test_an_alert_is_posted_as_slack_json(webhook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    webhook.configure(monkeypatch)

    assert send_alert(failed_check()) == ["slack"]

    (payload,) = webhook.payloads
    assert webhook.paths == ["/services/T000/B000/not-a-real-secret"]
    subject = "[crm-pipelines] check raw/hubspot:volume_drop_block failed (ERROR) (2026-12-06)"
    assert payload["text"].startswith(subject + "\n")
    for expected in (
        "Asset: raw/hubspot",
        "Check: volume_drop_block",
        "Severity: ERROR",
        "Job: nightly_sync",
    ):
        assert expected in payload["text"]
    assert payload["blocks"][0] == {"type": "section", "text": {"type": "mrkdwn", "text": f"*{subject}*"}}
    body = payload["blocks"][1]["text"]["text"]
    assert "&lt;1,200 rows&gt; &amp; more" in body  # Slack's escaping
    assert (
        payload["blocks"][2]["elements"][0]["text"] == "<http://localhost:3000/runs/0123-abcd|Open the run>"
    )


def test_plain_http_only_to_loopback() -> None:
    name = settings.ALERT_SLACK_WEBHOOK_URL
    assert SlackChannel.from_env({}) is None
    assert SlackChannel.from_env({name: "https://hooks.slack.com/services/T/B/x"}) is not None
    assert SlackChannel.from_env({name: "http://localhost:8080/hook"}) is not None
    for refused in ("http://hooks.example.com/services/T/B/x", "ftp://localhost/x", "not a url"):
        with pytest.raises(AlertConfigError, match="https") as error:
            SlackChannel.from_env({name: refused})
        assert refused not in str(error.value)  # the URL is a secret
    assert "hooks.slack.com" not in repr(SlackChannel(url="https://hooks.slack.com/services/T/B/x"))


def test_a_refusing_webhook_is_a_warning_without_its_url(
    webhook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    webhook.configure(monkeypatch)
    webhook.status = 500

    with caplog.at_level(logging.WARNING, logger="crm_pipelines.alerts"):
        assert send_alert(failed_check()) == []

    assert "alert channel slack failed" in caplog.text
    assert "HTTP 500" in caplog.text
    assert "not-a-real-secret" not in caplog.text


def test_an_unreachable_webhook_is_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(settings.ALERT_SLACK_WEBHOOK_URL, "http://127.0.0.1:9/services/gone")  # discard port
    with caplog.at_level(logging.WARNING, logger="crm_pipelines.alerts"):
        assert send_alert(failed_check()) == []
    assert "could not be reached" in caplog.text
    assert "services/gone" not in caplog.text
