"""Alerts from the Dagster instance: a failed run, failed asset checks, the daily summary.

Read through Dagster's public instance API, the same on the default run-sharded SQLite storage
(``DAGSTER_HOME``) and on PostgreSQL:

* a failed run: its ``STEP_FAILURE`` events (which steps, the first error line) and its
  ``dagster/partition`` tag;
* failed checks: the runs that finished since the cursor (their ``RUN_SUCCESS``, ``RUN_FAILURE``
  and ``RUN_CANCELED`` events, whose storage ids are the cursor), then each run's
  ``ASSET_CHECK_EVALUATION`` events that did not pass. (``get_event_records`` on check evaluations
  is deprecated and refuses a plain storage-id cursor on run-sharded SQLite.) Every failed check
  alerts, ERROR and WARN, except a blocking check that failed with ERROR in a run that failed:
  that failure is what failed the run, and the run's alert names it (one alert per problem). A
  WARN or non-blocking failure, or any failure in a run that succeeded, alerts here;
* the daily summary: the runs that ended in the last 24 hours, per job, and their failed checks.

Each ``notify_*`` function is one sensor's whole work: it builds the alerts and sends them through
:func:`crm_pipelines.alerts.channels.send_alert`, which never raises.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from zoneinfo import ZoneInfo

import dagster as dg

from crm_pipelines import settings
from crm_pipelines.alerts.channels import AlertLog, configured_channels, send_alert
from crm_pipelines.alerts.model import Alert, FailedCheck
from crm_pipelines.alerts.redact import first_error_line

__all__ = [
    "CheckTick",
    "SummaryTick",
    "check_failure_alerts",
    "daily_summary_alert",
    "failed_evaluations",
    "failed_the_run",
    "notify_check_failures",
    "notify_daily_summary",
    "notify_run_failure",
    "run_failure_alert",
    "run_url",
]

PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# Local hour of the business timezone (CRM_PIPELINES_TIMEZONE) from which the day's summary is due.
SUMMARY_HOUR = 7
SUMMARY_HOURS = 24
# Failed runs and failed checks the summary lists one by one; the rest are counted.
SUMMARY_LIST = 20
# Runs whose checks the summary reads, the latest first.
SUMMARY_CHECKED_RUNS = 500
# Finished runs a check-sensor tick reads, per kind of ending.
BATCH = 100

FinishedEvent = Literal[
    dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.RUN_CANCELED
]
FINISHED: tuple[FinishedEvent, ...] = (
    dg.DagsterEventType.RUN_SUCCESS,
    dg.DagsterEventType.RUN_FAILURE,
    dg.DagsterEventType.RUN_CANCELED,
)
# "dagster._core.errors.DagsterX: ..." -> "DagsterX: ...".
_MODULE_PREFIX = re.compile(r"^\s*(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_]\w*: )")


def run_url(run_id: str) -> str:
    """The run's page in the Dagster UI: ``<DAGSTER_UI_URL>/runs/<run_id>``."""
    return f"{settings.dagster_ui_url()}/runs/{run_id}"


def run_partition(tags: Mapping[str, str]) -> str | None:
    """The run's partition: its ``dagster/partition`` tag, or a backfill's ``start...end`` range."""
    if tags.get(PARTITION_TAG):
        return tags[PARTITION_TAG]
    start, end = tags.get(RANGE_START_TAG), tags.get(RANGE_END_TAG)
    if start and end:
        return start if start == end else f"{start}...{end}"
    return None


def error_message(error: Any) -> str | None:
    """The message of a serialized error, past Dagster's wrappers to the user's exception.

    A step's error is ``DagsterExecutionStepExecutionError: Error occurred while executing op ...``
    caused by what the code raised; the alert wants the cause.
    """
    while error is not None and getattr(error, "cause", None) is not None:
        if not str(getattr(error, "cls_name", "") or "").startswith("Dagster"):
            break
        error = error.cause
    if error is None:
        return None
    return _MODULE_PREFIX.sub("", str(error.message))


