"""The alert sensors against a real Dagster instance, sending to a real SMTP server and webhook on loopback."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from email.message import EmailMessage

import dagster as dg
import pytest

from crm_pipelines import settings
from crm_pipelines.alerts.runs import finished_runs_after
from sensors.alerts import alert_on_check_failure, alert_on_run_failure, daily_alert_summary
from tests.crm_pipelines.alerts.receivers import (
    SmtpServer,
    WebhookReceiver,
    clear_alert_env,
    smtp_server,
    webhook_receiver,
)

FAKE_DB_PASSWORD = "db-fake-password-31"
FAKE_API_TOKEN = "tok_fake_0123456789"
UI = "http://dagster.example.com:3000"
DAY = "2026-12-06"
daily = dg.DailyPartitionsDefinition(start_date="2026-12-01")


@dg.op
def extract_hubspot_contacts() -> None:
    raise RuntimeError(
        f"could not reach postgresql://loader:{FAKE_DB_PASSWORD}@warehouse:5432/crm token={FAKE_API_TOKEN}\n"
        "second line of the error"
    )


@dg.job(partitions_def=daily)
def nightly_sync() -> None:
    extract_hubspot_contacts()


@dg.op
def fine() -> None:
    pass


@dg.job
def small_job() -> None:
    fine()


@dg.asset(key=["raw", "hubspot"], partitions_def=daily)
def raw_hubspot() -> None:
    pass


@dg.asset_check(asset=raw_hubspot, blocking=True)
def volume_drop_block() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=False, severity=dg.AssetCheckSeverity.ERROR, description="contacts fell 85%"
    )


@dg.asset_check(asset=raw_hubspot)
def source_freshness() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"no change for 9 days (secret={FAKE_API_TOKEN})",
    )


@dg.asset_check(asset=raw_hubspot)
def rows_add_up() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


@dg.asset_check(asset=raw_hubspot, blocking=True)
def erp_rows_block() -> dg.AssetCheckResult:
    """Blocking, no description: the run's alert names it by its first metadata entry."""
    return dg.AssetCheckResult(
        passed=False, severity=dg.AssetCheckSeverity.ERROR, metadata={"missing rows": 412, "of": 9000}
    )


@dg.asset_check(asset=raw_hubspot, blocking=True)
def volume_drop_warn() -> dg.AssetCheckResult:
    """Blocking, but a WARN: the run goes on, so the check alerts on its own."""
    return dg.AssetCheckResult(
        passed=False, severity=dg.AssetCheckSeverity.WARN, description="contacts fell 30%"
    )


@dg.asset_check(asset=raw_hubspot)
def duplicates_found() -> dg.AssetCheckResult:
    """Not blocking, an ERROR: the run goes on."""
    return dg.AssetCheckResult(
        passed=False, severity=dg.AssetCheckSeverity.ERROR, description="212 duplicate contacts"
    )


@pytest.fixture
def receivers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[SmtpServer, WebhookReceiver]]:
    """Both channels configured, pointing at real receivers on loopback."""
    clear_alert_env(monkeypatch)
    monkeypatch.setenv(settings.DAGSTER_UI_URL, UI + "/")
    monkeypatch.setenv("CRM_PIPELINES_TEST_API_TOKEN", FAKE_API_TOKEN)  # a secret variable: masked anywhere
    with smtp_server() as smtp, webhook_receiver() as webhook:
        smtp.configure(monkeypatch)
        webhook.configure(monkeypatch)
        yield smtp, webhook


def failed_night(instance: dg.DagsterInstance) -> dg.DagsterRun:
    result = nightly_sync.execute_in_process(instance=instance, partition_key=DAY, raise_on_error=False)
    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    return run


def checked_night(instance: dg.DagsterInstance) -> str:
    result = dg.materialize(
        [raw_hubspot, volume_drop_block, source_freshness, rows_add_up],
        instance=instance,
        partition_key=DAY,
        raise_on_error=False,
    )
    return result.run_id


def warned_night(instance: dg.DagsterInstance) -> str:
    """A run that succeeds with failed checks: none of them blocks it."""
    result = dg.materialize(
        [raw_hubspot, volume_drop_warn, duplicates_found, source_freshness, rows_add_up],
        instance=instance,
        partition_key=DAY,
    )
    assert result.success
    return result.run_id


def evaluate_run_failure_sensor(instance: dg.DagsterInstance, run: dg.DagsterRun) -> None:
    (failure,) = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert failure.dagster_event is not None
    context = dg.build_run_status_sensor_context(
        sensor_name="alert_on_run_failure",
        dagster_event=failure.dagster_event,
        dagster_instance=instance,
        dagster_run=run,
    ).for_run_failure()
    alert_on_run_failure(context)


