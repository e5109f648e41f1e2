"""The channel registry, and silence when nothing is configured."""

from __future__ import annotations

import logging

import pytest

from crm_pipelines.alerts import CHANNELS, Alert, FailedCheck, configured_channels, send_alert
from crm_pipelines.alerts.channels import is_loopback, register_channel
from crm_pipelines.alerts.email import EmailChannel
from crm_pipelines.alerts.slack import SlackChannel


def test_the_built_in_channels_register_themselves() -> None:
    assert CHANNELS.get("email") is EmailChannel
    assert CHANNELS.get("slack") is SlackChannel
    with pytest.raises(ValueError, match="already registered"):
        register_channel("email")(EmailChannel)


def test_nothing_configured_sends_nothing_and_raises_nothing(caplog: pytest.LogCaptureFixture) -> None:
    alert = Alert(kind="run_failure", job="nightly_sync", failed_steps=("x",), run_id="r", run_url="u")
    assert configured_channels() == []
    with caplog.at_level(logging.DEBUG, logger="crm_pipelines.alerts"):
        assert send_alert(alert) == []
    (record,) = caplog.records
    assert record.levelno == logging.DEBUG
    assert "no alert channel configured" in record.getMessage()


def test_loopback_hosts() -> None:
    assert all(
        is_loopback(host) for host in ("localhost", "LOCALHOST.", "127.0.0.1", "127.8.9.10", "::1", "[::1]")
    )
    assert not any(
        is_loopback(host) for host in ("smtp.example.com", "10.0.0.1", "localhost.example.com", "")
    )


def test_subjects_and_bodies() -> None:
    many = Alert(
        kind="run_failure",
        job="nightly_sync",
        failed_steps=("a", "b", "c", "d", "e"),
        run_id="r",
        run_url="http://ui/runs/r",
    )
    assert many.subject == "[crm-pipelines] nightly_sync failed: a, b, c and 2 more"
    assert "Failed steps: a, b, c, d, e\n" in many.body
    assert "Partition" not in many.body
    odd = Alert(kind="run_failure", job="job\r\nBcc: x@example.com", failed_steps=("s",))
    assert odd.subject == "[crm-pipelines] job Bcc: x@example.com failed: s"  # one line: no header injection
    summary = Alert(
        kind="daily_summary", partition="2026-12-07", headline="3 runs succeeded", lines=("  x: 3",)
    )
    assert summary.subject == "[crm-pipelines] daily summary (2026-12-07): 3 runs succeeded"
    assert summary.body == "3 runs succeeded\n\n  x: 3\n"


def test_a_run_failed_by_blocking_checks_names_them() -> None:
    alert = Alert(
        kind="run_failure",
        job="nightly_sync",
        partition="2026-12-06",
        failed_steps=("raw__hubspot_volume_drop_block", "load_erp"),
        failed_checks=(
            FailedCheck(
                "raw/hubspot", "volume_drop_block", "contacts fell\n85%", "raw__hubspot_volume_drop_block"
            ),
        ),
        error="DagsterAssetCheckFailedError: 1 blocking asset check failed with ERROR severity:",
    )
    # The check's step is named by its check; a step that failed for another reason by its key.
    assert alert.subject == (
        "[crm-pipelines] nightly_sync failed (2026-12-06): check raw/hubspot:volume_drop_block, load_erp"
    )
    assert "Failed steps: raw__hubspot_volume_drop_block, load_erp\n" in alert.body
    assert "Failed check: raw/hubspot:volume_drop_block: contacts fell 85%\n" in alert.body