def _unique(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def failed_evaluations(
    instance: dg.DagsterInstance, run_id: str
) -> list[tuple[str | None, dg.AssetCheckEvaluation]]:
    """(step key, evaluation) of each asset check the run evaluated and that did not pass."""
    found: list[tuple[str | None, dg.AssetCheckEvaluation]] = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        event = entry.dagster_event
        evaluation = event.event_specific_data if event is not None else None
        if isinstance(evaluation, dg.AssetCheckEvaluation) and not evaluation.passed:
            found.append((entry.step_key, evaluation))
    return found


def failed_the_run(evaluation: dg.AssetCheckEvaluation, run: dg.DagsterRun) -> bool:
    """Whether this failed check failed its run: a blocking check, failed with ERROR, in a failed run.

    Dagster fails the step of such a check (``DagsterAssetCheckFailedError``), so the run fails and
    its run-failure alert names the check; the check sensor leaves it out.
    """
    return (
        run.status == dg.DagsterRunStatus.FAILURE
        and bool(evaluation.blocking)
        and evaluation.severity == dg.AssetCheckSeverity.ERROR
        and not evaluation.passed
    )


def _check_detail(evaluation: dg.AssetCheckEvaluation, *, environ: Mapping[str, str] | None) -> str | None:
    """The check's description, else its first metadata entry (``label: value``): first line, redacted."""
    if evaluation.description:
        return first_error_line(evaluation.description, environ=environ)
    for label, value in evaluation.metadata.items():
        return first_error_line(f"{label}: {getattr(value, 'value', value)}", environ=environ)
    return None


def run_failure_alert(
    instance: dg.DagsterInstance, run_id: str, *, environ: Mapping[str, str] | None = None
) -> Alert:
    """The alert for a failed run: job, partition, failed steps, first error line, link, and the
    blocking checks whose failure failed it (:func:`failed_the_run`), each with its description.

    The error is the first failed step's; a run that failed before any step (a crashed run worker,
    a resource that did not start) carries its run failure's.
    """
    run = instance.get_run_by_id(run_id)
    if run is None:
        raise LookupError(f"no run {run_id} in this Dagster instance")
    failures = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    steps = _unique([entry.step_key for entry in failures if entry.step_key])
    message: str | None = None
    for entry in failures:
        event = entry.dagster_event
        if event is not None and event.event_specific_data is not None:
            message = error_message(getattr(event.event_specific_data, "error", None))
        if message:
            break
    if not message:
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE):
            event = entry.dagster_event
            data = event.event_specific_data if event is not None else None
            message = error_message(getattr(data, "error", None)) or (event.message if event else None)
            if message:
                break
    checks = tuple(
        FailedCheck(
            asset_key=evaluation.asset_key.to_user_string(),
            check_name=evaluation.check_name,
            detail=_check_detail(evaluation, environ=environ),
            step_key=step_key,
        )
        for step_key, evaluation in failed_evaluations(instance, run_id)
        if failed_the_run(evaluation, run)
    )
    return Alert(
        kind="run_failure",
        job=run.job_name,
        partition=run_partition(run.tags),
        failed_steps=steps,
        failed_checks=checks,
        error=first_error_line(message, environ=environ),
        run_id=run_id,
        run_url=run_url(run_id),
    )


def check_failure_alerts(
    instance: dg.DagsterInstance,
    run_id: str,
    *,
    environ: Mapping[str, str] | None = None,
    run_failing: bool = True,
) -> list[Alert]:
    """One alert per asset check the run evaluated and that did not pass (ERROR and WARN).

    Args:
        instance: The Dagster instance.
        run_id: The run.
        environ: The variables to read (default ``os.environ``).
        run_failing: Whether to include the checks that failed the run (:func:`failed_the_run`);
            the check sensor leaves them out, as the run-failure alert names them.
    """
    run = instance.get_run_by_id(run_id)
    if run is None:
        return []
    alerts: list[Alert] = []
    for _, evaluation in failed_evaluations(instance, run_id):
        if not run_failing and failed_the_run(evaluation, run):
            continue
        alerts.append(
            Alert(
                kind="check_failure",
                job=run.job_name,
                partition=evaluation.partition or run_partition(run.tags),
                error=first_error_line(evaluation.description, environ=environ),
                run_id=run_id,
                run_url=run_url(run_id),
                asset_key=evaluation.asset_key.to_user_string(),
                check_name=evaluation.check_name,
                severity=evaluation.severity.value,
            )
        )
    return alerts