def content(message: EmailMessage) -> str:
    """The mail's body as the receiver reads it, with newline line ends."""
    text = message.get_content()
    assert isinstance(text, str)
    return text.replace("\r\n", "\n")


def noon_somewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """The business timezone where it is now about noon: past 07:00, whatever the clock says."""
    offset = 12 - dt.datetime.now(dt.UTC).hour
    monkeypatch.setenv(settings.TIMEZONE, f"Etc/GMT{-offset:+d}" if offset else "UTC")


def assert_no_secret(text: str) -> None:
    assert FAKE_DB_PASSWORD not in text
    assert FAKE_API_TOKEN not in text


def test_a_failed_run_alerts_by_mail_and_webhook(receivers: tuple[SmtpServer, WebhookReceiver]) -> None:
    smtp, webhook = receivers
    with dg.instance_for_test() as instance:
        run = failed_night(instance)
        evaluate_run_failure_sensor(instance, run)

    link = f"{UI}/runs/{run.run_id}"
    (message,) = smtp.messages
    assert (
        message["Subject"].strip() == f"[crm-pipelines] nightly_sync failed ({DAY}): extract_hubspot_contacts"
    )
    body = content(message)
    assert "Job: nightly_sync\n" in body
    assert f"Partition: {DAY}\n" in body
    assert "Failed steps: extract_hubspot_contacts\n" in body
    assert "Error: RuntimeError: could not reach postgresql://***@warehouse:5432/crm token=***\n" in body
    assert "second line" not in body
    assert f"Run: {link}\n" in body
    assert_no_secret(message.as_string())

    (payload,) = webhook.payloads
    assert payload["text"] == f"{message['Subject'].strip()}\n{body}"
    assert link in payload["blocks"][2]["elements"][0]["text"]
    assert_no_secret(str(payload))


def test_failed_checks_alert_once_each_with_their_severity(
    receivers: tuple[SmtpServer, WebhookReceiver],
) -> None:
    smtp, webhook = receivers
    with dg.instance_for_test() as instance:
        small_job.execute_in_process(instance=instance)  # history from before the sensor was on
        first = alert_on_check_failure(dg.build_sensor_context(instance=instance))
        assert isinstance(first, dg.SensorResult)
        assert first.cursor is not None
        assert smtp.messages == []  # a new sensor starts from now

        run_id = warned_night(instance)
        second = alert_on_check_failure(dg.build_sensor_context(instance=instance, cursor=first.cursor))
        assert isinstance(second, dg.SensorResult)
        third = alert_on_check_failure(dg.build_sensor_context(instance=instance, cursor=second.cursor))
        assert isinstance(third, dg.SensorResult)
        assert third.skip_reason is not None
        assert third.cursor == second.cursor

    # The run succeeded: every failed check alerts here, a blocking WARN and a non-blocking ERROR too.
    subjects = sorted(message["Subject"].strip() for message in smtp.messages)
    assert subjects == [
        f"[crm-pipelines] check raw/hubspot:duplicates_found failed (ERROR) ({DAY})",
        f"[crm-pipelines] check raw/hubspot:source_freshness failed (WARN) ({DAY})",
        f"[crm-pipelines] check raw/hubspot:volume_drop_warn failed (WARN) ({DAY})",
    ]
    bodies = "".join(content(message) for message in smtp.messages)
    assert "Error: 212 duplicate contacts\n" in bodies
    assert "Error: contacts fell 30%\n" in bodies
    assert "Error: no change for 9 days (secret=***)\n" in bodies
    assert f"Run: {UI}/runs/{run_id}\n" in bodies
    assert_no_secret(bodies)
    assert sorted(payload["text"].split("\n")[0] for payload in webhook.payloads) == subjects


