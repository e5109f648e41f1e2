"""The alert sensors: a failed run, failed asset checks, and the daily summary, sent by e-mail and webhook.

Wiring only: what is sent, to whom and how is :mod:`crm_pipelines.alerts`. One alert per problem:
a blocking check that fails with ERROR fails its run, and only the run's alert (which names the
check) goes out for it. All three start RUNNING: with no channel configured (no ``ALERT_*``
variable set) a tick sends nothing and logs at debug, so setting the variables is all it takes to
switch alerts on.
"""

import dagster as dg

from crm_pipelines.alerts import notify_check_failures, notify_daily_summary, notify_run_failure

CHECK_INTERVAL_SECONDS = 60
SUMMARY_INTERVAL_SECONDS = 300


@dg.run_failure_sensor(
    name="alert_on_run_failure",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Alerts on every failed run of this code location: job, partition, failed steps, first error line,"
        " link, and the blocking checks that failed it (their only alert)."
    ),
)
def alert_on_run_failure(context: dg.RunFailureSensorContext) -> None:
    notify_run_failure(context.instance, context.dagster_run.run_id, log=context.log)


@dg.sensor(
    name="alert_on_check_failure",
    minimum_interval_seconds=CHECK_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Alerts on every asset check that failed (ERROR or WARN) in a run finished since the last tick,"
        " but a blocking check that failed its run: the run's failure alert names it."
    ),
)
def alert_on_check_failure(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    tick = notify_check_failures(context.instance, context.cursor, log=context.log)
    return dg.SensorResult(cursor=tick.cursor, skip_reason=tick.skip_reason)


@dg.sensor(
    name="daily_alert_summary",
    minimum_interval_seconds=SUMMARY_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Once a day from 07:00 (CRM_PIPELINES_TIMEZONE): runs per job and failed checks of the last 24 h.",
)
def daily_alert_summary(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    tick = notify_daily_summary(context.instance, last_sent=context.cursor, log=context.log)
    return dg.SensorResult(cursor=tick.cursor, skip_reason=tick.reason)
