"""Alerts: failed runs, failed checks and a daily summary, by e-mail and a Slack-compatible webhook.

The channels register themselves in :data:`~crm_pipelines.alerts.channels.CHANNELS`; importing this
package imports the built-in ones, so a new channel is one module and one import here. A channel
sends only when its environment variables are set; with none set, alerts are dropped (at debug).
The sensors are ``sensors/alerts.py``.
"""

from crm_pipelines.alerts import email, slack  # noqa: F401 - each registers its channel
from crm_pipelines.alerts.channels import (
    CHANNELS,
    AlertChannel,
    AlertConfigError,
    configured_channels,
    send_alert,
)
from crm_pipelines.alerts.model import Alert, AlertKind, FailedCheck
from crm_pipelines.alerts.redact import first_error_line, redact
from crm_pipelines.alerts.runs import (
    CheckTick,
    SummaryTick,
    check_failure_alerts,
    daily_summary_alert,
    notify_check_failures,
    notify_daily_summary,
    notify_run_failure,
    run_failure_alert,
    run_url,
)

__all__ = [
    "CHANNELS",
    "Alert",
    "AlertChannel",
    "AlertConfigError",
    "AlertKind",
    "CheckTick",
    "FailedCheck",
    "SummaryTick",
    "check_failure_alerts",
    "configured_channels",
    "daily_summary_alert",
    "first_error_line",
    "notify_check_failures",
    "notify_daily_summary",
    "notify_run_failure",
    "redact",
    "run_failure_alert",
    "run_url",
    "send_alert",
]
