import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg

from crm_pipelines.schedules import build_nightly_schedule


def test_the_nightly_run_syncs_the_day_that_just_ended_in_the_business_timezone() -> None:
    schedule = build_nightly_schedule(job_name="nightly_sync", timezone="America/New_York")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "America/New_York"
    at = dt.datetime(2026, 11, 26, 2, 0, tzinfo=ZoneInfo("America/New_York"))
    request = schedule(dg.build_schedule_context(scheduled_execution_time=at))
    assert isinstance(request, dg.RunRequest)
    assert request.partition_key == "2026-11-25"
    assert request.run_key == "2026-11-25"
