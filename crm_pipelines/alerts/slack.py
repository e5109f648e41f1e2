"""The Slack channel: a JSON POST to an incoming webhook (Slack, or anything that takes its payload).

Configured by ``ALERT_SLACK_WEBHOOK_URL``: https, or plain http to a loopback host only. The URL is
a secret (whoever has it can post): it is never logged. That is why this module posts with the
standard library's ``urllib`` and not httpx, whose client logs every request's URL at INFO; redirects
are refused, so the payload only ever goes where the URL says.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from crm_pipelines import settings
from crm_pipelines.alerts.channels import (
    TIMEOUT_SECONDS,
    AlertChannel,
    AlertConfigError,
    is_loopback,
    register_channel,
)
from crm_pipelines.alerts.model import Alert

__all__ = ["SlackChannel", "WebhookError", "slack_payload"]


class WebhookError(RuntimeError):
    """The webhook did not take the alert (the message names the status, never the URL)."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError for the 3xx


_OPENER = urllib.request.build_opener(_NoRedirect())


def _mrkdwn(text: str) -> str:
    """Slack's escaping: &, < and > are control characters in message text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(alert: Alert) -> dict[str, Any]:
    """``{"text": ..., "blocks": [...]}``: the text for notifications and other receivers, the blocks
    for Slack (the subject in bold, the body, a link to the run)."""
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{_mrkdwn(alert.subject)}*"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _mrkdwn(alert.body)}},
    ]
    if alert.run_url:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{alert.run_url}|Open the run>"}]}
        )
    return {"text": f"{alert.subject}\n{alert.body}", "blocks": blocks}


def check_webhook_url(url: str) -> str:
    """``url`` when it is https, or http to a loopback host.

    Raises:
        AlertConfigError: Any other URL (the message does not repeat it: it is a secret).
    """
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname):
        return url
    raise AlertConfigError(
        f"{settings.ALERT_SLACK_WEBHOOK_URL} must be an https URL (plain http only to a loopback host)"
    )


@register_channel("slack")
@dataclass(frozen=True)
class SlackChannel(AlertChannel):
    """Posts alerts to a Slack-compatible incoming webhook."""

    url: str = field(repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SlackChannel | None:
        url = environ.get(settings.ALERT_SLACK_WEBHOOK_URL, "").strip()
        return cls(url=check_webhook_url(url)) if url else None

    def send(self, alert: Alert) -> None:
        request = urllib.request.Request(
            self.url,
            data=json.dumps(slack_payload(alert)).encode(),
            headers={"Content-Type": "application/json; charset=utf-8"},
            method="POST",
        )
        try:
            with _OPENER.open(request, timeout=TIMEOUT_SECONDS) as response:
                response.read()
        except urllib.error.HTTPError as error:
            raise WebhookError(f"the webhook answered HTTP {error.code}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise WebhookError(f"the webhook could not be reached: {reason}") from None

    def secrets(self) -> tuple[str, ...]:
        return (self.url,)