def notify_run_failure(
    instance: dg.DagsterInstance,
    run_id: str,
    *,
    log: AlertLog | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """Send the failed run's alert through every configured channel.

    Returns:
        The channels that delivered it (none when none is configured).
    """
    return send_alert(run_failure_alert(instance, run_id, environ=environ), log=log, environ=environ)


@dataclass(frozen=True)
class CheckTick:
    """What a check-sensor tick did.

    Attributes:
        cursor: The storage id of the last finished run read (the sensor's next cursor).
        runs: Finished runs read.
        alerts: Failed checks found.
        sent: Alerts some channel delivered.
    """

    cursor: str
    runs: int = 0
    alerts: int = 0
    sent: int = 0

    @property
    def skip_reason(self) -> str | None:
        if self.alerts:
            return None
        return f"{self.runs} finished runs, no failed check" if self.runs else "no run finished"


def _latest_finished(instance: dg.DagsterInstance) -> int:
    latest = 0
    for event_type in FINISHED:
        result = instance.fetch_run_status_changes(event_type, limit=1, ascending=False)
        latest = max([latest, *(record.storage_id for record in result.records)])
    return latest


def finished_runs_after(
    instance: dg.DagsterInstance, after: int, *, limit: int = BATCH
) -> list[tuple[int, str]]:
    """(storage id, run id) of the runs that finished after storage id ``after``, in order.

    At most ``limit`` of each kind of ending; when one kind has more, only what precedes its last
    returned record is kept, so the next read (after the last id here) misses nothing.
    """
    found: list[tuple[int, str]] = []
    bound: int | None = None
    for event_type in FINISHED:
        result = instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(event_type=event_type, after_storage_id=after),
            limit=limit,
            ascending=True,
        )
        found += [(record.storage_id, record.event_log_entry.run_id) for record in result.records]
        if result.has_more and result.records:
            last = result.records[-1].storage_id
            bound = last if bound is None else min(bound, last)
    return sorted(item for item in found if bound is None or item[0] <= bound)


def notify_check_failures(
    instance: dg.DagsterInstance,
    cursor: str | None,
    *,
    log: AlertLog | None = None,
    environ: Mapping[str, str] | None = None,
) -> CheckTick:
    """Alert on the failed checks of the runs that finished since ``cursor``, but those that failed
    their run (:func:`failed_the_run`): the run's own alert names them.

    Args:
        instance: The Dagster instance.
        cursor: The previous tick's :attr:`CheckTick.cursor`; None (a new sensor) starts from now,
            so switching the sensor on does not replay old failures.
        log: The sensor's logger.
        environ: The variables to read (default ``os.environ``).

    Returns:
        The tick: its next cursor and what it found and sent.
    """
    if cursor is None:
        return CheckTick(cursor=str(_latest_finished(instance)))
    runs = finished_runs_after(instance, int(cursor))
    if not runs:
        return CheckTick(cursor=cursor)
    next_cursor = str(runs[-1][0])
    if not configured_channels(environ, log=log):
        return CheckTick(cursor=next_cursor, runs=len(runs))  # nothing could be sent: do not read further
    alerts = [
        alert
        for _, run_id in runs
        # The checks that failed their run are in that run's alert (alert_on_run_failure).
        for alert in check_failure_alerts(instance, run_id, environ=environ, run_failing=False)
    ]
    sent = sum(1 for alert in alerts if send_alert(alert, log=log, environ=environ))
    return CheckTick(cursor=next_cursor, runs=len(runs), alerts=len(alerts), sent=sent)


def _failure_line(alert: Alert) -> str:
    where = f" ({alert.partition})" if alert.partition else ""
    steps = f" at {', '.join(alert.failed_steps)}" if alert.failed_steps else ""
    return f"  {alert.job}{where}{steps}: {alert.error or 'no error message'} {alert.run_url}"


def _check_line(alert: Alert) -> str:
    where = f", {alert.partition}" if alert.partition else ""
    return f"  {alert.asset_key}:{alert.check_name} ({alert.severity}{where}) {alert.run_url}"


def _listed(title: str, lines: list[str], *, total: int) -> list[str]:
    """A titled block of the summary: the lines, and how many more were left out; nothing when empty."""
    if not total:
        return []
    more = [f"  ... and {total - len(lines)} more"] if total > len(lines) else []
    return ["", title, *lines, *more]


