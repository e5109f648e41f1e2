"""The nightly schedule: 02:00 in the business timezone, for the business day that just ended."""

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg


def build_nightly_schedule(*, job_name: str, timezone: str) -> dg.ScheduleDefinition:
    """A schedule that runs ``job`` at 02:00 ``timezone`` for the previous day's partition.

    Args:
        job_name: The partitioned nightly job.
        timezone: IANA timezone of the business (``CRM_PIPELINES_TIMEZONE``).

    Returns:
        The schedule definition.
    """
    zone = ZoneInfo(timezone)

    @dg.schedule(
        name="nightly_sync_schedule",
        job_name=job_name,
        cron_schedule="0 2 * * *",
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Every night at 02:00 {timezone}: sync the business day that just ended.",
    )
    def _nightly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        day = (context.scheduled_execution_time.astimezone(zone).date() - dt.timedelta(days=1)).isoformat()
        # run_key per day: a restarted daemon never launches the same night twice.
        return dg.RunRequest(run_key=day, partition_key=day)

    return _nightly