def test_blocking_checks_that_fail_their_run_alert_once_in_the_runs_alert(
    receivers: tuple[SmtpServer, WebhookReceiver],
) -> None:
    """One alert per problem: the blocking checks that failed the run are named by the run's alert and
    get none of their own; the non-blocking check that failed in the same run alerts once, by itself."""
    smtp, webhook = receivers
    with dg.instance_for_test() as instance:
        first = alert_on_check_failure(dg.build_sensor_context(instance=instance))
        assert isinstance(first, dg.SensorResult)
        result = dg.materialize(
            [raw_hubspot, volume_drop_block, erp_rows_block, source_freshness, rows_add_up],
            instance=instance,
            partition_key=DAY,
            raise_on_error=False,
        )
        assert not result.success
        run = instance.get_run_by_id(result.run_id)
        assert run is not None
        # Both sensors see the run, in either order.
        evaluate_run_failure_sensor(instance, run)
        second = alert_on_check_failure(dg.build_sensor_context(instance=instance, cursor=first.cursor))
        assert isinstance(second, dg.SensorResult)
        assert second.cursor != first.cursor

    link = f"{UI}/runs/{run.run_id}"
    assert len(smtp.messages) == 2
    assert len(webhook.payloads) == 2
    by_subject = {message["Subject"].strip(): message for message in smtp.messages}
    warn = f"[crm-pipelines] check raw/hubspot:source_freshness failed (WARN) ({DAY})"
    assert warn in by_subject
    (failed_subject,) = set(by_subject) - {warn}
    assert failed_subject.startswith(f"[crm-pipelines] {run.job_name} failed ({DAY}): check raw/hubspot:")
    assert "check raw/hubspot:volume_drop_block" in failed_subject
    assert "check raw/hubspot:erp_rows_block" in failed_subject
    body = content(by_subject[failed_subject])
    assert "Failed check: raw/hubspot:volume_drop_block: contacts fell 85%\n" in body
    assert "Failed check: raw/hubspot:erp_rows_block: missing rows: 412\n" in body
    assert "source_freshness" not in body  # not what failed the run: it has its own alert
    assert f"Run: {link}\n" in body
    assert "Error: no change for 9 days (secret=***)\n" in content(by_subject[warn])
    assert not [subject for subject in by_subject if "_block failed (ERROR)" in subject]
    assert sorted(payload["text"].split("\n")[0] for payload in webhook.payloads) == sorted(by_subject)
    assert_no_secret("".join(message.as_string() for message in smtp.messages) + str(webhook.payloads))


def test_finished_runs_are_read_in_batches_without_a_gap() -> None:
    with dg.instance_for_test() as instance:
        run_ids = [small_job.execute_in_process(instance=instance).run_id for _ in range(2)]
        run_ids.append(
            nightly_sync.execute_in_process(instance=instance, partition_key=DAY, raise_on_error=False).run_id
        )
        seen: list[str] = []
        cursor = 0
        while batch := finished_runs_after(instance, cursor, limit=1):
            seen += [run_id for _, run_id in batch]
            cursor = batch[-1][0]
    assert seen == run_ids


def test_the_daily_summary_goes_out_once_a_day(
    receivers: tuple[SmtpServer, WebhookReceiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    smtp, webhook = receivers
    noon_somewhere(monkeypatch)
    with dg.instance_for_test() as instance:
        small_job.execute_in_process(instance=instance)
        failed = failed_night(instance)
        checked_night(instance)
        first = daily_alert_summary(dg.build_sensor_context(instance=instance))
        assert isinstance(first, dg.SensorResult)
        again = daily_alert_summary(dg.build_sensor_context(instance=instance, cursor=first.cursor))
        assert isinstance(again, dg.SensorResult)

    assert first.skip_reason is None
    assert again.cursor == first.cursor
    assert again.skip_reason is not None
    assert again.skip_reason.skip_message == f"today's summary ({first.cursor}) is out"
    (message,) = smtp.messages
    subject = message["Subject"].strip()
    assert subject.startswith(f"[crm-pipelines] daily summary ({first.cursor}): ")
    assert subject.endswith("1 runs succeeded, 2 failed, 2 checks failed")
    body = content(message)
    assert "  small_job: 1 succeeded, 0 failed\n" in body
    assert "  nightly_sync: 0 succeeded, 1 failed\n" in body
    assert f"  nightly_sync ({DAY}) at extract_hubspot_contacts: RuntimeError: could not reach" in body
    assert f"{UI}/runs/{failed.run_id}" in body
    assert f"  raw/hubspot:volume_drop_block (ERROR, {DAY})" in body
    assert_no_secret(body)
    (payload,) = webhook.payloads
    assert payload["text"].startswith(subject)


def test_unconfigured_sensors_send_nothing_and_do_not_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_alert_env(monkeypatch)
    noon_somewhere(monkeypatch)
    with dg.instance_for_test() as instance:
        first = alert_on_check_failure(dg.build_sensor_context(instance=instance))
        assert isinstance(first, dg.SensorResult)
        run = failed_night(instance)
        checked_night(instance)
        evaluate_run_failure_sensor(instance, run)  # no exception
        checks = alert_on_check_failure(dg.build_sensor_context(instance=instance, cursor=first.cursor))
        summary = daily_alert_summary(dg.build_sensor_context(instance=instance))
    assert isinstance(checks, dg.SensorResult)
    assert checks.cursor != first.cursor  # moved on: switching a channel on later replays nothing
    assert isinstance(summary, dg.SensorResult)
    assert summary.cursor is None
    assert summary.skip_reason is not None
    assert summary.skip_reason.skip_message == "no alert channel configured"