def daily_summary_alert(
    instance: dg.DagsterInstance,
    *,
    now: dt.datetime,
    hours: int = SUMMARY_HOURS,
    environ: Mapping[str, str] | None = None,
) -> Alert:
    """The summary of the runs that ended in the ``hours`` before ``now``: per job, the failed runs
    and the failed checks.

    Args:
        instance: The Dagster instance.
        now: The end of the window (timezone-aware; its timezone names the day).
        hours: The window's length.
        environ: The variables to read (default ``os.environ``).
    """
    since = now - dt.timedelta(hours=hours)
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE],
            updated_after=since.astimezone(dt.UTC),
        ),
        ascending=True,
    )
    window = (since.timestamp(), now.timestamp())
    ended = [
        record
        for record in records
        if window[0] <= (record.end_time or record.update_timestamp.timestamp()) <= window[1]
    ]
    succeeded = Counter(
        r.dagster_run.job_name for r in ended if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    )
    failed = [r.dagster_run for r in ended if r.dagster_run.status == dg.DagsterRunStatus.FAILURE]
    failed_by_job = Counter(run.job_name for run in failed)
    # The failed checks of the latest runs only: a day of webhook-started runs can be thousands.
    checked = ended[-SUMMARY_CHECKED_RUNS:]
    checks = [
        alert
        for r in checked
        for alert in check_failure_alerts(instance, r.dagster_run.run_id, environ=environ)
    ]

    lines = [f"Runs that ended in the {hours} h to {now:%Y-%m-%d %H:%M %Z}:"]
    jobs = sorted(set(succeeded) | set(failed_by_job))
    lines += [f"  {job}: {succeeded[job]} succeeded, {failed_by_job[job]} failed" for job in jobs] or [
        "  none"
    ]
    failures = [run_failure_alert(instance, run.run_id, environ=environ) for run in failed[:SUMMARY_LIST]]
    lines += _listed("Failed runs:", [_failure_line(alert) for alert in failures], total=len(failed))
    title = (
        "Failed checks:" if len(checked) == len(ended) else f"Failed checks (the latest {len(checked)} runs):"
    )
    lines += _listed(title, [_check_line(alert) for alert in checks[:SUMMARY_LIST]], total=len(checks))
    headline = f"{sum(succeeded.values())} runs succeeded, {len(failed)} failed, {len(checks)} checks failed"
    return Alert(
        kind="daily_summary", partition=now.date().isoformat(), headline=headline, lines=tuple(lines)
    )


@dataclass(frozen=True)
class SummaryTick:
    """What a daily-summary tick did.

    Attributes:
        cursor: The last day (ISO date, business timezone) whose summary went out.
        sent: Whether this tick sent it.
        reason: Why not, when it did not.
    """

    cursor: str | None
    sent: bool
    reason: str | None = None


def notify_daily_summary(
    instance: dg.DagsterInstance,
    *,
    last_sent: str | None,
    now: dt.datetime | None = None,
    log: AlertLog | None = None,
    environ: Mapping[str, str] | None = None,
) -> SummaryTick:
    """Send the daily summary once a day, from 07:00 in the business timezone.

    Nothing is read or sent when no channel is configured.

    Args:
        instance: The Dagster instance.
        last_sent: The day of the last summary (the sensor's cursor).
        now: The time (default: the clock).
        log: The sensor's logger.
        environ: The variables to read (default ``os.environ``).
    """
    zone = ZoneInfo(settings.current_timezone())
    local = (now or dt.datetime.now(dt.UTC)).astimezone(zone)
    today = local.date().isoformat()
    if last_sent == today:
        return SummaryTick(cursor=last_sent, sent=False, reason=f"today's summary ({today}) is out")
    if local.hour < SUMMARY_HOUR:
        return SummaryTick(cursor=last_sent, sent=False, reason=f"due at {SUMMARY_HOUR:02d}:00 {zone.key}")
    if not configured_channels(environ, log=log):
        return SummaryTick(cursor=last_sent, sent=False, reason="no alert channel configured")
    alert = daily_summary_alert(instance, now=local, environ=environ)
    delivered = send_alert(alert, log=log, environ=environ)
    # Tried once a day: a channel that failed is in the warnings, not retried every tick.
    return SummaryTick(
        cursor=today,
        sent=bool(delivered),
        reason=None if delivered else "no channel delivered it (see warnings)",
    )
